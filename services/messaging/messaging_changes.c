/* messaging_changes.c - changes to a sent message: edit (with the history of every version),
 * delete for the caller only or for everyone (a tombstone keeps the seq). Each is a log entry
 * carrying the whole message as it is afterwards. */
#include <stdio.h>
#include <string.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "messaging.h"

cm_err messaging_message_update(messaging_tx *tx, const char *mid, const bson_t *update,
                                bson_t *after)
{
    cm_err rc = messaging_update_id(tx->ctx, MSG_COLL_MESSAGES, mid, update);
    if (rc != CM_OK)
        return rc;
    return messaging_find_id(tx->ctx, MSG_COLL_MESSAGES, mid, after);
}

cm_err messaging_message_logged(messaging_tx *tx, const char *type, const bson_t *msg)
{
    messaging_tx_message_changed(tx, msg);
    return messaging_tx_append(tx, type, NULL, NULL, messaging_message_json(msg), NULL);
}

cm_err messaging_open_message(cm_http_req *req, messaging_ctx *ctx, const cm_jwt_claims *c,
                           messaging_tx *tx, bson_t *msg)
{
    cm_err rc = messaging_tx_open(ctx, req, c, cm_http_param(req, "id"), tx);
    if (rc != CM_OK) {
        messaging_reply_open_error(req, rc);
        return rc;
    }
    rc = messaging_message_find(ctx, tx->cid, cm_http_param(req, "message_id"), msg);
    if (rc != CM_OK)
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "no such message" : NULL);
    return rc;
}

/* PATCH /v1/conversations/{id}/messages/{message_id} {"text": ...}: the sender edits their
 * message within the tenant's edit_window_s (default EDIT_WINDOW_S); the previous text is kept
 * as a version. */
