/* gateway_denylist.c - this process's copy of the session denylist (common/session.h), so
 * that a request needs no Redis round trip to learn that its session is not revoked and its
 * tenant not suspended.
 *
 * A thread subscribes to CM_SESSION_CHANNEL, then loads every denylist key (SCAN, with PTTL for
 * the expiring ones) and applies the messages that arrived meanwhile; from then on it applies
 * each message as it comes. The copy is exact at the moment a request is checked, not just
 * eventually: the writers (cm_session_deny, cm_session_tenant_suspend) acknowledge a change
 * only after Redis has written its message to every subscriber (session.h), so any request
 * that follows a change's acknowledgement finds the message in this process's socket, if not
 * applied yet; the check reads and applies what the socket holds before it looks (a FIONREAD,
 * one system call, when nothing is pending). While the subscription is down or the copy is
 * being loaded, the check answers "unknown" and the caller asks Redis, as it did before. */
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>

#include <hiredis.h>

#include "common/log.h"
#include "common/session.h"
#include "gateway.h"

#define DL_BUCKETS 65536
#define DL_KEY_MAX (sizeof(CM_SESSION_SUSPENDED_PREFIX) + CM_JWT_ID_MAX)
#define DL_SWEEP_MS 10000

struct dl_entry {
    struct dl_entry *next;
    int64_t expires_ms; /* 0: no expiry (a suspended tenant) */
    char key[];
};

struct gateway_denylist {
    char host[256];
    int port;
    pthread_mutex_t lock; /* guards the table, `sub` and `valid` */
    struct dl_entry **tab;
    size_t count;
    redisContext *sub; /* the subscribed connection; NULL while down */
    atomic_int sub_fd; /* its socket (-1: none) and how many times it was replaced, so a check */
    atomic_uint sub_gen; /* can look at the socket before it takes the lock */
    int valid;         /* subscribed and loaded: the copy is complete */
    atomic_int valid_hint; /* `valid`, read without the lock to skip it while down */
    atomic_int stopping;
    pthread_t thread;
    int started;
    atomic_ulong messages, loads, unknown, refused;
};

static unsigned long dl_hash(const char *s)
{
    unsigned long h = 1469598103934665603UL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211UL;
    return h;
}

/* Table operations: the caller holds the lock. */
static void dl_put(gateway_denylist *dl, const char *key, int64_t expires_ms)
{
    struct dl_entry **head = &dl->tab[dl_hash(key) % DL_BUCKETS], *e;
    size_t len = strlen(key);

    for (e = *head; e; e = e->next)
        if (strcmp(e->key, key) == 0) {
            e->expires_ms = expires_ms;
            return;
        }
    e = malloc(sizeof(*e) + len + 1);
    if (e == NULL) {
        /* Without the entry the copy would let the session through: stop trusting it. */
        dl->valid = 0;
        atomic_store(&dl->valid_hint, 0);
        return;
    }
    memcpy(e->key, key, len + 1);
    e->expires_ms = expires_ms;
    e->next = *head;
    *head = e;
    dl->count++;
}

static void dl_del(gateway_denylist *dl, const char *key)
{
    for (struct dl_entry **p = &dl->tab[dl_hash(key) % DL_BUCKETS]; *p; p = &(*p)->next)
        if (strcmp((*p)->key, key) == 0) {
            struct dl_entry *e = *p;
            *p = e->next;
            free(e);
            dl->count--;
            return;
        }
}

static int dl_has(gateway_denylist *dl, const char *key, int64_t now)
{
    for (struct dl_entry *e = dl->tab[dl_hash(key) % DL_BUCKETS]; e; e = e->next)
        if (strcmp(e->key, key) == 0)
            return e->expires_ms == 0 || now < e->expires_ms;
    return 0;
}

/* Drops expired entries (all of them when `all`). */
static void dl_sweep(gateway_denylist *dl, int64_t now, int all)
{
    for (size_t i = 0; i < DL_BUCKETS; i++)
        for (struct dl_entry **p = &dl->tab[i]; *p;) {
            struct dl_entry *e = *p;
            if (all || (e->expires_ms != 0 && now >= e->expires_ms)) {
                *p = e->next;
                free(e);
                dl->count--;
            } else {
                p = &e->next;
            }
        }
}

