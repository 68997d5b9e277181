/* user_auth.c - signing in: POST /v1/auth/token (the tenant's backend, HTTP Basic),
 * POST /v1/auth/register and POST /v1/auth/login (end users with a password). Each opens a
 * session (user_sessions.c). Login answers every failure alike, at the same cost (a real
 * argon2id verification against a dummy hash when the account does not exist), and is
 * rate-limited per address and per submitted username (user_limits.c). */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "common/auth.h"
#include "common/clock.h"
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
    if (cm_random_hex(pw, 16) != CM_OK || user_password_hash(pw, dummy_hash) != CM_OK)
        dummy_hash[0] = '\0';
}

/* POST /v1/auth/token: the tenant's backend gets a token for user_id, creating the user on
 * first use. */
void user_auth_token(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    static const char *const allowed[] = {"user_id", "name", "device_name", NULL};
    char detail[256];
    const char *user_id = NULL, *name = NULL, *device = NULL, *tenant;
    bson_t tenant_doc, user_doc, doc = BSON_INITIALIZER;
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
    rc = user_load(ctx, tenant, user_id, &user_doc);
    if (rc == CM_ENOTFOUND) {
        user_doc_init(&doc, tenant, user_id, name ? name : user_id, NULL, NULL, cm_clock_now_ms());
        rc = cm_mongo_insert(ctx->db, USER_COLL_USERS, &doc);
        if (rc == CM_OK)
            status = 201;
        if (rc == CM_OK || rc == CM_ECONFLICT) /* a concurrent first use created it */
            rc = user_load(ctx, tenant, user_id, &user_doc);
        if (rc == CM_OK && status == 201)
            user_publish_user(ctx, "user.created", &user_doc);
    }
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the user could not be loaded");
        goto out;
    }
    have_user = 1;
    if (!user_is_active(&user_doc)) {
        cm_http_reply_error(req, CM_EFORBIDDEN, "the user is deactivated");
        goto out;
    }
    user_session_open(req, ctx, status, tenant, &user_doc, "server", device);
out:
    if (have_tenant)
        bson_destroy(&tenant_doc);
    if (have_user)
        bson_destroy(&user_doc);
    bson_destroy(&doc);
}

