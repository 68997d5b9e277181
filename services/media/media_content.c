/* media_content.c - serving bytes: GET|HEAD /v1/media/{id}/content (bearer token),
 * GET /v1/media/{id}/url (a signed URL), GET|HEAD /v1/signed-media/{tenant}/{id}/{variant}
 * (the signed URL itself, no Authorization), and the internal attachment check the messaging
 * service calls.
 *
 * Every content response carries: a single byte range when asked (RFC 9110 section 14: 206
 * with Content-Range, 416 with "bytes * / size"), a strong ETag answered by If-None-Match with
 * 304 and honoured by If-Range, X-Content-Type-Options: nosniff, a sandboxing
 * Content-Security-Policy, Content-Disposition: inline only for the image types the service
 * re-encodes itself and attachment for everything else, and private caching. Images are
 * served only from their processed variants, which carry no metadata (EXIF, GPS). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/log.h"
#include "media.h"

#define WINDOW (1u << 20) /* bytes read from storage at a time while streaming */
#define MAX_PARTS 4096

typedef struct blob_reader {
    media_store *store;
    int nparts;
    char (*keys)[MEDIA_KEY_LEN];
    uint64_t *lens;
    uint64_t start; /* first byte of the range within the object */
    char *buf;      /* window of the object: [buf_off, buf_off + buf_len) */
    uint64_t buf_off;
    size_t buf_len;
} blob_reader;

static void reader_free(void *ud)
{
    blob_reader *r = ud;
    if (r == NULL)
        return;
    free(r->keys);
    free(r->lens);
    free(r->buf);
    free(r);
}

/* Refills the window with bytes of the object from `abs`, within one part. */
static int reader_fill(blob_reader *r, uint64_t abs)
{
    uint64_t base = 0;
    for (int i = 0; i < r->nparts; i++) {
        if (abs < base + r->lens[i]) {
            uint64_t off = abs - base, left = r->lens[i] - off;
            size_t want = left < WINDOW ? (size_t)left : WINDOW, got = 0;
            cm_err rc = r->store->read(r->store, r->keys[i], off, r->buf, want, &got);
            if (rc != CM_OK || got == 0) {
                cm_error("blob %s unreadable at %llu: %s", r->keys[i],
                         (unsigned long long)off, cm_strerror(rc));
                return -1;
            }
            r->buf_off = abs;
            r->buf_len = got;
            return 0;
        }
        base += r->lens[i];
    }
    return -1;
}

static long reader_read(void *ud, uint64_t pos, char *buf, size_t max)
{
    blob_reader *r = ud;
    uint64_t abs = r->start + pos;
    size_t n;
    if (abs < r->buf_off || abs >= r->buf_off + r->buf_len)
        if (reader_fill(r, abs) != 0)
            return -1;
    n = (size_t)(r->buf_off + r->buf_len - abs);
    if (n > max)
        n = max;
    memcpy(buf, r->buf + (abs - r->buf_off), n);
    return (long)n;
}

/* What one variant of a media object is made of. */
typedef struct served {
    char type[MEDIA_TYPE_MAX];
    char etag[72];
    uint64_t size;
    int nparts;
    char (*keys)[MEDIA_KEY_LEN];
    uint64_t *lens;
} served;

static void served_cleanup(served *s)
{
    free(s->keys);
    free(s->lens);
    s->keys = NULL;
    s->lens = NULL;
}

static int add_part(served *s, const char *key, uint64_t len)
{
    if (s->nparts == MAX_PARTS || strlen(key) >= MEDIA_KEY_LEN)
        return -1;
    if (s->nparts % 16 == 0) {
        void *k = realloc(s->keys, (size_t)(s->nparts + 16) * MEDIA_KEY_LEN);
        if (k == NULL)
            return -1;
        s->keys = k;
        void *l = realloc(s->lens, (size_t)(s->nparts + 16) * sizeof(uint64_t));
        if (l == NULL)
            return -1;
        s->lens = l;
    }
    snprintf(s->keys[s->nparts], MEDIA_KEY_LEN, "%s", key);
    s->lens[s->nparts++] = len;
    s->size += len;
    return 0;
}

