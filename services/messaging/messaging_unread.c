/* messaging_unread.c - the caller's unread totals across all their conversations, O(1) to read
 * (issue 3: "a total across conversations, both O(1) to read").
 *
 * Each user has one Redis hash, unread:<tenant>:<user>, holding per conversation the numbers
 * its unread count is made of (fields l:<cid> last seq, r:<cid> read seq, n:<cid> unread
 * mentions, x:<cid> muted until in ms, m:<cid> counted as muted, e:<cid> version of n and x,
 * d:<cid> left as of that version) and the sums (total, with, mentions, muted) that
 * GET /v1/conversations/unread answers with one HMGET-like script call.
 *
 * Writers: every write section that changes a member's read position, mentions, mute or
 * membership notes it (messaging_unread_note); its commit applies those notes and, when the
 * section added messages, raises l:<cid> in every active member's hash (fan-out on write).
 * Every change carries the section's log seq (eseq) as its version: seqs only grow (max), the
 * other fields are set only by a newer version, and a removal ignores anything older, so the
 * order in which instances apply their changes does not matter and nothing needs the
 * conversation's lock.
 *
 * The fan-out must not cost a MongoDB query per message (measured: 1-90 ms on a loaded
 * FerretDB, which slowed concurrent sends threefold), so each conversation of up to
 * UNREAD_REGISTRY_MAX members has a member registry in Redis, unreadm:<tenant>:<cid> (user ->
 * +version joined, -version left, kept by the same versioned notes), and one script call
 * raises every member's hash. Larger conversations, and a registry not built yet, read the
 * members from MongoDB (the registry is built on the way) in calls of UNREAD_FANOUT_KEYS.
 * The scripts name the member hashes they touch (unread:<tenant>:<user>) themselves: right
 * for one Redis server, not for Redis Cluster.
 *
 * The hash is a cache of what MongoDB holds: it is built on the first read (from the member
 * records, the slow sum this replaces) and expires after UNREAD_TTL_MS, so a change lost to a
 * Redis error is repaired within a day at the latest; while Redis is unreachable the slow sum
 * answers. A mute that ends changes the sums without a write: the hash keeps the earliest mute
 * end (xmin) and the read that passes it recounts the hash once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "messaging.h"

#define UNREAD_TTL_MS (24LL * 3600 * 1000) /* a built hash is rebuilt after a day */
#define UNREAD_FANOUT_KEYS 64             /* member hashes per fan-out call (cm_redis_eval_ints) */
#define UNREAD_REGISTRY_MAX 10000         /* members: larger conversations fan out from MongoDB */

