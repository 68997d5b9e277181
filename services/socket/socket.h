/* socket.h - the socket service's shared types: connections, the events it delivers, the
 * conversation index, the upstream (messaging) worker pool and the plain protocol rules. */
#ifndef SOCKET_SOCKET_H
#define SOCKET_SOCKET_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cJSON.h>

#include "common/cursor.h"
#include "common/error.h"
#include "common/jwt.h"
#include "common/redis.h"

/* --- close codes (proto/asyncapi.yaml, "Close codes") ------------------------------------ */
#define SOCKET_CLOSE_GOING_AWAY 1001    /* instance shutting down: reconnect with since=cursor */
#define SOCKET_CLOSE_UNSUPPORTED 1003   /* a binary frame */
#define SOCKET_CLOSE_BAD_UTF8 1007      /* a text frame that is not UTF-8 (lws checks) */
#define SOCKET_CLOSE_POLICY 1008        /* rate cap exceeded repeatedly */
#define SOCKET_CLOSE_TOO_BIG 1009       /* a message over FRAME_MAX_BYTES */
#define SOCKET_CLOSE_TOKEN_EXPIRED 4001 /* reconnect with a fresh access token */
#define SOCKET_CLOSE_REVOKED 4002       /* session revoked or tenant suspended: log in again */
#define SOCKET_CLOSE_SLOW 4003          /* send queue overflowed: reconnect with since=cursor */
#define SOCKET_CLOSE_TOO_MANY 4004      /* over CONNECTIONS_PER_USER for this user */

/* --- limits (environment, main.c) --------------------------------------------------------- */
typedef struct socket_limits {
    long frame_max;      /* bytes of one client message; over it close 1009 */
    long rate_per_s;     /* client frames per second per connection */
    long per_user;       /* connections per user on this instance */
    long queue_frames;   /* frames queued per connection before close 4003 */
    long queue_bytes;    /* bytes queued per connection before close 4003 */
    long sndbuf;         /* SO_SNDBUF of each connection's socket (bytes); 0: the kernel's
                            autotuning, which lets a reader that stalls hold up to tcp_wmem's
                            maximum (4 MiB here) of kernel memory before QUEUE_* applies */
    long ping_s;         /* idle seconds before the server pings */
    long idle_s;         /* seconds without a valid frame or pong before hang-up */
    long sync_limit;     /* items per GET /v1/sync page */
    long buffer_events;  /* live events held per connection during a catch-up */
} socket_limits;

/* --- the circuit breaker in front of the messaging service --------------------------------- */
typedef struct socket_breaker {
    int failures;       /* consecutive failures */
    int threshold;      /* failures that open it */
    int64_t open_until; /* ms; while now < open_until, calls are refused */
    int64_t open_ms;    /* how long it stays open */
    int trial;          /* a half-open trial is in flight */
} socket_breaker;

/* Returns 1 when a call may go to the upstream at `now_ms` (closed, or the single half-open
 * trial after open_ms), 0 when the breaker refuses it. */
int socket_breaker_allow(socket_breaker *b, int64_t now_ms);
/* Records a call's outcome (`ok` 1 success, 0 failure: no answer or 5xx) at `now_ms`. */
void socket_breaker_record(socket_breaker *b, int ok, int64_t now_ms);

/* --- client frames ------------------------------------------------------------------------ */
typedef enum socket_cmd {
    SOCKET_CMD_SEND,
    SOCKET_CMD_READ,
    SOCKET_CMD_RECEIVED,
    SOCKET_CMD_TYPING_START,
    SOCKET_CMD_TYPING_STOP,
    SOCKET_CMD_PRESENCE,
    SOCKET_CMD_SYNC,
    SOCKET_CMD_PING,
} socket_cmd;

#define SOCKET_FRAME_ID_MAX 64
#define SOCKET_ID_MAX 64

/* A validated client frame; strings point into `json` (owned by the frame). */
typedef struct socket_frame_in {
    cJSON *json;
    socket_cmd cmd;
    const char *id;              /* the client's frame id, or NULL */
    const char *conversation_id; /* for send, read, received, typing */
    int64_t seq;                 /* for read and received */
    const char *status;          /* presence.set: online, away, invisible */
    const char *since;           /* sync: a cursor ("" = now) */
} socket_frame_in;

