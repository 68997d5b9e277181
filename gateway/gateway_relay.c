/* gateway_relay.c - the upstream event loops: each a thread driving one libcurl multi handle
 * with epoll (curl_multi_socket_action), carrying admitted requests (gateway_job, suspended
 * with cm_http_suspend by gateway_proxy) through their attempts: instance pick, transfer,
 * breaker bookkeeping, retries after a backoff timer, then the answer and cm_http_resume.
 * No thread blocks on an upstream: a server thread hands the job over and serves the next
 * request, and one loop thread waits on every upstream socket at once (libcurl's own poll
 * calls and the blocking model's thread switches were a third of the gateway's CPU). Easy
 * handles are kept between transfers in a free list (not reset: attempt_start sets every
 * option that differs between requests) and their connections in the multi handle's cache. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "gateway.h"

#define EVENTS_MAX 64
#define MAXCONNECTS 256 /* kept-alive upstream connections per loop */

struct gateway_loop {
    gateway_ctx *ctx;
    pthread_t thread;
    int started;
    int ep, efd;        /* epoll set; eventfd that wakes the loop */
    CURLM *multi;
    int64_t timer_ms;   /* libcurl's timeout as a deadline (gateway_now_ms), -1 none */
    pthread_mutex_t lock; /* guards queue, aborting, stop */
    pthread_cond_t idle;  /* signalled when an abort left no job */
    gateway_job *queue;   /* submitted, not yet taken (a stack: order restored when taken) */
    int aborting, stop;
    gateway_job *jobs;    /* every job this loop holds (its thread only) */
    int njobs;            /* guarded by lock (read by the aborting thread) */
    int active[GW_MAX_POOLS]; /* transfers under way per pool (its thread only) */
    gateway_job *wait_head[GW_MAX_POOLS], *wait_tail[GW_MAX_POOLS]; /* waiting their turn */
    CURL *free_easy[64];  /* idle handles (its thread only) */
    int nfree;
    atomic_ulong transfers, wakeups;
};

/* --- the answer's pieces (libcurl callbacks, on the loop thread) ------------------------- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    gateway_job *j = ud;
    size_t n = size * nmemb;

    if (j->len + n > j->max) {
        j->too_big = 1;
        return 0; /* aborts the transfer */
    }
    if (j->len + n > j->cap) {
        size_t cap = j->cap ? j->cap * 2 : 4096;
        while (cap < j->len + n)
            cap *= 2;
        char *p = realloc(j->body_buf, cap);
        if (p == NULL)
            return 0;
        j->body_buf = p;
        j->cap = cap;
    }
    memcpy(j->body_buf + j->len, data, n);
    j->len += n;
    return n;
}

/* Keeps the upstream response headers worth relaying. */
static size_t on_header(char *line, size_t size, size_t nmemb, void *ud)
{
    gateway_job *j = ud;
    size_t n = size * nmemb, nl;
    static const char *const kept[] = {"Location", "Retry-After", "RateLimit-Limit",
                                       "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy",
                                       "Cache-Control", "WWW-Authenticate", "ETag", "Allow",
                                       /* media content (RFC 9110 ranges) and tus 1.0 */
                                       "Content-Range", "Accept-Ranges", "Content-Disposition",
                                       "Content-Security-Policy", "Upload-Offset",
                                       "Upload-Length", "Upload-Expires", "Upload-Metadata",
                                       "Tus-Resumable", "Tus-Version", "Tus-Extension",
                                       "Tus-Max-Size", "Tus-Checksum-Algorithm", NULL};
    const char *colon, *v, *end = line + n;

    if (n < 3)
        return n;
    if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        j->nkept = 0; /* a new response (after a 1xx): forget the previous one's headers */
        j->has_ratelimit = 0;
        return n;
    }
    colon = memchr(line, ':', n);
    if (colon == NULL)
        return n;
    nl = (size_t)(colon - line);
    for (const char *const *k = kept; *k; k++) {
        if (strlen(*k) != nl || strncasecmp(line, *k, nl) != 0)
            continue;
        if (j->nkept < GW_KEPT_MAX) {
            size_t vl;
            char *copy;
            v = colon + 1;
            while (v < end && *v == ' ')
                v++;
            while (end > v && (end[-1] == '\r' || end[-1] == '\n'))
                end--;
            vl = (size_t)(end - v);
            if ((copy = cm_http_alloc(j->req, vl + 1)) == NULL)
                return 0;
            memcpy(copy, v, vl);
            copy[vl] = '\0';
            j->kept_value[j->nkept] = copy;
            j->kept_name[j->nkept++] = *k;
            if (strncmp(*k, "RateLimit", 9) == 0)
                j->has_ratelimit = 1;
        }
        break;
    }
    return n;
}

