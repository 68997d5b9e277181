/* main.c - the media service: wires configuration, storage, libvips, the worker, the outbox,
 * housekeeping and the routes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "common/config.h"
#include "common/health.h"
#include "common/jwks.h"
#include "common/session.h"
#include "common/log.h"
#include "common/process.h"
#include "common/uuid.h"
#include "media.h"

#define DEFAULT_TYPES                                                                          \
    "image/jpeg,image/png,image/gif,image/webp,application/pdf,text/plain,video/mp4,"         \
    "video/webm,audio/mpeg,audio/ogg,audio/mp4,application/zip"

static const cm_config_var vars[] = {
    {"HTTP_HOST", "127.0.0.1", "address to listen on"},
    {"HTTP_PORT", "8084", "port to listen on"},
    {"INTERNAL_KEY_FILE", "",
     "file with the key of the /internal service-to-service routes, the same in every process; "
     "unset: they are open"},
    {"HTTP_THREADS", "4", "worker threads (each may hold one upload body in memory)"},
    {"HTTP_MAX_BODY", "MEDIA_FILE_MAX_BYTES + 64 KiB", "largest request body in bytes"},
    {"MONGO_URI", "mongodb://127.0.0.1:27017", "MongoDB connection string"},
    {"MONGO_DB", "chat_media", "database of this service (and of the GridFS bucket)"},
    {"KAFKA_BROKERS", "127.0.0.1:9092", "Kafka bootstrap servers"},
    {"KAFKA_TOPIC_PREFIX", "", "prefix of every topic name"},
    {"REDIS_HOST", "127.0.0.1", "Redis host (upload rate limits)"},
    {"REDIS_PORT", "6379", "Redis port"},
    {"JWT_JWKS_URL", "", "JWK Set URL of the signing keys; replaces JWT_PUBLIC_KEY_FILE"},
    {"JWT_PUBLIC_KEY_FILE", NULL, "PEM public key, or kid=path,..., when JWT_JWKS_URL is unset"},
    {"JWT_ALG", "RS256", "pinned signing algorithm"},
    {"JWT_ISSUER", "chat-platform", "required iss"},
    {"JWT_AUDIENCE", "chat-api", "required aud"},
    {"MEDIA_STORE", "gridfs", "blob store: gridfs or s3"},
    {"MEDIA_GRIDFS_BUCKET", "media", "GridFS bucket name"},
    {"S3_ENDPOINT", "", "S3-compatible endpoint, e.g. http://127.0.0.1:9000 (MEDIA_STORE=s3)"},
    {"S3_BUCKET", "chat-media", "S3 bucket (must exist)"},
    {"S3_REGION", "us-east-1", "S3 region used in the SigV4 scope"},
    {"S3_ACCESS_KEY", "", "S3 access key id"},
    {"S3_SECRET_KEY", "", "S3 secret access key"},
    {"MESSAGING_URL", "http://127.0.0.1:8082", "the messaging service, which says which members may read an attachment (empty: uploaders and admins only)"},
    {"MEDIA_ACCESS_TIMEOUT_MS", "2000", "time allowed to one member access check (MESSAGING_URL)"},
    {"MEDIA_URL_KEYS", "(random per start)", "signed URL keys kid:hexsecret,...; the first signs, all verify"},
    {"MEDIA_PUBLIC_BASE_URL", "", "prefix of signed URLs (empty: a path relative to the gateway)"},
    {"MEDIA_IMAGE_MAX_BYTES", "5242880", "default largest image upload"},
    {"MEDIA_FILE_MAX_BYTES", "104857600", "default largest other upload"},
    {"MEDIA_QUOTA_BYTES", "10737418240", "default bytes stored per tenant (0: none)"},
    {"MEDIA_UPLOADS_PER_MIN", "60", "default uploads per user per minute (0: no limit)"},
    {"MEDIA_PIXEL_MAX", "50000000", "default width x height cap, checked from the header"},
    {"MEDIA_ALLOWED_TYPES", DEFAULT_TYPES, "default allowlist of types read from the bytes"},
    {"MEDIA_MESSAGE_EXPIRY_DAYS", "0", "default age at which message media are deleted (0: never)"},
    {"MEDIA_DELETE_ON_USER_DELETED", "1", "default: user.deleted deletes the user's media"},
    {"MEDIA_UPLOAD_TTL_S", "86400", "lifetime of an unfinished resumable upload"},
    {"MEDIA_WORKER_GROUP", "media-worker", "Kafka consumer group of the processing worker"},
    {"MEDIA_JOBS_EVERY_S", "3600", "housekeeping period"},
    {"OUTBOX_STALE_MS", "10000", "age after which a pending event is republished"},
    {"LOG_LEVEL", "info", "debug, info, warn or error"},
};

/* Fills the process defaults of the per-tenant settings. */
static cm_err load_defaults(media_settings *s)
{
    long img, file, quota, rate, pix, days, del;
    const char *types = cm_config_str("MEDIA_ALLOWED_TYPES", DEFAULT_TYPES), *p = types;

    if (cm_config_long("MEDIA_IMAGE_MAX_BYTES", 5L << 20, 1, 1L << 30, &img) ||
        cm_config_long("MEDIA_FILE_MAX_BYTES", 100L << 20, 1, 1L << 30, &file) ||
        cm_config_long("MEDIA_QUOTA_BYTES", 10L << 30, 0, 1L << 53, &quota) ||
        cm_config_long("MEDIA_UPLOADS_PER_MIN", 60, 0, 100000, &rate) ||
        cm_config_long("MEDIA_PIXEL_MAX", 50000000, 1, 200000000, &pix) ||
        cm_config_long("MEDIA_MESSAGE_EXPIRY_DAYS", 0, 0, 3650, &days) ||
        cm_config_long("MEDIA_DELETE_ON_USER_DELETED", 1, 0, 1, &del))
        return CM_EINVAL;
    memset(s, 0, sizeof(*s));
    s->image_max_bytes = img;
    s->file_max_bytes = file;
    s->quota_bytes = quota;
    s->uploads_per_minute = rate;
    s->pixel_max = pix;
    s->message_expiry_days = days;
    s->delete_on_user_deleted = (int)del;
    while (*p && s->nallowed < MEDIA_ALLOW_MAX) {
        size_t n = strcspn(p, ",");
        if (n == 0 || n >= MEDIA_TYPE_MAX) {
            cm_error("MEDIA_ALLOWED_TYPES: empty or overlong type");
            return CM_EINVAL;
        }
        memcpy(s->allowed[s->nallowed], p, n);
        s->allowed[s->nallowed++][n] = '\0';
        p += n + (p[n] == ',');
    }
    return CM_OK;
}