/* Shared Lua: contribution of one conversation and the versioned, order-free update. */
#define UNREAD_LUA_LIB                                                                              \
    "local function num(v) return tonumber(v) or 0 end\n"                                          \
    "local function contrib(l, r, n, m, d)\n"                                                      \
    "  if d > 0 then return 0, 0, 0, 0 end\n"                                                      \
    "  local u = l - r\n"                                                                          \
    "  if u < 0 then u = 0 end\n"                                                                  \
    "  if m > 0 then return 0, 0, n, u end\n"                                                      \
    "  if u > 0 then return u, 1, n, 0 end\n"                                                      \
    "  return 0, 0, n, 0\n"                                                                        \
    "end\n"                                                                                        \
    "local function apply(k, cid, v, l, r, n, x, drop, now)\n"                                     \
    "  local f = redis.call('HMGET', k, 'l:'..cid, 'r:'..cid, 'n:'..cid, 'x:'..cid, 'm:'..cid,\n"  \
    "                       'e:'..cid, 'd:'..cid)\n"                                               \
    "  local ol, orr, on, ox, om = num(f[1]), num(f[2]), num(f[3]), num(f[4]), num(f[5])\n"        \
    "  local oe, od = num(f[6]), num(f[7])\n"                                                      \
    "  if od > 0 and v <= od then return end\n"                                                    \
    "  local t1, w1, n1, u1 = contrib(ol, orr, on, om, od)\n"                                      \
    "  local nl, nr, nn, nx, ne, nd = ol, orr, on, ox, oe, 0\n"                                    \
    "  if drop then nd = v end\n"                                                                  \
    "  if l and l > nl then nl = l end\n"                                                          \
    "  if r and r > nr then nr = r end\n"                                                          \
    "  if (n or x) and v >= oe then\n"                                                             \
    "    if n then nn = n end\n"                                                                   \
    "    if x then nx = x end\n"                                                                   \
    "    ne = v\n"                                                                                 \
    "  end\n"                                                                                      \
    "  local nm = 0\n"                                                                             \
    "  if nx > now then nm = 1 end\n"                                                              \
    "  local t2, w2, n2, u2 = contrib(nl, nr, nn, nm, nd)\n"                                       \
    "  redis.call('HSET', k, 'l:'..cid, nl, 'r:'..cid, nr, 'n:'..cid, nn, 'x:'..cid, nx,\n"        \
    "             'm:'..cid, nm, 'e:'..cid, ne, 'd:'..cid, nd)\n"                                  \
    "  redis.call('HINCRBY', k, 'total', t2 - t1)\n"                                               \
    "  redis.call('HINCRBY', k, 'with', w2 - w1)\n"                                                \
    "  redis.call('HINCRBY', k, 'mentions', n2 - n1)\n"                                            \
    "  redis.call('HINCRBY', k, 'muted', u2 - u1)\n"                                               \
    "  if nm == 1 then\n"                                                                          \
    "    local xm = num(redis.call('HGET', k, 'xmin'))\n"                                          \
    "    if xm == 0 or nx < xm then redis.call('HSET', k, 'xmin', nx) end\n"                       \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "local function recount(k, now)\n"                                                             \
    "  local all = redis.call('HGETALL', k)\n"                                                     \
    "  local h = {}\n"                                                                             \
    "  for i = 1, #all, 2 do h[all[i]] = all[i + 1] end\n"                                         \
    "  local total, with, mentions, muted, xmin = 0, 0, 0, 0, 0\n"                                 \
    "  for f, v in pairs(h) do\n"                                                                  \
    "    if string.sub(f, 1, 2) == 'l:' then\n"                                                    \
    "      local cid = string.sub(f, 3)\n"                                                         \
    "      local x = num(h['x:'..cid])\n"                                                          \
    "      local m = 0\n"                                                                          \
    "      if x > now then m = 1 end\n"                                                            \
    "      redis.call('HSET', k, 'm:'..cid, m)\n"                                                  \
    "      if m == 1 and (xmin == 0 or x < xmin) then xmin = x end\n"                              \
    "      local t, w, n, u = contrib(num(v), num(h['r:'..cid]), num(h['n:'..cid]), m,\n"          \
    "                                 num(h['d:'..cid]))\n"                                        \
    "      total, with, mentions, muted = total + t, with + w, mentions + n, muted + u\n"          \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  redis.call('HSET', k, 'total', total, 'with', with, 'mentions', mentions, 'muted', muted,\n" \
    "             'xmin', xmin, 'v', 1)\n"                                                         \
    "  return {total, with, mentions, muted}\n"                                                    \
    "end\n"

/* KEYS[1] the user's hash, KEYS[2] the conversation's registry; ARGV now, cid, version, l, r,
 * n, x ("" = unchanged), drop, membership (1 joined, -1 left, 0 unchanged), user. A newer
 * membership version replaces an older one in the registry. {1} applied, {0} no hash (nothing
 * cached: the next read builds it). */
