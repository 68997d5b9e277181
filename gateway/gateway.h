/* gateway.h - the gateway's route table, upstream pools (load balancing, health, circuit
 * breakers, retry budget), rate limits and proxy. */
#ifndef GATEWAY_H
#define GATEWAY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "common/error.h"
#include "common/http.h"
#include "common/jwt.h"

#define GW_MAX_POOLS 16
#define GW_MAX_ROUTES 32
#define GW_MAX_INSTANCES 16 /* per pool, after DNS expansion */
#define GW_MAX_TARGETS 8    /* configured URLs per pool */
#define GW_URL_MAX 256
#define GW_NBUCKETS 12      /* latency histogram buckets (gateway_metrics.c) */
#define GW_MAX_LOOPS 8      /* upstream event loop threads (UPSTREAM_LOOPS) */
#define GW_KEPT_MAX 32      /* upstream response headers relayed at most */

/* What a route asks of a client before the request is relayed. */
typedef enum gateway_auth {
    GW_AUTH_NONE,       /* the service authenticates, if at all */
    GW_AUTH_BEARER,     /* a verified access token (JWT), not revoked */
    GW_AUTH_TENANT_KEY, /* tenant API key credentials (Basic key:secret) present; the user
                           service verifies the secret */
    GW_AUTH_ADMIN       /* X-Admin-Key equal to PLATFORM_ADMIN_KEY */
} gateway_auth;

typedef enum gateway_lb {
    GW_LB_ROUND_ROBIN,
    GW_LB_LEAST_CONN,
    GW_LB_WEIGHTED, /* smooth weighted round robin (nginx's algorithm) */
    GW_LB_RANDOM
} gateway_lb;

typedef enum gateway_circuit { GW_CIRCUIT_CLOSED, GW_CIRCUIT_OPEN, GW_CIRCUIT_HALF_OPEN } gateway_circuit;

/* Circuit breaker settings (GW_BREAKER_* variables). */
typedef struct gateway_breaker_conf {
    int failures;     /* consecutive failures that open a closed circuit (5) */
    int min_requests; /* requests seen since it closed before it may open (10) */
    long open_ms;     /* how long it stays open before a trial (60000) */
    int successes;    /* trial successes in half-open that close it (2) */
} gateway_breaker_conf;

/* The breaker of one upstream instance: plain state, the caller holds the instance's lock. */
typedef struct gateway_breaker {
    gateway_circuit state;
    int consecutive_failures;
    long requests;       /* seen since the circuit last closed */
    int trial_successes; /* in half-open */
    int trial_inflight;  /* in half-open: one trial at a time */
    int64_t opened_at_ms;
    unsigned long opened_total; /* times it opened, for metrics */
} gateway_breaker;

/* Returns 1 when a request may be sent through `b` at `now_ms` (and counts a half-open trial
 * as in flight), 0 when the circuit refuses it. An open circuit whose open_ms elapsed turns
 * half-open here. */
int gateway_breaker_allow(gateway_breaker *b, const gateway_breaker_conf *c, int64_t now_ms);

/* Records the outcome of a request that gateway_breaker_allow let through: ok 1 or 0. Opens a
 * closed circuit after c->failures consecutive failures once c->min_requests were seen;
 * closes a half-open one after c->successes successes; reopens it on any trial failure. */
void gateway_breaker_record(gateway_breaker *b, const gateway_breaker_conf *c, int ok,
                            int64_t now_ms);

/* Milliseconds until an open circuit allows a trial (0 when not open). */
int64_t gateway_breaker_retry_in(const gateway_breaker *b, const gateway_breaker_conf *c,
                                 int64_t now_ms);

const char *gateway_circuit_name(gateway_circuit s);

/* Per-upstream-instance and per-route counters for /metrics. */
typedef struct gateway_stats {
    atomic_ulong requests, errors, retries, rejected;
    atomic_ulong le[GW_NBUCKETS];
    atomic_ulong count, sum_us;
} gateway_stats;

