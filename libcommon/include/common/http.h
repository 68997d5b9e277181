/* http.h - the HTTP server every process uses: routes with path parameters, a body cap
 * answered with 413 before the body is read, RFC 9457 problem+json errors, request ids,
 * JSON access logs, /health/live, /health/ready and /metrics (Prometheus text format 0.0.4).
 * libmicrohttpd stays behind these types. */
#ifndef COMMON_HTTP_H
#define COMMON_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

#include "common/error.h"

typedef struct cm_http_server cm_http_server;
typedef struct cm_http_req cm_http_req;

/* A route handler. It runs on a server thread once the whole body has arrived and must answer
 * with exactly one cm_http_reply_* call (a handler that answers nothing gets a 500). */
typedef void (*cm_http_handler)(cm_http_req *req, void *ud);

/* Readiness check for /health/ready: CM_OK when the process can serve; otherwise an error
 * and a short reason in `detail` (size `n`). */
typedef cm_err (*cm_http_ready_fn)(void *ud, char *detail, size_t n);

/* Appends process-specific Prometheus lines to /metrics: call `emit(ctx, text)` per chunk. */
typedef void (*cm_http_metrics_fn)(void *ud, void (*emit)(void *ctx, const char *text),
                                   void *ctx);

typedef struct cm_http_config {
    const char *host;        /* bind address, e.g. "127.0.0.1" or "0.0.0.0" */
    int port;                /* TCP port */
    int threads;             /* worker threads (thread pool size), >= 1 */
    size_t max_body;         /* bytes; larger bodies get 413 before they are read */
    unsigned idle_timeout_s; /* idle connection timeout in seconds */
    unsigned drain_s;        /* how long cm_http_server_stop waits for in-flight requests */
} cm_http_config;

/* Fills `cfg` from HTTP_HOST (default 127.0.0.1), HTTP_PORT (default `default_port`),
 * HTTP_THREADS (4), HTTP_MAX_BODY (1 MiB), HTTP_IDLE_TIMEOUT_S (60), HTTP_DRAIN_S (10), and
 * loads the shared key of the /internal routes (INTERNAL_KEY_FILE, common/internal.h).
 * CM_EINVAL (logged) when a value is out of range or the key file is unusable. */
cm_err cm_http_config_from_env(int default_port, cm_http_config *cfg);

/* Creates a server (not yet listening). Returns CM_EINVAL for a bad config, CM_ENOMEM. */
cm_err cm_http_server_create(const cm_http_config *cfg, cm_http_server **out);

/* Adds a route. `pattern` is a path such as "/v1/conversations/{id}/messages": literal
 * segments and whole-segment parameters. `method` is "GET", "POST", ... Routes are matched
 * in the order added. A pattern under "/internal/" answers 401 problem+json without the
 * shared X-Internal-Key (common/internal.h). CM_EINVAL for a malformed pattern, CM_ETOOBIG
 * past 64 routes. */
cm_err cm_http_route(cm_http_server *srv, const char *method, const char *pattern,
                     cm_http_handler handler, void *ud);

/* A route that matches every path under `prefix` (for proxies): "/v1/users" matches
 * "/v1/users" and "/v1/users/..." for any method. */
cm_err cm_http_route_prefix(cm_http_server *srv, const char *prefix, cm_http_handler handler,
                            void *ud);

void cm_http_set_ready(cm_http_server *srv, cm_http_ready_fn fn, void *ud);
void cm_http_set_metrics(cm_http_server *srv, cm_http_metrics_fn fn, void *ud);

/* Edge limits (for the gateway), before cm_http_server_start; 0 keeps libmicrohttpd's
 * default: at most `max_conns` connections, `per_ip_conns` from one client address, and
 * `conn_memory` bytes per connection for the request line and headers (larger headers are
 * refused with 431 Request Header Fields Too Large, RFC 6585). */
void cm_http_set_connection_limits(cm_http_server *srv, unsigned max_conns,
                                   unsigned per_ip_conns, size_t conn_memory);