static cm_err load_url_keys(media_ctx *ctx)
{
    const char *spec = cm_config_str("MEDIA_URL_KEYS", NULL);
    char why[128], gen[96];

    if (spec == NULL) {
        /* Fine for one instance; several instances must share keys to verify each other's. */
        memcpy(gen, "r1:", 3);
        if (cm_random_hex(gen + 3, 32) != CM_OK)
            return CM_EIO;
        spec = gen;
        cm_warn("MEDIA_URL_KEYS unset: signed URLs use a random key until restart");
    }
    ctx->nurl_keys = media_url_keys_parse(spec, ctx->url_keys, MEDIA_URL_KEYS_MAX, why,
                                          sizeof(why));
    if (ctx->nurl_keys < 0) {
        cm_error("MEDIA_URL_KEYS: %s", why);
        return CM_EINVAL;
    }
    return CM_OK;
}

static cm_err open_store(media_ctx *ctx)
{
    const char *kind = cm_config_str("MEDIA_STORE", "gridfs");
    if (strcmp(kind, "gridfs") == 0)
        return media_store_gridfs_create(ctx->db, cm_config_str("MEDIA_GRIDFS_BUCKET", "media"),
                                         &ctx->store);
    if (strcmp(kind, "s3") == 0)
        return media_store_s3_create(cm_config_str("S3_ENDPOINT", ""),
                                     cm_config_str("S3_BUCKET", "chat-media"),
                                     cm_config_str("S3_REGION", "us-east-1"),
                                     cm_config_str("S3_ACCESS_KEY", ""),
                                     cm_config_str("S3_SECRET_KEY", ""), &ctx->store);
    cm_error("MEDIA_STORE must be gridfs or s3, not %s", kind);
    return CM_EINVAL;
}

