/* socket_ephemeral.c - typing and presence across instances through Redis: the pub/sub
 * messages and their parsing, the presence script (connections with TTLs, the chosen status,
 * last seen, and the publication of what others see when it changes), the worker thread that
 * runs Redis commands off the WebSocket loop and the subscriber thread that feeds the loop. */
#include "socket_ephemeral.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"

/* The Lua shared by the presence scripts: settle(uk, now, channel, msg) recomputes what others
 * see of the user whose hash is `uk` (connections in the zset uk..':conns') after a change: the
 * chosen status while a connection lives, except invisible, which shows offline. When that
 * changes it records it (and the last-seen time) and PUBLISHes `msg` (the message prefix,
 * socket_presence_prefix) completed with the status and last_seen on `channel` (not when `msg`
 * is false or ''). Returns shown, seen, own. */
#define PRESENCE_SETTLE_LUA                                                                   \
    "local function settle(uk, now, channel, msg) "                                           \
    "  local ck = uk .. ':conns' "                                                            \
    "  local own = redis.call('HGET', uk, 'status') or 'online' "                             \
    "  local shown = 'offline' "                                                              \
    "  if redis.call('ZCARD', ck) > 0 and own ~= 'invisible' then shown = own end "           \
    "  local before = redis.call('HGET', uk, 'shown') or 'offline' "                          \
    "  if shown ~= 'offline' or before ~= 'offline' then redis.call('HSET', uk, 'seen', now) end " \
    "  redis.call('HSET', uk, 'shown', shown) "                                               \
    "  local seen = tonumber(redis.call('HGET', uk, 'seen') or '0') "                         \
    "  if shown ~= before and msg and msg ~= '' then "                                        \
    "    redis.call('PUBLISH', channel, msg .. ',\"status\":\"' .. shown .. '\",\"last_seen\":' " \
    "      .. string.format('%d', seen) .. '}') "                                             \
    "  end "                                                                                  \
    "  return shown, seen, own "                                                              \
    "end "

/* KEYS[1] the user's live connections (zset: member -> expiry ms), KEYS[2] the user's hash
 * (status chosen, shown = what others saw last, seen = last seen ms, msg = the latest message
 * prefix, so that another instance can publish a change for this user), KEYS[3] this
 * instance's connections (hash: member -> the user's hash key; what a survivor sweeps when
 * this instance dies, INSTANCE_LUA). ARGV: op, now ms, TTL ms, connection member, chosen
 * status, channel, message prefix. Changes are published atomically, so in the order they
 * happen. Returns {known, shown, seen, own} with 0 offline, 1 online, 2 away, 3 invisible. */
static const char PRESENCE_LUA[] =
    PRESENCE_SETTLE_LUA
    "local op, now, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]) "
    "local codes = {offline = 0, online = 1, away = 2, invisible = 3} "
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) "
    "if op == 'connect' or op == 'beat' then redis.call('ZADD', KEYS[1], now + ttl, ARGV[4]) "
    "  redis.call('HSET', KEYS[3], ARGV[4], KEYS[2]) "
    "elseif op == 'disconnect' then redis.call('ZREM', KEYS[1], ARGV[4]) "
    "  redis.call('HDEL', KEYS[3], ARGV[4]) "
    "elseif op == 'set' then redis.call('HSET', KEYS[2], 'status', ARGV[5]) end "
    "if op == 'read' then "
    "  if redis.call('EXISTS', KEYS[2]) == 0 then return {0, 0, 0, 0} end "
    "  local own = redis.call('HGET', KEYS[2], 'status') or 'online' "
    "  local shown = 'offline' "
    "  if redis.call('ZCARD', KEYS[1]) > 0 and own ~= 'invisible' then shown = own end "
    "  return {1, codes[shown], tonumber(redis.call('HGET', KEYS[2], 'seen') or '0'), codes[own]} "
    "end "
    "if ARGV[7] ~= '' then redis.call('HSET', KEYS[2], 'msg', ARGV[7]) end "
    "local shown, seen, own = settle(KEYS[2], now, ARGV[6], ARGV[7]) "
    "redis.call('PEXPIRE', KEYS[1], ttl) "
    "redis.call('PEXPIRE', KEYS[2], 2592000000) "
    "return {1, codes[shown], seen, codes[own]}";

