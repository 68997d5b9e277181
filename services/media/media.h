/* media.h - the media service's shared context, its storage interface, its rules and the
 * functions its files offer. */
#ifndef MEDIA_H
#define MEDIA_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "common/http.h"
#include "common/jwt.h"
#include "common/kafka.h"
#include "common/mongo.h"
#include "common/redis.h"

#define MEDIA_COLL "media"
#define MEDIA_COLL_SETTINGS "tenant_settings"
#define MEDIA_COLL_USAGE "tenant_usage"
#define MEDIA_COLL_UPLOADS "uploads"
#define MEDIA_COLL_PARTS "upload_parts"

#define MEDIA_KEY_LEN 33        /* storage key: 16 random bytes as hex, and the NUL */
#define MEDIA_TYPE_MAX 96       /* bytes of a MIME type */
#define MEDIA_FILENAME_MAX 255  /* bytes of a client file name */
#define MEDIA_ALLOW_MAX 32      /* types in a tenant's allowlist */
#define MEDIA_URL_TTL_MAX 900   /* seconds a signed URL may live (issue 8: at most 15 minutes) */
#define MEDIA_URL_KEYS_MAX 8

/* --- storage: one interface, two backends ------------------------------------------------- */

/* A blob store. Blobs are immutable, named by random keys. Every call is thread-safe. */
typedef struct media_store media_store;
struct media_store {
    const char *name; /* "gridfs" or "s3" */
    /* Stores `len` bytes under `key`. CM_EIO when the backend fails. */
    cm_err (*put)(media_store *s, const char *key, const void *data, size_t len);
    /* Reads up to `n` bytes from `offset` into `buf`; `*got` is how many (short at the end).
     * CM_ENOTFOUND when the blob is absent. */
    cm_err (*read)(media_store *s, const char *key, uint64_t offset, void *buf, size_t n,
                   size_t *got);
    /* Removes the blob; CM_OK also when it was already gone (deletes are retried). */
    cm_err (*remove)(media_store *s, const char *key);
    void (*destroy)(media_store *s);
};

/* The GridFS backend on `db`, bucket `bucket` (media_store_gridfs.c). */
cm_err media_store_gridfs_create(cm_mongo *db, const char *bucket, media_store **out);

/* The S3 backend (media_store_s3.c): path-style requests to `endpoint`
 * ("http://127.0.0.1:9000"), bucket `bucket`, signed with AWS SigV4 by libcurl
 * (CURLOPT_AWS_SIGV4) for `region` with the access key pair. Everything is copied. */
cm_err media_store_s3_create(const char *endpoint, const char *bucket, const char *region,
                             const char *access_key, const char *secret_key, media_store **out);

/* --- streaming uploads into parts (media_spool.c) ------------------------------------------ */

/* Bytes of one stored part of an upload body: what an upload holds in memory at a time.
 * 4 MiB: a few per server thread is affordable, and S3 and GridFS take a part in one call. */
#define MEDIA_PART_BYTES (4u << 20)
#define MEDIA_PARTS_MAX 4096      /* parts of one media object (media_content.c reads them) */
#define MEDIA_HEAD_BYTES 65536    /* first bytes kept for libmagic */

typedef struct media_spool media_spool;
typedef struct media_ctx media_ctx;

/* What a spool has stored so far; digests only after media_spool_finish. */
typedef struct media_spool_parts {
    int n, cap;
    char (*keys)[MEDIA_KEY_LEN];
    uint64_t *lens;
    uint64_t size;                 /* bytes written */
    char head[MEDIA_HEAD_BYTES];   /* the first bytes */
    size_t head_len;
    unsigned char sha256[32];
    unsigned char sha1[20];        /* when asked for */
} media_spool_parts;

/* Creates a spool that takes at most `limit` bytes, computing SHA-256 (and SHA-1 when
 * `want_sha1`). CM_ENOMEM. */
cm_err media_spool_create(media_ctx *ctx, uint64_t limit, int want_sha1, media_spool **out);

/* Appends `len` bytes; every full MEDIA_PART_BYTES is stored as a part under a new random key.
 * CM_ETOOBIG past the limit (nothing of this call is taken) or MEDIA_PARTS_MAX parts; the
 * store's error when a put fails. After an error the spool takes nothing more. */
cm_err media_spool_write(media_spool *s, const char *data, size_t len);

/* Stores what is left as the last part and finishes the digests. */
cm_err media_spool_finish(media_spool *s);

