/* user_users.c - users: the profile (GET and PATCH /v1/users/me), other users of the tenant
 * (GET /v1/users/{id}, GET /v1/users?q= prefix search honouring `discoverable`), and the
 * tenant backend's server-side management (HTTP Basic api_key:api_secret): PUT, GET and
 * DELETE /v1/server/users/{id}, POST /v1/server/users/{id}/deactivate and /reactivate.
 *
 * A user document: {_id: "<tenant>/<id>", tenant, id, name, username?, email?,
 * email_verified, avatar_media_id?, metadata_json, roles[], discoverable, status (active |
 * deactivated), search_keys[], created_at, updated_at}. Custom metadata is kept as a JSON string
 * so client keys never become MongoDB field names. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "common/utf8.h"
#include "common/uuid.h"
#include "user.h"

/* --- representation -------------------------------------------------------------------------- */

static void add_metadata(cJSON *u, const bson_t *doc)
{
    const char *m = cm_bson_str(doc, "metadata_json", "{}");
    cJSON *parsed = cJSON_Parse(m);
    cJSON_AddItemToObject(u, "metadata", parsed ? parsed : cJSON_CreateObject());
}

static void add_optional(cJSON *u, const bson_t *doc, const char *field)
{
    const char *v = cm_bson_str(doc, field, NULL);
    if (v)
        cJSON_AddStringToObject(u, field, v);
    else
        cJSON_AddNullToObject(u, field);
}

/* What any user of the tenant may see of another. */
static cJSON *public_json(const bson_t *doc, void *ud)
{
    char ts[CM_RFC3339_LEN];
    cJSON *u = cJSON_CreateObject();
    const char *username = cm_bson_str(doc, "username", NULL);

    (void)ud;
    cJSON_AddStringToObject(u, "id", cm_bson_str(doc, "id", ""));
    cJSON_AddStringToObject(u, "tenant_id", cm_bson_str(doc, "tenant", ""));
    cJSON_AddStringToObject(u, "name", cm_bson_str(doc, "name", ""));
    if (username)
        cJSON_AddStringToObject(u, "username", username);
    add_optional(u, doc, "avatar_media_id");
    add_metadata(u, doc);
    cJSON_AddStringToObject(u, "status", cm_bson_str(doc, "status", "active"));
    cm_clock_rfc3339(cm_bson_int(doc, "created_at", 0), ts);
    cJSON_AddStringToObject(u, "created_at", ts);
    return u;
}

cJSON *user_to_json(const bson_t *doc)
{
    char ts[CM_RFC3339_LEN];
    cJSON *u = public_json(doc, NULL), *roles;
    bson_iter_t it, arr;

    add_optional(u, doc, "email");
    cJSON_AddBoolToObject(u, "email_verified", cm_bson_bool(doc, "email_verified", 0));
    roles = cJSON_AddArrayToObject(u, "roles");
    if (bson_iter_init_find(&it, doc, "roles") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr))
        while (bson_iter_next(&arr))
            if (BSON_ITER_HOLDS_UTF8(&arr))
                cJSON_AddItemToArray(roles, cJSON_CreateString(bson_iter_utf8(&arr, NULL)));
    if (cJSON_GetArraySize(roles) == 0)
        cJSON_AddItemToArray(roles, cJSON_CreateString("member"));
    cJSON_AddBoolToObject(u, "discoverable", cm_bson_bool(doc, "discoverable", 1));
    cm_clock_rfc3339(cm_bson_int(doc, "updated_at", cm_bson_int(doc, "created_at", 0)), ts);
    cJSON_AddStringToObject(u, "updated_at", ts);
    return u;
}

/* --- storage --------------------------------------------------------------------------------- */

static void append_search_keys(bson_t *parent, const char *name, const char *username)
{
    char keys[USER_SEARCH_KEYS_MAX][65], idx[16];
    int n = user_search_keys(name, username, keys);
    bson_t arr;

    BSON_APPEND_ARRAY_BEGIN(parent, "search_keys", &arr);
    for (int i = 0; i < n; i++) {
        snprintf(idx, sizeof(idx), "%d", i);
        BSON_APPEND_UTF8(&arr, idx, keys[i]);
    }
    bson_append_array_end(parent, &arr);
}

