/* messaging_conversations.c - conversations: create, get, list, update, delete, the caller's
 * own settings (archive, mute) and leaving. Membership lives in the members collection, one
 * record per (conversation, user), so a channel of 100000 members is 100000 small records,
 * not one huge array. */
#include <stdio.h>
#include <string.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "common/uuid.h"
#include "messaging.h"
#include "messaging_users.h"

#define CREATE_MEMBERS_MAX 1000 /* members named at creation; larger channels grow by adding */
#define LIST_MEMBERSHIPS_MAX 10000 /* conversations one user's list considers */

cm_err messaging_conversation_for_member(messaging_ctx *ctx, const char *tenant, const char *cid,
                                         const char *user, bson_t *conv, bson_t *member)
{
    cm_err rc;

    if (cid == NULL || !cm_uuid_valid(cid))
        return CM_ENOTFOUND;
    rc = messaging_member_find(ctx, cid, user, member);
    if (rc != CM_OK)
        return rc;
    rc = cm_mongo_find_owned(ctx->db, MSG_COLL_CONVERSATIONS, cid, tenant, NULL, conv);
    if (rc != CM_OK)
        bson_destroy(member);
    return rc;
}

/* The conversation as the caller sees it: shared fields and their own. */
static cJSON *conversation_for(const bson_t *conv, const bson_t *member)
{
    cJSON *c = messaging_conversation_json(conv);
    messaging_conversation_add_mine(c, conv, member, cm_clock_now_ms());
    return c;
}

/* Parses and checks the member list: distinct valid ids, the caller first. */
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
            if (max == 2)
                snprintf(detail, dn, "a direct conversation has exactly one other member");
            else
                snprintf(detail, dn, "a conversation may be created with at most %ld members; add more afterwards", max);
            return CM_EINVAL;
        }
        ids[(*n)++] = it->valuestring;
    }
    return CM_OK;
}

cm_err messaging_metadata_read(const cJSON *body, long max, char **out, int *present, char *detail,
                               size_t dn)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(body, "metadata");
    char *s;

    *present = m != NULL;
    *out = NULL;
    if (m == NULL || cJSON_IsNull(m))
        return CM_OK;
    if (!cJSON_IsObject(m)) {
        snprintf(detail, dn, "field 'metadata' must be an object");
        return CM_EINVAL;
    }
    s = cm_json_print(m);
    if (s == NULL)
        return CM_ENOMEM;
    if ((long)strlen(s) > max) {
        snprintf(detail, dn, "field 'metadata' is larger than %ld bytes as JSON", max);
        free(s);
        return CM_EINVAL;
    }
    *out = s;
    return CM_OK;
}

static cm_err insert_member(messaging_ctx *ctx, const char *tenant, const char *cid,
                            const char *type, const char *uid, const char *role, int64_t now,
                            int64_t joined_eseq)
{
    char key[MSG_MEMBER_KEY_MAX];
    bson_t m = BSON_INITIALIZER;
    cm_err rc;

    messaging_member_key(cid, uid, key);
    BSON_APPEND_UTF8(&m, "_id", key);
    BSON_APPEND_UTF8(&m, "tenant", tenant);
    BSON_APPEND_UTF8(&m, "conversation_id", cid);
    BSON_APPEND_UTF8(&m, "user_id", uid);
    BSON_APPEND_UTF8(&m, "conversation_type", type);
    BSON_APPEND_UTF8(&m, "role", role);
    BSON_APPEND_UTF8(&m, "state", "active");
    BSON_APPEND_INT64(&m, "read_seq", 0);
    BSON_APPEND_INT64(&m, "delivered_seq", 0);
    BSON_APPEND_BOOL(&m, "archived", false);
    BSON_APPEND_DATE_TIME(&m, "joined_at", now);
    BSON_APPEND_INT64(&m, "joined_eseq", joined_eseq);
    rc = cm_mongo_insert(ctx->db, MSG_COLL_MEMBERS, &m);
    bson_destroy(&m);
    return rc;
}

/* Answers a repeated direct-conversation create with the pair's existing conversation. */
static cm_err reply_existing_direct(cm_http_req *req, messaging_ctx *ctx, const char *dkey,
                                    const char *me)
{
    bson_t f = BSON_INITIALIZER, stored, member;
    cm_err rc;

    BSON_APPEND_UTF8(&f, "direct_key", dkey);
    rc = cm_mongo_find_one(ctx->db, MSG_COLL_CONVERSATIONS, &f, NULL, &stored);
    bson_destroy(&f);
    if (rc != CM_OK)
        return rc;
    rc = messaging_member_find(ctx, cm_bson_str(&stored, "_id", ""), me, &member);
    if (rc == CM_OK) {
        cm_http_reply_json(req, 200, conversation_for(&stored, &member));
        bson_destroy(&member);
    }
    bson_destroy(&stored);
    return rc;
}

