/* user_tenants.c - tenants, for the platform operator (X-Admin-Key): POST /v1/tenants,
 * GET /v1/tenants, GET and PATCH /v1/tenants/{id}, POST /v1/tenants/{id}/suspend and
 * /resume. A suspended tenant mints no tokens, and its tokens already out are refused at once
 * by every verifier (the Redis key suspended:tid:<tid>, session.h). */
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "common/session.h"
#include "common/uuid.h"
#include "user.h"

/* Constant-time comparison of the presented admin key with the configured one. */
static int admin_key_ok(const user_ctx *ctx, const char *presented)
{
    char a[65], b[65];
    if (presented == NULL || ctx->admin_key == NULL || ctx->admin_key[0] == '\0')
        return 0;
    user_sha256_hex(presented, a);
    user_sha256_hex(ctx->admin_key, b);
    return sodium_memcmp(a, b, 64) == 0;
}

int user_admin_check(cm_http_req *req, const user_ctx *ctx)
{
    if (admin_key_ok(ctx, cm_http_header(req, "X-Admin-Key")))
        return 1;
    cm_http_reply_error(req, CM_EUNAUTH, "the platform admin key (X-Admin-Key) is missing or wrong");
    return 0;
}

/* --- settings in BSON and JSON --------------------------------------------------------------- */

static void origins_from_doc(const bson_t *tenant, const char *path,
                             char list[][USER_ORIGIN_MAX + 1], int *count)
{
    bson_iter_t it, arr;

    *count = 0;
    if (bson_iter_init(&it, tenant) && bson_iter_find_descendant(&it, path, &arr) &&
        BSON_ITER_HOLDS_ARRAY(&arr) && bson_iter_recurse(&arr, &it))
        while (bson_iter_next(&it) && *count < USER_ORIGINS_MAX)
            if (BSON_ITER_HOLDS_UTF8(&it))
                snprintf(list[(*count)++], USER_ORIGIN_MAX + 1, "%s", bson_iter_utf8(&it, NULL));
}

static void origins_to_bson(bson_t *d, const char *name, const char list[][USER_ORIGIN_MAX + 1],
                            int count)
{
    bson_t a;
    char idx[16];

    BSON_APPEND_ARRAY_BEGIN(d, name, &a);
    for (int i = 0; i < count; i++) {
        snprintf(idx, sizeof(idx), "%d", i);
        BSON_APPEND_UTF8(&a, idx, list[i]);
    }
    bson_append_array_end(d, &a);
}

static cJSON *origins_json(const char list[][USER_ORIGIN_MAX + 1], int count)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < count; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(list[i]));
    return a;
}

void user_settings_from_doc(const bson_t *tenant, user_settings *s)
{

    user_settings_defaults(s);
    s->self_registration = cm_bson_bool(tenant, "settings.self_registration", 0);
    s->send_rate_per_min = cm_bson_int(tenant, "settings.send_rate_per_min", s->send_rate_per_min);
    s->api_rate_per_min = cm_bson_int(tenant, "settings.api_rate_per_min", s->api_rate_per_min);
    s->message_max_chars = cm_bson_int(tenant, "settings.message_max_chars", s->message_max_chars);
    s->group_member_max = cm_bson_int(tenant, "settings.group_member_max", s->group_member_max);
    s->edit_window_s = cm_bson_int(tenant, "settings.edit_window_s", s->edit_window_s);
    s->retention_days = cm_bson_int(tenant, "settings.retention_days", s->retention_days);
    s->erase_delete = strcmp(cm_bson_str(tenant, "settings.erase_policy", "anonymize"), "delete") == 0;
    snprintf(s->webhook_secret, sizeof(s->webhook_secret), "%s",
             cm_bson_str(tenant, "settings.webhook_secret", ""));
    origins_from_doc(tenant, "settings.ws_allowed_origins", s->origins, &s->n_origins);
    origins_from_doc(tenant, "settings.cors_allowed_origins", s->cors_origins,
                     &s->n_cors_origins);
}