/* The instances' heartbeat and the sweep of dead ones. KEYS[1] the zset of instances (id ->
 * expiry ms). ARGV: now ms, this instance's id, instance TTL ms, channel, presence TTL ms, the
 * most connections swept per call. Refreshes this instance, then takes up to that many
 * connections of instances whose heartbeat ran out (their hash presence:instance:<id>, kept
 * by PRESENCE_LUA), removes each from its user's live connections and settles the user (so
 * members see them go offline when no other connection lives); a fully swept instance is
 * forgotten. Atomic: two survivors sweeping at once remove each connection once. The user keys
 * come from the instance's hash, not KEYS: fine on one Redis (not on Redis Cluster). Returns
 * {connections swept, 1 when more are left}. */
static const char INSTANCE_LUA[] =
    PRESENCE_SETTLE_LUA
    "local now, me, ittl = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]) "
    "local channel, pttl, max = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]) "
    "redis.call('ZADD', KEYS[1], now + ittl, me) "
    "redis.call('PEXPIRE', 'presence:instance:' .. me, pttl + ittl) "
    "local swept, more = 0, 0 "
    "for _, inst in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 8)) do "
    "  local hk = 'presence:instance:' .. inst "
    "  local fields = redis.call('HSCAN', hk, 0, 'COUNT', max)[2] "
    "  for i = 1, #fields, 2 do "
    "    local member, uk = fields[i], fields[i + 1] "
    "    if redis.call('ZREM', uk .. ':conns', member) == 1 then "
    "      redis.call('ZREMRANGEBYSCORE', uk .. ':conns', '-inf', now) "
    "      settle(uk, now, channel, redis.call('HGET', uk, 'msg')) "
    "    end "
    "    redis.call('HDEL', hk, member) "
    "    swept = swept + 1 "
    "  end "
    "  if redis.call('HLEN', hk) == 0 then redis.call('ZREM', KEYS[1], inst) else more = 1 end "
    "  if swept >= max then more = 1 break end "
    "end "
    "return {swept, more}";

/* KEYS[1] the zset of instances; ARGV[1] this instance's id: a clean stop forgets it (its
 * connections were disconnected one by one before). */
static const char INSTANCE_GONE_LUA[] =
    "redis.call('ZREM', KEYS[1], ARGV[1]) "
    "redis.call('DEL', 'presence:instance:' .. ARGV[1]) "
    "return {1}";

#define INSTANCES_KEY "presence:instances"
#define SWEEP_MAX 500

/* KEYS[1] the user's live connections; ARGV[1] now (ms). Returns {live connections}. */
static const char CONNS_LUA[] =
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1])) "
    "return {redis.call('ZCARD', KEYS[1])}";

static const char *const status_names[] = {"offline", "online", "away", "invisible"};
static const char *const op_names[] = {"connect", "beat", "disconnect", "set"};

/* --- messages ---------------------------------------------------------------------------- */

char *socket_typing_message(const char *tenant, const char *conversation_id, const char *user,
                            int start)
{
    cJSON *o = cJSON_CreateObject();
    char *text;

    cJSON_AddStringToObject(o, "k", "typing");
    cJSON_AddStringToObject(o, "tenant", tenant);
    cJSON_AddStringToObject(o, "conversation_id", conversation_id);
    cJSON_AddStringToObject(o, "user_id", user);
    cJSON_AddStringToObject(o, "state", start ? "start" : "stop");
    text = cm_json_print(o);
    cJSON_Delete(o);
    return text;
}

char *socket_typing_frame(const char *conversation_id, const char *user, const char *state)
{
    cJSON *f = cJSON_CreateObject();
    char *text;

    cJSON_AddStringToObject(f, "type", "typing");
    cJSON_AddStringToObject(f, "conversation_id", conversation_id);
    cJSON_AddStringToObject(f, "user_id", user);
    cJSON_AddStringToObject(f, "state", state);
    text = cm_json_print(f);
    cJSON_Delete(f);
    return text;
}

