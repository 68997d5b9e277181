/* messaging_sanctions.c - bans and mutes (tenant-wide or per conversation, with an expiry) and
 * flags on messages that moderators resolve (dismiss, delete, ban). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "common/uuid.h"
#include "messaging.h"

#define COLL_SANCTIONS "sanctions"
#define COLL_FLAGS "flags"
#define FOREVER INT64_MAX

/* A sanction's id: "<kind>/<tenant>/<conversation or *>/<user>" (one per kind and scope). */
static void sanction_id(char *out, size_t n, const char *kind, const char *tenant,
                        const char *cid, const char *user)
{
    snprintf(out, n, "%s/%s/%s/%s", kind, tenant, cid && *cid ? cid : "*", user);
}

static cJSON *sanction_json(const bson_t *s)
{
    char ts[CM_RFC3339_LEN];
    cJSON *o = cJSON_CreateObject();
    const char *cid = cm_bson_str(s, "conversation_id", NULL);
    int64_t until = cm_bson_int(s, "until", 0);
    cJSON_AddStringToObject(o, "user_id", cm_bson_str(s, "user_id", ""));
    cJSON_AddStringToObject(o, "kind", cm_bson_str(s, "kind", ""));
    if (cid)
        cJSON_AddStringToObject(o, "conversation_id", cid);
    else
        cJSON_AddNullToObject(o, "conversation_id");
    if (until == FOREVER) {
        cJSON_AddNullToObject(o, "until");
    } else {
        cm_clock_rfc3339(until, ts);
        cJSON_AddStringToObject(o, "until", ts);
    }
    cJSON_AddStringToObject(o, "reason", cm_bson_str(s, "reason", ""));
    cJSON_AddStringToObject(o, "by", cm_bson_str(s, "by", ""));
    cm_clock_rfc3339(cm_bson_int(s, "created_at", 0), ts);
    cJSON_AddStringToObject(o, "created_at", ts);
    return o;
}

struct active {
    int64_t now;
    bson_t *first; /* the first active sanction found (heap), or NULL */
    int ban_first;
};

static int pick_active(const bson_t *doc, void *ud)
{
    struct active *a = ud;
    int ban = strcmp(cm_bson_str(doc, "kind", ""), "ban") == 0;
    if (cm_bson_int(doc, "until", 0) <= a->now)
        return 0; /* expired: as if lifted */
    if (a->first == NULL || (ban && !a->ban_first)) {
        if (a->first)
            bson_destroy(a->first);
        a->first = bson_copy(doc);
        a->ban_first = ban;
    }
    return 0;
}

/* Finds an active sanction of `user` (tenant-wide or in `cid`), bans before mutes; `kinds`
 * 1: bans only, 2: bans and mutes. `*out` is a heap copy or NULL. */
static cm_err sanction_find(messaging_ctx *ctx, const char *tenant, const char *cid,
                            const char *user, int kinds, bson_t **out)
{
    static const char *const names[] = {"ban", "mute"};
    char ids[4][CM_UUID_STRLEN + 3 * CM_JWT_ID_MAX + 16], k[16];
    bson_t f = BSON_INITIALIZER, in, arr;
    struct active a = {cm_clock_now_ms(), NULL, 0};
    int n = 0;
    cm_err rc;

    for (int kind = 0; kind < kinds; kind++) {
        sanction_id(ids[n++], sizeof(ids[0]), names[kind], tenant, NULL, user);
        if (cid)
            sanction_id(ids[n++], sizeof(ids[0]), names[kind], tenant, cid, user);
    }
    BSON_APPEND_DOCUMENT_BEGIN(&f, "_id", &in);
    BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
    for (int i = 0; i < n; i++) {
        snprintf(k, sizeof(k), "%d", i);
        BSON_APPEND_UTF8(&arr, k, ids[i]);
    }
    bson_append_array_end(&in, &arr);
    bson_append_document_end(&f, &in);
    rc = cm_mongo_find(ctx->db, COLL_SANCTIONS, &f, NULL, pick_active, &a);
    bson_destroy(&f);
    if (rc != CM_OK) {
        if (a.first)
            bson_destroy(a.first);
        return rc;
    }
    *out = a.first;
    return CM_OK;
}