static void settings_to_bson(const user_settings *s, bson_t *parent)
{
    bson_t d;

    BSON_APPEND_DOCUMENT_BEGIN(parent, "settings", &d);
    BSON_APPEND_BOOL(&d, "self_registration", s->self_registration);
    BSON_APPEND_INT64(&d, "send_rate_per_min", s->send_rate_per_min);
    BSON_APPEND_INT64(&d, "api_rate_per_min", s->api_rate_per_min);
    BSON_APPEND_INT64(&d, "message_max_chars", s->message_max_chars);
    BSON_APPEND_INT64(&d, "group_member_max", s->group_member_max);
    BSON_APPEND_INT64(&d, "edit_window_s", s->edit_window_s);
    BSON_APPEND_INT64(&d, "retention_days", s->retention_days);
    BSON_APPEND_UTF8(&d, "erase_policy", s->erase_delete ? "delete" : "anonymize");
    origins_to_bson(&d, "ws_allowed_origins", s->origins,
                    s->n_origins);
    origins_to_bson(&d, "cors_allowed_origins", s->cors_origins,
                    s->n_cors_origins);
    BSON_APPEND_UTF8(&d, "webhook_secret", s->webhook_secret);
    bson_append_document_end(parent, &d);
}

static cJSON *settings_json(const user_settings *s)
{
    cJSON *o = cJSON_CreateObject();

    cJSON_AddBoolToObject(o, "self_registration", s->self_registration);
    cJSON_AddNumberToObject(o, "send_rate_per_min", (double)s->send_rate_per_min);
    cJSON_AddNumberToObject(o, "api_rate_per_min", (double)s->api_rate_per_min);
    cJSON_AddNumberToObject(o, "message_max_chars", (double)s->message_max_chars);
    cJSON_AddNumberToObject(o, "group_member_max", (double)s->group_member_max);
    cJSON_AddNumberToObject(o, "edit_window_s", (double)s->edit_window_s);
    cJSON_AddNumberToObject(o, "retention_days", (double)s->retention_days);
    cJSON_AddStringToObject(o, "erase_policy", s->erase_delete ? "delete" : "anonymize");
    cJSON_AddItemToObject(o, "ws_allowed_origins", origins_json(s->origins, s->n_origins));
    cJSON_AddItemToObject(o, "cors_allowed_origins",
                          origins_json(s->cors_origins, s->n_cors_origins));
    cJSON_AddStringToObject(o, "webhook_secret", s->webhook_secret);
    return o;
}

static cJSON *tenant_json(const bson_t *doc, void *ud)
{
    user_settings s;
    char ts[CM_RFC3339_LEN];
    cJSON *t = cJSON_CreateObject();

    (void)ud;
    user_settings_from_doc(doc, &s);
    cJSON_AddStringToObject(t, "id", cm_bson_str(doc, "_id", ""));
    cJSON_AddStringToObject(t, "name", cm_bson_str(doc, "name", ""));
    cJSON_AddStringToObject(t, "status", cm_bson_str(doc, "status", ""));
    cJSON_AddItemToObject(t, "settings", settings_json(&s));
    cm_clock_rfc3339(cm_bson_int(doc, "created_at", 0), ts);
    cJSON_AddStringToObject(t, "created_at", ts);
    cm_clock_rfc3339(cm_bson_int(doc, "updated_at", cm_bson_int(doc, "created_at", 0)), ts);
    cJSON_AddStringToObject(t, "updated_at", ts);
    return t;
}

/* Loads tenant `id` for the operator; answers 404 (or 503) itself. */
static cm_err load(cm_http_req *req, user_ctx *ctx, const char *id, bson_t *out)
{
    bson_t f = BSON_INITIALIZER;
    cm_err rc = CM_ENOTFOUND;

    if (cm_uuid_valid(id)) {
        BSON_APPEND_UTF8(&f, "_id", id);
        rc = cm_mongo_find_one(ctx->db, USER_COLL_TENANTS, &f, NULL, out);
    }
    bson_destroy(&f);
    if (rc != CM_OK)
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "no such tenant" : NULL);
    return rc;
}

/* --- handlers -------------------------------------------------------------------------------- */

