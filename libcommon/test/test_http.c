/* test_http.c - unit tests of the HTTP server (common/http.h) over real sockets on 127.0.0.1. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "common/http.h"
#include "common/log.h"
#include "common/uuid.h"
#include "testutil.h"

#define MAX_BODY 1024

typedef struct fixture {
    cm_http_server *srv;
    int port;
    atomic_int ready_fails;
} fixture;

static fixture fx;

/* GET /items/{id}: echoes what the request API sees. */
static void h_item(cm_http_req *req, void *ud)
{
    long limit = 0;
    const char *q = cm_http_query(req, "q"), *hx = cm_http_header(req, "x-test-header");
    (void)ud;
    if (cm_http_query_long(req, "limit", 50, 1, 200, &limit) != CM_OK)
        return;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", cm_http_param(req, "id"));
    cJSON_AddBoolToObject(o, "no_such_param", cm_http_param(req, "i") == NULL);
    cJSON_AddStringToObject(o, "q", q ? q : "(none)");
    cJSON_AddNumberToObject(o, "limit", (double)limit);
    cJSON_AddStringToObject(o, "request_id", cm_http_request_id(req));
    cJSON_AddStringToObject(o, "method", cm_http_method(req));
    cJSON_AddStringToObject(o, "path", cm_http_path(req));
    cJSON_AddStringToObject(o, "ip", cm_http_client_ip(req));
    cJSON_AddStringToObject(o, "header", hx ? hx : "(none)");
    cm_http_add_header(req, "X-Extra", "yes");
    cm_http_reply_json(req, 200, o);
}

/* GET /items/{id}/parts/{part} */
static void h_part(cm_http_req *req, void *ud)
{
    (void)ud;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", cm_http_param(req, "id"));
    cJSON_AddStringToObject(o, "part", cm_http_param(req, "part"));
    cm_http_reply_json(req, 200, o);
}

/* POST /items: a JSON body, echoed back. */
static void h_create(cm_http_req *req, void *ud)
{
    cJSON *body;
    (void)ud;
    if (cm_http_json_body(req, &body) != CM_OK)
        return;
    /* The tree belongs to the request: reply with a copy. */
    cm_http_reply_json(req, 201, cJSON_Duplicate(body, 1));
}

/* POST /raw: answers with the number of body bytes received. */
static void h_raw(cm_http_req *req, void *ud)
{
    size_t len;
    char out[64];
    (void)ud;
    cm_http_body(req, &len);
    int n = snprintf(out, sizeof(out), "{\"len\":%zu}", len);
    cm_http_reply_raw(req, 200, "application/json", out, (size_t)n);
}

/* GET /silent: a buggy handler that answers nothing. */
static void h_silent(cm_http_req *req, void *ud)
{
    (void)req;
    (void)ud;
}

/* GET /err/{n}: cm_http_reply_error for error n. */
static void h_err(cm_http_req *req, void *ud)
{
    (void)ud;
    cm_http_reply_error(req, (cm_err)strtol(cm_http_param(req, "n"), NULL, 10), "boom");
}

/* Prefix route /proxy: answers with method and path. */
static void h_prefix(cm_http_req *req, void *ud)
{
    char out[256];
    (void)ud;
    int n = snprintf(out, sizeof(out), "%s %s", cm_http_method(req), cm_http_path(req));
    cm_http_reply_raw(req, 200, "text/plain", out, (size_t)n);
}

/* GET /later/{ms}: suspended; another thread answers after ms milliseconds. */
static void *answer_later(void *arg)
{
    cm_http_req *req = arg;
    long ms = strtol(cm_http_param(req, "ms"), NULL, 10);
    char *body = strdup("later");
    tu_sleep_ms(ms);
    cm_http_add_header(req, "X-Answered-By", "another thread");
    cm_http_reply_take(req, 202, "text/plain", body, strlen(body));
    cm_http_resume(req);
    return NULL;
}

static void h_later(cm_http_req *req, void *ud)
{
    pthread_t t;
    (void)ud;
    assert_int_equal(cm_http_suspend(req), CM_OK);
    assert_int_equal(pthread_create(&t, NULL, answer_later, req), 0);
    pthread_detach(t);
}

/* GET /answered: a request that has its answer cannot be suspended. */
static void h_answered(cm_http_req *req, void *ud)
{
    (void)ud;
    cm_http_reply_raw(req, 200, "text/plain", "now", 3);
    assert_int_equal(cm_http_suspend(req), CM_EINVAL);
}

static cm_err ready(void *ud, char *detail, size_t n)
{
    fixture *f = ud;
    if (atomic_load(&f->ready_fails)) {
        snprintf(detail, n, "mongo: down");
        return CM_EIO;
    }
    return CM_OK;
}

