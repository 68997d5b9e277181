/* test_tenant.c - unit tests of the tenant settings client (common/tenant.h) against a real
 * HTTP server standing in for the user service's internal endpoint: caching for the TTL, a
 * change seen after it, unknown tenants, the last copy kept while the service is down, a
 * service that does not answer asked again only after a pause, a stale copy refreshed by one
 * caller, bad ids. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/http.h"
#include "common/log.h"
#include "common/tenant.h"
#include "testutil.h"

/* The stand-in: tenant "t1" has `rate`, anything else is 404; counts requests. */
static struct {
    cm_http_server *srv;
    int port;
    pthread_mutex_t lock;
    long rate, delay_ms; /* delay_ms: how long each answer waits (a slow or hung service) */
    int hits;
} us = {.lock = PTHREAD_MUTEX_INITIALIZER, .rate = 60};

static void sleep_ms(long ms);

static void h_settings(cm_http_req *req, void *ud)
{
    char doc[128];
    long delay;
    (void)ud;
    pthread_mutex_lock(&us.lock);
    us.hits++;
    delay = us.delay_ms;
    snprintf(doc, sizeof(doc), "{\"send_rate_per_min\":%ld,\"erase_policy\":\"delete\"}", us.rate);
    pthread_mutex_unlock(&us.lock);
    if (delay > 0)
        sleep_ms(delay);
    if (strcmp(cm_http_param(req, "id"), "t1") == 0)
        cm_http_reply_raw(req, 200, "application/json", doc, strlen(doc));
    else
        cm_http_reply_raw(req, 404, "application/problem+json", "{}", 2);
}

static int hits(void)
{
    pthread_mutex_lock(&us.lock);
    int h = us.hits;
    pthread_mutex_unlock(&us.lock);
    return h;
}

static void set_rate(long r)
{
    pthread_mutex_lock(&us.lock);
    us.rate = r;
    pthread_mutex_unlock(&us.lock);
}

