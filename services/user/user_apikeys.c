/* user_apikeys.c - a tenant's API keys, for the platform operator (X-Admin-Key):
 * POST and GET /v1/tenants/{id}/api-keys, POST /v1/tenants/{id}/api-keys/{key}/rotate,
 * DELETE /v1/tenants/{id}/api-keys/{key}; and the check of a tenant backend's HTTP Basic
 * credentials (api_key:api_secret) that the server-side endpoints share.
 *
 * A tenant holds up to USER_API_KEYS_MAX active keys. The key id ("ck_" + 96 random bits) is
 * public; the secret ("cs_" + 256 random bits) is shown once and stored as its SHA-256 (a
 * random 256-bit secret needs no slow hash). Rotating makes a new key and lets the old one
 * live for an overlap period, so the tenant's servers can switch without an outage. */
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "common/uuid.h"
#include "user.h"

#define OVERLAP_DEFAULT_S 86400
#define OVERLAP_MAX_S (30 * 86400)

static cm_err count_active(user_ctx *ctx, const char *tenant, int64_t *n)
{
    bson_t f = BSON_INITIALIZER;
    cm_err rc;

    BSON_APPEND_UTF8(&f, "tenant", tenant);
    BSON_APPEND_UTF8(&f, "status", "active");
    rc = cm_mongo_count(ctx->db, USER_COLL_API_KEYS, &f, n);
    bson_destroy(&f);
    return rc;
}

cm_err user_api_key_create(user_ctx *ctx, const char *tenant, const char *name, user_api_key *k)
{
    char hash[65];
    bson_t d = BSON_INITIALIZER;
    int64_t active = 0;
    cm_err rc;

    memset(k, 0, sizeof(*k));
    rc = count_active(ctx, tenant, &active);
    if (rc != CM_OK)
        return rc;
    if (active >= USER_API_KEYS_MAX)
        return CM_ECONFLICT;
    memcpy(k->id, "ck_", 3);
    memcpy(k->secret, "cs_", 3);
    if (cm_random_hex(k->id + 3, 12) != CM_OK || cm_random_hex(k->secret + 3, 32) != CM_OK)
        return CM_EINTERNAL;
    k->created_at = cm_clock_now_ms();
    user_sha256_hex(k->secret, hash);
    BSON_APPEND_UTF8(&d, "_id", k->id);
    BSON_APPEND_UTF8(&d, "tenant", tenant);
    BSON_APPEND_UTF8(&d, "name", name);
    BSON_APPEND_UTF8(&d, "secret_sha256", hash);
    BSON_APPEND_UTF8(&d, "status", "active");
    BSON_APPEND_DATE_TIME(&d, "created_at", k->created_at);
    BSON_APPEND_INT64(&d, "expires_at", 0); /* 0: until revoked */
    rc = cm_mongo_insert(ctx->db, USER_COLL_API_KEYS, &d);
    bson_destroy(&d);
    return rc;
}

/* A key is usable when active and not past the end of its rotation overlap. */
static int key_usable(const bson_t *doc, int64_t now)
{
    int64_t exp = cm_bson_int(doc, "expires_at", 0);
    return strcmp(cm_bson_str(doc, "status", ""), "active") == 0 && (exp == 0 || exp > now);
}

static cJSON *key_json(const bson_t *doc, void *ud)
{
    char ts[CM_RFC3339_LEN];
    cJSON *o = cJSON_CreateObject();
    int64_t exp = cm_bson_int(doc, "expires_at", 0), used = cm_bson_int(doc, "last_used_at", 0);

    (void)ud;
    cJSON_AddStringToObject(o, "id", cm_bson_str(doc, "_id", ""));
    cJSON_AddStringToObject(o, "name", cm_bson_str(doc, "name", ""));
    cJSON_AddStringToObject(o, "status",
                            key_usable(doc, cm_clock_now_ms())                        ? "active"
                            : strcmp(cm_bson_str(doc, "status", ""), "revoked") == 0 ? "revoked"
                                                                                       : "expired");
    cm_clock_rfc3339(cm_bson_int(doc, "created_at", 0), ts);
    cJSON_AddStringToObject(o, "created_at", ts);
    if (exp) {
        cm_clock_rfc3339(exp, ts);
        cJSON_AddStringToObject(o, "expires_at", ts);
    } else {
        cJSON_AddNullToObject(o, "expires_at");
    }
    if (used) {
        cm_clock_rfc3339(used, ts);
        cJSON_AddStringToObject(o, "last_used_at", ts);
    } else {
        cJSON_AddNullToObject(o, "last_used_at");
    }
    return o;
}