/* One upstream instance: a configured URL, or one address a DNS name resolved to. */
typedef struct gateway_instance {
    char url[GW_URL_MAX];       /* base URL as configured, e.g. http://messaging:8082 */
    char connect_to[GW_URL_MAX]; /* libcurl CONNECT_TO "host:port:addr:port", "" for literals */
    char id[96];                /* "addr:port", stable name in admin output and metrics */
    int weight;
    int active;   /* slot in use (DNS may retire it) */
    int cur_weight; /* smooth weighted round robin state (pool pick lock) */
    atomic_int healthy;       /* last active health check verdict (1 until a check fails) */
    atomic_int inflight;
    int health_failures;      /* consecutive failed checks (health thread only) */
    pthread_mutex_t lock;     /* guards breaker */
    gateway_breaker breaker;
    gateway_stats stats;
} gateway_instance;

/* One configured target of a pool: a URL whose host is an address or a DNS name. */
typedef struct gateway_target {
    char url[GW_URL_MAX];
    int weight;
} gateway_target;

typedef struct gateway_pool {
    char name[32];
    gateway_lb lb;
    int no_health; /* health=off: no active checks (instances without /health/ready) */
    gateway_target targets[GW_MAX_TARGETS];
    int ntargets;
    gateway_instance inst[GW_MAX_INSTANCES];
    int ninst;               /* slots used so far (some may be inactive) */
    pthread_rwlock_t lock;   /* readers pick; the DNS refresh writes */
    pthread_mutex_t pick_lock;
    atomic_uint rr;
    atomic_long budget_milli; /* retry budget, in thousandths of a retry */
} gateway_pool;

/* One entry of the route table: requests whose path starts with `prefix` (at a segment
 * boundary) go to `pool`. */
typedef struct gateway_route {
    char prefix[128];
    char pool_name[32];
    gateway_pool *pool;
    gateway_auth auth;
    long timeout_ms;  /* total time of one upstream attempt */
    size_t max_body;  /* request and response cap; 0: the process default */
    gateway_stats stats;
} gateway_route;

typedef struct gateway_ratelimit gateway_ratelimit;
typedef struct gateway_denylist gateway_denylist;
typedef struct gateway_loop gateway_loop;
typedef struct gateway_cors gateway_cors;

/* Where a relayed WebSocket stream from an instance stands (RFC 6455 section 5.2 framing):
 * the relay follows frame headers only, so the gateway can add a close frame of its own at a
 * frame boundary. Zeroed: at a boundary, nothing seen. */
typedef struct gateway_ws_track {
    unsigned char hdr[14]; /* header bytes of the current frame collected so far */
    size_t hlen;
    uint64_t left;  /* payload bytes of the current frame still to come */
    int close_seen; /* a close frame has begun: the instance ends the conversation itself */
} gateway_ws_track;

struct gateway_ws_relay;

/* The relayed WebSocket connections (gateway_ws.c). */
typedef struct gateway_ws {
    pthread_mutex_t lock;
    pthread_cond_t cond;         /* signalled when a relay ends */
    struct gateway_ws_relay *head; /* open relays */
    int open;
    atomic_int stopping;         /* SIGTERM: relays close their clients with 1001 */
    atomic_ulong opened, refused, failed, bytes_up, bytes_down;
    atomic_ulong closed[5];      /* by who ended it: client, upstream, upstream_gone, idle, drain */
} gateway_ws;

typedef struct gateway_ctx {
    gateway_route routes[GW_MAX_ROUTES];
    int nroutes;
    gateway_pool pools[GW_MAX_POOLS];
    int npools;
    gateway_breaker_conf breaker;
    cm_jwt *verifier;
    const char *admin_key; /* PLATFORM_ADMIN_KEY, NULL: admin routes refused */
    long timeout_ms;
    long connect_timeout_ms;
    size_t max_response;
    size_t max_body;          /* HTTP_MAX_BODY */
    int retry_max;            /* extra attempts per request */
    long retry_backoff_ms;    /* first backoff, doubled per attempt, with jitter */
    long retry_budget_ratio;  /* per mille of requests that may be retried */
    long health_interval_ms;
    int health_fail_threshold;
    long dns_refresh_ms;
    gateway_ratelimit *limits;
    gateway_cors *cors;       /* tenants' CORS allowlists (gateway_cors.c) */
    long hsts_max_age_s;      /* Strict-Transport-Security max-age; 0: not sent */
    char hsts[64];            /* its header value, made once ("": not sent) */
    struct cm_redis *denylist; /* the session denylist's Redis (session.h) */
    gateway_denylist *denylist_copy; /* its copy here (NULL: Redis asked per request) */
    gateway_ws ws;
    long ws_idle_ms;          /* a relayed WebSocket silent both ways this long is closed */
    atomic_int stopping;
    gateway_loop *loops[GW_MAX_LOOPS]; /* upstream event loops (gateway_relay.c) */
    int max_inflight;         /* transfers under way per pool and loop; more wait their turn */
    int nloops;
    atomic_uint next_loop;
    pthread_t health_thread;
    int health_started;
} gateway_ctx;