/* Resolves `variant` of `doc`. On a refusal answers the problem and returns non-CM_OK. */
static cm_err resolve(cm_http_req *req, const bson_t *doc, const char *variant, served *out)
{
    const char *status = cm_bson_str(doc, "status", "");
    char path[64];
    bson_iter_t it, sub, k;

    memset(out, 0, sizeof(*out));
    if (!media_variant_valid(variant)) {
        cm_http_reply_error(req, CM_EINVAL, "variant must be original, thumb_128, thumb_512 or thumb_1024");
        return CM_EINVAL;
    }
    if (strcmp(cm_bson_str(doc, "kind", ""), "image") == 0) {
        bson_t v;
        uint32_t len;
        const uint8_t *data;
        /* Images are served only from their stripped, re-encoded variants. */
        if (strcmp(status, "processed") != 0) {
            if (strcmp(status, "failed") == 0)
                cm_http_problem(req, 409, "media-failed", "Processing Failed",
                                "the image could not be processed: %s",
                                cm_bson_str(doc, "failure_reason", "unknown"));
            else {
                cm_http_add_header(req, "Retry-After", "1");
                cm_http_problem(req, 409, "media-processing", "Not Processed Yet",
                                "the image is still being processed; retry shortly");
            }
            return CM_ECONFLICT;
        }
        snprintf(path, sizeof(path), "variants.%s", variant);
        if (!bson_iter_init(&it, doc) || !bson_iter_find_descendant(&it, path, &sub) ||
            !BSON_ITER_HOLDS_DOCUMENT(&sub)) {
            cm_http_reply_error(req, CM_ENOTFOUND, "this media has no such variant");
            return CM_ENOTFOUND;
        }
        bson_iter_document(&sub, &len, &data);
        if (!bson_init_static(&v, data, len) ||
            add_part(out, cm_bson_str(&v, "key", ""), (uint64_t)cm_bson_int(&v, "size", 0))) {
            cm_http_reply_error(req, CM_EINTERNAL, "the variant record is damaged");
            return CM_EINTERNAL;
        }
        snprintf(out->type, sizeof(out->type), "%s", cm_bson_str(&v, "content_type", ""));
        snprintf(out->etag, sizeof(out->etag), "\"%.64s\"", cm_bson_str(&v, "sha256", ""));
        return CM_OK;
    }
    if (strcmp(variant, "original") != 0) {
        cm_http_reply_error(req, CM_ENOTFOUND, "only images have thumbnails");
        return CM_ENOTFOUND;
    }
    if (bson_iter_init_find(&it, doc, "parts") && bson_iter_recurse(&it, &sub)) {
        while (bson_iter_next(&sub)) {
            const char *key = NULL;
            int64_t len = -1;
            if (bson_iter_recurse(&sub, &k))
                while (bson_iter_next(&k)) {
                    if (strcmp(bson_iter_key(&k), "key") == 0 && BSON_ITER_HOLDS_UTF8(&k))
                        key = bson_iter_utf8(&k, NULL);
                    else if (strcmp(bson_iter_key(&k), "len") == 0)
                        len = bson_iter_as_int64(&k);
                }
            if (key == NULL || len < 0 || add_part(out, key, (uint64_t)len) != 0) {
                served_cleanup(out);
                cm_http_reply_error(req, CM_EINTERNAL, "the media record is damaged");
                return CM_EINTERNAL;
            }
        }
    }
    snprintf(out->type, sizeof(out->type), "%s", cm_bson_str(doc, "content_type", ""));
    if (cm_bson_str(doc, "sha256", NULL))
        snprintf(out->etag, sizeof(out->etag), "\"%.64s\"", cm_bson_str(doc, "sha256", ""));
    else if (out->nparts > 0)
        snprintf(out->etag, sizeof(out->etag), "\"%s-%llu\"", out->keys[0],
                 (unsigned long long)out->size);
    return CM_OK;
}

