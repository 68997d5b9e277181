/* user_passwords.c - self-service credentials: e-mail verification
 * (POST /v1/auth/verify-email/request, POST /v1/auth/verify-email), password change
 * (POST /v1/auth/password/change), forgotten password (POST /v1/auth/password/forgot,
 * POST /v1/auth/password/reset).
 *
 * The tokens to be mailed are single-use and expiring: "ev_" or "pr_" and 256 random bits,
 * stored as SHA-256 in onetime_tokens, spent like refresh tokens (an insert into spent_tokens
 * guarded by its unique _id), and handed to the notification service on the users topic
 * (user.verification_requested, user.password_reset_requested), which mails them. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "common/uuid.h"
#include "user.h"

#define TOKEN_LEN (3 + 64)
_Static_assert(USER_HASH_MAX == crypto_pwhash_STRBYTES, "USER_HASH_MAX is the argon2 string size");
#define FORGOT_MIN_MS 250 /* every forgot answer takes at least this long (no enumeration) */

cm_err user_password_hash(const char *password, char out[USER_HASH_MAX])
{
    /* argon2id with libsodium's interactive limits (t=2, 64 MiB): above OWASP's minimum. */
    if (crypto_pwhash_str(out, password, strlen(password), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                          crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0)
        return CM_EAGAIN; /* out of memory for the 64 MiB */
    return CM_OK;
}

/* Issues a single-use token of `kind` and publishes `event` carrying it to `email`. */
static cm_err onetime_send(user_ctx *ctx, const char *kind, const char *event, const char *tenant,
                           const char *user_id, const char *email, long ttl_s)
{
    char token[TOKEN_LEN + 1], hash[65], ts[CM_RFC3339_LEN];
    bson_t d = BSON_INITIALIZER;
    int64_t now = cm_clock_now_ms();
    cJSON *data;
    cm_err rc;

    memcpy(token, strcmp(kind, "verify_email") == 0 ? "ev_" : "pr_", 3);
    if (cm_random_hex(token + 3, 32) != CM_OK)
        return CM_EINTERNAL;
    user_sha256_hex(token, hash);
    BSON_APPEND_UTF8(&d, "_id", hash);
    BSON_APPEND_UTF8(&d, "kind", kind);
    BSON_APPEND_UTF8(&d, "tenant", tenant);
    BSON_APPEND_UTF8(&d, "user_id", user_id);
    BSON_APPEND_UTF8(&d, "email", email);
    BSON_APPEND_DATE_TIME(&d, "created_at", now);
    BSON_APPEND_DATE_TIME(&d, "expires_at", now + ttl_s * 1000);
    rc = cm_mongo_insert(ctx->db, USER_COLL_ONETIME, &d);
    bson_destroy(&d);
    if (rc != CM_OK)
        return rc;
    cm_clock_rfc3339(now + ttl_s * 1000, ts);
    data = cJSON_CreateObject();
    cJSON_AddStringToObject(data, "user_id", user_id);
    cJSON_AddStringToObject(data, "tenant_id", tenant);
    cJSON_AddStringToObject(data, "email", email);
    cJSON_AddStringToObject(data, "token", token);
    cJSON_AddStringToObject(data, "expires_at", ts);
    user_publish(ctx, event, tenant, user_id, data);
    sodium_memzero(token, sizeof(token));
    return CM_OK;
}

cm_err user_verification_send(user_ctx *ctx, const char *tenant, const char *user_id,
                              const char *email)
{
    return onetime_send(ctx, "verify_email", "user.verification_requested", tenant, user_id,
                        email, ctx->verify_ttl_s);
}

/* Spends a token of `kind` and loads its record into `out`. CM_EINVAL for an unknown, used,
 * expired or other-kind token alike. */
static cm_err onetime_spend(user_ctx *ctx, const char *kind, const char *token, bson_t *out)
{
    char hash[65];
    bson_t f = BSON_INITIALIZER, use = BSON_INITIALIZER;
    int64_t now = cm_clock_now_ms();
    cm_err rc;

    user_sha256_hex(token, hash);
    BSON_APPEND_UTF8(&f, "_id", hash);
    BSON_APPEND_UTF8(&f, "kind", kind);
    rc = cm_mongo_find_one(ctx->db, USER_COLL_ONETIME, &f, NULL, out);
    if (rc != CM_OK)
        goto out;
    if (cm_bson_int(out, "expires_at", 0) <= now) {
        bson_destroy(out);
        rc = CM_ENOTFOUND;
        goto out;
    }
    BSON_APPEND_UTF8(&use, "_id", hash);
    BSON_APPEND_DATE_TIME(&use, "used_at", now);
    rc = cm_mongo_insert(ctx->db, USER_COLL_SPENT, &use);
    if (rc != CM_OK)
        bson_destroy(out);
out:
    bson_destroy(&f);
    bson_destroy(&use);
    return rc == CM_ENOTFOUND || rc == CM_ECONFLICT ? CM_EINVAL : rc;
}

static void reply_spend_error(cm_http_req *req, cm_err rc)
{
    cm_http_reply_error(req, rc, rc == CM_EINVAL ? "the token is invalid, expired or already used"
                                                 : NULL);
}

/* Sets the password hash of the credential of user `uid` (which must exist). */
static cm_err set_password(user_ctx *ctx, const char *tenant, const char *uid, const char *hash)
{
    bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, set;
    int64_t matched = 0;
    cm_err rc;

    BSON_APPEND_UTF8(&f, "tenant", tenant);
    BSON_APPEND_UTF8(&f, "user_id", uid);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_UTF8(&set, "password_hash", hash);
    BSON_APPEND_DATE_TIME(&set, "changed_at", cm_clock_now_ms());
    bson_append_document_end(&u, &set);
    rc = cm_mongo_update(ctx->db, USER_COLL_CREDENTIALS, &f, &u, 0, 0, &matched);
    bson_destroy(&f);
    bson_destroy(&u);
    return rc == CM_OK && matched == 0 ? CM_ENOTFOUND : rc;
}

/* POST /v1/auth/verify-email/request: mails (again) a verification token for the caller's
 * address. */
void user_verify_request(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    cm_jwt_claims c;
    bson_t user;
    const char *email;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        return;
    if (user_limit_check(req, ctx, USER_LIMIT_MAIL, c.tid, c.sub) != CM_OK)
        return;
    rc = user_load(ctx, c.tid, c.sub, &user);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "the user no longer exists" : NULL);
        return;
    }
    email = cm_bson_str(&user, "email", NULL);
    if (email == NULL || cm_bson_bool(&user, "email_verified", 0)) {
        cm_http_reply_error(req, CM_ECONFLICT, email ? "the e-mail address is already verified"
                                                     : "the account has no e-mail address");
    } else {
        rc = user_verification_send(ctx, c.tid, c.sub, email);
        if (rc != CM_OK)
            cm_http_reply_error(req, rc, NULL);
        else
            cm_http_reply_json(req, 202, cJSON_CreateObject());
    }
    bson_destroy(&user);
}