static void set_delay(long ms)
{
    pthread_mutex_lock(&us.lock);
    us.delay_ms = ms;
    pthread_mutex_unlock(&us.lock);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int start_server(void)
{
    cm_http_config hc = {.host = "127.0.0.1", .port = us.port, .threads = 2,
                         .max_body = 1024, .idle_timeout_s = 5, .drain_s = 1};
    if (cm_http_server_create(&hc, &us.srv) != CM_OK ||
        cm_http_route(us.srv, "GET", "/internal/v1/tenants/{id}/settings", h_settings, NULL) != CM_OK)
        return -1;
    return cm_http_server_start(us.srv) == CM_OK ? 0 : -1;
}

static int setup(void **state)
{
    (void)state;
    cm_log_init("test_tenant", CM_LOG_ERROR + 1);
    us.port = tu_free_port();
    return start_server();
}

static int teardown(void **state)
{
    (void)state;
    cm_http_server_destroy(us.srv);
    return 0;
}

static cm_tenant_settings *client(long ttl_ms)
{
    char url[64];
    cm_tenant_settings *ts = NULL;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", us.port);
    assert_int_equal(cm_tenant_settings_create(url, ttl_ms, 2000, &ts), CM_OK);
    return ts;
}

static void test_cached_for_the_ttl_then_fetched_again(void **state)
{
    cm_tenant_settings *ts = client(300);
    cJSON *s = NULL;
    int before = hits();
    (void)state;

    set_rate(60);
    assert_int_equal(cm_tenant_settings_get(ts, "t1", &s), CM_OK);
    assert_int_equal(cm_tenant_setting_long(s, "send_rate_per_min", 0), 60);
    cJSON_Delete(s);
    set_rate(5);
    /* Within the TTL: the copy, no request. */
    assert_int_equal(cm_tenant_settings_long(ts, "t1", "send_rate_per_min", 0), 60);
    assert_int_equal(cm_tenant_settings_long(ts, "t1", "absent", 7), 7);
    assert_int_equal(hits() - before, 1);
    sleep_ms(400);
    assert_int_equal(cm_tenant_settings_long(ts, "t1", "send_rate_per_min", 0), 5);
    assert_int_equal(hits() - before, 2);
    cm_tenant_settings_destroy(ts);
    set_rate(60);
}

static void test_unknown_tenant_and_bad_ids(void **state)
{
    cm_tenant_settings *ts = client(10000);
    cJSON *s = (cJSON *)1;
    (void)state;
    assert_int_equal(cm_tenant_settings_get(ts, "nobody", &s), CM_ENOTFOUND);
    assert_null(s);
    assert_int_equal(cm_tenant_settings_long(ts, "nobody", "send_rate_per_min", 9), 9);
    assert_int_equal(cm_tenant_settings_get(ts, "../x", &s), CM_EINVAL);
    assert_int_equal(cm_tenant_settings_get(ts, "", &s), CM_EINVAL);
    cm_tenant_settings_destroy(ts);
}

static void test_last_copy_while_the_service_is_down(void **state)
{
    cm_tenant_settings *ts = client(0); /* ask every time */
    cJSON *s = NULL;
    char url[64];
    cm_tenant_settings *fresh;
    (void)state;

    set_rate(42);
    assert_int_equal(cm_tenant_settings_long(ts, "t1", "send_rate_per_min", 0), 42);
    cm_http_server_destroy(us.srv);
    us.srv = NULL;
    /* Down: the last copy answers... */
    assert_int_equal(cm_tenant_settings_get(ts, "t1", &s), CM_OK);
    assert_int_equal(cm_tenant_setting_long(s, "send_rate_per_min", 0), 42);
    cJSON_Delete(s);
    /* ...and a client that never had one says so. */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", us.port);
    assert_int_equal(cm_tenant_settings_create(url, 0, 500, &fresh), CM_OK);
    assert_int_equal(cm_tenant_settings_get(fresh, "t1", &s), CM_EIO);
    assert_int_equal(cm_tenant_settings_long(fresh, "t1", "send_rate_per_min", 3), 3);
    cm_tenant_settings_destroy(fresh);
    cm_tenant_settings_destroy(ts);
    assert_int_equal(start_server(), 0);
}

static void test_a_service_that_does_not_answer_is_asked_again_after_a_pause(void **state)
{
    char url[64];
    cm_tenant_settings *ts;
    cJSON *s = NULL;
    int before;
    (void)state;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d", us.port);
    assert_int_equal(cm_tenant_settings_create(url, 0, 200, &ts), CM_OK);
    set_delay(600); /* longer than the 200 ms budget: a hung service */
    before = hits();
    assert_int_equal(cm_tenant_settings_get(ts, "t1", &s), CM_EIO);
    assert_null(s);
    assert_int_equal(hits() - before, 1);
    /* For a second: the defaults at once, the service not asked (not 20 waits of 200 ms). */
    for (int i = 0; i < 20; i++)
        assert_int_equal(cm_tenant_settings_long(ts, "t1", "send_rate_per_min", 8), 8);
    assert_int_equal(hits() - before, 1);
    set_delay(0);
    sleep_ms(1100);
    set_rate(31);
    assert_int_equal(cm_tenant_settings_long(ts, "t1", "send_rate_per_min", 8), 31);
    assert_int_equal(hits() - before, 2);
    /* With a copy: the copy while it fails, and again one fetch a second at most. */
    set_delay(600);
    for (int i = 0; i < 20; i++)
        assert_int_equal(cm_tenant_settings_long(ts, "t1", "send_rate_per_min", 8), 31);
    assert_int_equal(hits() - before, 3);
    set_delay(0);
    sleep_ms(700); /* the stand-in's late answers are done before the next test counts */
    cm_tenant_settings_destroy(ts);
    set_rate(60);
}

static void *refresh(void *ts)
{
    return (void *)cm_tenant_settings_long(ts, "t1", "send_rate_per_min", 0);
}

static void test_a_stale_copy_is_refreshed_by_one_caller(void **state)
{
    cm_tenant_settings *ts = client(500);
    pthread_t t;
    void *got;
    int before = hits();
    (void)state;

    set_rate(11);
    assert_int_equal(cm_tenant_settings_long(ts, "t1", "send_rate_per_min", 0), 11);
    sleep_ms(600); /* stale */
    set_rate(12);
    set_delay(500);
    assert_int_equal(pthread_create(&t, NULL, refresh, ts), 0);
    for (int i = 0; i < 500 && hits() - before < 2; i++) /* its fetch is on its way */
        sleep_ms(10);
    assert_int_equal(hits() - before, 2);
    for (int i = 0; i < 10; i++) { /* the stale copy meanwhile, without asking again */
        long v = cm_tenant_settings_long(ts, "t1", "send_rate_per_min", 0);
        assert_true(v == 11 || v == 12); /* 12 only if this thread stalled 500 ms */
    }
    pthread_join(t, &got);
    assert_int_equal((long)got, 12);
    assert_int_equal(cm_tenant_settings_long(ts, "t1", "send_rate_per_min", 0), 12);
    assert_int_equal(hits() - before, 2);
    set_delay(0);
    cm_tenant_settings_destroy(ts);
    set_rate(60);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cached_for_the_ttl_then_fetched_again),
        cmocka_unit_test(test_unknown_tenant_and_bad_ids),
        cmocka_unit_test(test_last_copy_while_the_service_is_down),
        cmocka_unit_test(test_a_service_that_does_not_answer_is_asked_again_after_a_pause),
        cmocka_unit_test(test_a_stale_copy_is_refreshed_by_one_caller),
    };
    return cmocka_run_group_tests_name("tenant", tests, setup, teardown);
}