/* Starts listening. CM_EIO when the port cannot be bound. */
cm_err cm_http_server_start(cm_http_server *srv);

/* Graceful stop: stops accepting, waits up to drain_s for in-flight requests, closes. */
void cm_http_server_stop(cm_http_server *srv);

/* Frees the server (stops it first if running). Accepts NULL. */
void cm_http_server_destroy(cm_http_server *srv);

/* --- the request (valid only inside the handler) -------------------------------------- */

const char *cm_http_method(const cm_http_req *req);
const char *cm_http_path(const cm_http_req *req);          /* without the query string */
const char *cm_http_request_id(const cm_http_req *req);    /* accepted or created */
const char *cm_http_param(const cm_http_req *req, const char *name);  /* path param or NULL */
const char *cm_http_query(const cm_http_req *req, const char *name);  /* query arg or NULL */
const char *cm_http_header(const cm_http_req *req, const char *name); /* header or NULL */
const char *cm_http_client_ip(const cm_http_req *req);
int cm_http_reply_status(const cm_http_req *req); /* status answered so far, 0 before */

/* Adds "name":"value" (JSON-escaped) to the request's access log line; fields past 512 bytes
 * in all are left out. */
void cm_http_log_field(cm_http_req *req, const char *name, const char *value);

/* Calls fn for each query argument (name, decoded value; value "" when absent); for proxies. */
void cm_http_each_query(const cm_http_req *req,
                        void (*fn)(void *ud, const char *name, const char *value), void *ud);

/* Calls fn for each request header (name, value); for proxies. */
void cm_http_each_header(const cm_http_req *req,
                         void (*fn)(void *ud, const char *name, const char *value), void *ud);

/* The raw body (not NUL-terminated, may be empty). */
const char *cm_http_body(const cm_http_req *req, size_t *len);

/* Memory that lives until the request completes (freed with it). NULL when out of memory. */
void *cm_http_alloc(cm_http_req *req, size_t size);
char *cm_http_strdup(cm_http_req *req, const char *s);

/* Parses the body as a JSON object (Content-Type application/json, depth-capped). On failure
 * it has already answered (415 or 400 with the precise reason) and returns non-CM_OK.
 * The tree is owned by the request. */
cm_err cm_http_json_body(cm_http_req *req, cJSON **out);

/* Reads an integer query parameter into `*out` (`def` when absent), clamped to [min, max].
 * Answers 400 and returns CM_EINVAL when it is not an integer. */
cm_err cm_http_query_long(cm_http_req *req, const char *name, long def, long min, long max,
                          long *out);

/* --- replies (exactly one per request) ------------------------------------------------- */

/* Adds a response header to the reply that follows (both copied). */
void cm_http_add_header(cm_http_req *req, const char *name, const char *value);

/* Answers with `body` as JSON; takes ownership of `body` (NULL sends no body). */
void cm_http_reply_json(cm_http_req *req, int status, cJSON *body);

/* Answers 200 with the list envelope of DESIGN.md, {"items": [...], "next_cursor": ...}; takes
 * ownership of `items` (an array); `next_cursor` NULL means the last page (JSON null). */
void cm_http_reply_page(cm_http_req *req, cJSON *items, const char *next_cursor);

/* Answers with `len` bytes of `body` (copied) and `content_type`. */
void cm_http_reply_raw(cm_http_req *req, int status, const char *content_type, const void *body,
                       size_t len);

/* Answers with an RFC 9457 problem: {"type":"urn:chat:problem:<slug>","title":...,
 * "status":...,"detail":...,"instance":<path>,"request_id":...}. `slug` names the problem
 * class ("validation", "not-found"); the detail is printf-formatted. */
void cm_http_problem(cm_http_req *req, int status, const char *slug, const char *title,
                     const char *detail_fmt, ...) __attribute__((format(printf, 5, 6)));

