/* messaging_reactions.c - reactions (one per user per emoji, a cap on distinct emojis per
 * message) and pins. A reaction is a record (`_id` "<message>/<user>/<emoji>", so a second
 * identical reaction is refused by the unique _id) and a count on the message, kept exact by
 * the write section. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "messaging.h"

/* Writes the message's reaction counts with `emoji` moved by `delta` into `out` ($set value);
 * `*distinct` receives how many emojis the message would carry. */
static void counts_with(const bson_t *msg, const char *emoji, int delta, bson_t *set,
                        int *distinct)
{
    bson_iter_t it, arr;
    bson_t list, e;
    int n = 0, found = 0;
    char k[16];

    BSON_APPEND_ARRAY_BEGIN(set, "reactions", &list);
    if (bson_iter_init_find(&it, msg, "reactions") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr))
        while (bson_iter_next(&arr)) {
            bson_t entry;
            uint32_t len;
            const uint8_t *data;
            int64_t count;
            const char *name;
            if (!BSON_ITER_HOLDS_DOCUMENT(&arr))
                continue;
            bson_iter_document(&arr, &len, &data);
            if (!bson_init_static(&entry, data, len))
                continue;
            name = cm_bson_str(&entry, "e", "");
            count = cm_bson_int(&entry, "n", 0);
            if (strcmp(name, emoji) == 0) {
                count += delta;
                found = 1;
            }
            if (count <= 0)
                continue;
            snprintf(k, sizeof(k), "%d", n++);
            BSON_APPEND_DOCUMENT_BEGIN(&list, k, &e);
            BSON_APPEND_UTF8(&e, "e", name);
            BSON_APPEND_INT64(&e, "n", count);
            bson_append_document_end(&list, &e);
        }
    if (!found && delta > 0) {
        snprintf(k, sizeof(k), "%d", n++);
        BSON_APPEND_DOCUMENT_BEGIN(&list, k, &e);
        BSON_APPEND_UTF8(&e, "e", emoji);
        BSON_APPEND_INT64(&e, "n", delta);
        bson_append_document_end(&list, &e);
    }
    bson_append_array_end(set, &list);
    *distinct = n;
}

static void reaction_key(const char *mid, const char *uid, const char *emoji, char *out, size_t n)
{
    snprintf(out, n, "%s/%s/%s", mid, uid, emoji);
}