/* The parts stored (owned by the spool). */
const media_spool_parts *media_spool_parts_of(const media_spool *s);

/* After finish: the whole object in memory (for the image header probe; callers keep this to
 * images, which are capped at a few MiB): the spool's own buffer when it is one part, else read
 * back from the store. Release with media_spool_free_whole. */
cm_err media_spool_whole(media_spool *s, char **out);
void media_spool_free_whole(media_spool *s, char *whole);

/* The parts now belong to something else (a media object, an upload): destroy keeps them. */
void media_spool_keep(media_spool *s);

/* Removes the parts stored so far (unless kept), before a refusal is answered, so a client
 * that reads the answer finds nothing left. */
void media_spool_discard(media_spool *s);

/* Frees the spool and removes its parts from the store unless kept. Accepts NULL. */
void media_spool_destroy(media_spool *s);

/* --- per-tenant settings -------------------------------------------------------------------- */

typedef struct media_settings {
    int64_t image_max_bytes;   /* largest image upload (default 5 MiB, issue 8) */
    int64_t file_max_bytes;    /* largest other upload (default 100 MiB, issue 8) */
    int64_t quota_bytes;       /* bytes stored per tenant; 0: no quota */
    int64_t uploads_per_minute;/* per user; 0: no limit */
    int64_t pixel_max;         /* width x height cap checked from the header (default 50 MP) */
    int64_t message_expiry_days; /* 0: keep; else message media older than this are deleted */
    int delete_on_user_deleted;  /* user.deleted: 1 deletes that user's media, 0 keeps it */
    int nallowed;
    char allowed[MEDIA_ALLOW_MAX][MEDIA_TYPE_MAX]; /* MIME types accepted (from the bytes) */
} media_settings;

/* --- the context ---------------------------------------------------------------------------- */

typedef struct media_url_key {
    char id[32];
    unsigned char secret[64];
    size_t len;
} media_url_key;

typedef struct media_outbox media_outbox;
typedef struct media_worker media_worker;

/* Everything a handler needs; created in main.c, read-only afterwards. */
struct media_ctx {
    cm_mongo *db;
    cm_kafka_producer *kafka;
    cm_redis *redis;
    cm_jwt *verifier;
    media_store *store;
    media_outbox *outbox;
    media_settings defaults;          /* for tenants without their own settings */
    media_url_key url_keys[MEDIA_URL_KEYS_MAX]; /* [0] signs; all verify (rotation) */
    int nurl_keys;
    const char *public_base;          /* prefix of signed URLs ("" : relative) */
    const char *messaging_url;        /* MESSAGING_URL: who sees which attachment ("": none) */
    long messaging_timeout_ms;        /* time allowed to one access check */
    int64_t upload_ttl_s;             /* lifetime of an unfinished tus upload */
    int64_t body_max;                 /* the HTTP body cap: no upload limit may exceed it */
    int64_t outbox_stale_ms;
};

/* --- rules (media_rules.c): plain functions over plain data --------------------------------- */

/* The result of matching a Range header against a representation (RFC 9110 section 14). */
typedef enum media_range {
    MEDIA_RANGE_NONE,          /* no usable Range: send the whole representation with 200 */
    MEDIA_RANGE_OK,            /* one satisfiable range: send [first, last] with 206 */
    MEDIA_RANGE_UNSATISFIABLE, /* answer 416 with Content-Range: bytes * / size */
} media_range;

/* Parses `header` (may be NULL) for a representation of `size` bytes. Only one
 * "bytes=first-last", "bytes=first-" or "bytes=-suffix" range is served; several ranges,
 * other units or a malformed header are ignored (MEDIA_RANGE_NONE, which RFC 9110 section
 * 14.2 allows). `*first` and `*last` are inclusive byte positions, clamped to the size. */
media_range media_range_parse(const char *header, uint64_t size, uint64_t *first,
                              uint64_t *last);

/* Returns 1 when If-None-Match `header` matches `etag` (a quoted strong tag) under the weak
 * comparison of RFC 9110 section 13.1.2 ("*", lists, W/ prefixes), 0 otherwise. */
int media_etag_match(const char *header, const char *etag);

/* Returns 1 when `type` is in the settings' allowlist. */
int media_type_allowed(const media_settings *s, const char *type);

/* Returns 1 for the image types the service decodes, thumbnails and may show inline
 * (image/jpeg, image/png, image/gif, image/webp); SVG and everything else are 0. */
int media_type_is_image(const char *type);