/* --- configuration (gateway_config.c) ------------------------------------------------------ */

/* Parses pool definitions into ctx->pools, replacing a pool of the same name or adding one:
 *   "name=url[*weight][,url[*weight]...][ lb=round_robin|least_conn|weighted|random]
 *    [ health=on|off]; ..."  (health=off: no active checks, for instances that serve no
 *   /health/ready on that port, such as the socket service's WebSocket port)
 * A url is http(s)://host:port; a host that is not an address is a DNS name, re-resolved every
 * dns_refresh_ms, each address becoming an instance. On error writes the reason to `err`
 * (size n) and returns CM_EINVAL with ctx->pools unchanged from before the bad entry. */
cm_err gateway_pools_parse(gateway_ctx *ctx, const char *spec, char *err, size_t n);

/* Parses route definitions into ctx->routes, replacing a route of the same prefix or adding:
 *   "prefix pool [auth=none|bearer|tenant-key|admin] [timeout_ms=N] [max_body=N]; ..."
 * The pool must exist already. CM_EINVAL with the reason in `err` otherwise. */
cm_err gateway_routes_parse(gateway_ctx *ctx, const char *spec, char *err, size_t n);

/* Returns the pool named `name`, or NULL. */
gateway_pool *gateway_pool_find(gateway_ctx *ctx, const char *name);

const char *gateway_lb_name(gateway_lb lb);
const char *gateway_auth_name(gateway_auth a);

/* --- route lookup and header rules (gateway_routes.c) ------------------------------------- */

/* Returns the route for `path` (longest prefix at a segment boundary), or NULL. */
gateway_route *gateway_route_find(gateway_ctx *ctx, const char *path);

/* Returns 1 when a client header must not be forwarded: hop-by-hop headers (RFC 9110
 * section 7.6.1), Host and Content-Length (libcurl sets them), and every header the gateway
 * itself sets for the services (X-Auth-*, X-Forwarded-*, X-Real-Ip, X-Request-Id,
 * traceparent), so a client can never spoof them, and the services' X-Internal-Key. */
int gateway_header_dropped(const char *name);

/* Appends `s` to `out` (size n, at offset *len) percent-encoding everything but RFC 3986
 * unreserved characters and, when keep_slash, '/'. Returns -1 when it does not fit. */
int gateway_escape(const char *s, int keep_slash, char *out, size_t n, size_t *len);

/* Returns 1 when `given` equals `secret`, comparing every byte whatever differs first (constant
 * time in the content; the length is not secret). */
int gateway_secret_equal(const char *given, const char *secret);

/* Returns 1 when `method` may be retried: idempotent per RFC 9110 section 9.2.2 (GET, HEAD,
 * OPTIONS, TRACE, PUT, DELETE), or any method when the request carries an Idempotency-Key
 * (draft-ietf-httpapi-idempotency-key-header). */
int gateway_retryable(const char *method, int has_idempotency_key);

/* W3C Trace Context: when `in` is a valid traceparent (version 00, non-zero ids) keeps its
 * trace-id, else starts a new trace; the parent-id is a new span id of the gateway. Writes
 * "00-<32 hex>-<16 hex>-<flags>" to out (size >= 56). */
void gateway_traceparent(const char *in, char *out, size_t n);

/* --- upstream selection and health (gateway_upstream.c) ----------------------------------- */