/* Adds (delta 1) or removes (delta -1) the caller's `emoji` on the message. */
static void react(cm_http_req *req, messaging_ctx *ctx, const char *emoji, int delta)
{
    cm_jwt_claims c;
    messaging_tx tx;
    char key[CM_UUID_STRLEN + 64 + MSG_EMOJI_MAX + 8], detail[160];
    bson_t msg, rec = BSON_INITIALIZER, u = BSON_INITIALIZER, set, after, f = BSON_INITIALIZER;
    const char *why, *mid;
    int have_msg = 0, distinct = 0;
    int64_t deleted = 0;
    cJSON *d, *reply;
    cm_err rc;

    memset(&tx, 0, sizeof(tx));
    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if ((why = messaging_emoji_problem(emoji)) != NULL) {
        cm_http_reply_error(req, CM_EINVAL, why);
        goto out;
    }
    if (messaging_open_message(req, ctx, &c, &tx, &msg) != CM_OK)
        goto out;
    have_msg = 1;
    mid = cm_bson_str(&msg, "_id", "");
    if (messaging_refuse_if_deleted(req, &tx))
        goto out;
    if (cm_bson_bool(&msg, "deleted", 0)) {
        cm_http_reply_error(req, CM_ECONFLICT, "the message was deleted");
        goto out;
    }
    reaction_key(mid, c.sub, emoji, key, sizeof(key));
    if (delta > 0) {
        BSON_APPEND_UTF8(&rec, "_id", key);
        BSON_APPEND_UTF8(&rec, "tenant", tx.tenant);
        BSON_APPEND_UTF8(&rec, "conversation_id", tx.cid);
        BSON_APPEND_UTF8(&rec, "message_id", mid);
        BSON_APPEND_UTF8(&rec, "user_id", c.sub);
        BSON_APPEND_UTF8(&rec, "emoji", emoji);
        BSON_APPEND_DATE_TIME(&rec, "created_at", tx.now);
    }
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    counts_with(&msg, emoji, delta, &set, &distinct);
    bson_append_document_end(&u, &set);
    if (delta > 0 && distinct > ctx->limits.reaction_emoji_max) {
        snprintf(detail, sizeof(detail), "a message carries at most %ld different emojis",
                 ctx->limits.reaction_emoji_max);
        cm_http_reply_error(req, CM_ECONFLICT, detail);
        goto out;
    }
    if (delta > 0) {
        rc = cm_mongo_insert(ctx->db, MSG_COLL_REACTIONS, &rec);
        if (rc == CM_ECONFLICT) {
            /* Already reacted with this emoji: one per user per emoji, nothing changes. */
            reply = messaging_message_json(&msg);
            messaging_mark_my_reactions(ctx, c.sub, reply);
            cm_http_reply_json(req, 200, reply);
            goto out;
        }
    } else {
        BSON_APPEND_UTF8(&f, "_id", key);
        rc = cm_mongo_delete(ctx->db, MSG_COLL_REACTIONS, &f, 0, &deleted);
        if (rc == CM_OK && deleted == 0) {
            cm_http_reply_error(req, CM_ENOTFOUND, "the caller has not reacted with this emoji");
            goto out;
        }
    }
    if (rc != CM_OK || (rc = messaging_message_update(&tx, mid, &u, &after)) != CM_OK) {
        cm_http_reply_error(req, rc, "the reaction could not be stored");
        goto out;
    }
    d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "conversation_id", tx.cid);
    cJSON_AddStringToObject(d, "message_id", mid);
    cJSON_AddNumberToObject(d, "seq", (double)cm_bson_int(&msg, "seq", 0));
    cJSON_AddStringToObject(d, "user_id", c.sub);
    cJSON_AddStringToObject(d, "emoji", emoji);
    reply = messaging_message_json(&after);
    {
        cJSON *rs = cJSON_GetObjectItemCaseSensitive(reply, "reactions");
        cJSON_AddItemToObject(d, "reactions", rs ? cJSON_Duplicate(rs, 1) : cJSON_CreateArray());
    }
    messaging_tx_message_changed(&tx, &after);
    bson_destroy(&after);
    if ((rc = messaging_tx_append(&tx, delta > 0 ? "reaction.added" : "reaction.removed", NULL,
                                  NULL, d, NULL)) != CM_OK ||
        (rc = messaging_tx_commit(&tx)) != CM_OK) {
        cJSON_Delete(reply);
        cm_http_reply_error(req, rc, "the reaction could not be stored");
        goto out;
    }
    messaging_mark_my_reactions(ctx, c.sub, reply);
    cm_http_reply_json(req, delta > 0 ? 201 : 200, reply);
out:
    if (have_msg)
        bson_destroy(&msg);
    bson_destroy(&rec);
    bson_destroy(&u);
    bson_destroy(&f);
    messaging_tx_close(&tx);
}

/* POST /v1/conversations/{id}/messages/{message_id}/reactions {"emoji": ...} */
void messaging_reactions_add(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    static const char *const allowed[] = {"emoji", NULL};
    const char *emoji = NULL;
    char detail[200];
    cJSON *body;

    if (cm_http_json_body(req, &body) != CM_OK)
        return;
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_string(body, "emoji", 1, 1, MSG_EMOJI_MAX, &emoji, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        return;
    }
    react(req, ctx, emoji, +1);
}

