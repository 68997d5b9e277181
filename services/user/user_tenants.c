/* user_tenants.c - tenants: POST /v1/tenants (platform operator, X-Admin-Key). */
#include <string.h>

#include <sodium.h>

#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
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

/* POST /v1/tenants */
void user_tenants_create(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    static const char *const allowed[] = {"name", "settings", NULL};
    static const char *const allowed_settings[] = {"self_registration", NULL};
    char detail[256], id[CM_UUID_STRLEN], key[3 + 24 + 1], secret[3 + 64 + 1], hash[65], ts[CM_RFC3339_LEN];
    const char *name = NULL;
    int self_reg = 0;
    cJSON *body, *settings, *out;
    bson_t doc = BSON_INITIALIZER, sdoc;
    int64_t now = cm_clock_now_ms();
    cm_err rc;

    if (!admin_key_ok(ctx, cm_http_header(req, "X-Admin-Key"))) {
        cm_http_reply_error(req, CM_EUNAUTH, "the platform admin key (X-Admin-Key) is missing or wrong");
        goto out;
    }
    if (cm_http_json_body(req, &body) != CM_OK)
        goto out;
    settings = cJSON_GetObjectItemCaseSensitive(body, "settings");
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_string(body, "name", 1, 1, USER_TENANT_NAME_MAX, &name, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    if (settings && (cm_json_only_keys(settings, allowed_settings, detail, sizeof(detail)) ||
                     cm_json_bool(settings, "self_registration", 0, &self_reg, detail,
                                  sizeof(detail)))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    memcpy(key, "ck_", 3);
    memcpy(secret, "cs_", 3);
    if (cm_uuid_v7(id) || cm_random_hex(key + 3, 12) || cm_random_hex(secret + 3, 32)) {
        cm_http_reply_error(req, CM_EINTERNAL, "the random source failed");
        goto out;
    }
    /* The secret is 256 random bits, so a plain SHA-256 is a safe way to store it. */
    user_sha256_hex(secret, hash);
    BSON_APPEND_UTF8(&doc, "_id", id);
    BSON_APPEND_UTF8(&doc, "name", name);
    BSON_APPEND_UTF8(&doc, "api_key", key);
    BSON_APPEND_UTF8(&doc, "api_secret_sha256", hash);
    BSON_APPEND_UTF8(&doc, "status", "active");
    BSON_APPEND_DOCUMENT_BEGIN(&doc, "settings", &sdoc);
    BSON_APPEND_BOOL(&sdoc, "self_registration", self_reg);
    bson_append_document_end(&doc, &sdoc);
    BSON_APPEND_DATE_TIME(&doc, "created_at", now);
    rc = cm_mongo_insert(ctx->db, USER_COLL_TENANTS, &doc);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the tenant could not be stored");
        goto out;
    }
    cm_info("tenant %s created", id);
    cm_clock_rfc3339(now, ts);
    out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "id", id);
    cJSON_AddStringToObject(out, "name", name);
    cJSON_AddStringToObject(out, "api_key", key);
    cJSON_AddStringToObject(out, "api_secret", secret);
    cJSON_AddBoolToObject(cJSON_AddObjectToObject(out, "settings"), "self_registration", self_reg);
    cJSON_AddStringToObject(out, "status", "active");
    cJSON_AddStringToObject(out, "created_at", ts);
    cm_http_add_header(req, "Cache-Control", "no-store");
    cm_http_reply_json(req, 201, out);
out:
    bson_destroy(&doc);
}
