/* gateway_routes.c - route lookup and header and URL rules as plain functions. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "gateway.h"

const gateway_route *gateway_route_find(const gateway_ctx *ctx, const char *path)
{
    const gateway_route *best = NULL;
    size_t best_len = 0;

    for (int i = 0; i < ctx->nroutes; i++) {
        const gateway_route *r = &ctx->routes[i];
        size_t n = strlen(r->prefix);
        if (strncmp(path, r->prefix, n) == 0 && (path[n] == '\0' || path[n] == '/') &&
            n > best_len) {
            best = r;
            best_len = n;
        }
    }
    return best;
}

int gateway_header_dropped(const char *name)
{
    static const char *const dropped[] = {
        "Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding",
        "Upgrade", "Host", "Content-Length", "Expect", "Proxy-Authorization",
        "X-Forwarded-For", /* the gateway sets its own: services believe only that one */
        NULL};
    for (const char *const *d = dropped; *d; d++)
        if (strcasecmp(name, *d) == 0)
            return 1;
    return strncasecmp(name, "X-Auth-", 7) == 0;
}

int gateway_escape(const char *s, int keep_slash, char *out, size_t n, size_t *len)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char c = *p;
        int plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.' || c == '_' || c == '~' || (keep_slash && c == '/');
        if (*len + (plain ? 1 : 3) >= n)
            return -1;
        if (plain) {
            out[(*len)++] = (char)c;
        } else {
            out[(*len)++] = '%';
            out[(*len)++] = hex[c >> 4];
            out[(*len)++] = hex[c & 15];
        }
    }
    out[*len] = '\0';
    return 0;
}