/* The upload cap in bytes for `type` under `s`: image_max_bytes for images, else
 * file_max_bytes. */
int64_t media_size_limit(const media_settings *s, const char *type);

/* Writes the Content-Disposition for serving `type`: "inline" for images
 * (media_type_is_image), else "attachment" with the file name as an RFC 6266 filename
 * (ASCII, quotes and controls replaced) and filename* (RFC 8187 UTF-8 percent-encoding).
 * Returns 0, or -1 when it does not fit in `n`. */
int media_content_disposition(const char *type, const char *filename, char *out, size_t n);

/* Returns 1 for the variants a media object can have: "original", "thumb_128", "thumb_512",
 * "thumb_1024". */
int media_variant_valid(const char *variant);

/* The bounding boxes of the thumbnails, in pixels. */
extern const int media_thumb_boxes[3];

/* Signs a URL per issue 8: HMAC-SHA256 with `key` over
 * "GET\n<tenant>\n<media id>\n<variant>\n<expires>\n<key id>", base64url without padding
 * into `out` (size >= 44). Returns 0, -1 on a crypto failure. */
int media_url_sign(const media_url_key *key, const char *tenant, const char *id,
                   const char *variant, int64_t expires, char *out, size_t n);

/* Checks a signed URL's fields at time `now` (Unix seconds) against the configured keys.
 * Returns NULL when valid, else a short reason ("expired", "unknown key", "bad signature",
 * "expiry too far"). The comparison is constant-time. */
const char *media_url_check(const media_url_key *keys, int nkeys, const char *tenant,
                            const char *id, const char *variant, const char *expires,
                            const char *kid, const char *sig, int64_t now);

/* Parses MEDIA_URL_KEYS, "kid:hexsecret[,kid:hexsecret...]" (secrets of 16..64 bytes), into
 * `keys`; returns the count, or -1 (with the reason in `why`) when malformed. */
int media_url_keys_parse(const char *spec, media_url_key *keys, int max, char *why, size_t n);

/* Parses a tus Upload-Metadata header (tus 1.0 "creation": comma-separated "key base64"
 * pairs) and decodes the value of `key` into `out` (size n, NUL-terminated). Returns 1 when
 * found, 0 when absent, -1 when the header is malformed or the value too long or not UTF-8
 * without controls. */
int media_tus_metadata(const char *header, const char *key, char *out, size_t n);

/* Parses a tus Upload-Checksum header ("sha1 <base64>", tus 1.0 checksum extension).
 * Returns 1 and the 20-byte digest when the algorithm is sha1, 0 for another algorithm,
 * -1 when malformed. */
int media_tus_checksum(const char *header, unsigned char digest[20]);

/* Parses a non-negative decimal header value (Upload-Offset, Upload-Length) into `*out`;
 * returns 0, or -1 when absent, signed, empty, not all digits or over 2^53. */
int media_parse_u64(const char *s, uint64_t *out);

/* Formats Unix seconds as an RFC 9110 IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"). */
void media_http_date(int64_t secs, char out[32]);

/* Writes the inside of `w` x `h` scaled down to fit a `box` x `box` square, never up, the
 * way vips_thumbnail does (the longer side becomes `box`, the other rounds). */
void media_thumb_fit(int w, int h, int box, int *tw, int *th);

/* --- settings (media_settings.c) ------------------------------------------------------------ */

/* Loads the tenant's settings over the defaults. CM_EIO when MongoDB fails. */
cm_err media_settings_load(media_ctx *ctx, const char *tenant, media_settings *out);

void media_settings_get(cm_http_req *req, void *ud); /* GET /v1/media/settings */
void media_settings_put(cm_http_req *req, void *ud); /* PUT /v1/media/settings */

/* --- type detection and images (media_image.c) --------------------------------------------- */

/* Starts libvips for untrusted input: untrusted loaders blocked, operation cache off, one
 * worker thread per pipeline. Call once from main before threads start. */
cm_err media_image_init(void);
void media_image_shutdown(void);

/* Writes the MIME type libmagic reads from the first bytes of `data` into `out`. */
cm_err media_magic_type(const void *data, size_t len, char out[MEDIA_TYPE_MAX]);

/* Reads the image's dimensions from its header only (nothing is decoded) and checks that
 * the loader libvips picks agrees with `type`. CM_EINVAL with the reason in `why` when the
 * header cannot be read or the loader differs; CM_ETOOBIG when width x height > pixel_max. */
cm_err media_image_probe(const void *data, size_t len, const char *type, int64_t pixel_max,
                         int *width, int *height, char *why, size_t n);

