/* user_gdpr.c - the data subject's rights: erasure (GDPR Art. 17) here and, through
 * user.deleted on the users topic, in every service that holds the user's data; and export
 * (Art. 15 and 20): POST /v1/users/me/exports queues a job (user_jobs.c runs it) that gathers
 * everything about the user, the conversations and messages from the messaging service
 * included, into one JSON document; GET .../exports/{id} tells its status, .../download
 * hands it over. */
#include <string.h>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/httpc.h"
#include "common/json.h"
#include "common/log.h"
#include "common/uuid.h"
#include "user.h"

/* Deletes every document of `coll` whose `field` is the user, within the tenant. */
static cm_err delete_of(user_ctx *ctx, const char *coll, const char *field, const char *tenant,
                        const char *id)
{
    bson_t f = BSON_INITIALIZER;
    cm_err rc;

    BSON_APPEND_UTF8(&f, "tenant", tenant);
    BSON_APPEND_UTF8(&f, field, id);
    rc = cm_mongo_delete(ctx->db, coll, &f, 1, NULL);
    bson_destroy(&f);
    return rc;
}

cm_err user_erase(user_ctx *ctx, const char *tenant, const char *id)
{
    static const struct {
        const char *coll, *field;
    } what[] = {
        {USER_COLL_SESSIONS, "user_id"}, {USER_COLL_REFRESH, "user_id"},
        {USER_COLL_CREDENTIALS, "user_id"}, {USER_COLL_ONETIME, "user_id"},
        {USER_COLL_BLOCKS, "blocker"}, {USER_COLL_BLOCKS, "blocked"},
        {USER_COLL_EXPORTS, "user_id"}, {USER_COLL_USERS, "id"},
    };
    char ts[CM_RFC3339_LEN], uid[CM_JWT_ID_MAX + 1];
    user_settings s;
    bson_t user, t, f = BSON_INITIALIZER;
    int have_t = 0;
    cJSON *data;
    cm_err rc;

    rc = user_load(ctx, tenant, id, &user);
    if (rc != CM_OK)
        return rc;
    snprintf(uid, sizeof(uid), "%s", cm_bson_str(&user, "id", ""));
    bson_destroy(&user);
    BSON_APPEND_UTF8(&f, "_id", tenant);
    rc = cm_mongo_find_one(ctx->db, USER_COLL_TENANTS, &f, NULL, &t);
    if (rc != CM_OK)
        goto out;
    have_t = 1;
    user_settings_from_doc(&t, &s);
    /* Sessions end first, so nothing signed for the user works while the rest goes; the user
     * document goes last, so a failed erasure can be found and repeated. */
    rc = user_sessions_revoke_all(ctx, tenant, uid, NULL, "user_deleted", NULL);
    for (size_t i = 0; rc == CM_OK && i < sizeof(what) / sizeof(what[0]); i++)
        rc = delete_of(ctx, what[i].coll, what[i].field, tenant, uid);
    if (rc != CM_OK)
        goto out;
    cm_clock_rfc3339(cm_clock_now_ms(), ts);
    data = cJSON_CreateObject();
    cJSON_AddStringToObject(data, "user_id", uid);
    cJSON_AddStringToObject(data, "tenant_id", tenant);
    cJSON_AddStringToObject(data, "erase_policy", s.erase_delete ? "delete" : "anonymize");
    cJSON_AddStringToObject(data, "deleted_at", ts);
    user_publish(ctx, "user.deleted", tenant, uid, data);
    cm_info("user %s/%s erased (%s)", tenant, uid, s.erase_delete ? "delete" : "anonymize");
out:
    if (have_t)
        bson_destroy(&t);
    bson_destroy(&f);
    return rc;
}

/* DELETE /v1/users/me: the caller erases their own account (user_erase). */
void user_users_delete_me(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    cm_jwt_claims c;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        return;
    rc = user_erase(ctx, c.tid, c.sub);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "the user no longer exists"
                                                        : "the erasure did not complete; retry it");
        return;
    }
    cm_http_reply_json(req, 204, NULL);
}

/* --- export (GDPR Art. 15 and 20) ------------------------------------------------------------ */