/* POST /v1/tenants */
void user_tenants_create(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    static const char *const allowed[] = {"name", "settings", NULL};
    char detail[256], id[CM_UUID_STRLEN];
    const char *name = NULL;
    user_settings s;
    user_api_key key;
    cJSON *body, *settings, *out;
    bson_t doc = BSON_INITIALIZER;
    int64_t now = cm_clock_now_ms();
    cm_err rc;

    if (!user_admin_check(req, ctx) || cm_http_json_body(req, &body) != CM_OK)
        goto out;
    user_settings_defaults(&s);
    settings = cJSON_GetObjectItemCaseSensitive(body, "settings");
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_string(body, "name", 1, 1, USER_TENANT_NAME_MAX, &name, detail, sizeof(detail)) ||
        (settings && user_settings_apply(settings, &s, detail, sizeof(detail)))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    if (s.webhook_secret[0] == '\0') { /* none given: 256 random bits */
        memcpy(s.webhook_secret, "whsec_", 6);
        if (cm_random_hex(s.webhook_secret + 6, 32) != CM_OK) {
            cm_http_reply_error(req, CM_EINTERNAL, "the random source failed");
            goto out;
        }
    }
    if (cm_uuid_v7(id) != CM_OK) {
        cm_http_reply_error(req, CM_EINTERNAL, "the random source failed");
        goto out;
    }
    BSON_APPEND_UTF8(&doc, "_id", id);
    BSON_APPEND_UTF8(&doc, "name", name);
    BSON_APPEND_UTF8(&doc, "status", "active");
    settings_to_bson(&s, &doc);
    BSON_APPEND_DATE_TIME(&doc, "created_at", now);
    BSON_APPEND_DATE_TIME(&doc, "updated_at", now);
    rc = cm_mongo_insert(ctx->db, USER_COLL_TENANTS, &doc);
    if (rc == CM_OK)
        rc = user_api_key_create(ctx, id, "default", &key);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the tenant could not be stored");
        goto out;
    }
    cm_info("tenant %s created", id);
    out = tenant_json(&doc, NULL);
    cJSON_AddStringToObject(out, "api_key", key.id);
    cJSON_AddStringToObject(out, "api_secret", key.secret);
    cm_http_add_header(req, "Cache-Control", "no-store");
    cm_http_add_header(req, "Location", id);
    cm_http_reply_json(req, 201, out);
    sodium_memzero(&key, sizeof(key));
out:
    bson_destroy(&doc);
}

/* GET /v1/tenants: every tenant, oldest first. */
void user_tenants_list(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    bson_t f = BSON_INITIALIZER;

    if (user_admin_check(req, ctx))
        user_reply_id_page(req, ctx, USER_COLL_TENANTS, &f, 0, tenant_json, NULL);
    bson_destroy(&f);
}

static int add_cors_tenant(const bson_t *doc, void *ud)
{
    cJSON *items = ud, *t;
    user_settings s;

    user_settings_from_doc(doc, &s);
    /* Suspended tenants' tokens are refused anyway; their browsers get no CORS answer. */
    if (s.n_cors_origins == 0 || strcmp(cm_bson_str(doc, "status", ""), "active") != 0)
        return 0;
    t = cJSON_CreateObject();
    cJSON_AddStringToObject(t, "tenant_id", cm_bson_str(doc, "_id", ""));
    cJSON_AddItemToObject(t, "origins", origins_json(s.cors_origins, s.n_cors_origins));
    cJSON_AddItemToArray(items, t);
    return 0;
}

/* GET /internal/v1/tenants/cors-origins: every active tenant's CORS allowlist, for the gateways,
 * which poll it (GATEWAY_CORS_REFRESH_S) and answer browsers from their copy. Not routed by the
 * gateway (the network policy admits only the services), so no operator key is needed. Not
 * paginated: one entry per tenant with a list, at most USER_ORIGINS_MAX origins each. */
void user_tenants_cors(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    bson_t f = BSON_INITIALIZER;
    cJSON *out, *items;
    cm_err rc;

    out = cJSON_CreateObject();
    items = cJSON_AddArrayToObject(out, "items");
    rc = cm_mongo_find(ctx->db, USER_COLL_TENANTS, &f, NULL, add_cors_tenant, items);
    if (rc != CM_OK) {
        cJSON_Delete(out);
        cm_http_reply_error(req, rc, NULL);
        goto done;
    }
    cm_http_add_header(req, "Cache-Control", "no-store");
    cm_http_reply_json(req, 200, out);
done:
    bson_destroy(&f);
}

/* GET /v1/tenants/{id} */
void user_tenants_get(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    bson_t doc;

    if (!user_admin_check(req, ctx) || load(req, ctx, cm_http_param(req, "id"), &doc) != CM_OK)
        return;
    cm_http_add_header(req, "Cache-Control", "no-store"); /* the webhook secret */
    cm_http_reply_json(req, 200, tenant_json(&doc, NULL));
    bson_destroy(&doc);
}

/* GET /internal/v1/tenants/{id}/settings: the settings the other services enforce
 * (common/tenant.h), without the webhook secret. Not routed by the gateway; the network
 * policy lets only the services reach it. */
void user_tenants_settings_internal(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    user_settings s;
    cJSON *o;
    bson_t doc;

    if (load(req, ctx, cm_http_param(req, "id"), &doc) != CM_OK)
        return;
    user_settings_from_doc(&doc, &s);
    o = settings_json(&s);
    cJSON_DeleteItemFromObjectCaseSensitive(o, "webhook_secret");
    cm_http_reply_json(req, 200, o);
    bson_destroy(&doc);
}

