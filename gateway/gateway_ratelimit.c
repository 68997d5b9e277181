/* gateway_ratelimit.c - token buckets per client IP, per user and per tenant. They live in
 * Redis and are taken by one atomic Lua script, so every gateway instance shares them; while
 * Redis cannot be reached, buckets in this process take over and the gateway keeps serving.
 *
 * Leases: a round trip per request would cost more than the rest of the request (a Redis
 * write and read, a thread switch, the script's time in Redis). So when a take succeeds the
 * script may hand this process L-1 more tokens of the bucket, L = rate x lease_ms (at most a
 * quarter of the burst; no lease when L < 2), which the next requests spend here without
 * asking Redis; unspent leased tokens are dropped lease_ms after they were taken. One thread at
 * a time asks for a bucket's next lease (the others take single tokens meanwhile), so a process
 * never holds more than L-1 tokens of a bucket. Every token spent anywhere was first taken
 * from the shared bucket, so over any interval the instances together admit at most what the
 * one bucket admits plus the tokens they held at its start: at most (L-1) more requests per
 * bucket and instance. A bucket with L < 2 (the slow ones) is taken exactly as before, one
 * round trip per request; so is a bucket no request used for lease_ms. RateLimit-Remaining
 * counts this process's leased tokens as left. Unspent tokens of a lease are lost to the other
 * instances until it expires (under-admission, bounded the same way). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/redis.h"
#include "common/session.h"
#include "common/tenant.h"
#include "gateway.h"

#define LOCAL_SLOTS 4096
#define RL_KEY_MAX 320 /* "rl:user:" + tenant id + ":" + user id (CM_JWT_ID_MAX each) */
#define REDIS_RETRY_MS 1000 /* after a Redis failure, local buckets for this long */
#define LEASE_SLOTS 4096

/* Checks the denylist keys, then takes one token from every bucket, all or none, in one round
 * trip, plus a lease of up to want-1 more from each (as many as it holds). ARGV[1] is the
 * number of denylist keys, which come last in KEYS (session.h: the tenant's "suspended:tid:"
 * key, the session's "revoked:sid:" key); the buckets come first, with, per bucket, its rate in
 * tokens per second, its burst and the tokens wanted (>= 1) in ARGV[2..]. When a denylist key
 * exists, replies {-k} (k its 1-based position among the denylist keys) and takes nothing.
 * Otherwise replies {allowed, then per bucket: tokens left (floor), ms until one token, ms
 * until full, tokens granted (0 when refused)}. Time is Redis' own (TIME), so gateways with
 * skewed clocks agree. A bucket's key expires once it would be full again. */
static const char BUCKET_LUA[] =
    "local nd = tonumber(ARGV[1]) "
    "local nb = #KEYS - nd "
    "for i = nb + 1, #KEYS do "
    "  if redis.call('EXISTS', KEYS[i]) == 1 then return {nb - i} end "
    "end "
    "local t = redis.call('TIME') "
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
    "local tk, ok = {}, 1 "
    "for i = 1, nb do "
    "  local rate, burst = tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i]) "
    "  local v = redis.call('HMGET', KEYS[i], 't', 'ts') "
    "  local x, ts = tonumber(v[1]) or burst, tonumber(v[2]) or now "
    "  if now > ts then x = math.min(burst, x + (now - ts) * rate / 1000) end "
    "  tk[i] = x "
    "  if x < 1 then ok = 0 end "
    "end "
    "local out = {ok} "
    "for i = 1, nb do "
    "  local rate, burst, want = tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i]), tonumber(ARGV[3*i+1]) "
    "  local x, g = tk[i], 0 "
    "  if ok == 1 then g = math.max(1, math.min(want, math.floor(x))) x = x - g end "
    "  redis.call('HSET', KEYS[i], 't', tostring(x), 'ts', tostring(now)) "
    "  redis.call('PEXPIRE', KEYS[i], math.ceil((burst - x) * 1000 / rate) + 1000) "
    "  local wait = 0 "
    "  if x < 1 then wait = math.ceil((1 - x) * 1000 / rate) end "
    "  out[#out+1] = math.floor(x) "
    "  out[#out+1] = wait "
    "  out[#out+1] = math.ceil((burst - x) * 1000 / rate) "
    "  out[#out+1] = g "
    "end "
    "return out";

