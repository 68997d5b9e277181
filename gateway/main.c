/* main.c - the API gateway: route table from configuration, token check, proxy. */
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "common/config.h"
#include "common/jwks.h"
#include "common/log.h"
#include "common/process.h"
#include "common/session.h"
#include "gateway.h"

static const cm_config_var vars[] = {
    {"HTTP_HOST", "127.0.0.1", "address to listen on"},
    {"HTTP_PORT", "8080", "port to listen on"},
    {"HTTP_THREADS", "8", "worker threads (each holds one upstream connection cache)"},
    {"HTTP_MAX_BODY", "1048576", "largest request body in bytes (413 above)"},
    {"USER_URL", "http://127.0.0.1:8081", "base URL of the user service"},
    {"MESSAGING_URL", "http://127.0.0.1:8082", "base URL of the messaging service"},
    {"UPSTREAM_TIMEOUT_MS", "10000", "total time allowed to an upstream request"},
    {"UPSTREAM_CONNECT_TIMEOUT_MS", "1000", "time allowed to connect to an upstream"},
    {"JWT_JWKS_URL", "", "JWK Set URL of the signing keys (e.g. the user service's "
                         "/.well-known/jwks.json); replaces JWT_PUBLIC_KEY_FILE"},
    {"JWT_JWKS_MIN_REFRESH_S", "30", "fewest seconds between refetches caused by unknown kids"},
    {"JWT_JWKS_MAX_AGE_S", "300", "background refetch period of the JWK Set (0: none)"},
    {"JWT_PUBLIC_KEY_FILE", NULL, "PEM public key, or kid=path,..., when JWT_JWKS_URL is unset"},
    {"JWT_ALG", "RS256", "pinned signing algorithm"},
    {"JWT_ISSUER", "chat-platform", "required iss"},
    {"JWT_AUDIENCE", "chat-api", "required aud"},
    {"REDIS_HOST", "127.0.0.1", "Redis host (revoked-session denylist)"},
    {"REDIS_PORT", "6379", "Redis port"},
    {"LOG_LEVEL", "info", "debug, info, warn or error"},
};

int main(int argc, char **argv)
{
    gateway_ctx ctx;
    cm_http_config hc;
    cm_http_server *srv = NULL;
    const char *user, *messaging;
    cm_redis *redis = NULL;
    long redis_port;
    int rc = 1;

    if (cm_config_help_requested(argc, argv, "The API gateway: routing, auth check, proxy.",
                                 vars, sizeof(vars) / sizeof(vars[0])))
        return 0;
    cm_process_block_signals();
    cm_log_init("gateway", cm_log_level_parse(cm_config_str("LOG_LEVEL", NULL), CM_LOG_INFO));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    memset(&ctx, 0, sizeof(ctx));
    ctx.max_response = 16u << 20;
    if (cm_http_config_from_env(8080, &hc) ||
        cm_config_long("UPSTREAM_TIMEOUT_MS", 10000, 100, 600000, &ctx.timeout_ms) ||
        cm_config_long("UPSTREAM_CONNECT_TIMEOUT_MS", 1000, 10, 60000, &ctx.connect_timeout_ms) ||
        cm_jwt_verifier_from_env(&ctx.verifier) ||
        cm_config_long("REDIS_PORT", 6379, 1, 65535, &redis_port) ||
        cm_redis_create(cm_config_str("REDIS_HOST", "127.0.0.1"), (int)redis_port, 8, 500, &redis))
        goto out;
    cm_session_enforce(redis); /* a revoked session's tokens are refused at the edge */
    if (cm_config_str("HTTP_THREADS", NULL) == NULL)
        hc.threads = 8; /* blocking upstream calls: more threads than the services */
    user = cm_config_str("USER_URL", "http://127.0.0.1:8081");
    messaging = cm_config_str("MESSAGING_URL", "http://127.0.0.1:8082");
    /* Tenant creation (admin key) and token issue (tenant key, password) authenticate in the
     * user service; everything else needs an access token here first. */
    ctx.routes[ctx.nroutes++] = (gateway_route){"/v1/tenants", user, 0};
    ctx.routes[ctx.nroutes++] = (gateway_route){"/v1/auth", user, 0};
    ctx.routes[ctx.nroutes++] = (gateway_route){"/v1/users", user, 1};
    ctx.routes[ctx.nroutes++] = (gateway_route){"/v1/sessions", user, 1};
    ctx.routes[ctx.nroutes++] = (gateway_route){"/v1/roles", user, 1};
    ctx.routes[ctx.nroutes++] = (gateway_route){"/v1/server", user, 0}; /* tenant key, checked there */
    ctx.routes[ctx.nroutes++] = (gateway_route){"/.well-known/jwks.json", user, 0};
    ctx.routes[ctx.nroutes++] = (gateway_route){"/v1/conversations", messaging, 1};
    if (cm_http_server_create(&hc, &srv) || cm_http_route_prefix(srv, "/", gateway_proxy, &ctx))
        goto out;
    if (cm_http_server_start(srv) != CM_OK)
        goto out;
    cm_info("gateway ready: user %s, messaging %s", user, messaging);
    cm_info("stopping on signal %d", cm_process_wait_signal());
    rc = 0;
out:
    cm_http_server_destroy(srv);
    cm_jwt_destroy(ctx.verifier);
    cm_redis_destroy(redis);
    curl_global_cleanup();
    return rc;
}
