/* user_gdpr.c - the data subject's rights (GDPR Art. 17 and 20): erasure of a user, here
 * and, through user.deleted on the users topic, in every service that holds their data. */
#include <string.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/log.h"
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
    /* Sessions end first, so nothing signed for the user works while the rest goes. */
    rc = user_sessions_revoke_all(ctx, tenant, uid, NULL, "user_deleted", NULL);
    if (rc == CM_OK)
        rc = delete_of(ctx, USER_COLL_SESSIONS, "user_id", tenant, uid);
    if (rc == CM_OK)
        rc = delete_of(ctx, USER_COLL_REFRESH, "user_id", tenant, uid);
    if (rc == CM_OK)
        rc = delete_of(ctx, USER_COLL_CREDENTIALS, "user_id", tenant, uid);
    if (rc == CM_OK)
        rc = delete_of(ctx, USER_COLL_ONETIME, "user_id", tenant, uid);
    if (rc == CM_OK)
        rc = delete_of(ctx, USER_COLL_BLOCKS, "blocker", tenant, uid);
    if (rc == CM_OK)
        rc = delete_of(ctx, USER_COLL_BLOCKS, "blocked", tenant, uid);
    if (rc == CM_OK)
        rc = delete_of(ctx, USER_COLL_EXPORTS, "user_id", tenant, uid);
    if (rc == CM_OK)
        rc = delete_of(ctx, USER_COLL_USERS, "id", tenant, uid); /* last: a retry finds it */
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
