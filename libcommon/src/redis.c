/* redis.c - hiredis connections in a small mutex-guarded pool. */
#include "common/redis.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/time.h>
#include <time.h>

#include <hiredis.h>

#include "common/log.h"

struct conn {
    redisContext *ctx;
    int busy;
};

struct cm_redis {
    char *host;
    int port;
    int timeout_ms;
    int n;
    struct conn *conns;
    pthread_mutex_t lock;
    pthread_cond_t freed;
    /* SHA1s of the scripts cm_redis_eval_ints ran (SCRIPT LOAD), by the script's address:
     * EVALSHA then sends 40 bytes instead of the script. Guarded by `lock`. */
    struct script_sha {
        const char *script;
        char sha[41];
    } shas[16];
    int nshas;
};

/* INCR, and start the window's expiry on its first hit; returns {count, pttl}. */
static const char WINDOW_LUA[] =
    "local c = redis.call('INCR', KEYS[1]) "
    "if c == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end "
    "local t = redis.call('PTTL', KEYS[1]) "
    "if t < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) t = tonumber(ARGV[1]) end "
    "return {c, t}";

/* Deletes the key only while it still holds the caller's token. */
static const char UNLOCK_LUA[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end "
    "return 0";

cm_err cm_redis_create(const char *host, int port, int conns, int timeout_ms, cm_redis **out)
{
    cm_redis *r;

    if (host == NULL || port <= 0 || conns < 1 || timeout_ms < 1)
        return CM_EINVAL;
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        return CM_ENOMEM;
    r->host = strdup(host);
    r->conns = calloc((size_t)conns, sizeof(*r->conns));
    if (r->host == NULL || r->conns == NULL) {
        free(r->host);
        free(r->conns);
        free(r);
        return CM_ENOMEM;
    }
    r->port = port;
    r->n = conns;
    r->timeout_ms = timeout_ms;
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->freed, NULL);
    *out = r;
    return CM_OK;
}

void cm_redis_destroy(cm_redis *r)
{
    if (r == NULL)
        return;
    for (int i = 0; i < r->n; i++)
        if (r->conns[i].ctx)
            redisFree(r->conns[i].ctx);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->freed);
    free(r->conns);
    free(r->host);
    free(r);
}

static struct conn *acquire(cm_redis *r)
{
    struct conn *c = NULL;
    pthread_mutex_lock(&r->lock);
    for (;;) {
        for (int i = 0; i < r->n && c == NULL; i++)
            if (!r->conns[i].busy)
                c = &r->conns[i];
        if (c)
            break;
        pthread_cond_wait(&r->freed, &r->lock);
    }
    c->busy = 1;
    pthread_mutex_unlock(&r->lock);
    if (c->ctx == NULL) {
        struct timeval tv = {r->timeout_ms / 1000, (r->timeout_ms % 1000) * 1000};
        c->ctx = redisConnectWithTimeout(r->host, r->port, tv);
        if (c->ctx && c->ctx->err == 0)
            redisSetTimeout(c->ctx, tv);
    }
    return c;
}

static void release(cm_redis *r, struct conn *c, int broken)
{
    if (broken && c->ctx) {
        redisFree(c->ctx);
        c->ctx = NULL;
    }
    pthread_mutex_lock(&r->lock);
    c->busy = 0;
    pthread_cond_signal(&r->freed);
    pthread_mutex_unlock(&r->lock);
}

/* Runs one command; returns the reply (caller frees) or NULL with the connection reset. */
/* Runs one command; NULL when Redis cannot be reached or, unless keep_errors, answers an
 * error (logged). */
static redisReply *command_ex(cm_redis *r, int argc, const char **argv, const size_t *lens,
                              int keep_errors)
{
    struct conn *c = acquire(r);
    redisReply *rep = NULL;

    if (c->ctx == NULL || c->ctx->err) {
        cm_warn("redis: cannot connect to %s:%d: %s", r->host, r->port,
                c->ctx ? c->ctx->errstr : "out of memory");
        release(r, c, 1);
        return NULL;
    }
    rep = redisCommandArgv(c->ctx, argc, argv, lens);
    if (rep == NULL) {
        cm_warn("redis: %s failed: %s", argv[0], c->ctx->errstr);
        release(r, c, 1);
        return NULL;
    }
    release(r, c, 0);
    if (rep->type == REDIS_REPLY_ERROR && !keep_errors) {
        cm_warn("redis: %s: %s", argv[0], rep->str);
        freeReplyObject(rep);
        return NULL;
    }
    return rep;
}

