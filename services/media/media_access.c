/* media_access.c - who may read a media object (GET /v1/media/{id}, its content and its
 * signed URL): its uploader, a tenant admin, and (issue 8) the members of a conversation whose
 * message references it, which the messaging service decides, since it owns conversations
 * and members:
 *   GET {MESSAGING_URL}/internal/v1/messaging/attachments/{id}?tenant=&user=
 * answers 200 when a message the user sees references the media, 404 otherwise. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/auth.h"
#include "common/httpc.h"
#include "common/internal.h"
#include "common/log.h"
#include "media.h"

#define ANSWER_MAX 4096 /* bytes of the messaging service's answer */

/* Only the uploader and tenant admins manage (delete) a media object. */
int media_may_read(const bson_t *doc, const cm_jwt_claims *c)
{
    return strcmp(cm_bson_str(doc, "uploader", ""), c->sub) == 0 || cm_auth_has_role(c, "admin");
}

cm_err media_member_reads(media_ctx *ctx, const char *tenant, const char *user, const char *id)
{
    char url[1024], *body = NULL;
    size_t len = 0, base;
    long status = 0;
    int w;
    cm_err rc;

    if (ctx->messaging_url == NULL || ctx->messaging_url[0] == '\0')
        return CM_ENOTFOUND; /* no messaging service: only uploaders and admins read */
    /* Tenant ids (UUIDs), user ids ([A-Za-z0-9_.@-]) and media ids (UUIDs) need no escaping
     * in a query; anything else is refused rather than sent. */
    if (!cm_user_id_valid(tenant) || !cm_user_id_valid(user))
        return CM_ENOTFOUND;
    base = strlen(ctx->messaging_url);
    while (base > 0 && ctx->messaging_url[base - 1] == '/')
        base--;
    w = snprintf(url, sizeof(url), "%.*s/internal/v1/messaging/attachments/%s?tenant=%s&user=%s",
                 (int)base, ctx->messaging_url, id, tenant, user);
    if (w < 0 || (size_t)w >= sizeof(url))
        return CM_ENOTFOUND;
    rc = cm_httpc_get_with(url, cm_internal_key_header(), ctx->messaging_timeout_ms, ANSWER_MAX, &body, &len, &status);
    free(body);
    if (rc != CM_OK) {
        cm_warn("media %s: the messaging service did not answer the access check: %s", id,
                cm_strerror(rc));
        return CM_EIO;
    }
    if (status == 200)
        return CM_OK;
    if (status == 404)
        return CM_ENOTFOUND;
    cm_warn("media %s: the messaging service answered the access check with %ld", id, status);
    return CM_EIO;
}

cm_err media_find_readable(cm_http_req *req, media_ctx *ctx, const cm_jwt_claims *c,
                           bson_t *doc)
{
    const char *id = cm_http_param(req, "id");
    cm_err rc = media_find(ctx, c->tid, id, doc);

    if (rc == CM_OK && !media_may_read(doc, c)) {
        rc = media_member_reads(ctx, c->tid, c->sub, cm_bson_str(doc, "_id", ""));
        if (rc != CM_OK)
            bson_destroy(doc);
    }
    if (rc == CM_ENOTFOUND)
        cm_http_reply_error(req, rc, "no such media"); /* seeing that it exists is too much */
    else if (rc == CM_EIO) {
        cm_http_add_header(req, "Retry-After", "1");
        cm_http_reply_error(req, rc, "access to this media could not be checked; retry");
    } else if (rc != CM_OK)
        cm_http_reply_error(req, rc, NULL);
    return rc;
}
