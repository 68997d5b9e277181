/* media_objects.c - media objects: the API rendering, tenant-scoped lookup, the checks every
 * upload path shares (type from the bytes, size, pixels, quota, rate), deletion, and the
 * GET and DELETE /v1/media/{id} handlers. */
#include <stdio.h>
#include <string.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/uuid.h"
#include "media.h"

cm_err media_new_key(char key[MEDIA_KEY_LEN])
{
    return cm_random_hex(key, (MEDIA_KEY_LEN - 1) / 2);
}

static void add_time(cJSON *o, const char *name, const bson_t *doc, const char *field)
{
    char ts[CM_RFC3339_LEN];
    int64_t ms = cm_bson_int(doc, field, -1);
    if (ms < 0)
        return;
    cm_clock_rfc3339(ms, ts);
    cJSON_AddStringToObject(o, name, ts);
}

cJSON *media_json(const bson_t *doc)
{
    cJSON *o = cJSON_CreateObject(), *vars = cJSON_CreateArray();
    const char *reason = cm_bson_str(doc, "failure_reason", NULL);
    const char *filename = cm_bson_str(doc, "filename", NULL);
    bson_iter_t it, sub;

    cJSON_AddStringToObject(o, "id", cm_bson_str(doc, "_id", ""));
    cJSON_AddStringToObject(o, "uploader", cm_bson_str(doc, "uploader", ""));
    cJSON_AddStringToObject(o, "status", cm_bson_str(doc, "status", ""));
    cJSON_AddStringToObject(o, "content_type", cm_bson_str(doc, "content_type", ""));
    cJSON_AddStringToObject(o, "kind", cm_bson_str(doc, "kind", ""));
    cJSON_AddStringToObject(o, "purpose", cm_bson_str(doc, "purpose", "message"));
    cJSON_AddNumberToObject(o, "size", (double)cm_bson_int(doc, "size", 0));
    if (filename)
        cJSON_AddStringToObject(o, "filename", filename);
    if (cm_bson_int(doc, "width", 0) > 0) {
        cJSON_AddNumberToObject(o, "width", (double)cm_bson_int(doc, "width", 0));
        cJSON_AddNumberToObject(o, "height", (double)cm_bson_int(doc, "height", 0));
    }
    if (reason)
        cJSON_AddStringToObject(o, "failure_reason", reason);
    add_time(o, "created_at", doc, "created_at");
    add_time(o, "processed_at", doc, "processed_at");
    if (bson_iter_init_find(&it, doc, "variants") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
        bson_iter_recurse(&it, &sub)) {
        while (bson_iter_next(&sub)) {
            uint32_t len;
            const uint8_t *data;
            bson_t v;
            if (!BSON_ITER_HOLDS_DOCUMENT(&sub))
                continue;
            bson_iter_document(&sub, &len, &data);
            if (!bson_init_static(&v, data, len))
                continue;
            cJSON *vo = cJSON_CreateObject();
            cJSON_AddStringToObject(vo, "name", bson_iter_key(&sub));
            cJSON_AddStringToObject(vo, "content_type", cm_bson_str(&v, "content_type", ""));
            cJSON_AddNumberToObject(vo, "size", (double)cm_bson_int(&v, "size", 0));
            cJSON_AddNumberToObject(vo, "width", (double)cm_bson_int(&v, "width", 0));
            cJSON_AddNumberToObject(vo, "height", (double)cm_bson_int(&v, "height", 0));
            cJSON_AddItemToArray(vars, vo);
        }
    }
    cJSON_AddItemToObject(o, "variants", vars);
    return o;
}

cm_err media_find(media_ctx *ctx, const char *tenant, const char *id, bson_t *out)
{
    cm_err rc;

    if (id == NULL || !cm_uuid_valid(id))
        return CM_ENOTFOUND;
    rc = cm_mongo_find_owned(ctx->db, MEDIA_COLL, id, tenant, NULL, out);
    if (rc == CM_OK && strcmp(cm_bson_str(out, "status", ""), "deleted") == 0) {
        bson_destroy(out);
        rc = CM_ENOTFOUND;
    }
    return rc;
}