void user_doc_init(bson_t *doc, const char *tenant, const char *id, const char *name,
                   const char *username, const char *email, int64_t now)
{
    char uk[USER_KEY_MAX];

    user_key(tenant, id, uk, sizeof(uk));
    BSON_APPEND_UTF8(doc, "_id", uk);
    BSON_APPEND_UTF8(doc, "tenant", tenant);
    BSON_APPEND_UTF8(doc, "id", id);
    BSON_APPEND_UTF8(doc, "name", name);
    if (username)
        BSON_APPEND_UTF8(doc, "username", username);
    if (email)
        BSON_APPEND_UTF8(doc, "email", email);
    BSON_APPEND_BOOL(doc, "email_verified", 0);
    BSON_APPEND_UTF8(doc, "metadata_json", "{}");
    BSON_APPEND_BOOL(doc, "discoverable", 1);
    BSON_APPEND_UTF8(doc, "status", "active");
    append_search_keys(doc, name, username);
    BSON_APPEND_DATE_TIME(doc, "created_at", now);
    BSON_APPEND_DATE_TIME(doc, "updated_at", now);
}

cm_err user_load(user_ctx *ctx, const char *tenant, const char *id, bson_t *out)
{
    char uk[USER_KEY_MAX];
    bson_t f = BSON_INITIALIZER;
    cm_err rc;

    if (!cm_user_id_valid(id)) /* self-registered ids are UUIDs, which the rule admits */
        return CM_ENOTFOUND;
    user_key(tenant, id, uk, sizeof(uk));
    BSON_APPEND_UTF8(&f, "_id", uk);
    rc = cm_mongo_find_one(ctx->db, USER_COLL_USERS, &f, NULL, out);
    bson_destroy(&f);
    return rc;
}

void user_publish_user(user_ctx *ctx, const char *type, const bson_t *doc)
{
    cJSON *data = public_json(doc, NULL);
    /* The search service lists only discoverable users in GET /v1/search/users. */
    cJSON_AddBoolToObject(data, "discoverable", cm_bson_bool(doc, "discoverable", 1));
    user_publish(ctx, type, cm_bson_str(doc, "tenant", ""), cm_bson_str(doc, "id", ""), data);
}

/* The profile fields a body may set. `server` adds what only the tenant's backend may set
 * (roles, e-mail), never the status, tenant or id (mass assignment). */
typedef struct profile {
    const char *name, *avatar, *email;
    int clear_avatar, discoverable, have_discoverable, nroles;
    char *metadata; /* heap, compact JSON */
    const char *roles[USER_ROLES_MAX];
    char email_norm[USER_EMAIL_MAX + 1];
} profile;

static cm_err profile_parse(const cJSON *body, int server, const bson_t *tenant, profile *p,
                            char *detail, size_t n)
{
    static const char *const mine[] = {"name", "avatar_media_id", "metadata", "discoverable", NULL};
    static const char *const theirs[] = {"name",  "avatar_media_id", "metadata", "discoverable",
                                         "email", "roles",           NULL};
    const cJSON *avatar = cJSON_GetObjectItemCaseSensitive(body, "avatar_media_id");
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(body, "metadata");
    const cJSON *roles = cJSON_GetObjectItemCaseSensitive(body, "roles"), *r;
    cm_err rc;

    memset(p, 0, sizeof(*p));
    if (cm_json_only_keys(body, server ? theirs : mine, detail, n) ||
        cm_json_string(body, "name", 0, 1, USER_NAME_MAX, &p->name, detail, n) ||
        cm_json_bool(body, "discoverable", 0, &p->discoverable, detail, n) ||
        (server && cm_json_string(body, "email", 0, 3, USER_EMAIL_MAX, &p->email, detail, n)))
        return CM_EINVAL;
    p->have_discoverable = cJSON_GetObjectItemCaseSensitive(body, "discoverable") != NULL;
    if (p->name && (cm_utf8_has_control(p->name, strlen(p->name)) ||
                    strspn(p->name, " ") == strlen(p->name))) {
        snprintf(detail, n, "field 'name' must not be blank or hold control characters");
        return CM_EINVAL;
    }
    if (avatar && cJSON_IsNull(avatar)) {
        p->clear_avatar = 1;
    } else if (avatar) {
        if (!cJSON_IsString(avatar) || !cm_uuid_valid(avatar->valuestring)) {
            snprintf(detail, n, "field 'avatar_media_id' must be a media id (a UUID) or null");
            return CM_EINVAL;
        }
        p->avatar = avatar->valuestring;
    }
    if (p->email && !user_email_normalize(p->email, p->email_norm, sizeof(p->email_norm))) {
        snprintf(detail, n, "field 'email' must be an e-mail address");
        return CM_EINVAL;
    }
    if (roles) {
        if (!cJSON_IsArray(roles) || cJSON_GetArraySize(roles) > USER_ROLES_MAX) {
            snprintf(detail, n, "field 'roles' must be an array of at most %d role names",
                     USER_ROLES_MAX);
            return CM_EINVAL;
        }
        cJSON_ArrayForEach(r, roles)
        {
            if (!cJSON_IsString(r) || !user_role_exists(tenant, r->valuestring)) {
                snprintf(detail, n,
                         "field 'roles' item %d must name a role of the tenant (tenant_admin, "
                         "moderator, member or a custom role)",
                         p->nroles);
                return CM_EINVAL;
            }
            for (int i = 0; i < p->nroles; i++)
                if (strcmp(p->roles[i], r->valuestring) == 0) {
                    snprintf(detail, n, "field 'roles' repeats %s", r->valuestring);
                    return CM_EINVAL;
                }
            p->roles[p->nroles++] = r->valuestring;
        }
        if (p->nroles == 0) {
            snprintf(detail, n, "field 'roles' must name at least one role");
            return CM_EINVAL;
        }
    }
    if (meta) {
        rc = user_metadata_check(meta, &p->metadata, detail, n);
        if (rc != CM_OK)
            return rc == CM_ETOOBIG ? CM_EINVAL : rc; /* a field, not the body: 400 */
    }
    return CM_OK;
}

