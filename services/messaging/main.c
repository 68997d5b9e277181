/* main.c - the messaging service: wires configuration, clients, the outbox and routes. */
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "common/config.h"
#include "common/health.h"
#include "common/jwks.h"
#include "common/log.h"
#include "common/process.h"
#include "common/session.h"
#include "messaging.h"
#include "messaging_users.h"

static const cm_config_var vars[] = {
    {"HTTP_HOST", "127.0.0.1", "address to listen on"},
    {"HTTP_PORT", "8082", "port to listen on"},
    {"INTERNAL_KEY_FILE", "",
     "file with the key of the /internal service-to-service routes, the same in every process; "
     "unset: they are open"},
    {"HTTP_THREADS", "4", "worker threads"},
    {"HTTP_MAX_BODY", "1048576", "largest request body in bytes (413 above)"},
    {"MONGO_URI", "mongodb://127.0.0.1:27017", "MongoDB connection string"},
    {"MONGO_DB", "chat_messaging", "database of this service"},
    {"KAFKA_BROKERS", "127.0.0.1:9092", "Kafka bootstrap servers"},
    {"KAFKA_TOPIC_PREFIX", "", "prefix of every topic name"},
    {"REDIS_HOST", "127.0.0.1", "Redis host"},
    {"REDIS_PORT", "6379", "Redis port"},
    {"JWT_JWKS_URL", "", "JWK Set URL of the signing keys; replaces JWT_PUBLIC_KEY_FILE"},
    {"JWT_PUBLIC_KEY_FILE", NULL, "PEM public key, or kid=path,..., when JWT_JWKS_URL is unset"},
    {"JWT_ALG", "RS256", "pinned signing algorithm"},
    {"JWT_ISSUER", "chat-platform", "required iss"},
    {"JWT_AUDIENCE", "chat-api", "required aud"},
    {"USER_URL", "http://127.0.0.1:8081", "the user service, whose tenant settings override the defaults below"},
    {"TENANT_SETTINGS_TTL_MS", "10000", "how long a tenant's settings are cached (a change applies within it)"},
    {"SEND_RATE_PER_MIN", "60", "messages one user may send per minute (0: no limit), when the tenant's own setting cannot be read"},
    {"MESSAGE_MAX_CHARS", "5000", "characters of a message text, when the tenant's own setting cannot be read"},
    {"GROUP_MEMBER_MAX", "1000", "members of a group conversation, when the tenant's own setting cannot be read"},
    {"CHANNEL_MEMBER_MAX", "100000", "members of a channel"},
    {"EDIT_WINDOW_S", "900", "how long after sending the sender may edit a message, when the tenant's own setting cannot be read"},
    {"REACTION_EMOJI_MAX", "20", "distinct emojis on one message"},
    {"METADATA_MAX_BYTES", "4096", "size of a conversation's custom metadata as JSON"},
    {"MESSAGE_DELETION", "allow", "allow, or forbid: messages cannot be deleted for everyone"},
    {"AUTO_ARCHIVE_DAYS", "90", "conversations without a message for this long are archived for everyone (0: never)"},
    {"RETENTION_DAYS", "0", "the platform's longest retention: messages older are deleted even when the tenant's retention_days is longer or 0 (0: no cap)"},
    {"JOBS_EVERY_S", "3600", "how often the housekeeping pass runs"},
    {"MEDIA_URL", "http://127.0.0.1:8084", "the media service, which checks that attachments may be sent"},
    {"MEDIA_CHECK_TIMEOUT_MS", "2000", "time allowed to one attachment check"},
    {"LOCK_TTL_MS", "3000", "lease of a conversation's write lock (Redis); bounds how long a crashed writer blocks it"},
    {"LOCK_WAIT_MS", "5000", "how long a write waits for a busy conversation before 503; callers' timeouts (socket and gateway UPSTREAM_TIMEOUT_MS) must exceed it + LOCK_TTL_MS"},
    {"OUTBOX_STALE_MS", "10000", "age after which an unpublished event is republished"},
    {"USERS_CONSUMER_GROUP", "messaging-users", "consumer group reading the users topic (blocks, erasures)"},
    {"LOG_LEVEL", "info", "debug, info, warn or error"},
};

