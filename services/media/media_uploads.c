/* media_uploads.c - single uploads: POST /v1/media with a raw body and its Content-Type, or
 * multipart/form-data with the file in the part named "file".
 *
 * A raw body streams into the blob store as it arrives (media_spool.c, a route with a body
 * sink): one part of MEDIA_PART_BYTES per upload is in memory, whatever the size, and the
 * type read from the first bytes stops an upload as soon as it passes that type's cap.
 * multipart/form-data is still buffered whole by libcommon's HTTP server (capped by the
 * route's body limit: at most one such body per server thread in memory), since its file
 * part must be cut out of the body first; large files should come raw or through tus. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "common/auth.h"
#include "common/utf8.h"
#include "common/uuid.h"
#include "media.h"

static void media_upload_buffered(cm_http_req *req, void *ud);

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

/* A raw upload on its way into the store. */
typedef struct upload_state {
    media_ctx *ctx;
    cm_jwt_claims c;
    media_settings s;
    const char *purpose, *filename;
    media_spool *spool;
    cm_err err;                /* what stopped the body, or CM_OK */
    int typed;                 /* the type has been read from the first bytes */
    char type[MEDIA_TYPE_MAX];
    int64_t limit;             /* that type's cap */
} upload_state;

static void upload_close(void *state)
{
    upload_state *st = state;
    media_spool_destroy(st->spool);
    free(st);
}

/* Checks the request before any byte is stored; multipart bodies are declined (buffered). */
static void *upload_open(cm_http_req *req, void *ud)
{
    media_ctx *ctx = ud;
    const char *ct = cm_http_header(req, "Content-Type");
    upload_state *st;
    cm_err rc;

    if (ct && strncasecmp(ct, "multipart/form-data", 19) == 0)
        return NULL;
    st = calloc(1, sizeof(*st));
    if (st == NULL) {
        cm_http_reply_error(req, CM_ENOMEM, NULL);
        return NULL;
    }
    st->ctx = ctx;
    if (cm_auth_bearer(req, ctx->verifier, &st->c) != CM_OK)
        goto refuse;
    if ((st->purpose = purpose_of(req)) == NULL) {
        cm_http_reply_error(req, CM_EINVAL, "query parameter 'purpose' must be message, avatar or other");
        goto refuse;
    }
    if (ct == NULL || *ct == '\0') {
        cm_http_problem(req, 415, "unsupported-media-type", "Unsupported Media Type",
                        "send the file as the body with its Content-Type, or as the part 'file' of multipart/form-data");
        goto refuse;
    }
    st->filename = cm_http_query(req, "filename");
    if (st->filename && !filename_ok(st->filename)) {
        cm_http_reply_error(req, CM_EINVAL, "the file name must be at most 255 bytes of UTF-8 without controls or slashes");
        goto refuse;
    }
    rc = media_settings_load(ctx, st->c.tid, &st->s);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the tenant's media settings could not be read");
        goto refuse;
    }
    if (media_rate_limited(req, ctx, &st->s, &st->c))
        goto refuse;
    st->limit = st->s.file_max_bytes > st->s.image_max_bytes ? st->s.file_max_bytes
                                                             : st->s.image_max_bytes;
    if (media_spool_create(ctx, (uint64_t)st->limit, 0, &st->spool) != CM_OK) {
        cm_http_reply_error(req, CM_ENOMEM, NULL);
        goto refuse;
    }
    return st;
refuse:
    upload_close(st);
    return NULL;
}

/* Stores the next bytes; once the first MEDIA_HEAD_BYTES are in, the type they show decides
 * whether the rest is wanted and how much of it. */