void messaging_messages_edit(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    static const char *const allowed[] = {"text", NULL};
    cm_jwt_claims c;
    messaging_tx tx;
    const char *text = NULL;
    char detail[256], vid[CM_UUID_STRLEN + 24];
    messaging_limits lim;
    bson_t msg, after, version = BSON_INITIALIZER, u = BSON_INITIALIZER, set;
    int have_msg = 0, edits;
    cJSON *body;
    cm_err rc;

    memset(&tx, 0, sizeof(tx));
    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (cm_http_json_body(req, &body) != CM_OK)
        goto out;
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_string(body, "text", 1, 0, (size_t)-1, &text, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    messaging_limits_for(ctx, c.tid, &lim);
    if (messaging_text_problem(text, lim.text_max, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    if (messaging_open_message(req, ctx, &c, &tx, &msg) != CM_OK)
        goto out;
    have_msg = 1;
    if (messaging_refuse_if_deleted(req, &tx))
        goto out;
    if (strcmp(cm_bson_str(&msg, "sender_id", ""), c.sub) != 0 ||
        strcmp(cm_bson_str(&msg, "type", ""), "system") == 0) {
        cm_http_reply_error(req, CM_EFORBIDDEN, "only the sender edits a message");
        goto out;
    }
    if (cm_bson_bool(&msg, "deleted", 0)) {
        cm_http_reply_error(req, CM_ECONFLICT, "the message was deleted");
        goto out;
    }
    if (tx.now - cm_bson_int(&msg, "created_at", 0) > lim.edit_window_s * 1000) {
        snprintf(detail, sizeof(detail), "a message can be edited for %ld seconds after it was sent",
                 lim.edit_window_s);
        cm_http_reply_error(req, CM_EFORBIDDEN, detail);
        goto out;
    }
    if (strcmp(cm_bson_str(&msg, "text", ""), text) == 0) {
        cm_http_reply_json(req, 200, messaging_message_json(&msg)); /* nothing changes */
        goto out;
    }
    /* The version being replaced: version 0 is the original. */
    edits = (int)cm_bson_int(&msg, "edits", 0);
    snprintf(vid, sizeof(vid), "%s/%d", cm_bson_str(&msg, "_id", ""), edits);
    BSON_APPEND_UTF8(&version, "_id", vid);
    BSON_APPEND_UTF8(&version, "tenant", tx.tenant);
    BSON_APPEND_UTF8(&version, "conversation_id", tx.cid);
    BSON_APPEND_UTF8(&version, "message_id", cm_bson_str(&msg, "_id", ""));
    BSON_APPEND_INT32(&version, "version", edits);
    BSON_APPEND_DATE_TIME(&version, "message_at", cm_bson_int(&msg, "created_at", 0)); /* retention */
    BSON_APPEND_UTF8(&version, "text", cm_bson_str(&msg, "text", ""));
    BSON_APPEND_DATE_TIME(&version, "at", edits ? cm_bson_int(&msg, "edited_at", 0)
                                                : cm_bson_int(&msg, "created_at", 0));
    rc = cm_mongo_insert(ctx->db, MSG_COLL_VERSIONS, &version);
    if (rc != CM_OK && rc != CM_ECONFLICT) { /* a conflict: kept by an edit that died */
        cm_http_reply_error(req, rc, "the edit could not be stored");
        goto out;
    }
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_UTF8(&set, "text", text);
    BSON_APPEND_INT32(&set, "edits", edits + 1);
    BSON_APPEND_DATE_TIME(&set, "edited_at", tx.now);
    bson_append_document_end(&u, &set);
    rc = messaging_message_update(&tx, cm_bson_str(&msg, "_id", ""), &u, &after);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the edit could not be stored");
        goto out;
    }
    if ((rc = messaging_message_logged(&tx, "message.updated", &after)) != CM_OK ||
        (rc = messaging_tx_commit(&tx)) != CM_OK)
        cm_http_reply_error(req, rc, "the edit could not be stored");
    else
        cm_http_reply_json(req, 200, messaging_message_json(&after));
    bson_destroy(&after);
out:
    if (have_msg)
        bson_destroy(&msg);
    bson_destroy(&version);
    bson_destroy(&u);
    messaging_tx_close(&tx);
}

static cJSON *version_json(const bson_t *v)
{
    char ts[CM_RFC3339_LEN];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "version", (double)cm_bson_int(v, "version", 0));
    cJSON_AddStringToObject(o, "text", cm_bson_str(v, "text", ""));
    cm_clock_rfc3339(cm_bson_int(v, "at", 0), ts);
    cJSON_AddStringToObject(o, "at", ts);
    return o;
}

static int collect_version(const bson_t *doc, void *ud)
{
    cJSON_AddItemToArray(ud, version_json(doc));
    return 0;
}

/* GET /v1/conversations/{id}/messages/{message_id}/history : every version of the text, the
 * original first and the current one last. Members only. */
void messaging_messages_history(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    cm_jwt_claims c;
    const char *cid = cm_http_param(req, "id");
    bson_t msg, f = BSON_INITIALIZER, opts = BSON_INITIALIZER, sort;
    cJSON *items = NULL, *cur, *body;
    char ts[CM_RFC3339_LEN];
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto done;
    if (messaging_member_of(req, ctx, &c, NULL, NULL) != CM_OK)
        goto done;
    rc = messaging_message_find(ctx, cid, cm_http_param(req, "message_id"), &msg);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "no such message" : NULL);
        goto done;
    }
    items = cJSON_CreateArray();
    BSON_APPEND_UTF8(&f, "message_id", cm_bson_str(&msg, "_id", ""));
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "version", 1);
    bson_append_document_end(&opts, &sort);
    rc = cm_mongo_find(ctx->db, MSG_COLL_VERSIONS, &f, &opts, collect_version, items);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the history could not be read");
        bson_destroy(&msg);
        goto done;
    }
    if (!cm_bson_bool(&msg, "deleted", 0)) {
        cur = cJSON_CreateObject();
        cJSON_AddNumberToObject(cur, "version", (double)cm_bson_int(&msg, "edits", 0));
        cJSON_AddStringToObject(cur, "text", cm_bson_str(&msg, "text", ""));
        cm_clock_rfc3339(cm_bson_int(&msg, "edits", 0) ? cm_bson_int(&msg, "edited_at", 0)
                                                        : cm_bson_int(&msg, "created_at", 0),
                         ts);
        cJSON_AddStringToObject(cur, "at", ts);
        cJSON_AddItemToArray(items, cur);
    }
    body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "message_id", cm_bson_str(&msg, "_id", ""));
    cJSON_AddItemToObject(body, "versions", items);
    items = NULL;
    cm_http_reply_json(req, 200, body);
    bson_destroy(&msg);
