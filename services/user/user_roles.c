/* user_roles.c - roles and the permissions they grant, resolved into access token claims;
 * GET /v1/roles, PUT and DELETE /v1/roles/{name} (and /v1/server/roles/{name} for the
 * tenant's backend), PUT /v1/users/{id}/roles.
 * A role change takes effect on the user's next token: services check the `perms` claim with
 * cm_auth_can and never ask this service. */
#include <stdio.h>
#include <string.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/json.h"
#include "user.h"

/* Appends the permissions of `role` (built in, or a custom role of the tenant document) to
 * the space-separated set `perms` (size n), without duplicates. */
static void grant(const bson_t *tenant, const char *role, char *perms, size_t n)
{
    char list[USER_PERMS_MAX + 1];
    bson_iter_t it, arr;
    char path[USER_ROLE_NAME_MAX + 32];

    if (user_role_builtin_perms(role, list, sizeof(list))) {
        user_perms_add_list(perms, n, list);
        return;
    }
    /* Custom roles: tenant.custom_roles.<name> is the array of its permissions. */
    snprintf(path, sizeof(path), "custom_roles.%s", role);
    if (!user_role_name_valid(role) || !bson_iter_init(&it, tenant) ||
        !bson_iter_find_descendant(&it, path, &arr) || !BSON_ITER_HOLDS_ARRAY(&arr) ||
        !bson_iter_recurse(&arr, &it))
        return;
    while (bson_iter_next(&it))
        if (BSON_ITER_HOLDS_UTF8(&it))
            user_perms_add_list(perms, n, bson_iter_utf8(&it, NULL));
}

int user_role_exists(const bson_t *tenant, const char *role)
{
    char list[USER_PERMS_MAX + 1], path[USER_ROLE_NAME_MAX + 32];
    bson_iter_t it, arr;

    if (user_role_builtin_perms(role, list, sizeof(list)))
        return 1;
    if (tenant == NULL || !user_role_name_valid(role))
        return 0;
    snprintf(path, sizeof(path), "custom_roles.%s", role);
    return bson_iter_init(&it, tenant) && bson_iter_find_descendant(&it, path, &arr) &&
           BSON_ITER_HOLDS_ARRAY(&arr);
}

cm_err user_claims_build(user_ctx *ctx, const char *tenant, const bson_t *user, const char *sid,
                         cm_jwt_claims *c)
{
    bson_t f = BSON_INITIALIZER, t;
    bson_iter_t it, arr;
    int have_roles = 0;
    cm_err rc;

    memset(c, 0, sizeof(*c));
    BSON_APPEND_UTF8(&f, "_id", tenant);
    rc = cm_mongo_find_one(ctx->db, USER_COLL_TENANTS, &f, NULL, &t);
    bson_destroy(&f);
    if (rc == CM_ENOTFOUND)
        return CM_EUNAUTH;
    if (rc != CM_OK)
        return rc;
    if (strcmp(cm_bson_str(&t, "status", ""), "active") != 0) {
        bson_destroy(&t);
        return CM_EFORBIDDEN;
    }
    snprintf(c->sub, sizeof(c->sub), "%s", cm_bson_str(user, "id", ""));
    snprintf(c->tid, sizeof(c->tid), "%s", tenant);
    snprintf(c->sid, sizeof(c->sid), "%s", sid);
    if (bson_iter_init_find(&it, user, "roles") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr)) {
        while (bson_iter_next(&arr)) {
            if (!BSON_ITER_HOLDS_UTF8(&arr))
                continue;
            user_perms_add_list(c->roles, sizeof(c->roles), bson_iter_utf8(&arr, NULL));
            grant(&t, bson_iter_utf8(&arr, NULL), c->perms, sizeof(c->perms));
            have_roles = 1;
        }
    }
    if (!have_roles) {
        snprintf(c->roles, sizeof(c->roles), "member");
        grant(&t, "member", c->perms, sizeof(c->perms));
    }
    bson_destroy(&t);
    return CM_OK;
}

/* --- endpoints ------------------------------------------------------------------------------- */

#define CUSTOM_ROLES_MAX 50

static void add_role(cJSON *items, const char *name, int builtin, const char *perms)
{
    cJSON *r = cJSON_CreateObject(), *p = cJSON_AddArrayToObject(r, "permissions");
    char word[128];

    cJSON_AddStringToObject(r, "name", name);
    cJSON_AddBoolToObject(r, "builtin", builtin);
    for (const char *s = perms; *s;) {
        size_t len = strcspn(s, " ");
        if (len > 0 && len < sizeof(word)) {
            memcpy(word, s, len);
            word[len] = '\0';
            cJSON_AddItemToArray(p, cJSON_CreateString(word));
        }
        s += len;
        while (*s == ' ')
            s++;
    }
    cJSON_AddItemToArray(items, r);
}