/* Writes "banned from this conversation until ..." style text for a sanction. */
static void sanction_text(const bson_t *s, const char *who, char *out, size_t n)
{
    char ts[CM_RFC3339_LEN];
    int64_t until = cm_bson_int(s, "until", 0);
    cm_clock_rfc3339(until, ts);
    snprintf(out, n, "%s %s %s%s%s", who,
             strcmp(cm_bson_str(s, "kind", ""), "ban") == 0 ? "banned" : "muted",
             cm_bson_str(s, "conversation_id", NULL) ? "in this conversation" : "in this tenant",
             until == FOREVER ? "" : " until ", until == FOREVER ? "" : ts);
}

cm_err messaging_sanction_check(cm_http_req *req, messaging_ctx *ctx, const cm_jwt_claims *c,
                                const char *cid)
{
    bson_t *s = NULL;
    char detail[200];
    cm_err rc = sanction_find(ctx, c->tid, cid, c->sub, 2, &s);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "sanctions could not be read");
        return rc;
    }
    if (s == NULL)
        return CM_OK;
    sanction_text(s, "you are", detail, sizeof(detail));
    bson_destroy(s);
    cm_http_reply_error(req, CM_EFORBIDDEN, detail);
    return CM_EFORBIDDEN;
}

int messaging_sanction_banned(messaging_ctx *ctx, const char *tenant, const char *cid,
                              const char *user)
{
    bson_t *s = NULL;
    if (sanction_find(ctx, tenant, cid, user, 1, &s) != CM_OK)
        return 0; /* unreadable: the send-time check still applies */
    if (s == NULL)
        return 0;
    bson_destroy(s);
    return 1;
}

/* Who may sanction in `cid` (NULL: tenant-wide): tenant moderators everywhere, the
 * conversation's owners and admins in it. Answers 403/404 itself. */
static int may_sanction(cm_http_req *req, messaging_ctx *ctx, const cm_jwt_claims *c,
                        const char *cid)
{
    bson_t conv, me;
    int ok;
    if (cid == NULL) {
        if (messaging_is_moderator(c))
            return 1;
        cm_http_reply_error(req, CM_EFORBIDDEN, "only the tenant's moderators sanction tenant-wide");
        return 0;
    }
    if (messaging_is_moderator(c)) {
        bson_t f = BSON_INITIALIZER;
        BSON_APPEND_UTF8(&f, "_id", cid);
        BSON_APPEND_UTF8(&f, "tenant", c->tid);
        ok = cm_uuid_valid(cid) && cm_mongo_find_one(ctx->db, MSG_COLL_CONVERSATIONS, &f, NULL, &conv) == CM_OK;
        bson_destroy(&f);
        if (ok)
            bson_destroy(&conv);
        else
            cm_http_reply_error(req, CM_ENOTFOUND, "no such conversation");
        return ok;
    }
    if (messaging_conversation_for_member(ctx, c->tid, cid, c->sub, &conv, &me) != CM_OK) {
        cm_http_reply_error(req, CM_ENOTFOUND, "no such conversation");
        return 0;
    }
    ok = strcmp(cm_bson_str(&conv, "type", ""), "direct") != 0 &&
         messaging_role_parse(cm_bson_str(&me, "role", "")) >= MSG_ROLE_ADMIN;
    bson_destroy(&conv);
    bson_destroy(&me);
    if (!ok)
        cm_http_reply_error(req, CM_EFORBIDDEN, "only moderators, and owners and admins of groups and channels, sanction in a conversation");
    return ok;
}