/* The routes this service serves (proto/openapi.yaml describes each). */
static cm_err add_routes(cm_http_server *srv, messaging_ctx *ctx)
{
    static const struct {
        const char *method, *pattern;
        cm_http_handler handler;
    } routes[] = {
        {"POST", "/v1/conversations", messaging_conversations_create},
        {"GET", "/v1/conversations", messaging_conversations_list},
        {"GET", "/v1/conversations/unread", messaging_receipts_unread},
        {"GET", "/v1/conversations/{id}", messaging_conversations_get},
        {"PATCH", "/v1/conversations/{id}", messaging_conversations_update},
        {"DELETE", "/v1/conversations/{id}", messaging_conversations_delete},
        {"PATCH", "/v1/conversations/{id}/me", messaging_conversations_me},
        {"POST", "/v1/conversations/{id}/leave", messaging_conversations_leave},
        {"GET", "/v1/conversations/{id}/members", messaging_members_list},
        {"POST", "/v1/conversations/{id}/members", messaging_members_add},
        {"DELETE", "/v1/conversations/{id}/members/{user_id}", messaging_members_remove},
        {"PATCH", "/v1/conversations/{id}/members/{user_id}", messaging_members_update},
        {"POST", "/v1/conversations/{id}/messages", messaging_messages_send},
        {"GET", "/v1/conversations/{id}/messages", messaging_messages_list},
        {"GET", "/v1/conversations/{id}/messages/{message_id}", messaging_messages_get},
        {"PATCH", "/v1/conversations/{id}/messages/{message_id}", messaging_messages_edit},
        {"DELETE", "/v1/conversations/{id}/messages/{message_id}", messaging_messages_delete},
        {"GET", "/v1/conversations/{id}/messages/{message_id}/history", messaging_messages_history},
        {"GET", "/v1/conversations/{id}/messages/{message_id}/thread", messaging_messages_thread},
        {"POST", "/v1/conversations/{id}/messages/{message_id}/reactions", messaging_reactions_add},
        {"DELETE", "/v1/conversations/{id}/messages/{message_id}/reactions/{emoji}", messaging_reactions_remove},
        {"POST", "/v1/conversations/{id}/messages/{message_id}/pin", messaging_pins_add},
        {"DELETE", "/v1/conversations/{id}/messages/{message_id}/pin", messaging_pins_remove},
        {"GET", "/v1/conversations/{id}/pins", messaging_pins_list},
        {"POST", "/v1/conversations/{id}/forward", messaging_messages_forward},
        {"POST", "/v1/conversations/{id}/read", messaging_receipts_read},
        {"POST", "/v1/conversations/{id}/delivered", messaging_receipts_delivered},
        {"GET", "/v1/conversations/{id}/messages/{message_id}/receipts", messaging_receipts_who},
        {"POST", "/v1/conversations/{id}/messages/{message_id}/flags", messaging_flags_add},
        {"GET", "/v1/moderation/settings", messaging_moderation_settings_get},
        {"PUT", "/v1/moderation/settings", messaging_moderation_settings_put},
        {"POST", "/v1/moderation/sanctions", messaging_sanctions_add},
        {"GET", "/v1/moderation/sanctions", messaging_sanctions_list},
        {"POST", "/v1/moderation/sanctions/lift", messaging_sanctions_lift},
        {"GET", "/v1/moderation/flags", messaging_flags_list},
        {"POST", "/v1/moderation/flags/{flag_id}/resolve", messaging_flags_resolve},
        {"GET", "/v1/conversations/{id}/stats", messaging_stats},
        {"POST", "/internal/v1/messaging/jobs/run", messaging_jobs_http},
        {"GET", "/internal/v1/messaging/attachments/{media_id}", messaging_attachment_access},
        {"GET", "/internal/v1/messaging/events", messaging_export_events},
        {"GET", "/v1/sync", messaging_sync},
        {"POST", "/v1/sync", messaging_sync},
    };
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
        if (cm_http_route(srv, routes[i].method, routes[i].pattern, routes[i].handler, ctx) != CM_OK)
            return CM_EINVAL;
    return CM_OK;
}