/* Resolves every pool's targets into instances and initialises locks. CM_EINVAL when a pool
 * has no target. DNS names that do not resolve yet leave the pool empty until they do. */
cm_err gateway_upstreams_init(gateway_ctx *ctx);

/* Starts the background thread of active health checks (GET /health/ready) and DNS refresh. */
cm_err gateway_upstreams_start(gateway_ctx *ctx);

/* Stops the thread and frees locks. */
void gateway_upstreams_cleanup(gateway_ctx *ctx);

/* Picks an instance of `pool` by its balancing rule among the active, healthy ones whose
 * breaker admits a request, skipping `exclude` (may be NULL). Counts it in flight. Copies its
 * URL and CONNECT_TO into url/connect_to (size GW_URL_MAX). CM_EAGAIN when none admits one,
 * with `*retry_in_ms` the soonest an open circuit allows a trial (0 when unknown). */
cm_err gateway_pick(gateway_ctx *ctx, gateway_pool *pool, const gateway_instance *exclude,
                    gateway_instance **out, char *url, char *connect_to, int64_t *retry_in_ms);

/* Ends a request to `inst` started by gateway_pick: ok feeds its breaker, seconds its
 * latency histogram. */
void gateway_done(gateway_ctx *ctx, gateway_instance *inst, int ok, double seconds);

#define GW_RETRY_BUDGET_CAP 100000L /* thousandths: at most 100 retries saved up */

/* Credits the pool's retry budget for one client request (retry_budget_ratio thousandths of a
 * retry), so retries stay a fixed fraction of traffic (Finagle's RetryBudget). */
void gateway_retry_deposit(gateway_ctx *ctx, gateway_pool *pool);

/* Takes one retry from the pool's budget: 1 when allowed, 0 when spent. */
int gateway_retry_take(gateway_ctx *ctx, gateway_pool *pool);

/* Resets the circuit of instance `id` of `pool` (all instances when id is NULL) to closed.
 * Returns how many were reset. */
int gateway_circuit_reset(gateway_pool *pool, const char *id);

int64_t gateway_now_ms(void);

/* --- rate limits (gateway_ratelimit.c) ------------------------------------------------------ */

/* A token bucket's settings: refilled at per_s tokens a second up to burst; per_s 0: off. */
typedef struct gateway_rate {
    double per_s;
    long burst;
} gateway_rate;

/* The outcome of a take, from the most restrictive bucket involved (for the RateLimit-*
 * headers of draft-ietf-httpapi-ratelimit-headers). */
typedef struct gateway_rl_verdict {
    int allowed;
    long limit;         /* the bucket's burst */
    long remaining;     /* whole tokens left */
    long reset_s;       /* seconds until the bucket is full again */
    long retry_after_s; /* when refused: seconds until a token is there */
    const char *scope;  /* "ip", "user" or "tenant"; NULL when no bucket applied */
    int local;          /* decided by this process's buckets (Redis unreachable) */
} gateway_rl_verdict;

struct cm_redis;
struct cm_tenant_settings;

/* Creates the limiter over `redis` (not owned; NULL: local buckets only). A take that reaches
 * Redis leases L-1 more tokens of a bucket, L = rate x lease_ms (at most a quarter of its
 * burst), spent by the next requests without a round trip and dropped lease_ms after; 0: every
 * take is a round trip. Over any interval each instance admits at most L-1 requests more per
 * bucket than the shared bucket alone would (gateway_ratelimit.c). CM_ENOMEM. */
cm_err gateway_ratelimit_create(struct cm_redis *redis, gateway_rate ip, gateway_rate user,
                                gateway_rate tenant, long lease_ms, gateway_ratelimit **out);
void gateway_ratelimit_destroy(gateway_ratelimit *rl); /* accepts NULL */

/* Sets what every bucket's Redis key starts with ("rl:" by default; the key then names the
 * scope and its owner, e.g. "rl:ip:127.0.0.1"). Gateways sharing a prefix share their buckets;
 * separate deployments on one Redis need separate prefixes. CM_EINVAL over 31 bytes. */
cm_err gateway_ratelimit_set_prefix(gateway_ratelimit *rl, const char *prefix);

