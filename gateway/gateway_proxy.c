/* gateway_proxy.c - the catch-all route: auth check, then the request relayed with libcurl.
 * Each server thread keeps one libcurl easy handle, so upstream connections are reused
 * (keep-alive) without locking. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "common/auth.h"
#include "common/log.h"
#include "gateway.h"

#define URL_MAX 4096

static pthread_key_t curl_key;
static pthread_once_t curl_key_once = PTHREAD_ONCE_INIT;

static void curl_free_handle(void *h)
{
    curl_easy_cleanup(h);
}

static void curl_key_init(void)
{
    pthread_key_create(&curl_key, curl_free_handle);
}

struct upstream_reply {
    char *body;
    size_t len, cap, max;
    int too_big;
    cm_http_req *req;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    struct upstream_reply *r = ud;
    size_t n = size * nmemb;
    if (r->len + n > r->max) {
        r->too_big = 1;
        return 0; /* aborts the transfer */
    }
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 8192;
        while (cap < r->len + n)
            cap *= 2;
        char *p = realloc(r->body, cap);
        if (p == NULL)
            return 0;
        r->body = p;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    return n;
}

/* Copies the upstream response headers worth keeping onto our reply. */
static size_t on_header(char *line, size_t size, size_t nmemb, void *ud)
{
    struct upstream_reply *r = ud;
    size_t n = size * nmemb;
    static const char *const kept[] = {"Location", "Retry-After", "RateLimit-Limit",
                                       "RateLimit-Remaining", "RateLimit-Reset", "Cache-Control",
                                       "WWW-Authenticate", "ETag", "Allow",
                                       "Content-Disposition", NULL};
    char buf[1024];
    char *colon;

    if (n >= sizeof(buf) || n < 3)
        return n;
    memcpy(buf, line, n);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\r' || buf[n - 1] == '\n'))
        buf[--n] = '\0';
    colon = strchr(buf, ':');
    if (colon == NULL)
        return size * nmemb;
    *colon = '\0';
    for (const char *const *k = kept; *k; k++) {
        if (strcasecmp(buf, *k) == 0) {
            const char *v = colon + 1;
            while (*v == ' ')
                v++;
            cm_http_add_header(r->req, *k, v);
        }
    }
    return size * nmemb;
}

struct hdr_ctx {
    struct curl_slist *list;
    int oom;
};

static void add_client_header(void *ud, const char *name, const char *value)
{
    struct hdr_ctx *h = ud;
    char line[8192];
    struct curl_slist *l;
    if (gateway_header_dropped(name) || strcasecmp(name, "X-Request-Id") == 0)
        return;
    if (snprintf(line, sizeof(line), "%s: %s", name, value) >= (int)sizeof(line))
        return;
    l = curl_slist_append(h->list, line);
    if (l == NULL)
        h->oom = 1;
    else
        h->list = l;
}

struct query_ctx {
    char *url;
    size_t len, cap;
    int first, overflow;
};

static void add_query(void *ud, const char *name, const char *value)
{
    struct query_ctx *q = ud;
    if (q->overflow || q->len + 2 >= q->cap) {
        q->overflow = 1;
        return;
    }
    q->url[q->len++] = q->first ? '?' : '&';
    q->first = 0;
    if (gateway_escape(name, 0, q->url, q->cap, &q->len) != 0) {
        q->overflow = 1;
        return;
    }
    if (value && *value) {
        if (q->len + 2 >= q->cap) {
            q->overflow = 1;
            return;
        }
        q->url[q->len++] = '=';
        if (gateway_escape(value, 0, q->url, q->cap, &q->len) != 0)
            q->overflow = 1;
    }
    q->url[q->len] = '\0';
}

/* The calling thread's handle, freed when the thread ends (pthread key destructor). */
static CURL *curl_for_thread(void)
{
    CURL *c;
    pthread_once(&curl_key_once, curl_key_init);
    c = pthread_getspecific(curl_key);
    if (c == NULL) {
        c = curl_easy_init();
        if (c)
            pthread_setspecific(curl_key, c);
    } else {
        curl_easy_reset(c); /* keeps the connection cache */
    }
    return c;
}

