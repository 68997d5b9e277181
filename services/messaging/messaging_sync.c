/* messaging_sync.c - GET (and POST) /v1/sync: everything the caller missed across their
 * conversations since a cursor, read from the conversations' event logs, in log order per
 * conversation, then the cursor to continue from.
 *
 * The cursor (common/cursor.h) holds, per conversation, the last log seq (eseq) the client
 * applied; it is stateless, so the WebSocket service decodes and advances the same cursor from
 * the eseq of each event it delivers. Per conversation the answer is one of:
 *   - the log entries after the client's position, in order (gap-free: eseqs are allocated by
 *     insertion, so a missing one is either not yet visible, and the answer stops before it,
 *     or deleted by retention, and the answer is a reset);
 *   - a `reset` with a snapshot of the conversation (its shared fields, the caller's own
 *     settings, and the member list up to 100 members) and the position the snapshot stands
 *     for, when the cursor knows nothing of the conversation (the caller joined after the
 *     cursor was made) or when the entries behind the cursor were deleted by retention;
 *     messages are then read with GET /v1/conversations/{id}/messages;
 *   - for a conversation the caller left: the entries up to and including their own
 *     member.removed, after which the cursor forgets the conversation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/cursor.h"
#include "common/json.h"
#include "common/log.h"
#include "messaging.h"

/* A conversation the sync considers: the caller's membership, the conversation, the position. */
struct track {
    const char *cid;
    const bson_t *member;
    bson_t *conv; /* heap (bson_t needs an alignment calloc does not give) */
    int have_conv, active;
    int64_t pos;     /* the client's position; -1 when the cursor does not know it */
    int64_t target;  /* the log position to reach: last_eseq, or left_eseq when left */
    int keep;        /* whether the next cursor holds the conversation */
};

struct sync_run {
    messaging_ctx *ctx;
    const cm_jwt_claims *c;
    cJSON *items;
    int budget;    /* items (and log entries looked at) still allowed in this answer */
    int more;      /* some conversation is still behind */
};

struct tracks {
    struct track *t;
    int n;
};

static int collect_conv(const bson_t *doc, void *ud)
{
    struct tracks *ts = ud;
    const char *id = cm_bson_str(doc, "_id", "");
    for (int i = 0; i < ts->n; i++)
        if (!ts->t[i].have_conv && strcmp(ts->t[i].cid, id) == 0) {
            ts->t[i].conv = bson_copy(doc);
            ts->t[i].have_conv = 1;
            break;
        }
    return 0;
}

/* Loads the conversations of the tracks in one query. */
static cm_err load_conversations(messaging_ctx *ctx, const char *tenant, struct track *t, int n)
{
    bson_t f = BSON_INITIALIZER, in, arr;
    struct tracks ts = {t, n};
    char key[16];
    cm_err rc;

    if (n == 0)
        return CM_OK;
    BSON_APPEND_UTF8(&f, "tenant", tenant);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "_id", &in);
    BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "%d", i);
        BSON_APPEND_UTF8(&arr, key, t[i].cid);
    }
    bson_append_array_end(&in, &arr);
    bson_append_document_end(&f, &in);
    rc = cm_mongo_find(ctx->db, MSG_COLL_CONVERSATIONS, &f, NULL, collect_conv, &ts);
    bson_destroy(&f);
    return rc;
}

static int collect_members(const bson_t *doc, void *ud)
{
    cJSON_AddItemToArray(ud, messaging_member_json(doc));
    return 0;
}

/* A reset: the conversation as it is now and the position that snapshot stands for. The
 * position comes from the conversation read before the snapshot, so any change the snapshot
 * misses has a later eseq and follows. */