/* A ban in a conversation also ends the membership (a member.removed, reason "banned"). */
static cm_err remove_banned(cm_http_req *req, messaging_ctx *ctx, const cm_jwt_claims *c,
                            const char *cid, const char *user)
{
    messaging_tx tx;
    bson_t target;
    char text[200];
    cm_err rc = messaging_is_moderator(c) ? messaging_tx_open_moderator(ctx, req, c, cid, &tx)
                                          : messaging_tx_open(ctx, req, c, cid, &tx);
    if (rc != CM_OK)
        return rc;
    if (messaging_member_find(ctx, tx.cid, user, &target) == CM_OK) {
        snprintf(text, sizeof(text), "%s was banned", user);
        if ((rc = messaging_system_message(&tx, text)) == CM_OK &&
            (rc = messaging_member_remove(&tx, user, &target, "banned")) == CM_OK)
            rc = messaging_tx_commit(&tx);
        bson_destroy(&target);
    }
    messaging_tx_close(&tx);
    return rc;
}

/* Stores a sanction (replacing one of the same kind and scope). */
static cm_err sanction_store(messaging_ctx *ctx, const cm_jwt_claims *c, const char *kind,
                             const char *cid, const char *user, int64_t until,
                             const char *reason, bson_t *out)
{
    char id[CM_UUID_STRLEN + 3 * CM_JWT_ID_MAX + 16];
    bson_t f = BSON_INITIALIZER;
    cm_err rc;

    sanction_id(id, sizeof(id), kind, c->tid, cid, user);
    bson_init(out);
    BSON_APPEND_UTF8(out, "_id", id);
    BSON_APPEND_UTF8(out, "tenant", c->tid);
    BSON_APPEND_UTF8(out, "kind", kind);
    if (cid)
        BSON_APPEND_UTF8(out, "conversation_id", cid);
    BSON_APPEND_UTF8(out, "user_id", user);
    BSON_APPEND_INT64(out, "until", until);
    BSON_APPEND_UTF8(out, "reason", reason ? reason : "");
    BSON_APPEND_UTF8(out, "by", c->sub);
    BSON_APPEND_DATE_TIME(out, "created_at", cm_clock_now_ms());
    /* Replaced whole: the document's only writers are moderators acting on this one user. */
    BSON_APPEND_UTF8(&f, "_id", id);
    rc = cm_mongo_delete(ctx->db, COLL_SANCTIONS, &f, 0, NULL);
    if (rc == CM_OK)
        rc = cm_mongo_insert(ctx->db, COLL_SANCTIONS, out);
    bson_destroy(&f);
    return rc;
}

/* POST /v1/moderation/sanctions {user_id, kind, conversation_id?, until?, reason?} */
void messaging_sanctions_add(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    static const char *const allowed[] = {"user_id", "kind", "conversation_id", "until", "reason", NULL};
    cm_jwt_claims c;
    const char *user = NULL, *kind = NULL, *cid = NULL, *until_s = NULL, *reason = NULL;
    char detail[256];
    int64_t until = FOREVER;
    bson_t doc;
    cJSON *body;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        return;
    if (cm_http_json_body(req, &body) != CM_OK)
        return;
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_string(body, "user_id", 1, 1, 64, &user, detail, sizeof(detail)) ||
        cm_json_string(body, "kind", 1, 1, 8, &kind, detail, sizeof(detail)) ||
        cm_json_string(body, "conversation_id", 0, 1, 64, &cid, detail, sizeof(detail)) ||
        cm_json_string(body, "until", 0, 1, 40, &until_s, detail, sizeof(detail)) ||
        cm_json_string(body, "reason", 0, 0, 500, &reason, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        return;
    }
    if (!cm_user_id_valid(user) || (strcmp(kind, "ban") != 0 && strcmp(kind, "mute") != 0)) {
        cm_http_reply_error(req, CM_EINVAL, !cm_user_id_valid(user) ? "field 'user_id' must be a user id"
                                                                     : "field 'kind' must be ban or mute");
        return;
    }
    if (until_s && (!messaging_time_parse(until_s, &until) || until <= cm_clock_now_ms())) {
        cm_http_reply_error(req, CM_EINVAL, "field 'until' must be a future RFC 3339 UTC time (absent: no expiry)");
        return;
    }
    if (!may_sanction(req, ctx, &c, cid))
        return;
    rc = sanction_store(ctx, &c, kind, cid, user, until, reason, &doc);
    if (rc == CM_OK && cid && strcmp(kind, "ban") == 0)
        rc = remove_banned(req, ctx, &c, cid, user);
    if (rc != CM_OK)
        cm_http_reply_error(req, rc, "the sanction could not be stored");
    else
        cm_http_reply_json(req, 201, sanction_json(&doc));
    bson_destroy(&doc);
}

