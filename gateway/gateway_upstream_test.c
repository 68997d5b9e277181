/* gateway_upstream_test.c - unit tests of the route table formats, the circuit breaker, the
 * load balancers, the retry rules and budget, W3C traceparent and the token bucket refill. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "gateway.h"

static gateway_ctx ctx;

static int reset(void **state)
{
    (void)state;
    memset(&ctx, 0, sizeof(ctx));
    ctx.breaker = (gateway_breaker_conf){.failures = 5, .min_requests = 10, .open_ms = 60000,
                                         .successes = 2};
    ctx.retry_budget_ratio = 200;
    return 0;
}

static void test_pools_parse(void **state)
{
    char err[256] = "";
    gateway_pool *p;
    (void)state;
    assert_int_equal(gateway_pools_parse(&ctx,
                                         " a=http://127.0.0.1:1,http://127.0.0.1:2*3 lb=weighted ;"
                                         "b=https://svc.example:8443/ ;; ",
                                         err, sizeof(err)),
                     CM_OK);
    assert_int_equal(ctx.npools, 2);
    p = gateway_pool_find(&ctx, "a");
    assert_non_null(p);
    assert_int_equal(p->lb, GW_LB_WEIGHTED);
    assert_int_equal(p->ntargets, 2);
    assert_string_equal(p->targets[1].url, "http://127.0.0.1:2");
    assert_int_equal(p->targets[1].weight, 3);
    assert_int_equal(p->targets[0].weight, 1);
    assert_string_equal(gateway_pool_find(&ctx, "b")->targets[0].url, "https://svc.example:8443");
    /* The same name again replaces the pool. */
    assert_int_equal(gateway_pools_parse(&ctx, "a=http://127.0.0.1:9 lb=random", err, sizeof(err)),
                     CM_OK);
    assert_int_equal(ctx.npools, 2);
    assert_int_equal(gateway_pool_find(&ctx, "a")->ntargets, 1);
    assert_int_equal(gateway_pool_find(&ctx, "a")->lb, GW_LB_RANDOM);
}