/* POST /v1/conversations */
void messaging_conversations_create(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    static const char *const allowed[] = {"type",  "members",  "title",           "description",
                                          "image", "metadata", "members_can_post", NULL};
    cm_jwt_claims c;
    char detail[256], id[CM_UUID_STRLEN], dkey[400], loc[80];
    const char *type = NULL, *title = NULL, *description = NULL, *image = NULL;
    char *metadata = NULL;
    const char **ids = NULL;
    int n = 0, direct, meta_present, members_can_post = 0;
    long max;
    int64_t now = cm_clock_now_ms();
    bson_t doc = BSON_INITIALIZER, arr;
    cJSON *body, *data, *mlist;
    messaging_tx tx;
    messaging_limits lim;
    cm_err rc;

    memset(&tx, 0, sizeof(tx));
    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (cm_http_json_body(req, &body) != CM_OK)
        goto out;
    if (messaging_sanction_check(req, ctx, &c, NULL) != CM_OK)
        goto out; /* banned or muted tenant-wide: no new conversations */
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_string(body, "type", 1, 1, 16, &type, detail, sizeof(detail)) ||
        cm_json_string(body, "title", 0, 1, MSG_TITLE_MAX, &title, detail, sizeof(detail)) ||
        cm_json_string(body, "description", 0, 1, MSG_DESCRIPTION_MAX, &description, detail,
                       sizeof(detail)) ||
        cm_json_string(body, "image", 0, 36, 36, &image, detail, sizeof(detail)) ||
        cm_json_bool(body, "members_can_post", 0, &members_can_post, detail, sizeof(detail)) ||
        messaging_metadata_read(body, ctx->limits.metadata_max, &metadata, &meta_present, detail,
                                sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    if (strcmp(type, "direct") != 0 && strcmp(type, "group") != 0 &&
        strcmp(type, "channel") != 0) {
        cm_http_reply_error(req, CM_EINVAL, "field 'type' must be 'direct', 'group' or 'channel'");
        goto out;
    }
    if (image && !cm_uuid_valid(image)) {
        cm_http_reply_error(req, CM_EINVAL, "field 'image' must be a media id (a UUID)");
        goto out;
    }
    direct = strcmp(type, "direct") == 0;
    messaging_limits_for(ctx, c.tid, &lim);
    max = direct ? 2
          : strcmp(type, "group") == 0
              ? (lim.group_member_max < CREATE_MEMBERS_MAX ? lim.group_member_max : CREATE_MEMBERS_MAX)
              : (lim.channel_member_max < CREATE_MEMBERS_MAX ? lim.channel_member_max
                                                             : CREATE_MEMBERS_MAX);
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
    if (direct) {
        if (n != 2 || title || description || image || members_can_post) {
            cm_http_reply_error(req, CM_EINVAL,
                                n != 2 ? "a direct conversation has exactly one other member"
                                : title ? "a direct conversation has no title"
                                : members_can_post ? "field 'members_can_post' is for channels"
                                                   : "a direct conversation has no description or image");
            goto out;
        }
        if (messaging_direct_key(c.tid, ids[0], ids[1], dkey, sizeof(dkey)) != 0) {
            cm_http_reply_error(req, CM_EINVAL, "member ids are too long");
            goto out;
        }
        if (messaging_users_refuse_direct(req, ctx, c.tid, c.sub, ids[1]))
            goto out;
    } else if (members_can_post && strcmp(type, "channel") != 0) {
        cm_http_reply_error(req, CM_EINVAL, "field 'members_can_post' is for channels");
        goto out;
    }
    if (cm_uuid_v7(id) != CM_OK) {
        cm_http_reply_error(req, CM_EINTERNAL, "the random source failed");
        goto out;
    }
    messaging_unread_seed(ctx, c.tid, id, ids, n);
    /* Members first: if we crash after this, the conversation is not visible yet (nothing
     * lists a membership whose conversation does not exist) and a retried direct create
     * converges on the same pair key. */
    for (int i = 0; i < n; i++) {
        rc = insert_member(ctx, c.tid, id, type, ids[i], !direct && i == 0 ? "owner" : "member",
                           now, 1);
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
    if (description)
        BSON_APPEND_UTF8(&doc, "description", description);
    if (image)
        BSON_APPEND_UTF8(&doc, "image", image);
    if (metadata)
        BSON_APPEND_UTF8(&doc, "metadata", metadata);
    if (direct) {
        BSON_APPEND_ARRAY_BEGIN(&doc, "members", &arr);
        BSON_APPEND_UTF8(&arr, "0", ids[0]);
        BSON_APPEND_UTF8(&arr, "1", ids[1]);
        bson_append_array_end(&doc, &arr);
    }
    if (strcmp(type, "channel") == 0)
        BSON_APPEND_BOOL(&doc, "members_can_post", members_can_post);
    /* Unique per tenant and pair for direct; any other conversation's key is its own id. */
    BSON_APPEND_UTF8(&doc, "direct_key", direct ? dkey : id);
    BSON_APPEND_UTF8(&doc, "created_by", c.sub);
    BSON_APPEND_DATE_TIME(&doc, "created_at", now);
    BSON_APPEND_DATE_TIME(&doc, "last_activity_at", now);
    BSON_APPEND_INT64(&doc, "last_seq", 0);
    BSON_APPEND_INT64(&doc, "member_count", n);
    BSON_APPEND_INT64(&doc, "last_eseq", 1); /* conversation.created, appended next */
    BSON_APPEND_INT64(&doc, "log_floor", 1);
    rc = cm_mongo_insert(ctx->db, MSG_COLL_CONVERSATIONS, &doc);
    if (rc == CM_ECONFLICT && direct) {
        /* The pair already has its conversation: answer with it (idempotent create). */
        bson_t mf = BSON_INITIALIZER;
        BSON_APPEND_UTF8(&mf, "conversation_id", id);
        cm_mongo_delete(ctx->db, MSG_COLL_MEMBERS, &mf, 1, NULL); /* our unused members */
        bson_destroy(&mf);
        rc = reply_existing_direct(req, ctx, dkey, c.sub);
        if (rc == CM_OK)
            goto out;
    }
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the conversation could not be stored");
        goto out;
    }
    /* The log's first entry has the conversation's id (eseq 1) and names the first members. */
    messaging_tx_init_new(&tx, ctx, &c, cm_http_request_id(req), id, now);
    data = messaging_conversation_json(&doc);
    mlist = cJSON_AddArrayToObject(data, "initial_members");
    for (int i = 0; i < n; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "user_id", ids[i]);
        cJSON_AddStringToObject(m, "role", !direct && i == 0 ? "owner" : "member");
        cJSON_AddItemToArray(mlist, m);
    }
    rc = messaging_tx_append(&tx, "conversation.created", id, NULL, data, NULL);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the conversation's log could not be started");
        goto out;
    }
    messaging_tx_publish(&tx);
    cm_info("conversation %s (%s, %d members) created by %s", id, type, n, c.sub);
    snprintf(loc, sizeof(loc), "/v1/conversations/%s", id);
    cm_http_add_header(req, "Location", loc);
    {
        bson_t me = BSON_INITIALIZER;
        BSON_APPEND_UTF8(&me, "role", !direct ? "owner" : "member");
        cm_http_reply_json(req, 201, conversation_for(&doc, &me));
        bson_destroy(&me);
    }
