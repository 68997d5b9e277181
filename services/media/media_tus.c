/* media_tus.c - resumable uploads speaking tus 1.0.0 (https://tus.io/protocols/resumable-upload)
 * under /v1/uploads: core (HEAD, PATCH, OPTIONS), creation, termination, expiration and
 * checksum (sha1). Progress is the offset a HEAD returns.
 *
 * Each PATCH body streams into the store as parts of at most MEDIA_PART_BYTES (media_spool.c)
 * recorded, once the body is complete, in upload_parts under a unique
 * (upload_id, offset) index, so two PATCHes racing for the same offset cannot both land
 * (FerretDB's updates are not atomic, its unique inserts are). The offset is derived from the
 * parts (the contiguous run from 0), so a crash between storing a part and anything else
 * leaves a consistent offset. When the last byte arrives the parts become the media object
 * (no copy: a media object is a list of parts) and the media id is the upload id. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/utf8.h"
#include "common/uuid.h"
#include "media.h"

#define TUS_VERSION "1.0.0"
#define MAX_PARTS MEDIA_PARTS_MAX
#define HEAD_BYTES MEDIA_HEAD_BYTES

/* Every tus response carries Tus-Resumable (tus 1.0 core). */
static void tus_headers(cm_http_req *req)
{
    cm_http_add_header(req, "Tus-Resumable", TUS_VERSION);
}

/* Checks Tus-Resumable on a request; answers 412 with Tus-Version when it is not ours. */
static int version_ok(cm_http_req *req)
{
    const char *v = cm_http_header(req, "Tus-Resumable");
    if (v && strcmp(v, TUS_VERSION) == 0)
        return 1;
    cm_http_add_header(req, "Tus-Version", TUS_VERSION);
    cm_http_problem(req, 412, "tus-version", "Precondition Failed",
                    "Tus-Resumable must be %s", TUS_VERSION);
    return 0;
}

static void expires_header(cm_http_req *req, int64_t expires_ms)
{
    char d[32];
    media_http_date(expires_ms / 1000, d);
    cm_http_add_header(req, "Upload-Expires", d);
}

/* OPTIONS /v1/uploads and /v1/uploads/{id} */
void media_tus_options(cm_http_req *req, void *ud)
{
    media_ctx *ctx = ud;
    char max[24];
    snprintf(max, sizeof(max), "%lld", (long long)ctx->defaults.file_max_bytes);
    tus_headers(req);
    cm_http_add_header(req, "Tus-Version", TUS_VERSION);
    cm_http_add_header(req, "Tus-Extension", "creation,termination,expiration,checksum");
    cm_http_add_header(req, "Tus-Max-Size", max);
    cm_http_add_header(req, "Tus-Checksum-Algorithm", "sha1");
    cm_http_reply_raw(req, 204, NULL, "", 0);
}

/* POST /v1/uploads (creation): Upload-Length and optional Upload-Metadata (filename,
 * purpose). */