int media_rate_limited(cm_http_req *req, media_ctx *ctx, const media_settings *s,
                       const cm_jwt_claims *c)
{
    char key[300], retry[24], lim[24], rem[24];
    int64_t count = 0, ms = 0;

    if (s->uploads_per_minute <= 0)
        return 0;
    snprintf(key, sizeof(key), "rl:media:%s:%s", c->tid, c->sub);
    if (cm_redis_window_incr(ctx->redis, key, 60000, &count, &ms) != CM_OK) {
        cm_warn("upload rate limit skipped: Redis unavailable");
        return 0;
    }
    snprintf(lim, sizeof(lim), "%lld", (long long)s->uploads_per_minute);
    snprintf(rem, sizeof(rem), "%lld",
             (long long)(count >= s->uploads_per_minute ? 0 : s->uploads_per_minute - count));
    snprintf(retry, sizeof(retry), "%lld", (long long)(ms + 999) / 1000);
    cm_http_add_header(req, "RateLimit-Limit", lim);
    cm_http_add_header(req, "RateLimit-Remaining", rem);
    cm_http_add_header(req, "RateLimit-Reset", retry);
    if (count <= s->uploads_per_minute)
        return 0;
    cm_http_add_header(req, "Retry-After", retry);
    cm_http_reply_error(req, CM_ELIMIT, "at most the tenant's number of uploads per minute may be made");
    return 1;
}

static int64_t usage_bytes(media_ctx *ctx, const char *tenant)
{
    bson_t f = BSON_INITIALIZER, doc;
    int64_t used = 0;
    BSON_APPEND_UTF8(&f, "_id", tenant);
    if (cm_mongo_find_one(ctx->db, MEDIA_COLL_USAGE, &f, NULL, &doc) == CM_OK) {
        used = cm_bson_int(&doc, "bytes", 0);
        bson_destroy(&doc);
    }
    bson_destroy(&f);
    return used;
}

int media_over_quota(cm_http_req *req, media_ctx *ctx, const media_settings *s,
                     const char *tenant, uint64_t add)
{
    int64_t used;
    if (s->quota_bytes <= 0)
        return 0;
    used = usage_bytes(ctx, tenant);
    if (used + (int64_t)add <= s->quota_bytes)
        return 0;
    cm_http_problem(req, 413, "quota-exceeded", "Storage Quota Exceeded",
                    "the tenant stores %lld of its %lld bytes; %llu more do not fit",
                    (long long)used, (long long)s->quota_bytes, (unsigned long long)add);
    return 1;
}

void media_usage_add(media_ctx *ctx, const char *tenant, int64_t delta)
{
    bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, inc;
    BSON_APPEND_UTF8(&f, "_id", tenant);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$inc", &inc);
    BSON_APPEND_INT64(&inc, "bytes", delta);
    bson_append_document_end(&u, &inc);
    /* Best effort: the count only steers the quota (FerretDB may lose concurrent $inc). */
    if (cm_mongo_update(ctx->db, MEDIA_COLL_USAGE, &f, &u, 1, 0, NULL) != CM_OK)
        cm_warn("usage of tenant %s not updated by %lld bytes", tenant, (long long)delta);
    bson_destroy(&f);
    bson_destroy(&u);
}

static void hex(const unsigned char *in, size_t n, char *out)
{
    static const char h[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = h[in[i] >> 4];
        out[2 * i + 1] = h[in[i] & 15];
    }
    out[2 * n] = '\0';
}

