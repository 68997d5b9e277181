/* gateway_proxy.c - the catch-all route: rate limits, auth per the route, then the request
 * built for its upstream (target, headers) and handed, suspended, to an upstream event loop
 * (gateway_relay.c), which relays it with libcurl to an instance of the route's pool, retries
 * where that is safe, answers and resumes it. */
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

struct hdr_ctx {
    cm_http_req *req;
    struct curl_slist *list, *tail;
    int oom;
};

/* Appends "Name: value" (or "Name:", which removes a header libcurl adds) as one node and its
 * text in one piece of the request's memory: no list to free, one allocation a line. Lines
 * past 8 KiB are left out. */
static void add_line(struct hdr_ctx *h, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value), n;
    struct curl_slist *l;
    char *line;

    if (nl + vl + 3 > 8192)
        return;
    if ((l = cm_http_alloc(h->req, sizeof(*l) + nl + vl + 3)) == NULL) {
        h->oom = 1;
        return;
    }
    line = (char *)(l + 1);
    memcpy(line, name, nl);
    n = nl;
    line[n++] = ':';
    if (vl)
        line[n++] = ' ';
    memcpy(line + n, value, vl + 1);
    l->data = line;
    l->next = NULL;
    if (h->tail)
        h->tail->next = l;
    else
        h->list = l;
    h->tail = l;
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
    struct hdr_ctx hc = {.req = req};
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
    return hc.oom ? NULL : hc.list;
}

void gateway_ratelimit_headers(cm_http_req *req, const gateway_rl_verdict *v)
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
    gateway_ratelimit_headers(req, v);
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

/* Any path: the route table decides where it goes and what it needs first. Admitted requests
 * are suspended and handed to an upstream loop (gateway_relay.c), which answers them. */
void gateway_proxy(cm_http_req *req, void *ud)
{
    gateway_ctx *ctx = ud;
    gateway_route *route = gateway_route_find(ctx, cm_http_path(req));
    struct hdr_ctx hc = {.req = req};
    char tail[URL_MAX];
    gateway_rl_verdict rl_ip = {0}, rl_id = {0};
    int have_claims = 0;
    size_t tlen;
    cm_jwt_claims claims;
    gateway_job *j;
    cm_err rc;
    struct timespec start;

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
        return;
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
    if (gateway_request_target(req, tail, sizeof(tail)) != 0) {
        cm_http_problem(req, 414, "uri-too-long", "URI Too Long", "the request URI is too long");
        goto out;
    }
    tlen = strlen(tail);
    hc.list = hc.tail = gateway_forward_headers(req, have_claims ? &claims : NULL);
    while (hc.tail && hc.tail->next)
        hc.tail = hc.tail->next;
    add_line(&hc, "Expect", ""); /* "Expect:" removes it: no 100-continue round trip */
    if (hc.oom || hc.list == NULL ||
        (j = cm_http_alloc(req, sizeof(*j) + tlen + 1)) == NULL) {
        cm_http_reply_error(req, CM_ENOMEM, NULL);
        goto out;
    }
    memset(j, 0, sizeof(*j));
    memcpy(j->tail, tail, tlen + 1);
    j->ctx = ctx;
    j->req = req;
    j->route = route;
    j->headers = hc.list;
    j->method = cm_http_method(req);
    j->body = cm_http_body(req, &j->body_len);
    j->retryable = gateway_retryable(j->method, cm_http_header(req, "Idempotency-Key") != NULL);
    j->max = route->max_body ? route->max_body : ctx->max_response;
    j->start = start;
    j->rl = rl_id.scope ? rl_id : rl_ip;
    gateway_retry_deposit(ctx, route->pool);
    if (cm_http_suspend(req) != CM_OK) {
        cm_http_reply_error(req, CM_EINTERNAL, "the request could not be suspended");
        goto out;
    }
    gateway_loop_submit(ctx, j); /* req belongs to the loop from here: not touched again */
    return;
out:
    {
        struct timespec t1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        gateway_stats_observe(&route->stats,
                              (double)(t1.tv_sec - start.tv_sec) +
                                  (double)(t1.tv_nsec - start.tv_nsec) / 1e9,
                              cm_http_reply_status(req) >= 500);
    }
}