out:
    messaging_tx_close(&tx);
    free(metadata);
    bson_destroy(&doc);
}

/* GET /v1/conversations/{id} */
void messaging_conversations_get(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    cm_jwt_claims c;
    bson_t conv, member;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        return;
    rc = messaging_conversation_for_member(ctx, c.tid, cm_http_param(req, "id"), c.sub, &conv,
                                           &member);
    if (rc != CM_OK) {
        messaging_reply_open_error(req, rc);
        return;
    }
    cm_http_reply_json(req, 200, conversation_for(&conv, &member));
    bson_destroy(&conv);
    bson_destroy(&member);
}

static int collect_membership(const bson_t *doc, void *ud)
{
    messaging_memberships *ms = ud;
    const char *cid = cm_bson_str(doc, "conversation_id", "");
    if (ms->n == ms->cap || !cm_uuid_valid(cid))
        return ms->n == ms->cap;
    memcpy(ms->items[ms->n].cid, cid, CM_UUID_STRLEN);
    ms->items[ms->n].doc = bson_copy(doc);
    ms->n++;
    return 0;
}

void messaging_memberships_free(messaging_memberships *ms)
{
    for (int i = 0; i < ms->n; i++)
        bson_destroy(ms->items[i].doc);
    free(ms->items);
    memset(ms, 0, sizeof(*ms));
}