/* Maps an error to the usual problem: CM_EINVAL 400, CM_EUNAUTH 401, CM_EFORBIDDEN 403,
 * CM_ENOTFOUND 404, CM_ECONFLICT 409, CM_ETOOBIG 413, CM_ELIMIT 429, CM_EIO/CM_EAGAIN/
 * CM_ETIMEOUT 503, anything else 500. The one place errors become statuses. */
void cm_http_reply_error(cm_http_req *req, cm_err err, const char *detail);

/* --- answers made later, from another thread (the gateway's event-driven upstream) ------- */

/* Lets handlers of `srv` answer after they return (cm_http_suspend), using libmicrohttpd's
 * suspend/resume. Before cm_http_server_start. */
void cm_http_allow_suspend(cm_http_server *srv);

/* Called by a handler: its answer comes later, from any thread. The handler returns without
 * answering; whoever holds the request then makes exactly one reply (cm_http_reply_*, with
 * cm_http_add_header, cm_http_log_field, cm_http_alloc as usual; the request's lookups such as
 * cm_http_header and cm_http_each_* belong in the handler) and calls cm_http_resume. Meanwhile
 * the connection is neither read nor timed out (libmicrohttpd's rule for suspended
 * connections): the holder owns the timeout. CM_EINVAL, nothing changed, when the server did
 * not allow it (cm_http_allow_suspend) or the request already has an answer. */
cm_err cm_http_suspend(cm_http_req *req);

/* Sends the answer made since cm_http_suspend (a 500 when there is none) and hands the
 * request back to the server: the caller must not touch `req` afterwards. Any thread. */
void cm_http_resume(cm_http_req *req);

/* `fn(ud)` runs in cm_http_server_stop once the drain wait is over, before the server closes:
 * it must answer and resume every request still suspended, and return once it has (closing
 * the server with a suspended connection is an API violation of libmicrohttpd's). */
void cm_http_set_drain_hook(cm_http_server *srv, void (*fn)(void *ud), void *ud);

/* cm_http_reply_raw that takes `body` (from malloc; freed with free once sent or when the
 * answer cannot be made) instead of copying it. */
void cm_http_reply_take(cm_http_req *req, int status, const char *content_type, char *body,
                        size_t len);

/* --- protocol upgrades (the gateway's WebSocket proxy) ----------------------------------- */

typedef struct cm_http_upgrade cm_http_upgrade;

/* Takes over a connection after its 101 was sent. `fd` is the client's socket, in blocking
 * mode; `extra[0..extra_len)` are bytes the client sent after its request that the server
 * already read (treat them as read from `fd`; they are valid only during the call). From
 * here `ud` belongs to the callee, and the connection too: it must not close `fd` but call
 * cm_http_upgrade_close(up) exactly once, from any thread, when done. Runs on a server
 * thread, so it must not block: hand the connection to a thread of its own. */
typedef void (*cm_http_upgrade_fn)(void *ud, int fd, const char *extra, size_t extra_len,
                                   cm_http_upgrade *up);

/* Answers 101 Switching Protocols with the headers added so far (cm_http_add_header; the
 * caller adds Upgrade and the protocol's own, e.g. Sec-WebSocket-Accept) and, once the answer
 * has reached the socket, calls `fn(ud, ...)`. When the connection fails before that, `fn` is
 * never called and `free_ud(ud)` (may be NULL) runs when the request is cleaned up; also when
 * this call fails. The request's access log line is written when the connection closes. */
void cm_http_reply_upgrade(cm_http_req *req, cm_http_upgrade_fn fn, void *ud,
                           void (*free_ud)(void *ud));

/* Closes a connection handed over by cm_http_upgrade_fn (its socket included). */
void cm_http_upgrade_close(cm_http_upgrade *up);

/* --- large bodies (media uploads and downloads) ------------------------------------------ */