#define EXPORT_MAX (8u << 20)     /* bytes of one export document (a MongoDB document holds 16) */
#define EXPORT_MESSAGES_MAX 20000 /* messages gathered before the export says it is truncated */
#define MESSAGING_PAGE_MAX (4u << 20)

static cJSON *export_status_json(const bson_t *doc, void *ud)
{
    char ts[CM_RFC3339_LEN], loc[128];
    cJSON *e = cJSON_CreateObject();
    const char *status = cm_bson_str(doc, "status", "");
    int64_t fin = cm_bson_int(doc, "finished_at", 0);

    (void)ud;
    cJSON_AddStringToObject(e, "id", cm_bson_str(doc, "_id", ""));
    cJSON_AddStringToObject(e, "status", status);
    cm_clock_rfc3339(cm_bson_int(doc, "created_at", 0), ts);
    cJSON_AddStringToObject(e, "created_at", ts);
    if (fin) {
        cm_clock_rfc3339(fin, ts);
        cJSON_AddStringToObject(e, "finished_at", ts);
    } else {
        cJSON_AddNullToObject(e, "finished_at");
    }
    if (strcmp(status, "done") == 0) {
        snprintf(loc, sizeof(loc), "/v1/users/me/exports/%s/download", cm_bson_str(doc, "_id", ""));
        cJSON_AddStringToObject(e, "download_url", loc);
        cJSON_AddNumberToObject(e, "size", (double)cm_bson_int(doc, "size", 0));
    }
    if (strcmp(status, "failed") == 0)
        cJSON_AddStringToObject(e, "error", cm_bson_str(doc, "error", ""));
    return e;
}

/* POST /v1/users/me/exports: queues an export of everything about the caller. */
void user_exports_create(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    char id[CM_UUID_STRLEN], loc[128];
    cm_jwt_claims c;
    bson_t d = BSON_INITIALIZER, f = BSON_INITIALIZER, in, arr;
    int64_t n = 0;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    BSON_APPEND_UTF8(&f, "tenant", c.tid);
    BSON_APPEND_UTF8(&f, "user_id", c.sub);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "status", &in);
    BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
    BSON_APPEND_UTF8(&arr, "0", "pending");
    BSON_APPEND_UTF8(&arr, "1", "running");
    bson_append_array_end(&in, &arr);
    bson_append_document_end(&f, &in);
    rc = cm_mongo_count(ctx->db, USER_COLL_EXPORTS, &f, &n);
    if (rc == CM_OK && n > 0) {
        cm_http_reply_error(req, CM_ECONFLICT, "an export of yours is already under way");
        goto out;
    }
    if (rc == CM_OK && cm_uuid_v7(id) != CM_OK)
        rc = CM_EINTERNAL;
    BSON_APPEND_UTF8(&d, "_id", id);
    BSON_APPEND_UTF8(&d, "tenant", c.tid);
    BSON_APPEND_UTF8(&d, "user_id", c.sub);
    BSON_APPEND_UTF8(&d, "status", "pending");
    BSON_APPEND_DATE_TIME(&d, "created_at", cm_clock_now_ms());
    if (rc == CM_OK)
        rc = cm_mongo_insert(ctx->db, USER_COLL_EXPORTS, &d);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the export could not be queued");
        goto out;
    }
    user_jobs_wake(ctx->jobs);
    snprintf(loc, sizeof(loc), "/v1/users/me/exports/%s", id);
    cm_http_add_header(req, "Location", loc);
    cm_http_reply_json(req, 202, export_status_json(&d, NULL));
out:
    bson_destroy(&d);
    bson_destroy(&f);
}

/* Loads export {id} of the caller; answers 404 itself. */
static cm_err load_export(cm_http_req *req, user_ctx *ctx, const cm_jwt_claims *c, bson_t *out)
{
    const char *id = cm_http_param(req, "id");
    bson_t f = BSON_INITIALIZER;
    cm_err rc = CM_ENOTFOUND;

    if (cm_uuid_valid(id)) {
        BSON_APPEND_UTF8(&f, "_id", id);
        BSON_APPEND_UTF8(&f, "tenant", c->tid);
        BSON_APPEND_UTF8(&f, "user_id", c->sub);
        rc = cm_mongo_find_one(ctx->db, USER_COLL_EXPORTS, &f, NULL, out);
    }
    bson_destroy(&f);
    if (rc != CM_OK)
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "no such export" : NULL);
    return rc;
}