static void metrics(void *ud, void (*emit)(void *ctx, const char *text), void *ctx)
{
    (void)ud;
    emit(ctx, "# TYPE unit_custom_total counter\nunit_custom_total 7\n");
}

static int setup(void **state)
{
    (void)state;
    cm_log_init("test_http", CM_LOG_ERROR); /* no access log lines in the test output */
    fx.port = tu_free_port();
    cm_http_config cfg = {.host = "127.0.0.1", .port = fx.port, .threads = 2,
                          .max_body = MAX_BODY, .idle_timeout_s = 5, .drain_s = 2};
    if (cm_http_server_create(&cfg, &fx.srv) != CM_OK)
        return -1;
    if (cm_http_route(fx.srv, "GET", "/items/{id}", h_item, NULL) ||
        cm_http_route(fx.srv, "GET", "/items/{id}/parts/{part}", h_part, NULL) ||
        cm_http_route(fx.srv, "POST", "/items", h_create, NULL) ||
        cm_http_route(fx.srv, "POST", "/raw", h_raw, NULL) ||
        cm_http_route(fx.srv, "GET", "/silent", h_silent, NULL) ||
        cm_http_route(fx.srv, "GET", "/err/{n}", h_err, NULL) ||
        cm_http_route(fx.srv, "GET", "/later/{ms}", h_later, NULL) ||
        cm_http_route(fx.srv, "GET", "/answered", h_answered, NULL) ||
        cm_http_route_prefix(fx.srv, "/proxy", h_prefix, NULL))
        return -1;
    cm_http_allow_suspend(fx.srv);
    cm_http_set_ready(fx.srv, ready, &fx);
    cm_http_set_metrics(fx.srv, metrics, NULL);
    return cm_http_server_start(fx.srv) == CM_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    cm_http_server_destroy(fx.srv);
    return 0;
}

/* Sends a request and parses the JSON body; fails the test when the body is not JSON. */
static cJSON *request_json(const char *method, const char *path, const char *headers,
                           const char *body, int want_status, tu_resp *r)
{
    assert_int_equal(tu_http(fx.port, method, path, headers, body, body ? strlen(body) : 0, r), 0);
    if (r->status != want_status)
        fail_msg("%s %s: want %d, got %d:\n%s", method, path, want_status, r->status,
                 r->raw ? r->raw : "(nothing)");
    assert_non_null(r->body);
    cJSON *j = cJSON_ParseWithLength(r->body, r->body_len);
    if (j == NULL)
        fail_msg("%s %s: body is not JSON: %s", method, path, r->body);
    return j;
}

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "(missing)";
}

static int jint(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valueint : -12345;
}

/* Checks the RFC 9457 problem fields and that the X-Request-Id header matches the body. */
static void check_problem(const tu_resp *r, const cJSON *p, int status, const char *slug,
                          const char *instance)
{
    char type[128], ct[128], rid[128];
    snprintf(type, sizeof(type), "urn:chat:problem:%s", slug);
    assert_non_null(tu_resp_header(r, "Content-Type", ct, sizeof(ct)));
    assert_string_equal(ct, "application/problem+json");
    assert_string_equal(jstr(p, "type"), type);
    assert_string_not_equal(jstr(p, "title"), "(missing)");
    assert_int_equal(jint(p, "status"), status);
    assert_string_not_equal(jstr(p, "detail"), "(missing)");
    assert_string_equal(jstr(p, "instance"), instance);
    assert_non_null(tu_resp_header(r, "X-Request-Id", rid, sizeof(rid)));
    assert_string_equal(jstr(p, "request_id"), rid);
}

static void test_not_found_problem(void **state)
{
    tu_resp r;
    (void)state;
    cJSON *p = request_json("GET", "/nope", NULL, NULL, 404, &r);
    check_problem(&r, p, 404, "not-found", "/nope");
    assert_string_equal(jstr(p, "title"), "Not Found");
    assert_string_equal(jstr(p, "detail"), "no route for /nope");
    assert_int_equal(cm_uuid_valid(jstr(p, "request_id")), 1); /* generated: none was sent */
    cJSON_Delete(p);
    tu_resp_free(&r);
    /* A literal segment must match whole; an empty parameter segment does not match. */
    p = request_json("GET", "/itemz/1", NULL, NULL, 404, &r);
    cJSON_Delete(p);
    tu_resp_free(&r);
    p = request_json("GET", "/items/1/parts", NULL, NULL, 404, &r);
    cJSON_Delete(p);
    tu_resp_free(&r);
    p = request_json("GET", "/items/1/partsX/2", NULL, NULL, 404, &r);
    cJSON_Delete(p);
    tu_resp_free(&r);
}

