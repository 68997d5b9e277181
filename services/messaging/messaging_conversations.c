/* messaging_conversations.c - conversations: POST and GET /v1/conversations, membership. */
#include <stdio.h>
#include <string.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "common/uuid.h"
#include "messaging.h"
#include "messaging_users.h"

cm_err messaging_conversation_for_member(messaging_ctx *ctx, const char *tenant, const char *id,
                                         const char *user, bson_t *out)
{
    bson_t f = BSON_INITIALIZER;
    cm_err rc;

    if (!cm_uuid_valid(id))
        return CM_ENOTFOUND;
    BSON_APPEND_UTF8(&f, "_id", id);
    BSON_APPEND_UTF8(&f, "tenant", tenant);
    BSON_APPEND_UTF8(&f, "members", user); /* matches when the array holds user */
    rc = cm_mongo_find_one(ctx->db, MSG_COLL_CONVERSATIONS, &f, NULL, out);
    bson_destroy(&f);
    return rc;
}

/* The caller's read position in a conversation (0 when it has no member record). */
static cm_err read_seq_of(messaging_ctx *ctx, const char *cid, const char *uid, int64_t *seq)
{
    char key[256];
    bson_t f = BSON_INITIALIZER, m;
    cm_err rc;

    snprintf(key, sizeof(key), "%s/%s", cid, uid);
    BSON_APPEND_UTF8(&f, "_id", key);
    rc = cm_mongo_find_one(ctx->db, MSG_COLL_MEMBERS, &f, NULL, &m);
    bson_destroy(&f);
    *seq = 0;
    if (rc == CM_OK) {
        *seq = cm_bson_int(&m, "read_seq", 0);
        bson_destroy(&m);
    }
    return rc == CM_ENOTFOUND ? CM_OK : rc;
}

static cJSON *conversation_json(const bson_t *doc, int64_t read_seq)
{
    char ts[CM_RFC3339_LEN];
    cJSON *c = cJSON_CreateObject(), *members;
    const char *title = cm_bson_str(doc, "title", NULL);
    int64_t last_seq = cm_bson_int(doc, "last_seq", 0);
    bson_iter_t it, arr;

    cJSON_AddStringToObject(c, "id", cm_bson_str(doc, "_id", ""));
    cJSON_AddStringToObject(c, "type", cm_bson_str(doc, "type", ""));
    if (title)
        cJSON_AddStringToObject(c, "title", title);
    members = cJSON_AddArrayToObject(c, "members");
    if (bson_iter_init_find(&it, doc, "members") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr))
        while (bson_iter_next(&arr))
            if (BSON_ITER_HOLDS_UTF8(&arr))
                cJSON_AddItemToArray(members, cJSON_CreateString(bson_iter_utf8(&arr, NULL)));
    cJSON_AddStringToObject(c, "created_by", cm_bson_str(doc, "created_by", ""));
    cm_clock_rfc3339(cm_bson_int(doc, "created_at", 0), ts);
    cJSON_AddStringToObject(c, "created_at", ts);
    cm_clock_rfc3339(cm_bson_int(doc, "last_activity_at", 0), ts);
    cJSON_AddStringToObject(c, "last_activity_at", ts);
    cJSON_AddNumberToObject(c, "last_seq", (double)last_seq);
    if (bson_iter_init_find(&it, doc, "last_message") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        uint32_t len;
        const uint8_t *data;
        bson_t lm;
        bson_iter_document(&it, &len, &data);
        if (bson_init_static(&lm, data, len))
            cJSON_AddItemToObject(c, "last_message", messaging_message_json(&lm));
    } else {
        cJSON_AddNullToObject(c, "last_message");
    }
    /* Sending moves the sender's read_seq, so own messages never count as unread. */
    cJSON_AddNumberToObject(c, "unread_count", (double)(last_seq > read_seq ? last_seq - read_seq : 0));
    return c;
}

