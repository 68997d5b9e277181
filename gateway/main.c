/* main.c - the API gateway: route table from configuration, token check, proxy. */
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "common/config.h"
#include "common/log.h"
#include "common/process.h"
#include "gateway.h"

static const cm_config_var vars[] = {
    {"HTTP_HOST", "127.0.0.1", "address to listen on"},
    {"HTTP_PORT", "8080", "port to listen on"},
    {"HTTP_THREADS", "8", "worker threads (each holds one upstream connection cache)"},
    {"HTTP_MAX_BODY", "1048576", "largest request body in bytes (413 above)"},
    {"USER_URL", "http://127.0.0.1:8081", "base URL of the user service"},
    {"MESSAGING_URL", "http://127.0.0.1:8082", "base URL of the messaging service"},
    {"MEDIA_URL", "http://127.0.0.1:8084", "base URL of the media service"},
    {"MEDIA_MAX_BODY", "104923136", "request and response cap of the media routes (100 MiB + 64 KiB)"},
    {"UPSTREAM_TIMEOUT_MS", "10000", "total time allowed to an upstream request"},
    {"UPSTREAM_CONNECT_TIMEOUT_MS", "1000", "time allowed to connect to an upstream"},
    {"JWT_PUBLIC_KEY_FILE", NULL, "PEM public key that verifies access tokens"},
    {"JWT_ALG", "RS256", "pinned signing algorithm"},
    {"JWT_ISSUER", "chat-platform", "required iss"},
    {"JWT_AUDIENCE", "chat-api", "required aud"},
    {"LOG_LEVEL", "info", "debug, info, warn or error"},
};

int main(int argc, char **argv)
{
    gateway_ctx ctx;
    cm_http_config hc;
    cm_http_server *srv = NULL;
    const char *user, *messaging, *media;
    long media_max;
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
        cm_config_long("MEDIA_MAX_BODY", (100L << 20) + (64L << 10), 1, 1L << 30, &media_max) ||
        cm_jwt_from_env("JWT_PUBLIC_KEY_FILE", &ctx.verifier))
        goto out;
    if (cm_config_str("HTTP_THREADS", NULL) == NULL)
        hc.threads = 8; /* blocking upstream calls: more threads than the services */
    user = cm_config_str("USER_URL", "http://127.0.0.1:8081");
    messaging = cm_config_str("MESSAGING_URL", "http://127.0.0.1:8082");
    media = cm_config_str("MEDIA_URL", "http://127.0.0.1:8084");
    /* Tenant creation (admin key) and token issue (tenant key, password) authenticate in the
     * user service; everything else needs an access token here first. */
    ctx.routes[ctx.nroutes++] = (gateway_route){"/v1/tenants", user, 0};
    ctx.routes[ctx.nroutes++] = (gateway_route){"/v1/auth", user, 0};
    ctx.routes[ctx.nroutes++] = (gateway_route){"/v1/users", user, 1};
    ctx.routes[ctx.nroutes++] = (gateway_route){"/v1/conversations", messaging, 1};
    ctx.routes[ctx.nroutes++] = (gateway_route){"/v1/sync", messaging, 1};
    ctx.routes[ctx.nroutes++] = (gateway_route){"/v1/moderation", messaging, 1};
    /* Media: uploads and downloads get their own body cap; signed URLs carry their own
     * credentials (an HMAC in the query), so no token is asked for them. */
    ctx.routes[ctx.nroutes++] = (gateway_route){"/v1/media", media, 1};
    ctx.routes[ctx.nroutes++] = (gateway_route){"/v1/uploads", media, 1};
    ctx.routes[ctx.nroutes++] = (gateway_route){"/v1/signed-media", media, 0};
    ctx.limits[ctx.nlimits++] = (gateway_limit){"/v1/media", (size_t)media_max};
    ctx.limits[ctx.nlimits++] = (gateway_limit){"/v1/uploads", (size_t)media_max};
    ctx.limits[ctx.nlimits++] = (gateway_limit){"/v1/signed-media", (size_t)media_max};
    if (cm_http_server_create(&hc, &srv) || cm_http_route_prefix(srv, "/", gateway_proxy, &ctx) ||
        cm_http_body_limit(srv, "/v1/media", (size_t)media_max) ||
        cm_http_body_limit(srv, "/v1/uploads", (size_t)media_max))
        goto out;
    if (cm_http_server_start(srv) != CM_OK)
        goto out;
    cm_info("gateway ready: user %s, messaging %s, media %s", user, messaging, media);
    cm_info("stopping on signal %d", cm_process_wait_signal());
    rc = 0;
out:
    cm_http_server_destroy(srv);
    cm_jwt_destroy(ctx.verifier);
    curl_global_cleanup();
    return rc;
}