/* Applies one pub/sub reply: "+<key> <ttl_ms>" or "-<key>" on CM_SESSION_CHANNEL. */
static void dl_apply(gateway_denylist *dl, const redisReply *rep)
{
    char key[DL_KEY_MAX + 1];
    const char *m, *sp;
    size_t len;

    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 ||
        rep->element[0]->type != REDIS_REPLY_STRING || strcmp(rep->element[0]->str, "message") != 0 ||
        rep->element[2]->type != REDIS_REPLY_STRING)
        return; /* a subscription confirmation */
    m = rep->element[2]->str;
    len = rep->element[2]->len;
    atomic_fetch_add(&dl->messages, 1);
    if (len < 2 || (m[0] != '+' && m[0] != '-'))
        return;
    sp = memchr(m, ' ', len);
    if ((size_t)((sp ? sp : m + len) - (m + 1)) > DL_KEY_MAX)
        return;
    memcpy(key, m + 1, (size_t)((sp ? sp : m + len) - (m + 1)));
    key[(sp ? sp : m + len) - (m + 1)] = '\0';
    if (m[0] == '-') {
        dl_del(dl, key);
    } else {
        long long ttl = sp ? strtoll(sp + 1, NULL, 10) : 0;
        dl_put(dl, key, ttl > 0 ? gateway_now_ms() + ttl : 0);
    }
}

/* Reads what the subscription socket holds and applies every complete message. With
 * `eof_if_empty` (the thread, after poll said readable) an empty socket means it was closed.
 * Returns -1 when the connection is broken. The caller holds the lock. */
static int dl_drain(gateway_denylist *dl, int eof_if_empty)
{
    int avail = 0;
    void *rep = NULL;

    if (ioctl(dl->sub->fd, FIONREAD, &avail) != 0)
        return -1;
    if (avail == 0 && eof_if_empty)
        return -1;
    while (avail > 0) { /* one read takes at most hiredis' 16 KiB */
        if (redisBufferRead(dl->sub) != REDIS_OK || ioctl(dl->sub->fd, FIONREAD, &avail) != 0)
            return -1;
    }
    for (;;) {
        if (redisGetReplyFromReader(dl->sub, &rep) != REDIS_OK)
            return -1;
        if (rep == NULL)
            return 0;
        dl_apply(dl, rep);
        freeReplyObject(rep);
    }
}

/* Loads every key matching `pattern` into the table (lock held: the copy is not valid yet,
 * so requests do not wait for it). Returns -1 on a Redis failure. */
static int dl_load(gateway_denylist *dl, redisContext *c, const char *pattern)
{
    char cursor[32] = "0";

    do {
        redisReply *rep = redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        redisReply *keys;
        int64_t now = gateway_now_ms();

        if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
            rep->element[0]->type != REDIS_REPLY_STRING ||
            rep->element[1]->type != REDIS_REPLY_ARRAY) {
            if (rep)
                freeReplyObject(rep);
            return -1;
        }
        snprintf(cursor, sizeof(cursor), "%s", rep->element[0]->str);
        keys = rep->element[1];
        for (size_t i = 0; i < keys->elements; i++)
            if (redisAppendCommand(c, "PTTL %b", keys->element[i]->str, keys->element[i]->len) != REDIS_OK) {
                freeReplyObject(rep);
                return -1;
            }
        for (size_t i = 0; i < keys->elements; i++) {
            redisReply *t = NULL;
            if (redisGetReply(c, (void **)&t) != REDIS_OK || t == NULL ||
                t->type != REDIS_REPLY_INTEGER) {
                if (t)
                    freeReplyObject(t);
                freeReplyObject(rep);
                return -1;
            }
            /* -2: gone since the SCAN; -1: no expiry. */
            if (t->integer != -2 && keys->element[i]->len <= DL_KEY_MAX)
                dl_put(dl, keys->element[i]->str, t->integer > 0 ? now + t->integer : 0);
            freeReplyObject(t);
        }
        freeReplyObject(rep);
    } while (strcmp(cursor, "0") != 0);
    return 0;
}

