/* socket_ephemeral.h - typing and presence across socket instances: a worker thread that runs
 * the Redis operations off the WebSocket loop, a subscriber thread that turns the pub/sub
 * channel's messages into events for the loop, and the presence read the HTTP side serves. */
#ifndef SOCKET_EPHEMERAL_H
#define SOCKET_EPHEMERAL_H

#include "common/http.h"
#include "socket.h"

typedef struct socket_ephemeral socket_ephemeral;

typedef struct socket_ephemeral_config {
    cm_redis *redis;       /* commands (thread-safe pool) */
    const char *host;      /* Redis host and port of the subscription's own connection */
    int port;
    const char *channel;   /* the pub/sub channel every instance publishes to and reads */
    const char *instance;  /* this instance's id (connection members in Redis) */
    long presence_ttl_ms;  /* a connection not refreshed for this long counts as gone */
    long instance_ttl_ms;  /* an instance whose heartbeat (every third of this) stopped for this
                              long is dead: the others sweep its connections out of presence */
    void (*post)(void *ud, socket_event *ev); /* hands an event to the loop (taken over) */
    void *post_ud;
} socket_ephemeral_config;

/* What a presence operation does (PRESENCE_LUA's ARGV[1]). */
typedef enum socket_presence_op {
    SOCKET_PRESENCE_CONNECT,    /* a connection of the user is live */
    SOCKET_PRESENCE_BEAT,       /* ... and still is (refreshes its TTL) */
    SOCKET_PRESENCE_DISCONNECT, /* ... closed */
    SOCKET_PRESENCE_SET,        /* the user chose online, away or invisible */
} socket_presence_op;

/* Starts the worker and subscriber threads. The worker also beats this instance's heartbeat
 * (presence:instances) and sweeps the connections of instances whose heartbeat ran out, so the
 * members of a user whose only connection was on a killed instance see them go offline within
 * about `instance_ttl_ms` (plus a third of it). On destroy a clean stop forgets the instance. CM_ENOMEM, CM_EIO when a thread cannot start. */
cm_err socket_ephemeral_create(const socket_ephemeral_config *cfg, socket_ephemeral **out);
/* Runs the operations still queued, stops both threads, frees. Accepts NULL. */
void socket_ephemeral_destroy(socket_ephemeral *e);

/* Queues the publication of a typing change (any thread; never blocks on Redis). */
void socket_ephemeral_typing(socket_ephemeral *e, const char *tenant, const char *conversation_id,
                             const char *user, int start);

/* Queues a presence operation for `user` of `tenant`: `conn_id` names the connection (for
 * connect, beat, disconnect), `status` the chosen one (for set, else NULL), `convs[0..n)` the
 * user's conversations (whose members are told when what others see changes). */
void socket_ephemeral_presence(socket_ephemeral *e, socket_presence_op op, const char *tenant,
                               const char *user, uint64_t conn_id, const char *status,
                               char *const *convs, size_t n);

/* Reads what `user` of `tenant` looks like to others now: `status` (size 16) online, away or
 * offline (invisible reads offline) and `*last_seen` (ms, 0 never); `own` (size 16, may be
 * NULL) gets the status the user chose. CM_ENOTFOUND when the user never connected in this
 * tenant, CM_EIO when Redis cannot be reached. */
cm_err socket_ephemeral_read(socket_ephemeral *e, const char *tenant, const char *user,
                             char *status, int64_t *last_seen, char *own);

/* Counts the live connections of `user` of `tenant` on every instance (those whose TTL has not
 * run out) into `*n`: the per-user cap across instances. Synchronous (one Redis round trip).
 * CM_EIO when Redis cannot be reached. */
cm_err socket_ephemeral_connections(socket_ephemeral *e, const char *tenant, const char *user,
                                    int64_t *n);

/* GET /v1/users/{id}/presence on the HTTP side; `ud` is a socket_presence_ctx. */
typedef struct socket_presence_ctx {
    const cm_jwt *verifier;
    socket_ephemeral *eph;
} socket_presence_ctx;
void socket_presence_get(cm_http_req *req, void *ud);

/* Counters for /metrics; `swept`: connections of dead instances this one removed. */
void socket_ephemeral_stats(socket_ephemeral *e, long *published, long *received, long *failed,
                            long *swept);

#endif
