/* media_uploads.c - single uploads: POST /v1/media with a raw body and its Content-Type, or
 * multipart/form-data with the file in the part named "file".
 *
 * The body is buffered whole by libcommon's HTTP server, capped by the route's body limit
 * (the largest file size the service allows, 100 MiB by default): at most one body per server
 * thread is in memory (HTTP_THREADS x the cap). Large files are expected to come through the
 * resumable tus endpoint in chunks; streaming single uploads to storage would need a body
 * hook in libcommon and is left for when the thread budget says so. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "common/auth.h"
#include "common/utf8.h"
#include "common/uuid.h"
#include "media.h"

/* The optional ?purpose=: what the object is for (message media may expire, avatars not). */
static const char *purpose_of(cm_http_req *req)
{
    const char *p = cm_http_query(req, "purpose");
    if (p == NULL || *p == '\0')
        return "message";
    if (strcmp(p, "message") == 0 || strcmp(p, "avatar") == 0 || strcmp(p, "other") == 0)
        return p;
    return NULL;
}

/* A client file name is kept for Content-Disposition only: UTF-8, no controls, no paths. */
static int filename_ok(const char *f)
{
    size_t n = strlen(f);
    return n <= MEDIA_FILENAME_MAX && cm_utf8_valid(f, n) && !cm_utf8_has_control(f, n) &&
           strchr(f, '/') == NULL && strchr(f, '\\') == NULL;
}

/* POST /v1/media */
void media_upload(cm_http_req *req, void *ud)
{
    media_ctx *ctx = ud;
    cm_jwt_claims c;
    media_settings s;
    const char *ct = cm_http_header(req, "Content-Type"), *filename, *data, *purpose;
    char id[CM_UUID_STRLEN], loc[128];
    unsigned char sha[32];
    unsigned int shalen = 0;
    size_t len;
    cm_http_part part;
    media_new n = {0};
    bson_t doc;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        return;
    if ((purpose = purpose_of(req)) == NULL) {
        cm_http_reply_error(req, CM_EINVAL, "query parameter 'purpose' must be message, avatar or other");
        return;
    }
    if (ct == NULL || *ct == '\0') {
        cm_http_problem(req, 415, "unsupported-media-type", "Unsupported Media Type",
                        "send the file as the body with its Content-Type, or as the part 'file' of multipart/form-data");
        return;
    }
    filename = cm_http_query(req, "filename");
    if (strncasecmp(ct, "multipart/form-data", 19) == 0) {
        if (cm_http_multipart_file(req, "file", &part) != CM_OK) {
            cm_http_reply_error(req, CM_EINVAL, "the multipart body is malformed or has no part named 'file'");
            return;
        }
        data = part.data;
        len = part.len;
        if (part.filename && *part.filename)
            filename = part.filename;
    } else {
        data = cm_http_body(req, &len);
    }
    if (filename && !filename_ok(filename)) {
        cm_http_reply_error(req, CM_EINVAL, "the file name must be at most 255 bytes of UTF-8 without controls or slashes");
        return;
    }
    rc = media_settings_load(ctx, c.tid, &s);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the tenant's media settings could not be read");
        return;
    }
    if (media_rate_limited(req, ctx, &s, &c))
        return;
    if (cm_uuid_v7(id) != CM_OK ||
        EVP_Digest(data, len, sha, &shalen, EVP_sha256(), NULL) != 1) {
        cm_http_reply_error(req, CM_EINTERNAL, "the id or digest could not be made");
        return;
    }
    n.id = id;
    n.tenant = c.tid;
    n.uploader = c.sub;
    n.filename = filename;
    n.purpose = purpose;
    n.head = data;
    n.head_len = len;
    n.whole = data;
    n.size = len;
    n.sha256 = sha;
    if (media_create(req, ctx, &s, &n, &doc) != CM_OK)
        return;
    snprintf(loc, sizeof(loc), "/v1/media/%s", id);
    cm_http_add_header(req, "Location", loc);
    cm_http_reply_json(req, 201, media_json(&doc));
    bson_destroy(&doc);
}