/* Subscribes, then loads the whole denylist; on success the copy becomes valid. */
static void dl_connect(gateway_denylist *dl)
{
    struct timeval tv = {1, 0};
    redisContext *sub = redisConnectWithTimeout(dl->host, dl->port, tv), *c = NULL;
    redisReply *rep = NULL;
    int ok = 0;

    if (sub == NULL || sub->err || redisSetTimeout(sub, tv) != REDIS_OK)
        goto out;
    rep = redisCommand(sub, "SUBSCRIBE %s", CM_SESSION_CHANNEL);
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY)
        goto out;
    c = redisConnectWithTimeout(dl->host, dl->port, tv);
    if (c == NULL || c->err || redisSetTimeout(c, tv) != REDIS_OK)
        goto out;
    pthread_mutex_lock(&dl->lock);
    dl_sweep(dl, 0, 1);
    dl->sub = sub;
    ok = dl_load(dl, c, CM_SESSION_DENY_PREFIX "*") == 0 &&
         dl_load(dl, c, CM_SESSION_SUSPENDED_PREFIX "*") == 0 && dl_drain(dl, 0) == 0;
    if (ok) {
        atomic_store(&dl->sub_fd, sub->fd);
        atomic_fetch_add(&dl->sub_gen, 1);
        dl->valid = 1;
        atomic_store(&dl->valid_hint, 1);
        atomic_fetch_add(&dl->loads, 1);
    } else {
        dl->sub = NULL;
    }
    pthread_mutex_unlock(&dl->lock);
    if (ok)
        cm_info("gateway: denylist copy loaded (%zu keys), following %s", dl->count,
                CM_SESSION_CHANNEL);
out:
    if (rep)
        freeReplyObject(rep);
    if (c)
        redisFree(c);
    if (!ok && sub) {
        cm_warn("gateway: denylist copy: cannot follow Redis %s:%d (%s); asking Redis per request",
                dl->host, dl->port, sub->err ? sub->errstr : "load failed");
        redisFree(sub);
    }
}

static void *dl_thread(void *arg)
{
    gateway_denylist *dl = arg;
    int64_t last_sweep = gateway_now_ms();

    while (!atomic_load(&dl->stopping)) {
        struct pollfd pfd;
        int rc;

        if (dl->sub != NULL && !atomic_load(&dl->valid_hint)) {
            /* A check found the connection broken, or an entry could not be stored: start
             * again from a fresh subscription and load. */
            pthread_mutex_lock(&dl->lock);
            atomic_store(&dl->sub_fd, -1);
            atomic_fetch_add(&dl->sub_gen, 1);
            redisFree(dl->sub);
            dl->sub = NULL;
            pthread_mutex_unlock(&dl->lock);
        }
        if (dl->sub == NULL) { /* only this thread sets it */
            dl_connect(dl);
            if (dl->sub == NULL) {
                struct timespec ts = {0, 500 * 1000000L};
                nanosleep(&ts, NULL);
                continue;
            }
        }
        pfd.fd = dl->sub->fd;
        pfd.events = POLLIN;
        rc = poll(&pfd, 1, 200);
        if (rc > 0) {
            pthread_mutex_lock(&dl->lock);
            if (dl_drain(dl, 1) != 0) {
                cm_warn("gateway: denylist copy: subscription lost; asking Redis per request");
                dl->valid = 0;
                atomic_store(&dl->valid_hint, 0);
                atomic_store(&dl->sub_fd, -1);
                atomic_fetch_add(&dl->sub_gen, 1);
                redisFree(dl->sub);
                dl->sub = NULL;
            }
            pthread_mutex_unlock(&dl->lock);
        }
        if (gateway_now_ms() - last_sweep >= DL_SWEEP_MS) {
            last_sweep = gateway_now_ms();
            pthread_mutex_lock(&dl->lock);
            dl_sweep(dl, last_sweep, 0);
            pthread_mutex_unlock(&dl->lock);
        }
    }
    return NULL;
}

cm_err gateway_denylist_create(const char *host, int port, gateway_denylist **out)
{
    gateway_denylist *dl = calloc(1, sizeof(*dl));

    if (dl == NULL || (dl->tab = calloc(DL_BUCKETS, sizeof(*dl->tab))) == NULL) {
        free(dl);
        return CM_ENOMEM;
    }
    snprintf(dl->host, sizeof(dl->host), "%s", host);
    atomic_store(&dl->sub_fd, -1);
    dl->port = port;
    pthread_mutex_init(&dl->lock, NULL);
    *out = dl;
    return CM_OK;
}