cm_err user_body_tenant(cm_http_req *req, user_ctx *ctx, const cJSON *body, bson_t *out)
{
    char detail[256];
    const char *tid = NULL;
    bson_t f = BSON_INITIALIZER;
    cm_err rc;

    if (cm_json_string(body, "tenant_id", 1, 1, 64, &tid, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        return CM_EINVAL;
    }
    if (!cm_uuid_valid(tid)) {
        cm_http_reply_error(req, CM_EINVAL, "field 'tenant_id' must be a tenant id (a UUID)");
        return CM_EINVAL;
    }
    BSON_APPEND_UTF8(&f, "_id", tid);
    rc = cm_mongo_find_one(ctx->db, USER_COLL_TENANTS, &f, NULL, out);
    bson_destroy(&f);
    if (rc == CM_OK && strcmp(cm_bson_str(out, "status", ""), "active") != 0) {
        bson_destroy(out);
        rc = CM_EFORBIDDEN;
    }
    if (rc == CM_ENOTFOUND)
        cm_http_reply_error(req, rc, "no such tenant");
    else if (rc == CM_EFORBIDDEN)
        cm_http_reply_error(req, rc, "the tenant is suspended");
    else if (rc != CM_OK)
        cm_http_reply_error(req, rc, "the tenant store is unavailable");
    return rc;
}

/* POST /v1/auth/register: self-service sign-up where the tenant allows it. With an e-mail
 * address, a verification token is mailed (user.verification_requested). */
void user_auth_register(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    static const char *const allowed[] = {"tenant_id", "username", "password", "name",
                                          "email",     "device_name", NULL};
    char detail[256], uname[USER_USERNAME_MAX + 1], uid[CM_UUID_STRLEN], ck[USER_KEY_MAX];
    char hash[USER_HASH_MAX], email_norm[USER_EMAIL_MAX + 1];
    const char *username = NULL, *password = NULL, *name = NULL, *device = NULL, *email = NULL;
    const char *tenant, *why;
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
        cm_json_string(body, "email", 0, 3, USER_EMAIL_MAX, &email, detail, sizeof(detail)) ||
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
    if (email && !user_email_normalize(email, email_norm, sizeof(email_norm))) {
        cm_http_reply_error(req, CM_EINVAL, "field 'email' must be an e-mail address");
        goto out;
    }
    if ((why = user_password_problem(password)) != NULL) {
        cm_http_reply_error(req, CM_EINVAL, why);
        goto out;
    }
    if (user_body_tenant(req, ctx, body, &tenant_doc) != CM_OK)
        goto out;
    have_tenant = 1;
    tenant = cm_bson_str(&tenant_doc, "_id", "");
    if (!cm_bson_bool(&tenant_doc, "settings.self_registration", 0)) {
        cm_http_reply_error(req, CM_EFORBIDDEN, "self-registration is closed for this tenant");
        goto out;
    }
    rc = user_password_hash(password, hash);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the password could not be hashed; try again");
        goto out;
    }
    if (cm_uuid_v7(uid) != CM_OK) {
        cm_http_reply_error(req, CM_EINTERNAL, "the random source failed");
        goto out;
    }
    /* The credential's _id is the uniqueness guard for the username within the tenant. */
    user_key(tenant, uname, ck, sizeof(ck));
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
    user_doc_init(&user, tenant, uid, name ? name : uname, uname, email ? email_norm : NULL, now);
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
    user_publish_user(ctx, "user.created", &user);
    if (email && user_verification_send(ctx, tenant, uid, email_norm) != CM_OK)
        cm_warn("verification mail for %s/%s not requested; the user can ask again", tenant, uid);
    user_session_open(req, ctx, 201, tenant, &user, "password", device);
out:
    sodium_memzero(hash, sizeof(hash));
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
    char detail[256], uname[USER_USERNAME_MAX + 1], ck[USER_KEY_MAX];
    const char *username = NULL, *password = NULL, *device = NULL, *tenant, *hash;
    bson_t tenant_doc, cred, user, f = BSON_INITIALIZER;
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
    if (user_body_tenant(req, ctx, body, &tenant_doc) != CM_OK)
        goto out;
    have_tenant = 1;
    tenant = cm_bson_str(&tenant_doc, "_id", "");
    /* Limited by the name as submitted, so unknown accounts slow down exactly like real ones. */
    if (user_limit_check(req, ctx, USER_LIMIT_LOGIN, tenant, username) != CM_OK)
        goto out;
    if (user_username_normalize(username, uname, sizeof(uname))) {
        user_key(tenant, uname, ck, sizeof(ck));
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
    if (ok)
        ok = user_load(ctx, tenant, cm_bson_str(&cred, "user_id", ""), &user) == CM_OK;
    have_user = ok;
    if (!ok) {
        user_limit_failed(ctx, USER_LIMIT_LOGIN, tenant, username);
        cm_http_reply_error(req, CM_EUNAUTH, "invalid username or password");
        goto out;
    }
    user_limit_succeeded(ctx, USER_LIMIT_LOGIN, tenant, username);
    if (!user_is_active(&user)) { /* only said to whoever knows the password */
        cm_http_reply_error(req, CM_EFORBIDDEN, "the account is deactivated");
        goto out;
    }
    user_session_open(req, ctx, 200, tenant, &user, "password", device);
out:
    if (have_tenant)
        bson_destroy(&tenant_doc);
    if (have_cred)
        bson_destroy(&cred);
    if (have_user)
        bson_destroy(&user);
    bson_destroy(&f);
}
