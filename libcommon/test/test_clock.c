/* test_clock.c - unit tests of wall-clock milliseconds and RFC 3339 formatting (common/clock.h). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <time.h>

#include "common/clock.h"

/* The wall clock in ms, read the precise way. Not time(): glibc reads a coarse clock for it,
 * which can lag clock_gettime by a tick, so a time() read after cm_clock_now_ms() could still
 * name the previous second (the test failed now and then). */
static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_now_ms_matches_time(void **state)
{
    (void)state;
    int64_t t0 = wall_ms();
    int64_t now = cm_clock_now_ms();
    int64_t t1 = wall_ms();
    assert_in_range(now, t0, t1);
    assert_true(cm_clock_now_ms() >= now);
}

static void test_rfc3339_known_values(void **state)
{
    char out[CM_RFC3339_LEN];
    (void)state;
    cm_clock_rfc3339(0, out);
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");
    cm_clock_rfc3339(1700000000123LL, out);
    assert_string_equal(out, "2023-11-14T22:13:20.123Z");
    cm_clock_rfc3339(951782400999LL, out); /* leap day 2000 */
    assert_string_equal(out, "2000-02-29T00:00:00.999Z");
    cm_clock_rfc3339(253402300799999LL, out); /* the last millisecond of 9999 */
    assert_string_equal(out, "9999-12-31T23:59:59.999Z");
}

static void test_rfc3339_before_epoch(void **state)
{
    char out[CM_RFC3339_LEN];
    (void)state;
    /* -1 ms is the last millisecond of 1969, not 1970-01-01T00:00:00.999. */
    cm_clock_rfc3339(-1, out);
    assert_string_equal(out, "1969-12-31T23:59:59.999Z");
    cm_clock_rfc3339(-1000, out);
    assert_string_equal(out, "1969-12-31T23:59:59.000Z");
    cm_clock_rfc3339(-1500, out);
    assert_string_equal(out, "1969-12-31T23:59:58.500Z");
}

static void test_rfc3339_shape_of_now(void **state)
{
    char out[CM_RFC3339_LEN];
    (void)state;
    cm_clock_rfc3339(cm_clock_now_ms(), out);
    assert_int_equal(strlen(out), 24);
    assert_int_equal(out[4], '-');
    assert_int_equal(out[10], 'T');
    assert_int_equal(out[19], '.');
    assert_int_equal(out[23], 'Z');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_now_ms_matches_time),
        cmocka_unit_test(test_rfc3339_known_values),
        cmocka_unit_test(test_rfc3339_before_epoch),
        cmocka_unit_test(test_rfc3339_shape_of_now),
    };
    return cmocka_run_group_tests_name("clock", tests, NULL, NULL);
}