/* Tokens of a shared bucket this process took in advance (see the top of the file). */
struct lease {
    char key[RL_KEY_MAX];
    double per_s; /* the rate and burst it was taken under: another one drops it */
    long burst;
    long tokens;        /* leased, not spent yet */
    int64_t expires_ms; /* unspent tokens are dropped then */
    long left;          /* whole tokens the shared bucket had left after the lease */
    int64_t full_at_ms; /* when the shared bucket would be full again */
    int refilling;      /* a thread is asking Redis for the next lease: the others take one
                           token at a time meanwhile, so threads never hoard leases together */
};

struct local_bucket {
    char key[RL_KEY_MAX];
    double tokens;
    int64_t ts_ms;
};

struct gateway_ratelimit {
    cm_redis *redis;
    gateway_rate ip, user, tenant;
    char rate_arg[3][32], burst_arg[3][32]; /* the script's arguments per scope, made once */
    char prefix[32];     /* of every bucket's key: RATELIMIT_KEY_PREFIX, "rl:" by default */
    int shares_denylist; /* `redis` also holds the session denylist */
    cm_tenant_settings *tenants; /* each tenant's api_rate_per_min (not owned; NULL: none) */
    atomic_llong redis_down_until;
    pthread_mutex_t lock;
    struct local_bucket *local; /* LOCAL_SLOTS, hashed by key; a collision evicts */
    atomic_ulong rejected[3], local_decisions, redis_errors;
    long lease_ms;        /* 0: no leases, one round trip per take */
    struct lease *leases; /* LEASE_SLOTS, hashed by key, guarded by `lock`; a collision evicts */
    atomic_ulong leased_decisions, round_trips;
};

static const char *const scope_names[] = {"ip", "user", "tenant"};

void gateway_bucket_refill(double *tokens, int64_t *ts_ms, double per_s, long burst,
                           int64_t now_ms)
{
    if (now_ms > *ts_ms) {
        *tokens += (double)(now_ms - *ts_ms) * per_s / 1000.0;
        if (*tokens > (double)burst)
            *tokens = (double)burst;
    }
    *ts_ms = now_ms > *ts_ms ? now_ms : *ts_ms;
}

cm_err gateway_ratelimit_create(cm_redis *redis, gateway_rate ip, gateway_rate user,
                                gateway_rate tenant, long lease_ms, gateway_ratelimit **out)
{
    gateway_ratelimit *rl = calloc(1, sizeof(*rl));
    if (rl == NULL)
        return CM_ENOMEM;
    rl->local = calloc(LOCAL_SLOTS, sizeof(*rl->local));
    rl->leases = calloc(LEASE_SLOTS, sizeof(*rl->leases));
    if (rl->local == NULL || rl->leases == NULL) {
        free(rl->local);
        free(rl->leases);
        free(rl);
        return CM_ENOMEM;
    }
    rl->lease_ms = lease_ms;
    rl->redis = redis;
    snprintf(rl->prefix, sizeof(rl->prefix), "rl:");
    rl->ip = ip;
    rl->user = user;
    rl->tenant = tenant;
    for (int i = 0; i < 3; i++) {
        const gateway_rate *r = i == 0 ? &ip : i == 1 ? &user : &tenant;
        snprintf(rl->rate_arg[i], sizeof(rl->rate_arg[i]), "%.6f", r->per_s);
        snprintf(rl->burst_arg[i], sizeof(rl->burst_arg[i]), "%ld", r->burst);
    }
    pthread_mutex_init(&rl->lock, NULL);
    *out = rl;
    return CM_OK;
}

void gateway_ratelimit_destroy(gateway_ratelimit *rl)
{
    if (rl == NULL)
        return;
    pthread_mutex_destroy(&rl->lock);
    free(rl->leases);
    free(rl->local);
    free(rl);
}

static unsigned long hash(const char *s)
{
    unsigned long h = 5381;
    for (; *s; s++)
        h = h * 33 + (unsigned char)*s;
    return h;
}

