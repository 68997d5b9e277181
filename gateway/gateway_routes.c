/* gateway_routes.c - route lookup and header, URL, retry and trace rules as plain functions. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/internal.h"
#include "common/uuid.h"
#include "gateway.h"

gateway_route *gateway_route_find(gateway_ctx *ctx, const char *path)
{
    gateway_route *best = NULL;
    size_t best_len = 0;

    for (int i = 0; i < ctx->nroutes; i++) {
        gateway_route *r = &ctx->routes[i];
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
        /* RFC 9110 section 7.6.1 hop-by-hop, and framing libcurl sets itself */
        "Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding",
        "Upgrade", "Host", "Content-Length", "Expect", "Proxy-Authorization",
        /* what the gateway sets for the services: never from a client */
        "X-Request-Id", "X-Real-Ip", "Forwarded", "traceparent",
        /* the services' own key (common/internal.h): a client has no business sending it */
        CM_INTERNAL_KEY_HEADER, NULL};
    for (const char *const *d = dropped; *d; d++)
        if (strcasecmp(name, *d) == 0)
            return 1;
    return strncasecmp(name, "X-Auth-", 7) == 0 || strncasecmp(name, "X-Forwarded-", 12) == 0 ||
           strncasecmp(name, "X-Gateway-", 10) == 0;
}

int gateway_secret_equal(const char *given, const char *secret)
{
    size_t n = strlen(secret);
    unsigned char d = 0;
    if (strlen(given) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        d |= (unsigned char)(given[i] ^ secret[i]);
    return d == 0;
}

int gateway_retryable(const char *method, int has_idempotency_key)
{
    static const char *const idempotent[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE",
                                             NULL};
    if (has_idempotency_key)
        return 1;
    for (const char *const *m = idempotent; *m; m++)
        if (strcmp(method, *m) == 0)
            return 1;
    return 0;
}

/* 1 when s[0..n) is lowercase hex and not all zeros. */
static int hex_nonzero(const char *s, size_t n)
{
    int nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
        nonzero |= c != '0';
    }
    return nonzero;
}

void gateway_traceparent(const char *in, char *out, size_t n)
{
    char trace[33], span[17], flags[3] = "01";

    /* version "00" - 32 hex trace-id - 16 hex parent-id - 2 hex flags, lowercase, ids not all
     * zero (W3C Trace Context, section 3.2). */
    if (in && strlen(in) == 55 && strncmp(in, "00-", 3) == 0 && in[35] == '-' && in[52] == '-' &&
        hex_nonzero(in + 3, 32) && hex_nonzero(in + 36, 16) &&
        (hex_nonzero(in + 53, 2) || strncmp(in + 53, "00", 2) == 0)) {
        memcpy(trace, in + 3, 32);
        trace[32] = '\0';
        memcpy(flags, in + 53, 2);
    } else if (cm_random_hex(trace, 16) != CM_OK) {
        snprintf(trace, sizeof(trace), "%032x", 1);
    }
    if (cm_random_hex(span, 8) != CM_OK)
        snprintf(span, sizeof(span), "%016x", 1);
    snprintf(out, n, "00-%s-%s-%s", trace, span, flags);
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