char *socket_presence_prefix(const char *tenant, const char *user, char *const *convs, size_t n)
{
    cJSON *o = cJSON_CreateObject(), *a = cJSON_CreateArray();
    char *text;
    size_t len;

    cJSON_AddStringToObject(o, "k", "presence");
    cJSON_AddStringToObject(o, "tenant", tenant);
    cJSON_AddStringToObject(o, "user_id", user);
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(convs[i]));
    cJSON_AddItemToObject(o, "conversations", a);
    text = cm_json_print(o);
    cJSON_Delete(o);
    /* The script appends ,"status":...,"last_seen":...} */
    if (text && (len = strlen(text)) > 0 && text[len - 1] == '}')
        text[len - 1] = '\0';
    return text;
}

static int copy_field(const cJSON *o, const char *key, char *dst, size_t cap)
{
    const char *v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, key));

    if (v == NULL || v[0] == '\0' || strlen(v) >= cap)
        return 0;
    memcpy(dst, v, strlen(v) + 1);
    return 1;
}

cm_err socket_event_from_ephemeral(const char *json, size_t len, socket_event **out)
{
    cJSON *o = cJSON_ParseWithLength(json, len), *convs, *it;
    socket_event *ev = calloc(1, sizeof(*ev));
    const char *k = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "k"));
    const cJSON *seen = cJSON_GetObjectItemCaseSensitive(o, "last_seen");
    cm_err rc = CM_EINVAL;

    if (ev == NULL) {
        rc = CM_ENOMEM;
        goto out;
    }
    ev->kind = SOCKET_EV_EPHEMERAL;
    ev->refs = 1;
    if (k == NULL || !copy_field(o, "tenant", ev->tenant, sizeof(ev->tenant)) ||
        !copy_field(o, "user_id", ev->sender, sizeof(ev->sender)) ||
        !copy_field(o, k[0] == 't' ? "state" : "status", ev->state, sizeof(ev->state)))
        goto out;
    if (strcmp(k, "typing") == 0) {
        if (!copy_field(o, "conversation_id", ev->conversation_id, sizeof(ev->conversation_id)) ||
            (strcmp(ev->state, "start") && strcmp(ev->state, "stop")))
            goto out;
        snprintf(ev->type, sizeof(ev->type), "typing");
        if ((ev->frame = socket_typing_frame(ev->conversation_id, ev->sender, ev->state)) ==
            NULL) {
            rc = CM_ENOMEM;
            goto out;
        }
        ev->frame_len = strlen(ev->frame);
    } else if (strcmp(k, "presence") == 0) {
        snprintf(ev->type, sizeof(ev->type), "presence");
        if (strcmp(ev->state, "online") && strcmp(ev->state, "away") &&
            strcmp(ev->state, "offline"))
            goto out;
        ev->last_seen = cJSON_IsNumber(seen) && seen->valuedouble > 0 ? (int64_t)seen->valuedouble
                                                                        : 0;
        convs = cJSON_GetObjectItemCaseSensitive(o, "conversations");
        if (!cJSON_IsArray(convs))
            goto out;
        ev->members = calloc((size_t)cJSON_GetArraySize(convs) + 1, sizeof(char *));
        if (ev->members == NULL) {
            rc = CM_ENOMEM;
            goto out;
        }
        cJSON_ArrayForEach(it, convs)
        {
            if (!cJSON_IsString(it) || strlen(it->valuestring) > SOCKET_ID_MAX)
                goto out;
            if ((ev->members[ev->nmembers] = strdup(it->valuestring)) == NULL) {
                rc = CM_ENOMEM;
                goto out;
            }
            ev->nmembers++;
        }
    } else {
        goto out;
    }
    *out = ev;
    ev = NULL;
    rc = CM_OK;
out:
    socket_event_release(ev);
    cJSON_Delete(o);
    return rc;
}

/* Latest change of each user first, so one pass keeps each user's first entry. */
static int by_user_latest(const void *a, const void *b)
{
    const socket_presence_item *x = a, *y = b;
    int c = strcmp(x->user_id, y->user_id);

    if (c)
        return c;
    return x->order > y->order ? -1 : x->order < y->order;
}

