/* messaging_members.c - members of a conversation: list, add, remove, change role. Each change
 * is a member.* event in the conversation's log and on the conversations topic. */
#include <stdio.h>
#include <string.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "messaging.h"

cm_err messaging_owner_count(messaging_ctx *ctx, const char *cid, int *owners)
{
    bson_t f = BSON_INITIALIZER;
    int64_t n = 0;
    cm_err rc;
    BSON_APPEND_UTF8(&f, "conversation_id", cid);
    BSON_APPEND_UTF8(&f, "state", "active");
    BSON_APPEND_UTF8(&f, "role", "owner");
    rc = cm_mongo_count(ctx->db, MSG_COLL_MEMBERS, &f, &n);
    bson_destroy(&f);
    *owners = (int)n;
    return rc;
}

/* member_count lives on the conversation; the section is its only writer. */
static void add_member_count(messaging_tx *tx, int delta)
{
    bson_t view;
    int64_t n;
    messaging_tx_conv_view(tx, &view);
    n = cm_bson_int(&view, "member_count", 0) + delta;
    bson_destroy(&view);
    /* A field may be queued once per section: rebuild the queue without the old value. */
    if (bson_has_field(&tx->set, "member_count")) {
        bson_t copy;
        bson_init(&copy);
        bson_copy_to_excluding_noinit(&tx->set, &copy, "member_count", NULL);
        bson_destroy(&tx->set);
        bson_copy_to(&copy, &tx->set);
        bson_destroy(&copy);
    }
    BSON_APPEND_INT64(messaging_tx_conv_set(tx), "member_count", n < 0 ? 0 : n);
}

static cJSON *member_event(const char *cid, const char *uid, const char *role, const char *by)
{
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "conversation_id", cid);
    cJSON_AddStringToObject(d, "user_id", uid);
    if (role)
        cJSON_AddStringToObject(d, "role", role);
    cJSON_AddStringToObject(d, "by", by);
    return d;
}

cm_err messaging_member_add(messaging_tx *tx, const char *uid, const char *role)
{
    char key[MSG_MEMBER_KEY_MAX];
    bson_t old, doc = BSON_INITIALIZER;
    int64_t eseq = tx->last_eseq + 1, got = 0;
    int existed;
    cm_err rc;
    cJSON *d;

    messaging_member_key(tx->cid, uid, key);
    rc = messaging_find_id(tx->ctx, MSG_COLL_MEMBERS, key, &old);
    if (rc != CM_OK && rc != CM_ENOTFOUND)
        goto out;
    existed = rc == CM_OK;
    if (existed) {
        int active = strcmp(cm_bson_str(&old, "state", ""), "active") == 0;
        bson_destroy(&old);
        if (active) {
            rc = CM_ECONFLICT;
            goto out;
        }
    }
    /* The record says from which log entry on the member may read (joined_eseq, the
     * member.added below); history before that stays readable through the messages list.
     * Messages sent before joining count as read. */
    if (!existed)
        BSON_APPEND_UTF8(&doc, "_id", key);
    BSON_APPEND_UTF8(&doc, "tenant", tx->tenant);
    BSON_APPEND_UTF8(&doc, "conversation_id", tx->cid);
    BSON_APPEND_UTF8(&doc, "user_id", uid);
    BSON_APPEND_UTF8(&doc, "conversation_type", cm_bson_str(&tx->conv, "type", ""));
    BSON_APPEND_UTF8(&doc, "role", role);
    BSON_APPEND_UTF8(&doc, "state", "active");
    BSON_APPEND_INT64(&doc, "read_seq", tx->last_seq);
    BSON_APPEND_INT64(&doc, "delivered_seq", tx->last_seq);
    BSON_APPEND_BOOL(&doc, "archived", false);
    BSON_APPEND_INT64(&doc, "muted_until", 0);
    BSON_APPEND_DATE_TIME(&doc, "joined_at", tx->now);
    BSON_APPEND_INT64(&doc, "joined_eseq", eseq);
    if (existed) {
        /* A member who left comes back: a fresh record over the old one. */
        bson_t u = BSON_INITIALIZER, un;
        BSON_APPEND_DOCUMENT(&u, "$set", &doc);
        BSON_APPEND_DOCUMENT_BEGIN(&u, "$unset", &un);
        BSON_APPEND_UTF8(&un, "left_at", "");
        BSON_APPEND_UTF8(&un, "left_eseq", "");
        BSON_APPEND_UTF8(&un, "left_seq", "");
        BSON_APPEND_UTF8(&un, "hidden", "");
        BSON_APPEND_UTF8(&un, "mention_seqs", "");
        bson_append_document_end(&u, &un);
        rc = messaging_update_id(tx->ctx, MSG_COLL_MEMBERS, key, &u);
        bson_destroy(&u);
    } else {
        rc = cm_mongo_insert(tx->ctx->db, MSG_COLL_MEMBERS, &doc);
    }
    if (rc != CM_OK)
        goto out;
    messaging_unread_note(tx, uid, tx->last_seq, 0, 0, 1);
    add_member_count(tx, +1);
    d = member_event(tx->cid, uid, role, tx->user);
    rc = messaging_tx_append(tx, "member.added", NULL, NULL, d, &got);
    if (rc == CM_OK && got != eseq) {
        /* Another writer's lease overlapped ours: record the seq the event really got. */
        bson_t u = BSON_INITIALIZER, set;
        BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
        BSON_APPEND_INT64(&set, "joined_eseq", got);
        bson_append_document_end(&u, &set);
        rc = messaging_update_id(tx->ctx, MSG_COLL_MEMBERS, key, &u);
        bson_destroy(&u);
    }
out:
    bson_destroy(&doc);
    return rc;
}