static void test_method_not_allowed(void **state)
{
    tu_resp r;
    (void)state;
    char allow[64];
    cJSON *p = request_json("DELETE", "/items/5", NULL, NULL, 405, &r);
    check_problem(&r, p, 405, "method-not-allowed", "/items/5");
    assert_string_equal(jstr(p, "detail"), "DELETE is not allowed on /items/5");
    /* RFC 9110 section 15.5.6: a 405 lists the allowed methods. */
    assert_non_null(tu_resp_header(&r, "Allow", allow, sizeof(allow)));
    assert_string_equal(allow, "GET");
    cJSON_Delete(p);
    tu_resp_free(&r);
    p = request_json("GET", "/items", NULL, NULL, 405, &r); /* POST-only path */
    assert_string_equal(jstr(p, "detail"), "GET is not allowed on /items");
    assert_non_null(tu_resp_header(&r, "Allow", allow, sizeof(allow)));
    assert_string_equal(allow, "POST");
    cJSON_Delete(p);
    tu_resp_free(&r);
    /* The built-in endpoints answer GET (and HEAD) only. */
    p = request_json("POST", "/health/live", NULL, "{}", 405, &r);
    assert_non_null(tu_resp_header(&r, "Allow", allow, sizeof(allow)));
    assert_non_null(strstr(allow, "GET"));
    cJSON_Delete(p);
    tu_resp_free(&r);
}

static void test_path_params(void **state)
{
    tu_resp r;
    char hv[64];
    (void)state;
    cJSON *o = request_json("GET", "/items/abc-1", "X-Test-Header: hv\r\n", NULL, 200, &r);
    assert_string_equal(jstr(o, "id"), "abc-1");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(o, "no_such_param")));
    assert_string_equal(jstr(o, "method"), "GET");
    assert_string_equal(jstr(o, "path"), "/items/abc-1");
    assert_string_equal(jstr(o, "ip"), "127.0.0.1");
    assert_string_equal(jstr(o, "header"), "hv"); /* header lookup ignores case */
    assert_non_null(tu_resp_header(&r, "X-Extra", hv, sizeof(hv)));
    assert_string_equal(hv, "yes");
    assert_non_null(tu_resp_header(&r, "Content-Type", hv, sizeof(hv)));
    assert_string_equal(hv, "application/json");
    cJSON_Delete(o);
    tu_resp_free(&r);

    o = request_json("GET", "/items/42/parts/wheel", NULL, NULL, 200, &r);
    assert_string_equal(jstr(o, "id"), "42");
    assert_string_equal(jstr(o, "part"), "wheel");
    cJSON_Delete(o);
    tu_resp_free(&r);
}

static void test_query_parsing(void **state)
{
    tu_resp r;
    (void)state;
    cJSON *o = request_json("GET", "/items/1?q=a%20b%26c&limit=7", NULL, NULL, 200, &r);
    assert_string_equal(jstr(o, "q"), "a b&c");
    assert_int_equal(jint(o, "limit"), 7);
    assert_string_equal(jstr(o, "path"), "/items/1"); /* without the query string */
    cJSON_Delete(o);
    tu_resp_free(&r);

    o = request_json("GET", "/items/1", NULL, NULL, 200, &r);
    assert_string_equal(jstr(o, "q"), "(none)");
    assert_int_equal(jint(o, "limit"), 50); /* default */
    cJSON_Delete(o);
    tu_resp_free(&r);

    o = request_json("GET", "/items/1?limit=5000", NULL, NULL, 200, &r);
    assert_int_equal(jint(o, "limit"), 200); /* clamped to the cap */
    cJSON_Delete(o);
    tu_resp_free(&r);

    o = request_json("GET", "/items/1?limit=-3", NULL, NULL, 200, &r);
    assert_int_equal(jint(o, "limit"), 1);
    cJSON_Delete(o);
    tu_resp_free(&r);

    o = request_json("GET", "/items/1?limit=ten", NULL, NULL, 400, &r);
    check_problem(&r, o, 400, "validation", "/items/1");
    assert_string_equal(jstr(o, "detail"), "query parameter 'limit' must be an integer");
    cJSON_Delete(o);
    tu_resp_free(&r);

    o = request_json("GET", "/items/1?limit=5x", NULL, NULL, 400, &r);
    cJSON_Delete(o);
    tu_resp_free(&r);
}