cm_err messaging_memberships_load(messaging_ctx *ctx, const char *tenant, const char *user,
                                  int active_only, messaging_memberships *ms)
{
    bson_t f = BSON_INITIALIZER;
    cm_err rc;

    memset(ms, 0, sizeof(*ms));
    ms->cap = LIST_MEMBERSHIPS_MAX;
    ms->items = calloc((size_t)ms->cap, sizeof(*ms->items));
    if (ms->items == NULL)
        return CM_ENOMEM;
    BSON_APPEND_UTF8(&f, "tenant", tenant);
    BSON_APPEND_UTF8(&f, "user_id", user);
    if (active_only)
        BSON_APPEND_UTF8(&f, "state", "active");
    rc = cm_mongo_find(ctx->db, MSG_COLL_MEMBERS, &f, NULL, collect_membership, ms);
    bson_destroy(&f);
    if (rc != CM_OK)
        messaging_memberships_free(ms);
    return rc;
}

struct list_page {
    messaging_memberships *ms;
    cJSON *items;
    int n, limit, more;
    int64_t now, last_ms;
    char last_id[CM_UUID_STRLEN];
};

static const bson_t *membership_of(messaging_memberships *ms, const char *cid)
{
    for (int i = 0; i < ms->n; i++)
        if (strcmp(ms->items[i].cid, cid) == 0)
            return ms->items[i].doc;
    return NULL;
}

static int collect_conversation(const bson_t *doc, void *ud)
{
    struct list_page *p = ud;
    const bson_t *m = membership_of(p->ms, cm_bson_str(doc, "_id", ""));
    cJSON *c;
    if (m == NULL)
        return 0;
    if (p->n == p->limit) {
        p->more = 1;
        return 1;
    }
    c = messaging_conversation_json(doc);
    messaging_conversation_add_mine(c, doc, m, p->now);
    cJSON_AddItemToArray(p->items, c);
    p->last_ms = cm_bson_int(doc, "last_activity_at", 0);
    snprintf(p->last_id, sizeof(p->last_id), "%s", cm_bson_str(doc, "_id", ""));
    p->n++;
    return 0;
}

/* Reads an optional true/false query flag: -1 absent, 0 or 1; -2 malformed. */
static int query_flag(cm_http_req *req, const char *name)
{
    const char *v = cm_http_query(req, name);
    if (v == NULL || *v == '\0')
        return -1;
    if (strcmp(v, "true") == 0)
        return 1;
    if (strcmp(v, "false") == 0)
        return 0;
    return -2;
}

/* Appends {field: {"$in": [the memberships' conversation ids that `keep` accepts]}}. */
static void append_cids_in(bson_t *f, const char *field, messaging_memberships *ms,
                           int (*keep)(const bson_t *m, void *ud), void *ud)
{
    bson_t in, arr;
    char key[16];
    int k = 0;
    BSON_APPEND_DOCUMENT_BEGIN(f, field, &in);
    BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
    for (int i = 0; i < ms->n; i++) {
        if (keep && !keep(ms->items[i].doc, ud))
            continue;
        snprintf(key, sizeof(key), "%d", k++);
        BSON_APPEND_UTF8(&arr, key, ms->items[i].cid);
    }
    bson_append_array_end(&in, &arr);
    bson_append_document_end(f, &in);
}

struct list_filter {
    int archived, muted;
    int64_t now;
};

/* Memberships the page may show: the mute filter, and archived ones only on request. */
static int keep_listed(const bson_t *m, void *ud)
{
    const struct list_filter *lf = ud;
    int is_muted = cm_bson_int(m, "muted_until", 0) > lf->now;
    if (lf->muted != -1 && is_muted != lf->muted)
        return 0;
    return lf->archived || !cm_bson_bool(m, "archived", 0);
}

static int keep_archived(const bson_t *m, void *ud)
{
    return keep_listed(m, ud) && cm_bson_bool(m, "archived", 0);
}

/* GET /v1/conversations?type=&archived=&muted=&cursor=&limit= : the caller's conversations,
 * newest activity first. A conversation is archived for the caller when they archived it or
 * its owner deleted it for everyone: archived=false (the default) leaves those out,
 * archived=true lists only them. muted=true/false narrows to muted or unmuted ones. */