/* PATCH /v1/tenants/{id}: name and any subset of the settings; nothing else (no status, id or
 * keys: those have their own endpoints). */
void user_tenants_update(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    static const char *const allowed[] = {"name", "settings", NULL};
    const char *id = cm_http_param(req, "id"), *name = NULL;
    char detail[256];
    user_settings s;
    cJSON *body, *settings;
    bson_t doc, f = BSON_INITIALIZER, u = BSON_INITIALIZER, set, after;
    int have_doc = 0;
    cm_err rc;

    if (!user_admin_check(req, ctx) || cm_http_json_body(req, &body) != CM_OK)
        goto out;
    if (load(req, ctx, id, &doc) != CM_OK)
        goto out;
    have_doc = 1;
    user_settings_from_doc(&doc, &s);
    settings = cJSON_GetObjectItemCaseSensitive(body, "settings");
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_string(body, "name", 0, 1, USER_TENANT_NAME_MAX, &name, detail, sizeof(detail)) ||
        (settings && user_settings_apply(settings, &s, detail, sizeof(detail)))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    BSON_APPEND_UTF8(&f, "_id", id);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    if (name)
        BSON_APPEND_UTF8(&set, "name", name);
    settings_to_bson(&s, &set);
    BSON_APPEND_DATE_TIME(&set, "updated_at", cm_clock_now_ms());
    bson_append_document_end(&u, &set);
    rc = cm_mongo_find_and_modify(ctx->db, USER_COLL_TENANTS, &f, NULL, &u, 0, 1, &after);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "no such tenant" : NULL);
        goto out;
    }
    cm_http_add_header(req, "Cache-Control", "no-store");
    cm_http_reply_json(req, 200, tenant_json(&after, NULL));
    bson_destroy(&after);
out:
    if (have_doc)
        bson_destroy(&doc);
    bson_destroy(&f);
    bson_destroy(&u);
}

/* POST /v1/tenants/{id}/suspend and /resume (`ud` of the route says which). */
static void set_status(cm_http_req *req, user_ctx *ctx, int suspend)
{
    const char *id = cm_http_param(req, "id");
    bson_t doc, f = BSON_INITIALIZER, u = BSON_INITIALIZER, set, after;
    cm_err rc;

    if (!user_admin_check(req, ctx) || load(req, ctx, id, &doc) != CM_OK)
        goto out;
    bson_destroy(&doc);
    /* Redis first: if it is down nothing has changed and the operator can retry. */
    rc = cm_session_tenant_suspend(ctx->redis, id, suspend);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the suspension could not be recorded; try again");
        goto out;
    }
    BSON_APPEND_UTF8(&f, "_id", id);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_UTF8(&set, "status", suspend ? "suspended" : "active");
    BSON_APPEND_DATE_TIME(&set, "updated_at", cm_clock_now_ms());
    bson_append_document_end(&u, &set);
    rc = cm_mongo_find_and_modify(ctx->db, USER_COLL_TENANTS, &f, NULL, &u, 0, 1, &after);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, NULL);
        goto out;
    }
    cm_info("tenant %s %s", id, suspend ? "suspended" : "resumed");
    cm_http_add_header(req, "Cache-Control", "no-store");
    cm_http_reply_json(req, 200, tenant_json(&after, NULL));
    bson_destroy(&after);
out:
    bson_destroy(&f);
    bson_destroy(&u);
}

void user_tenants_suspend(cm_http_req *req, void *ud)
{
    set_status(req, ud, 1);
}

void user_tenants_resume(cm_http_req *req, void *ud)
{
    set_status(req, ud, 0);
}

static int mark_suspended(const bson_t *doc, void *ud)
{
    user_ctx *ctx = ud;
    cm_session_tenant_suspend(ctx->redis, cm_bson_str(doc, "_id", ""), 1);
    return 0;
}

cm_err user_tenants_sync_suspended(user_ctx *ctx)
{
    bson_t f = BSON_INITIALIZER;
    cm_err rc;

    /* Redis may have lost its keys (a restart without persistence): MongoDB is the record. */
    BSON_APPEND_UTF8(&f, "status", "suspended");
    rc = cm_mongo_find(ctx->db, USER_COLL_TENANTS, &f, NULL, mark_suspended, ctx);
    bson_destroy(&f);
    return rc;
}