int main(int argc, char **argv)
{
    messaging_ctx ctx = {0};
    messaging_limits *l = &ctx.limits;
    cm_http_config hc;
    cm_health_deps health = {0};
    cm_http_server *srv = NULL;
    long redis_port, stale_ms, jobs_every_s, tenant_ttl_ms;
    messaging_jobs *jobs = NULL;
    const char *deletion;
    messaging_users *users = NULL;
    int rc = 1;

    if (cm_config_help_requested(argc, argv,
                                 "Conversations, members, messages with gap-free seqs, and sync.",
                                 vars, sizeof(vars) / sizeof(vars[0])))
        return 0;
    cm_process_block_signals();
    curl_global_init(CURL_GLOBAL_DEFAULT); /* the tenants' pre-send hooks */
    cm_log_init("messaging", cm_log_level_parse(cm_config_str("LOG_LEVEL", NULL), CM_LOG_INFO));
    deletion = cm_config_str("MESSAGE_DELETION", "allow");
    if (strcmp(deletion, "allow") != 0 && strcmp(deletion, "forbid") != 0) {
        cm_error("MESSAGE_DELETION must be allow or forbid, not '%s'", deletion);
        goto out;
    }
    l->deletion_allowed = strcmp(deletion, "allow") == 0;
    ctx.db_name = cm_config_str("MONGO_DB", "chat_messaging");
    ctx.media_url = cm_config_str("MEDIA_URL", "http://127.0.0.1:8084");
    if (cm_http_config_from_env(8082, &hc) ||
        cm_config_long("SEND_RATE_PER_MIN", 60, 0, 1000000, &l->send_rate_per_min) ||
        cm_config_long("GROUP_MEMBER_MAX", 1000, 2, 100000, &l->group_member_max) ||
        cm_config_long("CHANNEL_MEMBER_MAX", 100000, 2, 10000000, &l->channel_member_max) ||
        cm_config_long("EDIT_WINDOW_S", 900, 0, 31536000, &l->edit_window_s) ||
        cm_config_long("MESSAGE_MAX_CHARS", MSG_TEXT_MAX, 1, 20000, &l->text_max) ||
        cm_config_long("TENANT_SETTINGS_TTL_MS", 10000, 0, 3600000, &tenant_ttl_ms) ||
        cm_config_long("REACTION_EMOJI_MAX", 20, 1, 1000, &l->reaction_emoji_max) ||
        cm_config_long("METADATA_MAX_BYTES", 4096, 2, 65536, &l->metadata_max) ||
        cm_config_long("AUTO_ARCHIVE_DAYS", 90, 0, 36500, &l->auto_archive_days) ||
        cm_config_long("RETENTION_DAYS", 0, 0, 36500, &l->retention_days) ||
        cm_config_long("JOBS_EVERY_S", 3600, 1, 604800, &jobs_every_s) ||
        cm_config_long("MEDIA_CHECK_TIMEOUT_MS", 2000, 50, 60000, &ctx.media_timeout_ms) ||
        cm_config_long("LOCK_TTL_MS", 3000, 100, 600000, &ctx.lock_ttl_ms) ||
        cm_config_long("LOCK_WAIT_MS", 5000, 0, 600000, &ctx.lock_wait_ms) ||
        cm_config_long("OUTBOX_STALE_MS", 10000, 100, 3600000, &stale_ms) ||
        cm_config_long("REDIS_PORT", 6379, 1, 65535, &redis_port) ||
        cm_jwt_verifier_from_env(&ctx.verifier) ||
        cm_tenant_settings_create(cm_config_str("USER_URL", "http://127.0.0.1:8081"),
                                  tenant_ttl_ms, 2000, &ctx.tenants) ||
        cm_mongo_create(cm_config_str("MONGO_URI", "mongodb://127.0.0.1:27017"),
                        cm_config_str("MONGO_DB", "chat_messaging"), &ctx.db) ||
        cm_redis_create(cm_config_str("REDIS_HOST", "127.0.0.1"), (int)redis_port,
                        hc.threads * 2 + 2, 500, &ctx.redis))
        goto out;
    cm_session_enforce(ctx.redis); /* revoked sessions' tokens are refused (session.h) */
    if (messaging_ensure_indexes(&ctx) != CM_OK) {
        cm_error("indexes could not be created; refusing to run without the seq guarantee");
        goto out;
    }
    if (messaging_outbox_start(&ctx, stale_ms, &ctx.outbox) ||
        cm_kafka_producer_create(cm_config_str("KAFKA_BROKERS", "127.0.0.1:9092"),
                                 cm_config_str("KAFKA_TOPIC_PREFIX", ""),
                                 messaging_outbox_delivered, ctx.outbox, &ctx.kafka) ||
        messaging_users_start(&ctx, &users))
        goto out;
    if (cm_http_server_create(&hc, &srv) || add_routes(srv, &ctx) != CM_OK)
        goto out;
    health.mongo = ctx.db;
    health.kafka = ctx.kafka;
    cm_http_set_ready(srv, cm_health_ready, &health);
    cm_http_set_metrics(srv, messaging_outbox_metrics, ctx.outbox);
    if (cm_http_server_start(srv) != CM_OK || messaging_jobs_start(&ctx, jobs_every_s, &jobs) != CM_OK)
        goto out;
    cm_info("messaging service ready");
    cm_info("stopping on signal %d", cm_process_wait_signal());
    atomic_store(&ctx.stopping, 1);
    rc = 0;
out:
    /* Order matters: stop taking requests, flush Kafka (delivery reports reach the outbox),
     * then let the outbox mark what was delivered. */
    messaging_jobs_stop(jobs);
    cm_http_server_destroy(srv);
    messaging_users_stop(users); /* before the producer: it parks unreadable events */
    cm_kafka_producer_destroy(ctx.kafka);
    messaging_outbox_stop(ctx.outbox);
    cm_redis_destroy(ctx.redis);
    cm_mongo_destroy(ctx.db);
    cm_jwt_destroy(ctx.verifier);
    cm_tenant_settings_destroy(ctx.tenants);
    curl_global_cleanup();
    return rc;
}