char *socket_presence_batch_json(socket_presence_item *items, size_t n)
{
    cJSON *o, *a;
    char *text, when[CM_RFC3339_LEN];

    if (n == 0)
        return NULL;
    qsort(items, n, sizeof(*items), by_user_latest);
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "presence");
    a = cJSON_AddArrayToObject(o, "items");
    for (size_t i = 0; i < n; i++) {
        cJSON *it;
        if (i > 0 && strcmp(items[i].user_id, items[i - 1].user_id) == 0)
            continue;
        it = cJSON_CreateObject();
        cJSON_AddStringToObject(it, "user_id", items[i].user_id);
        cJSON_AddStringToObject(it, "status", items[i].status);
        if (items[i].last_seen > 0) {
            cm_clock_rfc3339(items[i].last_seen, when);
            cJSON_AddStringToObject(it, "last_seen", when);
        } else {
            cJSON_AddNullToObject(it, "last_seen");
        }
        cJSON_AddItemToArray(a, it);
    }
    text = cm_json_print(o);
    cJSON_Delete(o);
    return text;
}

/* --- the worker and the subscriber -------------------------------------------------------- */

typedef struct op {
    struct op *next;
    int presence; /* 0: publish `payload`; 1: run PRESENCE_LUA */
    socket_presence_op pop;
    char tenant[SOCKET_ID_MAX + 1];
    char user[CM_JWT_ID_MAX + 1];
    uint64_t conn_id;
    char status[16];
    char *payload; /* the typing message, or the presence message prefix */
} op;

#define QUEUE_MAX 100000

struct socket_ephemeral {
    socket_ephemeral_config cfg;
    char *channel, *instance, *host;
    pthread_t worker, listener;
    int worker_started, listener_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    op *head, *tail;
    size_t len;
    int stop;
    atomic_int listen_stop;
    atomic_long published, received, failed, dropped, swept;
};

static void keys_of(const char *tenant, const char *user, char *conns, char *hash, size_t n)
{
    snprintf(conns, n, "presence:%s:%s:conns", tenant, user);
    snprintf(hash, n, "presence:%s:%s", tenant, user);
}

static cm_err run_presence(socket_ephemeral *e, const char *tenant, const char *user,
                           const char *opname, uint64_t conn_id, const char *status,
                           const char *prefix, int64_t res[4])
{
    char kc[256], kh[256], ki[200], now[24], ttl[24], member[160];
    const char *keys[3] = {kc, kh, ki};
    const char *args[7] = {opname, now, ttl, member, status ? status : "", e->channel,
                           prefix ? prefix : ""};
    size_t n = 0;
    cm_err rc;

    keys_of(tenant, user, kc, kh, sizeof(kc));
    snprintf(now, sizeof(now), "%" PRId64, cm_clock_now_ms());
    snprintf(ttl, sizeof(ttl), "%ld", e->cfg.presence_ttl_ms);
    snprintf(member, sizeof(member), "%s:%" PRIu64, e->instance, conn_id);
    snprintf(ki, sizeof(ki), "presence:instance:%s", e->instance);
    rc = cm_redis_eval_ints(e->cfg.redis, PRESENCE_LUA, 3, keys, 7, args, res, 4, &n);
    if (rc == CM_OK && n != 4)
        rc = CM_EINVAL;
    return rc;
}

static void run_op(socket_ephemeral *e, op *o)
{
    int64_t res[4];
    cm_err rc;

    if (o->presence)
        rc = run_presence(e, o->tenant, o->user, op_names[o->pop], o->conn_id, o->status,
                          o->payload, res);
    else
        rc = cm_redis_publish(e->cfg.redis, e->channel, o->payload, NULL);
    if (rc == CM_OK)
        atomic_fetch_add(&e->published, 1);
    else
        atomic_fetch_add(&e->failed, 1); /* logged by the Redis module */
}

/* This instance's heartbeat, and the sweep of instances whose heartbeat ran out (INSTANCE_LUA),
 * until nothing is left to sweep. Returns when the next beat is due (ms, cm_clock_now_ms). */