/* Parses and checks the member list: distinct valid ids, the caller added. */
static cm_err read_members(const cJSON *body, const char *me, long max, const char **ids,
                           int *n, char *detail, size_t dn)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(body, "members"), *it;
    *n = 0;
    ids[(*n)++] = me;
    if (arr == NULL)
        return CM_OK;
    if (!cJSON_IsArray(arr)) {
        snprintf(detail, dn, "field 'members' must be an array of user ids");
        return CM_EINVAL;
    }
    cJSON_ArrayForEach(it, arr)
    {
        int dup = 0;
        if (!cJSON_IsString(it) || !cm_user_id_valid(it->valuestring)) {
            snprintf(detail, dn, "field 'members' must hold user ids (1..64 of A-Z a-z 0-9 _ . @ -)");
            return CM_EINVAL;
        }
        for (int i = 0; i < *n; i++)
            if (strcmp(ids[i], it->valuestring) == 0)
                dup = 1;
        if (dup)
            continue;
        if (*n >= max) {
            snprintf(detail, dn, max == 2 ? "a direct conversation has exactly one other member"
                                          : "a conversation may have at most %ld members", max);
            return CM_EINVAL;
        }
        ids[(*n)++] = it->valuestring;
    }
    return CM_OK;
}

static cm_err insert_member(messaging_ctx *ctx, const char *tenant, const char *cid,
                            const char *uid, const char *role, int64_t now)
{
    char key[256];
    bson_t m = BSON_INITIALIZER;
    cm_err rc;

    snprintf(key, sizeof(key), "%s/%s", cid, uid);
    BSON_APPEND_UTF8(&m, "_id", key);
    BSON_APPEND_UTF8(&m, "tenant", tenant);
    BSON_APPEND_UTF8(&m, "conversation_id", cid);
    BSON_APPEND_UTF8(&m, "user_id", uid);
    BSON_APPEND_UTF8(&m, "role", role);
    BSON_APPEND_INT64(&m, "read_seq", 0);
    BSON_APPEND_DATE_TIME(&m, "joined_at", now);
    rc = cm_mongo_insert(ctx->db, MSG_COLL_MEMBERS, &m);
    bson_destroy(&m);
    return rc == CM_ECONFLICT ? CM_OK : rc;
}

/* POST /v1/conversations */
void messaging_conversations_create(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    static const char *const allowed[] = {"type", "members", "title", NULL};
    cm_jwt_claims c;
    char detail[256], id[CM_UUID_STRLEN], dkey[400], loc[80];
    const char *type = NULL, *title = NULL;
    const char **ids = NULL;
    int n = 0, status = 201;
    long max;
    int64_t now = cm_clock_now_ms();
    bson_t doc = BSON_INITIALIZER, arr, f = BSON_INITIALIZER, stored;
    cJSON *body;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (cm_http_json_body(req, &body) != CM_OK)
        goto out;
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_string(body, "type", 1, 1, 16, &type, detail, sizeof(detail)) ||
        cm_json_string(body, "title", 0, 1, MSG_TITLE_MAX, &title, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    if (strcmp(type, "direct") != 0 && strcmp(type, "group") != 0) {
        cm_http_reply_error(req, CM_EINVAL, "field 'type' must be 'direct' or 'group'");
        goto out;
    }
    max = strcmp(type, "direct") == 0 ? 2 : ctx->group_member_max;
    ids = cm_http_alloc(req, sizeof(*ids) * (size_t)(max + 1));
    if (ids == NULL) {
        cm_http_reply_error(req, CM_ENOMEM, NULL);
        goto out;
    }
    rc = read_members(body, c.sub, max, ids, &n, detail, sizeof(detail));
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, detail);
        goto out;
    }
    if (strcmp(type, "direct") == 0) {
        if (n != 2 || title) {
            cm_http_reply_error(req, CM_EINVAL,
                                n != 2 ? "a direct conversation has exactly one other member"
                                       : "a direct conversation has no title");
            goto out;
        }
        if (messaging_direct_key(c.tid, ids[0], ids[1], dkey, sizeof(dkey)) != 0) {
            cm_http_reply_error(req, CM_EINVAL, "member ids are too long");
            goto out;
        }
        if (messaging_users_refuse_direct(req, ctx, c.tid, c.sub, ids[1]))
            goto out;
    }
    if (cm_uuid_v7(id) != CM_OK) {
        cm_http_reply_error(req, CM_EINTERNAL, "the random source failed");
        goto out;
    }
    /* Members first: if we crash after this, the conversation is not visible yet and a retry
     * of a direct conversation converges on the same pair key. */
    for (int i = 0; i < n; i++) {
        rc = insert_member(ctx, c.tid, id, ids[i], strcmp(type, "group") == 0 && i == 0 ? "owner" : "member", now);
        if (rc != CM_OK) {
            cm_http_reply_error(req, rc, "the members could not be stored");
            goto out;
        }
    }
    BSON_APPEND_UTF8(&doc, "_id", id);
    BSON_APPEND_UTF8(&doc, "tenant", c.tid);
    BSON_APPEND_UTF8(&doc, "type", type);
    if (title)
        BSON_APPEND_UTF8(&doc, "title", title);
    BSON_APPEND_ARRAY_BEGIN(&doc, "members", &arr);
    for (int i = 0; i < n; i++) {
        char k[16];
        snprintf(k, sizeof(k), "%d", i);
        BSON_APPEND_UTF8(&arr, k, ids[i]);
    }
    bson_append_array_end(&doc, &arr);
    /* Unique per tenant and pair for direct; a group's key is its own id (always unique). */
    BSON_APPEND_UTF8(&doc, "direct_key", strcmp(type, "direct") == 0 ? dkey : id);
    BSON_APPEND_UTF8(&doc, "created_by", c.sub);
    BSON_APPEND_DATE_TIME(&doc, "created_at", now);
    BSON_APPEND_DATE_TIME(&doc, "last_activity_at", now);
    BSON_APPEND_INT64(&doc, "last_seq", 0);
    rc = cm_mongo_insert(ctx->db, MSG_COLL_CONVERSATIONS, &doc);
    if (rc == CM_ECONFLICT && strcmp(type, "direct") == 0) {
        /* The pair already has its conversation: answer with it (idempotent create). */
        BSON_APPEND_UTF8(&f, "direct_key", dkey);
        rc = cm_mongo_find_one(ctx->db, MSG_COLL_CONVERSATIONS, &f, NULL, &stored);
        if (rc == CM_OK) {
            bson_t mf = BSON_INITIALIZER;
            int64_t rs = 0;
            BSON_APPEND_UTF8(&mf, "conversation_id", id);
            cm_mongo_delete(ctx->db, MSG_COLL_MEMBERS, &mf, 1, NULL); /* our unused members */
            bson_destroy(&mf);
            rc = read_seq_of(ctx, cm_bson_str(&stored, "_id", ""), c.sub, &rs);
            if (rc == CM_OK)
                cm_http_reply_json(req, 200, conversation_json(&stored, rs));
            bson_destroy(&stored);
            if (rc == CM_OK)
                goto out;
        }
    }
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the conversation could not be stored");
        goto out;
    }
    cm_info("conversation %s (%s, %d members) created by %s", id, type, n, c.sub);
    snprintf(loc, sizeof(loc), "/v1/conversations/%s", id);
    cm_http_add_header(req, "Location", loc);
    cm_http_reply_json(req, status, conversation_json(&doc, 0));
