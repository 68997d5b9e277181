/* test_error.c - unit tests of cm_strerror and cm_err_name (libcommon/include/common/error.h). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/error.h"

static void test_every_code_has_a_name_and_message(void **state)
{
    (void)state;
    for (int e = 0; e < CM_ERR_COUNT; e++) {
        const char *name = cm_err_name((cm_err)e), *msg = cm_strerror((cm_err)e);
        assert_non_null(name);
        assert_non_null(msg);
        assert_true(strncmp(name, "CM_", 3) == 0);
        assert_true(strlen(msg) > 0);
        /* Names are unique, so logs never confuse two errors. */
        for (int k = 0; k < e; k++)
            assert_string_not_equal(name, cm_err_name((cm_err)k));
    }
}

static void test_known_names_and_messages(void **state)
{
    (void)state;
    assert_int_equal(CM_OK, 0);
    assert_string_equal(cm_err_name(CM_OK), "CM_OK");
    assert_string_equal(cm_err_name(CM_ENOTFOUND), "CM_ENOTFOUND");
    assert_string_equal(cm_err_name(CM_EUNAUTH), "CM_EUNAUTH");
    assert_string_equal(cm_err_name(CM_EINTERNAL), "CM_EINTERNAL");
    assert_string_equal(cm_strerror(CM_OK), "success");
    assert_string_equal(cm_strerror(CM_ENOTFOUND), "not found");
    assert_string_equal(cm_strerror(CM_ELIMIT), "rate limited");
}

static void test_out_of_range_is_never_null(void **state)
{
    (void)state;
    assert_string_equal(cm_strerror(CM_ERR_COUNT), "unknown error");
    assert_string_equal(cm_err_name(CM_ERR_COUNT), "CM_E?");
    assert_string_equal(cm_strerror((cm_err)-1), "unknown error");
    assert_string_equal(cm_err_name((cm_err)1000), "CM_E?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_code_has_a_name_and_message),
        cmocka_unit_test(test_known_names_and_messages),
        cmocka_unit_test(test_out_of_range_is_never_null),
    };
    return cmocka_run_group_tests_name("error", tests, NULL, NULL);
}