void messaging_conversations_list(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    cm_jwt_claims c;
    long limit;
    const char *cursor = cm_http_query(req, "cursor"), *type = cm_http_query(req, "type");
    struct list_filter lf = {query_flag(req, "archived"), query_flag(req, "muted"),
                             cm_clock_now_ms()};
    int64_t cms = 0;
    char cid[65], next[80];
    messaging_memberships ms = {0};
    struct list_page p = {0};
    bson_t f = BSON_INITIALIZER, opts = BSON_INITIALIZER, sort, ne, or, a, b, and, e1;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (cursor && *cursor == '\0')
        cursor = NULL; /* "cursor=" is the first page, like an absent one */
    if (cm_http_query_long(req, "limit", MSG_PAGE_DEFAULT, 1, MSG_PAGE_MAX, &limit) != CM_OK)
        goto out;
    if (cursor && !messaging_key_cursor_parse(cursor, 1, &cms, cid)) {
        cm_http_reply_error(req, CM_EINVAL, "the cursor is malformed; pass back next_cursor as given");
        goto out;
    }
    if (type && *type && strcmp(type, "direct") != 0 && strcmp(type, "group") != 0 &&
        strcmp(type, "channel") != 0) {
        cm_http_reply_error(req, CM_EINVAL, "query parameter 'type' must be direct, group or channel");
        goto out;
    }
    if (lf.archived == -2 || lf.muted == -2) {
        cm_http_reply_error(req, CM_EINVAL,
                            lf.archived == -2 ? "query parameter 'archived' must be true or false"
                                              : "query parameter 'muted' must be true or false");
        goto out;
    }
    if (lf.archived == -1)
        lf.archived = 0;
    rc = messaging_memberships_load(ctx, c.tid, c.sub, 1, &ms);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "memberships could not be loaded");
        goto out;
    }
    BSON_APPEND_UTF8(&f, "tenant", c.tid);
    if (type && *type)
        BSON_APPEND_UTF8(&f, "type", type);
    append_cids_in(&f, "_id", &ms, keep_listed, &lf);
    if (lf.archived) {
        BSON_APPEND_ARRAY_BEGIN(&f, "$or", &or);
        BSON_APPEND_DOCUMENT_BEGIN(&or, "0", &a);
        append_cids_in(&a, "_id", &ms, keep_archived, &lf);
        bson_append_document_end(&or, &a);
        BSON_APPEND_DOCUMENT_BEGIN(&or, "1", &b);
        BSON_APPEND_BOOL(&b, "deleted", true);
        bson_append_document_end(&or, &b);
        BSON_APPEND_DOCUMENT_BEGIN(&or, "2", &b);
        BSON_APPEND_BOOL(&b, "auto_archived", true);
        bson_append_document_end(&or, &b);
        bson_append_array_end(&f, &or);
    } else {
        BSON_APPEND_DOCUMENT_BEGIN(&f, "deleted", &ne);
        BSON_APPEND_BOOL(&ne, "$ne", true);
        bson_append_document_end(&f, &ne);
        BSON_APPEND_DOCUMENT_BEGIN(&f, "auto_archived", &ne);
        BSON_APPEND_BOOL(&ne, "$ne", true);
        bson_append_document_end(&f, &ne);
    }
    if (cursor) {
        /* Keyset pagination on (last_activity_at, _id) descending; inside $and, as the filter
         * may already hold an $or. */
        BSON_APPEND_ARRAY_BEGIN(&f, "$and", &and);
        BSON_APPEND_DOCUMENT_BEGIN(&and, "0", &e1);
        messaging_keyset_after(&e1, "last_activity_at", cms, cid, 1);
        bson_append_document_end(&and, &e1);
        bson_append_array_end(&f, &and);
    }
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "last_activity_at", -1);
    BSON_APPEND_INT32(&sort, "_id", -1);
    bson_append_document_end(&opts, &sort);
    BSON_APPEND_INT64(&opts, "limit", limit + 1);
    p.ms = &ms;
    p.items = cJSON_CreateArray();
    p.limit = (int)limit;
    p.now = lf.now;
    rc = cm_mongo_find(ctx->db, MSG_COLL_CONVERSATIONS, &f, &opts, collect_conversation, &p);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "conversations could not be listed");
        goto out;
    }
    if (p.more)
        snprintf(next, sizeof(next), "%lld_%s", (long long)p.last_ms, p.last_id);
    cm_http_reply_page(req, p.items, p.more ? next : NULL);
    p.items = NULL; /* taken by the reply */