/* The answer that carries a new key's secret (the only time it is shown). */
static cJSON *new_key_json(const user_api_key *k, const char *name)
{
    char ts[CM_RFC3339_LEN];
    cJSON *o = cJSON_CreateObject();

    cm_clock_rfc3339(k->created_at, ts);
    cJSON_AddStringToObject(o, "id", k->id);
    cJSON_AddStringToObject(o, "name", name);
    cJSON_AddStringToObject(o, "status", "active");
    cJSON_AddStringToObject(o, "created_at", ts);
    cJSON_AddNullToObject(o, "expires_at");
    cJSON_AddNullToObject(o, "last_used_at");
    cJSON_AddStringToObject(o, "api_key", k->id);
    cJSON_AddStringToObject(o, "api_secret", k->secret);
    return o;
}

/* Checks the operator and that tenant {id} exists; answers otherwise. */
static int tenant_ok(cm_http_req *req, user_ctx *ctx, const char *id)
{
    bson_t f = BSON_INITIALIZER;
    int64_t n = 0;
    cm_err rc = CM_OK;

    if (!user_admin_check(req, ctx))
        return 0;
    if (cm_uuid_valid(id)) {
        BSON_APPEND_UTF8(&f, "_id", id);
        rc = cm_mongo_count(ctx->db, USER_COLL_TENANTS, &f, &n);
    }
    bson_destroy(&f);
    if (rc != CM_OK || n == 0) {
        cm_http_reply_error(req, rc != CM_OK ? rc : CM_ENOTFOUND, rc != CM_OK ? NULL : "no such tenant");
        return 0;
    }
    return 1;
}

static void reply_create_error(cm_http_req *req, cm_err rc)
{
    if (rc == CM_ECONFLICT)
        cm_http_reply_error(req, rc, "the tenant already has the most active API keys allowed (20); revoke one first");
    else
        cm_http_reply_error(req, rc, "the API key could not be stored");
}

/* POST /v1/tenants/{id}/api-keys */
void user_api_keys_create(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    static const char *const allowed[] = {"name", NULL};
    const char *tenant = cm_http_param(req, "id"), *name = "api key";
    char detail[256];
    user_api_key k;
    cJSON *body;
    cm_err rc;

    if (!tenant_ok(req, ctx, tenant) || cm_http_json_body(req, &body) != CM_OK)
        return;
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_string(body, "name", 0, 1, USER_NAME_MAX, &name, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        return;
    }
    rc = user_api_key_create(ctx, tenant, name, &k);
    if (rc != CM_OK) {
        reply_create_error(req, rc);
        return;
    }
    cm_http_add_header(req, "Cache-Control", "no-store");
    cm_http_add_header(req, "Location", k.id);
    cm_http_reply_json(req, 201, new_key_json(&k, name));
    sodium_memzero(&k, sizeof(k));
}

/* GET /v1/tenants/{id}/api-keys: every key of the tenant, newest first; never a secret. */
void user_api_keys_list(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    const char *tenant = cm_http_param(req, "id");
    bson_t f = BSON_INITIALIZER, sort = BSON_INITIALIZER;
    char next[64];
    cJSON *items = NULL;
    cm_err rc;

    if (!tenant_ok(req, ctx, tenant))
        goto out;
    BSON_APPEND_UTF8(&f, "tenant", tenant);
    BSON_APPEND_INT32(&sort, "created_at", -1);
    /* At most USER_API_KEYS_MAX active and their recent predecessors: one page of 200. */
    rc = cm_mongo_find_page(ctx->db, USER_COLL_API_KEYS, &f, &sort, 200, "_id", key_json, NULL,
                            &items, next, sizeof(next));
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, NULL);
        goto out;
    }
    cm_http_reply_page(req, items, NULL);
