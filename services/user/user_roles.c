/* user_roles.c - roles and the permissions they grant, resolved into access token claims.
 * A role change takes effect on the user's next token: services check the `perms` claim with
 * cm_auth_can and never ask this service. */
#include <stdio.h>
#include <string.h>

#include "common/auth.h"
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