static void test_request_id(void **state)
{
    tu_resp r;
    char h[256], rid64[65];
    (void)state;
    /* A well-formed id is passed through to the handler, the body and the header. */
    cJSON *o = request_json("GET", "/items/1", "X-Request-Id: abc-123_X.y\r\n", NULL, 200, &r);
    assert_string_equal(jstr(o, "request_id"), "abc-123_X.y");
    assert_non_null(tu_resp_header(&r, "X-Request-Id", h, sizeof(h)));
    assert_string_equal(h, "abc-123_X.y");
    cJSON_Delete(o);
    tu_resp_free(&r);

    memset(rid64, 'r', 64);
    rid64[64] = '\0';
    snprintf(h, sizeof(h), "X-Request-Id: %s\r\n", rid64);
    o = request_json("GET", "/items/1", h, NULL, 200, &r);
    assert_string_equal(jstr(o, "request_id"), rid64);
    cJSON_Delete(o);
    tu_resp_free(&r);

    /* Malformed ids (log injection, too long) are replaced by a fresh UUIDv7. */
    const char *bad[] = {"X-Request-Id: bad id!\r\n", "X-Request-Id: a\"b\r\n",
                         "X-Request-Id: {\"x\":1}\r\n", NULL};
    for (int i = 0; bad[i]; i++) {
        o = request_json("GET", "/items/1", bad[i], NULL, 200, &r);
        if (!cm_uuid_valid(jstr(o, "request_id")))
            fail_msg("%s was not replaced: %s", bad[i], jstr(o, "request_id"));
        assert_non_null(tu_resp_header(&r, "X-Request-Id", h, sizeof(h)));
        assert_string_equal(h, jstr(o, "request_id"));
        cJSON_Delete(o);
        tu_resp_free(&r);
    }
    snprintf(h, sizeof(h), "X-Request-Id: %sr\r\n", rid64); /* 65 characters */
    o = request_json("GET", "/items/1", h, NULL, 200, &r);
    assert_int_equal(cm_uuid_valid(jstr(o, "request_id")), 1);
    cJSON_Delete(o);
    tu_resp_free(&r);
}

