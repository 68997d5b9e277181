/* gateway_admin.c - the operator's view of the gateway: admin endpoints on the upstreams
 * (platform key), the Prometheus lines per route and per upstream, and readiness. */
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "gateway.h"

/* Latency histogram bounds in seconds (Prometheus `le`), as the server's own. */
static const double bounds[GW_NBUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                           0.05,   0.1,   0.25,   0.5,   1,     2.5};

void gateway_stats_observe(gateway_stats *st, double seconds, int failed)
{
    atomic_fetch_add(&st->requests, 1);
    if (failed)
        atomic_fetch_add(&st->errors, 1);
    for (int i = 0; i < GW_NBUCKETS; i++) {
        if (seconds <= bounds[i]) {
            atomic_fetch_add(&st->le[i], 1);
            break;
        }
    }
    atomic_fetch_add(&st->count, 1);
    atomic_fetch_add(&st->sum_us, (unsigned long)(seconds * 1e6));
}

/* Checks X-Admin-Key in constant time; answers 401 and returns 0 when it is wrong. */
static int admin_ok(gateway_ctx *ctx, cm_http_req *req)
{
    const char *h = cm_http_header(req, "X-Admin-Key");

    if (ctx->admin_key == NULL || h == NULL || !gateway_secret_equal(h, ctx->admin_key)) {
        cm_http_reply_error(req, CM_EUNAUTH, "the platform admin key (X-Admin-Key) is required");
        return 0;
    }
    return 1;
}

static cJSON *instance_json(gateway_ctx *ctx, gateway_instance *in, int64_t now)
{
    cJSON *o = cJSON_CreateObject();
    gateway_breaker b;

    pthread_mutex_lock(&in->lock);
    b = in->breaker;
    pthread_mutex_unlock(&in->lock);
    /* An open circuit past its open time is half-open for the next request. */
    cJSON_AddStringToObject(o, "id", in->id);
    cJSON_AddStringToObject(o, "url", in->url);
    cJSON_AddNumberToObject(o, "weight", in->weight);
    cJSON_AddBoolToObject(o, "healthy", atomic_load(&in->healthy));
    cJSON_AddStringToObject(o, "circuit", gateway_circuit_name(b.state));
    cJSON_AddNumberToObject(o, "circuit_retry_in_ms",
                            (double)gateway_breaker_retry_in(&b, &ctx->breaker, now));
    cJSON_AddNumberToObject(o, "consecutive_failures", b.consecutive_failures);
    cJSON_AddNumberToObject(o, "circuit_opened_total", (double)b.opened_total);
    cJSON_AddNumberToObject(o, "in_flight", atomic_load(&in->inflight));
    cJSON_AddNumberToObject(o, "requests", (double)atomic_load(&in->stats.requests));
    cJSON_AddNumberToObject(o, "errors", (double)atomic_load(&in->stats.errors));
    cJSON_AddNumberToObject(o, "retries", (double)atomic_load(&in->stats.retries));
    return o;
}

/* GET /v1/gateway/upstreams: every pool with its instances' health and circuit state. */
void gateway_admin_upstreams(cm_http_req *req, void *ud)
{
    gateway_ctx *ctx = ud;
    cJSON *items;
    int64_t now = gateway_now_ms();

    if (!admin_ok(ctx, req))
        return;
    items = cJSON_CreateArray();
    for (int p = 0; p < ctx->npools; p++) {
        gateway_pool *pool = &ctx->pools[p];
        cJSON *o = cJSON_CreateObject(), *insts = cJSON_CreateArray();
        cJSON_AddStringToObject(o, "name", pool->name);
        cJSON_AddStringToObject(o, "lb", gateway_lb_name(pool->lb));
        cJSON_AddNumberToObject(o, "retry_budget",
                                (double)(atomic_load(&pool->budget_milli) / 1000));
        pthread_rwlock_rdlock(&pool->lock);
        for (int i = 0; i < pool->ninst; i++)
            if (pool->inst[i].active)
                cJSON_AddItemToArray(insts, instance_json(ctx, &pool->inst[i], now));
        pthread_rwlock_unlock(&pool->lock);
        cJSON_AddItemToObject(o, "instances", insts);
        cJSON_AddItemToArray(items, o);
    }
    cm_http_reply_page(req, items, NULL);
}

/* POST /v1/gateway/upstreams/{pool}/reset[?instance=addr:port]: closes the circuit of one
 * instance, or of all of the pool's. */
void gateway_admin_reset(cm_http_req *req, void *ud)
{
    gateway_ctx *ctx = ud;
    gateway_pool *pool;
    const char *id;
    cJSON *o;
    int n;

    if (!admin_ok(ctx, req))
        return;
    pool = gateway_pool_find(ctx, cm_http_param(req, "pool"));
    if (pool == NULL) {
        cm_http_reply_error(req, CM_ENOTFOUND, "no such upstream pool");
        return;
    }
    id = cm_http_query(req, "instance");
    n = gateway_circuit_reset(pool, id && *id ? id : NULL);
    if (n == 0 && id && *id) {
        cm_http_reply_error(req, CM_ENOTFOUND, "no such instance in this pool");
        return;
    }
    cm_info("gateway: circuit reset by the operator: pool %s, %s (%d)", pool->name,
            id && *id ? id : "all instances", n);
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "pool", pool->name);
    cJSON_AddNumberToObject(o, "reset", n);
    cm_http_reply_json(req, 200, o);
}

