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
    /* cm_httpc_pool_perform only (may be NULL): libcurl's CURLOPT_OPENSOCKETFUNCTION, called
     * with each resolved address right before a connection is opened, so a check of the
     * address there cannot be bypassed by DNS rebinding. Its prototype is
     * curl_socket_t fn(void *ud, curlsocktype purpose, struct curl_sockaddr *address)
     * returning socket(2)'s result or CURL_SOCKET_BAD to refuse the address. */
    void *addr_ok;
    void *addr_ok_ud;
} cm_httpc_request;

/* Performs `req`. On CM_OK `*status` is the HTTP status, whatever it is, and the response body
 * a NUL-terminated heap string `*body` (caller frees, `*len` bytes). Errors as cm_httpc_get:
 * CM_ETOOBIG, CM_ETIMEOUT, CM_EIO (unreachable, not http(s)), CM_ENOMEM; nothing is returned
 * through the out-parameters then. Thread-safe (one curl handle per call). */
cm_err cm_httpc_request_do(const cm_httpc_request *req, char **body, size_t *len, long *status);

/* A set of kept-alive connections for many requests at once (curl's multi interface): the
 * sender threads of providers (push, webhooks) reuse connections instead of opening one per
 * request, and have up to `max_parallel` requests in flight (HTTP/2 requests to one host are
 * multiplexed over one connection). Used by one thread at a time. */
typedef struct cm_httpc_pool cm_httpc_pool;

/* The result of one request of cm_httpc_pool_perform: `rc` as cm_httpc_request_do returns
 * it; on CM_OK `status` and the NUL-terminated heap `body` (`len` bytes; caller frees). */
typedef struct cm_httpc_result {
    cm_err rc;
    long status;
    char *body;
    size_t len;
} cm_httpc_result;

/* Creates a pool of up to `max_parallel` (>= 1) requests in flight. CM_EINVAL, CM_ENOMEM. */
cm_err cm_httpc_pool_create(size_t max_parallel, cm_httpc_pool **out);

/* Performs `reqs[0..n)` concurrently and waits for all; `res[i]` gets the result of
 * `reqs[i]`, whatever it is (each one's own timeout applies). CM_OK when every request was
 * performed; CM_ENOMEM or CM_EIO when some could not be (their results say CM_EIO). */
cm_err cm_httpc_pool_perform(cm_httpc_pool *p, const cm_httpc_request *reqs, size_t n,
                             cm_httpc_result *res);

void cm_httpc_pool_destroy(cm_httpc_pool *p); /* accepts NULL */

#endif