cm_err media_create(cm_http_req *req, media_ctx *ctx, const media_settings *s,
                    const media_new *n, bson_t *doc)
{
    char type[MEDIA_TYPE_MAX], why[256], sha[65], k[16];
    int w = 0, h = 0, image;
    int64_t limit, now = cm_clock_now_ms();
    bson_t parts, part, set;
    char one_key[1][MEDIA_KEY_LEN];
    const char (*keys)[MEDIA_KEY_LEN] = n->part_keys;
    const uint64_t *lens = n->part_lens;
    int nparts = n->nparts;
    cm_err rc;

    if (n->size == 0) {
        cm_http_reply_error(req, CM_EINVAL, "the upload is empty");
        return CM_EINVAL;
    }
    if (media_magic_type(n->head, n->head_len, type) != CM_OK) {
        cm_http_reply_error(req, CM_EINTERNAL, "the type could not be determined");
        return CM_EINTERNAL;
    }
    if (!media_type_allowed(s, type)) {
        cm_http_problem(req, 415, "unsupported-media-type", "Unsupported Media Type",
                        "the bytes are %s, which this tenant does not accept", type);
        return CM_EINVAL;
    }
    limit = media_size_limit(s, type);
    if ((int64_t)n->size > limit) {
        cm_http_problem(req, 413, "too-large", "Content Too Large",
                        "%s uploads may be at most %lld bytes; this one has %llu", type,
                        (long long)limit, (unsigned long long)n->size);
        return CM_ETOOBIG;
    }
    image = media_type_is_image(type);
    if (image) {
        if (n->whole == NULL) {
            cm_http_reply_error(req, CM_EINTERNAL, "the image is not in memory");
            return CM_EINTERNAL;
        }
        rc = media_image_probe(n->whole, (size_t)n->size, type, s->pixel_max, &w, &h, why,
                               sizeof(why));
        if (rc != CM_OK) {
            cm_http_problem(req, 422, rc == CM_ETOOBIG ? "too-many-pixels" : "invalid-image",
                            rc == CM_ETOOBIG ? "Image Too Large" : "Invalid Image", "%s", why);
            return rc;
        }
    }
    if (media_over_quota(req, ctx, s, n->tenant, n->size))
        return CM_ETOOBIG;
    if (n->nparts == 0) {
        /* A single upload in memory: stored only now that every check has passed. */
        if (media_new_key(one_key[0]) != CM_OK) {
            cm_http_reply_error(req, CM_EINTERNAL, "the random source failed");
            return CM_EINTERNAL;
        }
        rc = ctx->store->put(ctx->store, one_key[0], n->whole, (size_t)n->size);
        if (rc != CM_OK) {
            cm_http_reply_error(req, rc, "the storage backend failed");
            return rc;
        }
        keys = one_key;
        lens = &n->size;
        nparts = 1;
    }

    bson_init(doc);
    BSON_APPEND_UTF8(doc, "_id", n->id);
    BSON_APPEND_UTF8(doc, "tenant", n->tenant);
    BSON_APPEND_UTF8(doc, "uploader", n->uploader);
    if (n->filename && n->filename[0])
        BSON_APPEND_UTF8(doc, "filename", n->filename);
    BSON_APPEND_UTF8(doc, "purpose", n->purpose ? n->purpose : "message");
    BSON_APPEND_UTF8(doc, "content_type", type);
    BSON_APPEND_UTF8(doc, "kind", image ? "image" : "file");
    BSON_APPEND_INT64(doc, "size", (int64_t)n->size);
    if (n->sha256) {
        hex(n->sha256, 32, sha);
        BSON_APPEND_UTF8(doc, "sha256", sha);
    }
    if (image) {
        BSON_APPEND_INT32(doc, "width", w);
        BSON_APPEND_INT32(doc, "height", h);
    }
    BSON_APPEND_ARRAY_BEGIN(doc, "parts", &parts);
    for (int i = 0; i < nparts; i++) {
        snprintf(k, sizeof(k), "%d", i);
        BSON_APPEND_DOCUMENT_BEGIN(&parts, k, &part);
        BSON_APPEND_UTF8(&part, "key", keys[i]);
        BSON_APPEND_INT64(&part, "len", (int64_t)lens[i]);
        bson_append_document_end(&parts, &part);
    }
    bson_append_array_end(doc, &parts);
    BSON_APPEND_UTF8(doc, "status", "pending");
    BSON_APPEND_DATE_TIME(doc, "created_at", now);
    BSON_APPEND_UTF8(doc, "request_id", cm_http_request_id(req));
    /* The pending event travels in the same insert: stored means it will be published. */
    bson_init(&set);
    rc = media_pending_set(&set, "media.uploaded", now);
    if (rc == CM_OK && !bson_concat(doc, &set))
        rc = CM_ENOMEM;
    bson_destroy(&set);
    if (rc == CM_OK)
        rc = cm_mongo_insert(ctx->db, MEDIA_COLL, doc);
    if (rc != CM_OK) {
        bson_destroy(doc);
        if (n->nparts == 0)
            ctx->store->remove(ctx->store, one_key[0]);
        cm_http_reply_error(req, rc, "the media could not be stored");
        return rc;
    }
    media_usage_add(ctx, n->tenant, (int64_t)n->size);
    media_publish(ctx, doc);
    return CM_OK;
}

/* Calls fn for each storage key a document references: parts, variants and staging. */
static void each_key(const bson_t *doc, void (*fn)(media_ctx *ctx, const char *key),
                     media_ctx *ctx)
{
    bson_iter_t it, sub, k;
    if (bson_iter_init_find(&it, doc, "parts") && bson_iter_recurse(&it, &sub))
        while (bson_iter_next(&sub))
            if (bson_iter_recurse(&sub, &k) && bson_iter_find(&k, "key") &&
                BSON_ITER_HOLDS_UTF8(&k))
                fn(ctx, bson_iter_utf8(&k, NULL));
    if (bson_iter_init_find(&it, doc, "variants") && bson_iter_recurse(&it, &sub))
        while (bson_iter_next(&sub))
            if (bson_iter_recurse(&sub, &k) && bson_iter_find(&k, "key") &&
                BSON_ITER_HOLDS_UTF8(&k))
                fn(ctx, bson_iter_utf8(&k, NULL));
    if (bson_iter_init_find(&it, doc, "staging") && bson_iter_recurse(&it, &sub))
        while (bson_iter_next(&sub))
            if (BSON_ITER_HOLDS_UTF8(&sub))
                fn(ctx, bson_iter_utf8(&sub, NULL));
}