/* The tenant document of the caller (bearer) or of the backend (HTTP Basic, `server`);
 * answers on failure. With `manage`, a bearer caller needs the role.manage permission. */
static cm_err caller_tenant(cm_http_req *req, user_ctx *ctx, int server, int manage, bson_t *t)
{
    cm_jwt_claims c;
    bson_t f = BSON_INITIALIZER;
    cm_err rc;

    if (server)
        return user_tenant_auth(req, ctx, t);
    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        return CM_EUNAUTH;
    if (manage && !cm_auth_can(&c, "role.manage")) {
        cm_http_reply_error(req, CM_EFORBIDDEN, "managing roles needs the role.manage permission");
        return CM_EFORBIDDEN;
    }
    BSON_APPEND_UTF8(&f, "_id", c.tid);
    rc = cm_mongo_find_one(ctx->db, USER_COLL_TENANTS, &f, NULL, t);
    bson_destroy(&f);
    if (rc != CM_OK)
        cm_http_reply_error(req, rc, NULL);
    return rc;
}

/* GET /v1/roles: the built-in and custom roles of the caller's tenant with their permissions. */
void user_roles_list(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    static const char *const builtin[] = {"tenant_admin", "moderator", "member", NULL};
    char perms[USER_PERMS_MAX + 1];
    cJSON *items;
    bson_t t;
    bson_iter_t it, roles;

    if (caller_tenant(req, ctx, 0, 0, &t) != CM_OK)
        return;
    items = cJSON_CreateArray();
    for (const char *const *b = builtin; *b; b++) {
        user_role_builtin_perms(*b, perms, sizeof(perms));
        add_role(items, *b, 1, perms);
    }
    if (bson_iter_init_find(&it, &t, "custom_roles") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
        bson_iter_recurse(&it, &roles))
        while (bson_iter_next(&roles)) {
            perms[0] = '\0';
            grant(&t, bson_iter_key(&roles), perms, sizeof(perms));
            add_role(items, bson_iter_key(&roles), 0, perms);
        }
    bson_destroy(&t);
    cm_http_reply_page(req, items, NULL);
}

/* PUT /v1/roles/{name} (role.manage) and PUT /v1/server/roles/{name} (tenant key):
 * {permissions: [...]} creates or replaces a custom role. */
static void put_role(cm_http_req *req, user_ctx *ctx, int server)
{
    static const char *const allowed[] = {"permissions", NULL};
    const char *name = cm_http_param(req, "name");
    char detail[256], path[USER_ROLE_NAME_MAX + 16], idx[16], perms[USER_PERMS_MAX + 1] = "";
    const cJSON *list, *p;
    bson_t t, f = BSON_INITIALIZER, u = BSON_INITIALIZER, set, arr, after;
    bson_iter_t it, roles;
    int have_t = 0, count = 0, exists = 0, i = 0;
    cJSON *body;
    cm_err rc;

    if (caller_tenant(req, ctx, server, 1, &t) != CM_OK || cm_http_json_body(req, &body) != CM_OK)
        goto out;
    have_t = 1;
    if (!user_role_name_valid(name) || user_role_builtin_perms(name, perms, sizeof(perms))) {
        cm_http_reply_error(req, CM_EINVAL,
                            "a custom role name is 1..32 of a-z 0-9 _ -, starting with a letter, "
                            "and not tenant_admin, moderator or member");
        goto out;
    }
    list = cJSON_GetObjectItemCaseSensitive(body, "permissions");
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) > 64) {
        cm_http_reply_error(req, CM_EINVAL, "field 'permissions' must be an array of at most 64 permissions");
        goto out;
    }
    cJSON_ArrayForEach(p, list)
    {
        if (!cJSON_IsString(p) || !user_permission_known(p->valuestring)) {
            snprintf(detail, sizeof(detail),
                     "field 'permissions' item %d is not a permission of the platform", i);
            cm_http_reply_error(req, CM_EINVAL, detail);
            goto out;
        }
        i++;
    }
    if (bson_iter_init_find(&it, &t, "custom_roles") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
        bson_iter_recurse(&it, &roles))
        while (bson_iter_next(&roles)) {
            count++;
            exists |= strcmp(bson_iter_key(&roles), name) == 0;
        }
    if (!exists && count >= CUSTOM_ROLES_MAX) {
        cm_http_reply_error(req, CM_ECONFLICT, "the tenant has the most custom roles allowed (50)");
        goto out;
    }
    /* The name is checked above ([a-z0-9_-]): safe as a field name. */
    snprintf(path, sizeof(path), "custom_roles.%s", name);
    BSON_APPEND_UTF8(&f, "_id", cm_bson_str(&t, "_id", ""));
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_ARRAY_BEGIN(&set, path, &arr);
    i = 0;
    cJSON_ArrayForEach(p, list)
    {
        snprintf(idx, sizeof(idx), "%d", i++);
        BSON_APPEND_UTF8(&arr, idx, p->valuestring);
    }
    bson_append_array_end(&set, &arr);
    bson_append_document_end(&u, &set);
    rc = cm_mongo_find_and_modify(ctx->db, USER_COLL_TENANTS, &f, NULL, &u, 0, 1, &after);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, NULL);
        goto out;
    }
    perms[0] = '\0';
    grant(&after, name, perms, sizeof(perms));
    bson_destroy(&after);
    body = cJSON_CreateArray();
    add_role(body, name, 0, perms);
    cm_http_reply_json(req, exists ? 200 : 201, cJSON_DetachItemFromArray(body, 0));
    cJSON_Delete(body);
