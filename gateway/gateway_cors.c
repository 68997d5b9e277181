/* gateway_cors.c - CORS per tenant (Fetch standard, "CORS protocol"): each tenant's allowlist
 * of browser origins lives in its settings in the user service (cors_allowed_origins); the
 * gateway keeps a copy, refreshed in the background from GET /internal/v1/tenants/cors-origins, and
 * answers preflights and adds the Access-Control-* headers itself. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "common/httpc.h"
#include "common/internal.h"
#include "common/log.h"
#include "common/ticker.h"
#include "gateway.h"

#define CORS_ORIGIN_MAX 255 /* the user service's USER_ORIGIN_MAX */
#define CORS_BODY_MAX (16u << 20)

struct cors_entry {
    char origin[CORS_ORIGIN_MAX + 1];
    char tenant[CM_JWT_ID_MAX + 1];
};

struct gateway_cors {
    pthread_rwlock_t lock; /* readers look up; a load swaps the table */
    struct cors_entry *e;  /* sorted by origin (case-insensitive), then tenant */
    size_t n;
    int loaded;            /* at least one load succeeded */
    cm_ticker *ticker; /* the refresher */
    gateway_ctx *ctx;
    atomic_ulong loads, load_errors, preflights, refused;
};

static int entry_cmp(const void *a, const void *b)
{
    const struct cors_entry *x = a, *y = b;
    int c = strcasecmp(x->origin, y->origin);
    return c ? c : strcmp(x->tenant, y->tenant);
}

cm_err gateway_cors_create(gateway_cors **out)
{
    gateway_cors *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return CM_ENOMEM;
    pthread_rwlock_init(&c->lock, NULL);
    *out = c;
    return CM_OK;
}

cm_err gateway_cors_load(gateway_cors *c, const char *json, size_t len, char *detail, size_t n)
{
    cJSON *root = cJSON_ParseWithLength(json, len), *items, *t, *origins, *o;
    struct cors_entry *e = NULL, *old;
    size_t count = 0, cap = 0;
    cm_err rc = CM_EINVAL;

    items = cJSON_GetObjectItemCaseSensitive(root, "items");
    if (!cJSON_IsArray(items)) {
        snprintf(detail, n, "the answer has no 'items' array");
        goto out;
    }
    cJSON_ArrayForEach(t, items)
    {
        const cJSON *tid = cJSON_GetObjectItemCaseSensitive(t, "tenant_id");
        origins = cJSON_GetObjectItemCaseSensitive(t, "origins");
        if (!cJSON_IsString(tid) || strlen(tid->valuestring) == 0 ||
            strlen(tid->valuestring) > CM_JWT_ID_MAX || !cJSON_IsArray(origins)) {
            snprintf(detail, n, "an item lacks a valid 'tenant_id' or 'origins'");
            goto out;
        }
        cJSON_ArrayForEach(o, origins)
        {
            if (!cJSON_IsString(o) || strlen(o->valuestring) == 0 ||
                strlen(o->valuestring) > CORS_ORIGIN_MAX) {
                snprintf(detail, n, "tenant %s has an origin that is not a string of 1..%d bytes",
                         tid->valuestring, CORS_ORIGIN_MAX);
                goto out;
            }
            if (count == cap) {
                size_t ncap = cap ? cap * 2 : 64;
                struct cors_entry *p = realloc(e, ncap * sizeof(*e));
                if (p == NULL) {
                    rc = CM_ENOMEM;
                    snprintf(detail, n, "out of memory");
                    goto out;
                }
                e = p;
                cap = ncap;
            }
            snprintf(e[count].origin, sizeof(e[count].origin), "%s", o->valuestring);
            snprintf(e[count].tenant, sizeof(e[count].tenant), "%s", tid->valuestring);
            count++;
        }
    }
    if (count > 1)
        qsort(e, count, sizeof(*e), entry_cmp);
    pthread_rwlock_wrlock(&c->lock);
    old = c->e;
    c->e = e;
    c->n = count;
    c->loaded = 1;
    pthread_rwlock_unlock(&c->lock);
    e = old;
    rc = CM_OK;
out:
    free(e);
    cJSON_Delete(root);
    return rc;
}