/* Answers with the bytes of `variant` of `doc`, honouring conditional and range headers. */
static void serve(cm_http_req *req, media_ctx *ctx, const bson_t *doc, const char *variant,
                  const char *cache_control)
{
    served s;
    char disp[700], range[96];
    const char *if_range = cm_http_header(req, "If-Range");
    uint64_t first = 0, last = 0;
    media_range mr;
    blob_reader *r;
    int status = 200;

    if (resolve(req, doc, variant, &s) != CM_OK)
        return;
    if (media_content_disposition(s.type, cm_bson_str(doc, "filename", NULL), disp,
                                  sizeof(disp)) != 0)
        snprintf(disp, sizeof(disp), "attachment");
    cm_http_add_header(req, "ETag", s.etag);
    cm_http_add_header(req, "Cache-Control", cache_control);
    cm_http_add_header(req, "X-Content-Type-Options", "nosniff");
    cm_http_add_header(req, "Content-Security-Policy", "default-src 'none'; sandbox");
    cm_http_add_header(req, "Content-Disposition", disp);
    cm_http_add_header(req, "Accept-Ranges", "bytes");
    if (media_etag_match(cm_http_header(req, "If-None-Match"), s.etag)) {
        served_cleanup(&s);
        cm_http_reply_raw(req, 304, NULL, "", 0);
        return;
    }
    /* If-Range: a range of another version would splice two versions; send it whole. */
    mr = (if_range && strcmp(if_range, s.etag) != 0)
             ? MEDIA_RANGE_NONE
             : media_range_parse(cm_http_header(req, "Range"), s.size, &first, &last);
    if (mr == MEDIA_RANGE_UNSATISFIABLE) {
        snprintf(range, sizeof(range), "bytes */%llu", (unsigned long long)s.size);
        cm_http_add_header(req, "Content-Range", range);
        served_cleanup(&s);
        cm_http_problem(req, 416, "range-not-satisfiable", "Range Not Satisfiable",
                        "the representation has %s bytes", range + 8);
        return;
    }
    if (mr == MEDIA_RANGE_OK) {
        status = 206;
        snprintf(range, sizeof(range), "bytes %llu-%llu/%llu", (unsigned long long)first,
                 (unsigned long long)last, (unsigned long long)s.size);
        cm_http_add_header(req, "Content-Range", range);
    } else {
        first = 0;
        last = s.size ? s.size - 1 : 0;
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL || (r->buf = malloc(WINDOW)) == NULL) {
        free(r);
        served_cleanup(&s);
        cm_http_reply_error(req, CM_ENOMEM, NULL);
        return;
    }
    r->store = ctx->store;
    r->nparts = s.nparts;
    r->keys = s.keys; /* taken over by the reader */
    r->lens = s.lens;
    r->start = first;
    r->buf_len = 0;
    cm_http_reply_stream(req, status, s.type, s.size ? last - first + 1 : 0, reader_read, r,
                         reader_free);
}

static const char *variant_of(cm_http_req *req)
{
    const char *v = cm_http_query(req, "variant");
    return v && *v ? v : "original";
}

/* GET|HEAD /v1/media/{id}/content?variant= */
void media_content(cm_http_req *req, void *ud)
{
    media_ctx *ctx = ud;
    cm_jwt_claims c;
    bson_t doc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK ||
        media_find_readable(req, ctx, &c, &doc) != CM_OK)
        return;
    serve(req, ctx, &doc, variant_of(req), "private, max-age=300");
    bson_destroy(&doc);
}

