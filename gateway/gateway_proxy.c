/* gateway_proxy.c - the catch-all route: rate limits, auth per the route, then the request
 * relayed with libcurl to an instance of the route's pool, retried where that is safe.
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
#include "common/session.h"
#include "gateway.h"

#define URL_MAX 4096
#define KEPT_MAX 32

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
    /* Headers kept from the upstream's answer, applied only to the attempt that is relayed. */
    const char *kept_name[KEPT_MAX];
    char *kept_value[KEPT_MAX];
    int nkept;
    int has_ratelimit;
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

/* Keeps the upstream response headers worth relaying. */
static size_t on_header(char *line, size_t size, size_t nmemb, void *ud)
{
    struct upstream_reply *r = ud;
    size_t n = size * nmemb;
    static const char *const kept[] = {"Location", "Retry-After", "RateLimit-Limit",
                                       "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy",
                                       "Cache-Control", "WWW-Authenticate", "ETag", "Allow",
                                       /* media content (RFC 9110 ranges) and tus 1.0 */
                                       "Content-Range", "Accept-Ranges", "Content-Disposition",
                                       "Content-Security-Policy", "Upload-Offset",
                                       "Upload-Length", "Upload-Expires", "Upload-Metadata",
                                       "Tus-Resumable", "Tus-Version", "Tus-Extension",
                                       "Tus-Max-Size", "Tus-Checksum-Algorithm", NULL};
    char buf[1024];
    char *colon;

    if (n >= sizeof(buf) || n < 3)
        return n;
    memcpy(buf, line, n);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\r' || buf[n - 1] == '\n'))
        buf[--n] = '\0';
    if (strncmp(buf, "HTTP/", 5) == 0) {
        r->nkept = 0; /* a new response (after a 1xx): forget the previous one's headers */
        r->has_ratelimit = 0;
        return size * nmemb;
    }
    colon = strchr(buf, ':');
    if (colon == NULL)
        return size * nmemb;
    *colon = '\0';
    for (const char *const *k = kept; *k; k++) {
        if (strcasecmp(buf, *k) == 0 && r->nkept < KEPT_MAX) {
            const char *v = colon + 1;
            while (*v == ' ')
                v++;
            r->kept_value[r->nkept] = cm_http_strdup(r->req, v);
            if (r->kept_value[r->nkept] == NULL)
                return 0;
            r->kept_name[r->nkept++] = *k;
            if (strncmp(*k, "RateLimit", 9) == 0)
                r->has_ratelimit = 1;
        }
    }
    return size * nmemb;
}

struct hdr_ctx {
    struct curl_slist *list;
    int oom;
};

static void add_line(struct hdr_ctx *h, const char *name, const char *value)
{
    char line[8192];
    size_t nl = strlen(name), vl = strlen(value);
    struct curl_slist *l;

    if (nl + vl + 3 > sizeof(line))
        return;
    memcpy(line, name, nl); /* "Name: value", or "Name:" that removes a header libcurl adds */
    line[nl++] = ':';
    if (vl)
        line[nl++] = ' ';
    memcpy(line + nl, value, vl + 1);
    l = curl_slist_append(h->list, line);
    if (l == NULL)
        h->oom = 1;
    else
        h->list = l;
}

static void add_client_header(void *ud, const char *name, const char *value)
{
    if (!gateway_header_dropped(name))
        add_line(ud, name, value);
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

int gateway_request_target(cm_http_req *req, char *out, size_t n)
{
    struct query_ctx q = {.url = out, .cap = n, .first = 1};

    out[0] = '\0';
    if (gateway_escape(cm_http_path(req), 1, out, n, &q.len) != 0)
        return -1;
    cm_http_each_query(req, add_query, &q);
    return q.overflow ? -1 : 0;
}

struct curl_slist *gateway_forward_headers(cm_http_req *req, const cm_jwt_claims *claims)
{
    struct hdr_ctx hc = {0};
    char tp[64];

    cm_http_each_header(req, add_client_header, &hc);
    add_line(&hc, "X-Request-Id", cm_http_request_id(req));
    add_line(&hc, "X-Forwarded-For", cm_http_client_ip(req));
    gateway_traceparent(cm_http_header(req, "traceparent"), tp, sizeof(tp));
    add_line(&hc, "traceparent", tp);
    cm_http_log_field(req, "traceparent", tp);
    if (claims) {
        /* Informational for services; they verify the token themselves. */
        add_line(&hc, "X-Auth-Tenant", claims->tid);
        add_line(&hc, "X-Auth-User", claims->sub);
    }
    if (hc.oom) {
        curl_slist_free_all(hc.list);
        return NULL;
    }
    return hc.list;
}

/* The calling thread's handle, freed when the thread ends (pthread key destructor). It is
 * not reset between requests (a reset frees and rebuilds every option, a measurable cost per
 * request): the options that never change are set once here, and attempt() sets every option
 * that differs between requests each time. */
static CURL *curl_for_thread(void)
{
    CURL *c;

    pthread_once(&curl_key_once, curl_key_init);
    c = pthread_getspecific(curl_key);
    if (c == NULL) {
        c = curl_easy_init();
        if (c == NULL)
            return NULL;
        pthread_setspecific(curl_key, c);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_MAXCONNECTS, 64L);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    }
    return c;
}

