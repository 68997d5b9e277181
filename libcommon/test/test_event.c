/* test_event.c - unit tests of the CloudEvents 1.0 envelope builder (common/event.h). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "common/event.h"

static const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void test_envelope_fields(void **state)
{
    char *out = NULL;
    cJSON *data = cJSON_CreateObject();
    (void)state;
    cJSON_AddStringToObject(data, "text", "hi");
    cJSON_AddNumberToObject(data, "seq", 3);
    assert_int_equal(cm_event_build("018bcfe5-6800-7abc-8def-0123456789ab", "message.created",
                                    "/messaging", "conv-1", "tenant-1", 1700000000123LL, data,
                                    &out),
                     CM_OK);
    assert_non_null(out);
    assert_null(strchr(out, '\n')); /* one line: a Kafka value, no whitespace */
    cJSON *e = cJSON_Parse(out);
    assert_non_null(e);
    assert_string_equal(str(e, "specversion"), "1.0");
    assert_string_equal(str(e, "id"), "018bcfe5-6800-7abc-8def-0123456789ab");
    assert_string_equal(str(e, "type"), "message.created");
    assert_string_equal(str(e, "source"), "/messaging");
    assert_string_equal(str(e, "subject"), "conv-1");
    assert_string_equal(str(e, "tenant"), "tenant-1");
    assert_string_equal(str(e, "time"), "2023-11-14T22:13:20.123Z");
    assert_string_equal(str(e, "datacontenttype"), "application/json");
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(e, "data");
    assert_true(cJSON_IsObject(d));
    assert_string_equal(str(d, "text"), "hi");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(d, "seq")->valueint, 3);
    cJSON_Delete(e);
    free(out);
}

static void test_no_subject_and_escaping(void **state)
{
    char *out = NULL;
    cJSON *data = cJSON_CreateObject();
    (void)state;
    cJSON_AddStringToObject(data, "text", "a \"quoted\"\nline \xe6\x97\xa5");
    assert_int_equal(cm_event_build("id-1", "user.created", "/user", NULL, "t\"1", 0, data, &out),
                     CM_OK);
    cJSON *e = cJSON_Parse(out);
    assert_non_null(e);
    assert_null(cJSON_GetObjectItemCaseSensitive(e, "subject"));
    assert_string_equal(str(e, "tenant"), "t\"1");
    assert_string_equal(str(e, "time"), "1970-01-01T00:00:00.000Z");
    assert_string_equal(str(cJSON_GetObjectItemCaseSensitive(e, "data"), "text"),
                        "a \"quoted\"\nline \xe6\x97\xa5");
    cJSON_Delete(e);
    free(out);
}

static void test_same_id_same_envelope(void **state)
{
    char *a = NULL, *b = NULL;
    (void)state;
    /* Republishing the same event gives the same bytes, so consumers can deduplicate. */
    assert_int_equal(cm_event_build("id-9", "t", "/s", "x", "t1", 5, cJSON_CreateObject(), &a),
                     CM_OK);
    assert_int_equal(cm_event_build("id-9", "t", "/s", "x", "t1", 5, cJSON_CreateObject(), &b),
                     CM_OK);
    assert_string_equal(a, b);
    free(a);
    free(b);
}

static void test_extension_attributes(void **state)
{
    char *out = NULL;
    cJSON *ext = cJSON_CreateObject();
    (void)state;
    cJSON_AddNumberToObject(ext, "eseq", 42);
    cJSON_AddStringToObject(ext, "id", "sneaky"); /* never overrides a context attribute */
    assert_int_equal(cm_event_build_ext("id-1", "t", "/s", "x", "t1", 0, cJSON_CreateObject(), ext,
                                        &out),
                     CM_OK);
    cJSON *e = cJSON_Parse(out);
    assert_non_null(e);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(e, "eseq")->valueint, 42);
    assert_string_equal(str(e, "id"), "id-1");
    cJSON_Delete(e);
    free(out);
}

static void test_extension_names_are_checked(void **state)
{
    const char *bad[] = {"Eseq", "e_seq", "", "abcdefghijklmnopqrstu", NULL};
    char *out = NULL;
    (void)state;
    for (int i = 0; bad[i]; i++) {
        cJSON *ext = cJSON_CreateObject();
        cJSON_AddNumberToObject(ext, bad[i], 1);
        assert_int_equal(cm_event_build_ext("i", "t", "/s", "x", "t1", 0, cJSON_CreateObject(),
                                            ext, &out),
                         CM_EINVAL);
        assert_null(out);
    }
    cJSON *arr = cJSON_CreateArray();
    assert_int_equal(cm_event_build_ext("i", "t", "/s", "x", "t1", 0, cJSON_CreateObject(), arr,
                                        &out),
                     CM_EINVAL);
    assert_null(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_envelope_fields),
        cmocka_unit_test(test_no_subject_and_escaping),
        cmocka_unit_test(test_same_id_same_envelope),
        cmocka_unit_test(test_extension_attributes),
        cmocka_unit_test(test_extension_names_are_checked),
    };
    return cmocka_run_group_tests_name("event", tests, NULL, NULL);
}