cm_err messaging_member_remove(messaging_tx *tx, const char *uid, const bson_t *member,
                               const char *reason)
{
    char key[MSG_MEMBER_KEY_MAX];
    int64_t eseq = tx->last_eseq + 1, got = 0;
    bson_t u = BSON_INITIALIZER, set;
    cJSON *d;
    cm_err rc;

    messaging_member_key(tx->cid, uid, key);
    /* The record stays (state "left") and says up to which log entry its user may still
     * read: the member.removed below, so they learn that they left. */
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_UTF8(&set, "state", "left");
    BSON_APPEND_DATE_TIME(&set, "left_at", tx->now);
    BSON_APPEND_INT64(&set, "left_eseq", eseq);
    /* The last message they may still see (messaging_member_sees: their attachments). */
    BSON_APPEND_INT64(&set, "left_seq", tx->last_seq);
    bson_append_document_end(&u, &set);
    rc = messaging_update_id(tx->ctx, MSG_COLL_MEMBERS, key, &u);
    bson_destroy(&u);
    if (rc != CM_OK)
        return rc;
    messaging_unread_note(tx, uid, -1, -1, -1, -1);
    add_member_count(tx, -1);
    d = member_event(tx->cid, uid, cm_bson_str(member, "role", "member"), tx->user);
    cJSON_AddStringToObject(d, "reason", reason);
    rc = messaging_tx_append(tx, "member.removed", NULL, NULL, d, &got);
    if (rc == CM_OK && got != eseq) {
        bson_init(&u);
        BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
        BSON_APPEND_INT64(&set, "left_eseq", got);
        bson_append_document_end(&u, &set);
        rc = messaging_update_id(tx->ctx, MSG_COLL_MEMBERS, key, &u);
        bson_destroy(&u);
    }
    return rc;
}

/* Refuses changes to a conversation its owner deleted (it is read-only for everyone). */
int messaging_refuse_if_deleted(cm_http_req *req, const messaging_tx *tx)
{
    if (!cm_bson_bool(&tx->conv, "deleted", 0))
        return 0;
    cm_http_reply_error(req, CM_ECONFLICT, "the conversation was deleted by its owner and is read-only");
    return 1;
}

/* Answers 403 (or 409) when the rule forbids the action; returns 1 then. */
int messaging_refuse_unless(cm_http_req *req, messaging_action act, const messaging_rule_input *in)
{
    int conflict;
    const char *why = messaging_rule(act, in, &conflict);
    if (why == NULL)
        return 0;
    cm_http_reply_error(req, conflict ? CM_ECONFLICT : CM_EFORBIDDEN, why);
    return 1;
}