/* DELETE /v1/conversations/{id}/messages/{message_id}/reactions/{emoji} */
void messaging_reactions_remove(cm_http_req *req, void *ud)
{
    react(req, ud, cm_http_param(req, "emoji"), -1);
}

struct mine {
    cJSON *messages;
};

/* Sets "me" on the reaction of a rendered message the caller made. */
static int mark_one(const bson_t *rec, void *ud)
{
    struct mine *m = ud;
    const char *mid = cm_bson_str(rec, "message_id", ""), *emoji = cm_bson_str(rec, "emoji", "");
    cJSON *msg, *r;
    cJSON_ArrayForEach(msg, m->messages)
    {
        cJSON *id = cJSON_GetObjectItemCaseSensitive(msg, "id");
        if (!cJSON_IsString(id) || strcmp(id->valuestring, mid) != 0)
            continue;
        cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(msg, "reactions"))
        {
            cJSON *e = cJSON_GetObjectItemCaseSensitive(r, "emoji");
            if (cJSON_IsString(e) && strcmp(e->valuestring, emoji) == 0)
                cJSON_ReplaceItemInObjectCaseSensitive(r, "me", cJSON_CreateTrue());
        }
    }
    return 0;
}

void messaging_mark_my_reactions(messaging_ctx *ctx, const char *user, cJSON *messages)
{
    struct mine m;
    cJSON *list = messages, *single = NULL, *msg, *r;
    bson_t f = BSON_INITIALIZER, in, arr;
    int n = 0;
    char k[16];

    if (cJSON_IsObject(messages)) {
        single = cJSON_CreateArray();
        cJSON_AddItemReferenceToArray(single, messages);
        list = single;
    }
    BSON_APPEND_UTF8(&f, "user_id", user);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "message_id", &in);
    BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
    cJSON_ArrayForEach(msg, list)
    {
        cJSON *rs = cJSON_GetObjectItemCaseSensitive(msg, "reactions");
        if (cJSON_GetArraySize(rs) == 0)
            continue;
        cJSON_ArrayForEach(r, rs) cJSON_AddFalseToObject(r, "me");
        snprintf(k, sizeof(k), "%d", n++);
        BSON_APPEND_UTF8(&arr, k, cJSON_GetObjectItemCaseSensitive(msg, "id")->valuestring);
    }
    bson_append_array_end(&in, &arr);
    bson_append_document_end(&f, &in);
    m.messages = list;
    /* On a read error the flags stay false: the counts are still right. */
    if (n > 0 && cm_mongo_find(ctx->db, MSG_COLL_REACTIONS, &f, NULL, mark_one, &m) != CM_OK)
        cm_warn("reactions of the caller could not be read");
    bson_destroy(&f);
    cJSON_Delete(single);
}