/* Sets the body cap of every request whose path starts with `prefix` at a segment boundary
 * ("/v1/media" covers "/v1/media" and "/v1/media/..."); the longest matching prefix wins over
 * the server's max_body. Oversized bodies get the same 413 before they are read. Call before
 * cm_http_server_start. CM_EINVAL for a prefix not starting with '/' or a zero cap,
 * CM_ETOOBIG past 8 prefixes, CM_ENOMEM. */
cm_err cm_http_body_limit(cm_http_server *srv, const char *prefix, size_t max_body);

/* Produces the bytes of a streamed reply: writes up to `max` bytes of the body starting at
 * body offset `pos` into `buf` and returns how many (> 0). Returning <= 0 aborts the reply
 * (the connection is closed, the client sees a truncated body). Called on a server thread
 * after the handler has returned, possibly many times. */
typedef long (*cm_http_reader)(void *ud, uint64_t pos, char *buf, size_t max);

/* Answers with a body of exactly `size` bytes produced by `read` in 64 KiB blocks, so a large
 * file never sits whole in memory; HEAD gets the headers with Content-Length `size` and the
 * reader is not called. `free_ud(ud)` (may be NULL) runs once when the reply is done or
 * could not be sent, also when this call fails. */
void cm_http_reply_stream(cm_http_req *req, int status, const char *content_type, uint64_t size,
                          cm_http_reader read, void *ud, void (*free_ud)(void *ud));

/* A request body taken in pieces as it arrives instead of being kept whole (large uploads,
 * cm_http_route_stream). Every function runs on the request's server thread.
 * - `open` runs once, when the first piece of the body arrives (or at its end when it is
 *   empty), with the path parameters, headers and query available. It returns the state the
 *   other calls get; or answers (a refusal: the rest of the body is read and discarded, the
 *   answer goes once it has been, and neither write nor the handler runs) and returns NULL;
 *   or returns NULL without answering to have this body buffered as cm_http_route does.
 * - `write` takes the next `len` bytes (any size, in order). It may answer (as open). A
 *   non-CM_OK return stops the feeding: the rest of the body is discarded and the handler
 *   still runs, so the state should say what went wrong.
 * - `close` (may be NULL) frees the state when the request ends, whatever happened (also when
 *   the client went away mid-body and the handler never ran).
 * The body cap (cm_http_body_limit) holds as for buffered bodies: 413 at the end, without
 * calling the handler. The handler runs after the last piece, finds the state with
 * cm_http_body_state and answers as usual; cm_http_body then gives an empty body. */
typedef struct cm_http_body_sink {
    void *(*open)(cm_http_req *req, void *ud);
    cm_err (*write)(cm_http_req *req, void *state, const char *data, size_t len);
    void (*close)(void *state);
} cm_http_body_sink;

/* cm_http_route for a route whose body streams into `sink` (kept by pointer: static storage).
 * CM_EINVAL without open or write; otherwise as cm_http_route. */
cm_err cm_http_route_stream(cm_http_server *srv, const char *method, const char *pattern,
                            const cm_http_body_sink *sink, cm_http_handler handler, void *ud);

/* The state the route's sink `open` returned, or NULL (no sink, declined, or empty). */
void *cm_http_body_state(const cm_http_req *req);

/* One part of a multipart/form-data body (RFC 7578). Strings and data are owned by the
 * request; `filename` and `content_type` are NULL when the part did not give them. */
typedef struct cm_http_part {
    const char *name;
    const char *filename;
    const char *content_type;
    const char *data;
    size_t len;
} cm_http_part;

/* Finds the part named `field` in a multipart/form-data body with libmicrohttpd's post
 * processor, copying its bytes into the request's memory (so up to the body size again).
 * Other parts are skipped; when `field` appears twice the first counts. CM_EINVAL when the
 * Content-Type is not multipart/form-data with a boundary, the body is malformed or
 * truncated, or `field` is absent; CM_ENOMEM. Nothing is answered: the caller words the
 * problem. */
cm_err cm_http_multipart_file(cm_http_req *req, const char *field, cm_http_part *out);

#endif