/* --- libcurl's socket and timer callbacks ------------------------------------------------- */

static int on_socket(CURL *e, curl_socket_t s, int what, void *ud, void *sockp)
{
    gateway_loop *l = ud;
    struct epoll_event ev = {0};
    (void)e;

    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(l->ep, EPOLL_CTL_DEL, s, NULL); /* may be closed already: ignore errors */
        curl_multi_assign(l->multi, s, NULL);
        return 0;
    }
    ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0u) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u);
    ev.data.fd = s;
    if (sockp == NULL) {
        if (epoll_ctl(l->ep, EPOLL_CTL_ADD, s, &ev) != 0 && errno == EEXIST)
            epoll_ctl(l->ep, EPOLL_CTL_MOD, s, &ev);
        curl_multi_assign(l->multi, s, l); /* any non-NULL: "registered" */
    } else if (epoll_ctl(l->ep, EPOLL_CTL_MOD, s, &ev) != 0 && errno == ENOENT) {
        epoll_ctl(l->ep, EPOLL_CTL_ADD, s, &ev); /* closed and reopened under the same number */
    }
    return 0;
}

static int on_timer(CURLM *m, long timeout_ms, void *ud)
{
    gateway_loop *l = ud;
    (void)m;
    l->timer_ms = timeout_ms < 0 ? -1 : gateway_now_ms() + timeout_ms;
    return 0;
}

/* --- jobs -------------------------------------------------------------------------------- */

static CURL *easy_get(gateway_loop *l)
{
    CURL *c;

    if (l->nfree > 0)
        return l->free_easy[--l->nfree];
    if ((c = curl_easy_init()) == NULL)
        return NULL;
    /* The options that never change; attempt_start sets every other one each time. */
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    /* Upstreams are the platform's own services, never reached through a proxy: "" turns off
     * libcurl's proxy lookup, which otherwise reads http_proxy/no_proxy (getenv) per transfer
     * (perf, issue 6h), and keeps a cluster-wide HTTP_PROXY from rerouting upstream calls. */
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    return c;
}

static void easy_put(gateway_loop *l, CURL *c)
{
    if (l->nfree < (int)(sizeof(l->free_easy) / sizeof(l->free_easy[0])))
        l->free_easy[l->nfree++] = c;
    else
        curl_easy_cleanup(c);
}

static double since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Answers the job (the last attempt's outcome, or `why` when not NULL: a 503 of the gateway's
 * own), resumes its request and forgets it. */
static void finish(gateway_loop *l, gateway_job *j, const char *why)
{
    cm_http_req *req = j->req;
    gateway_route *route = j->route;
    const char *ct = NULL;

    cm_log_set_request_id(cm_http_request_id(req));
    cm_http_log_field(req, "upstream", j->inst ? j->inst->id : "");
    if (cm_http_reply_status(req) != 0) {
        /* answered already (attempt_start's refusals) */
    } else if (why) {
        cm_http_add_header(req, "Retry-After", "1");
        cm_http_problem(req, 503, "unavailable", "Service Unavailable", "%s", why);
    } else if (j->cc != CURLE_OK) {
        if (j->too_big) {
            cm_http_problem(req, 502, "bad-gateway", "Bad Gateway",
                            "the upstream response is larger than %zu bytes", j->max);
        } else if (j->cc == CURLE_OPERATION_TIMEDOUT) {
            cm_http_problem(req, 504, "gateway-timeout", "Gateway Timeout",
                            "the %s service did not answer within %ld ms", route->pool->name,
                            route->timeout_ms ? route->timeout_ms : j->ctx->timeout_ms);
        } else {
            cm_warn("upstream %s: %s", j->inst ? j->inst->id : "?",
                    curl_easy_strerror((CURLcode)j->cc));
            cm_http_add_header(req, "Retry-After", "1");
            cm_http_problem(req, 503, "unavailable", "Service Unavailable",
                            "the %s service is unavailable", route->pool->name);
        }
    } else {
        if (!j->has_ratelimit)
            gateway_ratelimit_headers(req, &j->rl);
        for (int i = 0; i < j->nkept; i++)
            cm_http_add_header(req, j->kept_name[i], j->kept_value[i]);
        if (j->easy == NULL || curl_easy_getinfo(j->easy, CURLINFO_CONTENT_TYPE, &ct) != CURLE_OK)
            ct = NULL;
        cm_http_reply_take(req, (int)j->status, ct, j->body_buf, j->len);
        j->body_buf = NULL; /* the answer owns it */
    }
    gateway_stats_observe(&route->stats, since(&j->start), cm_http_reply_status(req) >= 500);
    if (j->easy) {
        easy_put(l, j->easy);
        j->easy = NULL;
    }
    free(j->body_buf);
    if (j->prev)
        j->prev->next = j->next;
    else
        l->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    cm_log_set_request_id(NULL);
    pthread_mutex_lock(&l->lock);
    l->njobs--;
    if (l->njobs == 0)
        pthread_cond_broadcast(&l->idle);
    pthread_mutex_unlock(&l->lock);
    cm_http_resume(req); /* req (and j, in its memory) belong to the server from here */
}