/* POST /v1/moderation/sanctions/lift {user_id, kind, conversation_id?} */
void messaging_sanctions_lift(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    static const char *const allowed[] = {"user_id", "kind", "conversation_id", NULL};
    cm_jwt_claims c;
    const char *user = NULL, *kind = NULL, *cid = NULL;
    char detail[256], id[CM_UUID_STRLEN + 3 * CM_JWT_ID_MAX + 16];
    bson_t f = BSON_INITIALIZER;
    int64_t deleted = 0;
    cJSON *body;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (cm_http_json_body(req, &body) != CM_OK)
        goto out;
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_string(body, "user_id", 1, 1, 64, &user, detail, sizeof(detail)) ||
        cm_json_string(body, "kind", 1, 1, 8, &kind, detail, sizeof(detail)) ||
        cm_json_string(body, "conversation_id", 0, 1, 64, &cid, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    if (!may_sanction(req, ctx, &c, cid))
        goto out;
    sanction_id(id, sizeof(id), kind, c.tid, cid, user);
    BSON_APPEND_UTF8(&f, "_id", id);
    rc = cm_mongo_delete(ctx->db, COLL_SANCTIONS, &f, 0, &deleted);
    if (rc != CM_OK)
        cm_http_reply_error(req, rc, NULL);
    else if (deleted == 0)
        cm_http_reply_error(req, CM_ENOTFOUND, "no such sanction");
    else
        cm_http_reply_json(req, 204, NULL);
out:
    bson_destroy(&f);
}

static int collect_sanction(const bson_t *doc, void *ud)
{
    if (cm_bson_int(doc, "until", 0) > cm_clock_now_ms())
        cJSON_AddItemToArray(ud, sanction_json(doc));
    return 0;
}

/* GET /v1/moderation/sanctions?conversation_id=&user_id= : the active sanctions. */
void messaging_sanctions_list(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    cm_jwt_claims c;
    const char *cid = cm_http_query(req, "conversation_id"), *user = cm_http_query(req, "user_id");
    bson_t f = BSON_INITIALIZER, opts = BSON_INITIALIZER, sort;
    cJSON *items;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (cid && *cid == '\0')
        cid = NULL;
    if (!may_sanction(req, ctx, &c, cid))
        goto out;
    BSON_APPEND_UTF8(&f, "tenant", c.tid);
    if (cid)
        BSON_APPEND_UTF8(&f, "conversation_id", cid);
    if (user && *user)
        BSON_APPEND_UTF8(&f, "user_id", user);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "created_at", -1);
    bson_append_document_end(&opts, &sort);
    BSON_APPEND_INT64(&opts, "limit", 1000);
    items = cJSON_CreateArray();
    rc = cm_mongo_find(ctx->db, COLL_SANCTIONS, &f, &opts, collect_sanction, items);
    if (rc != CM_OK) {
        cJSON_Delete(items);
        cm_http_reply_error(req, rc, NULL);
        goto out;
    }
    cm_http_reply_page(req, items, NULL);
out:
    bson_destroy(&f);
    bson_destroy(&opts);
}

/* --- flags ------------------------------------------------------------------------------ */

