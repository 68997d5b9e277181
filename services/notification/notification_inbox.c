/* notification_inbox.c - the in-app inbox: storing a notification once and publishing it as
 * notification.created, and the HTTP endpoints a user reads it through (list with cursor,
 * unread count, mark one or all read). Every read and write is scoped by the token's tenant
 * and user: another user's notification is a 404. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/event.h"
#include "common/json.h"
#include "common/log.h"
#include "common/uuid.h"
#include "notification.h"

cm_err nf_ensure_indexes(nf_ctx *ctx)
{
    struct {
        const char *coll, *name, *f1, *f2, *f3;
        int unique;
    } ix[] = {
        {NF_COLL_NOTIFICATIONS, "dedupe", "k", NULL, NULL, 1},
        {NF_COLL_NOTIFICATIONS, "inbox", "tenant", "user_id", "_id", 0},
        {NF_COLL_NOTIFICATIONS, "unread", "tenant", "user_id", "read", 0},
        {NF_COLL_MEMBERS, "conversation", "tenant", "conversation_id", "active", 0},
        {NF_COLL_DEVICES, "token", "k", NULL, NULL, 1},
        {NF_COLL_DEVICES, "user", "tenant", "user_id", NULL, 0},
        {NF_COLL_DELIVERIES, "dedupe", "k", NULL, NULL, 1},
        {NF_COLL_DELIVERIES, "due", "state", "next_at", NULL, 0},
        {NF_COLL_DELIVERIES, "notification", "tenant", "notification_id", NULL, 0},
        {NF_COLL_DELIVERIES, "provider", "provider_id", NULL, NULL, 0}, /* callbacks */
        {NF_COLL_NOTIFICATIONS, "conversation", "tenant", "user_id", "conversation_id", 0},
        {"digests", "due", "due_at", NULL, NULL, 0},
        {"escalations", "due", "due_at", NULL, NULL, 0},
        {NF_COLL_DECISIONS, "dedupe", "k", NULL, NULL, 1},
        {NF_COLL_DECISIONS, "message", "tenant", "user_id", "message_id", 0},
        {NF_COLL_WEBHOOKS, "tenant", "tenant", NULL, NULL, 0},
        {NF_COLL_WEBHOOK_DELIVERIES, "dedupe", "k", NULL, NULL, 1},
        {NF_COLL_WEBHOOK_DELIVERIES, "due", "state", "next_at", NULL, 0},
    };
    int ferret = 0, skipped = 0;
    cm_err rc;

    /* The unique indexes are the guarantees (idempotency, one device per token): always.
     * The others only speed up queries, which FerretDB 1.x never plans with an index other
     * than `_id` (a filter on an indexed field reads the whole collection all the same), while
     * each costs every insert its JSON expression: on FerretDB they are not created, and
     * dropped where an earlier version created them (bench/README.md, "Push fan-out": they
     * were about half of the notifications' and deliveries' insert cost). */
    if ((rc = cm_mongo_is_ferretdb(ctx->db, &ferret)) != CM_OK)
        return rc;
    for (size_t i = 0; i < sizeof(ix) / sizeof(ix[0]); i++) {
        cm_mongo *db = strcmp(ix[i].coll, NF_COLL_DELIVERIES) == 0 ? ctx->ddb : ctx->db;
        bson_t keys = BSON_INITIALIZER;
        if (ferret && !ix[i].unique) {
            if ((rc = cm_mongo_drop_index(db, ix[i].coll, ix[i].name)) != CM_OK)
                return rc;
            skipped++;
            continue;
        }
        BSON_APPEND_INT32(&keys, ix[i].f1, 1);
        if (ix[i].f2)
            BSON_APPEND_INT32(&keys, ix[i].f2, 1);
        if (ix[i].f3)
            BSON_APPEND_INT32(&keys, ix[i].f3, 1);
        rc = cm_mongo_create_index(db, ix[i].coll, &keys, ix[i].name, ix[i].unique);
        bson_destroy(&keys);
        if (rc != CM_OK)
            return rc;
    }
    if (skipped)
        cm_info("FerretDB: %d query-only indexes not kept (it plans no query with them)", skipped);
    return CM_OK;
}