out:
    if (have_t)
        bson_destroy(&t);
    bson_destroy(&f);
    bson_destroy(&u);
}

void user_roles_put(cm_http_req *req, void *ud)
{
    put_role(req, ud, 0);
}

void user_server_roles_put(cm_http_req *req, void *ud)
{
    put_role(req, ud, 1);
}

/* DELETE /v1/roles/{name} and /v1/server/roles/{name}: users who hold it keep the name, which
 * grants nothing from their next token on. */
static void delete_role(cm_http_req *req, user_ctx *ctx, int server)
{
    const char *name = cm_http_param(req, "name");
    char path[USER_ROLE_NAME_MAX + 16];
    bson_t t, f = BSON_INITIALIZER, u = BSON_INITIALIZER, unset;
    int64_t matched = 0;
    cm_err rc;

    if (caller_tenant(req, ctx, server, 1, &t) != CM_OK)
        goto out;
    if (!user_role_name_valid(name) || !user_role_exists(&t, name) ||
        user_role_builtin_perms(name, path, sizeof(path))) {
        bson_destroy(&t);
        cm_http_reply_error(req, CM_ENOTFOUND, "no such custom role");
        goto out;
    }
    snprintf(path, sizeof(path), "custom_roles.%s", name);
    BSON_APPEND_UTF8(&f, "_id", cm_bson_str(&t, "_id", ""));
    bson_destroy(&t);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$unset", &unset);
    BSON_APPEND_UTF8(&unset, path, "");
    bson_append_document_end(&u, &unset);
    rc = cm_mongo_update(ctx->db, USER_COLL_TENANTS, &f, &u, 0, 0, &matched);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, NULL);
        goto out;
    }
    cm_http_reply_json(req, 204, NULL);
out:
    bson_destroy(&f);
    bson_destroy(&u);
}

void user_roles_delete(cm_http_req *req, void *ud)
{
    delete_role(req, ud, 0);
}

void user_server_roles_delete(cm_http_req *req, void *ud)
{
    delete_role(req, ud, 1);
}

/* PUT /v1/users/{id}/roles {roles: [...]} (role.manage): a user's roles, effective on their
 * next token. */
void user_roles_assign(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    static const char *const allowed[] = {"roles", NULL};
    const cJSON *roles, *r;
    char detail[256], idx[16];
    bson_t t, user, u = BSON_INITIALIZER, set, arr;
    int have_t = 0, n = 0;
    cJSON *body;
    cm_err rc;

    if (caller_tenant(req, ctx, 0, 1, &t) != CM_OK || cm_http_json_body(req, &body) != CM_OK)
        goto out;
    have_t = 1;
    roles = cJSON_GetObjectItemCaseSensitive(body, "roles");
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    if (!cJSON_IsArray(roles) || cJSON_GetArraySize(roles) < 1 ||
        cJSON_GetArraySize(roles) > USER_ROLES_MAX) {
        cm_http_reply_error(req, CM_EINVAL, "field 'roles' must be an array of 1..8 role names");
        goto out;
    }
    cJSON_ArrayForEach(r, roles)
    {
        if (!cJSON_IsString(r) || !user_role_exists(&t, r->valuestring)) {
            snprintf(detail, sizeof(detail), "field 'roles' item %d must name a role of the tenant", n);
            cm_http_reply_error(req, CM_EINVAL, detail);
            goto out;
        }
        n++;
    }
    rc = user_load(ctx, cm_bson_str(&t, "_id", ""), cm_http_param(req, "id"), &user);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "no such user" : NULL);
        goto out;
    }
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_ARRAY_BEGIN(&set, "roles", &arr);
    n = 0;
    cJSON_ArrayForEach(r, roles)
    {
        snprintf(idx, sizeof(idx), "%d", n++);
        BSON_APPEND_UTF8(&arr, idx, r->valuestring);
    }
    bson_append_array_end(&set, &arr);
    BSON_APPEND_DATE_TIME(&set, "updated_at", cm_clock_now_ms());
    bson_append_document_end(&u, &set);
    user_update_reply(req, ctx, cm_bson_str(&user, "_id", ""), &u);
    bson_destroy(&user);
out:
    if (have_t)
        bson_destroy(&t);
    bson_destroy(&u);
}
