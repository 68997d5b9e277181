/* user_keys.c - the public signing keys: GET /.well-known/jwks.json (RFC 7517 section 5). */
#include <stdlib.h>
#include <string.h>

#include "user.h"

/* GET /.well-known/jwks.json: the public halves of every configured, non-retired key, oldest
 * first, so verifiers (gateway, services) check tokens without being able to mint them. */
void user_keys_jwks(cm_http_req *req, void *ud)
{
    user_ctx *ctx = ud;
    char *doc = NULL;
    cm_err rc = cm_jwt_jwks(ctx->signer, &doc);

    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the key set could not be rendered");
        return;
    }
    /* Short enough that a retired key leaves caches soon; verifiers refetch on unknown kids. */
    cm_http_add_header(req, "Cache-Control", "public, max-age=60");
    cm_http_reply_raw(req, 200, "application/jwk-set+json", doc, strlen(doc));
    free(doc);
}