out:
    cJSON_Delete(p.items);
    messaging_memberships_free(&ms);
    bson_destroy(&f);
    bson_destroy(&opts);
}

/* Reads an optional string field that may also be null (clear): *present, *value (NULL for
 * null). */
static cm_err nullable_string(const cJSON *body, const char *key, size_t max_chars, int *present,
                              const char **value, char *detail, size_t dn)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, key);
    *present = v != NULL;
    *value = NULL;
    if (v == NULL || cJSON_IsNull(v))
        return CM_OK;
    return cm_json_string(body, key, 1, 1, max_chars, value, detail, dn);
}

/* Queues `key` = `value` (NULL: cleared) on the conversation when it differs; returns 1 then. */
static int queue_change(messaging_tx *tx, const char *key, const char *value, cJSON *changed)
{
    const char *cur = cm_bson_str(&tx->conv, key, NULL);
    if ((cur == NULL && value == NULL) || (cur && value && strcmp(cur, value) == 0))
        return 0;
    if (value)
        BSON_APPEND_UTF8(messaging_tx_conv_set(tx), key, value);
    else
        BSON_APPEND_NULL(messaging_tx_conv_set(tx), key);
    cJSON_AddItemToArray(changed, cJSON_CreateString(key));
    return 1;
}

/* PATCH /v1/conversations/{id} {title, description, image, metadata, members_can_post}: an
 * absent field stays, null clears it. Owners and admins of groups and channels only. */