cJSON *nf_notification_json(const bson_t *doc)
{
    cJSON *o = cJSON_CreateObject();
    char ts[CM_RFC3339_LEN];
    bson_iter_t it;
    static const char *const strs[] = {"type", "channel", "conversation_id", "message_id",
                                       "actor_id", "title", "text", NULL};

    if (o == NULL)
        return NULL;
    cJSON_AddStringToObject(o, "id", cm_bson_str(doc, "_id", ""));
    for (int i = 0; strs[i]; i++) {
        const char *v = cm_bson_str(doc, strs[i], NULL);
        if (v)
            cJSON_AddStringToObject(o, strs[i], v);
    }
    if (bson_iter_init_find(&it, doc, "data") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        bson_iter_t kv;
        cJSON *data = cJSON_AddObjectToObject(o, "data");
        if (bson_iter_recurse(&it, &kv))
            while (bson_iter_next(&kv))
                if (BSON_ITER_HOLDS_UTF8(&kv))
                    cJSON_AddStringToObject(data, bson_iter_key(&kv), bson_iter_utf8(&kv, NULL));
    }
    cJSON_AddBoolToObject(o, "read", cm_bson_bool(doc, "read", 0));
    if (cm_bson_bool(doc, "hidden", 0))
        cJSON_AddBoolToObject(o, "hidden", 1);
    if (bson_iter_init_find(&it, doc, "created_at") && BSON_ITER_HOLDS_DATE_TIME(&it)) {
        cm_clock_rfc3339(bson_iter_date_time(&it), ts);
        cJSON_AddStringToObject(o, "created_at", ts);
    }
    if (bson_iter_init_find(&it, doc, "read_at") && BSON_ITER_HOLDS_DATE_TIME(&it)) {
        cm_clock_rfc3339(bson_iter_date_time(&it), ts);
        cJSON_AddStringToObject(o, "read_at", ts);
    }
    return o;
}

/* Publishes notification.created for stored document `doc` through the outbox (event id = the
 * notification id, so a second publication is the same event). */
cm_err nf_created_event(const bson_t *doc, char **out)
{
    const char *id = cm_bson_str(doc, "_id", ""), *user = cm_bson_str(doc, "user_id", ""),
               *tenant = cm_bson_str(doc, "tenant", "");
    cJSON *data = nf_notification_json(doc);

    if (data == NULL)
        return CM_ENOMEM;
    cJSON_AddStringToObject(data, "user_id", user);
    return cm_event_build(id, "notification.created", "/notification", user, tenant,
                          cm_clock_now_ms(), data, out);
}

static cm_err publish_created(nf_ctx *ctx, const bson_t *doc)
{
    const char *id = cm_bson_str(doc, "_id", ""), *user = cm_bson_str(doc, "user_id", "");
    char *ev = NULL;
    cm_kafka_header h[] = {{"x-request-id", cm_log_request_id()}};
    cm_err rc;

    if ((rc = nf_created_event(doc, &ev)) != CM_OK)
        return rc;
    rc = cm_outbox_publish(ctx->outbox, NF_TOPIC, user, id, ev, h, 1);
    free(ev);
    if (rc == CM_ECONFLICT)
        rc = CM_OK; /* already in the outbox: produced (again) from there */
    if (rc == CM_OK)
        atomic_fetch_add(&ctx->published, 1);
    return rc;
}

cm_err nf_notify(nf_ctx *ctx, const bson_t *doc, char id[37])
{
    bson_t f = BSON_INITIALIZER, old;
    cm_err rc = cm_mongo_insert(ctx->db, NF_COLL_NOTIFICATIONS, doc);

    if (rc == CM_OK) {
        atomic_fetch_add(&ctx->created, 1);
        snprintf(id, CM_UUID_STRLEN, "%s", cm_bson_str(doc, "_id", ""));
        /* Turned off in-app by the user's preferences: kept for push and diagnostics only. */
        return cm_bson_bool(doc, "hidden", 0) ? CM_OK : publish_created(ctx, doc);
    }
    if (rc != CM_ECONFLICT)
        return rc;
    /* Stored before (a replay after a crash): publish the stored one again, in case the crash
     * came between the insert and the outbox. */
    atomic_fetch_add(&ctx->duplicates, 1);
    BSON_APPEND_UTF8(&f, "k", cm_bson_str(doc, "k", ""));
    rc = cm_mongo_find_one(ctx->db, NF_COLL_NOTIFICATIONS, &f, NULL, &old);
    if (rc != CM_OK) {
        bson_destroy(&f);
        return rc == CM_ENOTFOUND ? CM_EAGAIN : rc;
    }
    snprintf(id, CM_UUID_STRLEN, "%s", cm_bson_str(&old, "_id", ""));
    if (cm_bson_bool(&old, "hidden", 0)) {
        bson_destroy(&f);
        bson_destroy(&old);
        return CM_OK;
    }
    /* The outbox holds it while unpublished and for a day after: then it is on its way. */
    bson_reinit(&f);
    BSON_APPEND_UTF8(&f, "_id", cm_bson_str(&old, "_id", ""));
    {
        bson_t ob;
        rc = cm_mongo_find_one(ctx->db, NF_COLL_OUTBOX, &f, NULL, &ob);
        if (rc == CM_OK)
            bson_destroy(&ob);
        else if (rc == CM_ENOTFOUND)
            rc = publish_created(ctx, &old);
    }
    bson_destroy(&f);
    bson_destroy(&old);
    return rc;
}

