/* gateway_routes_test.c - unit tests of the gateway's route lookup, header filter and escaping. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "gateway.h"

static gateway_ctx ctx;

static int setup(void **state)
{
    char err[256];
    (void)state;
    memset(&ctx, 0, sizeof(ctx));
    if (gateway_pools_parse(&ctx, "user=http://10.0.0.1:1; messaging=http://10.0.0.2:1;"
                                  "media=http://10.0.0.3:1", err, sizeof(err)) != CM_OK ||
        /* A longer prefix under another one, added last: the longest must win, not the first. */
        gateway_routes_parse(&ctx, "/v1/tenants user auth=none; /v1/auth user auth=none;"
                                   "/v1/users user; /v1/conversations messaging;"
                                   "/v1/users/me/avatar media", err, sizeof(err)) != CM_OK)
        fail_msg("setup: %s", err);
    return 0;
}

static const char *upstream_of(const char *path)
{
    const gateway_route *r = gateway_route_find(&ctx, path);
    return r ? r->pool->targets[0].url : "(none)";
}

static void test_route_exact_and_below(void **state)
{
    (void)state;
    assert_string_equal(upstream_of("/v1/users"), "http://10.0.0.1:1");
    assert_string_equal(upstream_of("/v1/users/"), "http://10.0.0.1:1");
    assert_string_equal(upstream_of("/v1/users/me"), "http://10.0.0.1:1");
    assert_string_equal(upstream_of("/v1/conversations/abc/messages"), "http://10.0.0.2:1");
    assert_string_equal(upstream_of("/v1/auth/token"), "http://10.0.0.1:1");
    assert_int_equal(gateway_route_find(&ctx, "/v1/users/x")->auth, GW_AUTH_BEARER);
    assert_int_equal(gateway_route_find(&ctx, "/v1/auth/login")->auth, GW_AUTH_NONE);
}

static void test_route_segment_boundary(void **state)
{
    (void)state;
    assert_string_equal(upstream_of("/v1/usersX"), "(none)");
    assert_string_equal(upstream_of("/v1/users-admin/x"), "(none)");
    assert_string_equal(upstream_of("/v1/authority"), "(none)");
    assert_string_equal(upstream_of("/v1/user"), "(none)");
    assert_string_equal(upstream_of("/v1"), "(none)");
    assert_string_equal(upstream_of("/"), "(none)");
    assert_string_equal(upstream_of(""), "(none)");
    assert_string_equal(upstream_of("/V1/users"), "(none)"); /* paths are case-sensitive */
    assert_string_equal(upstream_of("/v2/users"), "(none)");
    assert_string_equal(upstream_of("v1/users"), "(none)");
}

static void test_route_longest_prefix(void **state)
{
    (void)state;
    assert_string_equal(upstream_of("/v1/users/me/avatar"), "http://10.0.0.3:1");
    assert_string_equal(upstream_of("/v1/users/me/avatar/large"), "http://10.0.0.3:1");
    assert_string_equal(upstream_of("/v1/users/me/avatars"), "http://10.0.0.1:1");
    assert_string_equal(upstream_of("/v1/users/me"), "http://10.0.0.1:1");
}

static void test_route_empty_table(void **state)
{
    gateway_ctx empty;
    (void)state;
    memset(&empty, 0, sizeof(empty));
    assert_null(gateway_route_find(&empty, "/v1/users"));
}

