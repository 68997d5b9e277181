/* user_auth.c - tokens: POST /v1/auth/token (tenant key), /v1/auth/register, /v1/auth/login. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/event.h"
#include "common/json.h"
#include "common/log.h"
#include "common/uuid.h"
#include "user.h"

/* A real argon2id hash of a random password, verified when the account does not exist so a
 * failed login costs the same either way (no account enumeration by timing). */
static char dummy_hash[crypto_pwhash_STRBYTES];
static pthread_once_t dummy_once = PTHREAD_ONCE_INIT;

static void make_dummy_hash(void)
{
    char pw[33];
    cm_random_hex(pw, 16);
    if (crypto_pwhash_str(dummy_hash, pw, strlen(pw), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                          crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0)
        dummy_hash[0] = '\0';
}

/* Loads a tenant by `filter_key` (with its status unchecked). CM_ENOTFOUND or CM_EIO. */
static cm_err find_tenant(user_ctx *ctx, const char *filter_key, const char *value, bson_t *out)
{
    bson_t f = BSON_INITIALIZER;
    cm_err rc;

    BSON_APPEND_UTF8(&f, filter_key, value);
    rc = cm_mongo_find_one(ctx->db, USER_COLL_TENANTS, &f, NULL, out);
    bson_destroy(&f);
    return rc;
}

/* Loads an active tenant by id. CM_ENOTFOUND, CM_EFORBIDDEN (suspended) or CM_EIO. */
static cm_err load_tenant(user_ctx *ctx, const char *filter_key, const char *value, bson_t *out)
{
    cm_err rc = find_tenant(ctx, filter_key, value, out);

    if (rc != CM_OK)
        return rc;
    if (strcmp(cm_bson_str(out, "status", ""), "active") != 0) {
        bson_destroy(out);
        return CM_EFORBIDDEN;
    }
    return CM_OK;
}

static void publish_user_created(user_ctx *ctx, const char *tenant, const char *user_id,
                                 const char *name, const char *username)
{
    cJSON *data = cJSON_CreateObject();

    cJSON_AddStringToObject(data, "id", user_id);
    cJSON_AddStringToObject(data, "tenant_id", tenant);
    if (name)
        cJSON_AddStringToObject(data, "name", name);
    if (username)
        cJSON_AddStringToObject(data, "username", username);
    user_publish(ctx, "user.created", tenant, user_id, data);
}

/* POST /v1/auth/token: the tenant's backend (HTTP Basic api_key:api_secret) gets a token for
 * user_id, creating the user on first use. */
void user_auth_token(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    static const char *const allowed[] = {"user_id", "name", "device_name", NULL};
    char detail[256], uk[USER_KEY_MAX];
    const char *user_id = NULL, *name = NULL, *device = NULL, *tenant;
    bson_t tenant_doc, user_doc, f = BSON_INITIALIZER, doc = BSON_INITIALIZER;
    int have_tenant = 0, have_user = 0, status = 200;
    cJSON *body;
    cm_err rc;

    if (user_tenant_auth(req, ctx, &tenant_doc) != CM_OK)
        goto out;
    have_tenant = 1;
    tenant = cm_bson_str(&tenant_doc, "_id", "");
    if (cm_http_json_body(req, &body) != CM_OK)
        goto out;
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_string(body, "user_id", 1, 1, USER_ID_MAX, &user_id, detail, sizeof(detail)) ||
        cm_json_string(body, "name", 0, 1, USER_NAME_MAX, &name, detail, sizeof(detail)) ||
        cm_json_string(body, "device_name", 0, 1, USER_DEVICE_NAME_MAX, &device, detail,
                       sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    if (!cm_user_id_valid(user_id)) {
        cm_http_reply_error(req, CM_EINVAL,
                            "field 'user_id' must be 1..64 characters of A-Z a-z 0-9 _ . @ -");
        goto out;
    }
    user_key(tenant, user_id, uk, sizeof(uk));
    BSON_APPEND_UTF8(&f, "_id", uk);
    rc = cm_mongo_find_one(ctx->db, USER_COLL_USERS, &f, NULL, &user_doc);
    if (rc == CM_ENOTFOUND) {
        int64_t now = cm_clock_now_ms();
        BSON_APPEND_UTF8(&doc, "_id", uk);
        BSON_APPEND_UTF8(&doc, "tenant", tenant);
        BSON_APPEND_UTF8(&doc, "id", user_id);
        BSON_APPEND_UTF8(&doc, "name", name ? name : user_id);
        BSON_APPEND_DATE_TIME(&doc, "created_at", now);
        rc = cm_mongo_insert(ctx->db, USER_COLL_USERS, &doc);
        if (rc == CM_OK) {
            status = 201;
            publish_user_created(ctx, tenant, user_id, name ? name : user_id, NULL);
        }
        if (rc == CM_OK || rc == CM_ECONFLICT) /* a concurrent first use created it */
            rc = cm_mongo_find_one(ctx->db, USER_COLL_USERS, &f, NULL, &user_doc);
    }
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the user could not be loaded");
        goto out;
    }
    have_user = 1;
    user_session_open(req, ctx, status, tenant, &user_doc, "server", device);
out:
    if (have_tenant)
        bson_destroy(&tenant_doc);
    if (have_user)
        bson_destroy(&user_doc);
    bson_destroy(&f);
    bson_destroy(&doc);
}

/* Validates the tenant_id field and loads the tenant; answers on failure. */
static cm_err body_tenant(cm_http_req *req, user_ctx *ctx, const cJSON *body, bson_t *tenant_doc)
{
    char detail[256];
    const char *tid = NULL;
    cm_err rc;

    if (cm_json_string(body, "tenant_id", 1, 1, 64, &tid, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        return CM_EINVAL;
    }
    if (!cm_uuid_valid(tid)) {
        cm_http_reply_error(req, CM_EINVAL, "field 'tenant_id' must be a tenant id (a UUID)");
        return CM_EINVAL;
    }
    rc = load_tenant(ctx, "_id", tid, tenant_doc);
    if (rc == CM_ENOTFOUND)
        cm_http_reply_error(req, rc, "no such tenant");
    else if (rc == CM_EFORBIDDEN)
        cm_http_reply_error(req, rc, "the tenant is suspended");
    else if (rc != CM_OK)
        cm_http_reply_error(req, rc, "the tenant store is unavailable");
    return rc;
}

/* POST /v1/auth/register: self-service sign-up where the tenant allows it. */
void user_auth_register(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    static const char *const allowed[] = {"tenant_id", "username", "password", "name",
                                          "device_name", NULL};
    char detail[256], uname[USER_USERNAME_MAX + 1], uid[CM_UUID_STRLEN], uk[200], ck[200];
    char hash[crypto_pwhash_STRBYTES];
    const char *username = NULL, *password = NULL, *name = NULL, *device = NULL, *tenant, *why;
    bson_t tenant_doc, user = BSON_INITIALIZER, cred = BSON_INITIALIZER;
    int have_tenant = 0;
    int64_t now = cm_clock_now_ms();
    cJSON *body;
    cm_err rc;

    if (cm_http_json_body(req, &body) != CM_OK)
        goto out;
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_string(body, "username", 1, 1, 64, &username, detail, sizeof(detail)) ||
        cm_json_string(body, "password", 1, 0, 1024, &password, detail, sizeof(detail)) ||
        cm_json_string(body, "name", 0, 1, USER_NAME_MAX, &name, detail, sizeof(detail)) ||
        cm_json_string(body, "device_name", 0, 1, USER_DEVICE_NAME_MAX, &device, detail,
                       sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    if (!user_username_normalize(username, uname, sizeof(uname))) {
        cm_http_reply_error(req, CM_EINVAL,
                            "field 'username' must be 3..32 characters of a-z 0-9 _ . -");
        goto out;
    }
    if ((why = user_password_problem(password)) != NULL) {
        cm_http_reply_error(req, CM_EINVAL, why);
        goto out;
    }
    if (body_tenant(req, ctx, body, &tenant_doc) != CM_OK)
        goto out;
    have_tenant = 1;
    tenant = cm_bson_str(&tenant_doc, "_id", "");
    if (!cm_bson_bool(&tenant_doc, "settings.self_registration", 0)) {
        cm_http_reply_error(req, CM_EFORBIDDEN, "self-registration is closed for this tenant");
        goto out;
    }
    /* argon2id with libsodium's interactive limits (issue 5 minimum). */
    if (crypto_pwhash_str(hash, password, strlen(password), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                          crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0) {
        cm_http_reply_error(req, CM_EAGAIN, "the password could not be hashed; try again");
        goto out;
    }
    if (cm_uuid_v7(uid) != CM_OK) {
        cm_http_reply_error(req, CM_EINTERNAL, "the random source failed");
        goto out;
    }
    /* The credential's _id is the uniqueness guard for the username within the tenant. */
    snprintf(ck, sizeof(ck), "%s/%s", tenant, uname);
    BSON_APPEND_UTF8(&cred, "_id", ck);
    BSON_APPEND_UTF8(&cred, "tenant", tenant);
    BSON_APPEND_UTF8(&cred, "user_id", uid);
    BSON_APPEND_UTF8(&cred, "password_hash", hash);
    BSON_APPEND_DATE_TIME(&cred, "created_at", now);
    rc = cm_mongo_insert(ctx->db, USER_COLL_CREDENTIALS, &cred);
    if (rc == CM_ECONFLICT) {
        cm_http_reply_error(req, rc, "the username is taken");
        goto out;
    }
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the account could not be stored");
        goto out;
    }
    user_key(tenant, uid, uk, sizeof(uk));
    BSON_APPEND_UTF8(&user, "_id", uk);
    BSON_APPEND_UTF8(&user, "tenant", tenant);
    BSON_APPEND_UTF8(&user, "id", uid);
    BSON_APPEND_UTF8(&user, "username", uname);
    BSON_APPEND_UTF8(&user, "name", name ? name : uname);
    BSON_APPEND_DATE_TIME(&user, "created_at", now);
    rc = cm_mongo_insert(ctx->db, USER_COLL_USERS, &user);
    if (rc != CM_OK) {
        /* Free the username again rather than leave a credential without a user. */
        bson_t cf = BSON_INITIALIZER;
        BSON_APPEND_UTF8(&cf, "_id", ck);
        cm_mongo_delete(ctx->db, USER_COLL_CREDENTIALS, &cf, 0, NULL);
        bson_destroy(&cf);
        cm_http_reply_error(req, rc, "the account could not be stored");
        goto out;
    }
    publish_user_created(ctx, tenant, uid, name ? name : uname, uname);
    user_session_open(req, ctx, 201, tenant, &user, "password", device);
out:
    if (have_tenant)
        bson_destroy(&tenant_doc);
    bson_destroy(&user);
    bson_destroy(&cred);
}

/* POST /v1/auth/login: username and password; every failure looks the same. */
void user_auth_login(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    static const char *const allowed[] = {"tenant_id", "username", "password", "device_name",
                                          NULL};
    char detail[256], uname[USER_USERNAME_MAX + 1], ck[200], uk[200];
    const char *username = NULL, *password = NULL, *device = NULL, *tenant, *hash;
    bson_t tenant_doc, cred, user, f = BSON_INITIALIZER, uf = BSON_INITIALIZER;
    int have_tenant = 0, have_cred = 0, have_user = 0, ok;
    cJSON *body;
    cm_err rc;

    pthread_once(&dummy_once, make_dummy_hash);
    if (cm_http_json_body(req, &body) != CM_OK)
        goto out;
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_string(body, "username", 1, 1, 64, &username, detail, sizeof(detail)) ||
        cm_json_string(body, "password", 1, 0, 1024, &password, detail, sizeof(detail)) ||
        cm_json_string(body, "device_name", 0, 1, USER_DEVICE_NAME_MAX, &device, detail,
                       sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    if (body_tenant(req, ctx, body, &tenant_doc) != CM_OK)
        goto out;
    have_tenant = 1;
    tenant = cm_bson_str(&tenant_doc, "_id", "");
    if (user_username_normalize(username, uname, sizeof(uname))) {
        snprintf(ck, sizeof(ck), "%s/%s", tenant, uname);
        BSON_APPEND_UTF8(&f, "_id", ck);
        rc = cm_mongo_find_one(ctx->db, USER_COLL_CREDENTIALS, &f, NULL, &cred);
        if (rc != CM_OK && rc != CM_ENOTFOUND) {
            cm_http_reply_error(req, rc, "the account store is unavailable");
            goto out;
        }
        have_cred = rc == CM_OK;
    }
    hash = have_cred ? cm_bson_str(&cred, "password_hash", dummy_hash) : dummy_hash;
    ok = crypto_pwhash_str_verify(hash, password, strlen(password)) == 0 && have_cred;
    if (!ok) {
        cm_http_reply_error(req, CM_EUNAUTH, "invalid username or password");
        goto out;
    }
    user_key(tenant, cm_bson_str(&cred, "user_id", ""), uk, sizeof(uk));
    BSON_APPEND_UTF8(&uf, "_id", uk);
    rc = cm_mongo_find_one(ctx->db, USER_COLL_USERS, &uf, NULL, &user);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc == CM_ENOTFOUND ? CM_EUNAUTH : rc,
                            rc == CM_ENOTFOUND ? "invalid username or password"
                                               : "the account store is unavailable");
        goto out;
    }
    have_user = 1;
    user_session_open(req, ctx, 200, tenant, &user, "password", device);
out:
    if (have_tenant)
        bson_destroy(&tenant_doc);
    if (have_cred)
        bson_destroy(&cred);
    if (have_user)
        bson_destroy(&user);
    bson_destroy(&f);
    bson_destroy(&uf);
}
