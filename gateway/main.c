/* main.c - the API gateway: route table and upstream pools from configuration, rate limits,
 * token check, proxy. */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "common/config.h"
#include "common/jwks.h"
#include "common/log.h"
#include "common/tenant.h"
#include "common/process.h"
#include "common/redis.h"
#include "gateway.h"

static const cm_config_var vars[] = {
    {"HTTP_HOST", "127.0.0.1", "address to listen on"},
    {"HTTP_PORT", "8080", "port to listen on"},
    {"INTERNAL_KEY_FILE", "",
     "file with the key of the /internal service-to-service routes, the same in every process; "
     "unset: they are open"},
    {"HTTP_THREADS", "8", "worker threads (admission: rate limits, token, denylist; the upstream "
                          "calls are the loops')"},
    {"UPSTREAM_LOOPS", "1", "upstream event loop threads (libcurl multi, each with its own "
                            "keep-alive connections), 1 to 8"},
    {"GATEWAY_SCHED_BATCH", "1", "1: the gateway's threads run as SCHED_BATCH, so a thread "
                                 "woken by another (a resume, a hand-over) waits for the waker "
                                 "to block instead of preempting it (fewer switches per request)"},
    {"UPSTREAM_MAX_INFLIGHT", "64", "requests under way to one pool per loop; more wait their turn "
                                   "in the gateway (their attempt timeout starts when sent)"},
    {"HTTP_MAX_BODY", "1048576", "largest request body in bytes (413 above), unless a route says"},
    {"HTTP_IDLE_TIMEOUT_S", "15", "a client connection idle (or trickling a request) this long is closed"},
    {"HTTP_DRAIN_S", "10", "on SIGTERM, how long in-flight requests may finish"},
    {"HTTP_MAX_CONNECTIONS", "10000", "client connections at most"},
    {"HTTP_MAX_CONNECTIONS_PER_IP", "256", "client connections from one address at most"},
    {"HTTP_MAX_HEADER_BYTES", "16384", "request line and headers at most (431 above)"},
    {"USER_URL", "http://127.0.0.1:8081", "user service instances: URL[*weight],... (pool 'user')"},
    {"MESSAGING_URL", "http://127.0.0.1:8082", "messaging service instances (pool 'messaging')"},
    {"MEDIA_URL", "http://127.0.0.1:8084", "media service instances (pool 'media')"},
    {"SOCKET_URLS", "http://127.0.0.1:8083", "socket service WebSocket ports (pool 'socket', "
                                             "least_conn, health=off; /v1/ws is relayed there)"},
    {"WS_IDLE_TIMEOUT_S", "300", "a relayed WebSocket silent both ways this long is closed (1001)"},
    {"SEARCH_URL", "http://127.0.0.1:8085", "search service instances (pool 'search')"},
    {"NOTIFICATION_URL", "http://127.0.0.1:8086", "notification service instances (pool 'notification')"},
    {"GATEWAY_POOLS", "", "more pools, or pools replaced: name=url[*w],... [lb=round_robin|"
                          "least_conn|weighted|random]; ... (README, 'Gateway routes')"},
    {"GATEWAY_ROUTES", "", "routes added or replaced: prefix pool [auth=none|bearer|tenant-key|"
                           "admin] [timeout_ms=N] [max_body=N]; ..."},
    {"MEDIA_MAX_BODY", "104923136", "request and response cap of the media routes (100 MiB + 64 KiB)"},
    {"UPSTREAM_TIMEOUT_MS", "10000", "time allowed to one upstream attempt, unless a route says"},
    {"UPSTREAM_CONNECT_TIMEOUT_MS", "1000", "time allowed to connect to an upstream"},
    {"UPSTREAM_HEALTH_INTERVAL_MS", "2000", "active check period of every instance's /health/ready (0: off)"},
    {"UPSTREAM_HEALTH_FAILURES", "2", "failed checks in a row that take an instance out"},
    {"UPSTREAM_DNS_REFRESH_MS", "10000", "re-resolution period of pool URLs given by DNS name"},
    {"BREAKER_FAILURES", "5", "consecutive failures that open an instance's circuit"},
    {"BREAKER_MIN_REQUESTS", "10", "requests an instance must have seen before its circuit may open"},
    {"BREAKER_OPEN_MS", "60000", "how long an open circuit refuses before a trial request"},
    {"BREAKER_SUCCESSES", "2", "trial successes in half-open that close the circuit"},
    {"RETRY_MAX", "2", "extra attempts of a retryable request (idempotent, or with Idempotency-Key)"},
    {"RETRY_BACKOFF_MS", "20", "first retry backoff, doubled per attempt, full jitter"},
    {"RETRY_BUDGET_PERCENT", "20", "retries allowed as a percentage of requests, per pool"},
    {"RATELIMIT_IP", "100/200", "token bucket per client address: rate per second/burst (0: off)"},
    {"RATELIMIT_USER", "20/40", "token bucket per user (after the token check); a tenant's api_rate_per_min may only lower it"},
    {"TENANT_SETTINGS_TTL_MS", "10000", "how long a tenant's settings (from the first USER_URL) are cached"},
    {"RATELIMIT_TENANT", "500/1000", "token bucket per tenant"},
    {"RATELIMIT_LEASE_MS", "100", "a busy bucket's tokens taken from Redis ahead, rate x this "
                                  "(at most burst/4), spent here without a round trip; unspent "
                                  "ones dropped after it (0: a round trip per request)"},
    {"RATELIMIT_REDIS_HOST", "", "Redis of the shared buckets (default REDIS_HOST)"},
    {"RATELIMIT_REDIS_PORT", "0", "its port (default REDIS_PORT)"},
    {"RATELIMIT_KEY_PREFIX", "rl:", "start of the buckets' Redis keys (at most 31 bytes); gateways with one prefix share buckets"},
    {"PLATFORM_ADMIN_KEY", "", "operator key: admin routes and /v1/gateway/* (unset: refused)"},
    {"GATEWAY_CORS_REFRESH_S", "10", "reload period of tenants' CORS allowlists "
                                     "(cors_allowed_origins) from the user service"},
    {"GATEWAY_HSTS_MAX_AGE_S", "31536000", "Strict-Transport-Security max-age on every answer "
                                           "(0: not sent)"},
    {"JWT_JWKS_URL", "", "JWK Set URL of the signing keys (e.g. the user service's "
                         "/.well-known/jwks.json); replaces JWT_PUBLIC_KEY_FILE"},
    {"JWT_JWKS_MIN_REFRESH_S", "30", "fewest seconds between refetches caused by unknown kids"},
    {"JWT_JWKS_MAX_AGE_S", "300", "background refetch period of the JWK Set (0: none)"},
    {"JWT_PUBLIC_KEY_FILE", NULL, "PEM public key, or kid=path,..., when JWT_JWKS_URL is unset"},
    {"JWT_ALG", "RS256", "pinned signing algorithm"},
    {"JWT_CACHE_ENTRIES", "16384", "verified tokens remembered (LRU by token hash) so a client's "
                                   "token is checked once, not per request (0: off)"},
    {"JWT_ISSUER", "chat-platform", "required iss"},
    {"JWT_AUDIENCE", "chat-api", "required aud"},
    {"REDIS_HOST", "127.0.0.1", "Redis host (revoked-session denylist)"},
    {"DENYLIST_COPY", "1", "keep a copy of the denylist here, loaded from Redis and followed on "
                           "its pub/sub channel, instead of a round trip per request (0: off)"},
    {"REDIS_PORT", "6379", "Redis port"},
    {"LOG_LEVEL", "info", "debug, info, warn or error"},
};