/* Starts the job's next attempt: picks an instance and adds the transfer to the multi handle.
 * When no instance admits one it answers (the last attempt's failure when there was one). */
static int pool_index(const gateway_job *j)
{
    return (int)(j->route->pool - j->ctx->pools);
}

static void attempt_start(gateway_loop *l, gateway_job *j)
{
    gateway_ctx *ctx = j->ctx;
    gateway_route *route = j->route;
    gateway_instance *prev = j->inst;
    char base[GW_URL_MAX], url[GW_URL_MAX + 4096];
    int64_t retry_in = 0;
    int p = pool_index(j);
    CURL *c;

    j->due_ms = 0;
    if (ctx->max_inflight > 0 && l->active[p] >= ctx->max_inflight) {
        /* The pool has its share under way: wait for a turn (the attempt's timeout starts
         * when it is sent, as when a server thread used to wait for a free one). */
        j->in_multi = 2;
        j->wnext = NULL;
        if (l->wait_tail[p])
            l->wait_tail[p]->wnext = j;
        else
            l->wait_head[p] = j;
        l->wait_tail[p] = j;
        return;
    }
    j->in_multi = 0;
    if (gateway_pick(ctx, route->pool, prev, &j->inst, base, j->connect_to, &retry_in) != CM_OK) {
        char ra[24];
        if (j->tries > 0) {
            j->inst = prev;
            finish(l, j, NULL); /* answer with the last attempt's failure */
            return;
        }
        cm_log_set_request_id(cm_http_request_id(j->req));
        snprintf(ra, sizeof(ra), "%lld", (long long)(retry_in > 0 ? (retry_in + 999) / 1000 : 1));
        cm_http_add_header(j->req, "Retry-After", ra);
        cm_http_problem(j->req, 503, "upstream-unavailable", "Service Unavailable",
                        "no instance of the %s service can take requests now (circuit open "
                        "or failing health checks)",
                        route->pool->name);
        j->inst = NULL;
        finish(l, j, NULL);
        return;
    }
    if ((size_t)snprintf(url, sizeof(url), "%s%s", base, j->tail) >= sizeof(url)) {
        gateway_done(ctx, j->inst, 1, 0);
        cm_http_problem(j->req, 414, "uri-too-long", "URI Too Long", "the request URI is too long");
        finish(l, j, NULL);
        return;
    }
    if (j->easy == NULL && (j->easy = easy_get(l)) == NULL) {
        gateway_done(ctx, j->inst, 1, 0);
        cm_http_reply_error(j->req, CM_ENOMEM, NULL);
        finish(l, j, NULL);
        return;
    }
    c = j->easy;
    j->tries++;
    j->len = 0;
    j->too_big = 0;
    j->nkept = 0;
    j->has_ratelimit = 0;
    j->status = 0;
    j->cc = CURLE_OK;
    j->ct.data = j->connect_to;
    j->ct.next = NULL;
    /* Every option a previous transfer of this handle may have set differently. */
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, j->headers);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, route->timeout_ms ? route->timeout_ms : ctx->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, ctx->connect_timeout_ms);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, j);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, j);
    curl_easy_setopt(c, CURLOPT_PRIVATE, j);
    curl_easy_setopt(c, CURLOPT_CONNECT_TO, j->connect_to[0] ? &j->ct : NULL);
    curl_easy_setopt(c, CURLOPT_NOBODY, 0L);
    if (strcmp(j->method, "GET") == 0 || strcmp(j->method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, NULL);
        if (strcmp(j->method, "HEAD") == 0)
            curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, j->method);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, j->body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)j->body_len);
    }
    clock_gettime(CLOCK_MONOTONIC, &j->t0);
    atomic_fetch_add(&l->transfers, 1);
    if (curl_multi_add_handle(l->multi, c) != CURLM_OK) {
        gateway_done(ctx, j->inst, 1, 0);
        j->cc = CURLE_FAILED_INIT;
        finish(l, j, NULL);
        return;
    }
    j->in_multi = 1;
    l->active[p]++;
}