/* --- HTTP --------------------------------------------------------------------------------- */

static void scope(bson_t *f, const cm_jwt_claims *c)
{
    bson_t ne;
    BSON_APPEND_UTF8(f, "tenant", c->tid);
    BSON_APPEND_UTF8(f, "user_id", c->sub);
    BSON_APPEND_UTF8(f, "channel", "in_app");
    /* Hidden by the user's preferences: not in the inbox. */
    BSON_APPEND_DOCUMENT_BEGIN(f, "hidden", &ne);
    BSON_APPEND_BOOL(&ne, "$ne", true);
    bson_append_document_end(f, &ne);
}

static cJSON *render(const bson_t *doc, void *ud)
{
    (void)ud;
    return nf_notification_json(doc);
}

/* GET /v1/notifications?cursor=&limit=&unread_only= : newest first. The cursor is the id of
 * the last notification of the previous page (ids are UUIDv7, so they sort by creation). */
void nf_list(cm_http_req *req, void *ud)
{
    nf_ctx *ctx = ud;
    cm_jwt_claims c;
    const char *cursor = cm_http_query(req, "cursor"), *unread = cm_http_query(req, "unread_only");
    bson_t f = BSON_INITIALIZER, sort = BSON_INITIALIZER, lt;
    char next[CM_UUID_STRLEN + 1] = "";
    cJSON *items = NULL;
    long limit;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK ||
        cm_http_query_long(req, "limit", 20, 1, NF_LIMIT_MAX, &limit) != CM_OK)
        goto out;
    if (cursor && cursor[0] && !cm_uuid_valid(cursor)) {
        cm_http_problem(req, 400, "validation", "Invalid parameter",
                        "cursor must be the next_cursor of a previous page");
        goto out;
    }
    if (unread && strcmp(unread, "true") != 0 && strcmp(unread, "false") != 0) {
        cm_http_problem(req, 400, "validation", "Invalid parameter",
                        "unread_only must be true or false");
        goto out;
    }
    scope(&f, &c);
    if (unread && strcmp(unread, "true") == 0)
        BSON_APPEND_BOOL(&f, "read", false);
    if (cursor && cursor[0]) {
        BSON_APPEND_DOCUMENT_BEGIN(&f, "_id", &lt);
        BSON_APPEND_UTF8(&lt, "$lt", cursor);
        bson_append_document_end(&f, &lt);
    }
    BSON_APPEND_INT32(&sort, "_id", -1);
    rc = cm_mongo_find_page(ctx->db, NF_COLL_NOTIFICATIONS, &f, &sort, limit, "_id", render,
                            NULL, &items, next, sizeof(next));
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the notifications could not be read");
        goto out;
    }
    cm_http_reply_page(req, items, next[0] ? next : NULL);
out:
    bson_destroy(&f);
    bson_destroy(&sort);
}

/* GET /v1/notifications/unread_count */
void nf_unread_count(cm_http_req *req, void *ud)
{
    nf_ctx *ctx = ud;
    cm_jwt_claims c;
    bson_t f = BSON_INITIALIZER;
    int64_t n = 0;
    cm_err rc;
    cJSON *o;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    scope(&f, &c);
    BSON_APPEND_BOOL(&f, "read", false);
    if ((rc = cm_mongo_count(ctx->db, NF_COLL_NOTIFICATIONS, &f, &n)) != CM_OK) {
        cm_http_reply_error(req, rc, "the unread notifications could not be counted");
        goto out;
    }
    o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "unread", (double)n);
    cm_http_reply_json(req, 200, o);