static redisReply *command(cm_redis *r, int argc, const char **argv, const size_t *lens)
{
    return command_ex(r, argc, argv, lens, 0);
}

/* The SHA1 of `script` as Redis knows it, loading it the first time (SCRIPT LOAD); 0 and the
 * hex digest in out (size 41), -1 when it cannot be had (the caller sends the script). */
static int script_sha(cm_redis *r, const char *script, char *out)
{
    const char *argv[] = {"SCRIPT", "LOAD", script};
    size_t lens[] = {6, 4, strlen(script)};
    redisReply *rep;
    int found = -1;

    pthread_mutex_lock(&r->lock);
    for (int i = 0; i < r->nshas; i++)
        if (r->shas[i].script == script) {
            memcpy(out, r->shas[i].sha, 41);
            found = 0;
        }
    pthread_mutex_unlock(&r->lock);
    if (found == 0)
        return 0;
    rep = command(r, 3, argv, lens);
    if (rep == NULL)
        return -1;
    if (rep->type == REDIS_REPLY_STRING && rep->len == 40) {
        memcpy(out, rep->str, 40);
        out[40] = '\0';
        found = 0;
        pthread_mutex_lock(&r->lock);
        if (r->nshas < (int)(sizeof(r->shas) / sizeof(r->shas[0]))) {
            r->shas[r->nshas].script = script;
            memcpy(r->shas[r->nshas++].sha, out, 41);
        }
        pthread_mutex_unlock(&r->lock);
    }
    freeReplyObject(rep);
    return found;
}

cm_err cm_redis_ping(cm_redis *r)
{
    const char *argv[] = {"PING"};
    size_t lens[] = {4};
    redisReply *rep = command(r, 1, argv, lens);
    if (rep == NULL)
        return CM_EIO;
    freeReplyObject(rep);
    return CM_OK;
}

cm_err cm_redis_window_incr(cm_redis *r, const char *key, int64_t window_ms, int64_t *count,
                            int64_t *remaining_ms)
{
    char ms[24];
    snprintf(ms, sizeof(ms), "%lld", (long long)window_ms);
    const char *argv[] = {"EVAL", WINDOW_LUA, "1", key, ms};
    size_t lens[] = {4, sizeof(WINDOW_LUA) - 1, 1, strlen(key), strlen(ms)};
    redisReply *rep = command(r, 5, argv, lens);
    cm_err rc = CM_EIO;

    if (rep == NULL)
        return CM_EIO;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
        rep->element[0]->type == REDIS_REPLY_INTEGER && rep->element[1]->type == REDIS_REPLY_INTEGER) {
        *count = rep->element[0]->integer;
        *remaining_ms = rep->element[1]->integer;
        rc = CM_OK;
    }
    freeReplyObject(rep);
    return rc;
}

cm_err cm_redis_eval_ints(cm_redis *r, const char *script, size_t nkeys, const char *const *keys,
                          size_t nargs, const char *const *args, int64_t *out, size_t max,
                          size_t *n)
{
    const char *argv[3 + 64 + 16];
    size_t lens[3 + 64 + 16];
    char nk[8], sha[41];
    int has_sha;
    redisReply *rep;
    cm_err rc = CM_EINVAL;
    int argc = 0;

    if (nkeys > 64 || nargs > 16)
        return CM_EINVAL;
    snprintf(nk, sizeof(nk), "%zu", nkeys);
    has_sha = script_sha(r, script, sha) == 0;
    argv[argc] = has_sha ? "EVALSHA" : "EVAL";
    lens[argc++] = has_sha ? 7 : 4;
    argv[argc] = has_sha ? sha : script;
    lens[argc++] = has_sha ? 40 : strlen(script);
    argv[argc] = nk;
    lens[argc++] = strlen(nk);
    for (size_t i = 0; i < nkeys; i++) {
        argv[argc] = keys[i];
        lens[argc++] = strlen(keys[i]);
    }
    for (size_t i = 0; i < nargs; i++) {
        argv[argc] = args[i];
        lens[argc++] = strlen(args[i]);
    }
    rep = command_ex(r, argc, argv, lens, has_sha);
    if (rep && rep->type == REDIS_REPLY_ERROR) {
        /* NOSCRIPT: Redis restarted or its script cache was flushed; EVAL loads it again.
         * Any other error is the script's own: not run twice. */
        if (strncmp(rep->str, "NOSCRIPT", 8) != 0) {
            cm_warn("redis: EVALSHA: %s", rep->str);
            freeReplyObject(rep);
            return CM_EIO;
        }
        freeReplyObject(rep);
        argv[0] = "EVAL";
        lens[0] = 4;
        argv[1] = script;
        lens[1] = strlen(script);
        rep = command(r, argc, argv, lens);
    }
    if (rep == NULL)
        return CM_EIO;
    if (rep->type == REDIS_REPLY_ARRAY) {
        rc = CM_OK;
        *n = 0;
        for (size_t i = 0; i < rep->elements && rc == CM_OK; i++) {
            if (rep->element[i]->type != REDIS_REPLY_INTEGER)
                rc = CM_EINVAL;
            else if (i < max)
                out[(*n)++] = rep->element[i]->integer;
        }
    }
    freeReplyObject(rep);
    return rc;
}

