/* test_ticker.c - unit tests of the periodic thread (common/ticker.h). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <time.h>

#include "common/ticker.h"

struct count {
    atomic_int runs, last;
};

static void tick(void *ud, int last)
{
    struct count *c = ud;
    if (last)
        atomic_fetch_add(&c->last, 1);
    else
        atomic_fetch_add(&c->runs, 1);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits up to `ms` for `*v` to reach `want`. */
static int reaches(atomic_int *v, int want, long ms)
{
    for (long waited = 0; waited < ms; waited += 5) {
        if (atomic_load(v) >= want)
            return 1;
        sleep_ms(5);
    }
    return atomic_load(v) >= want;
}

static void test_runs_every_interval(void **state)
{
    struct count c = {0};
    cm_ticker *t;
    (void)state;
    assert_int_equal(cm_ticker_start(10, 0, tick, &c, &t), CM_OK);
    assert_true(reaches(&c.runs, 3, 5000));
    cm_ticker_stop(t);
    assert_int_equal(atomic_load(&c.last), 0); /* no final run unless asked */
}

static void test_wake_runs_before_the_interval_and_stop_makes_the_final_run(void **state)
{
    struct count c = {0};
    cm_ticker *t;
    (void)state;
    assert_int_equal(cm_ticker_start(3600 * 1000, 1, tick, &c, &t), CM_OK);
    sleep_ms(20);
    assert_int_equal(atomic_load(&c.runs), 0); /* an hour is not up */
    cm_ticker_wake(t);
    assert_true(reaches(&c.runs, 1, 5000));
    cm_ticker_stop(t); /* returns at once, not after the hour */
    assert_int_equal(atomic_load(&c.runs), 1);
    assert_int_equal(atomic_load(&c.last), 1);
}

static void test_bad_arguments(void **state)
{
    cm_ticker *t = NULL;
    (void)state;
    assert_int_equal(cm_ticker_start(0, 0, tick, NULL, &t), CM_EINVAL);
    assert_int_equal(cm_ticker_start(10, 0, NULL, NULL, &t), CM_EINVAL);
    cm_ticker_stop(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runs_every_interval),
        cmocka_unit_test(test_wake_runs_before_the_interval_and_stop_makes_the_final_run),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests_name("ticker", tests, NULL, NULL);
}