out:
    bson_destroy(&f);
}

/* POST /v1/notifications/{id}/read: idempotent (a second call keeps the first read_at). */
void nf_read_one(cm_http_req *req, void *ud)
{
    nf_ctx *ctx = ud;
    cm_jwt_claims c;
    const char *id = cm_http_param(req, "id");
    bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, set, doc;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (!cm_uuid_valid(id)) {
        cm_http_problem(req, 404, "not-found", "Not Found", "no notification %s", id);
        goto out;
    }
    BSON_APPEND_UTF8(&f, "_id", id);
    scope(&f, &c);
    BSON_APPEND_BOOL(&f, "read", false);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_BOOL(&set, "read", true);
    BSON_APPEND_DATE_TIME(&set, "read_at", cm_clock_now_ms());
    bson_append_document_end(&u, &set);
    /* Setting the same two fields is safe even though FerretDB updates are not atomic: two
     * racing calls both write "read", and either read_at is a true one. */
    if ((rc = cm_mongo_update(ctx->db, NF_COLL_NOTIFICATIONS, &f, &u, 0, 0, NULL)) != CM_OK) {
        cm_http_reply_error(req, rc, "the notification could not be marked read");
        goto out;
    }
    bson_reinit(&f);
    BSON_APPEND_UTF8(&f, "_id", id);
    scope(&f, &c);
    rc = cm_mongo_find_one(ctx->db, NF_COLL_NOTIFICATIONS, &f, NULL, &doc);
    if (rc == CM_ENOTFOUND) {
        cm_http_problem(req, 404, "not-found", "Not Found", "no notification %s", id);
        goto out;
    }
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the notification could not be read");
        goto out;
    }
    cm_http_reply_json(req, 200, nf_notification_json(&doc));
    bson_destroy(&doc);
out:
    bson_destroy(&f);
    bson_destroy(&u);
}

/* POST /v1/notifications/read_all: marks every unread one read; answers how many. */
void nf_read_all(cm_http_req *req, void *ud)
{
    nf_ctx *ctx = ud;
    cm_jwt_claims c;
    bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, set;
    int64_t matched = 0;
    cm_err rc;
    cJSON *o;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    scope(&f, &c);
    BSON_APPEND_BOOL(&f, "read", false);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_BOOL(&set, "read", true);
    BSON_APPEND_DATE_TIME(&set, "read_at", cm_clock_now_ms());
    bson_append_document_end(&u, &set);
    if ((rc = cm_mongo_update(ctx->db, NF_COLL_NOTIFICATIONS, &f, &u, 0, 1, &matched)) !=
        CM_OK) {
        cm_http_reply_error(req, rc, "the notifications could not be marked read");
        goto out;
    }
    o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "marked", (double)matched);
    cm_http_reply_json(req, 200, o);
out:
    bson_destroy(&f);
    bson_destroy(&u);
}

/* POST /v1/notifications (tenant_admin: the tenant's backend) {"user_ids": [...], "title",
 * "body", "data"}: a custom notification to 1..NF_REQUEST_USERS_MAX users of the caller's
 * tenant, accepted at once (202) and processed in batches of NF_REQUEST_BATCH: one
 * notification.requested event per batch through the outbox, so nothing accepted is lost and
 * a restart in the middle of a batch notifies nobody twice. */