/* POST /v1/auth/verify-email {token}: the link's token proves the address. */
void user_verify_confirm(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    static const char *const allowed[] = {"token", NULL};
    const char *token = NULL;
    char detail[256];
    bson_t rec, f = BSON_INITIALIZER, u = BSON_INITIALIZER, set, after;
    cJSON *body;
    cm_err rc;

    if (cm_http_json_body(req, &body) != CM_OK)
        goto out;
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_string(body, "token", 1, 1, 128, &token, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    rc = onetime_spend(ctx, "verify_email", token, &rec);
    if (rc != CM_OK) {
        reply_spend_error(req, rc);
        goto out;
    }
    /* Only the address the token was sent to: a changed address needs its own token. */
    user_key(cm_bson_str(&rec, "tenant", ""), cm_bson_str(&rec, "user_id", ""), detail,
             sizeof(detail));
    BSON_APPEND_UTF8(&f, "_id", detail);
    BSON_APPEND_UTF8(&f, "email", cm_bson_str(&rec, "email", ""));
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_BOOL(&set, "email_verified", 1);
    BSON_APPEND_DATE_TIME(&set, "updated_at", cm_clock_now_ms());
    bson_append_document_end(&u, &set);
    rc = cm_mongo_find_and_modify(ctx->db, USER_COLL_USERS, &f, NULL, &u, 0, 1, &after);
    bson_destroy(&rec);
    if (rc != CM_OK) {
        reply_spend_error(req, rc == CM_ENOTFOUND ? CM_EINVAL : rc);
        goto out;
    }
    user_publish_user(ctx, "user.updated", &after);
    cm_http_reply_json(req, 200, user_to_json(&after));
    bson_destroy(&after);
out:
    bson_destroy(&f);
    bson_destroy(&u);
}

/* Loads the caller's credential; CM_ENOTFOUND for accounts without a password. */
static cm_err credential_of(user_ctx *ctx, const char *tenant, const char *uid, bson_t *out)
{
    bson_t f = BSON_INITIALIZER;
    cm_err rc;

    BSON_APPEND_UTF8(&f, "tenant", tenant);
    BSON_APPEND_UTF8(&f, "user_id", uid);
    rc = cm_mongo_find_one(ctx->db, USER_COLL_CREDENTIALS, &f, NULL, out);
    bson_destroy(&f);
    return rc;
}

/* POST /v1/auth/password/change {current_password, new_password}: every other session ends. */
void user_password_change(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    static const char *const allowed[] = {"current_password", "new_password", NULL};
    const char *cur = NULL, *next = NULL, *why;
    char detail[256], hash[USER_HASH_MAX];
    cm_jwt_claims c;
    bson_t cred;
    cJSON *body;
    int ok;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK || cm_http_json_body(req, &body) != CM_OK)
        return;
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_string(body, "current_password", 1, 0, 1024, &cur, detail, sizeof(detail)) ||
        cm_json_string(body, "new_password", 1, 0, 1024, &next, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        return;
    }
    if ((why = user_password_problem(next)) != NULL) {
        cm_http_reply_error(req, CM_EINVAL, why);
        return;
    }
    if (user_limit_check(req, ctx, USER_LIMIT_LOGIN, c.tid, c.sub) != CM_OK)
        return;
    rc = credential_of(ctx, c.tid, c.sub, &cred);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc == CM_ENOTFOUND ? CM_ECONFLICT : rc,
                            rc == CM_ENOTFOUND ? "the account has no password" : NULL);
        return;
    }
    ok = crypto_pwhash_str_verify(cm_bson_str(&cred, "password_hash", ""), cur, strlen(cur)) == 0;
    bson_destroy(&cred);
    if (ok)
        user_limit_succeeded(ctx, USER_LIMIT_LOGIN, c.tid, c.sub);
    if (!ok) {
        user_limit_failed(ctx, USER_LIMIT_LOGIN, c.tid, c.sub);
        cm_http_reply_error(req, CM_EFORBIDDEN, "the current password is wrong");
        return;
    }
    if (strcmp(cur, next) == 0) {
        cm_http_reply_error(req, CM_EINVAL, "the new password must differ from the current one");
        return;
    }
    rc = user_password_hash(next, hash);
    if (rc == CM_OK)
        rc = set_password(ctx, c.tid, c.sub, hash);
    if (rc == CM_OK)
        rc = user_sessions_revoke_all(ctx, c.tid, c.sub, c.sid, "password_changed", NULL);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, NULL);
        return;
    }
    cm_http_reply_json(req, 204, NULL);
}