void messaging_conversations_update(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    static const char *const allowed[] = {"title", "description", "image", "metadata",
                                          "members_can_post", "slow_mode_s", NULL};
    cm_jwt_claims c;
    messaging_tx tx;
    messaging_rule_input in;
    const char *title, *description, *image;
    char detail[256], text[300], *metadata = NULL;
    int has_title, has_description, has_image, has_meta, mcp = -1;
    long slow = -1;
    cJSON *body, *changed = cJSON_CreateArray(), *data;
    cm_err rc;

    memset(&tx, 0, sizeof(tx));
    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (cm_http_json_body(req, &body) != CM_OK)
        goto out;
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        nullable_string(body, "title", MSG_TITLE_MAX, &has_title, &title, detail, sizeof(detail)) ||
        nullable_string(body, "description", MSG_DESCRIPTION_MAX, &has_description, &description,
                        detail, sizeof(detail)) ||
        nullable_string(body, "image", 36, &has_image, &image, detail, sizeof(detail)) ||
        cm_json_bool(body, "members_can_post", 0, &mcp, detail, sizeof(detail)) ||
        cm_json_long(body, "slow_mode_s", 0, 0, 21600, &slow, detail, sizeof(detail)) ||
        messaging_metadata_read(body, ctx->limits.metadata_max, &metadata, &has_meta, detail,
                                sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    if (image && !cm_uuid_valid(image)) {
        cm_http_reply_error(req, CM_EINVAL, "field 'image' must be a media id (a UUID)");
        goto out;
    }
    rc = messaging_tx_open(ctx, req, &c, cm_http_param(req, "id"), &tx);
    if (rc != CM_OK) {
        messaging_reply_open_error(req, rc);
        goto out;
    }
    messaging_rule_input_of(&tx, &c, &in);
    if (messaging_refuse_if_deleted(req, &tx) || messaging_refuse_unless(req, MSG_ACT_UPDATE, &in))
        goto out;
    if (mcp != -1 && strcmp(in.type, "channel") != 0) {
        cm_http_reply_error(req, CM_EINVAL, "field 'members_can_post' is for channels");
        goto out;
    }
    if (has_title)
        queue_change(&tx, "title", title, changed);
    if (has_description)
        queue_change(&tx, "description", description, changed);
    if (has_image)
        queue_change(&tx, "image", image, changed);
    if (has_meta)
        queue_change(&tx, "metadata", metadata, changed);
    if (mcp != -1 && mcp != cm_bson_bool(&tx.conv, "members_can_post", 0)) {
        BSON_APPEND_BOOL(messaging_tx_conv_set(&tx), "members_can_post", mcp);
        cJSON_AddItemToArray(changed, cJSON_CreateString("members_can_post"));
    }
    if (slow != -1 && slow != cm_bson_int(&tx.conv, "slow_mode_s", 0)) {
        BSON_APPEND_INT64(messaging_tx_conv_set(&tx), "slow_mode_s", slow);
        cJSON_AddItemToArray(changed, cJSON_CreateString("slow_mode_s"));
    }
    if (cJSON_GetArraySize(changed) > 0) {
        BSON_APPEND_DATE_TIME(messaging_tx_conv_set(&tx), "updated_at", tx.now);
        if (has_title && bson_has_field(&tx.set, "title")) {
            if (title)
                snprintf(text, sizeof(text), "%s renamed the conversation to \"%s\"", c.sub, title);
            else
                snprintf(text, sizeof(text), "%s removed the conversation's title", c.sub);
            if ((rc = messaging_system_message(&tx, text)) != CM_OK) {
                cm_http_reply_error(req, rc, "the change could not be stored");
                goto out;
            }
        }
        data = messaging_conversation_event(&tx, changed);
        changed = NULL;
        if ((rc = messaging_tx_append(&tx, "conversation.updated", NULL, NULL, data, NULL)) != CM_OK ||
            (rc = messaging_tx_commit(&tx)) != CM_OK) {
            cm_http_reply_error(req, rc, "the change could not be stored");
            goto out;
        }
    }
    messaging_reply_conversation(req, &tx);
out:
    cJSON_Delete(changed);
    free(metadata);
    messaging_tx_close(&tx);
}

/* DELETE /v1/conversations/{id} : the owner archives the conversation for everyone. History is
 * kept (readable, read-only); deleting again answers the same. */
void messaging_conversations_delete(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    cm_jwt_claims c;
    messaging_tx tx;
    messaging_rule_input in;
    cJSON *data;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        return;
    rc = messaging_tx_open(ctx, req, &c, cm_http_param(req, "id"), &tx);
    if (rc != CM_OK) {
        messaging_reply_open_error(req, rc);
        return;
    }
    messaging_rule_input_of(&tx, &c, &in);
    if (messaging_refuse_unless(req, MSG_ACT_DELETE, &in))
        goto out;
    if (!cm_bson_bool(&tx.conv, "deleted", 0)) {
        BSON_APPEND_BOOL(messaging_tx_conv_set(&tx), "deleted", true);
        BSON_APPEND_DATE_TIME(messaging_tx_conv_set(&tx), "deleted_at", tx.now);
        BSON_APPEND_UTF8(messaging_tx_conv_set(&tx), "deleted_by", c.sub);
        data = messaging_conversation_event(&tx, NULL);
        if ((rc = messaging_tx_append(&tx, "conversation.deleted", NULL, NULL, data, NULL)) != CM_OK ||
            (rc = messaging_tx_commit(&tx)) != CM_OK) {
            cm_http_reply_error(req, rc, "the change could not be stored");
            goto out;
        }
    }
    messaging_reply_conversation(req, &tx);
out:
    messaging_tx_close(&tx);
}

/* PATCH /v1/conversations/{id}/me {archived, muted_until}: the caller's own settings, seen by
 * nobody else (the event's audience is the caller, for their other devices). */
void messaging_conversations_me(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    static const char *const allowed[] = {"archived", "muted_until", NULL};
    cm_jwt_claims c;
    messaging_tx tx;
    char detail[256], ts[CM_RFC3339_LEN];
    int archived = -1;
    int64_t muted = -1;
    const cJSON *mu;
    cJSON *body, *data;
    bson_t set = BSON_INITIALIZER;
    cm_err rc;

    memset(&tx, 0, sizeof(tx));
    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (cm_http_json_body(req, &body) != CM_OK)
        goto out;
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_bool(body, "archived", 0, &archived, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    mu = cJSON_GetObjectItemCaseSensitive(body, "muted_until");
    if (mu && cJSON_IsNull(mu))
        muted = 0;
    else if (mu && (!cJSON_IsString(mu) || !messaging_time_parse(mu->valuestring, &muted))) {
        cm_http_reply_error(req, CM_EINVAL, "field 'muted_until' must be an RFC 3339 UTC time (or null to unmute)");
        goto out;
    }
    rc = messaging_tx_open(ctx, req, &c, cm_http_param(req, "id"), &tx);
    if (rc != CM_OK) {
        messaging_reply_open_error(req, rc);
        goto out;
    }
    if (muted > 0 && muted <= tx.now)
        muted = 0; /* a time already past unmutes */
    if (archived == cm_bson_bool(&tx.me, "archived", 0))
        archived = -1;
    if (muted == cm_bson_int(&tx.me, "muted_until", 0))
        muted = -1;
    if (archived != -1 || muted != -1) {
        archived = archived != -1 ? archived : cm_bson_bool(&tx.me, "archived", 0);
        muted = muted != -1 ? muted : cm_bson_int(&tx.me, "muted_until", 0);
        BSON_APPEND_BOOL(&set, "archived", archived);
        BSON_APPEND_INT64(&set, "muted_until", muted);
        data = cJSON_CreateObject();
        cJSON_AddStringToObject(data, "conversation_id", tx.cid);
        cJSON_AddStringToObject(data, "user_id", c.sub);
        cJSON_AddBoolToObject(data, "archived", archived);
        if (muted > tx.now) {
            cm_clock_rfc3339(muted, ts);
            cJSON_AddStringToObject(data, "muted_until", ts);
        } else {
            cJSON_AddNullToObject(data, "muted_until");
        }
        rc = messaging_tx_set_me(&tx, &set, "member.updated", c.sub, data);
        if (rc != CM_OK) {
            cm_http_reply_error(req, rc, "the change could not be stored");
            goto out;
        }
    }
    messaging_reply_conversation(req, &tx);
out:
    bson_destroy(&set);
    messaging_tx_close(&tx);
}

/* POST /v1/conversations/{id}/leave (also DELETE .../members/{self}). */
void messaging_conversations_leave(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    cm_jwt_claims c;
    messaging_tx tx;
    messaging_rule_input in;
    char text[160];
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        return;
    rc = messaging_tx_open(ctx, req, &c, cm_http_param(req, "id"), &tx);
    if (rc != CM_OK) {
        messaging_reply_open_error(req, rc);
        return;
    }
    messaging_rule_input_of(&tx, &c, &in);
    if (tx.role == MSG_ROLE_OWNER && (rc = messaging_owner_count(ctx, tx.cid, &in.owners)) != CM_OK) {
        cm_http_reply_error(req, rc, NULL);
        goto out;
    }
    if (messaging_refuse_unless(req, MSG_ACT_LEAVE, &in))
        goto out;
    snprintf(text, sizeof(text), "%s left", c.sub);
    if ((!cm_bson_bool(&tx.conv, "deleted", 0) && (rc = messaging_system_message(&tx, text)) != CM_OK) ||
        (rc = messaging_member_remove(&tx, c.sub, &tx.me, "left")) != CM_OK ||
        (rc = messaging_tx_commit(&tx)) != CM_OK) {
        cm_http_reply_error(req, rc, "the change could not be stored");
        goto out;
    }
    cm_http_reply_json(req, 204, NULL);
out:
    messaging_tx_close(&tx);
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
        {MSG_COLL_CONVERSATIONS, "activity", {"tenant", "last_activity_at", "_id"}, {1, -1, -1}, 0},
        {MSG_COLL_MEMBERS, "by_user", {"tenant", "user_id", "state"}, {1, 1, 1}, 0},
        {MSG_COLL_MEMBERS, "by_conversation_state", {"conversation_id", "state", "user_id"}, {1, 1, 1}, 0},
        {MSG_COLL_MESSAGES, "conversation_seq", {"conversation_id", "seq"}, {1, 1}, 1},
        {MSG_COLL_MESSAGES, "idempotency", {"conversation_id", "sender_id", "client_msg_id"}, {1, 1, 1}, 1},
        {MSG_COLL_MESSAGES, "thread", {"thread_root", "seq"}, {1, 1}, 0},
        /* multikey: the media service asks who may read an attachment */
        {MSG_COLL_MESSAGES, "by_attachment", {"attachments", "tenant"}, {1, 1}, 0},
        {MSG_COLL_EVENTS, "conversation_eseq", {"conversation_id", "eseq"}, {1, 1}, 1},
        {MSG_COLL_EVENTS, "outbox", {"published", "created_at"}, {1, 1}, 0},
        {MSG_COLL_VERSIONS, "by_message", {"message_id", "version"}, {1, 1}, 1},
        {MSG_COLL_REACTIONS, "by_message", {"message_id", "user_id"}, {1, 1}, 0},
        {"flags", "one_per_reporter", {"key"}, {1}, 1},
        {"flags", "by_status", {"tenant", "status", "created_at"}, {1, 1, 1}, 0},
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