static cm_err routes(cm_http_server *srv, media_ctx *ctx)
{
    /* /v1/media/settings before /v1/media/{id}: routes match in order. */
    if (cm_http_route(srv, "GET", "/v1/media/settings", media_settings_get, ctx) ||
        cm_http_route(srv, "PUT", "/v1/media/settings", media_settings_put, ctx) ||
        cm_http_route_stream(srv, "POST", "/v1/media", &media_upload_sink, media_upload, ctx) ||
        cm_http_route(srv, "GET", "/v1/media/{id}", media_get, ctx) ||
        cm_http_route(srv, "DELETE", "/v1/media/{id}", media_delete, ctx) ||
        cm_http_route(srv, "GET", "/v1/media/{id}/content", media_content, ctx) ||
        cm_http_route(srv, "HEAD", "/v1/media/{id}/content", media_content, ctx) ||
        cm_http_route(srv, "GET", "/v1/media/{id}/url", media_url, ctx) ||
        cm_http_route(srv, "GET", "/v1/signed-media/{tenant}/{id}/{variant}", media_signed,
                      ctx) ||
        cm_http_route(srv, "HEAD", "/v1/signed-media/{tenant}/{id}/{variant}", media_signed,
                      ctx) ||
        cm_http_route(srv, "OPTIONS", "/v1/uploads", media_tus_options, ctx) ||
        cm_http_route(srv, "OPTIONS", "/v1/uploads/{id}", media_tus_options, ctx) ||
        cm_http_route(srv, "POST", "/v1/uploads", media_tus_create, ctx) ||
        cm_http_route(srv, "HEAD", "/v1/uploads/{id}", media_tus_head, ctx) ||
        cm_http_route_stream(srv, "PATCH", "/v1/uploads/{id}", &media_tus_patch_sink,
                             media_tus_patch, ctx) ||
        cm_http_route(srv, "DELETE", "/v1/uploads/{id}", media_tus_delete, ctx) ||
        cm_http_route(srv, "GET", "/internal/v1/media/{id}/attachable", media_internal_check,
                      ctx) ||
        cm_http_route(srv, "POST", "/internal/v1/jobs/run", media_jobs_http, ctx))
        return CM_EINVAL;
    return CM_OK;
}