int gateway_cors_allowed(gateway_cors *c, const char *origin, const char *tenant)
{
    size_t lo = 0, hi;
    int ok = 0;

    if (c == NULL || origin == NULL || *origin == '\0' || strlen(origin) > CORS_ORIGIN_MAX)
        return 0;
    pthread_rwlock_rdlock(&c->lock);
    hi = c->n;
    while (lo < hi) { /* the first entry of this origin */
        size_t mid = lo + (hi - lo) / 2;
        if (strcasecmp(c->e[mid].origin, origin) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (; lo < c->n && strcasecmp(c->e[lo].origin, origin) == 0; lo++)
        if (tenant == NULL || strcmp(c->e[lo].tenant, tenant) == 0) {
            ok = 1;
            break;
        }
    pthread_rwlock_unlock(&c->lock);
    return ok;
}

/* One fetch of every tenant's list from an instance of the user pool. */
static void refresh(gateway_cors *c)
{
    gateway_ctx *ctx = c->ctx;
    gateway_pool *pool = gateway_pool_find(ctx, "user");
    gateway_instance *inst = NULL;
    char base[GW_URL_MAX], connect_to[GW_URL_MAX], url[GW_URL_MAX + 64], detail[160];
    char *body = NULL;
    size_t len = 0;
    long status = 0;
    int64_t retry_in;
    cm_err rc;

    if (pool == NULL || gateway_pick(ctx, pool, NULL, &inst, base, connect_to, &retry_in) != CM_OK) {
        atomic_fetch_add(&c->load_errors, 1);
        return;
    }
    snprintf(url, sizeof(url), "%s/internal/v1/tenants/cors-origins", base);
    rc = cm_httpc_get_with(url, cm_internal_key_header(), ctx->timeout_ms, CORS_BODY_MAX, &body, &len, &status);
    gateway_done(ctx, inst, rc == CM_OK && status < 500, 0);
    if (rc != CM_OK || status != 200) {
        atomic_fetch_add(&c->load_errors, 1);
        cm_warn("gateway: CORS allowlists not refreshed from %s: %s", url,
                rc != CM_OK ? cm_strerror(rc) : "status other than 200");
    } else if (gateway_cors_load(c, body, len, detail, sizeof(detail)) != CM_OK) {
        atomic_fetch_add(&c->load_errors, 1);
        cm_warn("gateway: CORS allowlists from %s refused: %s", url, detail);
    } else {
        atomic_fetch_add(&c->loads, 1);
    }
    free(body);
}

static void refresh_tick(void *ud, int last)
{
    (void)last;
    refresh(ud);
}

cm_err gateway_cors_start(gateway_cors *c, gateway_ctx *ctx, long refresh_ms)
{
    cm_err rc;

    c->ctx = ctx;
    rc = cm_ticker_start(refresh_ms, 0, refresh_tick, c, &c->ticker);
    if (rc == CM_OK)
        cm_ticker_wake(c->ticker); /* the first load at once */
    return rc;
}

void gateway_cors_destroy(gateway_cors *c)
{
    if (c == NULL)
        return;
    cm_ticker_stop(c->ticker);
    pthread_rwlock_destroy(&c->lock);
    free(c->e);
    free(c);
}

/* Request headers a browser may send cross-origin besides the CORS-safelisted ones: those the
 * API reads (RFC 6750 bearer, idempotency, trace context, conditional and range requests, the
 * tus 1.0 protocol of resumable uploads). Lower case, as Access-Control-Request-Headers. */
static const char *const allowed_headers[] = {
    "authorization", "content-type", "idempotency-key", "x-request-id", "traceparent",
    "tracestate", "if-match", "if-none-match", "range", "upload-offset", "upload-length",
    "upload-metadata", "upload-checksum", "upload-defer-length", "tus-resumable", NULL};

#define CORS_METHODS "GET, HEAD, POST, PUT, PATCH, DELETE"
#define CORS_EXPOSED                                                                            \
    "X-Request-Id, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, Retry-After, "       \
    "Location, ETag, Content-Range, Accept-Ranges, Content-Disposition, Upload-Offset, "       \
    "Upload-Length, Upload-Expires, Upload-Metadata, Tus-Resumable, Tus-Version, "             \
    "Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm"
#define CORS_MAX_AGE_S "600"

int gateway_cors_is_preflight(cm_http_req *req)
{
    return strcmp(cm_http_method(req), "OPTIONS") == 0 && cm_http_header(req, "Origin") != NULL &&
           cm_http_header(req, "Access-Control-Request-Method") != NULL;
}

/* 1 when every name of the comma-separated list `list` is in allowed_headers; otherwise 0
 * with the first one refused in `bad` (size n). */
static int headers_allowed(const char *list, char *bad, size_t n)
{
    const char *p = list;

    while (*p) {
        const char *s, *e;
        size_t len;
        int ok = 0;
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        s = p;
        while (*p && *p != ',')
            p++;
        e = p;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        len = (size_t)(e - s);
        if (len == 0)
            continue;
        for (const char *const *h = allowed_headers; *h && !ok; h++)
            ok = strlen(*h) == len && strncasecmp(*h, s, len) == 0;
        if (!ok) {
            snprintf(bad, n, "%.*s", (int)(len < 64 ? len : 64), s);
            return 0;
        }
    }
    return 1;
}

void gateway_cors_preflight(gateway_ctx *ctx, cm_http_req *req)
{
    const char *origin = cm_http_header(req, "Origin");
    const char *method = cm_http_header(req, "Access-Control-Request-Method");
    const char *hdrs = cm_http_header(req, "Access-Control-Request-Headers");
    static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", NULL};
    char bad[80];
    int mok = 0;

    atomic_fetch_add(&ctx->cors->preflights, 1);
    cm_http_add_header(req, "Vary",
                       "Origin, Access-Control-Request-Method, Access-Control-Request-Headers");
    /* The token is not sent on a preflight, so the tenant is unknown: an origin some tenant
     * allows passes here, and the actual request is checked against its own tenant's list. */
    if (!gateway_cors_allowed(ctx->cors, origin, NULL)) {
        atomic_fetch_add(&ctx->cors->refused, 1);
        cm_http_problem(req, 403, "cors-origin-refused", "Forbidden",
                        "the origin %.255s is not in any tenant's cors_allowed_origins", origin);
        return;
    }
    for (const char *const *m = methods; *m && !mok; m++)
        mok = strcmp(*m, method) == 0;
    if (!mok) {
        atomic_fetch_add(&ctx->cors->refused, 1);
        cm_http_problem(req, 403, "cors-method-refused", "Forbidden",
                        "the method %.32s is not allowed cross-origin (allowed: " CORS_METHODS ")",
                        method);
        return;
    }
    if (hdrs && !headers_allowed(hdrs, bad, sizeof(bad))) {
        atomic_fetch_add(&ctx->cors->refused, 1);
        cm_http_problem(req, 403, "cors-header-refused", "Forbidden",
                        "the request header %s is not allowed cross-origin", bad);
        return;
    }
    cm_http_add_header(req, "Access-Control-Allow-Origin", origin);
    cm_http_add_header(req, "Access-Control-Allow-Methods", CORS_METHODS);
    if (hdrs && *hdrs)
        cm_http_add_header(req, "Access-Control-Allow-Headers", hdrs);
    cm_http_add_header(req, "Access-Control-Max-Age", CORS_MAX_AGE_S);
    cm_http_reply_raw(req, 204, NULL, "", 0);
}

void gateway_cors_headers(gateway_ctx *ctx, cm_http_req *req, const char *tenant)
{
    const char *origin = cm_http_header(req, "Origin");

    if (origin == NULL || !gateway_cors_allowed(ctx->cors, origin, tenant))
        return;
    cm_http_add_header(req, "Access-Control-Allow-Origin", origin);
    cm_http_add_header(req, "Access-Control-Expose-Headers", CORS_EXPOSED);
}

void gateway_cors_metrics(gateway_cors *c, void (*emit)(void *ctx, const char *text),
                          void *ectx)
{
    char line[512];
    size_t n;

    pthread_rwlock_rdlock(&c->lock);
    n = c->n;
    pthread_rwlock_unlock(&c->lock);
    snprintf(line, sizeof(line),
             "# TYPE gateway_cors_origins gauge\ngateway_cors_origins %zu\n"
             "# TYPE gateway_cors_loads_total counter\ngateway_cors_loads_total %lu\n"
             "# TYPE gateway_cors_load_errors_total counter\ngateway_cors_load_errors_total %lu\n"
             "# TYPE gateway_cors_preflights_total counter\ngateway_cors_preflights_total %lu\n"
             "# TYPE gateway_cors_refused_total counter\ngateway_cors_refused_total %lu\n",
             n, atomic_load(&c->loads), atomic_load(&c->load_errors),
             atomic_load(&c->preflights), atomic_load(&c->refused));
    emit(ectx, line);
}