void media_tus_create(cm_http_req *req, void *ud)
{
    media_ctx *ctx = ud;
    cm_jwt_claims c;
    media_settings s;
    const char *meta = cm_http_header(req, "Upload-Metadata");
    char id[CM_UUID_STRLEN], filename[MEDIA_FILENAME_MAX + 1], purpose[16], loc[96];
    uint64_t length;
    int64_t now = cm_clock_now_ms(), expires;
    int fm, pm;
    bson_t doc = BSON_INITIALIZER;
    cm_err rc;

    tus_headers(req);
    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK || !version_ok(req))
        goto out;
    if (cm_http_header(req, "Upload-Defer-Length")) {
        cm_http_reply_error(req, CM_EINVAL, "Upload-Defer-Length is not supported; send Upload-Length");
        goto out;
    }
    if (media_parse_u64(cm_http_header(req, "Upload-Length"), &length) != 0) {
        cm_http_reply_error(req, CM_EINVAL, "Upload-Length must be a non-negative integer");
        goto out;
    }
    fm = media_tus_metadata(meta, "filename", filename, sizeof(filename));
    pm = media_tus_metadata(meta, "purpose", purpose, sizeof(purpose));
    if (fm < 0 || pm < 0 || (fm && (strchr(filename, '/') || strchr(filename, '\\')))) {
        cm_http_reply_error(req, CM_EINVAL, "Upload-Metadata must be key base64 pairs; filename at most 255 bytes of UTF-8 without slashes");
        goto out;
    }
    if (pm && strcmp(purpose, "message") != 0 && strcmp(purpose, "avatar") != 0 &&
        strcmp(purpose, "other") != 0) {
        cm_http_reply_error(req, CM_EINVAL, "metadata 'purpose' must be message, avatar or other");
        goto out;
    }
    rc = media_settings_load(ctx, c.tid, &s);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the tenant's media settings could not be read");
        goto out;
    }
    if (length == 0) {
        cm_http_reply_error(req, CM_EINVAL, "Upload-Length must be at least 1");
        goto out;
    }
    /* The type is not known yet: the file limit bounds every upload; images are held to
     * theirs when the last byte has arrived. */
    if ((int64_t)length > s.file_max_bytes) {
        char max[24];
        snprintf(max, sizeof(max), "%lld", (long long)s.file_max_bytes);
        cm_http_add_header(req, "Tus-Max-Size", max);
        cm_http_problem(req, 413, "too-large", "Content Too Large",
                        "uploads may be at most %lld bytes", (long long)s.file_max_bytes);
        goto out;
    }
    if (media_rate_limited(req, ctx, &s, &c) || media_over_quota(req, ctx, &s, c.tid, length))
        goto out;
    if (cm_uuid_v7(id) != CM_OK) {
        cm_http_reply_error(req, CM_EINTERNAL, "the random source failed");
        goto out;
    }
    expires = now + ctx->upload_ttl_s * 1000;
    BSON_APPEND_UTF8(&doc, "_id", id);
    BSON_APPEND_UTF8(&doc, "tenant", c.tid);
    BSON_APPEND_UTF8(&doc, "uploader", c.sub);
    BSON_APPEND_INT64(&doc, "length", (int64_t)length);
    if (fm)
        BSON_APPEND_UTF8(&doc, "filename", filename);
    BSON_APPEND_UTF8(&doc, "purpose", pm ? purpose : "message");
    BSON_APPEND_BOOL(&doc, "complete", false);
    BSON_APPEND_DATE_TIME(&doc, "created_at", now);
    BSON_APPEND_DATE_TIME(&doc, "expires_at", expires);
    rc = cm_mongo_insert(ctx->db, MEDIA_COLL_UPLOADS, &doc);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the upload could not be created");
        goto out;
    }
    snprintf(loc, sizeof(loc), "/v1/uploads/%s", id);
    cm_http_add_header(req, "Location", loc);
    expires_header(req, expires);
    cm_http_reply_raw(req, 201, NULL, "", 0);
out:
    bson_destroy(&doc);
}

/* Loads the caller's live upload. CM_ENOTFOUND for unknown, foreign, other users' and
 * expired uploads alike. */
static cm_err load_upload(media_ctx *ctx, const cm_jwt_claims *c, const char *id, bson_t *out)
{
    cm_err rc;
    if (id == NULL || !cm_uuid_valid(id))
        return CM_ENOTFOUND;
    rc = cm_mongo_find_owned(ctx->db, MEDIA_COLL_UPLOADS, id, c->tid, NULL, out);
    if (rc == CM_OK && strcmp(cm_bson_str(out, "uploader", ""), c->sub) != 0) {
        bson_destroy(out);
        return CM_ENOTFOUND; /* another user's upload */
    }
    if (rc == CM_OK && !cm_bson_bool(out, "complete", 0) &&
        cm_bson_int(out, "expires_at", 0) < cm_clock_now_ms()) {
        bson_destroy(out);
        return CM_ENOTFOUND; /* expired: the housekeeping job removes it */
    }
    return rc;
}

typedef struct parts {
    int n;
    char keys[MAX_PARTS][MEDIA_KEY_LEN];
    uint64_t lens[MAX_PARTS];
    uint64_t offset; /* end of the contiguous run from 0 */
} parts;