static int64_t instance_beat(socket_ephemeral *e)
{
    char now[24], ttl[24], pttl[24], max[24];
    const char *keys[1] = {INSTANCES_KEY},
               *args[6] = {now, e->instance, ttl, e->channel, pttl, max};
    int64_t res[2] = {0, 0}, t = cm_clock_now_ms();
    size_t n = 0;
    int rounds = 0;

    snprintf(ttl, sizeof(ttl), "%ld", e->cfg.instance_ttl_ms);
    snprintf(pttl, sizeof(pttl), "%ld", e->cfg.presence_ttl_ms);
    snprintf(max, sizeof(max), "%d", SWEEP_MAX);
    do {
        snprintf(now, sizeof(now), "%" PRId64, cm_clock_now_ms());
        if (cm_redis_eval_ints(e->cfg.redis, INSTANCE_LUA, 1, keys, 6, args, res, 2, &n) != CM_OK ||
            n != 2) {
            atomic_fetch_add(&e->failed, 1);
            break;
        }
        atomic_fetch_add(&e->swept, (long)res[0]);
        if (res[0] > 0)
            cm_info("swept %lld presence connections of stopped socket instances",
                    (long long)res[0]);
    } while (res[1] && ++rounds < 20);
    /* A third of the TTL: two beats may fail before the others take this one for dead. */
    return t + e->cfg.instance_ttl_ms / 3;
}