static void test_body_over_cap_with_content_length(void **state)
{
    tu_resp r;
    char req[512];
    (void)state;
    /* Only the headers are sent: the answer must come before the body is read. */
    int n = snprintf(req, sizeof(req),
                     "POST /items HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n",
                     MAX_BODY * 100);
    assert_int_equal(tu_http_raw(fx.port, req, (size_t)n, &r), 0);
    assert_int_equal(r.status, 413);
    cJSON *p = cJSON_ParseWithLength(r.body, r.body_len);
    assert_non_null(p);
    check_problem(&r, p, 413, "too-large", "/items");
    cJSON_Delete(p);
    tu_resp_free(&r);

    /* A Content-Length that is not a number is refused before anything is read. */
    n = snprintf(req, sizeof(req),
                 "POST /items HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                 "Content-Type: application/json\r\nContent-Length: -1\r\n\r\n");
    assert_int_equal(tu_http_raw(fx.port, req, (size_t)n, &r), 0);
    if (r.status != 400 && r.status != 413)
        fail_msg("Content-Length: -1 answered with %d", r.status);
    tu_resp_free(&r);

    /* One byte over the cap, body sent too. */
    char *body = malloc(MAX_BODY + 1);
    assert_non_null(body);
    memset(body, ' ', MAX_BODY + 1);
    body[0] = '{';
    body[MAX_BODY - 1] = '}'; /* MAX_BODY bytes of JSON, then one more space */
    assert_int_equal(tu_http(fx.port, "POST", "/items", "Content-Type: application/json\r\n", body,
                             MAX_BODY + 1, &r),
                     0);
    assert_int_equal(r.status, 413);
    tu_resp_free(&r);
    /* Exactly the cap is accepted. */
    assert_int_equal(tu_http(fx.port, "POST", "/items", "Content-Type: application/json\r\n", body,
                             MAX_BODY, &r),
                     0);
    if (r.status != 201)
        fail_msg("a body of exactly max_body: %s", r.raw);
    tu_resp_free(&r);
    free(body);
}

/* Writes a chunked request of `total` bytes in chunks of 100 to `path`. */
static void chunked(const char *path, const char *ctype, size_t total, tu_resp *r)
{
    size_t cap = total * 2 + 1024, n;
    char *req = malloc(cap);
    assert_non_null(req);
    n = (size_t)snprintf(req, cap,
                         "POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                         "Content-Type: %s\r\nTransfer-Encoding: chunked\r\n\r\n",
                         path, ctype);
    for (size_t sent = 0; sent < total;) {
        size_t k = total - sent < 100 ? total - sent : 100;
        n += (size_t)snprintf(req + n, cap - n, "%zx\r\n", k);
        memset(req + n, 'a', k);
        n += k;
        memcpy(req + n, "\r\n", 2);
        n += 2;
        sent += k;
    }
    memcpy(req + n, "0\r\n\r\n", 5);
    n += 5;
    assert_int_equal(tu_http_raw(fx.port, req, n, r), 0);
    free(req);
}

static void test_chunked_body_over_cap(void **state)
{
    tu_resp r;
    (void)state;
    chunked("/raw", "text/plain", MAX_BODY * 3, &r);
    if (r.status != 413)
        fail_msg("chunked body over the cap: %s", r.raw);
    cJSON *p = cJSON_ParseWithLength(r.body, r.body_len);
    assert_non_null(p);
    check_problem(&r, p, 413, "too-large", "/raw");
    cJSON_Delete(p);
    tu_resp_free(&r);

    chunked("/raw", "text/plain", MAX_BODY, &r); /* at the cap: read whole */
    assert_int_equal(r.status, 200);
    p = cJSON_ParseWithLength(r.body, r.body_len);
    assert_non_null(p);
    assert_int_equal(jint(p, "len"), MAX_BODY);
    cJSON_Delete(p);
    tu_resp_free(&r);
}

static void test_content_type_must_be_json(void **state)
{
    tu_resp r;
    (void)state;
    cJSON *p = request_json("POST", "/items", "Content-Type: text/plain\r\n", "{}", 415, &r);
    check_problem(&r, p, 415, "unsupported-media-type", "/items");
    cJSON_Delete(p);
    tu_resp_free(&r);
    p = request_json("POST", "/items", NULL, "{}", 415, &r); /* none at all */
    cJSON_Delete(p);
    tu_resp_free(&r);
    p = request_json("POST", "/items", "Content-Type: application/jsonx\r\n", "{}", 415, &r);
    cJSON_Delete(p);
    tu_resp_free(&r);
    p = request_json("POST", "/items", "Content-Type: application/json; charset=utf-8\r\n",
                     "{\"a\":1}", 201, &r);
    assert_int_equal(jint(p, "a"), 1);
    cJSON_Delete(p);
    tu_resp_free(&r);
    p = request_json("POST", "/items", "Content-Type: Application/JSON\r\n", "{\"a\":2}", 201, &r);
    cJSON_Delete(p);
    tu_resp_free(&r);
}

static void test_malformed_json(void **state)
{
    tu_resp r;
    char deep[80];
    const char *ct = "Content-Type: application/json\r\n";
    (void)state;
    cJSON *p = request_json("POST", "/items", ct, "{\"a\":}", 400, &r);
    check_problem(&r, p, 400, "malformed-json", "/items");
    assert_string_equal(jstr(p, "detail"), "invalid JSON near byte 5");
    cJSON_Delete(p);
    tu_resp_free(&r);

    p = request_json("POST", "/items", ct, "{\"a\":1} trailing", 400, &r);
    assert_string_equal(jstr(p, "detail"), "unexpected data after the JSON value at byte 8");
    cJSON_Delete(p);
    tu_resp_free(&r);

    p = request_json("POST", "/items", ct, "{\"a\":\"\xc0\x80\"}", 400, &r);
    assert_string_equal(jstr(p, "detail"), "the body is not valid UTF-8 (RFC 8259 section 8.1)");
    cJSON_Delete(p);
    tu_resp_free(&r);

    memset(deep, '[', 33);
    memset(deep + 33, ']', 33);
    deep[66] = '\0';
    p = request_json("POST", "/items", ct, deep, 400, &r);
    assert_string_equal(jstr(p, "detail"), "JSON nests deeper than 32 levels (at byte 32)");
    cJSON_Delete(p);
    tu_resp_free(&r);

    p = request_json("POST", "/items", ct, "[1,2]", 400, &r);
    check_problem(&r, p, 400, "validation", "/items");
    assert_string_equal(jstr(p, "detail"), "the body must be a JSON object");
    cJSON_Delete(p);
    tu_resp_free(&r);

    p = request_json("POST", "/items", ct, "", 400, &r);
    assert_string_equal(jstr(p, "detail"), "the request body is empty; a JSON value is expected");
    cJSON_Delete(p);
    tu_resp_free(&r);
}

static void test_health_live_and_ready(void **state)
{
    tu_resp r;
    (void)state;
    cJSON *o = request_json("GET", "/health/live", NULL, NULL, 200, &r);
    assert_string_equal(jstr(o, "status"), "ok");
    cJSON_Delete(o);
    tu_resp_free(&r);

    atomic_store(&fx.ready_fails, 0);
    o = request_json("GET", "/health/ready", NULL, NULL, 200, &r);
    assert_string_equal(jstr(o, "status"), "ready");
    cJSON_Delete(o);
    tu_resp_free(&r);

    atomic_store(&fx.ready_fails, 1);
    o = request_json("GET", "/health/ready", NULL, NULL, 503, &r);
    check_problem(&r, o, 503, "not-ready", "/health/ready");
    assert_string_equal(jstr(o, "detail"), "mongo: down");
    cJSON_Delete(o);
    tu_resp_free(&r);

    atomic_store(&fx.ready_fails, 0);
    o = request_json("GET", "/health/ready", NULL, NULL, 200, &r);
    cJSON_Delete(o);
    tu_resp_free(&r);
}

static void test_metrics(void **state)
{
    tu_resp r;
    char ct[128];
    const char *want = "http_requests_total{method=\"GET\",route=\"/items/{id}/parts/{part}\","
                       "code=\"2xx\"} ";
    (void)state;
    cJSON *o = request_json("GET", "/items/9/parts/m", NULL, NULL, 200, &r);
    cJSON_Delete(o);
    tu_resp_free(&r);
    o = request_json("GET", "/unknown/path", NULL, NULL, 404, &r);
    cJSON_Delete(o);
    tu_resp_free(&r);
    /* The counters are bumped when the request completes, which may trail the reply a little. */
    for (int tries = 0;; tries++) {
        assert_int_equal(tu_http(fx.port, "GET", "/metrics", NULL, NULL, 0, &r), 0);
        assert_int_equal(r.status, 200);
        if (strstr(r.body, want) && strstr(r.body, "route=\"unmatched\",code=\"4xx\"}"))
            break;
        if (tries == 40)
            fail_msg("metrics lack %s:\n%s", want, r.body);
        tu_resp_free(&r);
        tu_sleep_ms(25);
    }
    assert_non_null(tu_resp_header(&r, "Content-Type", ct, sizeof(ct)));
    assert_string_equal(ct, "text/plain; version=0.0.4");
    assert_non_null(strstr(r.body, "# TYPE http_requests_total counter"));
    assert_non_null(strstr(r.body, "http_request_duration_seconds_count{method=\"GET\","
                                   "route=\"/items/{id}/parts/{part}\"}"));
    assert_non_null(strstr(r.body, "http_requests_in_flight "));
    assert_non_null(strstr(r.body, "\nunit_custom_total 7\n"));
    tu_resp_free(&r);
}

static void test_handler_without_answer_is_500(void **state)
{
    tu_resp r;
    (void)state;
    cm_log_init("test_http", CM_LOG_ERROR + 1); /* the bug is logged; expected here */
    cJSON *p = request_json("GET", "/silent", NULL, NULL, 500, &r);
    cm_log_init("test_http", CM_LOG_ERROR);
    check_problem(&r, p, 500, "internal", "/silent");
    cJSON_Delete(p);
    tu_resp_free(&r);
}

static void test_error_statuses(void **state)
{
    static const struct {
        cm_err err;
        int status;
        const char *slug;
    } map[] = {
        {CM_EINVAL, 400, "validation"},     {CM_EUNAUTH, 401, "unauthenticated"},
        {CM_EFORBIDDEN, 403, "forbidden"},  {CM_ENOTFOUND, 404, "not-found"},
        {CM_ECONFLICT, 409, "conflict"},    {CM_ETOOBIG, 413, "too-large"},
        {CM_ELIMIT, 429, "rate-limited"},   {CM_EIO, 503, "unavailable"},
        {CM_EAGAIN, 503, "unavailable"},    {CM_ETIMEOUT, 503, "unavailable"},
        {CM_EINTERNAL, 500, "internal"},    {CM_ENOMEM, 500, "internal"},
    };
    tu_resp r;
    char path[32], h[64];
    (void)state;
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        snprintf(path, sizeof(path), "/err/%d", (int)map[i].err);
        cJSON *p = request_json("GET", path, NULL, NULL, map[i].status, &r);
        check_problem(&r, p, map[i].status, map[i].slug, path);
        assert_string_equal(jstr(p, "detail"), "boom");
        if (map[i].status == 503) {
            assert_non_null(tu_resp_header(&r, "Retry-After", h, sizeof(h)));
            assert_string_equal(h, "1");
        }
        cJSON_Delete(p);
        tu_resp_free(&r);
    }
}

