/* user_sessions.c - sessions and refresh tokens: a session opened at every sign-in,
 * POST /v1/auth/refresh (rotation with reuse detection), POST /v1/auth/logout,
 * GET /v1/sessions, DELETE /v1/sessions/{id}, POST /v1/sessions/revoke-others.
 *
 * A refresh token is opaque ("rt_" and 256 random bits in hex), given once and stored as its
 * SHA-256 (a random 256-bit secret needs no slow hash). Each use rotates it. The use is
 * recorded by inserting its hash into refresh_uses: the unique _id makes a second use of the
 * same token fail atomically (FerretDB has no atomic compare-and-set, an insert guarded by a
 * unique index is), and a second use means the token was copied: the whole session is then
 * revoked (token theft detection, RFC 9700 section 4.14.2).
 *
 * Revoking a session marks it in MongoDB (no more refreshes), puts its sid on the Redis
 * denylist for as long as its access tokens can live (cm_session_deny: every verifier refuses
 * them at once) and publishes session.revoked on the users topic (the socket service closes
 * the session's connections). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "common/session.h"
#include "common/uuid.h"
#include "user.h"

#define REFRESH_PREFIX "rt_"
#define REFRESH_LEN (3 + 64) /* prefix and 32 random bytes in hex */

/* Stores a new refresh token of session `sid` and writes it to `out`. */
static cm_err refresh_issue(user_ctx *ctx, const char *sid, const char *tenant,
                            const char *user_id, char out[REFRESH_LEN + 1])
{
    char hash[65];
    bson_t d = BSON_INITIALIZER;
    int64_t now = cm_clock_now_ms();
    cm_err rc;

    memcpy(out, REFRESH_PREFIX, 3);
    if (cm_random_hex(out + 3, 32) != CM_OK)
        return CM_EINTERNAL;
    user_sha256_hex(out, hash);
    BSON_APPEND_UTF8(&d, "_id", hash);
    BSON_APPEND_UTF8(&d, "sid", sid);
    BSON_APPEND_UTF8(&d, "tenant", tenant);
    BSON_APPEND_UTF8(&d, "user_id", user_id);
    BSON_APPEND_DATE_TIME(&d, "created_at", now);
    BSON_APPEND_DATE_TIME(&d, "expires_at", now + ctx->refresh_ttl_s * 1000);
    rc = cm_mongo_insert(ctx->db, USER_COLL_REFRESH, &d);
    bson_destroy(&d);
    return rc;
}

/* Mints an access token for `user` in session `sid` and answers `status` with the pair. */
static void reply_pair(cm_http_req *req, user_ctx *ctx, int status, const char *tenant,
                       const bson_t *user, const char *sid, const char *refresh)
{
    cm_jwt_claims c;
    char *token = NULL;
    cJSON *out;
    cm_err rc;

    rc = user_claims_build(ctx, tenant, user, sid, &c);
    if (rc == CM_OK)
        rc = cm_jwt_sign(ctx->signer, &c, time(NULL), ctx->token_ttl_s, &token);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the access token could not be signed");
        return;
    }
    out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "access_token", token);
    cJSON_AddStringToObject(out, "token_type", "Bearer");
    cJSON_AddNumberToObject(out, "expires_in", (double)ctx->token_ttl_s);
    cJSON_AddStringToObject(out, "refresh_token", refresh);
    cJSON_AddNumberToObject(out, "refresh_expires_in", (double)ctx->refresh_ttl_s);
    cJSON_AddStringToObject(out, "session_id", sid);
    cJSON_AddItemToObject(out, "user", user_to_json(user));
    cm_http_add_header(req, "Cache-Control", "no-store");
    cm_http_reply_json(req, status, out);
    free(token);
}