static cJSON *flag_json(const bson_t *f)
{
    char ts[CM_RFC3339_LEN];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", cm_bson_str(f, "_id", ""));
    cJSON_AddStringToObject(o, "conversation_id", cm_bson_str(f, "conversation_id", ""));
    cJSON_AddStringToObject(o, "message_id", cm_bson_str(f, "message_id", ""));
    cJSON_AddStringToObject(o, "reporter", cm_bson_str(f, "reporter", ""));
    cJSON_AddStringToObject(o, "reason", cm_bson_str(f, "reason", ""));
    cJSON_AddStringToObject(o, "status", cm_bson_str(f, "status", "open"));
    cm_clock_rfc3339(cm_bson_int(f, "created_at", 0), ts);
    cJSON_AddStringToObject(o, "created_at", ts);
    if (strcmp(cm_bson_str(f, "status", ""), "resolved") == 0) {
        cJSON_AddStringToObject(o, "resolution", cm_bson_str(f, "resolution", ""));
        cJSON_AddStringToObject(o, "resolved_by", cm_bson_str(f, "resolved_by", ""));
        cm_clock_rfc3339(cm_bson_int(f, "resolved_at", 0), ts);
        cJSON_AddStringToObject(o, "resolved_at", ts);
    }
    return o;
}

/* POST /v1/conversations/{id}/messages/{message_id}/flags {"reason": ...} */
void messaging_flags_add(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    static const char *const allowed[] = {"reason", NULL};
    cm_jwt_claims c;
    const char *cid = cm_http_param(req, "id"), *reason = NULL;
    char detail[256], id[CM_UUID_STRLEN], key[CM_UUID_STRLEN + CM_JWT_ID_MAX + 2];
    bson_t msg, doc = BSON_INITIALIZER;
    cJSON *body;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (cm_http_json_body(req, &body) != CM_OK)
        goto out;
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_string(body, "reason", 1, 1, 500, &reason, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    if (messaging_member_of(req, ctx, &c, NULL, NULL) != CM_OK)
        goto out;
    rc = messaging_message_find(ctx, cid, cm_http_param(req, "message_id"), &msg);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "no such message" : NULL);
        goto out;
    }
    if (strcmp(cm_bson_str(&msg, "sender_id", ""), c.sub) == 0 || cm_bson_bool(&msg, "deleted", 0)) {
        cm_http_reply_error(req, CM_ECONFLICT, cm_bson_bool(&msg, "deleted", 0) ? "the message was deleted"
                                                                               : "one's own message cannot be flagged");
        bson_destroy(&msg);
        goto out;
    }
    if (cm_uuid_v7(id) != CM_OK) {
        bson_destroy(&msg);
        cm_http_reply_error(req, CM_EIO, NULL);
        goto out;
    }
    snprintf(key, sizeof(key), "%s/%s", cm_bson_str(&msg, "_id", ""), c.sub);
    BSON_APPEND_UTF8(&doc, "_id", id);
    BSON_APPEND_UTF8(&doc, "key", key); /* unique: one flag per reporter and message */
    BSON_APPEND_UTF8(&doc, "tenant", c.tid);
    BSON_APPEND_UTF8(&doc, "conversation_id", cid);
    BSON_APPEND_UTF8(&doc, "message_id", cm_bson_str(&msg, "_id", ""));
    BSON_APPEND_UTF8(&doc, "sender_id", cm_bson_str(&msg, "sender_id", ""));
    BSON_APPEND_UTF8(&doc, "reporter", c.sub);
    BSON_APPEND_UTF8(&doc, "reason", reason);
    BSON_APPEND_UTF8(&doc, "status", "open");
    BSON_APPEND_DATE_TIME(&doc, "created_at", cm_clock_now_ms());
    bson_destroy(&msg);
    rc = cm_mongo_insert(ctx->db, COLL_FLAGS, &doc);
    if (rc == CM_ECONFLICT)
        cm_http_reply_error(req, rc, "the caller already flagged this message");
    else if (rc != CM_OK)
        cm_http_reply_error(req, rc, "the flag could not be stored");
    else
        cm_http_reply_json(req, 201, flag_json(&doc));
out:
    bson_destroy(&doc);
}

struct flag_page {
    messaging_ctx *ctx;
    cJSON *items;
    int n, limit, more;
    int64_t last_ms;
    char last_id[CM_UUID_STRLEN];
};