/* Reads "rate/burst" (rate may have a fraction; "0" turns the bucket off). */
static cm_err rate_from_env(const char *name, const char *def, gateway_rate *out)
{
    const char *v = cm_config_str(name, def);
    char *end;
    double rate = strtod(v, &end);
    long burst = 0;

    if (end == v || rate < 0 || rate > 1e6)
        goto bad;
    if (rate == 0 && *end == '\0') {
        out->per_s = 0;
        out->burst = 0;
        return CM_OK;
    }
    if (*end != '/')
        goto bad;
    v = end + 1;
    burst = strtol(v, &end, 10);
    if (end == v || *end != '\0' || burst < 1 || burst > 100000000)
        goto bad;
    out->per_s = rate;
    out->burst = burst;
    return CM_OK;
bad:
    cm_error("config: %s must be rate/burst (e.g. 100/200) or 0", name);
    return CM_EINVAL;
}

/* The default pools (from the *_URL variables) and route table, then GATEWAY_POOLS and
 * GATEWAY_ROUTES on top. */
static cm_err build_table(gateway_ctx *ctx, long media_max)
{
    char spec[4096], err[256];
    int n;

    n = snprintf(spec, sizeof(spec),
                 "user=%s; messaging=%s; media=%s; socket=%s lb=least_conn health=off; search=%s; "
                 "notification=%s",
                 cm_config_str("USER_URL", "http://127.0.0.1:8081"),
                 cm_config_str("MESSAGING_URL", "http://127.0.0.1:8082"),
                 cm_config_str("MEDIA_URL", "http://127.0.0.1:8084"),
                 cm_config_str("SOCKET_URLS", "http://127.0.0.1:8083"),
                 cm_config_str("SEARCH_URL", "http://127.0.0.1:8085"),
                 cm_config_str("NOTIFICATION_URL", "http://127.0.0.1:8086"));
    if (n < 0 || (size_t)n >= sizeof(spec) || gateway_pools_parse(ctx, spec, err, sizeof(err)) ||
        gateway_pools_parse(ctx, cm_config_str("GATEWAY_POOLS", ""), err, sizeof(err)))
        goto bad;
    /* Tenant administration (admin key) and token issue (tenant key, password) authenticate
     * in the user service; everything else needs an access token here first,
     * except /v1/ws, whose token the socket service verifies on the upgrade it is relayed. Media: uploads
     * and downloads get their own body cap; signed URLs carry their own credentials (an HMAC
     * in the query), so no token is asked for them; nor for providers' delivery reports
     * (/v1/callbacks), which the notification service checks by the provider's signature. */
    n = snprintf(spec, sizeof(spec),
                 "/v1/tenants user auth=none; /v1/auth user auth=none; /v1/users user;"
                 "/v1/sessions user; /v1/roles user; /v1/server user auth=none;"
                 "/.well-known/jwks.json user auth=none;"
                 "/v1/conversations messaging; /v1/sync messaging; /v1/moderation messaging;"
                 "/v1/search search; /v1/analytics search; /v1/ws socket auth=none;"
                 "/v1/notifications notification; /v1/devices notification; /v1/webhooks notification;"
                 "/v1/callbacks notification auth=none;"
                 "/v1/media media max_body=%ld; /v1/uploads media max_body=%ld;"
                 "/v1/signed-media media auth=none max_body=%ld",
                 media_max, media_max, media_max);
    if (n < 0 || (size_t)n >= sizeof(spec) || gateway_routes_parse(ctx, spec, err, sizeof(err)) ||
        gateway_routes_parse(ctx, cm_config_str("GATEWAY_ROUTES", ""), err, sizeof(err)))
        goto bad;
    return CM_OK;
bad:
    cm_error("config: route table: %s", err);
    return CM_EINVAL;
}