static int collect(const bson_t *doc, void *ud)
{
    parts *p = ud;
    int64_t off = cm_bson_int(doc, "offset", -1), len = cm_bson_int(doc, "len", -1);
    if (off != (int64_t)p->offset || len < 0 || p->n == MAX_PARTS)
        return 1; /* a gap (or the cap): the offset stops here */
    snprintf(p->keys[p->n], MEDIA_KEY_LEN, "%s", cm_bson_str(doc, "key", ""));
    p->lens[p->n++] = (uint64_t)len;
    p->offset += (uint64_t)len;
    return 0;
}

static cm_err load_parts(media_ctx *ctx, const char *id, parts *p)
{
    bson_t f = BSON_INITIALIZER, opts = BSON_INITIALIZER, sort;
    cm_err rc;
    p->n = 0;
    p->offset = 0;
    BSON_APPEND_UTF8(&f, "upload_id", id);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "offset", 1);
    bson_append_document_end(&opts, &sort);
    rc = cm_mongo_find(ctx->db, MEDIA_COLL_PARTS, &f, &opts, collect, p);
    bson_destroy(&f);
    bson_destroy(&opts);
    return rc;
}

static void drop_upload(media_ctx *ctx, const char *id, const parts *p)
{
    bson_t f = BSON_INITIALIZER, uf = BSON_INITIALIZER;
    for (int i = 0; i < p->n; i++)
        ctx->store->remove(ctx->store, p->keys[i]);
    BSON_APPEND_UTF8(&f, "upload_id", id);
    cm_mongo_delete(ctx->db, MEDIA_COLL_PARTS, &f, 1, NULL);
    BSON_APPEND_UTF8(&uf, "_id", id);
    cm_mongo_delete(ctx->db, MEDIA_COLL_UPLOADS, &uf, 0, NULL);
    bson_destroy(&f);
    bson_destroy(&uf);
}

/* HEAD /v1/uploads/{id}: the offset (progress). */
void media_tus_head(cm_http_req *req, void *ud)
{
    media_ctx *ctx = ud;
    cm_jwt_claims c;
    const char *id = cm_http_param(req, "id");
    parts *p = NULL;
    char off[24], len[24];
    bson_t up;
    cm_err rc;

    tus_headers(req);
    cm_http_add_header(req, "Cache-Control", "no-store");
    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK || !version_ok(req))
        return;
    rc = load_upload(ctx, &c, id, &up);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "no such upload" : NULL);
        return;
    }
    p = malloc(sizeof(*p));
    rc = p ? (cm_bson_bool(&up, "complete", 0) ? CM_OK : load_parts(ctx, id, p)) : CM_ENOMEM;
    if (rc == CM_OK) {
        uint64_t total = (uint64_t)cm_bson_int(&up, "length", 0);
        snprintf(off, sizeof(off), "%llu",
                 (unsigned long long)(cm_bson_bool(&up, "complete", 0) ? total : p->offset));
        snprintf(len, sizeof(len), "%llu", (unsigned long long)total);
        cm_http_add_header(req, "Upload-Offset", off);
        cm_http_add_header(req, "Upload-Length", len);
        if (!cm_bson_bool(&up, "complete", 0))
            expires_header(req, cm_bson_int(&up, "expires_at", 0));
        cm_http_reply_raw(req, 200, NULL, "", 0);
    } else {
        cm_http_reply_error(req, rc, NULL);
    }
    free(p);
    bson_destroy(&up);
}

/* Reads the first `n` bytes (or all) of the parts into `buf`; returns how many. */
static size_t read_prefix(media_ctx *ctx, const parts *p, char *buf, size_t n)
{
    size_t off = 0;
    for (int i = 0; i < p->n && off < n; i++) {
        size_t want = p->lens[i] < n - off ? (size_t)p->lens[i] : n - off, got = 0;
        if (ctx->store->read(ctx->store, p->keys[i], 0, buf + off, want, &got) != CM_OK ||
            got != want)
            return 0;
        off += got;
    }
    return off;
}

