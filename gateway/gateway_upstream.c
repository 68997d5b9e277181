/* gateway_upstream.c - upstream pools: instances from static addresses or DNS names
 * (re-resolved periodically), load balancing, circuit breakers, active health checks against
 * /health/ready, and the retry budget. */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <curl/curl.h>

#include "common/log.h"
#include "common/uuid.h"
#include "gateway.h"

int64_t gateway_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* --- circuit breaker (plain state machine) -------------------------------------------------- */

const char *gateway_circuit_name(gateway_circuit s)
{
    return s == GW_CIRCUIT_CLOSED ? "closed" : s == GW_CIRCUIT_OPEN ? "open" : "half_open";
}

int gateway_breaker_allow(gateway_breaker *b, const gateway_breaker_conf *c, int64_t now_ms)
{
    if (b->state == GW_CIRCUIT_OPEN) {
        if (now_ms - b->opened_at_ms < c->open_ms)
            return 0;
        b->state = GW_CIRCUIT_HALF_OPEN;
        b->trial_successes = 0;
        b->trial_inflight = 0;
    }
    if (b->state == GW_CIRCUIT_HALF_OPEN) {
        if (b->trial_inflight > 0)
            return 0;
        b->trial_inflight = 1;
    }
    return 1;
}

static void breaker_open(gateway_breaker *b, int64_t now_ms)
{
    b->state = GW_CIRCUIT_OPEN;
    b->opened_at_ms = now_ms;
    b->trial_inflight = 0;
    b->trial_successes = 0;
    b->opened_total++;
}

void gateway_breaker_record(gateway_breaker *b, const gateway_breaker_conf *c, int ok,
                            int64_t now_ms)
{
    switch (b->state) {
    case GW_CIRCUIT_CLOSED:
        b->requests++;
        b->consecutive_failures = ok ? 0 : b->consecutive_failures + 1;
        if (b->consecutive_failures >= c->failures && b->requests >= c->min_requests)
            breaker_open(b, now_ms);
        break;
    case GW_CIRCUIT_HALF_OPEN:
        b->trial_inflight = 0;
        if (!ok) {
            breaker_open(b, now_ms);
        } else if (++b->trial_successes >= c->successes) {
            b->state = GW_CIRCUIT_CLOSED;
            b->consecutive_failures = 0;
            b->requests = 0;
        }
        break;
    case GW_CIRCUIT_OPEN:
        break; /* a request that started before it opened: already counted */
    }
}

int64_t gateway_breaker_retry_in(const gateway_breaker *b, const gateway_breaker_conf *c,
                                 int64_t now_ms)
{
    int64_t left;
    if (b->state != GW_CIRCUIT_OPEN)
        return 0;
    left = b->opened_at_ms + c->open_ms - now_ms;
    return left > 0 ? left : 0;
}

/* --- instances ------------------------------------------------------------------------------ */

/* Splits "scheme://host:port/path" into host and port (host without IPv6 brackets). */
static int url_host_port(const char *url, char *host, size_t hn, int *port)
{
    const char *p = strstr(url, "://"), *end, *colon;
    size_t len;
    p = p ? p + 3 : url;
    end = p + strcspn(p, "/");
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(end - p));
        if (rb == NULL)
            return -1;
        len = (size_t)(rb - p - 1);
        if (len >= hn)
            return -1;
        memcpy(host, p + 1, len);
        host[len] = '\0';
        colon = rb + 1 < end && rb[1] == ':' ? rb + 1 : NULL;
    } else {
        colon = memchr(p, ':', (size_t)(end - p));
        len = (size_t)((colon ? colon : end) - p);
        if (len == 0 || len >= hn)
            return -1;
        memcpy(host, p, len);
        host[len] = '\0';
    }
    *port = strncmp(url, "https", 5) == 0 ? 443 : 80;
    if (colon) {
        char *e;
        long v = strtol(colon + 1, &e, 10);
        if (e != end || v <= 0 || v > 65535)
            return -1;
        *port = (int)v;
    }
    return 0;
}