int main(int argc, char **argv)
{
    media_ctx ctx = {0};
    cm_http_config hc;
    cm_health_deps health = {0};
    cm_http_server *srv = NULL;
    media_worker *worker = NULL;
    media_jobs *jobs = NULL;
    long redis_port, stale_ms, ttl, every;
    int rc = 1, vips = 0;

    if (cm_config_help_requested(argc, argv,
                                 "Uploads, storage, thumbnails, signed URLs and ranges.", vars,
                                 sizeof(vars) / sizeof(vars[0])))
        return 0;
    cm_process_block_signals();
    cm_log_init("media", cm_log_level_parse(cm_config_str("LOG_LEVEL", NULL), CM_LOG_INFO));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (load_defaults(&ctx.defaults) || cm_http_config_from_env(8084, &hc) ||
        cm_config_long("OUTBOX_STALE_MS", 10000, 100, 3600000, &stale_ms) ||
        cm_config_long("MEDIA_UPLOAD_TTL_S", 86400, 1, 30L * 86400, &ttl) ||
        cm_config_long("MEDIA_JOBS_EVERY_S", 3600, 1, 86400, &every) ||
        cm_config_long("REDIS_PORT", 6379, 1, 65535, &redis_port) ||
        cm_config_long("MEDIA_ACCESS_TIMEOUT_MS", 2000, 1, 60000, &ctx.messaging_timeout_ms) ||
        load_url_keys(&ctx) ||
        cm_jwt_verifier_from_env(&ctx.verifier))
        goto out;
    /* The body cap follows the largest upload unless set explicitly (multipart needs room
     * for its boundaries and headers). */
    if (cm_config_str("HTTP_MAX_BODY", NULL) == NULL)
        hc.max_body = (size_t)ctx.defaults.file_max_bytes + 64 * 1024;
    ctx.body_max = (int64_t)hc.max_body;
    ctx.outbox_stale_ms = stale_ms;
    ctx.upload_ttl_s = ttl;
    ctx.public_base = cm_config_str("MEDIA_PUBLIC_BASE_URL", "");
    ctx.messaging_url = cm_config_str("MESSAGING_URL", "http://127.0.0.1:8082");
    if (media_image_init() != CM_OK)
        goto out;
    vips = 1;
    if (cm_mongo_create(cm_config_str("MONGO_URI", "mongodb://127.0.0.1:27017"),
                        cm_config_str("MONGO_DB", "chat_media"), &ctx.db) ||
        cm_redis_create(cm_config_str("REDIS_HOST", "127.0.0.1"), (int)redis_port, 8, 500,
                        &ctx.redis) ||
        open_store(&ctx))
        goto out;
    cm_session_enforce(ctx.redis); /* revoked sessions' tokens are refused (session.h) */
    if (media_ensure_indexes(&ctx) != CM_OK) {
        cm_error("indexes could not be created");
        goto out;
    }
    if (media_outbox_start(&ctx, &ctx.outbox) ||
        cm_kafka_producer_create(cm_config_str("KAFKA_BROKERS", "127.0.0.1:9092"),
                                 cm_config_str("KAFKA_TOPIC_PREFIX", ""), media_outbox_delivered,
                                 ctx.outbox, &ctx.kafka) ||
        media_worker_start(&ctx, cm_config_str("KAFKA_BROKERS", "127.0.0.1:9092"),
                           cm_config_str("KAFKA_TOPIC_PREFIX", ""),
                           cm_config_str("MEDIA_WORKER_GROUP", "media-worker"), &worker) ||
        media_jobs_start(&ctx, every * 1000, &jobs))
        goto out;
    if (cm_http_server_create(&hc, &srv) || routes(srv, &ctx))
        goto out;
    health.mongo = ctx.db;
    health.kafka = ctx.kafka;
    cm_http_set_ready(srv, cm_health_ready, &health);
    cm_http_set_metrics(srv, media_outbox_metrics, ctx.outbox);
    if (cm_http_server_start(srv) != CM_OK)
        goto out;
    cm_info("media service ready (store %s)", ctx.store->name);
    cm_info("stopping on signal %d", cm_process_wait_signal());
    rc = 0;
out:
    /* Stop taking requests, stop the worker and jobs, flush Kafka (delivery reports reach the
     * outbox), then let the outbox clear what was delivered. */
    cm_http_server_destroy(srv);
    media_jobs_stop(jobs);
    media_worker_stop(worker);
    cm_kafka_producer_destroy(ctx.kafka);
    media_outbox_stop(ctx.outbox);
    if (ctx.store)
        ctx.store->destroy(ctx.store);
    cm_redis_destroy(ctx.redis);
    cm_mongo_destroy(ctx.db);
    cm_jwt_destroy(ctx.verifier);
    if (vips)
        media_image_shutdown();
    curl_global_cleanup();
    return rc;
}