static int collect_flag(const bson_t *doc, void *ud)
{
    struct flag_page *p = ud;
    cJSON *f;
    bson_t msg;
    if (p->n == p->limit) {
        p->more = 1;
        return 1;
    }
    f = flag_json(doc);
    if (messaging_find_id(p->ctx, MSG_COLL_MESSAGES, cm_bson_str(doc, "message_id", ""), &msg) == CM_OK) {
        cJSON_AddItemToObject(f, "message", messaging_message_json(&msg));
        bson_destroy(&msg);
    }
    cJSON_AddItemToArray(p->items, f);
    p->last_ms = cm_bson_int(doc, "created_at", 0);
    snprintf(p->last_id, sizeof(p->last_id), "%s", cm_bson_str(doc, "_id", ""));
    p->n++;
    return 0;
}

/* GET /v1/moderation/flags?status=open|resolved&cursor=&limit= : oldest first, moderators. */
void messaging_flags_list(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    cm_jwt_claims c;
    const char *status = cm_http_query(req, "status"), *cursor = cm_http_query(req, "cursor");
    struct flag_page p = {ctx, NULL, 0, 0, 0, 0, {0}};
    bson_t f = BSON_INITIALIZER, opts = BSON_INITIALIZER, sort;
    char id[65], next[80];
    int64_t cms = 0;
    long limit;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (!messaging_is_moderator(&c)) {
        cm_http_reply_error(req, CM_EFORBIDDEN, "only the tenant's moderators read flags");
        goto out;
    }
    if (status == NULL || *status == '\0')
        status = "open";
    if (strcmp(status, "open") != 0 && strcmp(status, "resolved") != 0) {
        cm_http_reply_error(req, CM_EINVAL, "query parameter 'status' must be open or resolved");
        goto out;
    }
    if (cm_http_query_long(req, "limit", MSG_PAGE_DEFAULT, 1, MSG_PAGE_MAX, &limit) != CM_OK)
        goto out;
    if (cursor && *cursor && !messaging_key_cursor_parse(cursor, 1, &cms, id)) {
        cm_http_reply_error(req, CM_EINVAL, "the cursor is malformed; pass back next_cursor as given");
        goto out;
    }
    BSON_APPEND_UTF8(&f, "tenant", c.tid);
    BSON_APPEND_UTF8(&f, "status", status);
    if (cursor && *cursor)
        messaging_keyset_after(&f, "created_at", cms, id, 0);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "created_at", 1);
    BSON_APPEND_INT32(&sort, "_id", 1);
    bson_append_document_end(&opts, &sort);
    BSON_APPEND_INT64(&opts, "limit", limit + 1);
    p.items = cJSON_CreateArray();
    p.limit = (int)limit;
    rc = cm_mongo_find(ctx->db, COLL_FLAGS, &f, &opts, collect_flag, &p);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, NULL);
        goto out;
    }
    if (p.more)
        snprintf(next, sizeof(next), "%lld_%s", (long long)p.last_ms, p.last_id);
    cm_http_reply_page(req, p.items, p.more ? next : NULL);
    p.items = NULL;
out:
    cJSON_Delete(p.items);
    bson_destroy(&f);
    bson_destroy(&opts);
}

/* Deletes the flagged message for everyone, as the moderator. */
static cm_err delete_flagged(cm_http_req *req, messaging_ctx *ctx, const cm_jwt_claims *c,
                             const bson_t *flag)
{
    messaging_tx tx;
    bson_t msg;
    cm_err rc;

    if (!ctx->limits.deletion_allowed)
        return CM_EFORBIDDEN;
    rc = messaging_tx_open_moderator(ctx, req, c, cm_bson_str(flag, "conversation_id", ""), &tx);
    if (rc != CM_OK)
        return rc;
    rc = messaging_message_find(ctx, tx.cid, cm_bson_str(flag, "message_id", ""), &msg);
    if (rc == CM_OK) {
        if (!cm_bson_bool(&msg, "deleted", 0) &&
            (rc = messaging_message_tombstone(&tx, c->sub, &msg)) == CM_OK)
            rc = messaging_tx_commit(&tx);
        bson_destroy(&msg);
    }
    messaging_tx_close(&tx);
    return rc;
}