/* GET /v1/users/me/exports/{id}: the job's status. */
void user_exports_get(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    cm_jwt_claims c;
    bson_t doc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK || load_export(req, ctx, &c, &doc) != CM_OK)
        return;
    cm_http_reply_json(req, 200, export_status_json(&doc, NULL));
    bson_destroy(&doc);
}

/* GET /v1/users/me/exports/{id}/download: the JSON document once the job is done. */
void user_exports_download(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    char disp[96];
    cm_jwt_claims c;
    bson_t doc;
    const char *body;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK || load_export(req, ctx, &c, &doc) != CM_OK)
        return;
    body = cm_bson_str(&doc, "document", NULL);
    if (strcmp(cm_bson_str(&doc, "status", ""), "done") != 0 || body == NULL) {
        cm_http_reply_error(req, CM_ECONFLICT, "the export is not ready; see its status");
    } else {
        snprintf(disp, sizeof(disp), "attachment; filename=\"export-%s.json\"",
                 cm_bson_str(&doc, "_id", ""));
        cm_http_add_header(req, "Content-Disposition", disp);
        cm_http_add_header(req, "Cache-Control", "no-store");
        cm_http_reply_raw(req, 200, "application/json", body, strlen(body));
    }
    bson_destroy(&doc);
}

/* --- the job --------------------------------------------------------------------------------- */

struct collect {
    cJSON *items;
    cJSON *(*render)(const bson_t *doc);
};

static int collect_doc(const bson_t *doc, void *ud)
{
    struct collect *c = ud;
    cJSON_AddItemToArray(c->items, c->render(doc));
    return 0;
}

static cJSON *session_export(const bson_t *doc)
{
    char ts[CM_RFC3339_LEN];
    cJSON *s = cJSON_CreateObject();
    static const char *const text[] = {"kind", "device_name", "user_agent", "ip", "status",
                                       "revoke_reason", NULL};
    static const char *const times[] = {"created_at", "last_active_at", "revoked_at", NULL};

    cJSON_AddStringToObject(s, "id", cm_bson_str(doc, "_id", ""));
    for (const char *const *t = text; *t; t++)
        if (cm_bson_str(doc, *t, NULL))
            cJSON_AddStringToObject(s, *t, cm_bson_str(doc, *t, ""));
    for (const char *const *t = times; *t; t++)
        if (cm_bson_int(doc, *t, 0)) {
            cm_clock_rfc3339(cm_bson_int(doc, *t, 0), ts);
            cJSON_AddStringToObject(s, *t, ts);
        }
    return s;
}

static cJSON *block_export(const bson_t *doc)
{
    return cJSON_CreateString(cm_bson_str(doc, "blocked", ""));
}

/* Adds the documents of `coll` about the user, rendered, as `name`. */
static cm_err add_local(user_ctx *ctx, cJSON *out, const char *name, const char *coll,
                        const char *field, const char *tenant, const char *uid,
                        cJSON *(*render)(const bson_t *doc))
{
    struct collect c = {.items = cJSON_AddArrayToObject(out, name), .render = render};
    bson_t f = BSON_INITIALIZER;
    cm_err rc;

    BSON_APPEND_UTF8(&f, "tenant", tenant);
    BSON_APPEND_UTF8(&f, field, uid);
    rc = cm_mongo_find(ctx->db, coll, &f, NULL, collect_doc, &c);
    bson_destroy(&f);
    return rc;
}