/* Detaches a job's transfer from the multi handle (its pool's turn is free again). */
static void transfer_remove(gateway_loop *l, gateway_job *j)
{
    curl_multi_remove_handle(l->multi, j->easy);
    j->in_multi = 0;
    l->active[pool_index(j)]--;
}

/* Starts the jobs waiting for their pool's turn, in order, while turns are free. */
static void start_waiting(gateway_loop *l)
{
    for (int p = 0; p < GW_MAX_POOLS; p++) {
        while (l->wait_head[p] && (l->ctx->max_inflight <= 0 || l->active[p] < l->ctx->max_inflight)) {
            gateway_job *j = l->wait_head[p];
            l->wait_head[p] = j->wnext;
            if (l->wait_head[p] == NULL)
                l->wait_tail[p] = NULL;
            attempt_start(l, j);
        }
    }
}

/* Statuses that count against an instance's breaker: it could not serve, not the client. */
static int upstream_failed(CURLcode cc, long status)
{
    return cc != CURLE_OK || status == 502 || status == 503 || status == 504;
}

/* A transfer ended with `cc`: the breaker learns it, then the job is retried after a backoff
 * (base * 2^attempt, full jitter: AWS architecture blog) when that is safe and the pool's
 * budget allows, else answered. */
static void attempt_done(gateway_loop *l, gateway_job *j, CURLcode cc)
{
    gateway_ctx *ctx = j->ctx;
    int failed;

    transfer_remove(l, j);
    j->cc = cc;
    if (cc == CURLE_OK)
        curl_easy_getinfo(j->easy, CURLINFO_RESPONSE_CODE, &j->status);
    failed = upstream_failed(cc, j->status) && !j->too_big;
    gateway_done(ctx, j->inst, !failed, since(&j->t0));
    /* Safe to try again elsewhere: an idempotent request, or one that never left (the
     * connection was refused, so the upstream saw nothing). */
    if (!failed || j->tries > ctx->retry_max || !(j->retryable || cc == CURLE_COULDNT_CONNECT) ||
        !gateway_retry_take(ctx, j->route->pool)) {
        finish(l, j, NULL);
        return;
    }
    atomic_fetch_add(&j->inst->stats.retries, 1);
    atomic_fetch_add(&j->route->stats.retries, 1);
    cm_log_set_request_id(cm_http_request_id(j->req));
    cm_info("gateway: retrying %s %s after %s from %s", j->method, cm_http_path(j->req),
            cc != CURLE_OK ? curl_easy_strerror(cc) : "a 5xx", j->inst->id);
    cm_log_set_request_id(NULL);
    {
        long cap = ctx->retry_backoff_ms << (j->tries - 1 < 6 ? j->tries - 1 : 6);
        long ms = cap > 0 ? (long)((unsigned long)gateway_now_ms() * 2654435761u %
                                   (unsigned long)cap)
                          : 0;
        j->due_ms = gateway_now_ms() + ms;
    }
}

/* Takes the submitted jobs (in submission order) into the loop's list and starts them. */
static void take_queue(gateway_loop *l)
{
    gateway_job *q, *rev = NULL;
    int aborting;

    pthread_mutex_lock(&l->lock);
    q = l->queue;
    l->queue = NULL;
    aborting = l->aborting;
    pthread_mutex_unlock(&l->lock);
    while (q) { /* the queue is a stack: reverse it */
        gateway_job *n = q->next;
        q->next = rev;
        rev = q;
        q = n;
    }
    while (rev) {
        gateway_job *j = rev;
        rev = rev->next;
        j->prev = NULL;
        j->next = l->jobs;
        if (l->jobs)
            l->jobs->prev = j;
        l->jobs = j;
        if (aborting)
            finish(l, j, "the gateway is shutting down; retry");
        else
            attempt_start(l, j);
    }
}