cm_err cm_redis_set(cm_redis *r, const char *key, const char *value, int64_t ttl_ms)
{
    char ms[24];
    snprintf(ms, sizeof(ms), "%lld", (long long)ttl_ms);
    const char *argv[] = {"SET", key, value, "PX", ms};
    size_t lens[] = {3, strlen(key), strlen(value), 2, strlen(ms)};
    redisReply *rep = command(r, ttl_ms > 0 ? 5 : 3, argv, lens);
    if (rep == NULL)
        return CM_EIO;
    freeReplyObject(rep);
    return CM_OK;
}

cm_err cm_redis_get(cm_redis *r, const char *key, char *out, size_t n)
{
    const char *argv[] = {"GET", key};
    size_t lens[] = {3, strlen(key)};
    redisReply *rep = command(r, 2, argv, lens);
    cm_err rc = CM_OK;

    if (rep == NULL)
        return CM_EIO;
    if (rep->type == REDIS_REPLY_NIL)
        rc = CM_ENOTFOUND;
    else if (rep->type != REDIS_REPLY_STRING)
        rc = CM_EIO;
    else if (rep->len >= n)
        rc = CM_ETOOBIG;
    else
        memcpy(out, rep->str, rep->len + 1);
    freeReplyObject(rep);
    return rc;
}

cm_err cm_redis_exists(cm_redis *r, const char *const *keys, size_t n, int64_t *count)
{
    const char *argv[9];
    size_t lens[9];
    redisReply *rep;
    cm_err rc = CM_EIO;

    if (n == 0 || n > 8)
        return CM_EINVAL;
    argv[0] = "EXISTS";
    lens[0] = 6;
    for (size_t i = 0; i < n; i++) {
        argv[i + 1] = keys[i];
        lens[i + 1] = strlen(keys[i]);
    }
    rep = command(r, (int)n + 1, argv, lens);
    if (rep == NULL)
        return CM_EIO;
    if (rep->type == REDIS_REPLY_INTEGER) {
        *count = rep->integer;
        rc = CM_OK;
    }
    freeReplyObject(rep);
    return rc;
}

cm_err cm_redis_pttl(cm_redis *r, const char *key, int64_t *ms)
{
    const char *argv[] = {"PTTL", key};
    size_t lens[] = {4, strlen(key)};
    redisReply *rep = command(r, 2, argv, lens);
    cm_err rc = CM_EIO;

    if (rep == NULL)
        return CM_EIO;
    if (rep->type == REDIS_REPLY_INTEGER) {
        rc = rep->integer == -2 ? CM_ENOTFOUND : CM_OK;
        if (rc == CM_OK)
            *ms = rep->integer;
    }
    freeReplyObject(rep);
    return rc;
}

cm_err cm_redis_del(cm_redis *r, const char *key)
{
    const char *argv[] = {"DEL", key};
    size_t lens[] = {3, strlen(key)};
    redisReply *rep = command(r, 2, argv, lens);
    if (rep == NULL)
        return CM_EIO;
    freeReplyObject(rep);
    return CM_OK;
}

cm_err cm_redis_lock(cm_redis *r, const char *key, const char *token, int64_t ttl_ms)
{
    char ms[24];
    snprintf(ms, sizeof(ms), "%lld", (long long)ttl_ms);
    const char *argv[] = {"SET", key, token, "NX", "PX", ms};
    size_t lens[] = {3, strlen(key), strlen(token), 2, 2, strlen(ms)};
    redisReply *rep = command(r, 6, argv, lens);
    cm_err rc;

    if (rep == NULL)
        return CM_EIO;
    rc = rep->type == REDIS_REPLY_NIL ? CM_ECONFLICT
         : rep->type == REDIS_REPLY_STATUS ? CM_OK : CM_EIO;
    freeReplyObject(rep);
    return rc;
}