/* GETs one page of the messaging service's API as the user and parses it. */
static cm_err messaging_page(user_ctx *ctx, const char *path, const char *token, cJSON **page)
{
    char url[1024], *body = NULL, why[128];
    size_t len = 0;
    long status = 0;
    cm_err rc;

    if (snprintf(url, sizeof(url), "%s%s", ctx->messaging_url, path) >= (int)sizeof(url))
        return CM_EINVAL;
    rc = cm_httpc_get(url, token, 10000, MESSAGING_PAGE_MAX, &body, &len, &status);
    if (rc == CM_OK && status != 200) {
        cm_warn("export: GET %s answered %ld", path, status);
        rc = CM_EIO;
    }
    if (rc == CM_OK && cm_json_parse(body, len, 32, page, why, sizeof(why)) != CM_OK)
        rc = CM_EIO;
    free(body);
    return rc;
}

/* Walks every page of `path` ("...?limit=200"), calling `each` on each item. */
static cm_err messaging_walk(user_ctx *ctx, const char *path, const char *token,
                             int (*each)(cJSON *item, void *ud), void *ud)
{
    char p[1024], cursor[256] = "";
    cm_err rc;

    for (;;) {
        cJSON *page = NULL, *items, *it, *next;
        int stop = 0;
        if (snprintf(p, sizeof(p), "%s%s%s", path, cursor[0] ? "&cursor=" : "", cursor) >=
            (int)sizeof(p))
            return CM_EINVAL;
        rc = messaging_page(ctx, p, token, &page);
        if (rc != CM_OK)
            return rc;
        items = cJSON_GetObjectItemCaseSensitive(page, "items");
        cJSON_ArrayForEach(it, items) if (!stop) stop = each(it, ud);
        next = cJSON_GetObjectItemCaseSensitive(page, "next_cursor");
        if (stop || !cJSON_IsString(next) || strlen(next->valuestring) >= sizeof(cursor) ||
            strspn(next->valuestring, "0123456789abcdef-_") != strlen(next->valuestring)) {
            cJSON_Delete(page);
            return CM_OK;
        }
        snprintf(cursor, sizeof(cursor), "%s", next->valuestring);
        cJSON_Delete(page);
    }
}

struct gather {
    cJSON *conversations, *messages;
    const char *uid;
    int count, truncated;
};

static int keep_conversation(cJSON *item, void *ud)
{
    struct gather *g = ud;
    cJSON_AddItemToArray(g->conversations, cJSON_Duplicate(item, 1));
    return 0;
}

static int keep_message(cJSON *item, void *ud)
{
    struct gather *g = ud;
    cJSON *sender = cJSON_GetObjectItemCaseSensitive(item, "sender_id");
    if (!cJSON_IsString(sender) || strcmp(sender->valuestring, g->uid) != 0)
        return 0;
    if (g->count == EXPORT_MESSAGES_MAX) {
        g->truncated = 1;
        return 1;
    }
    g->count++;
    cJSON_AddItemToArray(g->messages, cJSON_Duplicate(item, 1));
    return 0;
}

/* The conversations the user is in and the messages they sent, read from the messaging
 * service's own API with a short token minted for the user: its membership and tenant rules
 * decide what the export may hold. */
static cm_err add_messaging(user_ctx *ctx, cJSON *out, const char *tenant, const bson_t *user)
{
    struct gather g = {.conversations = cJSON_AddArrayToObject(out, "conversations"),
                       .messages = cJSON_AddArrayToObject(out, "messages"),
                       .uid = cm_bson_str(user, "id", "")};
    char path[256], *token = NULL;
    cm_jwt_claims c;
    cJSON *conv;
    cm_err rc;

    rc = user_claims_build(ctx, tenant, user, "", &c);
    if (rc == CM_OK)
        rc = cm_jwt_sign(ctx->signer, &c, time(NULL), 300, &token);
    if (rc == CM_OK)
        rc = messaging_walk(ctx, "/v1/conversations?limit=200", token, keep_conversation, &g);
    cJSON_ArrayForEach(conv, g.conversations)
    {
        cJSON *id = cJSON_GetObjectItemCaseSensitive(conv, "id");
        if (rc != CM_OK || g.truncated || !cJSON_IsString(id) || !cm_uuid_valid(id->valuestring))
            continue;
        snprintf(path, sizeof(path), "/v1/conversations/%s/messages?direction=forward&limit=200",
                 id->valuestring);
        rc = messaging_walk(ctx, path, token, keep_message, &g);
    }
    cJSON_AddBoolToObject(out, "truncated", g.truncated);
    free(token);
    return rc;
}