/* Any path: the route table decides where it goes and whether a token is needed. */
void gateway_proxy(cm_http_req *req, void *ud)
{
    gateway_ctx *ctx = ud;
    const gateway_route *route = gateway_route_find(ctx, cm_http_path(req));
    struct upstream_reply up = {.max = ctx->max_response, .req = req};
    struct hdr_ctx hc = {0};
    struct query_ctx q = {0};
    char url[URL_MAX], line[512];
    const char *body, *ct;
    size_t body_len;
    long status = 0;
    cm_jwt_claims claims;
    CURLcode cc;
    CURL *curl;

    if (route == NULL) {
        cm_http_reply_error(req, CM_ENOTFOUND, "no such API route");
        goto out;
    }
    if (route->auth && cm_auth_bearer(req, ctx->verifier, &claims) != CM_OK)
        goto out;
    q.len = (size_t)snprintf(url, sizeof(url), "%s", route->upstream);
    if (q.len >= sizeof(url) ||
        gateway_escape(cm_http_path(req), 1, url, sizeof(url), &q.len) != 0) {
        cm_http_problem(req, 414, "uri-too-long", "URI Too Long", "the request path is too long");
        goto out;
    }
    q.url = url;
    q.cap = sizeof(url);
    q.first = 1;
    cm_http_each_query(req, add_query, &q);
    if (q.overflow) {
        cm_http_problem(req, 414, "uri-too-long", "URI Too Long", "the query string is too long");
        goto out;
    }
    cm_http_each_header(req, add_client_header, &hc);
    snprintf(line, sizeof(line), "X-Request-Id: %s", cm_http_request_id(req));
    hc.list = curl_slist_append(hc.list, line);
    snprintf(line, sizeof(line), "X-Forwarded-For: %s", cm_http_client_ip(req));
    hc.list = curl_slist_append(hc.list, line);
    if (route->auth) {
        /* Informational for services; they verify the token themselves. */
        snprintf(line, sizeof(line), "X-Auth-Tenant: %s", claims.tid);
        hc.list = curl_slist_append(hc.list, line);
        snprintf(line, sizeof(line), "X-Auth-User: %s", claims.sub);
        hc.list = curl_slist_append(hc.list, line);
    }
    hc.list = curl_slist_append(hc.list, "Expect:"); /* no 100-continue round trip */
    if (hc.oom || hc.list == NULL) {
        cm_http_reply_error(req, CM_ENOMEM, NULL);
        goto out;
    }
    curl = curl_for_thread();
    if (curl == NULL) {
        cm_http_reply_error(req, CM_ENOMEM, "no HTTP client");
        goto out;
    }
    body = cm_http_body(req, &body_len);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, cm_http_method(req));
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hc.list);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, ctx->timeout_ms);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, ctx->connect_timeout_ms);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &up);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &up);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    if (strcmp(cm_http_method(req), "GET") == 0 || strcmp(cm_http_method(req), "HEAD") == 0) {
        curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
        if (strcmp(cm_http_method(req), "HEAD") == 0)
            curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    } else {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    cc = curl_easy_perform(curl);
    if (cc != CURLE_OK) {
        if (up.too_big) {
            cm_http_problem(req, 502, "bad-gateway", "Bad Gateway",
                            "the upstream response is larger than %zu bytes", ctx->max_response);
        } else if (cc == CURLE_OPERATION_TIMEDOUT) {
            cm_http_problem(req, 504, "gateway-timeout", "Gateway Timeout",
                            "the upstream service did not answer within %ld ms", ctx->timeout_ms);
        } else {
            cm_warn("upstream %s: %s", route->upstream, curl_easy_strerror(cc));
            cm_http_add_header(req, "Retry-After", "1");
            cm_http_problem(req, 503, "unavailable", "Service Unavailable",
                            "the upstream service is unavailable");
        }
        goto out;
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (curl_easy_getinfo(curl, CURLINFO_CONTENT_TYPE, &ct) != CURLE_OK || ct == NULL)
        ct = NULL;
    cm_http_reply_raw(req, (int)status, ct, up.body ? up.body : "", up.len);
out:
    curl_slist_free_all(hc.list);
    free(up.body);
}