out:
    bson_destroy(&f);
    bson_destroy(&sort);
}

/* Loads key {key} of tenant {id} that is still usable; answers 404 otherwise. */
static cm_err load_key(cm_http_req *req, user_ctx *ctx, const char *tenant, const char *key,
                       bson_t *out)
{
    cm_err rc = cm_mongo_find_owned(ctx->db, USER_COLL_API_KEYS, key, tenant, NULL, out);

    if (rc == CM_OK && !key_usable(out, cm_clock_now_ms())) {
        bson_destroy(out);
        rc = CM_ENOTFOUND;
    }
    if (rc != CM_OK)
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "no such active API key" : NULL);
    return rc;
}

static cm_err end_key(user_ctx *ctx, const char *tenant, const char *key, int64_t expires_at,
                      const char *status)
{
    bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, set;
    cm_err rc;

    BSON_APPEND_UTF8(&f, "_id", key);
    BSON_APPEND_UTF8(&f, "tenant", tenant);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_INT64(&set, "expires_at", expires_at);
    BSON_APPEND_UTF8(&set, "status", status);
    if (strcmp(status, "revoked") == 0)
        BSON_APPEND_DATE_TIME(&set, "revoked_at", cm_clock_now_ms());
    bson_append_document_end(&u, &set);
    rc = cm_mongo_update(ctx->db, USER_COLL_API_KEYS, &f, &u, 0, 0, NULL);
    bson_destroy(&f);
    bson_destroy(&u);
    return rc;
}

/* POST /v1/tenants/{id}/api-keys/{key}/rotate: a new key now; the old one keeps working for
 * `overlap_s` seconds (default one day, at most 30 days; 0 ends it now). */
void user_api_keys_rotate(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    static const char *const allowed[] = {"overlap_s", NULL};
    const char *tenant = cm_http_param(req, "id"), *key = cm_http_param(req, "key");
    char detail[256], ts[CM_RFC3339_LEN];
    long overlap = OVERLAP_DEFAULT_S;
    int64_t ends;
    user_api_key k;
    bson_t old;
    cJSON *body, *out, *prev;
    cm_err rc;

    if (!tenant_ok(req, ctx, tenant) || cm_http_json_body(req, &body) != CM_OK)
        return;
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_long(body, "overlap_s", 0, 0, OVERLAP_MAX_S, &overlap, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        return;
    }
    if (load_key(req, ctx, tenant, key, &old) != CM_OK)
        return;
    /* The new key first (it counts towards the cap while the old one overlaps). */
    rc = user_api_key_create(ctx, tenant, cm_bson_str(&old, "name", "api key"), &k);
    if (rc != CM_OK) {
        reply_create_error(req, rc);
        goto out;
    }
    ends = cm_clock_now_ms() + (int64_t)overlap * 1000;
    rc = end_key(ctx, tenant, key, ends, overlap ? "active" : "expired");
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the old key's end could not be recorded; it stays active");
        goto out;
    }
    out = new_key_json(&k, cm_bson_str(&old, "name", "api key"));
    prev = cJSON_AddObjectToObject(out, "replaces");
    cJSON_AddStringToObject(prev, "id", key);
    cm_clock_rfc3339(ends, ts);
    cJSON_AddStringToObject(prev, "expires_at", ts);
    cm_http_add_header(req, "Cache-Control", "no-store");
    cm_http_add_header(req, "Location", k.id);
    cm_http_reply_json(req, 201, out);
out:
    sodium_memzero(&k, sizeof(k));
    bson_destroy(&old);
}