/* The same all-or-none take as BUCKET_LUA over this process's buckets. */
static void take_local(gateway_ratelimit *rl, int n, char keys[][RL_KEY_MAX], const gateway_rate *rates,
                       int64_t *res)
{
    struct local_bucket *b[3];
    int64_t now = gateway_now_ms();
    int ok = 1;

    pthread_mutex_lock(&rl->lock);
    for (int i = 0; i < n; i++) {
        b[i] = &rl->local[hash(keys[i]) % LOCAL_SLOTS];
        if (strcmp(b[i]->key, keys[i]) != 0) {
            snprintf(b[i]->key, sizeof(b[i]->key), "%s", keys[i]);
            b[i]->tokens = (double)rates[i].burst;
            b[i]->ts_ms = now;
        }
        gateway_bucket_refill(&b[i]->tokens, &b[i]->ts_ms, rates[i].per_s, rates[i].burst, now);
        if (b[i]->tokens < 1)
            ok = 0;
    }
    res[0] = ok;
    for (int i = 0; i < n; i++) {
        double x = b[i]->tokens - (ok ? 1 : 0);
        b[i]->tokens = x;
        res[1 + 3 * i] = (int64_t)floor(x);
        res[2 + 3 * i] = x < 1 ? (int64_t)ceil((1 - x) * 1000 / rates[i].per_s) : 0;
        res[3 + 3 * i] = (int64_t)ceil(((double)rates[i].burst - x) * 1000 / rates[i].per_s);
    }
    pthread_mutex_unlock(&rl->lock);
}

/* Tokens to ask for per take of a bucket of rate `r`: its rate over lease_ms, at most a
 * quarter of its burst; 1 (no lease) below 2. */
static long lease_size(const gateway_ratelimit *rl, const gateway_rate *r)
{
    double want = r->per_s * (double)rl->lease_ms / 1000.0, cap = (double)r->burst / 4;
    if (want > cap)
        want = cap;
    return want < 2 ? 1 : (long)want;
}

/* Returns the lease slot of `key` when it holds usable tokens taken under rate `r`, else NULL.
 * The caller holds rl->lock. */
static struct lease *lease_find(gateway_ratelimit *rl, const char *key, const gateway_rate *r,
                                int64_t now)
{
    struct lease *l = &rl->leases[hash(key) % LEASE_SLOTS];
    if (l->tokens >= 1 && now < l->expires_ms && l->per_s == r->per_s && l->burst == r->burst &&
        strcmp(l->key, key) == 0)
        return l;
    return NULL;
}

/* Returns the leased tokens that take() spent (spent[i]) when the request is not admitted
 * after all. */
static void lease_give_back(gateway_ratelimit *rl, int n, char keys[][RL_KEY_MAX], const int *spent)
{
    pthread_mutex_lock(&rl->lock);
    for (int i = 0; i < n; i++) {
        struct lease *l = &rl->leases[hash(keys[i]) % LEASE_SLOTS];
        if (spent[i] && strcmp(l->key, keys[i]) == 0)
            l->tokens++;
    }
    pthread_mutex_unlock(&rl->lock);
}

/* Ends the lease requests take() started (refill[i]) that brought no lease. */
static void lease_refill_abort(gateway_ratelimit *rl, int n, char keys[][RL_KEY_MAX], const int *refill)
{
    pthread_mutex_lock(&rl->lock);
    for (int i = 0; i < n; i++) {
        struct lease *l = &rl->leases[hash(keys[i]) % LEASE_SLOTS];
        if (refill[i] && strcmp(l->key, keys[i]) == 0)
            l->refilling = 0;
    }
    pthread_mutex_unlock(&rl->lock);
}

/* Takes from up to three buckets and, in the same round trip, checks the nd (0..2) denylist
 * keys dkeys; fills the verdict from the most restrictive bucket. Buckets with leased tokens
 * are taken here; a round trip is made only for the others, or for the denylist. *deny (NULL
 * when nd is 0): 0 none listed, k the k-th denylist key exists (nothing taken), -1 not checked
 * (Redis unreachable: the buckets were local). */