static cm_err add_reset(struct sync_run *run, struct track *t, const char *reason)
{
    cJSON *item = cJSON_CreateObject(), *data, *conv;
    bson_t member;
    cm_err rc;

    cJSON_AddStringToObject(item, "conversation_id", t->cid);
    cJSON_AddStringToObject(item, "type", "reset");
    cJSON_AddStringToObject(item, "reason", reason);
    cJSON_AddNumberToObject(item, "eseq", (double)t->target);
    data = cJSON_AddObjectToObject(item, "data");
    conv = messaging_conversation_json(t->conv);
    if (t->active) {
        /* The caller's own settings, read after the conversation (see above). */
        rc = messaging_member_find(run->ctx, t->cid, run->c->sub, &member);
        if (rc == CM_OK) {
            messaging_conversation_add_mine(conv, t->conv, &member, cm_clock_now_ms());
            bson_destroy(&member);
        } else if (rc != CM_ENOTFOUND) {
            cJSON_Delete(conv);
            cJSON_Delete(item);
            return rc;
        }
    }
    cJSON_AddItemToObject(data, "conversation", conv);
    cJSON_AddBoolToObject(data, "member", t->active);
    if (t->active && cm_bson_int(t->conv, "member_count", 0) <= MSG_WHO_READ_MAX) {
        bson_t f = BSON_INITIALIZER, opts = BSON_INITIALIZER, sort;
        cJSON *members = cJSON_AddArrayToObject(data, "members");
        BSON_APPEND_UTF8(&f, "conversation_id", t->cid);
        BSON_APPEND_UTF8(&f, "state", "active");
        BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
        BSON_APPEND_INT32(&sort, "user_id", 1);
        bson_append_document_end(&opts, &sort);
        rc = cm_mongo_find(run->ctx->db, MSG_COLL_MEMBERS, &f, &opts, collect_members, members);
        bson_destroy(&f);
        bson_destroy(&opts);
        if (rc != CM_OK) {
            cJSON_Delete(item);
            return rc;
        }
    }
    cJSON_AddItemToArray(run->items, item);
    run->budget--;
    t->pos = t->target;
    return CM_OK;
}

struct fetch {
    struct sync_run *run;
    struct track *t;
    int64_t expected;
    int gap;
};

/* Whether the entry is about a message the member hid (for_me). */
static int hidden_for_caller(const bson_t *member, const char *type, const cJSON *data)
{
    const cJSON *id;
    bson_iter_t it, arr;
    if (strncmp(type, "reaction.", 9) == 0)
        id = cJSON_GetObjectItemCaseSensitive(data, "message_id");
    else if (strncmp(type, "message.", 8) == 0 && strcmp(type, "message.hidden") != 0 &&
             strcmp(type, "message.delivered") != 0)
        id = cJSON_GetObjectItemCaseSensitive(data, "id");
    else
        return 0;
    if (!cJSON_IsString(id) || !bson_iter_init_find(&it, member, "hidden") ||
        !BSON_ITER_HOLDS_ARRAY(&it) || !bson_iter_recurse(&it, &arr))
        return 0;
    while (bson_iter_next(&arr))
        if (BSON_ITER_HOLDS_UTF8(&arr) && strcmp(bson_iter_utf8(&arr, NULL), id->valuestring) == 0)
            return 1;
    return 0;
}

static int collect_event(const bson_t *ev, void *ud)
{
    struct fetch *f = ud;
    int64_t eseq = cm_bson_int(ev, "eseq", 0);
    const char *audience = cm_bson_str(ev, "audience", NULL);
    char ts[CM_RFC3339_LEN];
    cJSON *item, *data;

    if (eseq != f->expected) {
        f->gap = 1; /* not yet visible, or deleted: stop before it */
        return 1;
    }
    f->expected++;
    f->t->pos = eseq;
    f->run->budget--;
    /* Another member's own settings: skipped (still counted: the budget bounds the work). */
    if (audience && strcmp(audience, f->run->c->sub) != 0)
        return f->run->budget <= 0;
    data = cJSON_Parse(cm_bson_str(ev, "data", "{}"));
    /* A message the caller deleted for themself stays out of their sync, whatever happens
     * to it later (its message.hidden entry itself is delivered). */
    if (data && hidden_for_caller(f->t->member, cm_bson_str(ev, "type", ""), data)) {
        cJSON_Delete(data);
        return f->run->budget <= 0;
    }
    item = cJSON_CreateObject();
    cJSON_AddStringToObject(item, "conversation_id", f->t->cid);
    cJSON_AddNumberToObject(item, "eseq", (double)eseq);
    cJSON_AddStringToObject(item, "id", cm_bson_str(ev, "_id", ""));
    cJSON_AddStringToObject(item, "type", cm_bson_str(ev, "type", ""));
    cm_clock_rfc3339(cm_bson_int(ev, "created_at", 0), ts);
    cJSON_AddStringToObject(item, "time", ts);
    cJSON_AddItemToObject(item, "data", data ? data : cJSON_CreateObject());
    cJSON_AddItemToArray(f->run->items, item);
    return f->run->budget <= 0;
}