/* Answers every job (the drain is over): transfers under way are dropped. */
static void abort_all(gateway_loop *l)
{
    for (int p = 0; p < GW_MAX_POOLS; p++)
        l->wait_head[p] = l->wait_tail[p] = NULL;
    while (l->jobs) {
        gateway_job *j = l->jobs;
        if (j->in_multi == 1) {
            transfer_remove(l, j);
            gateway_done(j->ctx, j->inst, 1, since(&j->t0)); /* not the instance's fault */
        }
        finish(l, j, "the gateway is shutting down; retry");
    }
}

static void *loop_main(void *arg)
{
    gateway_loop *l = arg;
    struct epoll_event evs[EVENTS_MAX];
    int running = 0;

    for (;;) {
        int64_t now = gateway_now_ms(), deadline = l->timer_ms;
        int timeout, n, stop, aborting;
        CURLMsg *msg;
        int left;

        for (gateway_job *j = l->jobs; j; j = j->next)
            if (j->due_ms && (deadline < 0 || j->due_ms < deadline))
                deadline = j->due_ms;
        timeout = deadline < 0 ? -1 : deadline <= now ? 0 : (int)(deadline - now);
        n = epoll_wait(l->ep, evs, EVENTS_MAX, timeout);
        atomic_fetch_add(&l->wakeups, 1);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.fd == l->efd) {
                uint64_t v;
                if (read(l->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
                    cm_warn("gateway: loop eventfd: %s", strerror(errno));
                continue;
            }
            int flags = ((evs[i].events & EPOLLIN) ? CURL_CSELECT_IN : 0) |
                        ((evs[i].events & EPOLLOUT) ? CURL_CSELECT_OUT : 0) |
                        ((evs[i].events & (EPOLLERR | EPOLLHUP)) ? CURL_CSELECT_ERR : 0);
            curl_multi_socket_action(l->multi, evs[i].data.fd, flags, &running);
        }
        pthread_mutex_lock(&l->lock);
        stop = l->stop;
        aborting = l->aborting;
        pthread_mutex_unlock(&l->lock);
        take_queue(l);
        if (aborting)
            abort_all(l);
        now = gateway_now_ms();
        for (gateway_job *j = l->jobs, *next; j; j = next) {
            next = j->next; /* attempt_start may finish (unlink) j */
            if (j->due_ms && j->due_ms <= now)
                attempt_start(l, j);
        }
        start_waiting(l);
        if (l->timer_ms >= 0 && l->timer_ms <= gateway_now_ms()) {
            l->timer_ms = -1;
            curl_multi_socket_action(l->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }
        while ((msg = curl_multi_info_read(l->multi, &left)) != NULL) {
            char *priv = NULL;
            if (msg->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
            if (priv)
                attempt_done(l, (gateway_job *)(void *)priv, msg->data.result);
        }
        start_waiting(l); /* turns freed by the transfers that ended */
        if (stop && l->jobs == NULL)
            break;
    }
    return NULL;
}

static void loop_free(gateway_loop *l)
{
    if (l == NULL)
        return;
    while (l->nfree > 0)
        curl_easy_cleanup(l->free_easy[--l->nfree]);
    if (l->multi)
        curl_multi_cleanup(l->multi);
    if (l->ep >= 0)
        close(l->ep);
    if (l->efd >= 0)
        close(l->efd);
    pthread_mutex_destroy(&l->lock);
    pthread_cond_destroy(&l->idle);
    free(l);
}

static cm_err loop_create(gateway_ctx *ctx, gateway_loop **out)
{
    gateway_loop *l = calloc(1, sizeof(*l));
    struct epoll_event ev = {.events = EPOLLIN};

    if (l == NULL)
        return CM_ENOMEM;
    l->ctx = ctx;
    l->timer_ms = -1;
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->idle, NULL);
    l->ep = epoll_create1(EPOLL_CLOEXEC);
    l->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    l->multi = curl_multi_init();
    ev.data.fd = l->efd;
    if (l->ep < 0 || l->efd < 0 || l->multi == NULL ||
        epoll_ctl(l->ep, EPOLL_CTL_ADD, l->efd, &ev) != 0) {
        cm_error("gateway: upstream loop: %s", l->multi ? strerror(errno) : "curl_multi_init");
        loop_free(l);
        return CM_EIO;
    }
    curl_multi_setopt(l->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(l->multi, CURLMOPT_SOCKETDATA, l);
    curl_multi_setopt(l->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(l->multi, CURLMOPT_TIMERDATA, l);
    curl_multi_setopt(l->multi, CURLMOPT_MAXCONNECTS, (long)MAXCONNECTS);
    if (pthread_create(&l->thread, NULL, loop_main, l) != 0) {
        loop_free(l);
        return CM_EIO;
    }
    l->started = 1;
    *out = l;
    return CM_OK;
}

cm_err gateway_loops_start(gateway_ctx *ctx, int n)
{
    if (n < 1 || n > GW_MAX_LOOPS)
        return CM_EINVAL;
    for (int i = 0; i < n; i++) {
        cm_err rc = loop_create(ctx, &ctx->loops[i]);
        if (rc != CM_OK)
            return rc;
        ctx->nloops = i + 1;
    }
    return CM_OK;
}

static void wake(gateway_loop *l)
{
    uint64_t one = 1;
    if (write(l->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        cm_warn("gateway: waking an upstream loop: %s", strerror(errno));
}

void gateway_loop_submit(gateway_ctx *ctx, gateway_job *j)
{
    unsigned i = ctx->nloops > 1 ? atomic_fetch_add(&ctx->next_loop, 1) % (unsigned)ctx->nloops : 0;
    gateway_loop *l = ctx->loops[i];
    int was_empty;

    pthread_mutex_lock(&l->lock);
    was_empty = l->queue == NULL;
    j->next = l->queue;
    l->queue = j;
    l->njobs++;
    pthread_mutex_unlock(&l->lock);
    if (was_empty)
        wake(l); /* otherwise the loop has a wake-up pending and takes the whole queue */
}

void gateway_loops_abort(void *ud)
{
    gateway_ctx *ctx = ud;

    for (int i = 0; i < ctx->nloops; i++) {
        gateway_loop *l = ctx->loops[i];
        pthread_mutex_lock(&l->lock);
        l->aborting = 1;
        pthread_mutex_unlock(&l->lock);
        wake(l);
    }
    for (int i = 0; i < ctx->nloops; i++) {
        gateway_loop *l = ctx->loops[i];
        pthread_mutex_lock(&l->lock);
        while (l->njobs > 0)
            pthread_cond_wait(&l->idle, &l->lock);
        pthread_mutex_unlock(&l->lock);
    }
}

void gateway_loops_stop(gateway_ctx *ctx)
{
    for (int i = 0; i < ctx->nloops; i++) {
        gateway_loop *l = ctx->loops[i];
        pthread_mutex_lock(&l->lock);
        l->stop = 1;
        l->aborting = 1; /* nothing may be left suspended */
        pthread_mutex_unlock(&l->lock);
        wake(l);
        pthread_join(l->thread, NULL);
        loop_free(l);
        ctx->loops[i] = NULL;
    }
    ctx->nloops = 0;
}

void gateway_loops_metrics(gateway_ctx *ctx, void (*emit)(void *ctx, const char *text), void *ectx)
{
    char line[160];
    unsigned long t = 0, w = 0;
    int held = 0;

    for (int i = 0; i < ctx->nloops; i++) {
        gateway_loop *l = ctx->loops[i];
        t += atomic_load(&l->transfers);
        w += atomic_load(&l->wakeups);
        pthread_mutex_lock(&l->lock);
        held += l->njobs;
        pthread_mutex_unlock(&l->lock);
    }
    emit(ectx, "# TYPE gateway_upstream_transfers_total counter\n");
    snprintf(line, sizeof(line), "gateway_upstream_transfers_total %lu\n", t);
    emit(ectx, line);
    emit(ectx, "# TYPE gateway_upstream_loop_wakeups_total counter\n");
    snprintf(line, sizeof(line), "gateway_upstream_loop_wakeups_total %lu\n", w);
    emit(ectx, line);
    emit(ectx, "# TYPE gateway_upstream_loop_jobs gauge\n");
    snprintf(line, sizeof(line), "gateway_upstream_loop_jobs %d\n", held);
    emit(ectx, line);
}