void user_session_open(cm_http_req *req, user_ctx *ctx, int status, const char *tenant,
                       const bson_t *user, const char *kind, const char *device_name)
{
    char sid[CM_UUID_STRLEN], refresh[REFRESH_LEN + 1], ua_text[USER_UA_MAX + 1];
    const char *ua = cm_http_header(req, "User-Agent"), *user_id = cm_bson_str(user, "id", "");
    bson_t s = BSON_INITIALIZER;
    int64_t now = cm_clock_now_ms();
    cm_err rc;

    if (cm_uuid_v7(sid) != CM_OK) {
        cm_http_reply_error(req, CM_EINTERNAL, "the random source failed");
        goto out;
    }
    BSON_APPEND_UTF8(&s, "_id", sid);
    BSON_APPEND_UTF8(&s, "tenant", tenant);
    BSON_APPEND_UTF8(&s, "user_id", user_id);
    BSON_APPEND_UTF8(&s, "kind", kind);
    BSON_APPEND_UTF8(&s, "device_name", device_name ? device_name : "");
    /* Stored as sent but capped: it is shown back to the user in the session list. */
    user_printable(ua ? ua : "", ua_text, sizeof(ua_text));
    BSON_APPEND_UTF8(&s, "user_agent", ua_text);
    BSON_APPEND_UTF8(&s, "ip", cm_http_client_ip(req));
    BSON_APPEND_UTF8(&s, "status", "active");
    BSON_APPEND_DATE_TIME(&s, "created_at", now);
    BSON_APPEND_DATE_TIME(&s, "last_active_at", now);
    rc = cm_mongo_insert(ctx->db, USER_COLL_SESSIONS, &s);
    if (rc == CM_OK)
        rc = refresh_issue(ctx, sid, tenant, user_id, refresh);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the session could not be stored");
        goto out;
    }
    reply_pair(req, ctx, status, tenant, user, sid, refresh);
out:
    bson_destroy(&s);
}

static void publish_revoked(user_ctx *ctx, const char *tenant, const char *user_id,
                            const char *sid, const char *reason, int64_t at)
{
    char ts[CM_RFC3339_LEN];
    cJSON *data = cJSON_CreateObject();

    cm_clock_rfc3339(at, ts);
    cJSON_AddStringToObject(data, "session_id", sid);
    cJSON_AddStringToObject(data, "user_id", user_id);
    cJSON_AddStringToObject(data, "tenant_id", tenant);
    cJSON_AddStringToObject(data, "reason", reason);
    cJSON_AddStringToObject(data, "revoked_at", ts);
    user_publish(ctx, "session.revoked", tenant, user_id, data);
}

cm_err user_session_revoke(user_ctx *ctx, const char *tenant, const char *user_id,
                           const char *sid, const char *reason)
{
    bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, set;
    int64_t now = cm_clock_now_ms(), n = 0;
    cm_err rc;

    BSON_APPEND_UTF8(&f, "_id", sid);
    BSON_APPEND_UTF8(&f, "tenant", tenant);
    BSON_APPEND_UTF8(&f, "user_id", user_id);
    BSON_APPEND_UTF8(&f, "status", "active");
    /* Ownership first: nobody may put another user's session on the denylist. */
    rc = cm_mongo_count(ctx->db, USER_COLL_SESSIONS, &f, &n);
    if (rc != CM_OK)
        goto out;
    if (n == 0) {
        rc = CM_ENOTFOUND;
        goto out;
    }
    /* Then the denylist: if Redis is down nothing has changed and the caller can retry. */
    rc = cm_session_deny(ctx->redis, sid, (ctx->token_ttl_s + ctx->leeway_s) * 1000);
    if (rc != CM_OK)
        goto out;
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_UTF8(&set, "status", "revoked");
    BSON_APPEND_UTF8(&set, "revoke_reason", reason);
    BSON_APPEND_DATE_TIME(&set, "revoked_at", now);
    bson_append_document_end(&u, &set);
    rc = cm_mongo_update(ctx->db, USER_COLL_SESSIONS, &f, &u, 0, 0, &n);
    if (rc != CM_OK)
        goto out;
    if (n == 0) { /* revoked concurrently: that request published the event */
        rc = CM_ENOTFOUND;
        goto out;
    }
    cm_info("session %s of %s/%s revoked (%s)", sid, tenant, user_id, reason);
    publish_revoked(ctx, tenant, user_id, sid, reason, now);
out:
    bson_destroy(&f);
    bson_destroy(&u);
    return rc;
}

struct sid_list {
    char (*ids)[CM_UUID_STRLEN];
    int n, cap;
    const char *except;
};

static int collect_sid(const bson_t *doc, void *ud)
{
    struct sid_list *l = ud;
    const char *sid = cm_bson_str(doc, "_id", "");
    if (l->except && strcmp(sid, l->except) == 0)
        return 0;
    if (l->n == l->cap || strlen(sid) >= CM_UUID_STRLEN)
        return l->n == l->cap; /* stop when full: the caller loops */
    snprintf(l->ids[l->n++], CM_UUID_STRLEN, "%s", sid);
    return 0;
}

