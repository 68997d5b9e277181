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
    static const struct {
        const char *coll, *name, *f1, *f2;
        int unique;
    } idx[] = {
        {USER_COLL_API_KEYS, "tenant", "tenant", NULL, 0},
        {USER_COLL_SESSIONS, "user", "tenant", "user_id", 0},
        {USER_COLL_REFRESH, "sid", "sid", NULL, 0},
    };
    cm_err rc = CM_OK;

    for (size_t i = 0; i < sizeof(idx) / sizeof(idx[0]) && rc == CM_OK; i++) {
        bson_t k = BSON_INITIALIZER;
        BSON_APPEND_INT32(&k, idx[i].f1, 1);
        if (idx[i].f2)
            BSON_APPEND_INT32(&k, idx[i].f2, 1);
        rc = cm_mongo_create_index(ctx->db, idx[i].coll, &k, idx[i].name, idx[i].unique);
        bson_destroy(&k);
    }
    return rc;
}