int main(int argc, char **argv)
{
    static gateway_ctx ctx; /* large (pools and counters): not on the stack */
    cm_http_config hc;
    cm_http_server *srv = NULL;
    cm_redis *redis = NULL, *rl_redis = NULL;
    gateway_rate ip, user, tenant;
    long media_max, redis_port, rl_port, v, max_conns, per_ip, max_header, cors_refresh_s;
    long tenant_ttl_ms, lease_ms, loops, idle_s;
    cm_tenant_settings *tenants = NULL;
    char user_base[512];
    const char *redis_host, *rl_host;
    int rc = 1, upstreams = 0;

    if (cm_config_help_requested(argc, argv, "The API gateway: routing, load balancing, circuit "
                                             "breakers, rate limits, auth check, proxy.",
                                 vars, sizeof(vars) / sizeof(vars[0])))
        return 0;
    cm_process_block_signals();
    cm_log_init("gateway", cm_log_level_parse(cm_config_str("LOG_LEVEL", NULL), CM_LOG_INFO));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    /* Before any thread is created: they inherit the policy. A server thread hands each
     * admitted request to the upstream loop (an eventfd write) and the loop resumes each answer
     * (libmicrohttpd's ITC write); with SCHED_NORMAL the woken thread preempts the waker at
     * every such write, so batches are broken into a switch per request. SCHED_BATCH
     * (sched(7): "does not preempt" on wakeup; same CPU share, no privilege needed) lets the
     * waker finish its batch first: context switches per proxied request fell from ~1.25 to
     * ~0.6 under wrk (gateway/README.md, issue 6h). */
    if (cm_config_long("GATEWAY_SCHED_BATCH", 1, 0, 1, &v))
        goto out;
    if (v) {
        struct sched_param sp = {0};
        if (sched_setscheduler(0, SCHED_BATCH, &sp) != 0)
            cm_warn("gateway: SCHED_BATCH: %s (running as SCHED_NORMAL)", strerror(errno));
    }
    ctx.max_response = 16u << 20;
    if (cm_http_config_from_env(8080, &hc) ||
        cm_config_long("HTTP_IDLE_TIMEOUT_S", 15, 1, 3600, &idle_s) ||
        cm_config_long("HTTP_MAX_CONNECTIONS", 10000, 1, 1000000, &max_conns) ||
        cm_config_long("HTTP_MAX_CONNECTIONS_PER_IP", 256, 1, 1000000, &per_ip) ||
        cm_config_long("HTTP_MAX_HEADER_BYTES", 16384, 4096, 1 << 20, &max_header) ||
        cm_config_long("UPSTREAM_TIMEOUT_MS", 10000, 100, 600000, &ctx.timeout_ms) ||
        cm_config_long("UPSTREAM_CONNECT_TIMEOUT_MS", 1000, 10, 60000, &ctx.connect_timeout_ms) ||
        cm_config_long("UPSTREAM_HEALTH_INTERVAL_MS", 2000, 0, 600000, &ctx.health_interval_ms) ||
        cm_config_long("UPSTREAM_DNS_REFRESH_MS", 10000, 0, 3600000, &ctx.dns_refresh_ms) ||
        cm_config_long("WS_IDLE_TIMEOUT_S", 300, 1, 86400, &ctx.ws_idle_ms) ||
        cm_config_long("MEDIA_MAX_BODY", (100L << 20) + (64L << 10), 1, 1L << 30, &media_max) ||
        cm_config_long("GATEWAY_CORS_REFRESH_S", 10, 1, 3600, &cors_refresh_s) ||
        cm_config_long("GATEWAY_HSTS_MAX_AGE_S", 31536000, 0, 63072000, &ctx.hsts_max_age_s) ||
        gateway_cors_create(&ctx.cors))
        goto out;
    ctx.ws_idle_ms *= 1000;
    if (ctx.hsts_max_age_s > 0)
        snprintf(ctx.hsts, sizeof(ctx.hsts), "max-age=%ld; includeSubDomains", ctx.hsts_max_age_s);
    if (cm_config_str("HTTP_THREADS", NULL) == NULL)
        hc.threads = 8; /* admission may wait for Redis (cold buckets, denylist fallback) */
    if (cm_config_long("UPSTREAM_LOOPS", 1, 1, GW_MAX_LOOPS, &loops) ||
        cm_config_long("UPSTREAM_MAX_INFLIGHT", 64, 1, 100000, &v))
        goto out;
    /* 64, as many kept-alive connections as nginx's `keepalive 64` in the bench (which has no
     * cap on requests under way at all): the loop then takes bigger batches per wake-up, 12-17%
     * less CPU per request than the blocking model's 8 (gateway/README.md, issue 6g/6h). The
     * services take that many connections (libmicrohttpd's limits, none per address); a
     * deployment with small pools may lower it. */
    ctx.max_inflight = (int)v;
    gateway_ws_init(&ctx.ws);
    /* Its own variable: `v` is reused for every other setting (issue-6e's merge took the idle
     * timeout from UPSTREAM_MAX_INFLIGHT, 8 s, and clients reusing a connection after 8 s met
     * its close). */
    hc.idle_timeout_s = (unsigned)idle_s; /* shorter than the services': slow clients are shed */
    ctx.max_body = hc.max_body;
    if (cm_config_long("UPSTREAM_HEALTH_FAILURES", 2, 1, 100, &v))
        goto out;
    ctx.health_fail_threshold = (int)v;
    if (cm_config_long("BREAKER_FAILURES", 5, 1, 10000, &v))
        goto out;
    ctx.breaker.failures = (int)v;
    if (cm_config_long("BREAKER_MIN_REQUESTS", 10, 0, 1000000, &v))
        goto out;
    ctx.breaker.min_requests = (int)v;
    if (cm_config_long("BREAKER_OPEN_MS", 60000, 10, 3600000, &ctx.breaker.open_ms) ||
        cm_config_long("BREAKER_SUCCESSES", 2, 1, 1000, &v))
        goto out;
    ctx.breaker.successes = (int)v;
    if (cm_config_long("RETRY_MAX", 2, 0, 10, &v))
        goto out;
    ctx.retry_max = (int)v;
    if (cm_config_long("RETRY_BACKOFF_MS", 20, 0, 10000, &ctx.retry_backoff_ms) ||
        cm_config_long("RETRY_BUDGET_PERCENT", 20, 0, 100, &v))
        goto out;
    ctx.retry_budget_ratio = v * 10; /* per mille of a retry per request */
    if (rate_from_env("RATELIMIT_IP", "100/200", &ip) ||
        rate_from_env("RATELIMIT_USER", "20/40", &user) ||
        rate_from_env("RATELIMIT_TENANT", "500/1000", &tenant))
        goto out;
    ctx.admin_key = cm_config_str("PLATFORM_ADMIN_KEY", NULL);
    if (build_table(&ctx, media_max) || gateway_upstreams_init(&ctx))
        goto out;
    upstreams = 1;
    if (cm_jwt_verifier_from_env(&ctx.verifier) ||
        cm_config_long("JWT_CACHE_ENTRIES", 16384, 0, 1L << 24, &v) ||
        (v > 0 && cm_jwt_cache_enable(ctx.verifier, (size_t)(v < 4 ? 4 : v)) != CM_OK) ||
        cm_config_long("REDIS_PORT", 6379, 1, 65535, &redis_port) ||
        cm_config_long("RATELIMIT_REDIS_PORT", 0, 0, 65535, &rl_port) ||
        cm_redis_create((redis_host = cm_config_str("REDIS_HOST", "127.0.0.1")), (int)redis_port,
                        hc.threads, 500, &redis))
        goto out;
    ctx.denylist = redis; /* a revoked session's tokens are refused at the edge */
    if (cm_config_long("DENYLIST_COPY", 1, 0, 1, &v) ||
        (v && gateway_denylist_create(redis_host, (int)redis_port, &ctx.denylist_copy) != CM_OK))
        goto out;
    /* The shared buckets may live in another Redis than the denylist; 100 ms at most per take,
     * so a sick Redis costs little before the local buckets take over. */
    rl_host = cm_config_str("RATELIMIT_REDIS_HOST", redis_host);
    if (rl_host[0] == '\0')
        rl_host = redis_host;
    if (rl_port == 0)
        rl_port = redis_port;
    /* A connection per server thread: a request never waits for another's round trip. */
    if (cm_config_long("RATELIMIT_LEASE_MS", 100, 0, 10000, &lease_ms) ||
        cm_redis_create(rl_host, (int)rl_port, hc.threads, 100, &rl_redis) ||
        gateway_ratelimit_create(rl_redis, ip, user, tenant, lease_ms, &ctx.limits) ||
        gateway_ratelimit_set_prefix(ctx.limits, cm_config_str("RATELIMIT_KEY_PREFIX", "rl:")))
        goto out;
    /* One Redis for both: the denylist is checked in the rate limits' round trip. */
    if (strcmp(rl_host, redis_host) == 0 && rl_port == redis_port)
        gateway_ratelimit_share_denylist(ctx.limits);
    /* Each tenant's api_rate_per_min, from the first user service of USER_URL ("URL[*w],..."). */
    snprintf(user_base, sizeof(user_base), "%s", cm_config_str("USER_URL", "http://127.0.0.1:8081"));
    user_base[strcspn(user_base, ",*")] = '\0';
    if (cm_config_long("TENANT_SETTINGS_TTL_MS", 10000, 0, 3600000, &tenant_ttl_ms) ||
        cm_tenant_settings_create(user_base, tenant_ttl_ms, 500, &tenants))
        goto out;
    gateway_ratelimit_use_tenant_settings(ctx.limits, tenants);

    if (cm_http_server_create(&hc, &srv))
        goto out;
    cm_http_set_connection_limits(srv, (unsigned)max_conns, (unsigned)per_ip, (size_t)max_header);
    /* Proxied requests are suspended while an upstream loop relays them; whatever the drain
     * left is answered 503 before the server closes. */
    cm_http_allow_suspend(srv);
    cm_http_set_drain_hook(srv, gateway_loops_abort, &ctx);
    cm_http_set_metrics(srv, gateway_metrics, &ctx);
    cm_http_set_ready(srv, gateway_ready, &ctx);
    if (cm_http_route(srv, "GET", "/v1/gateway/upstreams", gateway_admin_upstreams, &ctx) ||
        cm_http_route(srv, "POST", "/v1/gateway/upstreams/{pool}/reset", gateway_admin_reset,
                      &ctx) ||
        cm_http_route_prefix(srv, "/", gateway_proxy, &ctx))
        goto out;
    /* Bodies over a route's cap get 413 before they are read. */
    for (int i = 0; i < ctx.nroutes; i++)
        if (ctx.routes[i].max_body && ctx.routes[i].max_body != hc.max_body &&
            cm_http_body_limit(srv, ctx.routes[i].prefix, ctx.routes[i].max_body))
            goto out;
    if ((ctx.denylist_copy && gateway_denylist_start(ctx.denylist_copy) != CM_OK) ||
        gateway_loops_start(&ctx, (int)loops) != CM_OK || cm_http_server_start(srv) != CM_OK ||
        gateway_upstreams_start(&ctx) != CM_OK ||
        gateway_cors_start(ctx.cors, &ctx, cors_refresh_s * 1000) != CM_OK)
        goto out;
    for (int i = 0; i < ctx.nroutes; i++)
        cm_info("gateway: route %s -> %s (auth %s)", ctx.routes[i].prefix,
                ctx.routes[i].pool_name, gateway_auth_name(ctx.routes[i].auth));
    cm_info("stopping on signal %d", cm_process_wait_signal());
    atomic_store(&ctx.stopping, 1); /* /health/ready answers 503 while draining */
    gateway_ws_shutdown(&ctx.ws, (long)hc.drain_s * 1000); /* clients reconnect elsewhere */
    rc = 0;
out:
    cm_http_server_destroy(srv); /* drains in-flight requests first */
    gateway_loops_stop(&ctx);
    gateway_cors_destroy(ctx.cors); /* its thread picks upstreams: before they go */
    if (upstreams)
        gateway_upstreams_cleanup(&ctx);
    gateway_ratelimit_destroy(ctx.limits);
    gateway_denylist_destroy(ctx.denylist_copy);
    cm_tenant_settings_destroy(tenants);
    cm_jwt_destroy(ctx.verifier);
    cm_redis_destroy(redis);
    cm_redis_destroy(rl_redis);
    curl_global_cleanup();
    return rc;
}