/* Adds the RateLimit-* fields of draft-ietf-httpapi-ratelimit-headers (the -07 form most
 * clients read) for the binding bucket. */
static void ratelimit_headers(cm_http_req *req, const gateway_rl_verdict *v)
{
    char num[32];
    if (v->scope == NULL)
        return;
    snprintf(num, sizeof(num), "%ld", v->limit);
    cm_http_add_header(req, "RateLimit-Limit", num);
    snprintf(num, sizeof(num), "%ld", v->remaining);
    cm_http_add_header(req, "RateLimit-Remaining", num);
    snprintf(num, sizeof(num), "%ld", v->reset_s);
    cm_http_add_header(req, "RateLimit-Reset", num);
}

/* Answers 429 for a refused take. */
static void too_many(cm_http_req *req, const gateway_rl_verdict *v)
{
    char num[32];
    ratelimit_headers(req, v);
    snprintf(num, sizeof(num), "%ld", v->retry_after_s);
    cm_http_add_header(req, "Retry-After", num);
    cm_http_log_field(req, "ratelimit", v->scope);
    cm_http_problem(req, 429, "rate-limited", "Too Many Requests",
                    "the %s rate limit of %ld requests is spent; retry in %ld s%s", v->scope,
                    v->limit, v->retry_after_s, v->local ? " (local limits)" : "");
}

/* 401 with the RFC 6750 challenge (the words of cm_auth_bearer, which the services use). */
static void refuse_bearer(cm_http_req *req, const char *detail)
{
    cm_http_add_header(req, "WWW-Authenticate", "Bearer");
    cm_http_reply_error(req, CM_EUNAUTH, detail);
}

/* The bearer token of the request, or NULL (then answers 401 when `answer`). */
static const char *bearer_token(cm_http_req *req, int answer)
{
    const char *h = cm_http_header(req, "Authorization");
    if (h == NULL) {
        if (answer)
            refuse_bearer(req, "an access token is required (Authorization: Bearer)");
        return NULL;
    }
    if (strncasecmp(h, "Bearer ", 7) != 0) {
        if (answer)
            refuse_bearer(req, "the Authorization header must use the Bearer scheme");
        return NULL;
    }
    return h + 7;
}

/* Checks the non-bearer auth kinds of a route; answers and returns non-CM_OK on failure. */
static cm_err authenticate_other(gateway_ctx *ctx, cm_http_req *req, const gateway_route *route)
{
    const char *h;
    switch (route->auth) {
    case GW_AUTH_NONE:
    case GW_AUTH_BEARER:
        return CM_OK;
    case GW_AUTH_TENANT_KEY:
        /* Tenant API key credentials as HTTP Basic (RFC 7617); the user service verifies the
         * secret, the gateway refuses requests that do not even carry one. */
        h = cm_http_header(req, "Authorization");
        if (h == NULL || strncasecmp(h, "Basic ", 6) != 0 || h[6] == '\0') {
            cm_http_add_header(req, "WWW-Authenticate", "Basic realm=\"tenant\"");
            cm_http_reply_error(req, CM_EUNAUTH, "this route needs the tenant's API key and "
                                                 "secret as HTTP Basic credentials");
            return CM_EUNAUTH;
        }
        return CM_OK;
    case GW_AUTH_ADMIN:
        h = cm_http_header(req, "X-Admin-Key");
        if (ctx->admin_key == NULL || h == NULL || !gateway_secret_equal(h, ctx->admin_key)) {
            cm_http_reply_error(req, CM_EUNAUTH, "this route needs the platform admin key in "
                                                 "X-Admin-Key");
            return CM_EUNAUTH;
        }
        return CM_OK;
    }
    return CM_EINTERNAL;
}