/* Appends the given fields to a $set document (and $unset for a cleared avatar). */
static void profile_to_update(const profile *p, const bson_t *current, bson_t *update)
{
    bson_t set, unset, arr;
    char idx[16];
    const char *name = p->name ? p->name : cm_bson_str(current, "name", "");

    BSON_APPEND_DOCUMENT_BEGIN(update, "$set", &set);
    if (p->name)
        BSON_APPEND_UTF8(&set, "name", p->name);
    if (p->avatar)
        BSON_APPEND_UTF8(&set, "avatar_media_id", p->avatar);
    if (p->metadata)
        BSON_APPEND_UTF8(&set, "metadata_json", p->metadata);
    if (p->have_discoverable)
        BSON_APPEND_BOOL(&set, "discoverable", p->discoverable);
    if (p->email) {
        /* The tenant's backend vouches for the addresses it sets. */
        BSON_APPEND_UTF8(&set, "email", p->email_norm);
        BSON_APPEND_BOOL(&set, "email_verified", 1);
    }
    if (p->nroles) {
        BSON_APPEND_ARRAY_BEGIN(&set, "roles", &arr);
        for (int i = 0; i < p->nroles; i++) {
            snprintf(idx, sizeof(idx), "%d", i);
            BSON_APPEND_UTF8(&arr, idx, p->roles[i]);
        }
        bson_append_array_end(&set, &arr);
    }
    append_search_keys(&set, name, cm_bson_str(current, "username", NULL));
    BSON_APPEND_DATE_TIME(&set, "updated_at", cm_clock_now_ms());
    bson_append_document_end(update, &set);
    if (p->clear_avatar) {
        BSON_APPEND_DOCUMENT_BEGIN(update, "$unset", &unset);
        BSON_APPEND_UTF8(&unset, "avatar_media_id", "");
        bson_append_document_end(update, &unset);
    }
}

/* Applies `p` to the stored user `current` and writes the result to `after`. */
static cm_err profile_apply(user_ctx *ctx, const profile *p, const bson_t *current, bson_t *after)
{
    bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER;
    cm_err rc;

    BSON_APPEND_UTF8(&f, "_id", cm_bson_str(current, "_id", ""));
    profile_to_update(p, current, &u);
    rc = cm_mongo_find_and_modify(ctx->db, USER_COLL_USERS, &f, NULL, &u, 0, 1, after);
    bson_destroy(&f);
    bson_destroy(&u);
    return rc;
}

cm_err user_update_reply(cm_http_req *req, user_ctx *ctx, const char *key, const bson_t *update)
{
    bson_t f = BSON_INITIALIZER, after;
    cm_err rc;

    BSON_APPEND_UTF8(&f, "_id", key);
    rc = cm_mongo_find_and_modify(ctx->db, USER_COLL_USERS, &f, NULL, update, 0, 1, &after);
    bson_destroy(&f);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "no such user" : NULL);
        return rc;
    }
    user_publish_user(ctx, "user.updated", &after);
    cm_http_reply_json(req, 200, user_to_json(&after));
    bson_destroy(&after);
    return CM_OK;
}