static void *work(void *arg)
{
    socket_ephemeral *e = arg;
    int64_t beat_at = 0;

    pthread_mutex_lock(&e->mu);
    for (;;) {
        while (e->head == NULL && !e->stop) {
            int64_t now = cm_clock_now_ms();
            struct timespec until;
            if (now >= beat_at) {
                pthread_mutex_unlock(&e->mu);
                beat_at = instance_beat(e);
                pthread_mutex_lock(&e->mu);
                continue;
            }
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += (beat_at - now) / 1000;
            until.tv_nsec += (long)((beat_at - now) % 1000) * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&e->cv, &e->mu, &until);
        }
        if (e->head == NULL)
            break;
        op *o = e->head;
        e->head = o->next;
        if (e->head == NULL)
            e->tail = NULL;
        e->len--;
        pthread_mutex_unlock(&e->mu);
        run_op(e, o);
        free(o->payload);
        free(o);
        pthread_mutex_lock(&e->mu);
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

static void enqueue(socket_ephemeral *e, op *o)
{
    o->next = NULL;
    pthread_mutex_lock(&e->mu);
    /* Ephemeral state is best effort: with Redis stuck, shed rather than grow without bound. */
    if (e->len >= QUEUE_MAX || e->stop) {
        pthread_mutex_unlock(&e->mu);
        atomic_fetch_add(&e->dropped, 1);
        free(o->payload);
        free(o);
        return;
    }
    if (e->tail)
        e->tail->next = o;
    else
        e->head = o;
    e->tail = o;
    e->len++;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

static int listen_should_stop(void *ud)
{
    socket_ephemeral *e = ud;

    return atomic_load(&e->listen_stop);
}

static void on_message(void *ud, const char *channel, const char *msg, size_t len)
{
    socket_ephemeral *e = ud;
    socket_event *ev = NULL;

    (void)channel;
    atomic_fetch_add(&e->received, 1);
    if (socket_event_from_ephemeral(msg, len, &ev) == CM_OK)
        e->cfg.post(e->cfg.post_ud, ev);
    else
        cm_warn("skipping a malformed message on the ephemeral channel");
}

static void *listen_loop(void *arg)
{
    socket_ephemeral *e = arg;
    const char *channels[1] = {e->channel};

    cm_redis_listen(e->host, e->cfg.port, channels, 1, 200, on_message, listen_should_stop, e);
    return NULL;
}

cm_err socket_ephemeral_create(const socket_ephemeral_config *cfg, socket_ephemeral **out)
{
    socket_ephemeral *e = calloc(1, sizeof(*e));

    if (e == NULL)
        return CM_ENOMEM;
    e->cfg = *cfg;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    e->channel = strdup(cfg->channel);
    e->instance = strdup(cfg->instance);
    e->host = strdup(cfg->host);
    if (e->channel == NULL || e->instance == NULL || e->host == NULL) {
        socket_ephemeral_destroy(e);
        return CM_ENOMEM;
    }
    if (pthread_create(&e->worker, NULL, work, e) != 0) {
        socket_ephemeral_destroy(e);
        return CM_EIO;
    }
    e->worker_started = 1;
    if (pthread_create(&e->listener, NULL, listen_loop, e) != 0) {
        socket_ephemeral_destroy(e);
        return CM_EIO;
    }
    e->listener_started = 1;
    *out = e;
    return CM_OK;
}

void socket_ephemeral_destroy(socket_ephemeral *e)
{
    if (e == NULL)
        return;
    if (e->listener_started) {
        atomic_store(&e->listen_stop, 1);
        pthread_join(e->listener, NULL);
    }
    if (e->worker_started) {
        /* The worker runs what is queued (the drain's disconnects) before it stops. */
        pthread_mutex_lock(&e->mu);
        e->stop = 1;
        pthread_cond_signal(&e->cv);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->worker, NULL);
        /* Stopped cleanly: its connections were disconnected one by one; nothing to sweep. */
        const char *keys[1] = {INSTANCES_KEY}, *args[1] = {e->instance};
        int64_t one;
        size_t n;
        (void)cm_redis_eval_ints(e->cfg.redis, INSTANCE_GONE_LUA, 1, keys, 1, args, &one, 1, &n);
    }
    for (op *o = e->head, *next; o; o = next) {
        next = o->next;
        free(o->payload);
        free(o);
    }
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    free(e->channel);
    free(e->instance);
    free(e->host);
    free(e);
}

void socket_ephemeral_typing(socket_ephemeral *e, const char *tenant, const char *conversation_id,
                             const char *user, int start)
{
    op *o = calloc(1, sizeof(*o));

    if (o == NULL)
        return;
    if ((o->payload = socket_typing_message(tenant, conversation_id, user, start)) == NULL) {
        free(o);
        return;
    }
    enqueue(e, o);
}

void socket_ephemeral_presence(socket_ephemeral *e, socket_presence_op pop, const char *tenant,
                               const char *user, uint64_t conn_id, const char *status,
                               char *const *convs, size_t n)
{
    op *o = calloc(1, sizeof(*o));

    if (o == NULL)
        return;
    o->presence = 1;
    o->pop = pop;
    o->conn_id = conn_id;
    snprintf(o->tenant, sizeof(o->tenant), "%s", tenant);
    snprintf(o->user, sizeof(o->user), "%s", user);
    snprintf(o->status, sizeof(o->status), "%s", status ? status : "");
    if ((o->payload = socket_presence_prefix(tenant, user, convs, n)) == NULL) {
        free(o);
        return;
    }
    enqueue(e, o);
}

cm_err socket_ephemeral_read(socket_ephemeral *e, const char *tenant, const char *user,
                             char *status, int64_t *last_seen, char *own)
{
    int64_t res[4];
    cm_err rc = run_presence(e, tenant, user, "read", 0, NULL, NULL, res);

    if (rc != CM_OK)
        return CM_EIO;
    if (res[0] == 0)
        return CM_ENOTFOUND;
    if (res[1] < 0 || res[1] > 3 || res[3] < 0 || res[3] > 3)
        return CM_EIO;
    snprintf(status, 16, "%s", status_names[res[1]]);
    if (own)
        snprintf(own, 16, "%s", status_names[res[3]]);
    *last_seen = res[2];
    return CM_OK;
}

cm_err socket_ephemeral_connections(socket_ephemeral *e, const char *tenant, const char *user,
                                    int64_t *n)
{
    char kc[256], kh[256], now[24];
    const char *keys[1] = {kc}, *args[1] = {now};
    size_t got = 0;

    keys_of(tenant, user, kc, kh, sizeof(kc));
    snprintf(now, sizeof(now), "%" PRId64, cm_clock_now_ms());
    if (cm_redis_eval_ints(e->cfg.redis, CONNS_LUA, 1, keys, 1, args, n, 1, &got) != CM_OK ||
        got != 1)
        return CM_EIO;
    return CM_OK;
}

void socket_ephemeral_stats(socket_ephemeral *e, long *published, long *received, long *failed,
                            long *swept)
{
    *swept = atomic_load(&e->swept);
    *published = atomic_load(&e->published);
    *received = atomic_load(&e->received);
    *failed = atomic_load(&e->failed) + atomic_load(&e->dropped);
}
