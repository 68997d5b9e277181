/* messaging.h - the messaging service's shared context and the functions its files offer. */
#ifndef MESSAGING_H
#define MESSAGING_H

#include <stddef.h>
#include <stdint.h>

#include "common/http.h"
#include "common/jwt.h"
#include "common/kafka.h"
#include "common/mongo.h"
#include "common/redis.h"

typedef struct messaging_outbox messaging_outbox;

/* Everything a handler needs; created in main.c, read-only afterwards. */
typedef struct messaging_ctx {
    cm_mongo *db;
    cm_kafka_producer *kafka;
    cm_redis *redis;
    cm_jwt *verifier;
    messaging_outbox *outbox;
    long send_rate_per_min; /* sends per user per minute; issue 3 default 60 */
    long group_member_max;  /* members of a group; issue 3 default 1000 */
} messaging_ctx;

#define MSG_COLL_CONVERSATIONS "conversations"
#define MSG_COLL_MEMBERS "members"
#define MSG_COLL_MESSAGES "messages"

#define MSG_TEXT_MAX 5000          /* characters (issue 2) */
#define MSG_CLIENT_ID_MAX 64       /* bytes of client_msg_id */
#define MSG_TITLE_MAX 200          /* characters */
#define MSG_PAGE_DEFAULT 50
#define MSG_PAGE_MAX 200

/* --- rules (messaging_rules.c): plain functions over plain data ---------------------- */

/* Returns NULL when `text` (valid UTF-8, from the JSON parser) may be sent, else why. */
const char *messaging_text_problem(const char *text);

/* Returns 1 when `id` is an acceptable client_msg_id: 1..64 printable ASCII, no spaces. */
int messaging_client_msg_id_valid(const char *id);

/* Writes the key that makes a direct conversation unique per tenant and unordered pair:
 * "<tenant>/<smaller id>/<larger id>". Returns 0, or -1 when it does not fit in `n`. */
int messaging_direct_key(const char *tenant, const char *a, const char *b, char *out, size_t n);

/* Parses a message-list cursor (a seq, decimal, >= 0). Returns 1 when valid. */
int messaging_seq_cursor_parse(const char *s, int64_t *seq);

/* Parses a conversation-list cursor "<activity ms>_<conversation id>". Returns 1 if valid;
 * `id` must hold 37 bytes. */
int messaging_conv_cursor_parse(const char *s, int64_t *ms, char *id);

/* Renders a stored message document as the API's Message object. */
cJSON *messaging_message_json(const bson_t *doc);

/* Builds the message.created CloudEvent for a stored message (heap string, caller frees). */
cm_err messaging_message_event(const bson_t *doc, char **out);

/* One page of a keyset-paginated query (messaging_rules.c): up to `limit` documents rendered
 * into `items`, whether another one follows, and the last document for the next cursor. */
typedef struct messaging_page {
    cJSON *items;
    int n, limit, more;
    cJSON *(*render)(const bson_t *doc);
    bson_t last; /* valid when n > 0 */
} messaging_page;

/* Runs `filter` on `coll` sorted by `sort`, fetching limit + 1 to learn whether more follow.
 * On success the caller owns `page` (messaging_page_cleanup). */
cm_err messaging_page_find(cm_mongo *db, const char *coll, const bson_t *filter,
                           const bson_t *sort, long limit, cJSON *(*render)(const bson_t *doc),
                           messaging_page *page);
void messaging_page_cleanup(messaging_page *page); /* frees what the page still owns */

/* --- outbox (messaging_outbox.c) ---------------------------------------------------- */

/* Starts the outbox thread: marks delivered events published and republishes what stayed
 * unpublished longer than `stale_ms` (crash between insert and delivery report). */
cm_err messaging_outbox_start(messaging_ctx *ctx, int64_t stale_ms, messaging_outbox **out);

/* Stops the thread after a last marking pass. Accepts NULL. */
void messaging_outbox_stop(messaging_outbox *ob);

/* The producer's delivery callback; `opaque` is a heap copy of the message id. */
void messaging_outbox_delivered(cm_err status, void *opaque, void *ud);

/* Queues message.created for a stored message document. The document stays unpublished
 * until the delivery report marks it; on failure the sweeper retries later. */
void messaging_publish_message(messaging_ctx *ctx, const bson_t *doc);

/* Counters for /metrics. */
void messaging_outbox_metrics(void *ud, void (*emit)(void *ctx, const char *text), void *ectx);

/* --- handlers ----------------------------------------------------------------------- */

void messaging_conversations_create(cm_http_req *req, void *ud); /* POST /v1/conversations */
void messaging_conversations_list(cm_http_req *req, void *ud);   /* GET /v1/conversations */
void messaging_messages_send(cm_http_req *req, void *ud);   /* POST /v1/conversations/{id}/messages */
void messaging_messages_list(cm_http_req *req, void *ud);   /* GET /v1/conversations/{id}/messages */

/* Loads conversation `id` of `tenant` when `user` is a member into `out` (caller destroys).
 * CM_ENOTFOUND for unknown ids, other tenants' and non-members alike (no existence leak). */
cm_err messaging_conversation_for_member(messaging_ctx *ctx, const char *tenant, const char *id,
                                         const char *user, bson_t *out);

cm_err messaging_ensure_indexes(messaging_ctx *ctx);

#endif