done:
    cJSON_Delete(items);
    bson_destroy(&f);
    bson_destroy(&opts);
}

/* Delete for the caller only: the message joins the member's hidden list. */
static void delete_for_me(cm_http_req *req, messaging_tx *tx, const bson_t *msg)
{
    char key[MSG_MEMBER_KEY_MAX];
    bson_iter_t it, arr;
    bson_t u = BSON_INITIALIZER, set, list;
    const char *mid = cm_bson_str(msg, "_id", "");
    int n = 0;
    cJSON *d;
    cm_err rc;

    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_ARRAY_BEGIN(&set, "hidden", &list);
    if (bson_iter_init_find(&it, &tx->me, "hidden") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr))
        while (bson_iter_next(&arr)) {
            char k[16];
            if (!BSON_ITER_HOLDS_UTF8(&arr))
                continue;
            if (strcmp(bson_iter_utf8(&arr, NULL), mid) == 0) {
                bson_destroy(&u);
                cm_http_reply_json(req, 204, NULL); /* already hidden */
                return;
            }
            snprintf(k, sizeof(k), "%d", n++);
            BSON_APPEND_UTF8(&list, k, bson_iter_utf8(&arr, NULL));
        }
    if (n >= MSG_HIDDEN_MAX) {
        bson_destroy(&u);
        cm_http_reply_error(req, CM_ECONFLICT, "at most 1000 messages can be deleted for oneself per conversation");
        return;
    }
    {
        char k[16];
        snprintf(k, sizeof(k), "%d", n);
        BSON_APPEND_UTF8(&list, k, mid);
    }
    bson_append_array_end(&set, &list);
    bson_append_document_end(&u, &set);
    messaging_member_key(tx->cid, tx->user, key);
    d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "conversation_id", tx->cid);
    cJSON_AddStringToObject(d, "message_id", mid);
    cJSON_AddNumberToObject(d, "seq", (double)cm_bson_int(msg, "seq", 0));
    cJSON_AddStringToObject(d, "user_id", tx->user);
    if ((rc = messaging_update_id(tx->ctx, MSG_COLL_MEMBERS, key, &u)) != CM_OK) {
        cJSON_Delete(d);
        cm_http_reply_error(req, rc, "the message could not be deleted");
    } else if ((rc = messaging_tx_append(tx, "message.hidden", NULL, tx->user, d, NULL)) != CM_OK ||
               (rc = messaging_tx_commit(tx)) != CM_OK) {
        cm_http_reply_error(req, rc, "the message could not be deleted");
    } else {
        cm_http_reply_json(req, 204, NULL);
    }
    bson_destroy(&u);
}