/* --- the caller -------------------------------------------------------------------------- */

/* Loads the caller's own user; answers 404 itself. */
static cm_err load_me(cm_http_req *req, user_ctx *ctx, const cm_jwt_claims *c, bson_t *out)
{
    cm_err rc = user_load(ctx, c->tid, c->sub, out);
    if (rc != CM_OK)
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "the user no longer exists" : NULL);
    return rc;
}

/* GET /v1/users/me */
void user_users_me(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    cm_jwt_claims c;
    bson_t doc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK || load_me(req, ctx, &c, &doc) != CM_OK)
        return;
    cm_http_reply_json(req, 200, user_to_json(&doc));
    bson_destroy(&doc);
}

/* PATCH /v1/users/me: name, avatar, metadata, discoverable; never roles, status, tenant,
 * e-mail or id (unknown fields are 400). */
void user_users_update_me(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    cm_jwt_claims c;
    char detail[256];
    profile p = {0};
    bson_t doc, u = BSON_INITIALIZER;
    cJSON *body;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK || cm_http_json_body(req, &body) != CM_OK)
        goto out;
    rc = profile_parse(body, 0, NULL, &p, detail, sizeof(detail));
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, detail);
        goto out;
    }
    if (load_me(req, ctx, &c, &doc) != CM_OK)
        goto out;
    profile_to_update(&p, &doc, &u);
    user_update_reply(req, ctx, cm_bson_str(&doc, "_id", ""), &u);
    bson_destroy(&doc);
out:
    free(p.metadata);
    bson_destroy(&u);
}

/* GET /v1/users/{id}: another user of the caller's tenant (404 for any other tenant's). */
void user_users_get(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    cm_jwt_claims c;
    bson_t doc;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        return;
    rc = user_load(ctx, c.tid, cm_http_param(req, "id"), &doc);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "no such user" : NULL);
        return;
    }
    cm_http_reply_json(req, 200, public_json(&doc, NULL));
    bson_destroy(&doc);
}

/* GET /v1/users?q=<prefix>: active, discoverable users of the caller's tenant whose name, a
 * word of it or the username starts with the prefix (ASCII letters case-insensitively),
 * ordered by user id, cursor = the last user id. */
void user_users_search(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    const char *q = cm_http_query(req, "q");
    char norm[USER_SEARCH_MAX * 4 + 1], re[2 * sizeof(norm) + 2], prefix[CM_JWT_ID_MAX + 2];
    bson_t f = BSON_INITIALIZER;
    cm_jwt_claims c;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (q == NULL || !user_search_normalize(q, norm, sizeof(norm)) ||
        user_regex_prefix(norm, re, sizeof(re)) != 0) {
        cm_http_reply_error(req, CM_EINVAL,
                            "query parameter 'q' must be 1..64 characters without control characters");
        goto out;
    }
    /* An anchored, escaped regular expression: FerretDB's $elemMatch with a range matches
     * across different elements, a regex is applied to each element. */
    BSON_APPEND_UTF8(&f, "tenant", c.tid);
    BSON_APPEND_BOOL(&f, "discoverable", 1);
    BSON_APPEND_UTF8(&f, "status", "active");
    BSON_APPEND_REGEX(&f, "search_keys", re, "");
    snprintf(prefix, sizeof(prefix), "%s/", c.tid);
    user_reply_key_page(req, ctx, USER_COLL_USERS, &f, prefix, "id", 20, 100, public_json);
out:
    bson_destroy(&f);
}

/* --- server side (the tenant's backend) ---------------------------------------------------- */

