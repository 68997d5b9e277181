/* socket_server.h - the WebSocket server (libwebsockets on a libuv loop): the state the loop
 * thread owns, the inbox the Kafka consumer fills, and what main.c wires. */
#ifndef SOCKET_SERVER_H
#define SOCKET_SERVER_H

#include <signal.h>

#include "common/tenant.h"
#include "socket.h"
#include "socket_ephemeral.h"
#include "socket_upstream.h"

typedef struct socket_srv socket_srv;

typedef struct socket_srv_config {
    const char *host;       /* bind address */
    int port;               /* WebSocket port (WS_PORT) */
    socket_limits lim;
    const cm_jwt *verifier; /* access tokens */
    cm_redis *redis;        /* session denylist */
    const char *messaging_url;
    int upstream_threads;
    long upstream_timeout_ms;
    int breaker_threshold;
    long breaker_open_ms;
    long typing_ttl_ms;     /* a typing start not refreshed for this long ends (stop sent) */
    long presence_beat_ms;  /* how often each connection refreshes its presence TTL */
    long presence_batch_ms; /* presence changes to one connection are sent at most this often */
    const char *allowed_origins; /* WS_ALLOWED_ORIGINS: comma-separated; "" allows every one */
    cm_tenant_settings *tenants; /* each tenant's ws_allowed_origins (NULL: none checked) */
} socket_srv_config;

/* Creates the server and binds the port. CM_EIO when it cannot listen, CM_ENOMEM. */
cm_err socket_srv_create(const socket_srv_config *cfg, socket_srv **out);
/* Gives the server the Redis side of typing and presence (before socket_srv_run; not taken
 * over: destroy it after the loop returned, before socket_srv_destroy). */
void socket_srv_attach_ephemeral(socket_srv *s, socket_ephemeral *eph);
/* Runs the loop on the calling thread until socket_srv_stop and the drain finished. */
void socket_srv_run(socket_srv *s);
/* Asks the loop (from any thread) to close every connection with 1001 and return within
 * `drain_ms`. */
void socket_srv_stop(socket_srv *s, long drain_ms);
/* Frees the server (after socket_srv_run returned). Accepts NULL. */
void socket_srv_destroy(socket_srv *s);
/* Hands a consumed event to the loop (any thread; taken over). Blocks while the inbox holds
 * more than its cap, so a slow loop slows the consumer instead of growing memory. */
void socket_srv_post(socket_srv *s, socket_event *ev);
/* The same for a chain of `n` events linked by `next` (from one consumer poll), in order: one
 * lock and at most one wake-up for all of them. */
void socket_srv_post_chain(socket_srv *s, socket_event *head, size_t n);
/* Prometheus lines for /metrics (cm_http_metrics_fn). */
void socket_srv_metrics(void *ud, void (*emit)(void *ctx, const char *text), void *ctx);
/* 1 once the loop is serving. */
int socket_srv_serving(socket_srv *s);

#endif