static void take(gateway_ratelimit *rl, int n, char keys[][RL_KEY_MAX], const gateway_rate *rates,
                 const int *scopes, int nd, char dkeys[][RL_KEY_MAX], int *deny, gateway_rl_verdict *v)
{
    int64_t res[1 + 3 * 3], rr[1 + 4 * 3];
    size_t got = 0;
    int64_t now = gateway_now_ms();
    int bind = 0, spent[3] = {0, 0, 0}, idx[3], m = 0, any_spent = 0, refill[3] = {0, 0, 0};
    int use_redis = rl->redis && now >= atomic_load(&rl->redis_down_until);

    memset(v, 0, sizeof(*v));
    v->allowed = 1;
    if (deny)
        *deny = -1;
    if (n == 0 && nd == 0)
        return;
    res[0] = 1;
    if (use_redis && rl->lease_ms > 0 && n > 0) {
        pthread_mutex_lock(&rl->lock);
        for (int i = 0; i < n; i++) {
            struct lease *l = lease_find(rl, keys[i], &rates[i], now);
            if (l == NULL) {
                /* This thread asks for the next lease unless another one already does. */
                l = &rl->leases[hash(keys[i]) % LEASE_SLOTS];
                if (strcmp(l->key, keys[i]) != 0 || !l->refilling) {
                    snprintf(l->key, sizeof(l->key), "%s", keys[i]);
                    l->tokens = 0;
                    l->refilling = refill[i] = lease_size(rl, &rates[i]) > 1;
                }
                continue;
            }
            l->tokens--;
            spent[i] = any_spent = 1;
            res[1 + 3 * i] = l->left + l->tokens;
            res[2 + 3 * i] = 0;
            res[3 + 3 * i] = l->full_at_ms > now ? l->full_at_ms - now : 0;
        }
        pthread_mutex_unlock(&rl->lock);
    }
    for (int i = 0; i < n; i++)
        if (!spent[i])
            idx[m++] = i;
    if (use_redis && (m > 0 || nd > 0)) {
        static const char *const nd_arg[] = {"0", "1", "2"};
        const gateway_rate *dflt[] = {&rl->ip, &rl->user, &rl->tenant};
        const char *kp[5], *ap[10];
        char own[3][2][32], want[3][24];
        ap[0] = nd_arg[nd];
        for (int j = 0; j < m; j++) {
            int i = idx[j];
            kp[j] = keys[i];
            ap[1 + 3 * j] = rl->rate_arg[scopes[i]];
            ap[2 + 3 * j] = rl->burst_arg[scopes[i]];
            if (rates[i].per_s != dflt[scopes[i]]->per_s || rates[i].burst != dflt[scopes[i]]->burst) {
                snprintf(own[j][0], sizeof(own[j][0]), "%.6f", rates[i].per_s); /* a tenant's own */
                snprintf(own[j][1], sizeof(own[j][1]), "%ld", rates[i].burst);
                ap[1 + 3 * j] = own[j][0];
                ap[2 + 3 * j] = own[j][1];
            }
            snprintf(want[j], sizeof(want[j]), "%ld", refill[i] ? lease_size(rl, &rates[i]) : 1L);
            ap[3 + 3 * j] = want[j];
        }
        for (int i = 0; i < nd; i++)
            kp[m + i] = dkeys[i];
        atomic_fetch_add(&rl->round_trips, 1);
        if (cm_redis_eval_ints(rl->redis, BUCKET_LUA, (size_t)(m + nd), kp, (size_t)(1 + 3 * m),
                               ap, rr, sizeof(rr) / sizeof(rr[0]), &got) == CM_OK &&
            got == 1 && rr[0] < 0 && nd > 0) {
            *deny = (int)-rr[0]; /* listed: no bucket was touched */
            lease_refill_abort(rl, n, keys, refill);
            if (any_spent)
                lease_give_back(rl, n, keys, spent);
            return;
        }
        if (got != (size_t)(1 + 4 * m)) {
            atomic_fetch_add(&rl->redis_errors, 1);
            atomic_store(&rl->redis_down_until, now + REDIS_RETRY_MS);
            cm_warn("gateway: rate limits: Redis unreachable, local buckets for %d ms",
                    REDIS_RETRY_MS);
            use_redis = 0;
        } else if (deny) {
            *deny = 0;
        }
    }
    if (n == 0)
        return;
    if (!use_redis) {
        lease_refill_abort(rl, n, keys, refill);
        if (any_spent)
            lease_give_back(rl, n, keys, spent);
        take_local(rl, n, keys, rates, res);
        atomic_fetch_add(&rl->local_decisions, 1);
        v->local = 1;
    } else if (m > 0) {
        res[0] = rr[0] == 1;
        for (int j = 0; j < m; j++) {
            int i = idx[j];
            res[1 + 3 * i] = rr[1 + 4 * j];
            res[2 + 3 * i] = rr[2 + 4 * j];
            res[3 + 3 * i] = rr[3 + 4 * j];
        }
        if (res[0] != 1) {
            lease_refill_abort(rl, n, keys, refill);
            if (any_spent)
                lease_give_back(rl, n, keys, spent);
        } else if (rl->lease_ms > 0) {
            pthread_mutex_lock(&rl->lock);
            for (int j = 0; j < m; j++) {
                int i = idx[j];
                struct lease *l = &rl->leases[hash(keys[i]) % LEASE_SLOTS];
                if (!refill[i] || strcmp(l->key, keys[i]) != 0)
                    continue; /* a single token, or the slot went to another key */
                l->refilling = 0;
                l->per_s = rates[i].per_s;
                l->burst = rates[i].burst;
                l->tokens = (long)rr[4 + 4 * j] - 1; /* one is this request's */
                l->expires_ms = now + rl->lease_ms;
                l->left = (long)rr[1 + 4 * j];
                l->full_at_ms = now + rr[3 + 4 * j];
                res[1 + 3 * i] += l->tokens; /* this process may still spend them */
            }
            pthread_mutex_unlock(&rl->lock);
        }
    } else {
        atomic_fetch_add(&rl->leased_decisions, 1);
    }
    v->allowed = res[0] == 1;
    /* The binding bucket: a refusing one with the longest wait, else the one with fewest
     * tokens left relative to its burst. */
    for (int i = 1; i < n; i++) {
        int64_t wi = res[2 + 3 * i], wb = res[2 + 3 * bind];
        if (!v->allowed ? wi > wb
                        : res[1 + 3 * i] * rates[bind].burst < res[1 + 3 * bind] * rates[i].burst)
            bind = i;
    }
    v->scope = scope_names[scopes[bind]];
    v->limit = rates[bind].burst;
    v->remaining = res[1 + 3 * bind] < 0 ? 0 : res[1 + 3 * bind];
    v->reset_s = (res[3 + 3 * bind] + 999) / 1000;
    v->retry_after_s = (res[2 + 3 * bind] + 999) / 1000;
    if (!v->allowed && v->retry_after_s < 1)
        v->retry_after_s = 1;
    if (!v->allowed)
        atomic_fetch_add(&rl->rejected[scopes[bind]], 1);
}

