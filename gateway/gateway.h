/* gateway.h - the gateway's route table and proxy. */
#ifndef GATEWAY_H
#define GATEWAY_H

#include <stddef.h>

#include "common/http.h"
#include "common/jwt.h"

/* One entry of the route table: requests whose path starts with `prefix` (at a segment
 * boundary) go to `upstream`; `auth` says whether an access token is required first. */
typedef struct gateway_route {
    const char *prefix;
    const char *upstream; /* base URL, e.g. http://127.0.0.1:8082 */
    int auth;
} gateway_route;

/* A larger request and response cap for the paths under `prefix` (media uploads and
 * downloads), at a segment boundary like routes. */
typedef struct gateway_limit {
    const char *prefix;
    size_t max_body;
} gateway_limit;

typedef struct gateway_ctx {
    gateway_route routes[16];
    int nroutes;
    gateway_limit limits[4];
    int nlimits;
    cm_jwt *verifier;
    long timeout_ms;
    long connect_timeout_ms;
    size_t max_response;
} gateway_ctx;

/* Returns the route for `path` (longest prefix at a segment boundary), or NULL. */
const gateway_route *gateway_route_find(const gateway_ctx *ctx, const char *path);

/* Returns the cap of the longest `limits` prefix matching `path`, or `def` when none does. */
size_t gateway_limit_for(const gateway_ctx *ctx, const char *path, size_t def);

/* Returns 1 when a client header must not be forwarded: hop-by-hop headers (RFC 9110
 * section 7.6.1), Host and Content-Length (libcurl sets them), and the identity headers the
 * gateway itself sets (X-Auth-*), so a client can never spoof them. */
int gateway_header_dropped(const char *name);

/* Appends `s` to `out` (size n, at offset *len) percent-encoding everything but RFC 3986
 * unreserved characters and, when keep_slash, '/'. Returns -1 when it does not fit. */
int gateway_escape(const char *s, int keep_slash, char *out, size_t n, size_t *len);

/* The catch-all handler: checks auth per the route, then proxies with libcurl. */
void gateway_proxy(cm_http_req *req, void *ud);

#endif