out:
    bson_destroy(&doc);
    bson_destroy(&f);
}

/* Renders for a page; unread counts are filled in from the member records afterwards. */
static cJSON *conversation_item(const bson_t *doc)
{
    return conversation_json(doc, 0);
}

struct reads {
    cJSON *items;
};

static int apply_read(const bson_t *doc, void *ud)
{
    struct reads *r = ud;
    const char *cid = cm_bson_str(doc, "conversation_id", "");
    cJSON *it;
    cJSON_ArrayForEach(it, r->items)
    {
        cJSON *id = cJSON_GetObjectItem(it, "id");
        if (id && strcmp(id->valuestring, cid) == 0) {
            int64_t last = (int64_t)cJSON_GetObjectItem(it, "last_seq")->valuedouble;
            int64_t rs = cm_bson_int(doc, "read_seq", 0);
            cJSON_ReplaceItemInObject(it, "unread_count",
                                      cJSON_CreateNumber((double)(last > rs ? last - rs : 0)));
        }
    }
    return 0;
}

/* GET /v1/conversations?cursor=&limit= : the caller's, newest activity first. */
void messaging_conversations_list(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    cm_jwt_claims c;
    long limit;
    const char *cursor = cm_http_query(req, "cursor");
    int64_t cms = 0;

    char cid[CM_UUID_STRLEN], next[64];
    messaging_page s = {0};
    bson_t f = BSON_INITIALIZER, sort = BSON_INITIALIZER, mf = BSON_INITIALIZER, in, arr;
    cJSON *it;
    cm_err rc;
    int i = 0;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (cursor && *cursor == '\0')
        cursor = NULL; /* "cursor=" is the first page, like an absent one */
    if (cm_http_query_long(req, "limit", MSG_PAGE_DEFAULT, 1, MSG_PAGE_MAX, &limit) != CM_OK)
        goto out;
    if (cursor && !messaging_conv_cursor_parse(cursor, &cms, cid)) {
        cm_http_reply_error(req, CM_EINVAL, "the cursor is malformed; pass back next_cursor as given");
        goto out;
    }
    BSON_APPEND_UTF8(&f, "tenant", c.tid);
    BSON_APPEND_UTF8(&f, "members", c.sub);
    if (cursor) {
        /* Keyset pagination on (last_activity_at, _id) descending. */
        bson_t or, a, b, lt, ltid;
        BSON_APPEND_ARRAY_BEGIN(&f, "$or", &or);
        BSON_APPEND_DOCUMENT_BEGIN(&or, "0", &a);
        BSON_APPEND_DOCUMENT_BEGIN(&a, "last_activity_at", &lt);
        BSON_APPEND_DATE_TIME(&lt, "$lt", cms);
        bson_append_document_end(&a, &lt);
        bson_append_document_end(&or, &a);
        BSON_APPEND_DOCUMENT_BEGIN(&or, "1", &b);
        BSON_APPEND_DATE_TIME(&b, "last_activity_at", cms);
        BSON_APPEND_DOCUMENT_BEGIN(&b, "_id", &ltid);
        BSON_APPEND_UTF8(&ltid, "$lt", cid);
        bson_append_document_end(&b, &ltid);
        bson_append_document_end(&or, &b);
        bson_append_array_end(&f, &or);
    }
    BSON_APPEND_INT32(&sort, "last_activity_at", -1);
    BSON_APPEND_INT32(&sort, "_id", -1);
    rc = messaging_page_find(ctx->db, MSG_COLL_CONVERSATIONS, &f, &sort, limit,
                             conversation_item, &s);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "conversations could not be listed");
        goto out;
    }
    if (s.n > 0) {
        /* One query for the caller's read positions on this page. */
        struct reads r = {s.items};
        BSON_APPEND_DOCUMENT_BEGIN(&mf, "_id", &in);
        BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
        cJSON_ArrayForEach(it, s.items)
        {
            char k[16], key[256];
            snprintf(k, sizeof(k), "%d", i++);
            snprintf(key, sizeof(key), "%s/%s", cJSON_GetObjectItem(it, "id")->valuestring, c.sub);
            BSON_APPEND_UTF8(&arr, k, key);
        }
        bson_append_array_end(&in, &arr);
        bson_append_document_end(&mf, &in);
        rc = cm_mongo_find(ctx->db, MSG_COLL_MEMBERS, &mf, NULL, apply_read, &r);
        if (rc != CM_OK) {
            cm_http_reply_error(req, rc, "read positions could not be loaded");
            goto out;
        }
    }
    if (s.more)
        snprintf(next, sizeof(next), "%lld_%s", (long long)cm_bson_int(&s.last, "last_activity_at", 0),
                 cm_bson_str(&s.last, "_id", ""));
    cm_http_reply_page(req, s.items, s.more ? next : NULL);
    s.items = NULL; /* taken by the reply */