cm_err user_sessions_revoke_all(user_ctx *ctx, const char *tenant, const char *user_id,
                                const char *except_sid, const char *reason, int *count)
{
    char ids[64][CM_UUID_STRLEN];
    struct sid_list l = {.ids = ids, .cap = 64, .except = except_sid};
    bson_t f = BSON_INITIALIZER;
    cm_err rc = CM_OK;
    int total = 0;

    BSON_APPEND_UTF8(&f, "tenant", tenant);
    BSON_APPEND_UTF8(&f, "user_id", user_id);
    BSON_APPEND_UTF8(&f, "status", "active");
    /* In batches: each revoked session leaves the filter, so the loop ends. */
    do {
        l.n = 0;
        rc = cm_mongo_find(ctx->db, USER_COLL_SESSIONS, &f, NULL, collect_sid, &l);
        for (int i = 0; rc == CM_OK && i < l.n; i++) {
            cm_err r = user_session_revoke(ctx, tenant, user_id, ids[i], reason);
            if (r == CM_OK)
                total++;
            else if (r != CM_ENOTFOUND) /* revoked concurrently: fine */
                rc = r;
        }
    } while (rc == CM_OK && l.n == l.cap);
    bson_destroy(&f);
    if (count)
        *count = total;
    return rc;
}

/* POST /v1/auth/refresh: a refresh token for a new pair; the presented token is spent. */
void user_auth_refresh(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    static const char *const allowed[] = {"refresh_token", NULL};
    char detail[256], hash[65], refresh[REFRESH_LEN + 1], uk[USER_KEY_MAX];
    const char *token = NULL, *sid, *tenant, *user_id;
    bson_t rt, sess, user, f = BSON_INITIALIZER, use = BSON_INITIALIZER;
    bson_t sf = BSON_INITIALIZER, uf = BSON_INITIALIZER, touch = BSON_INITIALIZER, set;
    int have_rt = 0, have_sess = 0, have_user = 0;
    int64_t now = cm_clock_now_ms();
    cJSON *body;
    cm_err rc;

    if (cm_http_json_body(req, &body) != CM_OK)
        goto out;
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_string(body, "refresh_token", 1, 1, 256, &token, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    user_sha256_hex(token, hash);
    BSON_APPEND_UTF8(&f, "_id", hash);
    rc = cm_mongo_find_one(ctx->db, USER_COLL_REFRESH, &f, NULL, &rt);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc == CM_ENOTFOUND ? CM_EUNAUTH : rc,
                            rc == CM_ENOTFOUND ? "the refresh token is not valid" : NULL);
        goto out;
    }
    have_rt = 1;
    sid = cm_bson_str(&rt, "sid", "");
    tenant = cm_bson_str(&rt, "tenant", "");
    user_id = cm_bson_str(&rt, "user_id", "");
    BSON_APPEND_UTF8(&sf, "_id", sid);
    rc = cm_mongo_find_one(ctx->db, USER_COLL_SESSIONS, &sf, NULL, &sess);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc == CM_ENOTFOUND ? CM_EUNAUTH : rc,
                            rc == CM_ENOTFOUND ? "the refresh token is not valid" : NULL);
        goto out;
    }
    have_sess = 1;
    if (strcmp(cm_bson_str(&sess, "status", ""), "active") != 0) {
        cm_http_reply_error(req, CM_EUNAUTH, "the session was revoked");
        goto out;
    }
    /* Spend the token: exactly one request can insert its use. */
    BSON_APPEND_UTF8(&use, "_id", hash);
    BSON_APPEND_UTF8(&use, "sid", sid);
    BSON_APPEND_DATE_TIME(&use, "used_at", now);
    rc = cm_mongo_insert(ctx->db, USER_COLL_REFRESH_USES, &use);
    if (rc == CM_ECONFLICT) {
        cm_warn("refresh token of session %s reused: revoking the session", sid);
        rc = user_session_revoke(ctx, tenant, user_id, sid, "refresh_token_reuse");
        if (rc != CM_OK && rc != CM_ENOTFOUND) {
            cm_http_reply_error(req, rc, "the session could not be revoked; try again");
            goto out;
        }
        cm_http_reply_error(req, CM_EUNAUTH,
                            "the refresh token was already used; the session is revoked");
        goto out;
    }
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, NULL);
        goto out;
    }
    if (cm_bson_int(&rt, "expires_at", 0) <= now) {
        cm_http_reply_error(req, CM_EUNAUTH, "the refresh token expired; sign in again");
        goto out;
    }
    user_key(tenant, user_id, uk, sizeof(uk));
    BSON_APPEND_UTF8(&uf, "_id", uk);
    rc = cm_mongo_find_one(ctx->db, USER_COLL_USERS, &uf, NULL, &user);
    if (rc == CM_OK)
        have_user = 1;
    if (rc == CM_ENOTFOUND || (rc == CM_OK && !user_is_active(&user))) {
        user_session_revoke(ctx, tenant, user_id, sid, "user_inactive");
        cm_http_reply_error(req, CM_EUNAUTH, "the account is not active");
        goto out;
    }
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, NULL);
        goto out;
    }
    rc = refresh_issue(ctx, sid, tenant, user_id, refresh);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the refresh token could not be stored");
        goto out;
    }
    BSON_APPEND_DOCUMENT_BEGIN(&touch, "$set", &set);
    BSON_APPEND_DATE_TIME(&set, "last_active_at", now);
    BSON_APPEND_UTF8(&set, "ip", cm_http_client_ip(req));
    bson_append_document_end(&touch, &set);
    cm_mongo_update(ctx->db, USER_COLL_SESSIONS, &sf, &touch, 0, 0, NULL);
    reply_pair(req, ctx, 200, tenant, &user, sid, refresh);
