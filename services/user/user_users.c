/* user_users.c - users: GET /v1/users/me, and the User representation. */
#include <stdio.h>

#include "common/auth.h"
#include "common/clock.h"
#include "user.h"

cJSON *user_to_json(const bson_t *doc)
{
    char ts[CM_RFC3339_LEN];
    cJSON *u = cJSON_CreateObject();
    const char *username = cm_bson_str(doc, "username", NULL);

    cJSON_AddStringToObject(u, "id", cm_bson_str(doc, "id", ""));
    cJSON_AddStringToObject(u, "tenant_id", cm_bson_str(doc, "tenant", ""));
    cJSON_AddStringToObject(u, "name", cm_bson_str(doc, "name", ""));
    if (username)
        cJSON_AddStringToObject(u, "username", username);
    cm_clock_rfc3339(cm_bson_int(doc, "created_at", 0), ts);
    cJSON_AddStringToObject(u, "created_at", ts);
    return u;
}

/* GET /v1/users/me */
void user_users_me(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    cm_jwt_claims c;
    char key[2 * CM_JWT_ID_MAX + 2];
    bson_t f = BSON_INITIALIZER, doc;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    snprintf(key, sizeof(key), "%s/%s", c.tid, c.sub);
    BSON_APPEND_UTF8(&f, "_id", key);
    rc = cm_mongo_find_one(ctx->db, USER_COLL_USERS, &f, NULL, &doc);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "the user no longer exists" : NULL);
        goto out;
    }
    cm_http_reply_json(req, 200, user_to_json(&doc));
    bson_destroy(&doc);
out:
    bson_destroy(&f);
}

cm_err user_ensure_indexes(user_ctx *ctx)
{
    bson_t k = BSON_INITIALIZER;
    cm_err rc;

    BSON_APPEND_INT32(&k, "api_key", 1);
    rc = cm_mongo_create_index(ctx->db, USER_COLL_TENANTS, &k, "api_key_unique", 1);
    bson_destroy(&k);
    return rc;
}