/* Takes a token from the client IP's bucket (before authentication). */
void gateway_ratelimit_ip(gateway_ratelimit *rl, const char *ip, gateway_rl_verdict *v);

/* Takes a token from the user's and the tenant's buckets at once (all or none). */
void gateway_ratelimit_identity(gateway_ratelimit *rl, const char *tenant, const char *user,
                                gateway_rl_verdict *v);

/* Refills a bucket of `tokens` last updated at *ts_ms to now_ms (milliseconds): the rule both
 * the Lua script and the local buckets follow. */
void gateway_bucket_refill(double *tokens, int64_t *ts_ms, double per_s, long burst,
                           int64_t now_ms);

/* Lets each tenant's api_rate_per_min setting (common/tenant.h; not owned) set its users'
 * buckets instead of RATELIMIT_USER. */
void gateway_ratelimit_use_tenant_settings(gateway_ratelimit *rl, struct cm_tenant_settings *tenants);

/* Declares that the limiter's Redis also holds the session denylist (session.h), so
 * gateway_ratelimit_request checks it in the same round trip. */
void gateway_ratelimit_share_denylist(gateway_ratelimit *rl);

/* The per-request take of an authenticated request in one Redis round trip (one Lua script):
 * the IP's (ip NULL: already taken), the user's and the tenant's buckets at once (all or
 * none) and, when `check_denylist` and the Redis holds the denylist, the claims' tenant and
 * session checked against it first. With leases (gateway_ratelimit_create) and no denylist to
 * check, most takes make no round trip at all. Returns 0 when
 * neither is listed, 1 when the tenant is suspended, 2 when the session was revoked (nothing
 * taken then), -1 when the denylist was not checked (not shared, or Redis unreachable and the
 * buckets were local): the caller then asks cm_session_check_claims. */
int gateway_ratelimit_request(gateway_ratelimit *rl, const char *ip, const cm_jwt_claims *c,
                              int check_denylist, gateway_rl_verdict *v);

void gateway_ratelimit_metrics(gateway_ratelimit *rl, void (*emit)(void *ctx, const char *text),
                               void *ectx);

/* --- the denylist's copy (gateway_denylist.c) ---------------------------------------------- */

/* Creates an empty copy of the session denylist (common/session.h) kept in the Redis at
 * host:port; nothing is trusted until gateway_denylist_start's thread has loaded it. CM_ENOMEM. */
cm_err gateway_denylist_create(const char *host, int port, gateway_denylist **out);

/* Starts the thread that subscribes to CM_SESSION_CHANNEL, loads every denylist key and
 * follows the changes, resubscribing and reloading after a lost connection. CM_ENOMEM. */
cm_err gateway_denylist_start(gateway_denylist *dl);

/* Stops the thread and frees everything; accepts NULL. */
void gateway_denylist_destroy(gateway_denylist *dl);

/* The claims' tenant and session against the copy, with every change acknowledged before this
 * call applied first: 0 neither listed, 1 the tenant is suspended, 2 the session was revoked,
 * -1 unknown (no complete copy now: the caller asks Redis). No round trip. */
int gateway_denylist_check(gateway_denylist *dl, const cm_jwt_claims *c);

void gateway_denylist_metrics(gateway_denylist *dl, void (*emit)(void *ctx, const char *text),
                              void *ectx);

/* --- proxy, admin, metrics ----------------------------------------------------------------- */

/* The catch-all handler: rate limits, auth per the route, then the request relayed with
 * libcurl to an instance of the route's pool, retried where that is safe. */
void gateway_proxy(cm_http_req *req, void *ud);

/* Writes the request's path and query, percent-encoded again, to `out` (size n): the request
 * target sent upstream. -1 when it does not fit. */
int gateway_request_target(cm_http_req *req, char *out, size_t n);

/* The headers sent upstream: the client's minus the dropped ones (gateway_header_dropped),
 * then X-Request-Id, X-Forwarded-For, traceparent (logged too) and, when `claims` is not NULL,
 * X-Auth-Tenant and X-Auth-User, as "Name: value" lines. NULL when out of memory. The list
 * lives in the request's memory (cm_http_alloc): not to be freed. */
struct curl_slist *gateway_forward_headers(cm_http_req *req, const cm_jwt_claims *claims);