/* Everything a request must pass before it is relayed: rate limits, the route's auth (a bearer
 * token verified, its session and tenant not on the denylist), and the CORS headers for its
 * tenant. Answers and returns non-CM_OK on failure. Redis round trips: one for a token this
 * gateway verified before (the verified-token cache: the address's, user's and tenant's buckets
 * and the denylist in one script); a token not seen before, or a route without a token, first
 * takes from the address's bucket alone, before any signature is checked, so a flood of forged
 * tokens costs little, and a new token then a second trip. */
static cm_err admit(gateway_ctx *ctx, cm_http_req *req, const gateway_route *route,
                    cm_jwt_claims *claims, int *have_claims, gateway_rl_verdict *rl_ip,
                    gateway_rl_verdict *rl_id)
{
    const char *ip = cm_http_client_ip(req), *token = NULL;
    char detail[160];
    int cached = 0, deny = -1;
    cm_err rc;

    *have_claims = 0;
    if (route->auth == GW_AUTH_BEARER && (token = bearer_token(req, 0)) != NULL) {
        rc = cm_jwt_verify_cached(ctx->verifier, token, time(NULL), claims, detail,
                                  sizeof(detail));
        if (rc == CM_EUNAUTH) {
            gateway_cors_headers(ctx, req, NULL);
            refuse_bearer(req, detail);
            return CM_EUNAUTH;
        }
        cached = rc == CM_OK;
    }
    if (!cached) {
        if (ctx->limits) {
            gateway_ratelimit_ip(ctx->limits, ip, rl_ip);
            if (!rl_ip->allowed) {
                gateway_cors_headers(ctx, req, NULL);
                too_many(req, rl_ip);
                return CM_EAGAIN;
            }
        }
        if (route->auth != GW_AUTH_BEARER) {
            gateway_cors_headers(ctx, req, NULL);
            return authenticate_other(ctx, req, route);
        }
        if ((token = bearer_token(req, 0)) == NULL ||
            cm_jwt_verify(ctx->verifier, token, time(NULL), claims, detail, sizeof(detail)) !=
                CM_OK) {
            gateway_cors_headers(ctx, req, NULL);
            if (token == NULL)
                bearer_token(req, 1);
            else
                refuse_bearer(req, detail);
            return CM_EUNAUTH;
        }
        ip = NULL; /* its bucket is taken */
    }
    *have_claims = 1;
    gateway_cors_headers(ctx, req, claims->tid);
    cm_http_log_field(req, "tenant", claims->tid);
    cm_http_log_field(req, "user", claims->sub);
    /* The denylist's copy in this process answers without a round trip when it is complete. */
    deny = gateway_denylist_check(ctx->denylist_copy, claims);
    if (deny > 0) {
        refuse_bearer(req, deny == 1 ? "the tenant is suspended" : "the session was revoked");
        return CM_EUNAUTH;
    }
    if (ctx->limits) {
        int d = gateway_ratelimit_request(ctx->limits, ip, claims, deny < 0, rl_id);
        if (deny < 0)
            deny = d;
        if (deny > 0) {
            refuse_bearer(req, deny == 1 ? "the tenant is suspended" : "the session was revoked");
            return CM_EUNAUTH;
        }
        if (!rl_id->allowed) {
            too_many(req, rl_id);
            return CM_EAGAIN;
        }
    }
    if (deny < 0 && ctx->denylist) {
        detail[0] = '\0';
        rc = cm_session_check_claims(ctx->denylist, claims, detail, sizeof(detail));
        if (rc == CM_EUNAUTH) {
            refuse_bearer(req, detail[0] ? detail : "the token is no longer accepted");
            return CM_EUNAUTH;
        }
        if (rc != CM_OK) {
            cm_http_add_header(req, "Retry-After", "1");
            cm_http_reply_error(req, CM_EIO, "the session state cannot be checked right now");
            return CM_EIO;
        }
    }
    return CM_OK;
}

/* Statuses that count against an instance's breaker: it could not serve, not the client. */
static int upstream_failed(CURLcode cc, long status)
{
    return cc != CURLE_OK || status == 502 || status == 503 || status == 504;
}