cm_err gateway_denylist_start(gateway_denylist *dl)
{
    if (pthread_create(&dl->thread, NULL, dl_thread, dl) != 0)
        return CM_ENOMEM;
    dl->started = 1;
    return CM_OK;
}

void gateway_denylist_destroy(gateway_denylist *dl)
{
    if (dl == NULL)
        return;
    atomic_store(&dl->stopping, 1);
    if (dl->started)
        pthread_join(dl->thread, NULL);
    if (dl->sub)
        redisFree(dl->sub);
    dl_sweep(dl, 0, 1);
    free(dl->tab);
    pthread_mutex_destroy(&dl->lock);
    free(dl);
}

int gateway_denylist_check(gateway_denylist *dl, const cm_jwt_claims *c)
{
    char key[DL_KEY_MAX + 1];
    int64_t now;
    int verdict = 0, avail = 1, fd;
    unsigned gen;

    if (dl == NULL || !atomic_load(&dl->valid_hint)) {
        if (dl)
            atomic_fetch_add(&dl->unknown, 1);
        return -1;
    }
    now = gateway_now_ms();
    /* A change acknowledged before this request may still sit in the socket. Looked at before
     * the lock is taken (no system call under it); should the connection be replaced
     * meanwhile, the generation tells, and the socket is drained under the lock. */
    gen = atomic_load(&dl->sub_gen);
    fd = atomic_load(&dl->sub_fd);
    if (fd >= 0 && ioctl(fd, FIONREAD, &avail) != 0)
        avail = 1;
    pthread_mutex_lock(&dl->lock);
    if (dl->valid && dl->sub && (avail > 0 || gen != atomic_load(&dl->sub_gen) ||
                                 dl->sub->reader->len > dl->sub->reader->pos) &&
        dl_drain(dl, 0) != 0) {
        dl->valid = 0; /* the thread notices the broken connection and reconnects */
        atomic_store(&dl->valid_hint, 0);
    }
    if (!dl->valid) {
        verdict = -1;
    } else {
        snprintf(key, sizeof(key), "%s%s", CM_SESSION_SUSPENDED_PREFIX, c->tid);
        if (dl_has(dl, key, now)) {
            verdict = 1;
        } else if (c->sid[0]) {
            snprintf(key, sizeof(key), "%s%s", CM_SESSION_DENY_PREFIX, c->sid);
            verdict = dl_has(dl, key, now) ? 2 : 0;
        }
    }
    pthread_mutex_unlock(&dl->lock);
    if (verdict < 0)
        atomic_fetch_add(&dl->unknown, 1);
    else if (verdict > 0)
        atomic_fetch_add(&dl->refused, 1);
    return verdict;
}

void gateway_denylist_metrics(gateway_denylist *dl, void (*emit)(void *ctx, const char *text),
                              void *ectx)
{
    char line[768];
    size_t count;
    int valid;

    pthread_mutex_lock(&dl->lock);
    count = dl->count;
    valid = dl->valid;
    pthread_mutex_unlock(&dl->lock);
    snprintf(line, sizeof(line),
             "# TYPE gateway_denylist_copy_valid gauge\n"
             "gateway_denylist_copy_valid %d\n"
             "# TYPE gateway_denylist_copy_entries gauge\n"
             "gateway_denylist_copy_entries %zu\n"
             "# TYPE gateway_denylist_copy_loads_total counter\n"
             "gateway_denylist_copy_loads_total %lu\n"
             "# TYPE gateway_denylist_copy_messages_total counter\n"
             "gateway_denylist_copy_messages_total %lu\n"
             "# TYPE gateway_denylist_copy_refused_total counter\n"
             "gateway_denylist_copy_refused_total %lu\n"
             "# TYPE gateway_denylist_copy_unknown_total counter\n"
             "gateway_denylist_copy_unknown_total %lu\n",
             valid, count, atomic_load(&dl->loads), atomic_load(&dl->messages),
             atomic_load(&dl->refused), atomic_load(&dl->unknown));
    emit(ectx, line);
}