static cm_err finish(user_ctx *ctx, const char *id, const char *status, const char *document,
                     const char *error)
{
    bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, set;
    cm_err rc;

    BSON_APPEND_UTF8(&f, "_id", id);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_UTF8(&set, "status", status);
    if (document) {
        BSON_APPEND_UTF8(&set, "document", document);
        BSON_APPEND_INT64(&set, "size", (int64_t)strlen(document));
    }
    if (error)
        BSON_APPEND_UTF8(&set, "error", error);
    BSON_APPEND_DATE_TIME(&set, strcmp(status, "running") == 0 ? "started_at" : "finished_at",
                          cm_clock_now_ms());
    bson_append_document_end(&u, &set);
    rc = cm_mongo_update(ctx->db, USER_COLL_EXPORTS, &f, &u, 0, 0, NULL);
    bson_destroy(&f);
    bson_destroy(&u);
    return rc;
}

cm_err user_export_run(user_ctx *ctx, const bson_t *job)
{
    const char *id = cm_bson_str(job, "_id", ""), *tenant = cm_bson_str(job, "tenant", "");
    char ts[CM_RFC3339_LEN], *text = NULL;
    cJSON *out = NULL, *cred;
    bson_t user, f = BSON_INITIALIZER, cd;
    int have_user = 0;
    cm_err rc;

    finish(ctx, id, "running", NULL, NULL);
    rc = user_load(ctx, tenant, cm_bson_str(job, "user_id", ""), &user);
    if (rc != CM_OK)
        goto out;
    have_user = 1;
    out = cJSON_CreateObject();
    cm_clock_rfc3339(cm_clock_now_ms(), ts);
    cJSON_AddStringToObject(out, "format", "chat-platform-export/1");
    cJSON_AddStringToObject(out, "generated_at", ts);
    cJSON_AddItemToObject(out, "user", user_to_json(&user));
    /* The credential's facts, never its hash. */
    cred = cJSON_AddObjectToObject(out, "credentials");
    BSON_APPEND_UTF8(&f, "tenant", tenant);
    BSON_APPEND_UTF8(&f, "user_id", cm_bson_str(&user, "id", ""));
    rc = cm_mongo_find_one(ctx->db, USER_COLL_CREDENTIALS, &f, NULL, &cd);
    cJSON_AddBoolToObject(cred, "password", rc == CM_OK);
    if (rc == CM_OK) {
        cm_clock_rfc3339(cm_bson_int(&cd, "changed_at", cm_bson_int(&cd, "created_at", 0)), ts);
        cJSON_AddStringToObject(cred, "password_set_at", ts);
        bson_destroy(&cd);
    }
    rc = add_local(ctx, out, "sessions", USER_COLL_SESSIONS, "user_id", tenant,
                   cm_bson_str(&user, "id", ""), session_export);
    if (rc == CM_OK)
        rc = add_local(ctx, out, "blocks", USER_COLL_BLOCKS, "blocker", tenant,
                       cm_bson_str(&user, "id", ""), block_export);
    if (rc == CM_OK)
        rc = add_messaging(ctx, out, tenant, &user);
    if (rc != CM_OK)
        goto out;
    text = cJSON_PrintUnformatted(out);
    if (text == NULL || strlen(text) > EXPORT_MAX) {
        rc = CM_ETOOBIG;
        goto out;
    }
    rc = finish(ctx, id, "done", text, NULL);
    cm_info("export %s of %s/%s done (%zu bytes)", id, tenant, cm_bson_str(&user, "id", ""),
            strlen(text));
out:
    if (rc != CM_OK) /* the user may ask again */
        finish(ctx, id, "failed", NULL,
               rc == CM_EIO ? "a store or service the export reads from was unavailable"
                            : cm_strerror(rc));
    free(text);
    cJSON_Delete(out);
    if (have_user)
        bson_destroy(&user);
    bson_destroy(&f);
    return rc;
}
