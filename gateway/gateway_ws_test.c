/* gateway_ws_test.c - unit tests of the WebSocket proxy's frame tracking (where the gateway may
 * add a close frame of its own), its close frames, and the pools' health option. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "gateway.h"

/* Feeds `p` one byte at a time, checking the boundary is never reported inside a frame. */
static void feed_bytewise(gateway_ws_track *t, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        gateway_ws_track_feed(t, p + i, 1);
        if (i + 1 < n)
            assert_false(gateway_ws_track_at_boundary(t));
    }
    assert_true(gateway_ws_track_at_boundary(t));
}

static void test_track_small_medium_large(void **state)
{
    static unsigned char big[10 + 70000];
    unsigned char small[] = {0x81, 0x03, 'a', 'b', 'c'};
    unsigned char medium[4 + 300] = {0x82, 126, 0x01, 0x2c}; /* 300 bytes */
    gateway_ws_track t = {0};
    (void)state;

    feed_bytewise(&t, small, sizeof(small));
    feed_bytewise(&t, medium, sizeof(medium));
    big[0] = 0x82;
    big[1] = 127;
    big[7] = 0x01; /* 0x011170 = 70000 */
    big[8] = 0x11;
    big[9] = 0x70;
    gateway_ws_track_feed(&t, big, 9);
    assert_false(gateway_ws_track_at_boundary(&t));
    gateway_ws_track_feed(&t, big + 9, sizeof(big) - 10);
    assert_false(gateway_ws_track_at_boundary(&t)); /* one payload byte still to come */
    gateway_ws_track_feed(&t, big + sizeof(big) - 1, 1);
    assert_true(gateway_ws_track_at_boundary(&t));
    assert_false(t.close_seen);
}

static void test_track_masked_and_empty_frames(void **state)
{
    /* A masked frame (4 key bytes after the length) and an empty ping, in one read. */
    unsigned char two[] = {0x81, 0x82, 1, 2, 3, 4, 'h' ^ 1, 'i' ^ 2, 0x89, 0x00};
    gateway_ws_track t = {0};
    (void)state;

    gateway_ws_track_feed(&t, two, 8);
    assert_true(gateway_ws_track_at_boundary(&t));
    gateway_ws_track_feed(&t, two + 8, 2);
    assert_true(gateway_ws_track_at_boundary(&t));
}

static void test_track_sees_the_close(void **state)
{
    unsigned char f[64];
    size_t n = gateway_ws_close_frame(1000, "bye", f, sizeof(f));
    gateway_ws_track t = {0};
    (void)state;

    gateway_ws_track_feed(&t, f, 1);
    assert_false(t.close_seen);
    gateway_ws_track_feed(&t, f + 1, n - 1);
    assert_true(t.close_seen);
    assert_true(gateway_ws_track_at_boundary(&t));
}

static void test_close_frame(void **state)
{
    unsigned char f[200], want[] = {0x88, 17, 0x03, 0xf4, 's', 'e', 'r', 'v', 'i', 'c', 'e', ' ',
                                    'r', 'e', 's', 't', 'a', 'r', 't'};
    char long_reason[200];
    (void)state;

    assert_int_equal(gateway_ws_close_frame(1012, "service restart", f, sizeof(f)), sizeof(want));
    assert_memory_equal(f, want, sizeof(want));
    assert_int_equal(gateway_ws_close_frame(1012, "service restart", f, 10), 0);
    memset(long_reason, 'r', sizeof(long_reason) - 1);
    long_reason[sizeof(long_reason) - 1] = '\0';
    /* Control frames carry at most 125 bytes: the reason is cut to 123. */
    assert_int_equal(gateway_ws_close_frame(1001, long_reason, f, sizeof(f)), 4 + 123);
    assert_int_equal(f[1], 125);
}

static void test_pool_health_option(void **state)
{
    static gateway_ctx ctx;
    char err[256];
    (void)state;

    assert_int_equal(gateway_pools_parse(&ctx, "socket=http://127.0.0.1:1 lb=least_conn "
                                               "health=off; user=http://127.0.0.1:2",
                                         err, sizeof(err)),
                     CM_OK);
    assert_true(gateway_pool_find(&ctx, "socket")->no_health);
    assert_int_equal(gateway_pool_find(&ctx, "socket")->lb, GW_LB_LEAST_CONN);
    assert_false(gateway_pool_find(&ctx, "user")->no_health);
    assert_int_equal(gateway_pools_parse(&ctx, "socket=http://127.0.0.1:1 health=maybe", err,
                                         sizeof(err)),
                     CM_EINVAL);
    assert_non_null(strstr(err, "health="));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_track_small_medium_large),
        cmocka_unit_test(test_track_masked_and_empty_frames),
        cmocka_unit_test(test_track_sees_the_close),
        cmocka_unit_test(test_close_frame),
        cmocka_unit_test(test_pool_health_option),
    };
    return cmocka_run_group_tests_name("gateway_ws", tests, NULL, NULL);
}