void gateway_ratelimit_ip(gateway_ratelimit *rl, const char *ip, gateway_rl_verdict *v)
{
    char keys[1][RL_KEY_MAX];
    int scope = 0;
    if (rl->ip.per_s <= 0) {
        memset(v, 0, sizeof(*v));
        v->allowed = 1;
        return;
    }
    snprintf(keys[0], sizeof(keys[0]), "%sip:%s", rl->prefix, ip);
    take(rl, 1, keys, &rl->ip, &scope, 0, NULL, NULL, v);
}

void gateway_ratelimit_use_tenant_settings(gateway_ratelimit *rl, cm_tenant_settings *tenants)
{
    rl->tenants = tenants;
}

/* The user bucket of `tenant`: the stricter of the platform's RATELIMIT_USER and the tenant's
 * api_rate_per_min (as a rate with two seconds of burst, as the default 20/40 is 1200 a
 * minute). A tenant can lower its users' limit, never raise it past what the platform allows. */
static gateway_rate user_rate(const gateway_ratelimit *rl, const char *tenant)
{
    gateway_rate r = rl->user;
    long per_min = rl->tenants ? cm_tenant_settings_long(rl->tenants, tenant, "api_rate_per_min", 0) : 0;
    double per_s = (double)per_min / 60.0;
    if (per_min > 0 && per_s < r.per_s) {
        long burst = (long)ceil(per_s * 2);
        r.per_s = per_s;
        r.burst = burst < 1 ? 1 : burst < r.burst ? burst : r.burst;
    }
    return r;
}

