/* main.c - the user service: wires configuration, clients and routes, then runs until SIGTERM. */
#include <stdio.h>
#include <stdlib.h>

#include <sodium.h>

#include "common/config.h"
#include "common/health.h"
#include "common/log.h"
#include "common/process.h"
#include "common/session.h"
#include "user.h"

static const cm_config_var vars[] = {
    {"HTTP_HOST", "127.0.0.1", "address to listen on"},
    {"HTTP_PORT", "8081", "port to listen on"},
    {"INTERNAL_KEY_FILE", "",
     "file with the key of the /internal service-to-service routes, the same in every process; "
     "unset: they are open"},
    {"HTTP_THREADS", "4", "worker threads"},
    {"HTTP_MAX_BODY", "1048576", "largest request body in bytes (413 above)"},
    {"MONGO_URI", "mongodb://127.0.0.1:27017", "MongoDB connection string"},
    {"MONGO_DB", "chat_user", "database of this service"},
    {"KAFKA_BROKERS", "127.0.0.1:9092", "Kafka bootstrap servers"},
    {"KAFKA_TOPIC_PREFIX", "", "prefix of every topic name"},
    {"JWT_PRIVATE_KEY_FILE", NULL,
     "PEM private key that signs access tokens, or kid=path,... oldest to newest (newest signs)"},
    {"JWT_ALG", "RS256", "pinned signing algorithm"},
    {"JWT_ISSUER", "chat-platform", "iss of issued tokens"},
    {"JWT_AUDIENCE", "chat-api", "aud of issued tokens"},
    {"JWT_KID", "k1", "key id of a single JWT_PRIVATE_KEY_FILE"},
    {"REDIS_HOST", "127.0.0.1", "Redis host (revoked-session denylist, rate limits)"},
    {"REDIS_PORT", "6379", "Redis port"},
    {"ACCESS_TOKEN_TTL_S", "900", "access token lifetime in seconds"},
    {"REFRESH_TOKEN_TTL_S", "2592000", "refresh token lifetime in seconds, renewed on each use"},
    {"JWT_LEEWAY_S", "30", "clock skew verifiers accept; revocations outlive tokens by it"},
    {"VERIFY_TOKEN_TTL_S", "86400", "lifetime of an e-mail verification token"},
    {"RESET_TOKEN_TTL_S", "1800", "lifetime of a password reset token"},
    {"MESSAGING_URL", "http://127.0.0.1:8082", "the messaging service (GDPR exports read it)"},
    {"OUTBOX_STALE_MS", "5000", "age after which an unacknowledged event is produced again"},
    {"JANITOR_EVERY_S", "60", "period of the expiry of old tokens, sessions and exports"},
    {"TRUSTED_PROXIES", "127.0.0.1", "peers (comma-separated) whose X-Forwarded-For is believed"},
    {"LOGIN_IP_PER_MIN", "60", "password tries (login, change) per client address per minute"},
    {"MAIL_IP_PER_MIN", "30", "verification/reset mails asked per client address per minute"},
    {"MAIL_PER_HOUR", "5", "verification/reset mails asked per account per hour"},
    {"REFRESH_IP_PER_MIN", "600", "refresh token uses per client address per minute"},
    {"TOKEN_IP_PER_MIN", "6000", "server-side token mints per client address per minute"},
    {"LOGIN_FREE_FAILURES", "5", "failures of one account before it backs off"},
    {"LOGIN_BACKOFF_MAX_S", "900", "longest backoff of an account (1, 2, 4 ... seconds)"},
    {"PLATFORM_ADMIN_KEY", NULL, "key of the platform operator (X-Admin-Key)"},
    {"LOG_LEVEL", "info", "debug, info, warn or error"},
};