cm_err cm_redis_unlock(cm_redis *r, const char *key, const char *token)
{
    const char *argv[] = {"EVAL", UNLOCK_LUA, "1", key, token};
    size_t lens[] = {4, sizeof(UNLOCK_LUA) - 1, 1, strlen(key), strlen(token)};
    redisReply *rep = command(r, 5, argv, lens);
    cm_err rc;

    if (rep == NULL)
        return CM_EIO;
    rc = rep->type != REDIS_REPLY_INTEGER ? CM_EIO : rep->integer == 1 ? CM_OK : CM_ENOTFOUND;
    freeReplyObject(rep);
    return rc;
}

/* Sends `cmds[0..n)` in one round trip and hands each reply to `each` (with `i`); shared by
 * the two pipeline flavours. */
static cm_err pipeline(cm_redis *r, const cm_redis_cmd *cmds, size_t n,
                       void (*each)(void *ud, size_t i, const cm_redis_cmd *cmd,
                                    const redisReply *rep),
                       void *ud)
{
    struct conn *c;
    size_t sent = 0, got = 0;
    int broken = 0;

    if (n == 0)
        return CM_OK;
    for (size_t i = 0; i < n; i++)
        if (cmds[i].argc < 1 || cmds[i].argc > CM_REDIS_CMD_ARGS)
            return CM_EINVAL;
    c = acquire(r);
    if (c->ctx == NULL || c->ctx->err) {
        cm_warn("redis: cannot connect to %s:%d: %s", r->host, r->port,
                c->ctx ? c->ctx->errstr : "out of memory");
        release(r, c, 1);
        return CM_EIO;
    }
    /* Every command is buffered, then written in one go by the first redisGetReply. */
    for (; sent < n; sent++)
        if (redisAppendCommandArgv(c->ctx, cmds[sent].argc, (const char **)cmds[sent].argv, NULL) != REDIS_OK)
            break;
    for (; got < sent; got++) {
        redisReply *rep = NULL;
        if (redisGetReply(c->ctx, (void **)&rep) != REDIS_OK || rep == NULL) {
            broken = 1;
            break;
        }
        if (rep->type == REDIS_REPLY_ERROR)
            cm_warn("redis: %s: %s", cmds[got].argv[0], rep->str);
        each(ud, got, &cmds[got], rep);
        freeReplyObject(rep);
    }
    if (sent < n || broken)
        cm_warn("redis: pipeline of %zu failed: %s", n, c->ctx->errstr);
    /* A connection left with replies unread is out of step: dropped. */
    release(r, c, sent < n || broken);
    return sent < n || broken ? CM_EIO : CM_OK;
}

static void reply_int(void *ud, size_t i, const cm_redis_cmd *cmd, const redisReply *rep)
{
    int64_t *out = ud;
    (void)cmd;
    switch (rep->type) {
    case REDIS_REPLY_INTEGER:
        out[i] = rep->integer;
        break;
    case REDIS_REPLY_NIL:
        out[i] = 0;
        break;
    case REDIS_REPLY_ERROR:
        out[i] = -1;
        break;
    default:
        out[i] = 1;
    }
}

cm_err cm_redis_pipeline(cm_redis *r, const cm_redis_cmd *cmds, size_t n, int64_t *out)
{
    return pipeline(r, cmds, n, reply_int, out);
}

typedef struct strs_ctx {
    cm_redis_strings_fn fn;
    void *ud;
} strs_ctx;

/* A reply's strings: a bulk or status string is one, an array its string elements (at most
 * 1024 of them: a pipeline of hashes of a few fields), anything else none. */
static void reply_strs(void *ud, size_t i, const cm_redis_cmd *cmd, const redisReply *rep)
{
    enum { MAXN = 1024 };
    strs_ctx *s = ud;
    const char *v[MAXN];
    size_t len[MAXN], k = 0;
    (void)cmd;
    if (rep->type == REDIS_REPLY_STRING || rep->type == REDIS_REPLY_STATUS) {
        v[0] = rep->str;
        len[0] = rep->len;
        k = 1;
    } else if (rep->type == REDIS_REPLY_ARRAY) {
        for (size_t j = 0; j < rep->elements && k < MAXN; j++)
            if (rep->element[j]->type == REDIS_REPLY_STRING) {
                v[k] = rep->element[j]->str;
                len[k++] = rep->element[j]->len;
            }
    }
    s->fn(s->ud, i, rep->type == REDIS_REPLY_ERROR ? -1 : 0, v, len, k);
}