void nf_request(cm_http_req *req, void *ud)
{
    static const char *const allowed[] = {"user_ids", "title", "body", "data", "priority", NULL};
    nf_ctx *ctx = ud;
    cm_jwt_claims c;
    cJSON *body, *o;
    const cJSON *users, *data, *u;
    const char *title = NULL, *text = NULL;
    char detail[200], rid[CM_UUID_STRLEN];
    size_t n = 0, batches = 0;
    int priority = 0; /* escalated push -> e-mail -> SMS while unread (notification_escalation.c) */
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        return;
    if (!cm_auth_can(&c, "tenant.manage")) {
        cm_http_problem(req, 403, "forbidden", "Forbidden",
                        "sending notifications needs the permission tenant.manage (the tenant's backend)");
        return;
    }
    if (cm_http_json_body(req, &body) != CM_OK)
        return;
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_string(body, "title", 1, 1, 200, &title, detail, sizeof(detail)) ||
        cm_json_string(body, "body", 1, 0, 2000, &text, detail, sizeof(detail)) ||
        cm_json_bool(body, "priority", 0, &priority, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        return;
    }
    users = cJSON_GetObjectItemCaseSensitive(body, "user_ids");
    if (!cJSON_IsArray(users) || cJSON_GetArraySize(users) < 1 ||
        cJSON_GetArraySize(users) > NF_REQUEST_USERS_MAX) {
        cm_http_reply_error(req, CM_EINVAL, "field 'user_ids' must be an array of 1..10000 user ids");
        return;
    }
    cJSON_ArrayForEach(u, users)
    {
        if (!cJSON_IsString(u) || !cm_user_id_valid(u->valuestring)) {
            cm_http_problem(req, 400, "validation", "Invalid request",
                            "user_ids[%zu] is not a user id (1..64 of A-Z a-z 0-9 _ . @ -)", n);
            return;
        }
        n++;
    }
    data = cJSON_GetObjectItemCaseSensitive(body, "data");
    if (data != NULL) {
        const cJSON *kv;
        int keys = 0;
        char *printed = cJSON_IsObject(data) ? cm_json_print(data) : NULL;
        size_t len = printed ? strlen(printed) : 0;
        free(printed);
        if (!cJSON_IsObject(data) || len > 4096) {
            cm_http_reply_error(req, CM_EINVAL, "field 'data' must be an object of at most 4096 bytes");
            return;
        }
        cJSON_ArrayForEach(kv, data)
        {
            if (!cJSON_IsString(kv) || ++keys > 20 || strlen(kv->string) == 0 ||
                strlen(kv->string) > 64 || kv->string[0] == '$' || strchr(kv->string, '.')) {
                cm_http_reply_error(req, CM_EINVAL,
                                    "field 'data' holds at most 20 string values under keys of "
                                    "1..64 characters without '.' or a leading '$'");
                return;
            }
        }
    }
    if ((rc = cm_uuid_v7(rid)) != CM_OK) {
        cm_http_reply_error(req, rc, "no id");
        return;
    }
    for (size_t start = 0; start < n; start += NF_REQUEST_BATCH, batches++) {
        cJSON *d = cJSON_CreateObject(), *list = cJSON_AddArrayToObject(d, "user_ids");
        char eid[CM_UUID_STRLEN + 16], *ev = NULL;
        size_t i = 0;
        cJSON_AddStringToObject(d, "request_id", rid);
        cJSON_AddNumberToObject(d, "batch", (double)batches);
        cJSON_ArrayForEach(u, users)
        {
            if (i >= start && i < start + NF_REQUEST_BATCH)
                cJSON_AddItemToArray(list, cJSON_CreateString(u->valuestring));
            i++;
        }
        cJSON_AddStringToObject(d, "title", title);
        cJSON_AddStringToObject(d, "body", text);
        if (data)
            cJSON_AddItemToObject(d, "data", cJSON_Duplicate(data, 1));
        cJSON_AddStringToObject(d, "requested_by", c.sub);
        if (priority)
            cJSON_AddBoolToObject(d, "priority", 1);
        snprintf(eid, sizeof(eid), "%s.%zu", rid, batches);
        if ((rc = cm_event_build(eid, "notification.requested", "/notification", rid, c.tid,
                                 cm_clock_now_ms(), d, &ev)) != CM_OK) {
            cm_http_reply_error(req, rc, "the request could not be queued");
            return;
        }
        /* Stored in the outbox before the answer: what is accepted is not lost. A failure
         * after some batches leaves those queued; the caller may retry the whole request
         * (those users would then be notified twice: keep requests small when that matters). */
        rc = cm_outbox_publish(ctx->outbox, NF_TOPIC, rid, eid, ev, NULL, 0);
        free(ev);
        if (rc != CM_OK) {
            cm_http_reply_error(req, rc, "the request could not be queued");
            return;
        }
    }
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", rid);
    cJSON_AddNumberToObject(o, "recipients", (double)n);
    cJSON_AddNumberToObject(o, "batches", (double)batches);
    cm_http_reply_json(req, 202, o);
}
