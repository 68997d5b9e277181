/* media_settings.c - per-tenant media settings: GET and PUT /v1/media/settings (tenant
 * admins), and loading them over the process defaults for every upload. */
#include <stdio.h>
#include <string.h>

#include "common/auth.h"
#include "common/json.h"
#include "common/log.h"
#include "media.h"

#define PIXEL_CAP_MAX 200000000LL /* a tenant may lower the pixel cap, or raise it this far */

static void apply_doc(const bson_t *doc, media_settings *s)
{
    bson_iter_t it, arr;

    s->image_max_bytes = cm_bson_int(doc, "image_max_bytes", s->image_max_bytes);
    s->file_max_bytes = cm_bson_int(doc, "file_max_bytes", s->file_max_bytes);
    s->quota_bytes = cm_bson_int(doc, "quota_bytes", s->quota_bytes);
    s->uploads_per_minute = cm_bson_int(doc, "uploads_per_minute", s->uploads_per_minute);
    s->pixel_max = cm_bson_int(doc, "pixel_max", s->pixel_max);
    s->message_expiry_days = cm_bson_int(doc, "message_expiry_days", s->message_expiry_days);
    s->delete_on_user_deleted = cm_bson_bool(doc, "delete_on_user_deleted",
                                             s->delete_on_user_deleted);
    if (bson_iter_init_find(&it, doc, "allowed_types") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr)) {
        s->nallowed = 0;
        while (bson_iter_next(&arr) && s->nallowed < MEDIA_ALLOW_MAX)
            if (BSON_ITER_HOLDS_UTF8(&arr))
                snprintf(s->allowed[s->nallowed++], MEDIA_TYPE_MAX, "%s",
                         bson_iter_utf8(&arr, NULL));
    }
}

cm_err media_settings_load(media_ctx *ctx, const char *tenant, media_settings *out)
{
    bson_t f = BSON_INITIALIZER, doc;
    cm_err rc;

    *out = ctx->defaults;
    BSON_APPEND_UTF8(&f, "_id", tenant);
    rc = cm_mongo_find_one(ctx->db, MEDIA_COLL_SETTINGS, &f, NULL, &doc);
    bson_destroy(&f);
    if (rc == CM_ENOTFOUND)
        return CM_OK;
    if (rc != CM_OK)
        return rc;
    apply_doc(&doc, out);
    bson_destroy(&doc);
    return CM_OK;
}

static cJSON *settings_json(const media_settings *s)
{
    cJSON *o = cJSON_CreateObject(), *a = cJSON_CreateArray();
    cJSON_AddNumberToObject(o, "image_max_bytes", (double)s->image_max_bytes);
    cJSON_AddNumberToObject(o, "file_max_bytes", (double)s->file_max_bytes);
    cJSON_AddNumberToObject(o, "quota_bytes", (double)s->quota_bytes);
    cJSON_AddNumberToObject(o, "uploads_per_minute", (double)s->uploads_per_minute);
    cJSON_AddNumberToObject(o, "pixel_max", (double)s->pixel_max);
    cJSON_AddNumberToObject(o, "message_expiry_days", (double)s->message_expiry_days);
    cJSON_AddBoolToObject(o, "delete_on_user_deleted", s->delete_on_user_deleted);
    for (int i = 0; i < s->nallowed; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(s->allowed[i]));
    cJSON_AddItemToObject(o, "allowed_types", a);
    return o;
}

/* Tenant admins only: the role comes from the verified token. */
static int admin(cm_http_req *req, media_ctx *ctx, cm_jwt_claims *c)
{
    if (cm_auth_bearer(req, ctx->verifier, c) != CM_OK)
        return 0;
    if (!cm_auth_has_role(c, "admin")) {
        cm_http_reply_error(req, CM_EFORBIDDEN, "only a tenant admin may read or change media settings");
        return 0;
    }
    return 1;
}

/* GET /v1/media/settings */
void media_settings_get(cm_http_req *req, void *ud)
{
    media_ctx *ctx = ud;
    cm_jwt_claims c;
    media_settings s;
    cm_err rc;

    if (!admin(req, ctx, &c))
        return;
    rc = media_settings_load(ctx, c.tid, &s);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the settings could not be read");
        return;
    }
    cm_http_reply_json(req, 200, settings_json(&s));
}