/* DELETE /v1/tenants/{id}/api-keys/{key}: revoked at once. */
void user_api_keys_revoke(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    const char *tenant = cm_http_param(req, "id"), *key = cm_http_param(req, "key");
    bson_t old;
    cm_err rc;

    if (!tenant_ok(req, ctx, tenant) || load_key(req, ctx, tenant, key, &old) != CM_OK)
        return;
    bson_destroy(&old);
    rc = end_key(ctx, tenant, key, cm_clock_now_ms(), "revoked");
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, NULL);
        return;
    }
    cm_info("API key %s of tenant %s revoked", key, tenant);
    cm_http_reply_json(req, 204, NULL);
}

cm_err user_tenant_auth(cm_http_req *req, user_ctx *ctx, bson_t *tenant_out)
{
    char key[128], secret[128], hash[65];
    bson_t kd, f = BSON_INITIALIZER, u = BSON_INITIALIZER, set;
    int have_key = 0, ok;
    int64_t now = cm_clock_now_ms();
    cm_err rc;

    if (!user_parse_basic(cm_http_header(req, "Authorization"), key, sizeof(key), secret,
                          sizeof(secret))) {
        cm_http_add_header(req, "WWW-Authenticate", "Basic realm=\"tenant\"");
        cm_http_reply_error(req, CM_EUNAUTH,
                            "tenant credentials are required (Authorization: Basic api_key:api_secret)");
        rc = CM_EUNAUTH;
        goto out;
    }
    /* Per address, and per key after failed secrets (a backing-off key answers 429). */
    rc = user_limit_check(req, ctx, USER_LIMIT_TOKEN, NULL, key);
    if (rc != CM_OK)
        goto out;
    BSON_APPEND_UTF8(&f, "_id", key);
    rc = cm_mongo_find_one(ctx->db, USER_COLL_API_KEYS, &f, NULL, &kd);
    if (rc != CM_OK && rc != CM_ENOTFOUND) {
        cm_http_reply_error(req, rc, "the key store is unavailable");
        goto out;
    }
    have_key = rc == CM_OK;
    /* The secret is checked before anything about the key or tenant is revealed; unknown,
     * wrong, revoked and expired keys all get the same answer. */
    user_sha256_hex(secret, hash);
    ok = have_key && sodium_memcmp(hash, cm_bson_str(&kd, "secret_sha256", "x"), 64) == 0 &&
         key_usable(&kd, now);
    sodium_memzero(secret, sizeof(secret));
    if (!ok) {
        user_limit_failed(ctx, USER_LIMIT_TOKEN, NULL, key);
        cm_http_add_header(req, "WWW-Authenticate", "Basic realm=\"tenant\"");
        cm_http_reply_error(req, CM_EUNAUTH, "invalid API key or secret");
        rc = CM_EUNAUTH;
        goto out;
    }
    bson_reinit(&f);
    BSON_APPEND_UTF8(&f, "_id", cm_bson_str(&kd, "tenant", ""));
    rc = cm_mongo_find_one(ctx->db, USER_COLL_TENANTS, &f, NULL, tenant_out);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc == CM_ENOTFOUND ? CM_EUNAUTH : rc,
                            rc == CM_ENOTFOUND ? "invalid API key or secret" : NULL);
        goto out;
    }
    if (strcmp(cm_bson_str(tenant_out, "status", ""), "active") != 0) {
        bson_destroy(tenant_out);
        cm_http_reply_error(req, CM_EFORBIDDEN, "the tenant is suspended");
        rc = CM_EFORBIDDEN;
        goto out;
    }
    /* Shown in the key list; at most once a minute per key so busy backends cost no writes. */
    if (now - cm_bson_int(&kd, "last_used_at", 0) > 60000) {
        bson_reinit(&f);
        BSON_APPEND_UTF8(&f, "_id", key);
        BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
        BSON_APPEND_DATE_TIME(&set, "last_used_at", now);
        bson_append_document_end(&u, &set);
        cm_mongo_update(ctx->db, USER_COLL_API_KEYS, &f, &u, 0, 0, NULL);
    }
    rc = CM_OK;
out:
    if (have_key)
        bson_destroy(&kd);
    bson_destroy(&f);
    bson_destroy(&u);
    return rc;
}