static cm_err upload_write(cm_http_req *req, void *state, const char *data, size_t len)
{
    upload_state *st = state;
    const media_spool_parts *p = media_spool_parts_of(st->spool);
    (void)req;

    if (st->typed && p->size + len > (uint64_t)st->limit)
        return st->err = CM_ETOOBIG;
    st->err = media_spool_write(st->spool, data, len);
    if (st->err == CM_OK && !st->typed && p->head_len == MEDIA_HEAD_BYTES) {
        if (media_magic_type(p->head, p->head_len, st->type) != CM_OK)
            return st->err = CM_EINTERNAL;
        st->typed = 1;
        if (!media_type_allowed(&st->s, st->type))
            return st->err = CM_EINVAL;
        st->limit = media_size_limit(&st->s, st->type);
        if (p->size > (uint64_t)st->limit)
            st->err = CM_ETOOBIG;
    }
    return st->err;
}

/* The end of a raw upload: the checks every upload path shares, then the media object. */
static void upload_finish(cm_http_req *req, upload_state *st)
{
    const media_spool_parts *p = media_spool_parts_of(st->spool);
    char id[CM_UUID_STRLEN], loc[128], *whole = NULL;
    media_new n = {0};
    bson_t doc;
    cm_err rc = st->err;

    if (rc != CM_OK)
        media_spool_discard(st->spool); /* before the answer: nothing of it stays */
    if (rc == CM_ETOOBIG) {
        if (st->typed)
            cm_http_problem(req, 413, "too-large", "Content Too Large",
                            "%s uploads may be at most %lld bytes", st->type, (long long)st->limit);
        else
            cm_http_problem(req, 413, "too-large", "Content Too Large",
                            "uploads may be at most %lld bytes", (long long)st->limit);
        return;
    }
    if (rc == CM_EINVAL) {
        cm_http_problem(req, 415, "unsupported-media-type", "Unsupported Media Type",
                        "the bytes are %s, which this tenant does not accept", st->type);
        return;
    }
    if (rc == CM_OK)
        rc = media_spool_finish(st->spool);
    if (rc != CM_OK) {
        media_spool_discard(st->spool);
        cm_http_reply_error(req, rc, "the upload could not be stored");
        return;
    }
    if (p->head_len > 0 && !st->typed && media_magic_type(p->head, p->head_len, st->type) != CM_OK) {
        cm_http_reply_error(req, CM_EINTERNAL, "the type could not be determined");
        return;
    }
    /* Images are probed from their header, so the (capped, small) image is needed whole. */
    if (p->size > 0 && media_type_is_image(st->type) &&
        (int64_t)p->size <= st->s.image_max_bytes &&
        (rc = media_spool_whole(st->spool, &whole)) != CM_OK) {
        cm_http_reply_error(req, rc, "the stored image could not be read back");
        return;
    }
    if (cm_uuid_v7(id) != CM_OK) {
        media_spool_free_whole(st->spool, whole);
        cm_http_reply_error(req, CM_EINTERNAL, "the id could not be made");
        return;
    }
    n.id = id;
    n.tenant = st->c.tid;
    n.uploader = st->c.sub;
    n.filename = st->filename;
    n.purpose = st->purpose;
    n.head = p->head;
    n.head_len = p->head_len;
    n.whole = whole;
    n.size = p->size;
    n.nparts = p->n;
    n.part_keys = (const char(*)[MEDIA_KEY_LEN])p->keys;
    n.part_lens = p->lens;
    n.sha256 = p->sha256;
    rc = media_create(req, st->ctx, &st->s, &n, &doc);
    media_spool_free_whole(st->spool, whole);
    if (rc != CM_OK) {
        media_spool_discard(st->spool); /* answered already: a refusal leaves nothing */
        return;
    }
    media_spool_keep(st->spool);
    snprintf(loc, sizeof(loc), "/v1/media/%s", id);
    cm_http_add_header(req, "Location", loc);
    cm_http_reply_json(req, 201, media_json(&doc));
    bson_destroy(&doc);
}

const cm_http_body_sink media_upload_sink = {upload_open, upload_write, upload_close};

/* POST /v1/media */
void media_upload(cm_http_req *req, void *ud)
{
    upload_state *st = cm_http_body_state(req);
    if (st != NULL) {
        upload_finish(req, st);
        return;
    }
    media_upload_buffered(req, ud);
}

/* POST /v1/media with a multipart/form-data body, which arrives buffered. */
static void media_upload_buffered(cm_http_req *req, void *ud)
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