/* Parses and validates one client text frame `text[0..len)`. On success fills `*out` (free
 * with socket_frame_in_cleanup). On failure returns CM_EINVAL, writes an error code
 * ("bad-json", "unknown-type", "validation") to `code` (size `ncode`), the reason to
 * `detail` (size `n`) and, when the frame had a usable id, copies it into `id_out` (size
 * SOCKET_FRAME_ID_MAX + 1, "" otherwise) so the rejection can be acked. */
cm_err socket_frame_parse(const char *text, size_t len, socket_frame_in *out, char *code,
                          size_t ncode, char *detail, size_t n, char *id_out);
void socket_frame_in_cleanup(socket_frame_in *f);

/* The body forwarded to POST /v1/conversations/{id}/messages: the frame minus type, id and
 * conversation_id, as a heap JSON string (caller frees), or NULL when out of memory. */
char *socket_send_body(const socket_frame_in *f);

/* Renders {"type":"ack","id":id,"status":status,...extra members} as a heap string; `extra`
 * (may be NULL) is taken over. */
char *socket_ack_json(const char *id, const char *status, cJSON *extra);

/* Renders a rejected ack from an upstream answer: HTTP `status` (0 when no answer) and its
 * body `problem` (a problem+json text or NULL). `retryable` is set for 0, 429 and 5xx.
 * Heap string. */
char *socket_rejected_json(const char *id, int status, const char *problem, const char *reason);

/* --- events -------------------------------------------------------------------------------- */
typedef enum socket_event_kind {
    SOCKET_EV_CONVERSATION, /* an event of a conversation's log (messages, conversations) */
    SOCKET_EV_REVOKED,      /* session.revoked: close that session's connections */
    SOCKET_EV_EPHEMERAL,    /* typing or presence from Redis pub/sub */
    SOCKET_EV_NOTIFICATION, /* notification.created: to the recipient's connections only */
} socket_event_kind;

/* An event to deliver, shared by every connection it goes to (reference counted on the loop
 * thread only). */
typedef struct socket_event {
    struct socket_event *next; /* in the inbox queue */
    socket_event_kind kind;
    int refs;
    char tenant[SOCKET_ID_MAX + 1];
    char conversation_id[SOCKET_ID_MAX + 1];
    char type[48];
    char audience[CM_JWT_ID_MAX + 1]; /* "" when everyone in the conversation sees it */
    char sid[CM_JWT_ID_MAX + 1];      /* SOCKET_EV_REVOKED */
    char user_id[CM_JWT_ID_MAX + 1];  /* revoked user, the member added or removed, or the
                                         recipient of a notification */
    char event_id[64];                /* notification: the CloudEvent id (= notification id) */
    char sender[CM_JWT_ID_MAX + 1];   /* ephemeral: who is typing or whose presence */
    char **members;                   /* conversation.created: the member ids; presence: the
                                         user's conversation ids (who may see the change) */
    size_t nmembers;
    uint64_t key;  /* cm_cursor_key(conversation_id) */
    int64_t eseq;  /* position in the conversation's log; 0 when not a log event */
    char *frame;   /* the frame without its closing brace: "{...,"data":{...}" (a
                      notification's is whole: it carries no cursor) */
    size_t frame_len;
    char state[16];    /* ephemeral: typing "start"/"stop"; presence online/away/offline */
    int64_t last_seen; /* presence: ms since the epoch the user was last seen online, 0 never */
    /* Where a consumed event was when, for socket_delivery_stage_seconds (socket_server.c):
     * microseconds since the epoch (socket_wall_us, comparable with Kafka's record
     * timestamps); 0 when not known (events from sync or Redis). */
    int64_t t_produced; /* the Kafka record's timestamp (the producer's, ms precision) */
    int64_t t_consumed; /* the consumer thread got it from librdkafka */
    int64_t t_posted;   /* put in the loop's inbox */
    int64_t t_drained;  /* taken from the inbox by the loop */
    int t_logged;       /* a slow frame of it was logged (LOG_LEVEL=debug) */
} socket_event;

/* Builds an event from one consumed CloudEvent (record value `json`, key `key`): a
 * conversation log event for topics messages and conversations, SOCKET_EV_REVOKED for a
 * session.revoked on users, SOCKET_EV_NOTIFICATION for a notification.created on
 * notifications (its frame {"type":"notification.created","event_id","time","data"} whole). CM_ENOTFOUND for events the service does not deliver,
 * CM_EINVAL for malformed ones (logged by the caller). `*out` has refs 1. */