/* Adds the RateLimit-* fields of draft-ietf-httpapi-ratelimit-headers (the -07 form most
 * clients read) for the binding bucket `v` (nothing when no bucket applied). */
void gateway_ratelimit_headers(cm_http_req *req, const gateway_rl_verdict *v);

/* --- the upstream event loops (gateway_relay.c) --------------------------------------------- */

/* One admitted request on its way upstream: built by gateway_proxy on a server thread (which
 * then suspends the request), carried through its attempts by one loop thread, which answers
 * and resumes it. Lives in the request's memory (cm_http_alloc). */
typedef struct gateway_job {
    struct gateway_job *next, *prev; /* the submission queue, then the loop's list */
    gateway_ctx *ctx;
    cm_http_req *req;
    gateway_route *route;
    gateway_instance *inst;          /* the current (or last) attempt's instance */
    struct curl_slist *headers;      /* in the request's memory (gateway_forward_headers) */
    CURL *easy;                      /* the handle of the attempt under way, or NULL */
    const char *method, *body;
    size_t body_len;
    struct gateway_job *wnext;       /* the loop's queue of a pool at its max_inflight */
    int in_multi;                    /* 1: its transfer is in the multi handle; 2: waiting for
                                        a turn of its pool (max_inflight); 0: neither */
    int retryable;
    int tries;
    int cc;                          /* CURLcode of the last attempt */
    long status;                     /* its HTTP status (0 when none) */
    int64_t due_ms;                  /* a retry waiting for its backoff: when it starts */
    struct timespec start, t0;       /* the request's start; the attempt's */
    gateway_rl_verdict rl;           /* the binding bucket, for RateLimit-* (scope NULL: none) */
    /* the attempt's answer */
    char *body_buf;
    size_t len, cap, max;
    int too_big;
    const char *kept_name[GW_KEPT_MAX];
    char *kept_value[GW_KEPT_MAX];
    int nkept, has_ratelimit;
    struct curl_slist ct;            /* CONNECT_TO as a one-entry list (libcurl keeps it) */
    char connect_to[GW_URL_MAX];
    char tail[];                     /* path and query sent upstream */
} gateway_job;

/* Starts `n` loops (1..GW_MAX_LOOPS) into ctx->loops, each a thread driving one libcurl multi
 * handle (its own connection cache and keep-alive connections) with epoll and
 * curl_multi_socket_action. CM_ENOMEM / CM_EIO (logged). */
cm_err gateway_loops_start(gateway_ctx *ctx, int n);

/* Hands a suspended request's job to a loop (round robin), which makes its attempts, answers
 * and resumes it. Never blocks on the network. */
void gateway_loop_submit(gateway_ctx *ctx, gateway_job *job);

/* The server's drain hook: every job still under way is answered 503 and resumed, and jobs
 * submitted afterwards at once; returns when none is left. */
void gateway_loops_abort(void *ctx);

/* Stops the threads and frees the loops (after the server is gone). */
void gateway_loops_stop(gateway_ctx *ctx);

void gateway_loops_metrics(gateway_ctx *ctx, void (*emit)(void *ctx, const char *text),
                           void *ectx);

/* GET /v1/gateway/upstreams and POST /v1/gateway/upstreams/{pool}/reset (admin key). */
void gateway_admin_upstreams(cm_http_req *req, void *ud);
void gateway_admin_reset(cm_http_req *req, void *ud);

/* Adds one observation to `st`; failed counts it as an error. */
void gateway_stats_observe(gateway_stats *st, double seconds, int failed);

/* The gateway's Prometheus lines (cm_http_set_metrics callback). */
void gateway_metrics(void *ud, void (*emit)(void *ctx, const char *text), void *ectx);

/* /health/ready: ready until SIGTERM starts the drain (then 503, so balancers stop sending);
 * an upstream pool being down is answered per route, not by taking the whole edge out. */
cm_err gateway_ready(void *ud, char *detail, size_t n);

/* --- CORS per tenant (gateway_cors.c) ------------------------------------------------------ */

/* Creates an empty set of allowlists (every cross-origin request refused until a load).
 * CM_ENOMEM. */
