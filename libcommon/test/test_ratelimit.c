/* test_ratelimit.c - unit tests of the rate limits (common/ratelimit.h) through a real HTTP
 * server and the local Redis: windows, headers, growing backoff, Redis down. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"
#include "common/log.h"
#include "common/ratelimit.h"
#include "common/uuid.h"
#include "testutil.h"

static cm_http_server *srv;
static cm_redis *redis, *dead;
static int port;
static char prefix[64];
static cm_redis *use; /* the client the handlers use */

/* GET /window/{name}: 3 per second. */
static void h_window(cm_http_req *req, void *ud)
{
    char key[160];
    (void)ud;
    snprintf(key, sizeof(key), "%s:w:%s", prefix, cm_http_param(req, "name"));
    if (cm_ratelimit_window(req, use, key, 3, 1000, "slow down") == CM_OK)
        cm_http_reply_json(req, 200, cJSON_CreateObject());
}

/* GET /login/{name}?ok=1: backoff after 2 free failures, at most 4 s. */
static void h_login(cm_http_req *req, void *ud)
{
    char key[160];
    (void)ud;
    snprintf(key, sizeof(key), "%s:b:%s", prefix, cm_http_param(req, "name"));
    if (cm_ratelimit_backoff_check(req, use, key, "too many failures") != CM_OK)
        return;
    if (cm_http_query(req, "ok")) {
        cm_ratelimit_backoff_clear(use, key);
        cm_http_reply_json(req, 200, cJSON_CreateObject());
    } else {
        cm_ratelimit_backoff_fail(use, key, 2, 4);
        cm_http_reply_error(req, CM_EUNAUTH, "wrong");
    }
}

static int setup(void **state)
{
    char rnd[17];
    long rport = 6379;
    (void)state;
    cm_log_init("test_ratelimit", CM_LOG_ERROR + 1);
    if (cm_random_hex(rnd, 8) != CM_OK)
        return -1;
    snprintf(prefix, sizeof(prefix), "unit:%ld:%s", (long)getpid(), rnd);
    if (cm_config_long("REDIS_PORT", 6379, 1, 65535, &rport) != CM_OK ||
        cm_redis_create(cm_config_str("REDIS_HOST", "127.0.0.1"), (int)rport, 2, 2000, &redis) ||
        cm_redis_create("127.0.0.1", tu_free_port(), 1, 200, &dead))
        return -1;
    use = redis;
    port = tu_free_port();
    cm_http_config cfg = {.host = "127.0.0.1", .port = port, .threads = 2, .max_body = 1024,
                          .idle_timeout_s = 5, .drain_s = 1};
    if (cm_http_server_create(&cfg, &srv) ||
        cm_http_route(srv, "GET", "/window/{name}", h_window, NULL) ||
        cm_http_route(srv, "GET", "/login/{name}", h_login, NULL))
        return -1;
    return cm_http_server_start(srv) == CM_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    cm_http_server_destroy(srv);
    cm_redis_destroy(redis);
    cm_redis_destroy(dead);
    return 0;
}

static int get(const char *path, tu_resp *r)
{
    assert_int_equal(tu_http(port, "GET", path, NULL, NULL, 0, r), 0);
    return r->status;
}

static void expect_header(const tu_resp *r, const char *name, const char *want)
{
    char v[32];
    assert_non_null(tu_resp_header(r, name, v, sizeof(v)));
    assert_string_equal(v, want);
}

static void test_window(void **state)
{
    tu_resp r;
    (void)state;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(get("/window/a", &r), 200);
        char want[4];
        snprintf(want, sizeof(want), "%d", 2 - i);
        expect_header(&r, "RateLimit-Limit", "3");
        expect_header(&r, "RateLimit-Remaining", want);
        expect_header(&r, "RateLimit-Reset", "1");
        tu_resp_free(&r);
    }
    assert_int_equal(get("/window/a", &r), 429);
    expect_header(&r, "Retry-After", "1");
    expect_header(&r, "RateLimit-Remaining", "0");
    assert_non_null(strstr(r.body, "slow down"));
    assert_non_null(strstr(r.raw, "application/problem+json"));
    tu_resp_free(&r);
    assert_int_equal(get("/window/b", &r), 200); /* another key has its own window */
    tu_resp_free(&r);
    tu_sleep_ms(1100);
    assert_int_equal(get("/window/a", &r), 200); /* a new window */
    tu_resp_free(&r);
}

static void test_backoff_grows_and_clears(void **state)
{
    tu_resp r;
    (void)state;
    assert_int_equal(get("/login/x", &r), 401); /* free */
    tu_resp_free(&r);
    assert_int_equal(get("/login/x", &r), 401); /* the 2nd: 1 s */
    tu_resp_free(&r);
    assert_int_equal(get("/login/x?ok=1", &r), 429); /* even a right answer waits */
    expect_header(&r, "Retry-After", "1");
    tu_resp_free(&r);
    tu_sleep_ms(1100);
    assert_int_equal(get("/login/x", &r), 401); /* the 3rd: 2 s */
    tu_resp_free(&r);
    assert_int_equal(get("/login/x", &r), 429);
    expect_header(&r, "Retry-After", "2");
    tu_resp_free(&r);
    assert_int_equal(get("/login/y", &r), 401); /* another account is not slowed */
    tu_resp_free(&r);
    tu_sleep_ms(2100);
    assert_int_equal(get("/login/x?ok=1", &r), 200); /* success forgets the failures */
    tu_resp_free(&r);
    assert_int_equal(get("/login/x", &r), 401);
    tu_resp_free(&r);
    assert_int_equal(get("/login/x", &r), 401);
    tu_resp_free(&r);
    assert_int_equal(get("/login/x", &r), 429);
    expect_header(&r, "Retry-After", "1"); /* counted from zero again */
    tu_resp_free(&r);
}

static void test_backoff_is_capped(void **state)
{
    tu_resp r;
    char key[160];
    (void)state;
    snprintf(key, sizeof(key), "%s:b:capped", prefix);
    for (int i = 0; i < 40; i++)
        cm_ratelimit_backoff_fail(redis, key, 2, 4);
    assert_int_equal(get("/login/capped", &r), 429);
    expect_header(&r, "Retry-After", "4");
    tu_resp_free(&r);
}

static void test_redis_down_skips_the_limits(void **state)
{
    tu_resp r;
    (void)state;
    use = dead;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(get("/window/down", &r), 200);
        assert_null(tu_resp_header(&r, "RateLimit-Limit", (char[8]){0}, 8));
        tu_resp_free(&r);
        assert_int_equal(get("/login/down", &r), 401);
        tu_resp_free(&r);
    }
    use = redis;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window),
        cmocka_unit_test(test_backoff_grows_and_clears),
        cmocka_unit_test(test_backoff_is_capped),
        cmocka_unit_test(test_redis_down_skips_the_limits),
    };
    return cmocka_run_group_tests_name("ratelimit", tests, setup, teardown);
}