/* Pins (pin 1) or unpins (pin 0) the message of the path. */
static void pin(cm_http_req *req, messaging_ctx *ctx, int on)
{
    cm_jwt_claims c;
    messaging_tx tx;
    messaging_rule_input in;
    bson_t msg, u = BSON_INITIALIZER, set, after;
    int have_msg = 0;
    cJSON *reply;
    cm_err rc;

    memset(&tx, 0, sizeof(tx));
    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (messaging_open_message(req, ctx, &c, &tx, &msg) != CM_OK)
        goto out;
    have_msg = 1;
    messaging_rule_input_of(&tx, &c, &in);
    if (messaging_refuse_if_deleted(req, &tx) || messaging_refuse_unless(req, MSG_ACT_PIN, &in))
        goto out;
    if (on && cm_bson_bool(&msg, "deleted", 0)) {
        cm_http_reply_error(req, CM_ECONFLICT, "the message was deleted");
        goto out;
    }
    if (cm_bson_bool(&msg, "pinned", 0) == on) {
        reply = messaging_message_json(&msg); /* already so */
        messaging_mark_my_reactions(ctx, c.sub, reply);
        cm_http_reply_json(req, 200, reply);
        goto out;
    }
    if (on) {
        BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
        BSON_APPEND_BOOL(&set, "pinned", true);
        BSON_APPEND_UTF8(&set, "pinned_by", c.sub);
        BSON_APPEND_DATE_TIME(&set, "pinned_at", tx.now);
    } else {
        BSON_APPEND_DOCUMENT_BEGIN(&u, "$unset", &set);
        BSON_APPEND_UTF8(&set, "pinned", "");
        BSON_APPEND_UTF8(&set, "pinned_by", "");
        BSON_APPEND_UTF8(&set, "pinned_at", "");
    }
    bson_append_document_end(&u, &set);
    rc = messaging_message_update(&tx, cm_bson_str(&msg, "_id", ""), &u, &after);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the pin could not be stored");
        goto out;
    }
    reply = messaging_message_json(&after);
    rc = messaging_message_logged(&tx, on ? "message.pinned" : "message.unpinned", &after);
    bson_destroy(&after);
    if (rc != CM_OK || (rc = messaging_tx_commit(&tx)) != CM_OK) {
        cJSON_Delete(reply);
        cm_http_reply_error(req, rc, "the pin could not be stored");
        goto out;
    }
    messaging_mark_my_reactions(ctx, c.sub, reply);
    cm_http_reply_json(req, 200, reply);
out:
    if (have_msg)
        bson_destroy(&msg);
    bson_destroy(&u);
    messaging_tx_close(&tx);
}

/* POST /v1/conversations/{id}/messages/{message_id}/pin */
void messaging_pins_add(cm_http_req *req, void *ud)
{
    pin(req, ud, 1);
}

/* DELETE /v1/conversations/{id}/messages/{message_id}/pin */
void messaging_pins_remove(cm_http_req *req, void *ud)
{
    pin(req, ud, 0);
}

/* GET /v1/conversations/{id}/pins?cursor=&limit= : pinned messages, the latest pin first. */
void messaging_pins_list(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    cm_jwt_claims c;
    const char *cid = cm_http_param(req, "id"), *cursor = cm_http_query(req, "cursor");
    messaging_page p = {0};
    bson_t f = BSON_INITIALIZER, sort = BSON_INITIALIZER;
    char id[65], next[80];
    int64_t cms = 0;
    long limit;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (cm_http_query_long(req, "limit", MSG_PAGE_DEFAULT, 1, MSG_PAGE_MAX, &limit) != CM_OK)
        goto out;
    if (cursor && *cursor == '\0')
        cursor = NULL;
    if (cursor && !messaging_key_cursor_parse(cursor, 1, &cms, id)) {
        cm_http_reply_error(req, CM_EINVAL, "the cursor is malformed; pass back next_cursor as given");
        goto out;
    }
    if (messaging_member_of(req, ctx, &c, NULL, NULL) != CM_OK)
        goto out;
    BSON_APPEND_UTF8(&f, "conversation_id", cid);
    BSON_APPEND_BOOL(&f, "pinned", true);
    if (cursor)
        messaging_keyset_after(&f, "pinned_at", cms, id, 1);
    BSON_APPEND_INT32(&sort, "pinned_at", -1);
    BSON_APPEND_INT32(&sort, "_id", -1);
    rc = messaging_page_find(ctx->db, MSG_COLL_MESSAGES, &f, &sort, limit, messaging_message_json, &p);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "pinned messages could not be listed");
        goto out;
    }
    messaging_mark_my_reactions(ctx, c.sub, p.items);
    if (p.more)
        snprintf(next, sizeof(next), "%lld_%s", (long long)cm_bson_int(&p.last, "pinned_at", 0),
                 cm_bson_str(&p.last, "_id", ""));
    cm_http_reply_page(req, p.items, p.more ? next : NULL);
    p.items = NULL;
out:
    messaging_page_cleanup(&p);
    bson_destroy(&f);
    bson_destroy(&sort);
}