/* Sleeps the retry backoff: base * 2^attempt, with full jitter (AWS architecture blog). */
static void backoff(long base_ms, int attempt)
{
    long cap = base_ms << (attempt < 6 ? attempt : 6);
    long ms = cap > 0 ? (long)((unsigned long)gateway_now_ms() * 2654435761u % (unsigned long)cap) : 0;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* One attempt against `inst`; the caller has built url (full) and headers. */
static CURLcode attempt(gateway_ctx *ctx, cm_http_req *req, const gateway_route *route,
                        const char *url, const char *connect_to, struct curl_slist *headers,
                        struct upstream_reply *up, long *status)
{
    struct curl_slist ct = {(char *)connect_to, NULL};
    const char *method = cm_http_method(req), *body;
    size_t body_len;
    CURLcode cc;
    CURL *curl = curl_for_thread();

    if (curl == NULL)
        return CURLE_OUT_OF_MEMORY;
    body = cm_http_body(req, &body_len);
    up->len = 0;
    up->too_big = 0;
    up->nkept = 0;
    up->has_ratelimit = 0;
    *status = 0;
    /* Every option a previous request of this handle may have set differently. */
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, route->timeout_ms ? route->timeout_ms : ctx->timeout_ms);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, ctx->connect_timeout_ms);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, up);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, up);
    curl_easy_setopt(curl, CURLOPT_CONNECT_TO, connect_to[0] ? &ct : NULL);
    curl_easy_setopt(curl, CURLOPT_NOBODY, 0L);
    if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, NULL);
        if (strcmp(method, "HEAD") == 0)
            curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    } else {
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    cc = curl_easy_perform(curl);
    if (cc == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, status);
    return cc;
}

/* The relayed answer: status, body and kept headers of the last attempt. */
static void relay(cm_http_req *req, struct upstream_reply *up, long status)
{
    CURL *curl = pthread_getspecific(curl_key);
    const char *ct = NULL;
    if (curl == NULL || curl_easy_getinfo(curl, CURLINFO_CONTENT_TYPE, &ct) != CURLE_OK)
        ct = NULL;
    for (int i = 0; i < up->nkept; i++)
        cm_http_add_header(req, up->kept_name[i], up->kept_value[i]);
    cm_http_reply_raw(req, (int)status, ct, up->body ? up->body : "", up->len);
}

