/* main.c - the search service: wires configuration, the per-tenant index, the Kafka indexer,
 * the DLQ producer and the routes. */
#include <stdio.h>
#include <stdlib.h>

#include <curl/curl.h>

#include "common/config.h"
#include "common/jwks.h"
#include "common/log.h"
#include "common/process.h"
#include "common/session.h"
#include "search.h"

static const cm_config_var vars[] = {
    {"HTTP_HOST", "127.0.0.1", "address to listen on"},
    {"HTTP_PORT", "8085", "port to listen on"},
    {"INTERNAL_KEY_FILE", "",
     "file with the key of the /internal service-to-service routes, the same in every process; "
     "unset: they are open"},
    {"HTTP_THREADS", "4", "worker threads"},
    {"HTTP_MAX_BODY", "1048576", "largest request body in bytes"},
    {"SEARCH_DATA_DIR", "./search-data", "directory of the per-tenant index files (<tenant>.db)"},
    {"SEARCH_GROUP", "search-indexer", "Kafka consumer group of the indexer"},
    {"KAFKA_BROKERS", "127.0.0.1:9092", "Kafka bootstrap servers"},
    {"KAFKA_TOPIC_PREFIX", "", "prefix of every topic name"},
    {"MESSAGING_URL", "http://127.0.0.1:8082",
     "the messaging service, whose conversation logs a reindex backfills from (empty: never)"},
    {"REDIS_HOST", "127.0.0.1", "Redis host (revoked sessions)"},
    {"REDIS_PORT", "6379", "Redis port"},
    {"JWT_JWKS_URL", "", "JWK Set URL of the signing keys; replaces JWT_PUBLIC_KEY_FILE"},
    {"JWT_PUBLIC_KEY_FILE", NULL, "PEM public key, or kid=path,..., when JWT_JWKS_URL is unset"},
    {"JWT_ALG", "RS256", "pinned signing algorithm"},
    {"JWT_ISSUER", "chat-platform", "required iss"},
    {"JWT_AUDIENCE", "chat-api", "required aud"},
    {"LOG_LEVEL", "info", "debug, info, warn or error"},
};

/* /health/ready: the DLQ producer reaches Kafka (the consumer shares the brokers). */
static cm_err ready(void *ud, char *detail, size_t n)
{
    search_ctx *ctx = ud;
    if (!cm_kafka_producer_healthy(ctx->dlq)) {
        snprintf(detail, n, "kafka unreachable");
        return CM_EIO;
    }
    return CM_OK;
}

int main(int argc, char **argv)
{
    search_ctx ctx = {0};
    cm_http_config hc;
    cm_http_server *srv = NULL;
    cm_redis *redis = NULL;
    long redis_port;
    int rc = 1;
    const char *brokers, *prefix;

    if (cm_config_help_requested(argc, argv,
                                 "Message search over a per-tenant SQLite FTS5 index built "
                                 "from the Kafka topics.",
                                 vars, sizeof(vars) / sizeof(vars[0])))
        return 0;
    cm_process_block_signals();
    cm_log_init("search", cm_log_level_parse(cm_config_str("LOG_LEVEL", NULL), CM_LOG_INFO));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    brokers = cm_config_str("KAFKA_BROKERS", "127.0.0.1:9092");
    prefix = cm_config_str("KAFKA_TOPIC_PREFIX", "");
    if (cm_http_config_from_env(8085, &hc) ||
        cm_config_long("REDIS_PORT", 6379, 1, 65535, &redis_port) ||
        cm_jwt_verifier_from_env(&ctx.verifier) ||
        search_index_create(cm_config_str("SEARCH_DATA_DIR", "./search-data"), &ctx.index) ||
        cm_redis_create(cm_config_str("REDIS_HOST", "127.0.0.1"), (int)redis_port, 8, 500,
                        &redis))
        goto out;
    cm_session_enforce(redis); /* revoked sessions' tokens are refused (session.h) */
    if (search_reindexer_create(brokers, prefix, cm_config_str("SEARCH_GROUP", "search-indexer"),
                                cm_config_str("SEARCH_DATA_DIR", "./search-data"),
                                cm_config_str("MESSAGING_URL", "http://127.0.0.1:8082"),
                                &ctx.reindexer) ||
        cm_kafka_producer_create(brokers, prefix, NULL, NULL, &ctx.dlq) ||
        search_indexer_start(&ctx, brokers, prefix,
                             cm_config_str("SEARCH_GROUP", "search-indexer"), &ctx.indexer) ||
        search_reindexer_resume(&ctx))
        goto out;
    if (cm_http_server_create(&hc, &srv) ||
        cm_http_route(srv, "GET", "/v1/search/messages", search_messages, &ctx) ||
        cm_http_route(srv, "GET", "/v1/search/conversations", search_conversations, &ctx) ||
        cm_http_route(srv, "GET", "/v1/search/users", search_users, &ctx) ||
        cm_http_route(srv, "GET", "/v1/search/suggest", search_suggest, &ctx) ||
        cm_http_route(srv, "GET", "/v1/search/recent", search_recent_list, &ctx) ||
        cm_http_route(srv, "DELETE", "/v1/search/recent", search_recent_delete, &ctx) ||
        cm_http_route(srv, "GET", "/v1/search", search_global, &ctx) ||
        cm_http_route(srv, "POST", "/v1/search/reindex", search_reindex_start, &ctx) ||
        cm_http_route(srv, "GET", "/v1/search/reindex/{id}", search_reindex_get, &ctx) ||
        cm_http_route(srv, "GET", "/v1/analytics/tenant", search_analytics_tenant, &ctx) ||
        cm_http_route(srv, "GET", "/v1/analytics/users/{id}", search_analytics_user, &ctx))
        goto out;
    cm_http_set_ready(srv, ready, &ctx);
    cm_http_set_metrics(srv, search_metrics, &ctx);
    if (cm_http_server_start(srv) != CM_OK)
        goto out;
    cm_info("search service ready");
    cm_info("stopping on signal %d", cm_process_wait_signal());
    rc = 0;
out:
    /* Stop taking requests, stop indexing (commits stored offsets), flush the DLQ. */
    cm_http_server_destroy(srv);
    search_reindexer_destroy(ctx.reindexer);
    search_indexer_stop(ctx.indexer);
    cm_kafka_producer_destroy(ctx.dlq);
    search_index_destroy(ctx.index);
    cm_redis_destroy(redis);
    cm_jwt_destroy(ctx.verifier);
    curl_global_cleanup();
    return rc;
}
