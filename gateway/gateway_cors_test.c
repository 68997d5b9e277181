/* gateway_cors_test.c - unit tests of the gateway's copy of the tenants' CORS allowlists. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "gateway.h"

static cm_err load(gateway_cors *c, const char *json, char *detail, size_t n)
{
    return gateway_cors_load(c, json, strlen(json), detail, n);
}

static void test_lookup_by_tenant_and_any(void **state)
{
    gateway_cors *c;
    char detail[160];
    (void)state;
    assert_int_equal(gateway_cors_create(&c), CM_OK);
    /* Empty until loaded: nothing allowed. */
    assert_int_equal(gateway_cors_allowed(c, "https://a.io", NULL), 0);
    /* Unsorted input, one origin shared by two tenants. */
    assert_int_equal(load(c, "{\"items\":[{\"tenant_id\":\"t2\",\"origins\":[\"https://z.io\","
                             "\"https://a.io\"]},{\"tenant_id\":\"t1\",\"origins\":"
                             "[\"http://localhost:3000\",\"https://a.io\"]}]}",
                          detail, sizeof(detail)),
                     CM_OK);
    assert_int_equal(gateway_cors_allowed(c, "https://a.io", "t1"), 1);
    assert_int_equal(gateway_cors_allowed(c, "https://a.io", "t2"), 1);
    assert_int_equal(gateway_cors_allowed(c, "https://z.io", "t1"), 0);
    assert_int_equal(gateway_cors_allowed(c, "https://z.io", NULL), 1);
    assert_int_equal(gateway_cors_allowed(c, "HTTPS://A.IO", "t1"), 1); /* host case */
    assert_int_equal(gateway_cors_allowed(c, "http://localhost:3000", "t2"), 0);
    assert_int_equal(gateway_cors_allowed(c, "http://localhost:3001", NULL), 0);
    assert_int_equal(gateway_cors_allowed(c, "https://a.io.evil", NULL), 0);
    assert_int_equal(gateway_cors_allowed(c, "https://a.i", NULL), 0);
    assert_int_equal(gateway_cors_allowed(c, "", NULL), 0);
    assert_int_equal(gateway_cors_allowed(c, NULL, NULL), 0);
    assert_int_equal(gateway_cors_allowed(c, "https://a.io", "t3"), 0);
    /* A bad answer keeps the lists as they were. */
    assert_int_equal(load(c, "{\"items\":{}}", detail, sizeof(detail)), CM_EINVAL);
    assert_non_null(strstr(detail, "items"));
    assert_int_equal(load(c, "{\"items\":[{\"tenant_id\":\"t1\",\"origins\":[7]}]}", detail,
                          sizeof(detail)),
                     CM_EINVAL);
    assert_int_equal(load(c, "not json", detail, sizeof(detail)), CM_EINVAL);
    assert_int_equal(gateway_cors_allowed(c, "https://a.io", "t1"), 1);
    /* A new answer replaces everything: a tenant that left its list is gone. */
    assert_int_equal(load(c, "{\"items\":[{\"tenant_id\":\"t2\",\"origins\":[\"https://a.io\"]}]}",
                          detail, sizeof(detail)),
                     CM_OK);
    assert_int_equal(gateway_cors_allowed(c, "https://a.io", "t1"), 0);
    assert_int_equal(gateway_cors_allowed(c, "https://z.io", NULL), 0);
    assert_int_equal(load(c, "{\"items\":[]}", detail, sizeof(detail)), CM_OK);
    assert_int_equal(gateway_cors_allowed(c, "https://a.io", NULL), 0);
    gateway_cors_destroy(c);
    gateway_cors_destroy(NULL);
}

static void test_many_origins(void **state)
{
    gateway_cors *c;
    char json[64 * 1024], detail[160];
    size_t len = 0;
    (void)state;
    assert_int_equal(gateway_cors_create(&c), CM_OK);
    len += (size_t)snprintf(json + len, sizeof(json) - len, "{\"items\":[");
    for (int t = 0; t < 200; t++)
        len += (size_t)snprintf(json + len, sizeof(json) - len,
                                "%s{\"tenant_id\":\"t%d\",\"origins\":[\"https://t%d.io\"]}",
                                t ? "," : "", t, 199 - t);
    len += (size_t)snprintf(json + len, sizeof(json) - len, "]}");
    assert_true(len < sizeof(json));
    assert_int_equal(load(c, json, detail, sizeof(detail)), CM_OK);
    for (int t = 0; t < 200; t++) {
        char o[32], tid[16];
        snprintf(o, sizeof(o), "https://t%d.io", 199 - t);
        snprintf(tid, sizeof(tid), "t%d", t);
        assert_int_equal(gateway_cors_allowed(c, o, tid), 1);
        snprintf(tid, sizeof(tid), "t%d", (t + 1) % 200);
        assert_int_equal(gateway_cors_allowed(c, o, tid), 0);
    }
    gateway_cors_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookup_by_tenant_and_any),
        cmocka_unit_test(test_many_origins),
    };
    return cmocka_run_group_tests_name("gateway_cors", tests, NULL, NULL);
}