static const char UPDATE_LUA[] = UNREAD_LUA_LIB
    "local v, m = num(ARGV[3]), num(ARGV[9])\n"
    "if m ~= 0 and redis.call('EXISTS', KEYS[2]) == 1 then\n"
    "  local old = tonumber(redis.call('HGET', KEYS[2], ARGV[10]))\n"
    "  if old == nil or v >= math.abs(old) then redis.call('HSET', KEYS[2], ARGV[10], m * v) end\n"
    "end\n"
    "if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end\n"
    "apply(KEYS[1], ARGV[2], v, tonumber(ARGV[4]), tonumber(ARGV[5]),\n"
    "      tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8] == '1', num(ARGV[1]))\n"
    "return {1}\n";

/* KEYS[1] the conversation's registry; ARGV now, cid, version, l, tenant: raises l:<cid> in
 * the hash of every member it lists as joined. {members} or {-1} when it is not built. */
static const char FANOUT_REG_LUA[] = UNREAD_LUA_LIB
    "if redis.call('HGET', KEYS[1], 'v') ~= '1' then return {-1} end\n"
    "local all = redis.call('HGETALL', KEYS[1])\n"
    "local n = 0\n"
    "for i = 1, #all, 2 do\n"
    "  local u, ver = all[i], tonumber(all[i + 1])\n"
    "  if u ~= 'v' and u ~= 'b' and ver >= 0 then\n"
    "    local k = 'unread:'..ARGV[5]..':'..u\n"
    "    if redis.call('EXISTS', k) == 1 then\n"
    "      apply(k, ARGV[2], num(ARGV[3]), num(ARGV[4]), nil, nil, nil, false, num(ARGV[1]))\n"
    "    end\n"
    "    n = n + 1\n"
    "  end\n"
    "end\n"
    "return {n}\n";

/* KEYS[1] registry; ARGV ttl_ms, then users active in MongoDB: starts or continues a build,
 * listing each user not listed yet (version 0: any note wins over it). */
