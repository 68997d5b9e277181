/* socket_upstream.h - calls to the messaging service from a pool of worker threads (libcurl,
 * timeouts, one circuit breaker), so the event loop never waits on HTTP. */
#ifndef SOCKET_UPSTREAM_H
#define SOCKET_UPSTREAM_H

#include <stdint.h>

#include "socket.h"

typedef enum socket_job_kind {
    SOCKET_JOB_CALL, /* one request */
    SOCKET_JOB_LOAD, /* GET /v1/conversations, every page: the user's conversation ids */
} socket_job_kind;

/* One upstream call, owned by the submitter until socket_upstream_submit, by the pool while it
 * runs, and by the loop again when it comes back from socket_upstream_take_done. */
typedef struct socket_job {
    struct socket_job *next;
    socket_job_kind kind;
    int what;                 /* the submitter's tag (which frame or step this answers) */
    uint64_t conn_id;         /* the connection it belongs to */
    char method[8];
    char *path;               /* heap: path and query under MESSAGING_URL */
    char *body;               /* heap JSON or NULL */
    char *token;              /* heap bearer token */
    char frame_id[SOCKET_FRAME_ID_MAX + 1];
    /* results */
    int status;               /* HTTP status, 0 when there was no answer */
    int refused;              /* 1 when the breaker refused the call */
    char *resp;               /* heap body (NUL-terminated) or NULL */
    char **ids;               /* SOCKET_JOB_LOAD: conversation ids (heap) */
    size_t nids;
} socket_job;

typedef struct socket_upstream socket_upstream;

/* Starts `threads` workers calling `base_url` with `timeout_ms` per request; the breaker
 * opens after `threshold` consecutive failures for `open_ms`. `notify(ud)` is called from a
 * worker whenever a job finished (it wakes the loop). */
cm_err socket_upstream_create(const char *base_url, int threads, long timeout_ms, int threshold,
                              long open_ms, void (*notify)(void *ud), void *ud,
                              socket_upstream **out);
/* Stops the workers (queued jobs are dropped) and frees. Accepts NULL. */
void socket_upstream_destroy(socket_upstream *u);
/* Allocates a job for `conn_id` with copies of path, body (may be NULL) and token. */
socket_job *socket_job_new(socket_job_kind kind, int what, uint64_t conn_id, const char *method,
                           const char *path, const char *body, const char *token);
void socket_job_free(socket_job *j); /* accepts NULL */
/* Queues `j` (taken over). */
void socket_upstream_submit(socket_upstream *u, socket_job *j);
/* Takes every finished job (a list linked by `next`, oldest first), or NULL. */
socket_job *socket_upstream_take_done(socket_upstream *u);
/* Counters for /metrics. */
void socket_upstream_stats(socket_upstream *u, long *calls, long *failures, int *open);

#endif