void messaging_rule_input_of(const messaging_tx *tx, const cm_jwt_claims *c, messaging_rule_input *in)
{
    memset(in, 0, sizeof(*in));
    in->type = cm_bson_str(&tx->conv, "type", "");
    in->role = tx->role;
    in->members_can_post = cm_bson_bool(&tx->conv, "members_can_post", 0);
    in->tenant_moderator = messaging_is_moderator(c);
    in->members = (int)cm_bson_int(&tx->conv, "member_count", 0);
}

struct member_page {
    cJSON *items;
    int n, limit, more;
    char last[65];
};

static int collect_member(const bson_t *doc, void *ud)
{
    struct member_page *p = ud;
    if (p->n == p->limit) {
        p->more = 1;
        return 1;
    }
    cJSON_AddItemToArray(p->items, messaging_member_json(doc));
    snprintf(p->last, sizeof(p->last), "%s", cm_bson_str(doc, "user_id", ""));
    p->n++;
    return 0;
}

/* GET /v1/conversations/{id}/members?cursor=&limit= : active members by user id. */
void messaging_members_list(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    cm_jwt_claims c;
    const char *cid = cm_http_param(req, "id"), *cursor = cm_http_query(req, "cursor");
    struct member_page p = {0};
    bson_t f = BSON_INITIALIZER, opts = BSON_INITIALIZER, sort, gt;
    long limit;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (cm_http_query_long(req, "limit", MSG_PAGE_DEFAULT, 1, MSG_PAGE_MAX, &limit) != CM_OK)
        goto out;
    if (cursor && *cursor == '\0')
        cursor = NULL;
    if (cursor && !cm_user_id_valid(cursor)) {
        cm_http_reply_error(req, CM_EINVAL, "the cursor is malformed; pass back next_cursor as given");
        goto out;
    }
    if (messaging_member_of(req, ctx, &c, NULL, NULL) != CM_OK)
        goto out;
    BSON_APPEND_UTF8(&f, "conversation_id", cid);
    BSON_APPEND_UTF8(&f, "state", "active");
    if (cursor) {
        BSON_APPEND_DOCUMENT_BEGIN(&f, "user_id", &gt);
        BSON_APPEND_UTF8(&gt, "$gt", cursor);
        bson_append_document_end(&f, &gt);
    }
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "user_id", 1);
    bson_append_document_end(&opts, &sort);
    BSON_APPEND_INT64(&opts, "limit", limit + 1);
    p.items = cJSON_CreateArray();
    p.limit = (int)limit;
    rc = cm_mongo_find(ctx->db, MSG_COLL_MEMBERS, &f, &opts, collect_member, &p);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "members could not be listed");
        goto out;
    }
    cm_http_reply_page(req, p.items, p.more ? p.last : NULL);
    p.items = NULL;
out:
    cJSON_Delete(p.items);
    bson_destroy(&f);
    bson_destroy(&opts);
}

/* Joins up to `max` names for a system message ("ann, bob and 3 more"). */
static void names_text(char *out, size_t n, const char *const *ids, int count)
{
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < count && i < 5; i++) {
        int w = snprintf(out + len, n - len, "%s%s", i ? ", " : "", ids[i]);
        if (w < 0 || (size_t)w >= n - len)
            return;
        len += (size_t)w;
    }
    if (count > 5)
        snprintf(out + len, n - len, " and %d more", count - 5);
}

/* POST /v1/conversations/{id}/members {"user_ids": [...]} : adds up to 100 members. Users
 * already members are skipped (the answer lists who was added). */