/* POST /v1/moderation/flags/{flag_id}/resolve {"action": dismiss|delete|ban, "until"?} */
void messaging_flags_resolve(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    static const char *const allowed[] = {"action", "until", "reason", NULL};
    cm_jwt_claims c;
    const char *action = NULL, *until_s = NULL, *reason = NULL, *fid = cm_http_param(req, "flag_id");
    char detail[256];
    int64_t until = FOREVER;
    bson_t flag, f = BSON_INITIALIZER, u = BSON_INITIALIZER, set, sanction, after;
    int have_flag = 0;
    cJSON *body;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (!messaging_is_moderator(&c)) {
        cm_http_reply_error(req, CM_EFORBIDDEN, "only the tenant's moderators resolve flags");
        goto out;
    }
    if (cm_http_json_body(req, &body) != CM_OK)
        goto out;
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_string(body, "action", 1, 1, 16, &action, detail, sizeof(detail)) ||
        cm_json_string(body, "until", 0, 1, 40, &until_s, detail, sizeof(detail)) ||
        cm_json_string(body, "reason", 0, 0, 500, &reason, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    if (strcmp(action, "dismiss") != 0 && strcmp(action, "delete") != 0 && strcmp(action, "ban") != 0) {
        cm_http_reply_error(req, CM_EINVAL, "field 'action' must be dismiss, delete or ban");
        goto out;
    }
    if (until_s && (!messaging_time_parse(until_s, &until) || until <= cm_clock_now_ms())) {
        cm_http_reply_error(req, CM_EINVAL, "field 'until' must be a future RFC 3339 UTC time");
        goto out;
    }
    BSON_APPEND_UTF8(&f, "_id", fid ? fid : "");
    BSON_APPEND_UTF8(&f, "tenant", c.tid);
    if (fid == NULL || !cm_uuid_valid(fid) ||
        cm_mongo_find_one(ctx->db, COLL_FLAGS, &f, NULL, &flag) != CM_OK) {
        cm_http_reply_error(req, CM_ENOTFOUND, "no such flag");
        goto out;
    }
    have_flag = 1;
    if (strcmp(cm_bson_str(&flag, "status", ""), "open") != 0) {
        cm_http_reply_error(req, CM_ECONFLICT, "the flag is already resolved");
        goto out;
    }
    rc = CM_OK;
    if (strcmp(action, "delete") == 0)
        rc = delete_flagged(req, ctx, &c, &flag);
    else if (strcmp(action, "ban") == 0) {
        rc = sanction_store(ctx, &c, "ban", NULL, cm_bson_str(&flag, "sender_id", ""), until,
                            reason ? reason : cm_bson_str(&flag, "reason", ""), &sanction);
        bson_destroy(&sanction);
    }
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, rc == CM_EFORBIDDEN ? "the tenant's policy keeps every message: deletion is disabled"
                                                         : "the resolution could not be applied");
        goto out;
    }
    /* Every open flag on the message is resolved the same way. */
    bson_reinit(&f);
    BSON_APPEND_UTF8(&f, "message_id", cm_bson_str(&flag, "message_id", ""));
    BSON_APPEND_UTF8(&f, "status", "open");
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_UTF8(&set, "status", "resolved");
    BSON_APPEND_UTF8(&set, "resolution", action);
    BSON_APPEND_UTF8(&set, "resolved_by", c.sub);
    BSON_APPEND_DATE_TIME(&set, "resolved_at", cm_clock_now_ms());
    bson_append_document_end(&u, &set);
    rc = cm_mongo_update(ctx->db, COLL_FLAGS, &f, &u, 0, 1, NULL);
    if (rc != CM_OK || messaging_find_id(ctx, COLL_FLAGS, cm_bson_str(&flag, "_id", ""), &after) != CM_OK) {
        cm_http_reply_error(req, rc == CM_OK ? CM_EIO : rc, "the flag could not be resolved");
        goto out;
    }
    cm_http_reply_json(req, 200, flag_json(&after));
    bson_destroy(&after);
out:
    if (have_flag)
        bson_destroy(&flag);
    bson_destroy(&f);
    bson_destroy(&u);
}