static void test_header_dropped(void **state)
{
    (void)state;
    const char *dropped[] = {"Connection", "connection", "CONNECTION", "Keep-Alive",
                             "Proxy-Connection", "TE", "te", "Trailer", "Transfer-Encoding",
                             "transfer-encoding", "Upgrade", "Host", "host", "Content-Length",
                             "content-length", "Expect", "Proxy-Authorization",
                             "X-Auth-User", "x-auth-user", "X-AUTH-TENANT", "X-Auth-Roles",
                             "X-Auth-", "X-Request-Id", "x-request-id", "traceparent",
                             "Traceparent", "X-Forwarded-For", "x-forwarded-host",
                             "X-Real-IP", "Forwarded", "X-Gateway-Upstream", "X-Internal-Key",
                             "x-internal-key", NULL};
    for (int i = 0; dropped[i]; i++)
        if (!gateway_header_dropped(dropped[i]))
            fail_msg("header %s would be forwarded", dropped[i]);
    const char *kept[] = {"Authorization", "Content-Type", "Accept", "tracestate",
                          "Idempotency-Key", "User-Agent", "X-Auth", "X-Authorization",
                          "X-Author", "Connection-Id", "Hosts", "Tenant", NULL};
    for (int i = 0; kept[i]; i++)
        if (gateway_header_dropped(kept[i]))
            fail_msg("header %s would be dropped", kept[i]);
}

static void test_escape(void **state)
{
    char out[64];
    size_t len;
    (void)state;
    len = 0;
    assert_int_equal(gateway_escape("a b/c?d#e&f=g", 1, out, sizeof(out), &len), 0);
    assert_string_equal(out, "a%20b/c%3Fd%23e%26f%3Dg");
    assert_int_equal(len, strlen(out));
    len = 0;
    assert_int_equal(gateway_escape("a b/c", 0, out, sizeof(out), &len), 0);
    assert_string_equal(out, "a%20b%2Fc");
    len = 0;
    assert_int_equal(gateway_escape("AZaz09-._~", 0, out, sizeof(out), &len), 0);
    assert_string_equal(out, "AZaz09-._~"); /* unreserved stay as they are */
    len = 0;
    assert_int_equal(gateway_escape("caf\xc3\xa9", 0, out, sizeof(out), &len), 0);
    assert_string_equal(out, "caf%C3%A9");
    len = 0;
    assert_int_equal(gateway_escape("%2e%00\r\n+", 0, out, sizeof(out), &len), 0);
    assert_string_equal(out, "%252e%2500%0D%0A%2B"); /* no double decoding downstream */
    len = 0;
    assert_int_equal(gateway_escape("", 0, out, sizeof(out), &len), 0);
    assert_string_equal(out, "");
}

static void test_escape_appends(void **state)
{
    char out[64];
    size_t len;
    (void)state;
    len = 0;
    assert_int_equal(gateway_escape("/v1/x", 1, out, sizeof(out), &len), 0);
    out[len++] = '?';
    assert_int_equal(gateway_escape("q", 0, out, sizeof(out), &len), 0);
    out[len++] = '=';
    assert_int_equal(gateway_escape("a&b", 0, out, sizeof(out), &len), 0);
    assert_string_equal(out, "/v1/x?q=a%26b");
    assert_int_equal(len, 13);
}

static void test_escape_capacity(void **state)
{
    char out[8];
    size_t len;
    (void)state;
    len = 0;
    assert_int_equal(gateway_escape("1234567", 0, out, sizeof(out), &len), 0); /* 7 + NUL */
    assert_string_equal(out, "1234567");
    len = 0;
    assert_int_equal(gateway_escape("12345678", 0, out, sizeof(out), &len), -1);
    len = 0;
    assert_int_equal(gateway_escape("1234 ", 0, out, sizeof(out), &len), 0); /* 4 + 3 + NUL */
    assert_string_equal(out, "1234%20");
    len = 0;
    assert_int_equal(gateway_escape("12345 ", 0, out, sizeof(out), &len), -1);
    len = 5;
    memcpy(out, "abcde", 5);
    assert_int_equal(gateway_escape("xyz", 0, out, sizeof(out), &len), -1); /* 5 + 3 > 7 */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_exact_and_below),
        cmocka_unit_test(test_route_segment_boundary),
        cmocka_unit_test(test_route_longest_prefix),
        cmocka_unit_test(test_route_empty_table),
        cmocka_unit_test(test_header_dropped),
        cmocka_unit_test(test_escape),
        cmocka_unit_test(test_escape_appends),
        cmocka_unit_test(test_escape_capacity),
    };
    return cmocka_run_group_tests_name("gateway_routes", tests, setup, NULL);
}