/* Delivers the log entries after t->pos up to t->target (as many as the budget allows). */
static cm_err deliver(struct sync_run *run, struct track *t)
{
    bson_t f = BSON_INITIALIZER, range, opts = BSON_INITIALIZER, sort;
    struct fetch fe = {run, t, t->pos + 1, 0};
    cm_err rc;

    BSON_APPEND_UTF8(&f, "conversation_id", t->cid);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "eseq", &range);
    BSON_APPEND_INT64(&range, "$gt", t->pos);
    BSON_APPEND_INT64(&range, "$lte", t->target);
    bson_append_document_end(&f, &range);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "eseq", 1);
    bson_append_document_end(&opts, &sort);
    BSON_APPEND_INT64(&opts, "limit", run->budget);
    rc = cm_mongo_find(run->ctx->db, MSG_COLL_EVENTS, &f, &opts, collect_event, &fe);
    bson_destroy(&f);
    bson_destroy(&opts);
    if (rc != CM_OK)
        return rc;
    /* Entries missing below the retention floor are gone for good: start over from a
     * snapshot. Entries missing above it are being written; the next sync gets them. */
    if (t->pos < t->target && fe.expected < cm_bson_int(t->conv, "log_floor", 1) &&
        run->budget > 0)
        return add_reset(run, t, "history_expired");
    return CM_OK;
}

static cm_err sync_one(struct sync_run *run, struct track *t)
{
    int64_t floor = cm_bson_int(t->conv, "log_floor", 1);
    int64_t joined = cm_bson_int(t->member, "joined_eseq", 1);

    if (t->active) {
        if (t->pos < 0 || t->pos < joined - 1)
            return add_reset(run, t, "joined");
    }
    if (t->pos + 1 < floor && t->pos < t->target)
        return add_reset(run, t, "history_expired");
    if (t->pos < t->target)
        return deliver(run, t);
    return CM_OK;
}

