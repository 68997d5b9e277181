/* httpc.h - a small HTTP client over libcurl for service-to-service calls (JWK Sets, the
 * GDPR export's reads of other services) and calls to external providers (push): one request,
 * bounded in time and size, http(s) only, no redirects. */
#ifndef COMMON_HTTPC_H
#define COMMON_HTTPC_H

#include <stddef.h>

#include "common/error.h"

/* GETs `url` with an optional bearer token (NULL: none) within `timeout_ms` (connection
 * included). On CM_OK the body is a NUL-terminated heap string `*body` (caller frees, `*len`
 * bytes) and `*status` the HTTP status, whatever it is. CM_ETOOBIG when the body exceeds
 * `max` bytes, CM_ETIMEOUT when time ran out, CM_EIO when the server cannot be reached or the
 * URL is not http(s), CM_ENOMEM. */
cm_err cm_httpc_get(const char *url, const char *bearer, long timeout_ms, size_t max,
                    char **body, size_t *len, long *status);

/* The same GET with one request header given as a whole "Name: value" line (NULL: none), for
 * credentials other than a bearer token (X-Admin-Key between the gateway and the user
 * service). */
cm_err cm_httpc_get_with(const char *url, const char *header, long timeout_ms, size_t max,
                         char **body, size_t *len, long *status);

/* One request for cm_httpc_request. */
typedef struct cm_httpc_request {
    const char *method;              /* "GET", "POST", "DELETE", ... */
    const char *url;                 /* http:// or https:// */
    const char *const *headers;      /* "Name: value" lines, NULL-terminated (may be NULL) */
    const char *body;                /* request body (may be NULL) */
    size_t body_len;                 /* bytes of body */
    long timeout_ms;                 /* whole request, connection included */
    size_t max;                      /* largest response body accepted, bytes */
    int http2;                       /* 1: HTTP/2 (ALPN over TLS; over cleartext an h2c
                                        upgrade offer, falling back to HTTP/1.1) */
} cm_httpc_request;

/* Performs `req`. On CM_OK `*status` is the HTTP status, whatever it is, and the response body
 * a NUL-terminated heap string `*body` (caller frees, `*len` bytes). Errors as cm_httpc_get:
 * CM_ETOOBIG, CM_ETIMEOUT, CM_EIO (unreachable, not http(s)), CM_ENOMEM; nothing is returned
 * through the out-parameters then. Thread-safe (one curl handle per call). */
cm_err cm_httpc_request_do(const cm_httpc_request *req, char **body, size_t *len, long *status);

#endif