out:
    if (have_rt)
        bson_destroy(&rt);
    if (have_sess)
        bson_destroy(&sess);
    if (have_user)
        bson_destroy(&user);
    bson_destroy(&f);
    bson_destroy(&use);
    bson_destroy(&sf);
    bson_destroy(&uf);
    bson_destroy(&touch);
}

/* POST /v1/auth/logout: ends the caller's own session. */
void user_auth_logout(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    cm_jwt_claims c;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        return;
    if (c.sid[0] == '\0') {
        cm_http_reply_error(req, CM_EINVAL, "the token belongs to no session");
        return;
    }
    rc = user_session_revoke(ctx, c.tid, c.sub, c.sid, "logout");
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "no such session" : NULL);
        return;
    }
    cm_http_reply_json(req, 204, NULL);
}

struct render_ctx {
    const char *current;
};

static cJSON *session_json(const bson_t *doc, void *ud)
{
    struct render_ctx *rc = ud;
    char ts[CM_RFC3339_LEN];
    cJSON *s = cJSON_CreateObject();
    const char *id = cm_bson_str(doc, "_id", "");

    cJSON_AddStringToObject(s, "id", id);
    cJSON_AddStringToObject(s, "kind", cm_bson_str(doc, "kind", ""));
    cJSON_AddStringToObject(s, "device_name", cm_bson_str(doc, "device_name", ""));
    cJSON_AddStringToObject(s, "user_agent", cm_bson_str(doc, "user_agent", ""));
    cJSON_AddStringToObject(s, "ip", cm_bson_str(doc, "ip", ""));
    cm_clock_rfc3339(cm_bson_int(doc, "created_at", 0), ts);
    cJSON_AddStringToObject(s, "created_at", ts);
    cm_clock_rfc3339(cm_bson_int(doc, "last_active_at", 0), ts);
    cJSON_AddStringToObject(s, "last_active_at", ts);
    cJSON_AddBoolToObject(s, "current", strcmp(id, rc->current) == 0);
    return s;
}

/* GET /v1/sessions: the caller's active sessions, newest first. */
void user_sessions_list(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    cm_jwt_claims c;
    struct render_ctx r;
    bson_t f = BSON_INITIALIZER;

    if (cm_auth_bearer(req, ctx->verifier, &c) == CM_OK) {
        BSON_APPEND_UTF8(&f, "tenant", c.tid);
        BSON_APPEND_UTF8(&f, "user_id", c.sub);
        BSON_APPEND_UTF8(&f, "status", "active");
        r.current = c.sid;
        user_reply_id_page(req, ctx, USER_COLL_SESSIONS, &f, 1, session_json, &r);
    }
    bson_destroy(&f);
}

/* DELETE /v1/sessions/{id}: ends one of the caller's sessions. */
void user_sessions_revoke(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    const char *id = cm_http_param(req, "id");
    cm_jwt_claims c;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        return;
    /* Another user's session, an unknown one and an ended one all look the same. */
    rc = cm_uuid_valid(id) ? user_session_revoke(ctx, c.tid, c.sub, id, "revoked")
                           : CM_ENOTFOUND;
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "no such session" : NULL);
        return;
    }
    cm_http_reply_json(req, 204, NULL);
}

/* POST /v1/sessions/revoke-others: ends every session of the caller but the current one. */
void user_sessions_revoke_others(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    cm_jwt_claims c;
    cJSON *out;
    int n = 0;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        return;
    rc = user_sessions_revoke_all(ctx, c.tid, c.sub, c.sid, "revoked_by_user", &n);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, NULL);
        return;
    }
    out = cJSON_CreateObject();
    cJSON_AddNumberToObject(out, "revoked", n);
    cm_http_reply_json(req, 200, out);
}