/* PUT /v1/server/users/{id}: creates the user (201) or sets the given fields (200). */
void user_server_put(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    const char *id = cm_http_param(req, "id"), *tenant;
    char detail[256];
    profile p = {0};
    bson_t t, doc = BSON_INITIALIZER, cur, after;
    int have_t = 0, created = 0;
    cJSON *body;
    cm_err rc;

    if (user_tenant_auth(req, ctx, &t) != CM_OK)
        goto out;
    have_t = 1;
    tenant = cm_bson_str(&t, "_id", "");
    if (cm_http_json_body(req, &body) != CM_OK)
        goto out;
    if (!cm_user_id_valid(id)) {
        cm_http_reply_error(req, CM_EINVAL, "the user id must be 1..64 characters of A-Z a-z 0-9 _ . @ -");
        goto out;
    }
    rc = profile_parse(body, 1, &t, &p, detail, sizeof(detail));
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, detail);
        goto out;
    }
    rc = user_load(ctx, tenant, id, &cur);
    if (rc == CM_ENOTFOUND) {
        user_doc_init(&doc, tenant, id, p.name ? p.name : id, NULL, NULL, cm_clock_now_ms());
        rc = cm_mongo_insert(ctx->db, USER_COLL_USERS, &doc);
        created = rc == CM_OK;
        if (rc == CM_OK || rc == CM_ECONFLICT) /* or a concurrent call created it */
            rc = user_load(ctx, tenant, id, &cur);
    }
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the user could not be stored");
        goto out;
    }
    rc = profile_apply(ctx, &p, &cur, &after);
    bson_destroy(&cur);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the user could not be stored");
        goto out;
    }
    user_publish_user(ctx, created ? "user.created" : "user.updated", &after);
    if (created)
        cm_http_add_header(req, "Location", id);
    cm_http_reply_json(req, created ? 201 : 200, user_to_json(&after));
    bson_destroy(&after);
out:
    free(p.metadata);
    if (have_t)
        bson_destroy(&t);
    bson_destroy(&doc);
}

/* Authenticates the tenant and loads user {id} of it; answers on failure. */
static cm_err server_user(cm_http_req *req, user_ctx *ctx, bson_t *user)
{
    bson_t t;
    cm_err rc = user_tenant_auth(req, ctx, &t);

    if (rc != CM_OK)
        return rc;
    rc = user_load(ctx, cm_bson_str(&t, "_id", ""), cm_http_param(req, "id"), user);
    bson_destroy(&t);
    if (rc != CM_OK)
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "no such user" : NULL);
    return rc;
}

/* GET /v1/server/users/{id} */
void user_server_get(cm_http_req *req, void *ud)
{
    bson_t doc;

    if (server_user(req, ud, &doc) != CM_OK)
        return;
    cm_http_reply_json(req, 200, user_to_json(&doc));
    bson_destroy(&doc);
}

/* POST /v1/server/users/{id}/deactivate and /reactivate. Deactivating ends every session
 * (their tokens are refused at once) and no token is minted until reactivation. */
static void set_status(cm_http_req *req, user_ctx *ctx, const char *status)
{
    bson_t doc, u = BSON_INITIALIZER, set;
    cm_err rc = CM_OK;

    if (server_user(req, ctx, &doc) != CM_OK)
        goto out;
    /* Sessions first: if that fails nothing else changed, and the call can be repeated. */
    if (strcmp(status, "deactivated") == 0)
        rc = user_sessions_revoke_all(ctx, cm_bson_str(&doc, "tenant", ""),
                                      cm_bson_str(&doc, "id", ""), NULL, "user_inactive", NULL);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, NULL);
    } else {
        BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
        BSON_APPEND_UTF8(&set, "status", status);
        BSON_APPEND_DATE_TIME(&set, "updated_at", cm_clock_now_ms());
        bson_append_document_end(&u, &set);
        user_update_reply(req, ctx, cm_bson_str(&doc, "_id", ""), &u);
    }
    bson_destroy(&doc);
out:
    bson_destroy(&u);
}

void user_server_deactivate(cm_http_req *req, void *ud)
{
    set_status(req, ud, "deactivated");
}

void user_server_reactivate(cm_http_req *req, void *ud)
{
    set_status(req, ud, "active");
}

/* DELETE /v1/server/users/{id}: erases the user (user_erase). */
void user_server_delete(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    bson_t doc;
    cm_err rc;

    if (server_user(req, ctx, &doc) != CM_OK)
        return;
    rc = user_erase(ctx, cm_bson_str(&doc, "tenant", ""), cm_bson_str(&doc, "id", ""));
    bson_destroy(&doc);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the erasure did not complete; retry it");
        return;
    }
    cm_http_reply_json(req, 204, NULL);
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
        {USER_COLL_USERS, "search", "tenant", "search_keys", 0},
        {USER_COLL_USERS, "email", "tenant", "email", 0},
        {USER_COLL_CREDENTIALS, "user", "tenant", "user_id", 0},
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
