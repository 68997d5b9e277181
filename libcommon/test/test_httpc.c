/* test_httpc.c - unit tests of the small HTTP client (common/httpc.h) against a real server. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/http.h"
#include "common/httpc.h"
#include "common/log.h"
#include "testutil.h"

static cm_http_server *srv;
static int port;

/* GET /echo: the Authorization header back, or "-". */
static void h_echo(cm_http_req *req, void *ud)
{
    const char *a = cm_http_header(req, "Authorization");
    (void)ud;
    cm_http_reply_raw(req, 200, "text/plain", a ? a : "-", strlen(a ? a : "-"));
}

static void h_slow(cm_http_req *req, void *ud)
{
    (void)ud;
    tu_sleep_ms(800);
    cm_http_reply_raw(req, 200, "text/plain", "late", 4);
}

static void h_big(cm_http_req *req, void *ud)
{
    char buf[4096];
    (void)ud;
    memset(buf, 'b', sizeof(buf));
    cm_http_reply_raw(req, 200, "text/plain", buf, sizeof(buf));
}

static int setup(void **state)
{
    (void)state;
    cm_log_init("test_httpc", CM_LOG_ERROR + 1);
    port = tu_free_port();
    cm_http_config cfg = {.host = "127.0.0.1", .port = port, .threads = 2, .max_body = 1024,
                          .idle_timeout_s = 5, .drain_s = 1};
    if (cm_http_server_create(&cfg, &srv) || cm_http_route(srv, "GET", "/echo", h_echo, NULL) ||
        cm_http_route(srv, "GET", "/slow", h_slow, NULL) ||
        cm_http_route(srv, "GET", "/big", h_big, NULL))
        return -1;
    return cm_http_server_start(srv) == CM_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    cm_http_server_destroy(srv);
    return 0;
}

static char *url(const char *path)
{
    static char u[128];
    snprintf(u, sizeof(u), "http://127.0.0.1:%d%s", port, path);
    return u;
}

static void test_get(void **state)
{
    char *body = NULL;
    size_t len = 0;
    long status = 0;
    (void)state;
    assert_int_equal(cm_httpc_get(url("/echo"), "tok.en", 2000, 1024, &body, &len, &status), CM_OK);
    assert_int_equal(status, 200);
    assert_string_equal(body, "Bearer tok.en");
    assert_int_equal(len, 13);
    free(body);
    assert_int_equal(cm_httpc_get(url("/echo"), NULL, 2000, 1024, &body, &len, &status), CM_OK);
    assert_string_equal(body, "-");
    free(body);
    /* A problem answer is an answer: the status tells. */
    assert_int_equal(cm_httpc_get(url("/nothing"), NULL, 2000, 1024, &body, &len, &status), CM_OK);
    assert_int_equal(status, 404);
    free(body);
}

static void test_limits(void **state)
{
    char *body = NULL;
    size_t len = 0;
    long status = 0;
    (void)state;
    assert_int_equal(cm_httpc_get(url("/big"), NULL, 2000, 4095, &body, &len, &status), CM_ETOOBIG);
    assert_int_equal(cm_httpc_get(url("/big"), NULL, 2000, 4096, &body, &len, &status), CM_OK);
    assert_int_equal(len, 4096);
    free(body);
    assert_int_equal(cm_httpc_get(url("/slow"), NULL, 200, 1024, &body, &len, &status), CM_ETIMEOUT);
    assert_int_equal(cm_httpc_get("file:///etc/passwd", NULL, 200, 1024, &body, &len, &status), CM_EIO);
    char dead[64];
    snprintf(dead, sizeof(dead), "http://127.0.0.1:%d/", tu_free_port());
    assert_int_equal(cm_httpc_get(dead, NULL, 500, 1024, &body, &len, &status), CM_EIO);
}

/* More requests than slots, over and over: every one gets its answer. A slot reused for the
 * last requests while libcurl had just reported nothing running once ended the call early,
 * leaving those requests unanswered (CM_EIO: the push sender retried them as "unreachable"). */
static void test_pool_answers_every_request(void **state)
{
    enum { N = 200 };
    cm_httpc_request reqs[N];
    cm_httpc_result res[N];
    cm_httpc_pool *pool;
    const char *hdr[] = {"Authorization: Bearer p", NULL};
    (void)state;
    assert_int_equal(cm_httpc_pool_create(4, &pool), CM_OK);
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < N; i++)
            reqs[i] = (cm_httpc_request){"GET", url("/echo"), hdr, NULL, 0, 5000, 1024, 0, NULL,
                                         NULL};
        assert_int_equal(cm_httpc_pool_perform(pool, reqs, N, res), CM_OK);
        for (int i = 0; i < N; i++) {
            assert_int_equal(res[i].rc, CM_OK);
            assert_int_equal(res[i].status, 200);
            assert_string_equal(res[i].body, "Bearer p");
            free(res[i].body);
        }
    }
    cm_httpc_pool_destroy(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_pool_answers_every_request),
    };
    return cmocka_run_group_tests_name("httpc", tests, setup, teardown);
}