/* One encoded variant produced by media_image_render (data from g_malloc: g_free it via
 * media_image_variant_free). */
typedef struct media_image_variant {
    char name[16]; /* "original", "thumb_128", ... */
    void *data;
    size_t len;
    int width, height;
    char type[MEDIA_TYPE_MAX];
} media_image_variant;

/* Decodes the image (after media_image_probe) and renders the served variants: the original
 * re-encoded in its own format with its orientation applied, and the three thumbnails, all
 * saved with every metadata block (EXIF, GPS, XMP, IPTC, ICC comments) stripped. `out`
 * holds 4. CM_EINVAL with `why` when decoding fails. */
cm_err media_image_render(const void *data, size_t len, const char *type,
                          media_image_variant out[4], char *why, size_t n);
void media_image_variant_free(media_image_variant *v, int count);

/* --- outbox (media_outbox.c) ---------------------------------------------------------------- */

/* The media document is its own outbox: a state change sets pending_event (type) and
 * pending_event_id with the change, the event is produced, the delivery report clears the
 * pending fields (only for that event id), and a sweeper republishes what stayed pending. */
cm_err media_outbox_start(media_ctx *ctx, media_outbox **out);
void media_outbox_stop(media_outbox *ob); /* accepts NULL */
void media_outbox_delivered(cm_err status, void *opaque, void *ud);

/* Produces the pending event of media document `doc`, if any. Failures are left to the
 * sweeper. */
void media_publish(media_ctx *ctx, const bson_t *doc);

/* Appends pending_event, pending_event_id (a fresh UUIDv7) and pending_since to a $set
 * document being built. */
cm_err media_pending_set(bson_t *set, const char *type, int64_t now_ms);

void media_outbox_metrics(void *ud, void (*emit)(void *ctx, const char *text), void *ectx);

/* --- media objects (media_objects.c) -------------------------------------------------------- */

/* Renders a media document as the API's Media object. */
cJSON *media_json(const bson_t *doc);

/* Loads media `id` of `tenant` into `out` (caller destroys). CM_ENOTFOUND for unknown ids,
 * other tenants' objects and deleted ones alike. */
cm_err media_find(media_ctx *ctx, const char *tenant, const char *id, bson_t *out);

/* --- who reads what (media_access.c) -------------------------------------------------------- */

/* Returns 1 when the caller manages media `doc` (may delete it, always reads it): its
 * uploader or a tenant admin. */
int media_may_read(const bson_t *doc, const cm_jwt_claims *c);

/* Asks the messaging service (ctx->messaging_url) whether `user` of `tenant` sees a message
 * that references media `id` (issue 8: members of its conversation; after leaving, what was
 * sent before they left). CM_OK: yes; CM_ENOTFOUND: no, also when no messaging URL is
 * configured or an id could not be sent; CM_EIO when the messaging service did not answer
 * within ctx->messaging_timeout_ms (logged). */
cm_err media_member_reads(media_ctx *ctx, const char *tenant, const char *user, const char *id);

/* Loads media {id} of the request's path into `doc` (caller destroys) when the caller may
 * read it: media_may_read, else media_member_reads. Otherwise answers 404 (not readable,
 * unknown, another tenant's, deleted: the same answer), or 503 with Retry-After when the
 * check could not be made, and returns that error with nothing to destroy. */
cm_err media_find_readable(cm_http_req *req, media_ctx *ctx, const cm_jwt_claims *c,
                           bson_t *doc);

/* Creates a media object after the checks every upload path shares (type from the bytes
 * against the allowlist, size per type, pixel cap from the header, tenant quota), then
 * inserts its document with media.uploaded pending and publishes it. The bytes are either
 * `whole` (nparts 0: stored here under a new random key once the checks pass) or parts
 * already stored (tus). `head` holds the first bytes (64 KiB or the whole object) for
 * libmagic; images must also be given `whole` (they are small) for the header probe. On
 * refusal or failure it answers the problem and returns non-CM_OK (the caller then removes
 * its parts); on success `*doc` is the stored document (caller destroys) and nothing is
 * answered. */
typedef struct media_new {
    const char *id;       /* chosen by the caller (UUIDv7) */
    const char *tenant, *uploader, *filename, *purpose;
    const void *head;
    size_t head_len;
    const void *whole;    /* NULL when not in memory (large tus uploads of non-images) */
    uint64_t size;
    int nparts;
    const char (*part_keys)[MEDIA_KEY_LEN];
    const uint64_t *part_lens;
    const unsigned char *sha256; /* 32 bytes, or NULL when unknown */
} media_new;
cm_err media_create(cm_http_req *req, media_ctx *ctx, const media_settings *s,
                    const media_new *n, bson_t *doc);