/* GET /v1/media/{id}/url?variant=&ttl= : a URL usable without Authorization until it expires. */
void media_url(cm_http_req *req, void *ud)
{
    media_ctx *ctx = ud;
    const char *variant = variant_of(req);
    cm_jwt_claims c;
    long ttl;
    int64_t exp;
    char sig[48], url[768], ts[CM_RFC3339_LEN];
    bson_t doc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        return;
    if (!media_variant_valid(variant)) {
        cm_http_reply_error(req, CM_EINVAL, "variant must be original, thumb_128, thumb_512 or thumb_1024");
        return;
    }
    if (cm_http_query_long(req, "ttl", 300, 1, MEDIA_URL_TTL_MAX, &ttl) != CM_OK)
        return;
    if (media_find_readable(req, ctx, &c, &doc) != CM_OK)
        return;
    exp = cm_clock_now_ms() / 1000 + ttl;
    if (media_url_sign(&ctx->url_keys[0], c.tid, cm_bson_str(&doc, "_id", ""), variant, exp,
                       sig, sizeof(sig)) != 0 ||
        snprintf(url, sizeof(url), "%s/v1/signed-media/%s/%s/%s?expires=%lld&kid=%s&sig=%s",
                 ctx->public_base, c.tid, cm_bson_str(&doc, "_id", ""), variant,
                 (long long)exp, ctx->url_keys[0].id, sig) >= (int)sizeof(url)) {
        bson_destroy(&doc);
        cm_http_reply_error(req, CM_EINTERNAL, "the URL could not be signed");
        return;
    }
    bson_destroy(&doc);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "url", url);
    cJSON_AddStringToObject(o, "variant", variant);
    cm_clock_rfc3339(exp * 1000, ts);
    cJSON_AddStringToObject(o, "expires_at", ts);
    cm_http_add_header(req, "Cache-Control", "no-store");
    cm_http_reply_json(req, 200, o);
}

/* GET|HEAD /v1/signed-media/{tenant}/{id}/{variant}?expires=&kid=&sig= */
void media_signed(cm_http_req *req, void *ud)
{
    media_ctx *ctx = ud;
    const char *tenant = cm_http_param(req, "tenant"), *id = cm_http_param(req, "id");
    const char *variant = cm_http_param(req, "variant"), *expires = cm_http_query(req, "expires");
    int64_t now = cm_clock_now_ms() / 1000;
    const char *why = media_url_check(ctx->url_keys, ctx->nurl_keys, tenant, id, variant,
                                      expires, cm_http_query(req, "kid"),
                                      cm_http_query(req, "sig"), now);
    char cache[64];
    uint64_t exp = 0;
    bson_t doc;
    cm_err rc;

    if (why != NULL) {
        cm_http_problem(req, 403, "bad-signature", "Forbidden", "%s", why);
        return;
    }
    rc = media_find(ctx, tenant, id, &doc);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "no such media" : NULL);
        return;
    }
    media_parse_u64(expires, &exp);
    /* A browser may keep it as long as the URL itself is valid, and no longer. */
    snprintf(cache, sizeof(cache), "private, max-age=%lld",
             (long long)((int64_t)exp > now ? (int64_t)exp - now : 0));
    serve(req, ctx, &doc, variant, cache);
    bson_destroy(&doc);
}

/* GET /internal/v1/media/{id}/attachable?tenant=&user= : the messaging service's check that
 * a message may reference this media: it exists in that tenant, was uploaded by that user
 * and is processed. 200 with the Media object; 404 unknown (or another tenant's); 409 with
 * the reason otherwise. Not routed by the gateway: services call it directly. */
void media_internal_check(cm_http_req *req, void *ud)
{
    media_ctx *ctx = ud;
    const char *tenant = cm_http_query(req, "tenant"), *user = cm_http_query(req, "user");
    bson_t doc;
    cm_err rc;

    if (tenant == NULL || *tenant == '\0' || user == NULL || !cm_user_id_valid(user)) {
        cm_http_reply_error(req, CM_EINVAL, "query parameters 'tenant' and 'user' are required");
        return;
    }
    rc = media_find(ctx, tenant, cm_http_param(req, "id"), &doc);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "no such media" : NULL);
        return;
    }
    if (strcmp(cm_bson_str(&doc, "uploader", ""), user) != 0)
        cm_http_problem(req, 409, "media-not-attachable", "Not Attachable",
                        "the media was uploaded by another user");
    else if (strcmp(cm_bson_str(&doc, "status", ""), "processed") != 0)
        cm_http_problem(req, 409, "media-not-attachable", "Not Attachable",
                        "the media is %s, not processed", cm_bson_str(&doc, "status", ""));
    else
        cm_http_reply_json(req, 200, media_json(&doc));
    bson_destroy(&doc);
}