static void emit_stats(void (*emit)(void *, const char *), void *ectx, const char *metric,
                       const char *labels, gateway_stats *st)
{
    char line[1536];
    unsigned long cum = 0;

    snprintf(line, sizeof(line),
             "%s_requests_total{%s} %lu\n%s_errors_total{%s} %lu\n%s_retries_total{%s} %lu\n",
             metric, labels, atomic_load(&st->requests), metric, labels,
             atomic_load(&st->errors), metric, labels, atomic_load(&st->retries));
    emit(ectx, line);
    for (int i = 0; i < GW_NBUCKETS; i++) {
        cum += atomic_load(&st->le[i]);
        snprintf(line, sizeof(line), "%s_duration_seconds_bucket{%s,le=\"%g\"} %lu\n", metric,
                 labels, bounds[i], cum);
        emit(ectx, line);
    }
    snprintf(line, sizeof(line),
             "%s_duration_seconds_bucket{%s,le=\"+Inf\"} %lu\n"
             "%s_duration_seconds_sum{%s} %.6f\n%s_duration_seconds_count{%s} %lu\n",
             metric, labels, atomic_load(&st->count), metric, labels,
             (double)atomic_load(&st->sum_us) / 1e6, metric, labels, atomic_load(&st->count));
    emit(ectx, line);
}

void gateway_metrics(void *ud, void (*emit)(void *ctx, const char *text), void *ectx)
{
    gateway_ctx *ctx = ud;
    char labels[256], line[2048];

    emit(ectx, "# TYPE gateway_route_requests_total counter\n"
               "# TYPE gateway_route_errors_total counter\n"
               "# TYPE gateway_route_retries_total counter\n"
               "# TYPE gateway_route_duration_seconds histogram\n"
               "# TYPE gateway_route_ratelimited_total counter\n");
    for (int r = 0; r < ctx->nroutes; r++) {
        gateway_route *rt = &ctx->routes[r];
        snprintf(labels, sizeof(labels), "route=\"%s\",pool=\"%s\"", rt->prefix, rt->pool_name);
        emit_stats(emit, ectx, "gateway_route", labels, &rt->stats);
        snprintf(line, sizeof(line), "gateway_route_ratelimited_total{%s} %lu\n", labels,
                 atomic_load(&rt->stats.rejected));
        emit(ectx, line);
    }
    emit(ectx, "# TYPE gateway_upstream_requests_total counter\n"
               "# TYPE gateway_upstream_errors_total counter\n"
               "# TYPE gateway_upstream_retries_total counter\n"
               "# TYPE gateway_upstream_duration_seconds histogram\n"
               "# TYPE gateway_upstream_circuit_state gauge\n"
               "# TYPE gateway_upstream_circuit_opened_total counter\n"
               "# TYPE gateway_upstream_healthy gauge\n"
               "# TYPE gateway_upstream_in_flight gauge\n");
    for (int p = 0; p < ctx->npools; p++) {
        gateway_pool *pool = &ctx->pools[p];
        pthread_rwlock_rdlock(&pool->lock);
        for (int i = 0; i < pool->ninst; i++) {
            gateway_instance *in = &pool->inst[i];
            gateway_breaker b;
            if (!in->active)
                continue;
            pthread_mutex_lock(&in->lock);
            b = in->breaker;
            pthread_mutex_unlock(&in->lock);
            snprintf(labels, sizeof(labels), "pool=\"%s\",instance=\"%s\"", pool->name, in->id);
            emit_stats(emit, ectx, "gateway_upstream", labels, &in->stats);
            /* circuit_state: 0 closed, 1 open, 2 half-open */
            snprintf(line, sizeof(line),
                     "gateway_upstream_circuit_state{%s} %d\n"
                     "gateway_upstream_circuit_opened_total{%s} %lu\n"
                     "gateway_upstream_healthy{%s} %d\ngateway_upstream_in_flight{%s} %d\n",
                     labels, (int)b.state, labels, b.opened_total, labels,
                     atomic_load(&in->healthy), labels, atomic_load(&in->inflight));
            emit(ectx, line);
        }
        pthread_rwlock_unlock(&pool->lock);
    }
    if (ctx->limits)
        gateway_ratelimit_metrics(ctx->limits, emit, ectx);
    if (ctx->denylist_copy)
        gateway_denylist_metrics(ctx->denylist_copy, emit, ectx);
    gateway_ws_metrics(&ctx->ws, emit, ectx);
    gateway_loops_metrics(ctx, emit, ectx);
    if (ctx->cors)
        gateway_cors_metrics(ctx->cors, emit, ectx);
    if (ctx->verifier) {
        unsigned long hits, misses;
        cm_jwt_cache_stats(ctx->verifier, &hits, &misses);
        snprintf(line, sizeof(line),
                 "# TYPE gateway_token_cache_total counter\n"
                 "gateway_token_cache_total{result=\"hit\"} %lu\n"
                 "gateway_token_cache_total{result=\"miss\"} %lu\n",
                 hits, misses);
        emit(ectx, line);
    }
}

cm_err gateway_ready(void *ud, char *detail, size_t n)
{
    gateway_ctx *ctx = ud;
    if (atomic_load(&ctx->stopping)) {
        snprintf(detail, n, "draining");
        return CM_EAGAIN;
    }
    return CM_OK;
}