cm_err socket_event_from_cloudevent(const char *topic, const char *key, size_t key_len,
                                    const char *json, size_t len, socket_event **out);
/* Builds an event from one item of GET /v1/sync (a log entry or a reset). */
cm_err socket_event_from_sync_item(const char *tenant, const cJSON *item, socket_event **out);
void socket_event_release(socket_event *ev); /* drops one reference; accepts NULL */

/* Decides what a connection does with log event `eseq` given its applied position `pos`
 * (-1 when its cursor does not know the conversation): 0 drop (already applied), 1 deliver,
 * 2 catch up first (a gap or an unknown conversation). */
int socket_order_decide(int64_t pos, int64_t eseq);

/* --- ephemeral state across instances (socket_ephemeral.c) ------------------------------- */

/* Renders the pub/sub message of a typing change: {"k":"typing","tenant","conversation_id",
 * "user_id","state"}. Heap string (caller frees) or NULL when out of memory. */
char *socket_typing_message(const char *tenant, const char *conversation_id, const char *user,
                            int start);

/* Renders the typing frame a client receives: {"type":"typing","conversation_id","user_id",
 * "state"} (`state` "start" or "stop"). Heap string or NULL when out of memory. */
char *socket_typing_frame(const char *conversation_id, const char *user, const char *state);

/* Renders the start of a presence pub/sub message, without its closing brace:
 * {"k":"presence","tenant","user_id","conversations":[...] (the user's `convs[0..n)`, who
 * may see the change); the Redis script appends the status and last_seen. Heap string. */
char *socket_presence_prefix(const char *tenant, const char *user, char *const *convs, size_t n);

/* Builds a SOCKET_EV_EPHEMERAL event (type "typing" or "presence") from one pub/sub message
 * `json[0..len)`. CM_EINVAL for a malformed one. `*out` has refs 1. */
cm_err socket_event_from_ephemeral(const char *json, size_t len, socket_event **out);

/* One presence change waiting in a connection's batch. */
typedef struct socket_presence_item {
    char user_id[CM_JWT_ID_MAX + 1];
    char status[16];   /* online, away, offline */
    int64_t last_seen; /* ms since the epoch, 0 never */
    uint64_t order;    /* arrival order: the latest change of a user wins */
} socket_presence_item;

/* Coalesces `items[0..n)` (reordered in place) into one frame {"type":"presence","items":
 * [{"user_id","status","last_seen"}...]} holding each user once, with their latest change.
 * Heap string, or NULL when `n` is 0 or out of memory. */
char *socket_presence_batch_json(socket_presence_item *items, size_t n);

/* --- origins ------------------------------------------------------------------------------- */

/* Returns 1 when a WebSocket upgrade with Origin header `origin` (NULL when absent) may proceed
 * under `allowed`, a comma-separated list of origins ("https://app.example.com,..."; "" allows
 * every origin; "*" in the list allows every origin), 0 otherwise. Requests without an Origin
 * (non-browser clients) are allowed: the token is their credential. Comparison is exact, ASCII
 * case-insensitive, ignoring spaces around the commas. */
int socket_origin_allowed(const char *allowed, const char *origin);

/* --- time ---------------------------------------------------------------------------------- */
int64_t socket_now_ms(void); /* monotonic milliseconds: deadlines and intervals */
int64_t socket_wall_us(void); /* microseconds since the epoch (CLOCK_REALTIME): stage stamps */


/* --- the index: string key -> set of pointers (conversation -> connections, user ->
 * connections). Loop thread only. ---------------------------------------------------------- */
typedef struct socket_index socket_index;

/* The members of one key's set: `items[0..n)`. */
typedef struct socket_set {
    void **items;
    size_t n, cap;
} socket_set;

socket_index *socket_index_create(void);
void socket_index_destroy(socket_index *ix); /* accepts NULL; the pointers are not freed */
/* Adds `p` to the set of `key` (once). CM_ENOMEM. */
cm_err socket_index_add(socket_index *ix, const char *key, void *p);
/* Removes `p` from the set of `key`; an emptied set is dropped. */
void socket_index_remove(socket_index *ix, const char *key, void *p);
/* The set of `key`, or NULL when empty. Valid until the index changes. */
const socket_set *socket_index_get(const socket_index *ix, const char *key);
/* Number of keys with a non-empty set. */
size_t socket_index_keys(const socket_index *ix);

#endif