static void remove_key(media_ctx *ctx, const char *key)
{
    if (ctx->store->remove(ctx->store, key) != CM_OK)
        cm_warn("blob %s not removed; the expiry job retries", key);
}

cm_err media_delete_doc(media_ctx *ctx, const bson_t *doc)
{
    bson_t f = BSON_INITIALIZER, ne, u = BSON_INITIALIZER, set, after;
    const char *id = cm_bson_str(doc, "_id", "");
    int64_t now = cm_clock_now_ms();
    cm_err rc;

    BSON_APPEND_UTF8(&f, "_id", id);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "status", &ne);
    BSON_APPEND_UTF8(&ne, "$ne", "deleted");
    bson_append_document_end(&f, &ne);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_UTF8(&set, "status", "deleted");
    BSON_APPEND_DATE_TIME(&set, "deleted_at", now);
    rc = media_pending_set(&set, "media.deleted", now);
    bson_append_document_end(&u, &set);
    if (rc == CM_OK)
        rc = cm_mongo_find_and_modify(ctx->db, MEDIA_COLL, &f, NULL, &u, 0, 1, &after);
    bson_destroy(&f);
    bson_destroy(&u);
    if (rc == CM_ENOTFOUND)
        return CM_OK; /* already deleted: nothing more to do */
    if (rc != CM_OK)
        return rc;
    /* Only the caller that flipped the status gives the bytes back. */
    each_key(&after, remove_key, ctx);
    media_usage_add(ctx, cm_bson_str(&after, "tenant", ""), -cm_bson_int(&after, "size", 0));
    media_publish(ctx, &after);
    bson_destroy(&after);
    return CM_OK;
}

void media_remove_blobs(media_ctx *ctx, const bson_t *doc)
{
    each_key(doc, remove_key, ctx);
}

/* GET /v1/media/{id}: the uploader, a tenant admin, members (media_find_readable). */
void media_get(cm_http_req *req, void *ud)
{
    media_ctx *ctx = ud;
    cm_jwt_claims c;
    bson_t doc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK ||
        media_find_readable(req, ctx, &c, &doc) != CM_OK)
        return;
    cm_http_add_header(req, "Cache-Control", "private, no-cache");
    cm_http_reply_json(req, 200, media_json(&doc));
    bson_destroy(&doc);
}

/* DELETE /v1/media/{id}: the uploader or a tenant admin. */
void media_delete(cm_http_req *req, void *ud)
{
    media_ctx *ctx = ud;
    cm_jwt_claims c;
    bson_t doc;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        return;
    rc = media_find(ctx, c.tid, cm_http_param(req, "id"), &doc);
    if (rc == CM_OK && !media_may_read(&doc, &c)) {
        bson_destroy(&doc);
        rc = CM_ENOTFOUND;
    }
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "no such media" : NULL);
        return;
    }
    rc = media_delete_doc(ctx, &doc);
    bson_destroy(&doc);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the media could not be deleted");
        return;
    }
    cm_http_reply_raw(req, 204, NULL, "", 0);
}

cm_err media_ensure_indexes(media_ctx *ctx)
{
    struct {
        const char *coll, *name, *f1, *f2;
        int unique;
    } idx[] = {
        {MEDIA_COLL, "tenant_uploader", "tenant", "uploader", 0},
        {MEDIA_COLL, "pending_since", "pending_since", NULL, 0},
        {MEDIA_COLL, "purpose_created", "purpose", "created_at", 0},
        {MEDIA_COLL_UPLOADS, "complete_expires", "complete", "expires_at", 0},
        {MEDIA_COLL_PARTS, "upload_offset", "upload_id", "offset", 1},
    };
    for (size_t i = 0; i < sizeof(idx) / sizeof(idx[0]); i++) {
        bson_t keys = BSON_INITIALIZER;
        cm_err rc;
        BSON_APPEND_INT32(&keys, idx[i].f1, 1);
        if (idx[i].f2)
            BSON_APPEND_INT32(&keys, idx[i].f2, 1);
        rc = cm_mongo_create_index(ctx->db, idx[i].coll, &keys, idx[i].name, idx[i].unique);
        bson_destroy(&keys);
        if (rc != CM_OK)
            return rc;
    }
    return CM_OK;
}