static void reply_sync(cm_http_req *req, messaging_ctx *ctx, const cm_jwt_claims *c,
                       const char *since, long limit)
{
    messaging_memberships ms = {0};
    struct track *t = NULL;
    cm_cursor_pos *pos = NULL, *next = NULL;
    size_t npos = 0, nnext = 0, cap;
    int n = 0;
    char *cursor = NULL;
    struct sync_run run = {ctx, c, NULL, (int)limit, 0};
    cJSON *body;
    cm_err rc;

    if (since && *since) {
        cap = strlen(since) / 12 + 1; /* at least 9 bytes (12 characters) per position */
        if (cap > CM_CURSOR_MAX)
            cap = CM_CURSOR_MAX;
        pos = calloc(cap, sizeof(*pos));
        if (pos == NULL) {
            cm_http_reply_error(req, CM_ENOMEM, NULL);
            goto out;
        }
        rc = cm_cursor_decode(since, pos, cap, &npos);
        if (rc != CM_OK) {
            cm_http_reply_error(req, rc == CM_ENOMEM ? rc : CM_EINVAL,
                                "the sync cursor is malformed; pass back next_cursor as given, or omit it for now");
            goto out;
        }
    }
    rc = messaging_memberships_load(ctx, c->tid, c->sub, 0, &ms);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "memberships could not be loaded");
        goto out;
    }
    t = calloc((size_t)ms.n + 1, sizeof(*t));
    next = calloc((size_t)ms.n + 1, sizeof(*next));
    if (t == NULL || next == NULL) {
        cm_http_reply_error(req, CM_ENOMEM, NULL);
        goto out;
    }
    for (int i = 0; i < ms.n; i++) {
        const bson_t *m = ms.items[i].doc;
        int active = strcmp(cm_bson_str(m, "state", ""), "active") == 0;
        cm_cursor_pos *p = cm_cursor_find(pos, npos, cm_cursor_key(ms.items[i].cid));
        /* A conversation left before the cursor was made is not followed any more. */
        if (!active && (p == NULL || p->seq >= cm_bson_int(m, "left_eseq", 0)))
            continue;
        t[n].cid = ms.items[i].cid;
        t[n].member = m;
        t[n].active = active;
        t[n].pos = p ? p->seq : -1;
        n++;
    }
    rc = load_conversations(ctx, c->tid, t, n);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "conversations could not be loaded");
        goto out;
    }
    run.items = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        if (!t[i].have_conv)
            continue; /* a membership whose conversation was never completed */
        t[i].target = t[i].active ? cm_bson_int(t[i].conv, "last_eseq", 0)
                                  : cm_bson_int(t[i].member, "left_eseq", 0);
        if (since == NULL || *since == '\0')
            t[i].pos = t[i].target; /* "now": nothing to deliver, only a position */
        else if (run.budget > 0 && (rc = sync_one(&run, &t[i])) != CM_OK) {
            cm_http_reply_error(req, rc, "the conversation log could not be read");
            goto out;
        }
        if (t[i].pos < t[i].target)
            run.more = 1;
        /* Keep followed conversations; a left one until its member.removed was delivered. */
        t[i].keep = t[i].pos >= 0 && (t[i].active || t[i].pos < t[i].target);
        if (t[i].keep)
            next[nnext++] = (cm_cursor_pos){cm_cursor_key(t[i].cid), t[i].pos};
    }
    rc = cm_cursor_encode(next, nnext, &cursor);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the cursor could not be made");
        goto out;
    }
    body = cJSON_CreateObject();
    cJSON_AddItemToObject(body, "items", run.items);
    run.items = NULL;
    cJSON_AddStringToObject(body, "next_cursor", cursor);
    cJSON_AddBoolToObject(body, "has_more", run.more);
    cm_http_reply_json(req, 200, body);
out:
    cJSON_Delete(run.items);
    for (int i = 0; i < n; i++)
        if (t[i].have_conv)
            bson_destroy(t[i].conv);
    free(t);
    free(pos);
    free(next);
    free(cursor);
    messaging_memberships_free(&ms);
}

/* GET /v1/sync?since=<cursor>&limit=N and POST /v1/sync {"since": ..., "limit": N} (for
 * cursors too long for a URL: about 14 characters per conversation). */
void messaging_sync(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    static const char *const allowed[] = {"since", "limit", NULL};
    cm_jwt_claims c;
    const char *since = NULL;
    char detail[256];
    long limit = MSG_SYNC_DEFAULT;
    cJSON *body;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        return;
    if (strcmp(cm_http_method(req), "POST") == 0) {
        if (cm_http_json_body(req, &body) != CM_OK)
            return;
        if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
            cm_json_string(body, "since", 0, 0, 400000, &since, detail, sizeof(detail)) ||
            cm_json_long(body, "limit", 0, 1, 100000, &limit, detail, sizeof(detail))) {
            cm_http_reply_error(req, CM_EINVAL, detail);
            return;
        }
        if (limit > MSG_SYNC_MAX)
            limit = MSG_SYNC_MAX;
    } else {
        since = cm_http_query(req, "since");
        if (cm_http_query_long(req, "limit", MSG_SYNC_DEFAULT, 1, MSG_SYNC_MAX, &limit) != CM_OK)
            return;
    }
    reply_sync(req, ctx, &c, since, limit);
}