static void test_pools_parse_errors(void **state)
{
    static const char *const bad[][2] = {
        {"noequals", "has no '='"},
        {"=http://a:1", "must be 1-31"},
        {"Caps=http://a:1", "must be 1-31"},
        {"a=", "has no URL"},
        {"a=ftp://x:1", "is not an http(s)"},
        {"a=http://user@x:1", "is not an http(s)"},
        {"a=http://x:1?q", "is not an http(s)"},
        {"a=http://x:1*0", "weight '0' must be 1-1000"},
        {"a=http://x:1*w", "weight 'w'"},
        {"a=http://x:1 lb=fastest", "lb 'fastest' is not"},
        {"a=http://x:1 weight=2", "unknown option"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[256] = "";
        if (gateway_pools_parse(&ctx, bad[i][0], err, sizeof(err)) != CM_EINVAL)
            fail_msg("'%s' was accepted", bad[i][0]);
        if (strstr(err, bad[i][1]) == NULL)
            fail_msg("'%s': error '%s' does not say '%s'", bad[i][0], err, bad[i][1]);
    }
    assert_int_equal(ctx.npools, 0);
}

static void test_routes_parse(void **state)
{
    char err[256] = "";
    gateway_route *r;
    (void)state;
    assert_int_equal(gateway_pools_parse(&ctx, "u=http://127.0.0.1:1", err, sizeof(err)), CM_OK);
    assert_int_equal(gateway_routes_parse(&ctx,
                                          "/v1/a/ u auth=tenant-key timeout_ms=2500 "
                                          "max_body=4096; /v1/b u; /admin u auth=admin",
                                          err, sizeof(err)),
                     CM_OK);
    assert_int_equal(ctx.nroutes, 3);
    r = gateway_route_find(&ctx, "/v1/a/x");
    assert_non_null(r);
    assert_string_equal(r->prefix, "/v1/a");
    assert_int_equal(r->auth, GW_AUTH_TENANT_KEY);
    assert_int_equal(r->timeout_ms, 2500);
    assert_int_equal(r->max_body, 4096);
    assert_int_equal(gateway_route_find(&ctx, "/v1/b")->auth, GW_AUTH_BEARER); /* default */
    assert_int_equal(gateway_route_find(&ctx, "/admin/x")->auth, GW_AUTH_ADMIN);
    /* Same prefix: replaced, not added. */
    assert_int_equal(gateway_routes_parse(&ctx, "/v1/b u auth=none", err, sizeof(err)), CM_OK);
    assert_int_equal(ctx.nroutes, 3);
    assert_int_equal(gateway_route_find(&ctx, "/v1/b")->auth, GW_AUTH_NONE);

    static const char *const bad[][2] = {
        {"/v1/c", "needs a prefix and a pool"},
        {"v1/c u", "must be an absolute path"},
        {"/v1/c nope", "no pool named 'nope'"},
        {"/v1/c u auth=maybe", "auth 'maybe' is not"},
        {"/v1/c u timeout_ms=5", "timeout_ms must be"},
        {"/v1/c u max_body=-1", "max_body must be"},
        {"/v1/c u retries=3", "unknown option 'retries=3'"},
        {"/v1/c?x u", "must be an absolute path"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        if (gateway_routes_parse(&ctx, bad[i][0], err, sizeof(err)) != CM_EINVAL)
            fail_msg("'%s' was accepted", bad[i][0]);
        if (strstr(err, bad[i][1]) == NULL)
            fail_msg("'%s': error '%s' does not say '%s'", bad[i][0], err, bad[i][1]);
    }
    assert_int_equal(ctx.nroutes, 3);
}

static void test_breaker_opens_after_failures_once_enough_requests(void **state)
{
    gateway_breaker b = {0};
    const gateway_breaker_conf *c = &ctx.breaker;
    (void)state;
    /* Five failures straight away: fewer than 10 requests seen, so it stays closed. */
    for (int i = 0; i < 5; i++) {
        assert_true(gateway_breaker_allow(&b, c, 0));
        gateway_breaker_record(&b, c, 0, 0);
    }
    assert_int_equal(b.state, GW_CIRCUIT_CLOSED);
    /* A success resets the run of failures. */
    gateway_breaker_record(&b, c, 1, 0);
    for (int i = 0; i < 4; i++)
        gateway_breaker_record(&b, c, 0, 0);
    assert_int_equal(b.state, GW_CIRCUIT_CLOSED); /* 10 seen, but only 4 in a row */
    gateway_breaker_record(&b, c, 0, 1000);
    assert_int_equal(b.state, GW_CIRCUIT_OPEN);
    assert_int_equal(b.opened_total, 1);
    /* Open: refused until open_ms passed. */
    assert_false(gateway_breaker_allow(&b, c, 1000));
    assert_false(gateway_breaker_allow(&b, c, 60999));
    assert_int_equal(gateway_breaker_retry_in(&b, c, 31000), 30000);
}

static void test_breaker_half_open(void **state)
{
    gateway_breaker b = {0};
    const gateway_breaker_conf *c = &ctx.breaker;
    (void)state;
    for (int i = 0; i < 10; i++)
        gateway_breaker_record(&b, c, 0, 0);
    assert_int_equal(b.state, GW_CIRCUIT_OPEN);
    /* After open_ms one trial at a time. */
    assert_true(gateway_breaker_allow(&b, c, 60000));
    assert_int_equal(b.state, GW_CIRCUIT_HALF_OPEN);
    assert_false(gateway_breaker_allow(&b, c, 60000));
    /* A failed trial opens it again, for a full open_ms from now. */
    gateway_breaker_record(&b, c, 0, 60001);
    assert_int_equal(b.state, GW_CIRCUIT_OPEN);
    assert_false(gateway_breaker_allow(&b, c, 120000));
    assert_true(gateway_breaker_allow(&b, c, 120001));
    gateway_breaker_record(&b, c, 1, 120002);
    assert_int_equal(b.state, GW_CIRCUIT_HALF_OPEN); /* one success of two */
    assert_true(gateway_breaker_allow(&b, c, 120003));
    gateway_breaker_record(&b, c, 1, 120004);
    assert_int_equal(b.state, GW_CIRCUIT_CLOSED);
    /* Closed again with a fresh count: 5 failures alone do not reopen it. */
    for (int i = 0; i < 5; i++)
        gateway_breaker_record(&b, c, 0, 120005);
    assert_int_equal(b.state, GW_CIRCUIT_CLOSED);
}

static gateway_pool *pool_of(const char *spec)
{
    char err[256];
    if (gateway_pools_parse(&ctx, spec, err, sizeof(err)) != CM_OK)
        fail_msg("%s", err);
    if (gateway_upstreams_init(&ctx) != CM_OK)
        fail_msg("init");
    return &ctx.pools[ctx.npools - 1];
}

static int pick_index(gateway_pool *p, const gateway_instance *exclude)
{
    gateway_instance *in;
    char url[GW_URL_MAX], ct[GW_URL_MAX];
    int64_t retry_in;
    if (gateway_pick(&ctx, p, exclude, &in, url, ct, &retry_in) != CM_OK)
        return -1;
    gateway_done(&ctx, in, 1, 0.001);
    return (int)(in - p->inst);
}

static void test_lb_round_robin_and_weighted(void **state)
{
    gateway_pool *p = pool_of("rr=http://127.0.0.1:1,http://127.0.0.1:2,http://127.0.0.1:3");
    int seen[3] = {0};
    (void)state;
    for (int i = 0; i < 300; i++)
        seen[pick_index(p, NULL)]++;
    assert_int_equal(seen[0], 100);
    assert_int_equal(seen[1], 100);
    assert_int_equal(seen[2], 100);
    gateway_upstreams_cleanup(&ctx);
    reset(NULL);
    p = pool_of("w=http://127.0.0.1:1*5,http://127.0.0.1:2*1,http://127.0.0.1:3*1 lb=weighted");
    int w[3] = {0}, run = 0, longest = 0, last = -1;
    for (int i = 0; i < 700; i++) {
        int k = pick_index(p, NULL);
        w[k]++;
        run = k == last ? run + 1 : 1;
        longest = run > longest ? run : longest;
        last = k;
    }
    assert_int_equal(w[0], 500);
    assert_int_equal(w[1], 100);
    assert_int_equal(w[2], 100);
    assert_true(longest <= 4); /* smooth: a a b a c a a | a a ..., never all five in a row */
    gateway_upstreams_cleanup(&ctx);
}

static void test_lb_least_conn_and_random(void **state)
{
    gateway_pool *p = pool_of("lc=http://127.0.0.1:1,http://127.0.0.1:2 lb=least_conn");
    gateway_instance *a, *b;
    char url[GW_URL_MAX], ct[GW_URL_MAX];
    int64_t retry_in;
    int seen[2] = {0};
    (void)state;
    /* One request held on an instance: the next ones go to the other. */
    assert_int_equal(gateway_pick(&ctx, p, NULL, &a, url, ct, &retry_in), CM_OK);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(gateway_pick(&ctx, p, NULL, &b, url, ct, &retry_in), CM_OK);
        assert_ptr_not_equal(a, b);
        gateway_done(&ctx, b, 1, 0.001);
    }
    gateway_done(&ctx, a, 1, 0.001);
    gateway_upstreams_cleanup(&ctx);
    reset(NULL);
    p = pool_of("rnd=http://127.0.0.1:1,http://127.0.0.1:2 lb=random");
    for (int i = 0; i < 1000; i++)
        seen[pick_index(p, NULL)]++;
    assert_true(seen[0] > 350 && seen[1] > 350); /* binomial(1000, 0.5): 15 sigma off otherwise */
    gateway_upstreams_cleanup(&ctx);
}

static void test_pick_skips_open_and_unhealthy(void **state)
{
    gateway_pool *p = pool_of("s=http://127.0.0.1:1,http://127.0.0.1:2");
    gateway_instance *in;
    char url[GW_URL_MAX], ct[GW_URL_MAX];
    int64_t retry_in;
    (void)state;
    ctx.breaker.min_requests = 0;
    ctx.breaker.failures = 1;
    /* Fail instance 0 once: its circuit opens and every pick goes to 1. */
    in = &p->inst[0];
    assert_true(gateway_breaker_allow(&in->breaker, &ctx.breaker, gateway_now_ms()));
    atomic_fetch_add(&in->inflight, 1);
    gateway_done(&ctx, in, 0, 0.001);
    assert_int_equal(in->breaker.state, GW_CIRCUIT_OPEN);
    for (int i = 0; i < 5; i++)
        assert_int_equal(pick_index(p, NULL), 1);
    /* The other one excluded (a retry): nothing is left. */
    assert_int_equal(gateway_pick(&ctx, p, &p->inst[1], &in, url, ct, &retry_in), CM_OK);
    assert_ptr_equal(in, &p->inst[1]); /* the only one left is retried */
    gateway_done(&ctx, in, 1, 0.001);
    atomic_store(&p->inst[1].healthy, 0);
    /* Every instance condemned by health checks: the breakers alone decide (panic mode). */
    assert_int_equal(pick_index(p, NULL), 1);
    /* Open circuit everywhere: refused, with when to retry. */
    assert_true(gateway_breaker_allow(&p->inst[1].breaker, &ctx.breaker, gateway_now_ms()));
    atomic_fetch_add(&p->inst[1].inflight, 1);
    gateway_done(&ctx, &p->inst[1], 0, 0.001);
    assert_int_equal(gateway_pick(&ctx, p, NULL, &in, url, ct, &retry_in), CM_EAGAIN);
    assert_true(retry_in > 59000 && retry_in <= 60000);
    /* The operator's reset closes them. */
    assert_int_equal(gateway_circuit_reset(p, "127.0.0.1:1"), 1);
    assert_int_equal(pick_index(p, NULL), 0);
    assert_int_equal(gateway_circuit_reset(p, NULL), 2);
    assert_int_equal(gateway_circuit_reset(p, "10.9.9.9:1"), 0);
    gateway_upstreams_cleanup(&ctx);
}

static void test_retry_rules_and_budget(void **state)
{
    gateway_pool *p = pool_of("b=http://127.0.0.1:1");
    int taken = 0;
    (void)state;
    assert_true(gateway_retryable("GET", 0));
    assert_true(gateway_retryable("PUT", 0));
    assert_true(gateway_retryable("DELETE", 0));
    assert_true(gateway_retryable("HEAD", 0));
    assert_false(gateway_retryable("POST", 0));
    assert_false(gateway_retryable("PATCH", 0));
    assert_true(gateway_retryable("POST", 1));
    assert_false(gateway_retryable("get", 0)); /* methods are case-sensitive (RFC 9110 9.1) */
    /* Ten to start with, then 20% of requests. */
    while (gateway_retry_take(&ctx, p))
        taken++;
    assert_int_equal(taken, 10);
    for (int i = 0; i < 100; i++)
        gateway_retry_deposit(&ctx, p);
    taken = 0;
    while (gateway_retry_take(&ctx, p))
        taken++;
    assert_int_equal(taken, 20);
    for (int i = 0; i < 100000; i++)
        gateway_retry_deposit(&ctx, p);
    assert_int_equal(atomic_load(&p->budget_milli), GW_RETRY_BUDGET_CAP);
    gateway_upstreams_cleanup(&ctx);
}

static void test_traceparent(void **state)
{
    char out[64], out2[64];
    const char *in = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    (void)state;
    gateway_traceparent(in, out, sizeof(out));
    assert_int_equal(strlen(out), 55);
    assert_memory_equal(out, in, 36);         /* same trace */
    assert_memory_not_equal(out + 36, in + 36, 16); /* our own span */
    assert_string_equal(out + 52, "-01");
    static const char *const bad[] = {
        NULL, "", "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01", /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", /* zero parent id */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", /* uppercase */
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", /* unknown version */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        gateway_traceparent(bad[i], out, sizeof(out));
        gateway_traceparent(bad[i], out2, sizeof(out2));
        assert_int_equal(strlen(out), 55);
        assert_memory_equal(out, "00-", 3);
        if (bad[i] && strlen(bad[i]) > 36)
            assert_memory_not_equal(out + 3, bad[i] + 3, 32);
        assert_memory_not_equal(out + 3, out2 + 3, 32); /* a new trace each time */
    }
}

static void test_bucket_refill(void **state)
{
    double tokens = 0;
    int64_t ts = 1000;
    (void)state;
    gateway_bucket_refill(&tokens, &ts, 10, 20, 1500); /* 0.5 s at 10/s */
    assert_true(tokens > 4.999 && tokens < 5.001);
    assert_int_equal(ts, 1500);
    gateway_bucket_refill(&tokens, &ts, 10, 20, 100000); /* capped at the burst */
    assert_true(tokens > 19.999 && tokens < 20.001);
    tokens = 3;
    gateway_bucket_refill(&tokens, &ts, 10, 20, 50000); /* a clock going back adds nothing */
    assert_true(tokens > 2.999 && tokens < 3.001);
    assert_int_equal(ts, 100000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_pools_parse, reset),
        cmocka_unit_test_setup(test_pools_parse_errors, reset),
        cmocka_unit_test_setup(test_routes_parse, reset),
        cmocka_unit_test_setup(test_breaker_opens_after_failures_once_enough_requests, reset),
        cmocka_unit_test_setup(test_breaker_half_open, reset),
        cmocka_unit_test_setup(test_lb_round_robin_and_weighted, reset),
        cmocka_unit_test_setup(test_lb_least_conn_and_random, reset),
        cmocka_unit_test_setup(test_pick_skips_open_and_unhealthy, reset),
        cmocka_unit_test_setup(test_retry_rules_and_budget, reset),
        cmocka_unit_test_setup(test_traceparent, reset),
        cmocka_unit_test_setup(test_bucket_refill, reset),
    };
    return cmocka_run_group_tests_name("gateway_upstream", tests, NULL, NULL);
}