static void test_prefix_route(void **state)
{
    tu_resp r;
    (void)state;
    assert_int_equal(tu_http(fx.port, "PATCH", "/proxy/a/b?x=1", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "PATCH /proxy/a/b");
    tu_resp_free(&r);
    assert_int_equal(tu_http(fx.port, "GET", "/proxy", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    tu_resp_free(&r);
    /* A prefix matches whole segments only. */
    assert_int_equal(tu_http(fx.port, "GET", "/proxyX", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 404);
    tu_resp_free(&r);
}

static void noop(cm_http_req *req, void *ud)
{
    (void)ud;
    cm_http_reply_raw(req, 204, NULL, "", 0);
}

static void test_route_and_config_errors(void **state)
{
    cm_http_server *s = NULL;
    char pat[32];
    (void)state;
    cm_http_config bad = {.host = "127.0.0.1", .port = 0, .threads = 1, .max_body = 10};
    assert_int_equal(cm_http_server_create(&bad, &s), CM_EINVAL);
    bad.port = 70000;
    assert_int_equal(cm_http_server_create(&bad, &s), CM_EINVAL);
    bad.port = 8080;
    bad.threads = 0;
    assert_int_equal(cm_http_server_create(&bad, &s), CM_EINVAL);
    bad.threads = 1;
    bad.max_body = 0;
    assert_int_equal(cm_http_server_create(&bad, &s), CM_EINVAL);
    assert_null(s);

    cm_http_config cfg = {.host = "127.0.0.1", .port = 8080, .threads = 1, .max_body = 10};
    assert_int_equal(cm_http_server_create(&cfg, &s), CM_OK);
    assert_int_equal(cm_http_route(s, "GET", "no-slash", noop, NULL), CM_EINVAL);
    assert_int_equal(cm_http_route(s, "LONGMETHOD", "/x", noop, NULL), CM_EINVAL);
    assert_int_equal(cm_http_route(s, "GET", "/a/b/c/d/e/f/g/h/i/j/k/l/m", noop, NULL), CM_EINVAL);
    assert_int_equal(cm_http_route(s, "GET", "/", noop, NULL), CM_OK);
    for (int i = 1; i < 64; i++) {
        snprintf(pat, sizeof(pat), "/r%d/{id}", i);
        assert_int_equal(cm_http_route(s, "GET", pat, noop, NULL), CM_OK);
    }
    assert_int_equal(cm_http_route(s, "GET", "/one-too-many", noop, NULL), CM_ETOOBIG);
    cm_http_server_destroy(s); /* never started */
    cm_http_server_destroy(NULL);
}

static void test_port_in_use(void **state)
{
    cm_http_server *s = NULL;
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    (void)state;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 1), 0);
    socklen_t sl = sizeof(sa);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    cm_http_config cfg = {.host = "127.0.0.1", .port = ntohs(sa.sin_port), .threads = 2,
                          .max_body = 10, .idle_timeout_s = 1, .drain_s = 0};
    assert_int_equal(cm_http_server_create(&cfg, &s), CM_OK);
    cm_log_init("test_http", CM_LOG_ERROR + 1); /* the bind failure is logged; expected */
    assert_int_equal(cm_http_server_start(s), CM_EIO);
    cm_log_init("test_http", CM_LOG_ERROR);
    cm_http_server_destroy(s);
    close(fd);
}

struct later_call {
    int port;
    const char *path;
    tu_resp r;
    int rc;
};

static void *call(void *arg)
{
    struct later_call *c = arg;
    c->rc = tu_http(c->port, "GET", c->path, NULL, NULL, 0, &c->r);
    return NULL;
}

static long ms_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (t1.tv_sec - t0->tv_sec) * 1000 + (t1.tv_nsec - t0->tv_nsec) / 1000000;
}

/* A suspended request holds no server thread: with both of the fixture's threads' requests
 * suspended, another request is still answered at once; the suspended ones get the answer
 * another thread made (status, body, headers) once it resumes them. */
static void test_suspended_requests_answered_by_another_thread(void **state)
{
    struct later_call c[3];
    pthread_t t[3];
    struct timespec t0;
    tu_resp r;
    char h[64];
    (void)state;
    for (int i = 0; i < 3; i++) {
        c[i] = (struct later_call){.port = fx.port, .path = "/later/1500"};
        assert_int_equal(pthread_create(&t[i], NULL, call, &c[i]), 0);
    }
    tu_sleep_ms(200); /* the three are suspended by now */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(tu_http(fx.port, "GET", "/items/7", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_true(ms_since(&t0) < 1000);
    tu_resp_free(&r);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(c[i].rc, 0);
        assert_int_equal(c[i].r.status, 202);
        assert_int_equal(c[i].r.body_len, 5);
        assert_memory_equal(c[i].r.body, "later", 5);
        assert_non_null(tu_resp_header(&c[i].r, "X-Answered-By", h, sizeof(h)));
        assert_string_equal(h, "another thread");
        assert_non_null(tu_resp_header(&c[i].r, "X-Request-Id", h, sizeof(h)));
        tu_resp_free(&c[i].r);
    }
    assert_int_equal(tu_http(fx.port, "GET", "/answered", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    tu_resp_free(&r);
}

/* The drain hook: a request still suspended when the drain time is over is answered by the
 * hook before the server closes (libmicrohttpd forbids closing with one suspended). */
static cm_http_req *parked;
static atomic_int hook_runs;

static void h_park(cm_http_req *req, void *ud)
{
    (void)ud;
    assert_int_equal(cm_http_suspend(req), CM_OK);
    parked = req;
}

static void drain_hook(void *ud)
{
    (void)ud;
    atomic_fetch_add(&hook_runs, 1);
    if (parked) {
        cm_http_reply_raw(parked, 503, "text/plain", "closing", 7);
        cm_http_resume(parked);
        parked = NULL;
    }
}

static void test_drain_hook_answers_suspended(void **state)
{
    cm_http_server *s = NULL;
    struct later_call c;
    pthread_t t;
    int port = tu_free_port();
    (void)state;
    cm_http_config cfg = {.host = "127.0.0.1", .port = port, .threads = 2,
                          .max_body = 10, .idle_timeout_s = 5, .drain_s = 1};
    assert_int_equal(cm_http_server_create(&cfg, &s), CM_OK);
    assert_int_equal(cm_http_route(s, "GET", "/park", h_park, NULL), CM_OK);
    cm_http_allow_suspend(s);
    cm_http_set_drain_hook(s, drain_hook, NULL);
    assert_int_equal(cm_http_server_start(s), CM_OK);
    c = (struct later_call){.port = port, .path = "/park"};
    assert_int_equal(pthread_create(&t, NULL, call, &c), 0);
    for (int i = 0; i < 100 && parked == NULL; i++)
        tu_sleep_ms(20);
    assert_non_null(parked);
    cm_log_init("test_http", CM_LOG_ERROR + 1); /* "still in flight after drain": expected */
    cm_http_server_stop(s);
    cm_log_init("test_http", CM_LOG_ERROR);
    assert_int_equal(atomic_load(&hook_runs), 1);
    assert_int_equal(pthread_join(t, NULL), 0);
    /* The answer may or may not have left before the daemon closed; either way no hang. */
    if (c.rc == 0 && c.r.status != 0)
        assert_int_equal(c.r.status, 503);
    tu_resp_free(&c.r);
    cm_http_server_destroy(s);
}

static void test_config_from_env(void **state)
{
    cm_http_config cfg;
    (void)state;
    unsetenv("HTTP_PORT");
    unsetenv("HTTP_HOST");
    unsetenv("HTTP_THREADS");
    unsetenv("HTTP_MAX_BODY");
    unsetenv("HTTP_IDLE_TIMEOUT_S");
    unsetenv("HTTP_DRAIN_S");
    assert_int_equal(cm_http_config_from_env(8123, &cfg), CM_OK);
    assert_int_equal(cfg.port, 8123);
    assert_string_equal(cfg.host, "127.0.0.1");
    assert_int_equal(cfg.threads, 4);
    assert_int_equal(cfg.max_body, 1 << 20);
    assert_int_equal(cfg.idle_timeout_s, 60);
    assert_int_equal(cfg.drain_s, 10);
    setenv("HTTP_PORT", "70000", 1);
    cm_log_init("test_http", CM_LOG_ERROR + 1);
    assert_int_equal(cm_http_config_from_env(8123, &cfg), CM_EINVAL);
    setenv("HTTP_PORT", "9000", 1);
    setenv("HTTP_THREADS", "0", 1);
    assert_int_equal(cm_http_config_from_env(8123, &cfg), CM_EINVAL);
    cm_log_init("test_http", CM_LOG_ERROR);
    unsetenv("HTTP_THREADS");
    assert_int_equal(cm_http_config_from_env(8123, &cfg), CM_OK);
    assert_int_equal(cfg.port, 9000);
    unsetenv("HTTP_PORT");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_not_found_problem),
        cmocka_unit_test(test_method_not_allowed),
        cmocka_unit_test(test_path_params),
        cmocka_unit_test(test_query_parsing),
        cmocka_unit_test(test_request_id),
        cmocka_unit_test(test_body_over_cap_with_content_length),
        cmocka_unit_test(test_chunked_body_over_cap),
        cmocka_unit_test(test_content_type_must_be_json),
        cmocka_unit_test(test_malformed_json),
        cmocka_unit_test(test_health_live_and_ready),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_handler_without_answer_is_500),
        cmocka_unit_test(test_error_statuses),
        cmocka_unit_test(test_prefix_route),
        cmocka_unit_test(test_route_and_config_errors),
        cmocka_unit_test(test_port_in_use),
        cmocka_unit_test(test_config_from_env),
        cmocka_unit_test(test_suspended_requests_answered_by_another_thread),
        cmocka_unit_test(test_drain_hook_answers_suspended),
    };
    return cmocka_run_group_tests_name("http", tests, setup, teardown);
}
