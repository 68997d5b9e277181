/* messaging_media_test.c - unit tests of the media attachment check's URL and status rules. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "messaging_media.h"

#define ID "0190c0de-0000-7000-8000-000000000001"

static void test_check_url(void **state)
{
    char u[256], tiny[40];
    (void)state;
    assert_int_equal(messaging_media_check_url("http://m:8084/", "t-1", "a.b@c", ID, u, sizeof(u)), 0);
    assert_string_equal(u, "http://m:8084/internal/v1/media/" ID "/attachable?tenant=t-1&user=a.b%40c");
    assert_int_equal(messaging_media_check_url("http://m", "t 1&x=y", "u", ID, u, sizeof(u)), 0);
    assert_non_null(strstr(u, "tenant=t%201%26x%3Dy&user=u")); /* no parameter smuggling */
    assert_int_equal(messaging_media_check_url("http://m", "t", "u", "../../etc", u, sizeof(u)), -1);
    assert_int_equal(messaging_media_check_url("http://m", "t", "u", "0190C0DE-0000-7000-8000-000000000001", u, sizeof(u)), -1);
    assert_int_equal(messaging_media_check_url("http://m", "", "u", ID, u, sizeof(u)), -1);
    assert_int_equal(messaging_media_check_url("http://m", "t", "u", ID, tiny, sizeof(tiny)), -1);
}

static void test_status_mapping(void **state)
{
    (void)state;
    assert_int_equal(messaging_media_status_err(200), CM_OK);
    assert_int_equal(messaging_media_status_err(404), CM_ENOTFOUND);
    assert_int_equal(messaging_media_status_err(409), CM_ECONFLICT);
    assert_int_equal(messaging_media_status_err(400), CM_EINVAL);
    assert_int_equal(messaging_media_status_err(503), CM_EIO);
    assert_int_equal(messaging_media_status_err(0), CM_EIO);
}

static void test_unreachable_service_is_eio(void **state)
{
    char why[64];
    (void)state;
    /* Port 1 on loopback: nothing listens, the connection is refused at once. */
    assert_int_equal(messaging_media_attachable("http://127.0.0.1:1", "t", "u", ID, 2000, why,
                                                sizeof(why)),
                     CM_EIO);
    assert_int_equal(messaging_media_attachable("http://127.0.0.1:1", "t", "u", "bad", 2000, why,
                                                sizeof(why)),
                     CM_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_url),
        cmocka_unit_test(test_status_mapping),
        cmocka_unit_test(test_unreachable_service_is_eio),
    };
    return cmocka_run_group_tests_name("messaging_media", tests, NULL, NULL);
}