void gateway_ratelimit_identity(gateway_ratelimit *rl, const char *tenant, const char *user,
                                gateway_rl_verdict *v)
{
    char keys[2][RL_KEY_MAX];
    gateway_rate rates[2];
    int scopes[2], n = 0;

    if (rl->user.per_s > 0 && user && *user) {
        snprintf(keys[n], sizeof(keys[0]), "%suser:%s:%s", rl->prefix, tenant, user);
        rates[n] = user_rate(rl, tenant);
        scopes[n++] = 1;
    }
    if (rl->tenant.per_s > 0 && tenant && *tenant) {
        snprintf(keys[n], sizeof(keys[0]), "%stenant:%s", rl->prefix, tenant);
        rates[n] = rl->tenant;
        scopes[n++] = 2;
    }
    take(rl, n, keys, rates, scopes, 0, NULL, NULL, v);
}

cm_err gateway_ratelimit_set_prefix(gateway_ratelimit *rl, const char *prefix)
{
    int n = snprintf(rl->prefix, sizeof(rl->prefix), "%s", prefix);
    if (n < 0 || (size_t)n >= sizeof(rl->prefix)) {
        snprintf(rl->prefix, sizeof(rl->prefix), "rl:");
        return CM_EINVAL;
    }
    return CM_OK;
}

void gateway_ratelimit_share_denylist(gateway_ratelimit *rl)
{
    rl->shares_denylist = 1;
}

int gateway_ratelimit_request(gateway_ratelimit *rl, const char *ip, const cm_jwt_claims *c,
                              int check_denylist, gateway_rl_verdict *v)
{
    char keys[3][RL_KEY_MAX], dkeys[2][RL_KEY_MAX];
    gateway_rate rates[3];
    int scopes[3], n = 0, nd = 0, deny = -1;

    if (rl->ip.per_s > 0 && ip) {
        snprintf(keys[n], sizeof(keys[0]), "%sip:%s", rl->prefix, ip);
        rates[n] = rl->ip;
        scopes[n++] = 0;
    }
    if (rl->user.per_s > 0 && c->sub[0]) {
        snprintf(keys[n], sizeof(keys[0]), "%suser:%s:%s", rl->prefix, c->tid, c->sub);
        rates[n] = user_rate(rl, c->tid);
        scopes[n++] = 1;
    }
    if (rl->tenant.per_s > 0 && c->tid[0]) {
        snprintf(keys[n], sizeof(keys[0]), "%stenant:%s", rl->prefix, c->tid);
        rates[n] = rl->tenant;
        scopes[n++] = 2;
    }
    if (rl->shares_denylist && check_denylist) {
        /* The order the answer names them in: 1 tenant suspended, 2 session revoked. */
        snprintf(dkeys[nd++], sizeof(dkeys[0]), CM_SESSION_SUSPENDED_PREFIX "%s", c->tid);
        if (c->sid[0])
            snprintf(dkeys[nd++], sizeof(dkeys[0]), CM_SESSION_DENY_PREFIX "%s", c->sid);
    }
    take(rl, n, keys, rates, scopes, nd, dkeys, nd ? &deny : NULL, v);
    return nd ? deny : -1;
}

void gateway_ratelimit_metrics(gateway_ratelimit *rl, void (*emit)(void *ctx, const char *text),
                               void *ectx)
{
    char line[512];
    emit(ectx, "# TYPE gateway_ratelimit_rejected_total counter\n");
    for (int i = 0; i < 3; i++) {
        snprintf(line, sizeof(line), "gateway_ratelimit_rejected_total{scope=\"%s\"} %lu\n",
                 scope_names[i], atomic_load(&rl->rejected[i]));
        emit(ectx, line);
    }
    snprintf(line, sizeof(line),
             "# TYPE gateway_ratelimit_local_decisions_total counter\n"
             "gateway_ratelimit_local_decisions_total %lu\n"
             "# TYPE gateway_ratelimit_redis_errors_total counter\n"
             "gateway_ratelimit_redis_errors_total %lu\n"
             "# TYPE gateway_ratelimit_leased_decisions_total counter\n"
             "gateway_ratelimit_leased_decisions_total %lu\n"
             "# TYPE gateway_ratelimit_redis_round_trips_total counter\n"
             "gateway_ratelimit_redis_round_trips_total %lu\n",
             atomic_load(&rl->local_decisions), atomic_load(&rl->redis_errors),
             atomic_load(&rl->leased_decisions), atomic_load(&rl->round_trips));
    emit(ectx, line);
}