out:
    messaging_page_cleanup(&s);
    bson_destroy(&f);
    bson_destroy(&sort);
    bson_destroy(&mf);
}

cm_err messaging_ensure_indexes(messaging_ctx *ctx)
{
    static const struct {
        const char *coll, *name;
        const char *keys[4];
        int dirs[4];
        int unique;
    } idx[] = {
        {MSG_COLL_CONVERSATIONS, "direct_pair", {"direct_key"}, {1}, 1},
        {MSG_COLL_CONVERSATIONS, "by_member", {"tenant", "members", "last_activity_at", "_id"}, {1, 1, -1, -1}, 0},
        {MSG_COLL_MESSAGES, "conversation_seq", {"conversation_id", "seq"}, {1, 1}, 1},
        {MSG_COLL_MESSAGES, "idempotency", {"conversation_id", "sender_id", "client_msg_id"}, {1, 1, 1}, 1},
        {MSG_COLL_MESSAGES, "outbox", {"published", "created_at"}, {1, 1}, 0},
        {MSG_COLL_MEMBERS, "by_conversation", {"conversation_id"}, {1}, 0},
    };
    for (size_t i = 0; i < sizeof(idx) / sizeof(idx[0]); i++) {
        bson_t k = BSON_INITIALIZER;
        cm_err rc;
        for (int j = 0; j < 4 && idx[i].keys[j]; j++)
            BSON_APPEND_INT32(&k, idx[i].keys[j], idx[i].dirs[j]);
        rc = cm_mongo_create_index(ctx->db, idx[i].coll, &k, idx[i].name, idx[i].unique);
        bson_destroy(&k);
        if (rc != CM_OK)
            return rc;
    }
    return CM_OK;
}