/* The last byte arrived: turn the parts into a media object with the upload's id. */
static void finish(cm_http_req *req, media_ctx *ctx, const cm_jwt_claims *c, const bson_t *up,
                   parts *p)
{
    const char *id = cm_bson_str(up, "_id", "");
    uint64_t total = p->offset;
    char type[MEDIA_TYPE_MAX], *head = NULL, *whole = NULL;
    size_t head_len;
    media_settings s;
    media_new n = {0};
    bson_t doc, f = BSON_INITIALIZER, u = BSON_INITIALIZER, set;
    cm_err rc;

    head = malloc(HEAD_BYTES);
    if (head == NULL || media_settings_load(ctx, c->tid, &s) != CM_OK) {
        cm_http_reply_error(req, CM_EIO, "the upload could not be finished; retry the last PATCH");
        goto out;
    }
    head_len = read_prefix(ctx, p, head, HEAD_BYTES);
    if (head_len == 0 || media_magic_type(head, head_len, type) != CM_OK) {
        cm_http_reply_error(req, CM_EIO, "the stored parts cannot be read");
        goto out;
    }
    /* Images are checked from their header, so the whole (small) image is read back. */
    if (media_type_is_image(type) && (int64_t)total <= s.image_max_bytes) {
        whole = malloc(total);
        if (whole == NULL || read_prefix(ctx, p, whole, total) != total) {
            cm_http_reply_error(req, CM_EIO, "the stored parts cannot be read");
            goto out;
        }
    }
    n.id = id;
    n.tenant = c->tid;
    n.uploader = c->sub;
    n.filename = cm_bson_str(up, "filename", NULL);
    n.purpose = cm_bson_str(up, "purpose", "message");
    n.head = head;
    n.head_len = head_len;
    n.whole = whole;
    n.size = total;
    n.nparts = p->n;
    n.part_keys = (const char(*)[MEDIA_KEY_LEN])p->keys;
    n.part_lens = p->lens;
    rc = media_create(req, ctx, &s, &n, &doc);
    if (rc != CM_OK) {
        /* Refused (type, size, pixels, quota): the upload goes, nothing of it is kept. */
        if (rc != CM_EIO && rc != CM_EAGAIN && rc != CM_ETIMEOUT)
            drop_upload(ctx, id, p);
        goto out;
    }
    bson_destroy(&doc);
    /* The blobs now belong to the media object; only the records of the upload go. */
    BSON_APPEND_UTF8(&f, "_id", id);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_BOOL(&set, "complete", true);
    bson_append_document_end(&u, &set);
    cm_mongo_update(ctx->db, MEDIA_COLL_UPLOADS, &f, &u, 0, 0, NULL);
    bson_reinit(&f);
    BSON_APPEND_UTF8(&f, "upload_id", id);
    cm_mongo_delete(ctx->db, MEDIA_COLL_PARTS, &f, 1, NULL);
    {
        char off[24], loc[96];
        snprintf(off, sizeof(off), "%llu", (unsigned long long)total);
        snprintf(loc, sizeof(loc), "/v1/media/%s", id);
        cm_http_add_header(req, "Upload-Offset", off);
        cm_http_add_header(req, "Content-Location", loc);
        cm_http_reply_raw(req, 204, NULL, "", 0);
    }
out:
    bson_destroy(&f);
    bson_destroy(&u);
    free(head);
    free(whole);
}

/* A PATCH body on its way into the store (media_spool.c): one MEDIA_PART_BYTES part in
 * memory at a time, recorded as parts of the upload when the body is complete. */
typedef struct patch_state {
    media_ctx *ctx;
    cm_jwt_claims c;
    bson_t up;
    parts *p;          /* the upload's parts before this PATCH */
    uint64_t offset, total;
    int ck;            /* 1: Upload-Checksum sha1 given */
    unsigned char want[20];
    media_spool *spool;
    cm_err err;
} patch_state;

static void patch_close(void *state)
{
    patch_state *st = state;
    if (st->p)
        bson_destroy(&st->up);
    media_spool_destroy(st->spool);
    free(st->p);
    free(st);
}

