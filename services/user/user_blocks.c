/* user_blocks.c - blocking: PUT and DELETE /v1/users/me/blocks/{id}, GET /v1/users/me/blocks.
 * A block is kept here ({_id: "<tenant>/<blocker>/<blocked>"}) and announced on the users topic
 * (user.blocked, user.unblocked), from which the messaging service keeps its own copy: a
 * blocked user cannot open a direct conversation with the blocker, nor message them there. */
#include <stdio.h>
#include <string.h>

#include "common/auth.h"
#include "common/clock.h"
#include "user.h"

#define BLOCKS_MAX 1000 /* per user */

static void block_key(const char *tenant, const char *blocker, const char *blocked, char *out,
                      size_t n)
{
    snprintf(out, n, "%s/%s/%s", tenant, blocker, blocked);
}

static void publish(user_ctx *ctx, const char *type, const char *tenant, const char *blocker,
                    const char *blocked)
{
    cJSON *data = cJSON_CreateObject();
    cJSON_AddStringToObject(data, "user_id", blocker);
    cJSON_AddStringToObject(data, "blocked_id", blocked);
    cJSON_AddStringToObject(data, "tenant_id", tenant);
    user_publish(ctx, type, tenant, blocker, data);
}

/* PUT /v1/users/me/blocks/{id}: idempotent; the blocked user must exist in the tenant. */
void user_blocks_put(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    const char *id = cm_http_param(req, "id");
    char key[3 * CM_JWT_ID_MAX + 3];
    cm_jwt_claims c;
    bson_t target, d = BSON_INITIALIZER, f = BSON_INITIALIZER;
    int64_t n = 0;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (strcmp(id, c.sub) == 0) {
        cm_http_reply_error(req, CM_EINVAL, "you cannot block yourself");
        goto out;
    }
    rc = user_load(ctx, c.tid, id, &target);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "no such user" : NULL);
        goto out;
    }
    bson_destroy(&target);
    BSON_APPEND_UTF8(&f, "tenant", c.tid);
    BSON_APPEND_UTF8(&f, "blocker", c.sub);
    rc = cm_mongo_count(ctx->db, USER_COLL_BLOCKS, &f, &n);
    if (rc == CM_OK && n >= BLOCKS_MAX) {
        cm_http_reply_error(req, CM_ECONFLICT, "you have blocked the most users allowed (1000)");
        goto out;
    }
    block_key(c.tid, c.sub, id, key, sizeof(key));
    BSON_APPEND_UTF8(&d, "_id", key);
    BSON_APPEND_UTF8(&d, "tenant", c.tid);
    BSON_APPEND_UTF8(&d, "blocker", c.sub);
    BSON_APPEND_UTF8(&d, "blocked", id);
    BSON_APPEND_DATE_TIME(&d, "created_at", cm_clock_now_ms());
    if (rc == CM_OK)
        rc = cm_mongo_insert(ctx->db, USER_COLL_BLOCKS, &d);
    if (rc == CM_ECONFLICT) { /* already blocked: same answer, and the event again (harmless) */
        rc = CM_OK;
    }
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, NULL);
        goto out;
    }
    publish(ctx, "user.blocked", c.tid, c.sub, id);
    cm_http_reply_json(req, 204, NULL);
out:
    bson_destroy(&d);
    bson_destroy(&f);
}

/* DELETE /v1/users/me/blocks/{id} */
void user_blocks_delete(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    const char *id = cm_http_param(req, "id");
    char key[3 * CM_JWT_ID_MAX + 3];
    cm_jwt_claims c;
    bson_t f = BSON_INITIALIZER;
    int64_t n = 0;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    block_key(c.tid, c.sub, id, key, sizeof(key));
    BSON_APPEND_UTF8(&f, "_id", key);
    rc = cm_mongo_delete(ctx->db, USER_COLL_BLOCKS, &f, 0, &n);
    if (rc == CM_OK && n == 0)
        rc = CM_ENOTFOUND;
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "that user is not blocked" : NULL);
        goto out;
    }
    publish(ctx, "user.unblocked", c.tid, c.sub, id);
    cm_http_reply_json(req, 204, NULL);
out:
    bson_destroy(&f);
}

static cJSON *block_json(const bson_t *doc, void *ud)
{
    char ts[CM_RFC3339_LEN];
    cJSON *b = cJSON_CreateObject();

    (void)ud;
    cJSON_AddStringToObject(b, "user_id", cm_bson_str(doc, "blocked", ""));
    cm_clock_rfc3339(cm_bson_int(doc, "created_at", 0), ts);
    cJSON_AddStringToObject(b, "created_at", ts);
    return b;
}

/* GET /v1/users/me/blocks: the users the caller blocked, by user id; cursor = last user id. */
void user_blocks_list(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    char prefix[2 * CM_JWT_ID_MAX + 3];
    cm_jwt_claims c;
    bson_t f = BSON_INITIALIZER;

    if (cm_auth_bearer(req, ctx->verifier, &c) == CM_OK) {
        BSON_APPEND_UTF8(&f, "tenant", c.tid);
        BSON_APPEND_UTF8(&f, "blocker", c.sub);
        snprintf(prefix, sizeof(prefix), "%s/%s/", c.tid, c.sub);
        user_reply_key_page(req, ctx, USER_COLL_BLOCKS, &f, prefix, "blocked", 50, 200, block_json);
    }
    bson_destroy(&f);
}