int main(int argc, char **argv)
{
    user_ctx ctx = {0};
    cm_http_config hc;
    cm_health_deps health = {0};
    cm_http_server *srv = NULL;
    long redis_port, stale_ms;
    int rc = 1;

    if (cm_config_help_requested(argc, argv, "Tenants, users, credentials and sessions.", vars,
                                 sizeof(vars) / sizeof(vars[0])))
        return 0;
    cm_process_block_signals();
    cm_log_init("user", cm_log_level_parse(cm_config_str("LOG_LEVEL", NULL), CM_LOG_INFO));
    if (sodium_init() < 0) {
        cm_error("libsodium failed to initialise");
        return 1;
    }
    ctx.admin_key = cm_config_str("PLATFORM_ADMIN_KEY", NULL);
    ctx.trusted_proxies = cm_config_str("TRUSTED_PROXIES", "127.0.0.1");
    ctx.messaging_url = cm_config_str("MESSAGING_URL", "http://127.0.0.1:8082");
    if (ctx.admin_key == NULL)
        cm_warn("PLATFORM_ADMIN_KEY is unset: tenants cannot be created");
    if (cm_config_long("ACCESS_TOKEN_TTL_S", 900, 60, 86400, &ctx.token_ttl_s) ||
        cm_config_long("REFRESH_TOKEN_TTL_S", 2592000, 300, 31536000, &ctx.refresh_ttl_s) ||
        cm_config_long("JWT_LEEWAY_S", 30, 0, 600, &ctx.leeway_s) ||
        cm_config_long("VERIFY_TOKEN_TTL_S", 86400, 60, 2592000, &ctx.verify_ttl_s) ||
        cm_config_long("RESET_TOKEN_TTL_S", 1800, 60, 86400, &ctx.reset_ttl_s) ||
        cm_config_long("LOGIN_IP_PER_MIN", 60, 1, 1000000, &ctx.limits.login_ip_per_min) ||
        cm_config_long("MAIL_IP_PER_MIN", 30, 1, 1000000, &ctx.limits.mail_ip_per_min) ||
        cm_config_long("MAIL_PER_HOUR", 5, 1, 1000, &ctx.limits.mail_per_hour) ||
        cm_config_long("REFRESH_IP_PER_MIN", 600, 1, 10000000, &ctx.limits.refresh_ip_per_min) ||
        cm_config_long("TOKEN_IP_PER_MIN", 6000, 1, 10000000, &ctx.limits.token_ip_per_min) ||
        cm_config_long("LOGIN_FREE_FAILURES", 5, 1, 1000, &ctx.limits.free_failures) ||
        cm_config_long("LOGIN_BACKOFF_MAX_S", 900, 1, 86400, &ctx.limits.backoff_max_s) ||
        cm_config_long("JANITOR_EVERY_S", 60, 1, 86400, &ctx.janitor_every_s) ||
        cm_config_long("OUTBOX_STALE_MS", 5000, 100, 3600000, &stale_ms) ||
        cm_config_long("REDIS_PORT", 6379, 1, 65535, &redis_port) ||
        cm_http_config_from_env(8081, &hc) ||
        cm_jwt_from_env("JWT_PRIVATE_KEY_FILE", &ctx.signer) ||
        cm_mongo_create(cm_config_str("MONGO_URI", "mongodb://127.0.0.1:27017"),
                        cm_config_str("MONGO_DB", "chat_user"), &ctx.db) ||
        cm_outbox_create(ctx.db, USER_COLL_OUTBOX, stale_ms, &ctx.outbox) ||
        cm_kafka_producer_create(cm_config_str("KAFKA_BROKERS", "127.0.0.1:9092"),
                                 cm_config_str("KAFKA_TOPIC_PREFIX", ""), cm_outbox_delivered,
                                 ctx.outbox, &ctx.kafka) ||
        cm_redis_create(cm_config_str("REDIS_HOST", "127.0.0.1"), (int)redis_port, 8, 500,
                        &ctx.redis))
        goto out;
    cm_outbox_set_producer(ctx.outbox, ctx.kafka);
    cm_session_enforce(ctx.redis); /* a revoked session's tokens are refused here too */
    ctx.verifier = ctx.signer; /* tokens this service issued are checked with its own keys */
    if (user_ensure_indexes(&ctx) != CM_OK)
        cm_warn("indexes not created yet (MongoDB down?); continuing");
    if (user_tenants_sync_suspended(&ctx) != CM_OK)
        cm_warn("suspended tenants not re-marked in Redis (MongoDB or Redis down?); continuing");
    if (cm_http_server_create(&hc, &srv) ||
        cm_http_route(srv, "POST", "/v1/tenants", user_tenants_create, &ctx) ||
        cm_http_route(srv, "GET", "/v1/tenants", user_tenants_list, &ctx) ||
        cm_http_route(srv, "GET", "/internal/v1/tenants/cors-origins", user_tenants_cors, &ctx) ||
        cm_http_route(srv, "GET", "/v1/tenants/{id}", user_tenants_get, &ctx) ||
        cm_http_route(srv, "GET", "/internal/v1/tenants/{id}/settings",
                      user_tenants_settings_internal, &ctx) ||
        cm_http_route(srv, "PATCH", "/v1/tenants/{id}", user_tenants_update, &ctx) ||
        cm_http_route(srv, "POST", "/v1/tenants/{id}/suspend", user_tenants_suspend, &ctx) ||
        cm_http_route(srv, "POST", "/v1/tenants/{id}/resume", user_tenants_resume, &ctx) ||
        cm_http_route(srv, "POST", "/v1/tenants/{id}/api-keys", user_api_keys_create, &ctx) ||
        cm_http_route(srv, "GET", "/v1/tenants/{id}/api-keys", user_api_keys_list, &ctx) ||
        cm_http_route(srv, "POST", "/v1/tenants/{id}/api-keys/{key}/rotate",
                      user_api_keys_rotate, &ctx) ||
        cm_http_route(srv, "DELETE", "/v1/tenants/{id}/api-keys/{key}", user_api_keys_revoke,
                      &ctx) ||
        cm_http_route(srv, "POST", "/v1/auth/token", user_auth_token, &ctx) ||
        cm_http_route(srv, "POST", "/v1/auth/register", user_auth_register, &ctx) ||
        cm_http_route(srv, "POST", "/v1/auth/login", user_auth_login, &ctx) ||
        cm_http_route(srv, "GET", "/v1/users/me", user_users_me, &ctx) ||
        cm_http_route(srv, "PATCH", "/v1/users/me", user_users_update_me, &ctx) ||
        cm_http_route(srv, "DELETE", "/v1/users/me", user_users_delete_me, &ctx) ||
        cm_http_route(srv, "GET", "/v1/users/me/blocks", user_blocks_list, &ctx) ||
        cm_http_route(srv, "POST", "/v1/users/me/exports", user_exports_create, &ctx) ||
        cm_http_route(srv, "GET", "/v1/users/me/exports/{id}", user_exports_get, &ctx) ||
        cm_http_route(srv, "GET", "/v1/users/me/exports/{id}/download", user_exports_download,
                      &ctx) ||
        cm_http_route(srv, "PUT", "/v1/users/me/blocks/{id}", user_blocks_put, &ctx) ||
        cm_http_route(srv, "DELETE", "/v1/users/me/blocks/{id}", user_blocks_delete, &ctx) ||
        cm_http_route(srv, "GET", "/v1/users", user_users_search, &ctx) ||
        cm_http_route(srv, "GET", "/v1/users/{id}", user_users_get, &ctx) ||
        cm_http_route(srv, "PUT", "/v1/users/{id}/roles", user_roles_assign, &ctx) ||
        cm_http_route(srv, "GET", "/v1/roles", user_roles_list, &ctx) ||
        cm_http_route(srv, "PUT", "/v1/roles/{name}", user_roles_put, &ctx) ||
        cm_http_route(srv, "DELETE", "/v1/roles/{name}", user_roles_delete, &ctx) ||
        cm_http_route(srv, "PUT", "/v1/server/roles/{name}", user_server_roles_put, &ctx) ||
        cm_http_route(srv, "DELETE", "/v1/server/roles/{name}", user_server_roles_delete, &ctx) ||
        cm_http_route(srv, "PUT", "/v1/server/users/{id}", user_server_put, &ctx) ||
        cm_http_route(srv, "GET", "/v1/server/users/{id}", user_server_get, &ctx) ||
        cm_http_route(srv, "DELETE", "/v1/server/users/{id}", user_server_delete, &ctx) ||
        cm_http_route(srv, "POST", "/v1/server/users/{id}/deactivate", user_server_deactivate,
                      &ctx) ||
        cm_http_route(srv, "POST", "/v1/server/users/{id}/reactivate", user_server_reactivate,
                      &ctx) ||
        cm_http_route(srv, "POST", "/v1/auth/verify-email/request", user_verify_request, &ctx) ||
        cm_http_route(srv, "POST", "/v1/auth/verify-email", user_verify_confirm, &ctx) ||
        cm_http_route(srv, "POST", "/v1/auth/password/change", user_password_change, &ctx) ||
        cm_http_route(srv, "POST", "/v1/auth/password/forgot", user_password_forgot, &ctx) ||
        cm_http_route(srv, "POST", "/v1/auth/password/reset", user_password_reset, &ctx) ||
        cm_http_route(srv, "GET", "/.well-known/jwks.json", user_keys_jwks, &ctx) ||
        cm_http_route(srv, "POST", "/v1/auth/refresh", user_auth_refresh, &ctx) ||
        cm_http_route(srv, "POST", "/v1/auth/logout", user_auth_logout, &ctx) ||
        cm_http_route(srv, "GET", "/v1/sessions", user_sessions_list, &ctx) ||
        cm_http_route(srv, "POST", "/v1/sessions/revoke-others", user_sessions_revoke_others,
                      &ctx) ||
        cm_http_route(srv, "DELETE", "/v1/sessions/{id}", user_sessions_revoke, &ctx))
        goto out;
    health.mongo = ctx.db;
    health.kafka = ctx.kafka;
    cm_http_set_ready(srv, cm_health_ready, &health);
    if (user_jobs_start(&ctx, &ctx.jobs) != CM_OK || cm_http_server_start(srv) != CM_OK)
        goto out;
    cm_info("user service ready");
    cm_info("stopping on signal %d", cm_process_wait_signal());
    rc = 0;
out:
    cm_http_server_destroy(srv);
    user_jobs_stop(ctx.jobs);
    cm_kafka_producer_destroy(ctx.kafka); /* flushes: the last delivery reports come in */
    if (ctx.outbox && ctx.db) {
        cm_outbox_set_producer(ctx.outbox, NULL); /* gone: the sweep must not produce */
        cm_outbox_tick(ctx.outbox);               /* the last delivery reports are marked */
    }
    cm_outbox_destroy(ctx.outbox);
    cm_mongo_destroy(ctx.db);
    cm_redis_destroy(ctx.redis);
    cm_jwt_destroy(ctx.signer);
    return rc;
}