/* The checks of a PATCH before any byte of it is stored. */
static void *patch_open(cm_http_req *req, void *ud)
{
    media_ctx *ctx = ud;
    const char *id = cm_http_param(req, "id"), *ct = cm_http_header(req, "Content-Type");
    const char *sum = cm_http_header(req, "Upload-Checksum");
    patch_state *st = calloc(1, sizeof(*st));
    cm_err rc;

    tus_headers(req);
    if (st == NULL) {
        cm_http_reply_error(req, CM_ENOMEM, NULL);
        return NULL;
    }
    st->ctx = ctx;
    st->ck = -2;
    if (cm_auth_bearer(req, ctx->verifier, &st->c) != CM_OK || !version_ok(req))
        goto refuse;
    if (ct == NULL || strcasecmp(ct, "application/offset+octet-stream") != 0) {
        cm_http_problem(req, 415, "unsupported-media-type", "Unsupported Media Type",
                        "PATCH bodies must be sent as application/offset+octet-stream");
        goto refuse;
    }
    if (media_parse_u64(cm_http_header(req, "Upload-Offset"), &st->offset) != 0) {
        cm_http_reply_error(req, CM_EINVAL, "Upload-Offset must be a non-negative integer");
        goto refuse;
    }
    if (sum) {
        st->ck = media_tus_checksum(sum, st->want);
        if (st->ck <= 0) {
            cm_http_reply_error(req, CM_EINVAL, st->ck == 0 ? "Upload-Checksum: only sha1 is supported"
                                                            : "Upload-Checksum must be 'sha1 <base64 digest>'");
            goto refuse;
        }
    }
    rc = load_upload(ctx, &st->c, id, &st->up);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "no such upload" : NULL);
        goto refuse;
    }
    st->p = malloc(sizeof(*st->p));
    if (st->p == NULL) {
        bson_destroy(&st->up);
        cm_http_reply_error(req, CM_ENOMEM, NULL);
        goto refuse;
    }
    st->total = (uint64_t)cm_bson_int(&st->up, "length", 0);
    if (cm_bson_bool(&st->up, "complete", 0)) {
        st->p->offset = st->total;
        st->p->n = 0;
    } else if ((rc = load_parts(ctx, id, st->p)) != CM_OK) {
        cm_http_reply_error(req, rc, NULL);
        goto refuse;
    }
    if (st->offset != st->p->offset) {
        cm_http_problem(req, 409, "offset-mismatch", "Conflict",
                        "Upload-Offset is %llu but the upload is at %llu",
                        (unsigned long long)st->offset, (unsigned long long)st->p->offset);
        goto refuse;
    }
    if (media_spool_create(ctx, st->total - st->offset, st->ck == 1, &st->spool) != CM_OK) {
        cm_http_reply_error(req, CM_ENOMEM, NULL);
        goto refuse;
    }
    return st;
refuse:
    patch_close(st);
    return NULL;
}

static cm_err patch_write(cm_http_req *req, void *state, const char *data, size_t len)
{
    patch_state *st = state;
    (void)req;
    return st->err = media_spool_write(st->spool, data, len);
}

/* Records the spooled parts of this PATCH after the upload's own, at their offsets; the
 * unique (upload_id, offset) index lets one of two racing PATCHes win. Parts that could not
 * be recorded are removed; recorded ones belong to the upload. */
static cm_err record_parts(cm_http_req *req, patch_state *st, const char *id)
{
    const media_spool_parts *sp = media_spool_parts_of(st->spool);
    uint64_t off = st->offset;
    char pid[80];
    cm_err rc = CM_OK;
    int i = 0;

    for (; i < sp->n; i++) {
        bson_t doc = BSON_INITIALIZER;
        snprintf(pid, sizeof(pid), "%s:%llu", id, (unsigned long long)off);
        BSON_APPEND_UTF8(&doc, "_id", pid);
        BSON_APPEND_UTF8(&doc, "upload_id", id);
        BSON_APPEND_INT64(&doc, "offset", (int64_t)off);
        BSON_APPEND_INT64(&doc, "len", (int64_t)sp->lens[i]);
        BSON_APPEND_UTF8(&doc, "key", sp->keys[i]);
        rc = cm_mongo_insert(st->ctx->db, MEDIA_COLL_PARTS, &doc);
        bson_destroy(&doc);
        if (rc != CM_OK)
            break;
        if (st->p->n < MAX_PARTS) {
            snprintf(st->p->keys[st->p->n], MEDIA_KEY_LEN, "%s", sp->keys[i]);
            st->p->lens[st->p->n++] = sp->lens[i];
        }
        st->p->offset += sp->lens[i];
        off += sp->lens[i];
    }
    media_spool_keep(st->spool);
    for (int j = i; j < sp->n; j++)
        st->ctx->store->remove(st->ctx->store, sp->keys[j]);
    if (rc == CM_ECONFLICT)
        cm_http_problem(req, 409, "offset-mismatch", "Conflict",
                        "another request wrote at offset %llu first", (unsigned long long)off);
    else if (rc != CM_OK)
        cm_http_reply_error(req, rc, "the part could not be recorded");
    return rc;
}

