/* main.c - the messaging service: wires configuration, clients, the outbox and routes. */
#include <stdio.h>

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
    {"SEND_RATE_PER_MIN", "60", "messages one user may send per minute (0: no limit)"},
    {"GROUP_MEMBER_MAX", "1000", "members of a group conversation"},
    {"OUTBOX_STALE_MS", "10000", "age after which an unpublished message is republished"},
    {"USERS_CONSUMER_GROUP", "messaging-users", "consumer group reading the users topic (blocks, erasures)"},
    {"LOG_LEVEL", "info", "debug, info, warn or error"},
};

int main(int argc, char **argv)
{
    messaging_ctx ctx = {0};
    cm_http_config hc;
    cm_health_deps health = {0};
    cm_http_server *srv = NULL;
    messaging_users *users = NULL;
    long redis_port, stale_ms;
    int rc = 1;

    if (cm_config_help_requested(argc, argv,
                                 "Conversations, members and messages with gap-free seqs.", vars,
                                 sizeof(vars) / sizeof(vars[0])))
        return 0;
    cm_process_block_signals();
    cm_log_init("messaging", cm_log_level_parse(cm_config_str("LOG_LEVEL", NULL), CM_LOG_INFO));
    if (cm_http_config_from_env(8082, &hc) ||
        cm_config_long("SEND_RATE_PER_MIN", 60, 0, 1000000, &ctx.send_rate_per_min) ||
        cm_config_long("GROUP_MEMBER_MAX", 1000, 2, 100000, &ctx.group_member_max) ||
        cm_config_long("OUTBOX_STALE_MS", 10000, 100, 3600000, &stale_ms) ||
        cm_config_long("REDIS_PORT", 6379, 1, 65535, &redis_port) ||
        cm_jwt_verifier_from_env(&ctx.verifier) ||
        cm_mongo_create(cm_config_str("MONGO_URI", "mongodb://127.0.0.1:27017"),
                        cm_config_str("MONGO_DB", "chat_messaging"), &ctx.db) ||
        cm_redis_create(cm_config_str("REDIS_HOST", "127.0.0.1"), (int)redis_port, 8, 500,
                        &ctx.redis))
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
    if (cm_http_server_create(&hc, &srv) ||
        cm_http_route(srv, "POST", "/v1/conversations", messaging_conversations_create, &ctx) ||
        cm_http_route(srv, "GET", "/v1/conversations", messaging_conversations_list, &ctx) ||
        cm_http_route(srv, "POST", "/v1/conversations/{id}/messages", messaging_messages_send,
                      &ctx) ||
        cm_http_route(srv, "GET", "/v1/conversations/{id}/messages", messaging_messages_list,
                      &ctx))
        goto out;
    health.mongo = ctx.db;
    health.kafka = ctx.kafka;
    cm_http_set_ready(srv, cm_health_ready, &health);
    cm_http_set_metrics(srv, messaging_outbox_metrics, ctx.outbox);
    if (cm_http_server_start(srv) != CM_OK)
        goto out;
    cm_info("messaging service ready");
    cm_info("stopping on signal %d", cm_process_wait_signal());
    rc = 0;
out:
    /* Order matters: stop taking requests, flush Kafka (delivery reports reach the outbox),
     * then let the outbox mark what was delivered. */
    cm_http_server_destroy(srv);
    messaging_users_stop(users); /* before the producer: it parks unreadable events */
    cm_kafka_producer_destroy(ctx.kafka);
    messaging_outbox_stop(ctx.outbox);
    cm_redis_destroy(ctx.redis);
    cm_mongo_destroy(ctx.db);
    cm_jwt_destroy(ctx.verifier);
    return rc;
}