void messaging_members_add(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    static const char *const allowed[] = {"user_ids", NULL};
    cm_jwt_claims c;
    messaging_tx tx;
    messaging_rule_input in;
    const cJSON *arr, *it;
    const char *ids[MSG_ADD_MAX];
    const char *added[MSG_ADD_MAX], *banned[MSG_ADD_MAX];
    char detail[256], text[600];
    int n = 0, nadded = 0, nbanned = 0;
    messaging_limits lim;
    long max;
    cJSON *body, *out_list;
    cm_err rc;

    memset(&tx, 0, sizeof(tx));
    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (cm_http_json_body(req, &body) != CM_OK)
        goto out;
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    arr = cJSON_GetObjectItemCaseSensitive(body, "user_ids");
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) == 0) {
        cm_http_reply_error(req, CM_EINVAL, "field 'user_ids' must be a non-empty array of user ids");
        goto out;
    }
    if (cJSON_GetArraySize(arr) > MSG_ADD_MAX) {
        cm_http_reply_error(req, CM_EINVAL, "field 'user_ids' may name at most 100 users per request");
        goto out;
    }
    cJSON_ArrayForEach(it, arr)
    {
        int dup = 0;
        if (!cJSON_IsString(it) || !cm_user_id_valid(it->valuestring)) {
            cm_http_reply_error(req, CM_EINVAL, "field 'user_ids' must hold user ids (1..64 of A-Z a-z 0-9 _ . @ -)");
            goto out;
        }
        for (int i = 0; i < n; i++)
            dup |= strcmp(ids[i], it->valuestring) == 0;
        if (!dup)
            ids[n++] = it->valuestring;
    }
    rc = messaging_tx_open(ctx, req, &c, cm_http_param(req, "id"), &tx);
    if (rc != CM_OK) {
        messaging_reply_open_error(req, rc);
        goto out;
    }
    messaging_rule_input_of(&tx, &c, &in);
    if (messaging_refuse_if_deleted(req, &tx) || messaging_refuse_unless(req, MSG_ACT_ADD_MEMBERS, &in))
        goto out;
    messaging_limits_for(ctx, c.tid, &lim);
    max = strcmp(in.type, "channel") == 0 ? lim.channel_member_max : lim.group_member_max;
    for (int i = 0; i < n; i++) {
        if (cm_bson_int(&tx.conv, "member_count", 0) + nadded >= max) {
            snprintf(detail, sizeof(detail), "the conversation is full: at most %ld members", max);
            if (nadded == 0) {
                cm_http_reply_error(req, CM_ECONFLICT, detail);
                goto out;
            }
            break; /* add what fits; the answer says who */
        }
        if (messaging_sanction_banned(ctx, c.tid, tx.cid, ids[i])) {
            banned[nbanned++] = ids[i];
            continue;
        }
        rc = messaging_member_add(&tx, ids[i], "member");
        if (rc == CM_ECONFLICT)
            continue;
        if (rc != CM_OK) {
            cm_http_reply_error(req, rc, "the member could not be stored");
            goto out;
        }
        added[nadded++] = ids[i];
    }
    if (nadded > 0) {
        char names[400];
        names_text(names, sizeof(names), added, nadded);
        snprintf(text, sizeof(text), "%s added %s", c.sub, names);
        if ((rc = messaging_system_message(&tx, text)) != CM_OK ||
            (rc = messaging_tx_commit(&tx)) != CM_OK) {
            cm_http_reply_error(req, rc, "the change could not be stored");
            goto out;
        }
    }
    body = cJSON_CreateObject();
    out_list = cJSON_AddArrayToObject(body, "added");
    for (int i = 0; i < nadded; i++)
        cJSON_AddItemToArray(out_list, cJSON_CreateString(added[i]));
    cJSON_AddNumberToObject(body, "member_count",
                            (double)(cm_bson_int(&tx.conv, "member_count", 0) + nadded));
    if (nbanned > 0) {
        out_list = cJSON_AddArrayToObject(body, "banned");
        for (int i = 0; i < nbanned; i++)
            cJSON_AddItemToArray(out_list, cJSON_CreateString(banned[i]));
    }
    cm_http_reply_json(req, 200, body);
out:
    messaging_tx_close(&tx);
}