/* Delete for everyone: the content goes, a tombstone keeps the seq (and the thread's count). */
static void delete_for_everyone(cm_http_req *req, messaging_tx *tx, const cm_jwt_claims *c,
                                const bson_t *msg)
{
    messaging_rule_input in;
    cm_err rc;

    if (!tx->ctx->limits.deletion_allowed) {
        cm_http_reply_error(req, CM_EFORBIDDEN, "the tenant's policy keeps every message: deletion for everyone is disabled");
        return;
    }
    if (strcmp(cm_bson_str(msg, "type", ""), "system") == 0) {
        cm_http_reply_error(req, CM_EFORBIDDEN, "system messages cannot be deleted");
        return;
    }
    messaging_rule_input_of(tx, c, &in);
    if (strcmp(cm_bson_str(msg, "sender_id", ""), c->sub) != 0 &&
        messaging_refuse_unless(req, MSG_ACT_MODERATE, &in))
        return;
    if (cm_bson_bool(msg, "deleted", 0)) {
        cm_http_reply_json(req, 204, NULL); /* already a tombstone */
        return;
    }
    if ((rc = messaging_message_tombstone(tx, c->sub, msg)) != CM_OK ||
        (rc = messaging_tx_commit(tx)) != CM_OK)
        cm_http_reply_error(req, rc, "the message could not be deleted");
    else
        cm_http_reply_json(req, 204, NULL);
}

cm_err messaging_message_tombstone(messaging_tx *tx, const char *by, const bson_t *msg)
{
    const char *mid = cm_bson_str(msg, "_id", "");
    bson_t u = BSON_INITIALIZER, set, unset, f = BSON_INITIALIZER, after;
    cm_err rc;

    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_UTF8(&set, "text", "");
    BSON_APPEND_BOOL(&set, "deleted", true);
    BSON_APPEND_DATE_TIME(&set, "deleted_at", tx->now);
    BSON_APPEND_UTF8(&set, "deleted_by", by);
    bson_append_document_end(&u, &set);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$unset", &unset);
    BSON_APPEND_UTF8(&unset, "attachments", "");
    BSON_APPEND_UTF8(&unset, "mentions", "");
    BSON_APPEND_UTF8(&unset, "reactions", "");
    BSON_APPEND_UTF8(&unset, "edits", "");
    BSON_APPEND_UTF8(&unset, "edited_at", "");
    BSON_APPEND_UTF8(&unset, "pinned", "");
    BSON_APPEND_UTF8(&unset, "pinned_by", "");
    BSON_APPEND_UTF8(&unset, "pinned_at", "");
    BSON_APPEND_UTF8(&unset, "sent_text", "");
    bson_append_document_end(&u, &unset);
    rc = messaging_message_update(tx, mid, &u, &after);
    if (rc == CM_OK) {
        /* The earlier versions and the reactions go with the content. */
        BSON_APPEND_UTF8(&f, "message_id", mid);
        if ((rc = cm_mongo_delete(tx->ctx->db, MSG_COLL_VERSIONS, &f, 1, NULL)) == CM_OK)
            rc = cm_mongo_delete(tx->ctx->db, MSG_COLL_REACTIONS, &f, 1, NULL);
        if (rc == CM_OK)
            rc = messaging_message_logged(tx, "message.deleted", &after);
        bson_destroy(&after);
    }
    bson_destroy(&u);
    bson_destroy(&f);
    return rc;
}

/* DELETE /v1/conversations/{id}/messages/{message_id}?scope=for_everyone|for_me */
void messaging_messages_delete(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    cm_jwt_claims c;
    messaging_tx tx;
    const char *scope = cm_http_query(req, "scope");
    bson_t msg;

    memset(&tx, 0, sizeof(tx));
    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        return;
    if (scope == NULL || *scope == '\0')
        scope = "for_everyone";
    if (strcmp(scope, "for_everyone") != 0 && strcmp(scope, "for_me") != 0) {
        cm_http_reply_error(req, CM_EINVAL, "query parameter 'scope' must be for_everyone or for_me");
        return;
    }
    if (messaging_open_message(req, ctx, &c, &tx, &msg) != CM_OK) {
        messaging_tx_close(&tx);
        return;
    }
    if (strcmp(scope, "for_me") == 0)
        delete_for_me(req, &tx, &msg);
    else if (!messaging_refuse_if_deleted(req, &tx))
        delete_for_everyone(req, &tx, &c, &msg);
    bson_destroy(&msg);
    messaging_tx_close(&tx);
}