cm_err gateway_cors_create(gateway_cors **out);

/* Replaces the allowlists with the user service's answer to GET /internal/v1/tenants/cors-origins,
 * {"items": [{"tenant_id": "...", "origins": ["https://app.example.com", ...]}, ...]}.
 * CM_EINVAL (reason in `detail`, size n) for another shape, CM_ENOMEM; the old lists stay. */
cm_err gateway_cors_load(gateway_cors *c, const char *json, size_t len, char *detail, size_t n);

/* 1 when `origin` (compared without regard to case, RFC 6454 section 6.2 serialisation) is in
 * tenant `tenant`'s allowlist, or, with tenant NULL, in any tenant's; 0 otherwise. */
int gateway_cors_allowed(gateway_cors *c, const char *origin, const char *tenant);

/* Starts the thread that reloads the allowlists from an instance of the 'user' pool every
 * refresh_ms (with the platform admin key; none configured: nothing is loaded, a warning). */
cm_err gateway_cors_start(gateway_cors *c, gateway_ctx *ctx, long refresh_ms);

/* Stops the thread and frees everything; accepts NULL. */
void gateway_cors_destroy(gateway_cors *c);

/* 1 for a CORS preflight: OPTIONS with Origin and Access-Control-Request-Method. */
int gateway_cors_is_preflight(cm_http_req *req);

/* Answers a preflight at the edge (it carries no token, so the tenant is unknown): 204 with
 * Access-Control-Allow-Origin/-Methods/-Headers and -Max-Age (600 s) when some tenant allows
 * the Origin and the method and headers asked for are ones the API takes; otherwise 403
 * problem+json naming what was refused, without CORS headers (the browser then refuses). */
void gateway_cors_preflight(gateway_ctx *ctx, cm_http_req *req);

/* Adds Access-Control-Allow-Origin and -Expose-Headers when the request's Origin is allowed by
 * tenant `tenant` (NULL before the tenant is known: by any tenant). Credentials mode is not
 * offered: tokens travel in Authorization, never in cookies. */
void gateway_cors_headers(gateway_ctx *ctx, cm_http_req *req, const char *tenant);

void gateway_cors_metrics(gateway_cors *c, void (*emit)(void *ctx, const char *text),
                          void *ectx);

/* --- WebSocket proxy (gateway_ws.c) --------------------------------------------------------- */

/* Returns 1 when the request is a WebSocket upgrade (GET with Upgrade: websocket). */
int gateway_ws_is_upgrade(cm_http_req *req);

/* Relays a WebSocket upgrade to an instance of the route's pool (by its balancing rule;
 * another instance when one cannot be reached): the client's headers with the gateway's
 * (gateway_forward_headers, `claims` may be NULL), then the instance's 101 with its
 * Sec-WebSocket-* headers, after which a relay thread copies bytes both ways until either
 * side closes, ctx->ws_idle_ms pass in silence or gateway_ws_shutdown runs. An instance going
 * away mid-stream gets the client a close frame 1012 "service restart". A refusal of the
 * instance (401...) is relayed as it is; no instance: 503 problem. Answers exactly once. */
void gateway_ws_proxy(gateway_ctx *ctx, cm_http_req *req, gateway_route *route,
                      const cm_jwt_claims *claims);

/* Follows n bytes of an instance's stream. */
void gateway_ws_track_feed(gateway_ws_track *t, const unsigned char *p, size_t n);

/* 1 when the stream followed by `t` is between two frames. */
int gateway_ws_track_at_boundary(const gateway_ws_track *t);

/* Writes an unmasked close frame with `code` and `reason` (cut to 123 bytes) to out (size n).
 * Returns its length, 0 when it does not fit. */
size_t gateway_ws_close_frame(int code, const char *reason, unsigned char *out, size_t n);

void gateway_ws_init(gateway_ws *ws);

/* Ends every relay (1001 "gateway going away" to clients between frames) and waits up to
 * wait_ms for their threads. */
void gateway_ws_shutdown(gateway_ws *ws, long wait_ms);

void gateway_ws_metrics(gateway_ws *ws, void (*emit)(void *ctx, const char *text), void *ectx);

#endif