/* DELETE /v1/conversations/{id}/members/{user_id} : removes a member (or leaves, for oneself). */
void messaging_members_remove(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    cm_jwt_claims c;
    messaging_tx tx;
    messaging_rule_input in;
    const char *uid = cm_http_param(req, "user_id");
    bson_t target;
    int have_target = 0;
    char text[200];
    cm_err rc;

    memset(&tx, 0, sizeof(tx));
    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (strcmp(uid, c.sub) == 0) {
        messaging_conversations_leave(req, ud);
        return;
    }
    rc = messaging_tx_open(ctx, req, &c, cm_http_param(req, "id"), &tx);
    if (rc != CM_OK) {
        messaging_reply_open_error(req, rc);
        goto out;
    }
    if (messaging_refuse_if_deleted(req, &tx))
        goto out;
    if (!cm_user_id_valid(uid) || messaging_member_find(ctx, tx.cid, uid, &target) != CM_OK) {
        cm_http_reply_error(req, CM_ENOTFOUND, "no such member");
        goto out;
    }
    have_target = 1;
    messaging_rule_input_of(&tx, &c, &in);
    in.target = messaging_role_parse(cm_bson_str(&target, "role", ""));
    if (messaging_refuse_unless(req, MSG_ACT_REMOVE_MEMBER, &in))
        goto out;
    snprintf(text, sizeof(text), "%s removed %s", c.sub, uid);
    if ((rc = messaging_system_message(&tx, text)) != CM_OK ||
        (rc = messaging_member_remove(&tx, uid, &target, "removed")) != CM_OK ||
        (rc = messaging_tx_commit(&tx)) != CM_OK) {
        cm_http_reply_error(req, rc, "the change could not be stored");
        goto out;
    }
    cm_http_reply_json(req, 204, NULL);
out:
    if (have_target)
        bson_destroy(&target);
    messaging_tx_close(&tx);
}

/* PATCH /v1/conversations/{id}/members/{user_id} {"role": "owner"|"admin"|"member"} */
void messaging_members_update(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    static const char *const allowed[] = {"role", NULL};
    cm_jwt_claims c;
    messaging_tx tx;
    messaging_rule_input in;
    const char *uid = cm_http_param(req, "user_id"), *role = NULL;
    char detail[256], key[MSG_MEMBER_KEY_MAX];
    bson_t target, u = BSON_INITIALIZER, set;
    int have_target = 0, owners = 0;
    cJSON *body, *d;
    cm_err rc;

    memset(&tx, 0, sizeof(tx));
    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (cm_http_json_body(req, &body) != CM_OK)
        goto out;
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_string(body, "role", 1, 1, 16, &role, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    if (messaging_role_parse(role) == MSG_ROLE_NONE) {
        cm_http_reply_error(req, CM_EINVAL, "field 'role' must be 'owner', 'admin' or 'member'");
        goto out;
    }
    rc = messaging_tx_open(ctx, req, &c, cm_http_param(req, "id"), &tx);
    if (rc != CM_OK) {
        messaging_reply_open_error(req, rc);
        goto out;
    }
    if (messaging_refuse_if_deleted(req, &tx))
        goto out;
    if (!cm_user_id_valid(uid) || messaging_member_find(ctx, tx.cid, uid, &target) != CM_OK) {
        cm_http_reply_error(req, CM_ENOTFOUND, "no such member");
        goto out;
    }
    have_target = 1;
    if ((rc = messaging_owner_count(ctx, tx.cid, &owners)) != CM_OK) {
        cm_http_reply_error(req, rc, NULL);
        goto out;
    }
    messaging_rule_input_of(&tx, &c, &in);
    in.target = messaging_role_parse(cm_bson_str(&target, "role", ""));
    in.new_role = messaging_role_parse(role);
    in.owners = owners;
    if (messaging_refuse_unless(req, MSG_ACT_SET_ROLE, &in))
        goto out;
    if (in.target != in.new_role) {
        messaging_member_key(tx.cid, uid, key);
        BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
        BSON_APPEND_UTF8(&set, "role", role);
        bson_append_document_end(&u, &set);
        d = member_event(tx.cid, uid, role, c.sub);
        cJSON_AddStringToObject(d, "previous_role", messaging_role_name(in.target));
        if ((rc = messaging_update_id(ctx, MSG_COLL_MEMBERS, key, &u)) != CM_OK ||
            (rc = messaging_tx_append(&tx, "member.role_changed", NULL, NULL, d, NULL)) != CM_OK ||
            (rc = messaging_tx_commit(&tx)) != CM_OK) {
            cm_http_reply_error(req, rc, "the change could not be stored");
            goto out;
        }
    }
    d = messaging_member_json(&target);
    cJSON_ReplaceItemInObject(d, "role", cJSON_CreateString(role));
    cm_http_reply_json(req, 200, d);
out:
    if (have_target)
        bson_destroy(&target);
    bson_destroy(&u);
    messaging_tx_close(&tx);
}