static const char REG_ADD_LUA[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then\n"
    "  redis.call('HSET', KEYS[1], 'b', 1)\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[1])\n"
    "end\n"
    "for i = 2, #ARGV do redis.call('HSETNX', KEYS[1], ARGV[i], 0) end\n"
    "return {1}\n";

/* KEYS[1] registry: marks a build complete (when it did not expire meanwhile). */
static const char REG_DONE_LUA[] =
    "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'v', 1) end\n"
    "return {1}\n";

/* KEYS member hashes; ARGV now, cid, version, l: raises l:<cid> where a hash exists. */
static const char FANOUT_LUA[] = UNREAD_LUA_LIB
    "local n = 0\n"
    "for i = 1, #KEYS do\n"
    "  if redis.call('EXISTS', KEYS[i]) == 1 then\n"
    "    apply(KEYS[i], ARGV[2], num(ARGV[3]), num(ARGV[4]), nil, nil, nil, false, num(ARGV[1]))\n"
    "    n = n + 1\n"
    "  end\n"
    "end\n"
    "return {n}\n";

/* KEYS[1] hash; ARGV now: {total, with, mentions, muted}, or {-1} when not built. */
static const char TOTALS_LUA[] = UNREAD_LUA_LIB
    "local h = redis.call('HMGET', KEYS[1], 'v', 'xmin', 'total', 'with', 'mentions', 'muted')\n"
    "if h[1] ~= '1' then return {-1} end\n"
    "local xm = num(h[2])\n"
    "if xm > 0 and xm <= num(ARGV[1]) then return recount(KEYS[1], num(ARGV[1])) end\n"
    "return {num(h[3]), num(h[4]), num(h[5]), num(h[6])}\n";

/* KEYS[1] hash; ARGV ttl_ms: starts a build (the hash then takes updates). */
static const char BEGIN_LUA[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then\n"
    "  redis.call('HSET', KEYS[1], 'b', 1)\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[1])\n"
    "end\n"
    "return {1}\n";

/* KEYS[1] hash; ARGV now: ends a build, {total, with, mentions, muted} or {-1} (expired). */
static const char FINISH_LUA[] = UNREAD_LUA_LIB
    "if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end\n"
    "return recount(KEYS[1], num(ARGV[1]))\n";

struct messaging_unread_note {
    char user[CM_JWT_ID_MAX + 1];
    int64_t r, n, x; /* -1: unchanged */
    int drop;
    int membership; /* 1 joined, -1 left, 0 unchanged */
};

static void hash_key(const char *tenant, const char *user, char *out, size_t n)
{
    snprintf(out, n, "unread:%s:%s", tenant, user);
}

static void registry_key(const char *tenant, const char *cid, char *out, size_t n)
{
    snprintf(out, n, "unreadm:%s:%s", tenant, cid);
}

void messaging_unread_note(messaging_tx *tx, const char *user, int64_t read_seq,
                           int64_t mentions, int64_t muted_until, int membership)
{
    struct messaging_unread_note *grown, *note;

    for (int i = 0; i < tx->nunread; i++)
        if (strcmp(tx->unread[i].user, user) == 0) {
            note = &tx->unread[i]; /* a later change in the same section wins */
            goto fill;
        }
    grown = realloc(tx->unread, sizeof(*grown) * (size_t)(tx->nunread + 1));
    if (grown == NULL)
        return; /* the cached totals go stale until they expire (UNREAD_TTL_MS) */
    tx->unread = grown;
    note = &tx->unread[tx->nunread++];
    memset(note, 0, sizeof(*note));
    note->r = note->n = note->x = -1;
    snprintf(note->user, sizeof(note->user), "%s", user);
fill:
    if (read_seq >= 0)
        note->r = read_seq;
    if (mentions >= 0)
        note->n = mentions;
    if (muted_until >= 0)
        note->x = muted_until;
    if (membership != 0)
        note->membership = membership;
    note->drop = note->membership < 0;
}

static void int_arg(char *out, int64_t v)
{
    if (v < 0)
        out[0] = '\0';
    else
        snprintf(out, 24, "%lld", (long long)v);
}

static cm_err update(messaging_ctx *ctx, const char *tenant, const char *user, const char *cid,
                     int64_t version, int64_t l, int64_t r, int64_t n, int64_t x, int drop,
                     int membership)
{
    char key[MSG_UNREAD_KEY_MAX], reg[MSG_UNREAD_KEY_MAX], now[24], ver[24], ls[24], rs[24];
    char ns[24], xs[24];
    const char *keys[] = {key, reg};
    const char *args[] = {now, cid, ver, ls, rs, ns, xs, drop ? "1" : "0",
                          membership > 0 ? "1" : membership < 0 ? "-1" : "0", user};
    int64_t out;
    size_t got;

    hash_key(tenant, user, key, sizeof(key));
    registry_key(tenant, cid, reg, sizeof(reg));
    int_arg(now, cm_clock_now_ms());
    int_arg(ver, version);
    int_arg(ls, l);
    int_arg(rs, r);
    int_arg(ns, n);
    int_arg(xs, x);
    return cm_redis_eval_ints(ctx->redis, UPDATE_LUA, 2, keys, 10, args, &out, 1, &got);
}

struct fanout {
    messaging_ctx *ctx;
    const char *tenant, *cid;
    char now[24], ver[24], l[24], ttl[24];
    char reg[MSG_UNREAD_KEY_MAX];
    int build; /* also list the members in the registry */
    char keys[UNREAD_FANOUT_KEYS][MSG_UNREAD_KEY_MAX];
    char users[UNREAD_FANOUT_KEYS][CM_JWT_ID_MAX + 1];
    int n;
    cm_err rc;
};

/* Lists users[0..n) in registry `reg` (REG_ADD_LUA), at most 15 a call (cm_redis_eval_ints:
 * 16 arguments); `ttl` is UNREAD_TTL_MS as text. */
static cm_err registry_add(messaging_ctx *ctx, const char *reg, const char *ttl,
                           const char *const *users, int n)
{
    const char *keys[] = {reg};
    const char *args[1 + 15];
    int64_t out;
    size_t got;
    cm_err rc = CM_OK;

    args[0] = ttl;
    for (int i = 0; rc == CM_OK && i < n; i += 15) {
        int k = 0;
        for (; k < 15 && i + k < n; k++)
            args[1 + k] = users[i + k];
        rc = cm_redis_eval_ints(ctx->redis, REG_ADD_LUA, 1, keys, (size_t)(1 + k), args, &out, 1, &got);
    }
    return rc;
}

static void fanout_flush(struct fanout *f)
{
    const char *keys[UNREAD_FANOUT_KEYS], *users[UNREAD_FANOUT_KEYS];
    const char *args[] = {f->now, f->cid, f->ver, f->l};
    int64_t out;
    size_t got;
    cm_err rc;

    for (int i = 0; i < f->n; i++) {
        keys[i] = f->keys[i];
        users[i] = f->users[i];
    }
    if (f->n > 0) {
        rc = cm_redis_eval_ints(f->ctx->redis, FANOUT_LUA, (size_t)f->n, keys, 4, args, &out, 1, &got);
        if (rc != CM_OK)
            f->rc = rc;
    }
    if (f->build && registry_add(f->ctx, f->reg, f->ttl, users, f->n) != CM_OK)
        f->build = 0; /* not marked built: the next fan-out tries again */
    f->n = 0;
}

static int fanout_member(const bson_t *member, void *ud)
{
    struct fanout *f = ud;
    const char *uid = cm_bson_str(member, "user_id", "");
    hash_key(f->tenant, uid, f->keys[f->n], MSG_UNREAD_KEY_MAX);
    snprintf(f->users[f->n], sizeof(f->users[f->n]), "%s", uid);
    if (++f->n == UNREAD_FANOUT_KEYS)
        fanout_flush(f);
    return 0;
}

/* Raises l:<cid> to `last_seq` in every active member's hash: one script call over the
 * registry, or the members read from MongoDB (building the registry when it is missing and
 * the conversation small enough). */
static cm_err fanout(messaging_ctx *ctx, const char *tenant, const char *cid, int64_t version,
                     int64_t last_seq, int64_t members)
{
    bson_t q = BSON_INITIALIZER, opts = BSON_INITIALIZER, proj;
    struct fanout *f = calloc(1, sizeof(*f));
    const char *reg_keys[1], *reg_args[5];
    int64_t out;
    size_t got;
    cm_err rc;

    if (f == NULL)
        return CM_ENOMEM;
    f->ctx = ctx;
    f->tenant = tenant;
    f->cid = cid;
    int_arg(f->now, cm_clock_now_ms());
    int_arg(f->ver, version);
    int_arg(f->l, last_seq);
    int_arg(f->ttl, UNREAD_TTL_MS);
    registry_key(tenant, cid, f->reg, sizeof(f->reg));
    if (members <= UNREAD_REGISTRY_MAX) {
        reg_keys[0] = f->reg;
        reg_args[0] = f->now;
        reg_args[1] = cid;
        reg_args[2] = f->ver;
        reg_args[3] = f->l;
        reg_args[4] = tenant;
        rc = cm_redis_eval_ints(ctx->redis, FANOUT_REG_LUA, 1, reg_keys, 5, reg_args, &out, 1, &got);
        if (rc != CM_OK || (got == 1 && out >= 0)) {
            free(f);
            return rc;
        }
        f->build = 1; /* not built yet */
    }
    BSON_APPEND_UTF8(&q, "conversation_id", cid);
    BSON_APPEND_UTF8(&q, "state", "active");
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
    BSON_APPEND_INT32(&proj, "user_id", 1);
    bson_append_document_end(&opts, &proj);
    rc = cm_mongo_find(ctx->db, MSG_COLL_MEMBERS, &q, &opts, fanout_member, f);
    fanout_flush(f);
    if (rc == CM_OK)
        rc = f->rc;
    if (rc == CM_OK && f->build) { /* every member listed: the registry serves from now on */
        const char *keys[] = {f->reg};
        if (cm_redis_eval_ints(ctx->redis, REG_DONE_LUA, 1, keys, 0, NULL, &out, 1, &got) != CM_OK)
            cm_warn("unread registry of conversation %s not marked built", cid);
    }
    bson_destroy(&q);
    bson_destroy(&opts);
    free(f);
    return rc;
}

void messaging_unread_apply(messaging_tx *tx, int64_t opened_seq)
{
    cm_err rc = CM_OK, r;

    /* Notes first: a member who joined in this section is in the registry for the fan-out. */
    for (int i = 0; i < tx->nunread; i++) {
        struct messaging_unread_note *u = &tx->unread[i];
        r = update(tx->ctx, tx->tenant, u->user, tx->cid, tx->last_eseq, tx->last_seq, u->r, u->n,
                   u->x, u->drop, u->membership);
        if (r != CM_OK)
            rc = r;
    }
    if (tx->last_seq > opened_seq) {
        bson_t view;
        messaging_tx_conv_view(tx, &view);
        r = fanout(tx->ctx, tx->tenant, tx->cid, tx->last_eseq, tx->last_seq,
                   cm_bson_int(&view, "member_count", 0));
        bson_destroy(&view);
        if (r != CM_OK)
            rc = r;
    }
    if (rc != CM_OK)
        cm_warn("unread totals of conversation %s not updated (%s): stale until rebuilt", tx->cid,
                cm_strerror(rc));
    messaging_unread_free(tx);
}

void messaging_unread_free(messaging_tx *tx)
{
    free(tx->unread);
    tx->unread = NULL;
    tx->nunread = 0;
}

void messaging_unread_seed(messaging_ctx *ctx, const char *tenant, const char *cid,
                           const char *const *users, int n)
{
    char reg[MSG_UNREAD_KEY_MAX], ttl[24];
    const char *keys[] = {reg};
    int64_t out;
    size_t got;

    if (n > UNREAD_REGISTRY_MAX)
        return;
    registry_key(tenant, cid, reg, sizeof(reg));
    int_arg(ttl, UNREAD_TTL_MS);
    /* On a failure the registry stays unbuilt: the first message's fan-out reads MongoDB. */
    if (registry_add(ctx, reg, ttl, users, n) == CM_OK &&
        cm_redis_eval_ints(ctx->redis, REG_DONE_LUA, 1, keys, 0, NULL, &out, 1, &got) != CM_OK)
        cm_warn("unread registry of new conversation %s not marked built", cid);
}

cm_err messaging_unread_forget(messaging_ctx *ctx, const char *tenant, const char *user)
{
    char key[MSG_UNREAD_KEY_MAX];
    hash_key(tenant, user, key, sizeof(key));
    return cm_redis_del(ctx->redis, key);
}

/* The sums computed from MongoDB: the caller's active memberships and their conversations'
 * last seqs (two queries, one record per conversation). With `key` set, each conversation is
 * also written into the hash being built. */
struct slow {
    messaging_ctx *ctx;
    messaging_memberships *ms;
    const char *tenant, *user;
    int64_t now;
    messaging_unread_totals t;
    int build;   /* also feed the hash */
    cm_err hash; /* first failure feeding it */
};

static int slow_conversation(const bson_t *conv, void *ud)
{
    struct slow *s = ud;
    const char *cid = cm_bson_str(conv, "_id", "");
    for (int i = 0; i < s->ms->n; i++) {
        const bson_t *m = s->ms->items[i].doc;
        int64_t last, rs, n, x, unread;
        if (strcmp(s->ms->items[i].cid, cid) != 0)
            continue;
        last = cm_bson_int(conv, "last_seq", 0);
        rs = cm_bson_int(m, "read_seq", 0);
        n = messaging_unread_mentions(m, rs);
        x = cm_bson_int(m, "muted_until", 0);
        unread = last > rs ? last - rs : 0;
        if (x > s->now) {
            s->t.muted_unread += unread;
        } else {
            s->t.unread += unread;
            s->t.with_unread += unread > 0;
        }
        s->t.mentions += n;
        /* Version 0: a change applied while this runs (a newer version) wins over it. */
        if (s->build && s->hash == CM_OK)
            s->hash = update(s->ctx, s->tenant, s->user, cid, 0, last, rs, n, x < 0 ? 0 : x, 0, 0);
        break;
    }
    return 0;
}

static cm_err slow_sum(messaging_ctx *ctx, const char *tenant, const char *user, struct slow *s)
{
    messaging_memberships ms = {0};
    bson_t f = BSON_INITIALIZER, in, arr, opts = BSON_INITIALIZER, proj;
    char k[16];
    cm_err rc;

    s->ctx = ctx;
    s->tenant = tenant;
    s->user = user;
    s->now = cm_clock_now_ms();
    rc = messaging_memberships_load(ctx, tenant, user, 1, &ms);
    if (rc == CM_OK && ms.n > 0) {
        BSON_APPEND_UTF8(&f, "tenant", tenant);
        BSON_APPEND_DOCUMENT_BEGIN(&f, "_id", &in);
        BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
        for (int i = 0; i < ms.n; i++) {
            snprintf(k, sizeof(k), "%d", i);
            BSON_APPEND_UTF8(&arr, k, ms.items[i].cid);
        }
        bson_append_array_end(&in, &arr);
        bson_append_document_end(&f, &in);
        BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
        BSON_APPEND_INT32(&proj, "last_seq", 1);
        bson_append_document_end(&opts, &proj);
        s->ms = &ms;
        rc = cm_mongo_find(ctx->db, MSG_COLL_CONVERSATIONS, &f, &opts, slow_conversation, s);
    }
    messaging_memberships_free(&ms);
    bson_destroy(&f);
    bson_destroy(&opts);
    return rc;
}

static int totals_of(const int64_t *v, size_t n, messaging_unread_totals *out)
{
    if (n != 4 || v[0] < 0)
        return -1;
    out->unread = v[0];
    out->with_unread = v[1];
    out->mentions = v[2];
    out->muted_unread = v[3];
    return 0;
}

cm_err messaging_unread_totals_get(messaging_ctx *ctx, const char *tenant, const char *user,
                                   messaging_unread_totals *out, int *cached)
{
    char key[MSG_UNREAD_KEY_MAX], now[24], ttl[24];
    const char *keys[] = {key};
    const char *args[] = {now};
    struct slow s;
    int64_t v[4];
    size_t n = 0;
    cm_err rc;

    memset(out, 0, sizeof(*out));
    *cached = 0;
    hash_key(tenant, user, key, sizeof(key));
    int_arg(now, cm_clock_now_ms());
    if (cm_redis_eval_ints(ctx->redis, TOTALS_LUA, 1, keys, 1, args, v, 4, &n) == CM_OK &&
        totals_of(v, n, out) == 0) {
        *cached = 1;
        return CM_OK;
    }
    /* Not built (or Redis unreachable): sum from MongoDB, building the hash on the way. */
    memset(&s, 0, sizeof(s));
    int_arg(ttl, UNREAD_TTL_MS);
    args[0] = ttl;
    s.build = cm_redis_eval_ints(ctx->redis, BEGIN_LUA, 1, keys, 1, args, v, 4, &n) == CM_OK;
    rc = slow_sum(ctx, tenant, user, &s);
    if (rc != CM_OK)
        return rc;
    *out = s.t;
    args[0] = now;
    int_arg(now, cm_clock_now_ms());
    if (s.build && s.hash == CM_OK &&
        cm_redis_eval_ints(ctx->redis, FINISH_LUA, 1, keys, 1, args, v, 4, &n) == CM_OK &&
        totals_of(v, n, out) == 0)
        *cached = 1;
    return CM_OK;
}