/* Any path: the route table decides where it goes and what it needs first. */
void gateway_proxy(cm_http_req *req, void *ud)
{
    gateway_ctx *ctx = ud;
    gateway_route *route = gateway_route_find(ctx, cm_http_path(req));
    struct upstream_reply up = {.req = req};
    struct hdr_ctx hc = {0};
    char tail[URL_MAX], url[URL_MAX + GW_URL_MAX], base[GW_URL_MAX], connect_to[GW_URL_MAX];
    gateway_rl_verdict rl_ip = {0}, rl_id = {0};
    gateway_instance *inst = NULL;
    const char *method = cm_http_method(req);
    long status = 0;
    int have_claims = 0, retryable, tries = 0;
    cm_jwt_claims claims;
    CURLcode cc = CURLE_OK;
    cm_err rc;
    struct timespec start, t0, t1;

    clock_gettime(CLOCK_MONOTONIC, &start);
    /* Security headers on every answer, the gateway's own problems included. */
    cm_http_add_header(req, "X-Content-Type-Options", "nosniff");
    cm_http_add_header(req, "X-Frame-Options", "DENY");
    cm_http_add_header(req, "Referrer-Policy", "no-referrer");
    if (ctx->hsts[0])
        cm_http_add_header(req, "Strict-Transport-Security", ctx->hsts);
    if (route == NULL) {
        cm_http_add_header(req, "Vary", "Origin");
        gateway_cors_headers(ctx, req, NULL);
        cm_http_reply_error(req, CM_ENOTFOUND, "no such API route");
        goto out;
    }
    cm_http_log_field(req, "gw_route", route->prefix);
    if (gateway_cors_is_preflight(req)) {
        if (ctx->limits) {
            gateway_ratelimit_ip(ctx->limits, cm_http_client_ip(req), &rl_ip);
            if (!rl_ip.allowed) {
                atomic_fetch_add(&route->stats.rejected, 1);
                too_many(req, &rl_ip);
                goto out;
            }
        }
        gateway_cors_preflight(ctx, req);
        goto out;
    }
    /* Answers differ by Origin (CORS), so shared caches must keep them apart. */
    cm_http_add_header(req, "Vary", "Origin");
    rc = admit(ctx, req, route, &claims, &have_claims, &rl_ip, &rl_id);
    if (rc != CM_OK) {
        if (rc == CM_EAGAIN)
            atomic_fetch_add(&route->stats.rejected, 1);
        goto out;
    }
    if (gateway_ws_is_upgrade(req)) {
        gateway_ws_proxy(ctx, req, route, have_claims ? &claims : NULL);
        goto out;
    }
    up.max = route->max_body ? route->max_body : ctx->max_response;

    if (gateway_request_target(req, tail, sizeof(tail)) != 0) {
        cm_http_problem(req, 414, "uri-too-long", "URI Too Long", "the request URI is too long");
        goto out;
    }
    hc.list = gateway_forward_headers(req, have_claims ? &claims : NULL);
    add_line(&hc, "Expect", ""); /* "Expect:" removes it: no 100-continue round trip */
    if (hc.oom || hc.list == NULL) {
        cm_http_reply_error(req, CM_ENOMEM, NULL);
        goto out;
    }

    gateway_retry_deposit(ctx, route->pool);
    retryable = gateway_retryable(method, cm_http_header(req, "Idempotency-Key") != NULL);
    for (;;) {
        int64_t retry_in = 0;
        gateway_instance *prev = inst;
        double secs;
        int failed;

        if (gateway_pick(ctx, route->pool, prev, &inst, base, connect_to, &retry_in) != CM_OK) {
            char ra[24];
            if (tries > 0)
                break; /* answer with the last attempt's failure */
            snprintf(ra, sizeof(ra), "%lld", (long long)(retry_in > 0 ? (retry_in + 999) / 1000 : 1));
            cm_http_add_header(req, "Retry-After", ra);
            cm_http_log_field(req, "upstream", "");
            cm_http_problem(req, 503, "upstream-unavailable", "Service Unavailable",
                            "no instance of the %s service can take requests now (circuit open "
                            "or failing health checks)",
                            route->pool->name);
            goto out;
        }
        if (snprintf(url, sizeof(url), "%s%s", base, tail) >= (int)sizeof(url)) {
            gateway_done(ctx, inst, 1, 0);
            cm_http_problem(req, 414, "uri-too-long", "URI Too Long", "the request URI is too long");
            goto out;
        }
        tries++;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        cc = attempt(ctx, req, route, url, connect_to, hc.list, &up, &status);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
        failed = upstream_failed(cc, status) && !up.too_big;
        gateway_done(ctx, inst, !failed, secs);
        if (!failed)
            break;
        /* Safe to try again elsewhere: an idempotent request, or one that never left (the
         * connection was refused, so the upstream saw nothing). */
        if (tries > ctx->retry_max ||
            !(retryable || cc == CURLE_COULDNT_CONNECT) ||
            !gateway_retry_take(ctx, route->pool))
            break;
        atomic_fetch_add(&inst->stats.retries, 1);
        atomic_fetch_add(&route->stats.retries, 1);
        cm_info("gateway: retrying %s %s after %s from %s", method, cm_http_path(req),
                cc != CURLE_OK ? curl_easy_strerror(cc) : "a 5xx", inst->id);
        backoff(ctx->retry_backoff_ms, tries - 1);
    }
    cm_http_log_field(req, "upstream", inst ? inst->id : "");
    if (cc != CURLE_OK) {
        if (up.too_big) {
            cm_http_problem(req, 502, "bad-gateway", "Bad Gateway",
                            "the upstream response is larger than %zu bytes", up.max);
        } else if (cc == CURLE_OPERATION_TIMEDOUT) {
            cm_http_problem(req, 504, "gateway-timeout", "Gateway Timeout",
                            "the %s service did not answer within %ld ms", route->pool->name,
                            route->timeout_ms ? route->timeout_ms : ctx->timeout_ms);
        } else {
            cm_warn("upstream %s: %s", inst ? inst->id : "?", curl_easy_strerror(cc));
            cm_http_add_header(req, "Retry-After", "1");
            cm_http_problem(req, 503, "unavailable", "Service Unavailable",
                            "the %s service is unavailable", route->pool->name);
        }
        goto out;
    }
    if (!up.has_ratelimit)
        ratelimit_headers(req, rl_id.scope ? &rl_id : &rl_ip);
    relay(req, &up, status);
out:
    if (route) {
        clock_gettime(CLOCK_MONOTONIC, &t1);
        gateway_stats_observe(&route->stats,
                              (double)(t1.tv_sec - start.tv_sec) +
                                  (double)(t1.tv_nsec - start.tv_nsec) / 1e9,
                              cm_http_reply_status(req) >= 500);
    }
    curl_slist_free_all(hc.list);
    free(up.body);
}