/* Counts one upload against the caller's per-minute limit (Redis). Answers 429 and
 * returns 1 when over; Redis down lets it through (logged). */
int media_rate_limited(cm_http_req *req, media_ctx *ctx, const media_settings *s,
                       const cm_jwt_claims *c);

/* Answers 413 and returns 1 when `add` more bytes would take the tenant over its quota. */
int media_over_quota(cm_http_req *req, media_ctx *ctx, const media_settings *s,
                     const char *tenant, uint64_t add);

/* Adds `delta` (may be negative) to the tenant's stored bytes. */
void media_usage_add(media_ctx *ctx, const char *tenant, int64_t delta);

/* Deletes media `doc`: marks it deleted with media.deleted pending, removes its blobs,
 * gives back its bytes. Idempotent. */
cm_err media_delete_doc(media_ctx *ctx, const bson_t *doc);

/* Removes every blob `doc` references (parts, variants, staging); failures are logged. */
void media_remove_blobs(media_ctx *ctx, const bson_t *doc);

/* Fills a new random storage key. */
cm_err media_new_key(char key[MEDIA_KEY_LEN]);

void media_upload(cm_http_req *req, void *ud);       /* POST /v1/media */
extern const cm_http_body_sink media_upload_sink;    /* its raw body streams into parts */
void media_get(cm_http_req *req, void *ud);          /* GET /v1/media/{id} */
void media_delete(cm_http_req *req, void *ud);       /* DELETE /v1/media/{id} */
void media_content(cm_http_req *req, void *ud);      /* GET|HEAD /v1/media/{id}/content */
void media_url(cm_http_req *req, void *ud);          /* GET /v1/media/{id}/url */
void media_signed(cm_http_req *req, void *ud);       /* GET|HEAD /v1/signed-media/... */
void media_internal_check(cm_http_req *req, void *ud); /* GET /internal/v1/media/{id}/attachable */

/* --- tus uploads (media_tus.c) -------------------------------------------------------------- */

void media_tus_options(cm_http_req *req, void *ud); /* OPTIONS /v1/uploads[/{id}] */
void media_tus_create(cm_http_req *req, void *ud);  /* POST /v1/uploads */
void media_tus_head(cm_http_req *req, void *ud);    /* HEAD /v1/uploads/{id} */
void media_tus_patch(cm_http_req *req, void *ud);   /* PATCH /v1/uploads/{id} */
extern const cm_http_body_sink media_tus_patch_sink; /* its body streams into parts */
void media_tus_delete(cm_http_req *req, void *ud);  /* DELETE /v1/uploads/{id} */

/* --- background work (media_worker.c, media_jobs.c) ----------------------------------------- */

/* Starts the processing worker: a Kafka consumer of `media` (media.uploaded) and `users`
 * (user.deleted) in consumer group `group`. */
cm_err media_worker_start(media_ctx *ctx, const char *brokers, const char *prefix,
                          const char *group, media_worker **out);
void media_worker_stop(media_worker *w); /* accepts NULL */

/* Processes media `id` of `tenant` once (what the worker does for media.uploaded): renders
 * variants, stores them, flips the status. Idempotent; CM_EIO/CM_EAGAIN ask for a retry. */
cm_err media_process(media_ctx *ctx, const char *tenant, const char *id);

/* Deletes the media of `user` in `tenant` when the tenant's settings ask for it. */
cm_err media_user_deleted(media_ctx *ctx, const char *tenant, const char *user);

/* One pass of the housekeeping jobs at `now_ms`: expired tus uploads, message media past the
 * tenant's expiry. Safe on several instances (every step is a conditional update). Writes
 * how many objects it deleted. */
cm_err media_jobs_run(media_ctx *ctx, int64_t now_ms, int64_t *deleted);

/* Runs media_jobs_run every `every_ms` on its own thread. */
typedef struct media_jobs media_jobs;
cm_err media_jobs_start(media_ctx *ctx, int64_t every_ms, media_jobs **out);
void media_jobs_stop(media_jobs *j); /* accepts NULL */
void media_jobs_http(cm_http_req *req, void *ud); /* POST /internal/v1/jobs/run */

cm_err media_ensure_indexes(media_ctx *ctx);

#endif