static int is_address(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* Takes a free or retired slot of the pool for (url, connect_to); keeps an existing one with
 * the same identity, so its breaker and counters survive a DNS refresh. Caller holds the
 * write lock (or runs before serving). */
static void instance_put(gateway_pool *pool, const gateway_target *t, const char *connect_to,
                         const char *id)
{
    gateway_instance *free_slot = NULL;
    for (int i = 0; i < pool->ninst; i++) {
        gateway_instance *in = &pool->inst[i];
        if (strcmp(in->url, t->url) == 0 && strcmp(in->id, id) == 0) {
            in->active = 1;
            in->weight = t->weight;
            return;
        }
        if (!in->active && free_slot == NULL)
            free_slot = in;
    }
    if (free_slot == NULL) {
        if (pool->ninst == GW_MAX_INSTANCES) {
            cm_warn("gateway: pool %s: more than %d instances, %s ignored", pool->name,
                    GW_MAX_INSTANCES, id);
            return;
        }
        free_slot = &pool->inst[pool->ninst++];
        pthread_mutex_init(&free_slot->lock, NULL);
    }
    pthread_mutex_lock(&free_slot->lock);
    memset(&free_slot->breaker, 0, sizeof(free_slot->breaker));
    pthread_mutex_unlock(&free_slot->lock);
    snprintf(free_slot->url, sizeof(free_slot->url), "%s", t->url);
    snprintf(free_slot->connect_to, sizeof(free_slot->connect_to), "%s", connect_to);
    snprintf(free_slot->id, sizeof(free_slot->id), "%s", id);
    free_slot->weight = t->weight;
    free_slot->cur_weight = 0;
    free_slot->health_failures = 0;
    atomic_store(&free_slot->healthy, 1);
    atomic_store(&free_slot->inflight, 0);
    free_slot->active = 1;
}

/* Builds the instance set of a pool from its targets: addresses as they are, DNS names as
 * every address they resolve to now. Caller holds the write lock. */
static void pool_resolve(gateway_pool *pool)
{
    int seen[GW_MAX_INSTANCES] = {0};

    for (int i = 0; i < pool->ninst; i++)
        seen[i] = pool->inst[i].active;
    for (int i = 0; i < pool->ninst; i++)
        pool->inst[i].active = 0;
    for (int t = 0; t < pool->ntargets; t++) {
        const gateway_target *tg = &pool->targets[t];
        /* A host name longer than 63 bytes is refused: ids and CONNECT_TO entries stay short. */
        char host[64], id[96], connect_to[GW_URL_MAX], addr[INET6_ADDRSTRLEN];
        struct addrinfo hints, *res = NULL;
        char port_s[8];
        int port, gai;

        if (url_host_port(tg->url, host, sizeof(host), &port) != 0)
            continue;
        if (is_address(host)) {
            snprintf(id, sizeof(id), "%s:%d", host, port);
            instance_put(pool, tg, "", id);
            continue;
        }
        memset(&hints, 0, sizeof(hints));
        hints.ai_socktype = SOCK_STREAM;
        snprintf(port_s, sizeof(port_s), "%d", port);
        gai = getaddrinfo(host, port_s, &hints, &res);
        if (gai != 0) {
            cm_warn("gateway: pool %s: cannot resolve %s: %s", pool->name, host,
                    gai_strerror(gai));
            /* Keep the previous addresses rather than emptying the pool on a DNS hiccup. */
            for (int i = 0; i < pool->ninst; i++)
                if (seen[i] && strcmp(pool->inst[i].url, tg->url) == 0)
                    pool->inst[i].active = 1;
            continue;
        }
        for (struct addrinfo *a = res; a; a = a->ai_next) {
            const void *ip = a->ai_family == AF_INET
                                 ? (const void *)&((struct sockaddr_in *)(void *)a->ai_addr)->sin_addr
                                 : (const void *)&((struct sockaddr_in6 *)(void *)a->ai_addr)->sin6_addr;
            if (inet_ntop(a->ai_family, ip, addr, sizeof(addr)) == NULL)
                continue;
            if (a->ai_family == AF_INET6) {
                snprintf(id, sizeof(id), "[%s]:%d", addr, port);
            } else {
                snprintf(id, sizeof(id), "%s:%d", addr, port);
            }
            /* The URL keeps the name (Host header, TLS SNI); libcurl connects to the address. */
            snprintf(connect_to, sizeof(connect_to), "%s:%d:%s", host, port, id);
            instance_put(pool, tg, connect_to, id);
        }
        freeaddrinfo(res);
    }
}

cm_err gateway_upstreams_init(gateway_ctx *ctx)
{
    for (int p = 0; p < ctx->npools; p++) {
        gateway_pool *pool = &ctx->pools[p];
        if (pool->ntargets == 0) {
            cm_error("gateway: pool %s has no URL", pool->name);
            return CM_EINVAL;
        }
        pthread_rwlock_init(&pool->lock, NULL);
        pthread_mutex_init(&pool->pick_lock, NULL);
        atomic_store(&pool->budget_milli, 10 * 1000L); /* ten retries to start with */
        pool_resolve(pool);
        for (int i = 0; i < pool->ninst; i++)
            cm_info("gateway: pool %s: instance %s (%s, weight %d)", pool->name, pool->inst[i].id,
                    pool->inst[i].url, pool->inst[i].weight);
    }
    return CM_OK;
}

/* --- picking ---------------------------------------------------------------------------- */

/* 1 when `in` may take a request now: active, healthy, and its breaker admits one (which
 * reserves a half-open trial). */
static int admit(gateway_ctx *ctx, gateway_instance *in, int64_t now, int64_t *retry_in)
{
    int ok;
    if (!in->active)
        return 0;
    pthread_mutex_lock(&in->lock);
    ok = gateway_breaker_allow(&in->breaker, &ctx->breaker, now);
    if (!ok) {
        int64_t r = gateway_breaker_retry_in(&in->breaker, &ctx->breaker, now);
        if (r > 0 && (*retry_in == 0 || r < *retry_in))
            *retry_in = r;
    }
    pthread_mutex_unlock(&in->lock);
    return ok;
}

/* A cheap look without reserving anything: could `in` be admitted? */
static int eligible(gateway_ctx *ctx, gateway_instance *in, int64_t now, int need_healthy)
{
    int ok;
    if (!in->active || (need_healthy && !atomic_load(&in->healthy)))
        return 0;
    pthread_mutex_lock(&in->lock);
    ok = in->breaker.state == GW_CIRCUIT_CLOSED ||
         (in->breaker.state == GW_CIRCUIT_OPEN &&
          now - in->breaker.opened_at_ms >= ctx->breaker.open_ms) ||
         (in->breaker.state == GW_CIRCUIT_HALF_OPEN && in->breaker.trial_inflight == 0);
    pthread_mutex_unlock(&in->lock);
    return ok;
}

static unsigned rand_below(unsigned n)
{
    static _Thread_local unsigned seed;
    if (seed == 0)
        seed = (unsigned)gateway_now_ms() ^ (unsigned)(uintptr_t)&seed;
    return (unsigned)rand_r(&seed) % n;
}

cm_err gateway_pick(gateway_ctx *ctx, gateway_pool *pool, const gateway_instance *exclude,
                    gateway_instance **out, char *url, char *connect_to, int64_t *retry_in_ms)
{
    gateway_instance *cand[GW_MAX_INSTANCES];
    gateway_instance *chosen = NULL;
    int64_t now = gateway_now_ms();
    int n = 0;

    *retry_in_ms = 0;
    pthread_rwlock_rdlock(&pool->lock);
    /* Healthy ones first; when active checks condemn every instance, trust the breakers alone
     * rather than refuse everything (a health endpoint can be wrong; Envoy's panic mode). */
    for (int pass = 0; pass < 2 && n == 0; pass++) {
        for (int i = 0; i < pool->ninst; i++) {
            gateway_instance *in = &pool->inst[i];
            if (in != exclude && eligible(ctx, in, now, pass == 0))
                cand[n++] = in;
        }
        if (n == 0 && exclude != NULL && eligible(ctx, (gateway_instance *)exclude, now, pass == 0))
            cand[n++] = (gateway_instance *)exclude; /* the only one left: retry it */
    }
    /* Try candidates in the balancer's order of preference until one admits the request
     * (another thread may have taken a half-open trial in between). */
    while (n > 0 && chosen == NULL) {
        int k = 0;
        switch (pool->lb) {
        case GW_LB_ROUND_ROBIN:
            k = (int)(atomic_fetch_add(&pool->rr, 1) % (unsigned)n);
            break;
        case GW_LB_RANDOM:
            k = (int)rand_below((unsigned)n);
            break;
        case GW_LB_LEAST_CONN: {
            /* Fewest in flight; ties broken round robin so idle pools still spread. */
            unsigned start = atomic_fetch_add(&pool->rr, 1);
            int best = -1;
            for (int j = 0; j < n; j++) {
                int idx = (int)((start + (unsigned)j) % (unsigned)n);
                if (best < 0 || atomic_load(&cand[idx]->inflight) < atomic_load(&cand[best]->inflight))
                    best = idx;
            }
            k = best;
            break;
        }
        case GW_LB_WEIGHTED: {
            /* Smooth weighted round robin (nginx ngx_http_upstream_round_robin.c): add each
             * weight to its current weight, take the largest, subtract the total from it. */
            int total = 0, best = 0;
            pthread_mutex_lock(&pool->pick_lock);
            for (int j = 0; j < n; j++) {
                cand[j]->cur_weight += cand[j]->weight;
                total += cand[j]->weight;
                if (cand[j]->cur_weight > cand[best]->cur_weight)
                    best = j;
            }
            cand[best]->cur_weight -= total;
            pthread_mutex_unlock(&pool->pick_lock);
            k = best;
            break;
        }
        }
        if (admit(ctx, cand[k], now, retry_in_ms)) {
            chosen = cand[k];
        } else {
            cand[k] = cand[--n];
        }
    }
    if (chosen) {
        atomic_fetch_add(&chosen->inflight, 1);
        memcpy(url, chosen->url, GW_URL_MAX);
        memcpy(connect_to, chosen->connect_to, GW_URL_MAX);
    } else {
        /* The soonest an open circuit of this pool allows a trial, for Retry-After. */
        for (int i = 0; i < pool->ninst; i++) {
            gateway_instance *in = &pool->inst[i];
            int64_t r;
            if (!in->active)
                continue;
            pthread_mutex_lock(&in->lock);
            r = gateway_breaker_retry_in(&in->breaker, &ctx->breaker, now);
            pthread_mutex_unlock(&in->lock);
            if (r > 0 && (*retry_in_ms == 0 || r < *retry_in_ms))
                *retry_in_ms = r;
        }
    }
    pthread_rwlock_unlock(&pool->lock);
    *out = chosen;
    return chosen ? CM_OK : CM_EAGAIN;
}

void gateway_done(gateway_ctx *ctx, gateway_instance *inst, int ok, double seconds)
{
    gateway_circuit before, after;
    int64_t now = gateway_now_ms();

    atomic_fetch_sub(&inst->inflight, 1);
    gateway_stats_observe(&inst->stats, seconds, !ok);
    pthread_mutex_lock(&inst->lock);
    before = inst->breaker.state;
    gateway_breaker_record(&inst->breaker, &ctx->breaker, ok, now);
    after = inst->breaker.state;
    pthread_mutex_unlock(&inst->lock);
    if (before != after)
        cm_warn("gateway: upstream %s circuit %s -> %s", inst->id, gateway_circuit_name(before),
                gateway_circuit_name(after));
}

void gateway_retry_deposit(gateway_ctx *ctx, gateway_pool *pool)
{
    /* Capped, so a long quiet spell cannot save up a retry storm. */
    if (atomic_fetch_add(&pool->budget_milli, ctx->retry_budget_ratio) > GW_RETRY_BUDGET_CAP)
        atomic_store(&pool->budget_milli, GW_RETRY_BUDGET_CAP);
}

int gateway_retry_take(gateway_ctx *ctx, gateway_pool *pool)
{
    long v = atomic_load(&pool->budget_milli);
    (void)ctx;
    while (v >= 1000) {
        if (atomic_compare_exchange_weak(&pool->budget_milli, &v, v - 1000))
            return 1;
    }
    return 0;
}

int gateway_circuit_reset(gateway_pool *pool, const char *id)
{
    int n = 0;
    pthread_rwlock_rdlock(&pool->lock);
    for (int i = 0; i < pool->ninst; i++) {
        gateway_instance *in = &pool->inst[i];
        if (!in->active || (id && strcmp(in->id, id) != 0))
            continue;
        pthread_mutex_lock(&in->lock);
        in->breaker.state = GW_CIRCUIT_CLOSED;
        in->breaker.consecutive_failures = 0;
        in->breaker.requests = 0;
        in->breaker.trial_inflight = 0;
        in->breaker.trial_successes = 0;
        pthread_mutex_unlock(&in->lock);
        n++;
    }
    pthread_rwlock_unlock(&pool->lock);
    return n;
}

/* --- active health checks and DNS refresh ----------------------------------------------- */

static size_t discard(char *d, size_t s, size_t n, void *ud)
{
    (void)d;
    (void)ud;
    return s * n;
}

/* GET <instance>/health/ready: 1 when it answers 200 in time. */
static int probe(CURL *c, const gateway_instance *in, long timeout_ms)
{
    char url[GW_URL_MAX + 32];
    struct curl_slist *ct = NULL;
    long status = 0;
    int ok;

    snprintf(url, sizeof(url), "%s/health/ready", in->url);
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    if (in->connect_to[0]) {
        ct = curl_slist_append(NULL, in->connect_to);
        curl_easy_setopt(c, CURLOPT_CONNECT_TO, ct);
    }
    ok = curl_easy_perform(c) == CURLE_OK &&
         curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK && status == 200;
    curl_slist_free_all(ct);
    return ok;
}

static void check_pool(gateway_ctx *ctx, gateway_pool *pool, CURL *c)
{
    pthread_rwlock_rdlock(&pool->lock);
    for (int i = 0; i < pool->ninst; i++) {
        gateway_instance *in = &pool->inst[i];
        int ok, was;
        if (!in->active)
            continue;
        ok = probe(c, in, ctx->health_interval_ms < 2000 ? ctx->health_interval_ms : 2000);
        was = atomic_load(&in->healthy);
        if (ok) {
            in->health_failures = 0;
            atomic_store(&in->healthy, 1);
        } else if (++in->health_failures >= ctx->health_fail_threshold) {
            atomic_store(&in->healthy, 0);
        }
        if (was != atomic_load(&in->healthy))
            cm_warn("gateway: upstream %s of pool %s is %s (active check)", in->id, pool->name,
                    was ? "unhealthy" : "healthy again");
    }
    pthread_rwlock_unlock(&pool->lock);
}

static int pool_has_names(const gateway_pool *pool)
{
    for (int t = 0; t < pool->ntargets; t++) {
        char host[64];
        int port;
        if (url_host_port(pool->targets[t].url, host, sizeof(host), &port) == 0 &&
            !is_address(host))
            return 1;
    }
    return 0;
}

static void *health_main(void *ud)
{
    gateway_ctx *ctx = ud;
    CURL *c = curl_easy_init();
    int64_t next_dns = gateway_now_ms() + ctx->dns_refresh_ms;

    if (c == NULL)
        return NULL;
    while (!atomic_load(&ctx->stopping)) {
        int64_t until = gateway_now_ms() + ctx->health_interval_ms;
        if (ctx->dns_refresh_ms > 0 && gateway_now_ms() >= next_dns) {
            for (int p = 0; p < ctx->npools; p++) {
                if (!pool_has_names(&ctx->pools[p]))
                    continue;
                pthread_rwlock_wrlock(&ctx->pools[p].lock);
                pool_resolve(&ctx->pools[p]);
                pthread_rwlock_unlock(&ctx->pools[p].lock);
            }
            next_dns = gateway_now_ms() + ctx->dns_refresh_ms;
        }
        for (int p = 0; p < ctx->npools && !atomic_load(&ctx->stopping); p++)
            check_pool(ctx, &ctx->pools[p], c);
        while (!atomic_load(&ctx->stopping) && gateway_now_ms() < until) {
            struct timespec ts = {0, 50 * 1000000};
            nanosleep(&ts, NULL);
        }
    }
    curl_easy_cleanup(c);
    return NULL;
}

cm_err gateway_upstreams_start(gateway_ctx *ctx)
{
    if (ctx->health_interval_ms <= 0)
        return CM_OK;
    if (pthread_create(&ctx->health_thread, NULL, health_main, ctx) != 0)
        return CM_ENOMEM;
    ctx->health_started = 1;
    return CM_OK;
}

void gateway_upstreams_cleanup(gateway_ctx *ctx)
{
    atomic_store(&ctx->stopping, 1);
    if (ctx->health_started) {
        pthread_join(ctx->health_thread, NULL);
        ctx->health_started = 0;
    }
    for (int p = 0; p < ctx->npools; p++) {
        gateway_pool *pool = &ctx->pools[p];
        for (int i = 0; i < pool->ninst; i++)
            pthread_mutex_destroy(&pool->inst[i].lock);
        pthread_rwlock_destroy(&pool->lock);
        pthread_mutex_destroy(&pool->pick_lock);
    }
}