/* A MIME type token pair "type/subtype" of RFC 9110 token characters, lower case. */
static int type_token_valid(const char *t)
{
    int slash = 0;
    size_t n = strlen(t);
    if (n < 3 || n >= MEDIA_TYPE_MAX)
        return 0;
    for (const char *p = t; *p; p++) {
        if (*p == '/') {
            if (slash++ || p == t || p[1] == '\0')
                return 0;
        } else if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                     strchr("!#$&-^_.+", *p))) {
            return 0;
        }
    }
    return slash == 1;
}

/* PUT /v1/media/settings: every field optional; absent fields keep their value. */
void media_settings_put(cm_http_req *req, void *ud)
{
    static const char *const allowed[] = {
        "image_max_bytes", "file_max_bytes", "quota_bytes", "uploads_per_minute", "pixel_max",
        "message_expiry_days", "delete_on_user_deleted", "allowed_types", NULL};
    media_ctx *ctx = ud;
    cm_jwt_claims c;
    media_settings s;
    cJSON *body, *types;
    char detail[256];
    long img = -1, file = -1, quota = -1, rate = -1, pix = -1, days = -1;
    int del = -1;
    bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, set, arr;
    cm_err rc;

    if (!admin(req, ctx, &c))
        goto out;
    if (cm_http_json_body(req, &body) != CM_OK)
        goto out;
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_long(body, "image_max_bytes", 0, 1, (long)ctx->body_max, &img, detail,
                     sizeof(detail)) ||
        cm_json_long(body, "file_max_bytes", 0, 1, (long)ctx->body_max, &file, detail,
                     sizeof(detail)) ||
        cm_json_long(body, "quota_bytes", 0, 0, 1L << 53, &quota, detail, sizeof(detail)) ||
        cm_json_long(body, "uploads_per_minute", 0, 0, 100000, &rate, detail, sizeof(detail)) ||
        cm_json_long(body, "pixel_max", 0, 1, PIXEL_CAP_MAX, &pix, detail, sizeof(detail)) ||
        cm_json_long(body, "message_expiry_days", 0, 0, 3650, &days, detail, sizeof(detail)) ||
        cm_json_bool(body, "delete_on_user_deleted", 0, &del, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    types = cJSON_GetObjectItemCaseSensitive(body, "allowed_types");
    if (types) {
        int i = 0;
        const cJSON *t;
        if (!cJSON_IsArray(types) || cJSON_GetArraySize(types) > MEDIA_ALLOW_MAX) {
            cm_http_reply_error(req, CM_EINVAL, "field 'allowed_types' must be an array of at most 32 MIME types");
            goto out;
        }
        cJSON_ArrayForEach(t, types) {
            if (!cJSON_IsString(t) || !type_token_valid(t->valuestring)) {
                snprintf(detail, sizeof(detail),
                         "field 'allowed_types' item %d must be a lower-case MIME type such as image/png", i);
                cm_http_reply_error(req, CM_EINVAL, detail);
                goto out;
            }
            i++;
        }
    }
    BSON_APPEND_UTF8(&f, "_id", c.tid);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    if (img >= 0)
        BSON_APPEND_INT64(&set, "image_max_bytes", img);
    if (file >= 0)
        BSON_APPEND_INT64(&set, "file_max_bytes", file);
    if (quota >= 0)
        BSON_APPEND_INT64(&set, "quota_bytes", quota);
    if (rate >= 0)
        BSON_APPEND_INT64(&set, "uploads_per_minute", rate);
    if (pix >= 0)
        BSON_APPEND_INT64(&set, "pixel_max", pix);
    if (days >= 0)
        BSON_APPEND_INT64(&set, "message_expiry_days", days);
    if (del >= 0)
        BSON_APPEND_BOOL(&set, "delete_on_user_deleted", del);
    if (types) {
        const cJSON *t;
        char k[16];
        int i = 0;
        BSON_APPEND_ARRAY_BEGIN(&set, "allowed_types", &arr);
        cJSON_ArrayForEach(t, types) {
            snprintf(k, sizeof(k), "%d", i++);
            BSON_APPEND_UTF8(&arr, k, t->valuestring);
        }
        bson_append_array_end(&set, &arr);
    }
    BSON_APPEND_UTF8(&set, "tenant", c.tid);
    bson_append_document_end(&u, &set);
    rc = cm_mongo_update(ctx->db, MEDIA_COLL_SETTINGS, &f, &u, 1, 0, NULL);
    if (rc == CM_OK)
        rc = media_settings_load(ctx, c.tid, &s);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the settings could not be stored");
        goto out;
    }
    cm_http_reply_json(req, 200, settings_json(&s));
out:
    bson_destroy(&f);
    bson_destroy(&u);
}