/* PATCH /v1/uploads/{id}: appends the body at Upload-Offset (the body streamed in through
 * patch_open and patch_write, which made every check that needs no body). */
void media_tus_patch(cm_http_req *req, void *ud)
{
    patch_state *st = cm_http_body_state(req);
    const char *id = cm_http_param(req, "id");
    const media_spool_parts *sp;
    char off_s[24];
    cm_err rc;

    (void)ud;
    if (st == NULL) { /* open always streams or answers: not reached */
        cm_http_reply_error(req, CM_EINTERNAL, "the upload body was not taken");
        return;
    }
    if (st->err != CM_OK)
        media_spool_discard(st->spool); /* before the answer: nothing of it stays */
    if (st->err == CM_ETOOBIG) {
        cm_http_reply_error(req, CM_EINVAL, "the body goes past Upload-Length");
        return;
    }
    rc = st->err == CM_OK ? media_spool_finish(st->spool) : st->err;
    if (rc != CM_OK) {
        media_spool_discard(st->spool);
        cm_http_reply_error(req, rc, "the storage backend failed");
        return;
    }
    sp = media_spool_parts_of(st->spool);
    if (st->ck == 1 && memcmp(sp->sha1, st->want, 20) != 0) {
        media_spool_discard(st->spool);
        cm_http_problem(req, 460, "checksum-mismatch", "Checksum Mismatch",
                        "the body's sha1 differs from Upload-Checksum; nothing was stored");
        return;
    }
    if (sp->size > 0 && record_parts(req, st, id) != CM_OK)
        return;
    if (st->p->offset == st->total && sp->size > 0) {
        finish(req, st->ctx, &st->c, &st->up, st->p);
        return;
    }
    snprintf(off_s, sizeof(off_s), "%llu", (unsigned long long)st->p->offset);
    cm_http_add_header(req, "Upload-Offset", off_s);
    if (!cm_bson_bool(&st->up, "complete", 0))
        expires_header(req, cm_bson_int(&st->up, "expires_at", 0));
    cm_http_reply_raw(req, 204, NULL, "", 0);
}

const cm_http_body_sink media_tus_patch_sink = {patch_open, patch_write, patch_close};

/* DELETE /v1/uploads/{id} (termination). */
void media_tus_delete(cm_http_req *req, void *ud)
{
    media_ctx *ctx = ud;
    cm_jwt_claims c;
    const char *id = cm_http_param(req, "id");
    parts *p = NULL;
    bson_t up;
    cm_err rc;

    tus_headers(req);
    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK || !version_ok(req))
        return;
    rc = load_upload(ctx, &c, id, &up);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "no such upload" : NULL);
        return;
    }
    if (cm_bson_bool(&up, "complete", 0)) {
        bson_destroy(&up);
        cm_http_reply_error(req, CM_ECONFLICT, "the upload is complete; delete the media object instead");
        return;
    }
    bson_destroy(&up);
    p = malloc(sizeof(*p));
    if (p == NULL || (rc = load_parts(ctx, id, p)) != CM_OK) {
        free(p);
        cm_http_reply_error(req, p ? rc : CM_ENOMEM, NULL);
        return;
    }
    drop_upload(ctx, id, p);
    free(p);
    cm_http_reply_raw(req, 204, NULL, "", 0);
}