cm_err cm_redis_pipeline_strings(cm_redis *r, const cm_redis_cmd *cmds, size_t n,
                                 cm_redis_strings_fn fn, void *ud)
{
    strs_ctx s = {fn, ud};
    return pipeline(r, cmds, n, reply_strs, &s);
}

cm_err cm_redis_publish(cm_redis *r, const char *channel, const char *message,
                        int64_t *receivers)
{
    const char *argv[] = {"PUBLISH", channel, message};
    size_t lens[] = {7, strlen(channel), strlen(message)};
    redisReply *rep = command(r, 3, argv, lens);

    if (rep == NULL)
        return CM_EIO;
    if (receivers)
        *receivers = rep->type == REDIS_REPLY_INTEGER ? rep->integer : 0;
    freeReplyObject(rep);
    return CM_OK;
}

/* Opens a subscribed connection, or NULL (logged once per outage by the caller's backoff). */
static redisContext *subscribe(const char *host, int port, const char *const *channels, size_t n,
                               int poll_ms)
{
    struct timeval tv = {poll_ms / 1000, (poll_ms % 1000) * 1000};
    const char *argv[17];
    size_t lens[17];
    redisContext *ctx = redisConnectWithTimeout(host, port, tv);
    redisReply *rep = NULL;

    if (ctx == NULL || ctx->err)
        goto fail;
    argv[0] = "SUBSCRIBE";
    lens[0] = 9;
    for (size_t i = 0; i < n; i++) {
        argv[i + 1] = channels[i];
        lens[i + 1] = strlen(channels[i]);
    }
    if (redisAppendCommandArgv(ctx, (int)n + 1, argv, lens) != REDIS_OK)
        goto fail;
    /* One confirmation per channel; then reads time out every poll_ms to check for a stop. */
    for (size_t i = 0; i < n; i++) {
        if (redisGetReply(ctx, (void **)&rep) != REDIS_OK || rep == NULL ||
            rep->type != REDIS_REPLY_ARRAY)
            goto fail;
        freeReplyObject(rep);
        rep = NULL;
    }
    redisSetTimeout(ctx, tv);
    return ctx;
fail:
    if (rep)
        freeReplyObject(rep);
    cm_warn("redis: cannot subscribe on %s:%d: %s", host, port,
            ctx ? ctx->errstr : "out of memory");
    if (ctx)
        redisFree(ctx);
    return NULL;
}

cm_err cm_redis_listen(const char *host, int port, const char *const *channels, size_t n,
                       int poll_ms, cm_redis_message_fn on_message, cm_redis_stop_fn should_stop,
                       void *ud)
{
    redisContext *ctx = NULL;

    if (host == NULL || channels == NULL || n == 0 || n > 16 || poll_ms < 1 ||
        on_message == NULL || should_stop == NULL)
        return CM_EINVAL;
    while (!should_stop(ud)) {
        redisReply *rep = NULL;
        if (ctx == NULL && (ctx = subscribe(host, port, channels, n, poll_ms)) == NULL) {
            struct timespec ts = {0, 200 * 1000000L};
            nanosleep(&ts, NULL);
            continue;
        }
        if (redisGetReply(ctx, (void **)&rep) != REDIS_OK) {
            /* A read timeout only means nothing was published: keep the connection. */
            if (ctx->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                ctx->err = 0;
                ctx->errstr[0] = '\0';
                continue;
            }
            cm_warn("redis: subscription lost: %s", ctx->errstr);
            redisFree(ctx);
            ctx = NULL;
            continue;
        }
        if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 3 &&
            rep->element[0]->type == REDIS_REPLY_STRING &&
            strcmp(rep->element[0]->str, "message") == 0 &&
            rep->element[1]->type == REDIS_REPLY_STRING &&
            rep->element[2]->type == REDIS_REPLY_STRING)
            on_message(ud, rep->element[1]->str, rep->element[2]->str, rep->element[2]->len);
        if (rep)
            freeReplyObject(rep);
    }
    if (ctx)
        redisFree(ctx);
    return CM_OK;
}