/* Sleeps until `start_ms` + FORGOT_MIN_MS, so found and unknown accounts answer alike. */
static void pad_until(int64_t start_ms)
{
    int64_t left = start_ms + FORGOT_MIN_MS - cm_clock_now_ms();
    if (left > 0) {
        struct timespec ts = {left / 1000, (long)(left % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* The user id a forgot request names (by username or verified e-mail), if any. */
static int forgot_target(user_ctx *ctx, const char *tenant, const char *username,
                         const char *email, bson_t *user)
{
    char norm[USER_EMAIL_MAX + 1], ck[USER_KEY_MAX];
    bson_t f = BSON_INITIALIZER, cred;
    int found = 0;

    if (username && user_username_normalize(username, norm, sizeof(norm))) {
        user_key(tenant, norm, ck, sizeof(ck));
        BSON_APPEND_UTF8(&f, "_id", ck);
        if (cm_mongo_find_one(ctx->db, USER_COLL_CREDENTIALS, &f, NULL, &cred) == CM_OK) {
            found = user_load(ctx, tenant, cm_bson_str(&cred, "user_id", ""), user) == CM_OK;
            bson_destroy(&cred);
        }
    } else if (email && user_email_normalize(email, norm, sizeof(norm))) {
        BSON_APPEND_UTF8(&f, "tenant", tenant);
        BSON_APPEND_UTF8(&f, "email", norm);
        BSON_APPEND_BOOL(&f, "email_verified", 1);
        found = cm_mongo_find_one(ctx->db, USER_COLL_USERS, &f, NULL, user) == CM_OK;
    }
    bson_destroy(&f);
    return found;
}

/* POST /v1/auth/password/forgot {tenant_id, username | email}: always 202, at the same pace,
 * whether or not such an account exists; a reset token is mailed when it does and has an
 * address. */
void user_password_forgot(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    static const char *const allowed[] = {"tenant_id", "username", "email", NULL};
    const char *username = NULL, *email = NULL, *tenant, *to;
    char detail[256];
    int64_t start = cm_clock_now_ms();
    bson_t t, user;
    cJSON *body;

    if (cm_http_json_body(req, &body) != CM_OK)
        return;
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_string(body, "username", 0, 1, 64, &username, detail, sizeof(detail)) ||
        cm_json_string(body, "email", 0, 1, USER_EMAIL_MAX, &email, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        return;
    }
    if ((username == NULL) == (email == NULL)) {
        cm_http_reply_error(req, CM_EINVAL, "give exactly one of 'username' and 'email'");
        return;
    }
    if (user_body_tenant(req, ctx, body, &t) != CM_OK)
        return;
    tenant = cm_bson_str(&t, "_id", "");
    if (user_limit_check(req, ctx, USER_LIMIT_MAIL, tenant, username ? username : email) != CM_OK)
        goto out;
    if (forgot_target(ctx, tenant, username, email, &user)) {
        to = cm_bson_str(&user, "email", NULL);
        if (to && user_is_active(&user) &&
            onetime_send(ctx, "password_reset", "user.password_reset_requested", tenant,
                         cm_bson_str(&user, "id", ""), to, ctx->reset_ttl_s) != CM_OK)
            cm_warn("password reset for %s/%s not sent", tenant, cm_bson_str(&user, "id", ""));
        bson_destroy(&user);
    }
    pad_until(start);
    cm_http_reply_json(req, 202, cJSON_CreateObject());
out:
    bson_destroy(&t);
}

/* POST /v1/auth/password/reset {token, new_password}: every session of the account ends. */
void user_password_reset(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    static const char *const allowed[] = {"token", "new_password", NULL};
    const char *token = NULL, *next = NULL, *why, *tenant, *uid;
    char detail[256], hash[USER_HASH_MAX], uk[USER_KEY_MAX];
    bson_t rec, f = BSON_INITIALIZER, u = BSON_INITIALIZER, set;
    cJSON *body;
    cm_err rc;

    if (cm_http_json_body(req, &body) != CM_OK)
        goto out;
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_string(body, "token", 1, 1, 128, &token, detail, sizeof(detail)) ||
        cm_json_string(body, "new_password", 1, 0, 1024, &next, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    /* The password is checked before the token is spent, so a refused one costs no token. */
    if ((why = user_password_problem(next)) != NULL) {
        cm_http_reply_error(req, CM_EINVAL, why);
        goto out;
    }
    rc = user_password_hash(next, hash);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, NULL);
        goto out;
    }
    rc = onetime_spend(ctx, "password_reset", token, &rec);
    if (rc != CM_OK) {
        reply_spend_error(req, rc);
        goto out;
    }
    tenant = cm_bson_str(&rec, "tenant", "");
    uid = cm_bson_str(&rec, "user_id", "");
    rc = set_password(ctx, tenant, uid, hash);
    if (rc == CM_OK)
        rc = user_sessions_revoke_all(ctx, tenant, uid, NULL, "password_reset", NULL);
    if (rc == CM_OK) { /* the mail reached its owner: the address works */
        user_key(tenant, uid, uk, sizeof(uk));
        BSON_APPEND_UTF8(&f, "_id", uk);
        BSON_APPEND_UTF8(&f, "email", cm_bson_str(&rec, "email", ""));
        BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
        BSON_APPEND_BOOL(&set, "email_verified", 1);
        bson_append_document_end(&u, &set);
        cm_mongo_update(ctx->db, USER_COLL_USERS, &f, &u, 0, 0, NULL);
    }
    bson_destroy(&rec);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc == CM_ENOTFOUND ? CM_EINVAL : rc,
                            rc == CM_ENOTFOUND ? "the token is invalid, expired or already used"
                                               : NULL);
        goto out;
    }
    cm_http_reply_json(req, 204, NULL);
out:
    sodium_memzero(hash, sizeof(hash));
    bson_destroy(&f);
    bson_destroy(&u);
}
