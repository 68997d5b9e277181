/* notification.h - the notification service's shared types: the process context, the rules
 * that decide who is notified of what (notification_rules.c, plain functions), the Kafka
 * consumer that turns messaging events into notifications (notification_events.c), the
 * in-app inbox over HTTP (notification_inbox.c) and the housekeeping thread
 * (notification_jobs.c). */
#ifndef NOTIFICATION_H
#define NOTIFICATION_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

#include "common/error.h"
#include "common/http.h"
#include "common/jwt.h"
#include "common/kafka.h"
#include "common/mongo.h"
#include "common/outbox.h"
#include "common/redis.h"

/* Collections of this service's database (the deliveries: of its deliveries database, ctx->ddb). */
#define NF_COLL_NOTIFICATIONS "notifications" /* one document per (event, user, channel) */
#define NF_COLL_MEMBERS "members"             /* membership projection from `conversations` */
#define NF_COLL_MESSAGES "message_senders"    /* message id -> sender, for reply detection */
#define NF_COLL_OUTBOX "outbox"               /* notification.created before it is produced */
#define NF_COLL_DEVICES "devices"             /* push tokens per user */
#define NF_COLL_DELIVERIES "deliveries"       /* one per (notification, device): the attempts */
#define NF_COLL_DECISIONS "decisions"         /* why a user was or was not pushed to */
#define NF_COLL_PREFS "preferences"           /* per user: types, channels, quiet hours */
#define NF_COLL_WEBHOOKS "webhooks"           /* tenant webhook endpoints (with their secret) */
#define NF_COLL_WEBHOOK_DELIVERIES "webhook_deliveries" /* one per (endpoint, event) */

#define NF_TOPIC "notifications" /* where notification.created goes, keyed by user id */
#define NF_PREVIEW_CHARS 200      /* characters of a message's text kept in a notification */
#define NF_LIMIT_MAX 100          /* largest page of GET /v1/notifications */
#define NF_RECIPIENTS_MAX 10000   /* members notified of one message at most */
#define NF_REQUEST_USERS_MAX 10000 /* recipients of one POST /v1/notifications (issue 10) */
#define NF_REQUEST_BATCH 500       /* recipients per notification.requested event */

/* --- rules (notification_rules.c): plain functions, no I/O ------------------------------ */

/* What a notification is about, strongest first: a recipient who is both mentioned and
 * replied to gets one notification of the strongest type. */
typedef enum nf_type {
    NF_TYPE_MENTION, /* the message's `mentions` names the recipient */
    NF_TYPE_REPLY,   /* the message answers (reply_to or thread_root) one of the recipient's */
    NF_TYPE_MESSAGE, /* any other new message in a conversation the recipient is in */
    NF_TYPE_ADDED,   /* the recipient was added to a conversation by someone else */
    NF_TYPE_CUSTOM,  /* sent by the tenant's backend (POST /v1/notifications) */
    NF_TYPE_COUNT
} nf_type;

/* "mention", "reply", "message", "added", "custom". */
const char *nf_type_name(nf_type t);

/* The type named `name`; NF_TYPE_COUNT when none. */
nf_type nf_type_parse(const char *name);

/* A user's preferences (PUT /v1/notifications/preferences): per type and channel, and quiet
 * hours in their IANA time zone. The defaults: everything on, no quiet hours. */
typedef struct nf_prefs {
    int in_app[NF_TYPE_COUNT]; /* 1: stored in the inbox (and published) */
    int push[NF_TYPE_COUNT];   /* 1: pushed to the user's devices */
    int email[NF_TYPE_COUNT];  /* 1: mailed to the user's address (default off) */
    int sms[NF_TYPE_COUNT];    /* 1: texted to the user's phone (default off) */
    int email_digest;          /* 1: unread messages are mailed in a digest (default off) */
    int quiet;                 /* 1: quiet hours set */
    int quiet_start, quiet_end; /* minutes after local midnight, start != end; may wrap */
    char time_zone[64];        /* IANA name, e.g. "Europe/Paris" */
} nf_prefs;

/* Fills `p` with the defaults. */
void nf_prefs_default(nf_prefs *p);

/* Parses "HH:MM" (00:00..23:59) into minutes after midnight; -1 when malformed. */
int nf_parse_hhmm(const char *s);

/* 1 when `tz` names a time zone of the system's tz database (/usr/share/zoneinfo): 1..63 of
 * [A-Za-z0-9_+-/], no "..", and the file exists. */
int nf_time_zone_valid(const char *tz);

/* When the quiet hours of `p` hold at `now_ms` (Unix ms), the Unix ms at which they end (the
 * next local `quiet_end` in `p->time_zone`, daylight saving time included); 0 otherwise or
 * when there are none. The local time is computed with the C library under a process-wide
 * lock that switches TZ (glibc offers no per-call zone). */
int64_t nf_quiet_until(const nf_prefs *p, int64_t now_ms);

/* The type of the notification `recipient` gets for message `data` (the message.created
 * event's data, a Message object) whose replied-to message was sent by `parent_sender` (NULL
 * when unknown or not a reply). Writes it to `*out` and returns 1, or returns 0 when the
 * recipient gets none: they sent it, or it is a system message. */
int nf_classify_message(const cJSON *data, const char *recipient, const char *parent_sender,
                        nf_type *out);

/* Copies at most NF_PREVIEW_CHARS characters of UTF-8 `text` into `out` (size n >= 4),
 * cutting at a character boundary and ending with "…" when cut. */
void nf_preview(const char *text, char *out, size_t n);

/* The deduplication key of a notification: "<tenant>|<event id>|<user>|<channel>", the
 * unique index that makes a replayed event change nothing. CM_ETOOBIG when `out` (size n)
 * is too small. */
cm_err nf_dedupe_key(const char *tenant, const char *event_id, const char *user,
                     const char *channel, char *out, size_t n);

/* --- the process ------------------------------------------------------------------------ */

typedef struct nf_consumer nf_consumer;
typedef struct nf_jobs nf_jobs;
typedef struct nf_push nf_push;
typedef struct nf_push_batch nf_push_batch; /* pushes handed to the sender (nf_push_submit) */
typedef struct nf_mail nf_mail; /* notification_channels.h */
typedef struct nf_webhooks nf_webhooks;
typedef struct nf_callbacks nf_callbacks; /* notification_callbacks.h */

#define NF_RETRIES_MAX 8 /* retry delays configurable at most */

/* Push configuration (environment: main.c). A provider whose credentials are unset is off:
 * its devices get the decision "provider_unconfigured". */
typedef struct nf_push_config {
    const char *fcm_base;        /* e.g. https://fcm.googleapis.com */
    const char *fcm_project;     /* Firebase project id */
    char *fcm_credentials;       /* service-account JSON (owned; NULL: FCM off) */
    const char *apns_base;       /* e.g. https://api.push.apple.com */
    char *apns_key;              /* PEM P-256 key (.p8) (owned; NULL: APNs off) */
    const char *apns_key_id;     /* kid of the provider token */
    const char *apns_team_id;    /* iss of the provider token */
    const char *apns_topic;      /* bundle id when a device has no app_id */
    long retry_ms[NF_RETRIES_MAX]; /* delays before retries 1..n (1 s, 5 s, 30 s) */
    int nretries;
    long timeout_ms;             /* one provider request */
    const char *dlq_topic;       /* where deliveries given up go (notifications.dlq) */
    /* Web push (RFC 8291 encryption, RFC 8292 VAPID): notification_webpush.h. */
    char *vapid_key;             /* PEM P-256 private key (owned; NULL: web push off) */
    const char *vapid_subject;   /* sub of the VAPID JWT: mailto: or https: contact */
    long webpush_ttl_s;          /* TTL header: how long a push service keeps a message */
    nf_webhooks *guard;          /* its connect-time address check (WEBHOOK_ALLOW_PRIVATE_CIDRS) */
} nf_push_config;

typedef struct nf_ctx {
    cm_mongo *db;
    /* NF_COLL_DELIVERIES' database (MONGO_DELIVERIES_DB, by default <MONGO_DB>_deliveries):
     * on FerretDB's SQLite backend a database is a file with one writer at a time, so the
     * sender's insert of the deliveries it sent no longer waits behind the consumer's insert
     * of the next notifications (measured: two writers on one file reach about half of
     * what they reach on two; bench/README.md). Equal to `db` when configured so. */
    cm_mongo *ddb;
    const char *db_name; /* MONGO_DB: names this database's keys in the shared Redis */
    cm_redis *redis;
    cm_jwt *verifier;
    cm_kafka_producer *kafka; /* the outbox's events and the DLQ */
    /* notification.created of the consumer's batches, produced directly (event id = the
     * notification's id) and awaited before the batch's offsets are stored. */
    cm_kafka_producer *created_producer;
    cm_outbox *outbox;
    nf_consumer *consumer;
    nf_push *push;
    nf_mail *mail; /* e-mail sender (notification_email.c) */
    nf_webhooks *webhooks;
    nf_callbacks *callbacks; /* providers' own delivery reports */
    long retry_max_age_ms; /* a message whose conversation is still unknown is retried this long */
    int64_t projection_since_ms; /* when the membership projection started (Unix ms) */
    atomic_long created, duplicates, published;
} nf_ctx;

/* Creates the indexes the service relies on (the unique dedupe key first). On FerretDB only
 * the unique ones: the query-only indexes are not created there, and dropped if present
 * (cm_mongo_is_ferretdb). CM_EIO when the server failed. */
cm_err nf_ensure_indexes(nf_ctx *ctx);

/* Reads (or, the first time, records) when the membership projection of this database
 * started, into ctx->projection_since_ms: conversations created before it are known only by
 * the member events seen since, so a message in one of them whose members are unknown is not
 * waited for. CM_EIO when MongoDB failed. */
cm_err nf_projection_since(nf_ctx *ctx);

/* Starts the consumer thread: group `group` on `messages` and `conversations`
 * (`from_beginning` for a group without committed offsets), each event handled and only then
 * its offset stored; poison records go to <topic>.dlq with the reason in the header "error". */
cm_err nf_consumer_start(nf_ctx *ctx, const char *brokers, const char *prefix, const char *group,
                         int from_beginning, nf_consumer **out);
/* Stops and joins the thread, commits stored offsets. Accepts NULL. */
void nf_consumer_stop(nf_consumer *c);
/* 1 once the consumer has partitions assigned (it would otherwise miss what is produced now
 * when its group starts at the latest offset). */
int nf_consumer_assigned(nf_consumer *c);

/* Starts the housekeeping thread: the outbox tick every `every_ms`. */
cm_err nf_jobs_start(nf_ctx *ctx, long every_ms, nf_jobs **out);
void nf_jobs_stop(nf_jobs *j); /* accepts NULL */

/* Stores the in-app notification described by `doc` (fields as in NF_COLL_NOTIFICATIONS,
 * with `_id` and `k` set) and publishes notification.created through the outbox. A document
 * whose `k` is already stored is not stored again; its event is published again (same id)
 * unless the outbox still holds it. The stored notification's id (the new one or the earlier
 * one) is written to `id`. CM_EIO when MongoDB failed (retry). */
cm_err nf_notify(nf_ctx *ctx, const bson_t *doc, char id[37]);

/* The notification.created event (CloudEvents JSON, id = the notification's) of stored
 * notification `doc`, into `*out` (caller frees). CM_ENOMEM. */
cm_err nf_created_event(const bson_t *doc, char **out);

/* --- batches (notification_batch.c) ------------------------------------------------------ */

/* The delivery report callback of ctx->created (cm_kafka_delivery_fn): counts the
 * acknowledgements a batch's publish waits for. */
void nf_created_delivered(cm_err status, void *opaque, void *ud);

/* What an event's notifications are about (any field may be NULL but `text`). */
typedef struct nf_about {
    const char *cid, *message_id, *actor, *text;
    const char *title;  /* custom notifications */
    const cJSON *data;  /* custom notifications: string values only */
    int64_t seq;        /* the message's seq (0: none): conversation.read up to it reads it */
    int priority;       /* custom notifications: escalated push -> e-mail -> SMS (issue 10) */
    char preview[NF_PREVIEW_CHARS * 4 + 4]; /* of text: filled by nf_notify_batch */
} nf_about;

/* One recipient of an event. */
typedef struct nf_recipient {
    const char *user;
    nf_type type;
    int64_t muted_until;  /* their mute of the conversation (ms; 0 none) */
    const char *event_id; /* nf_notify_batch: the event (nf_notify_many sets it) */
    nf_about *about;      /* nf_notify_batch: what it is about (nf_notify_many sets it) */
} nf_recipient;

/* Stores the in-app notification of each recipient `r[0..n)` of `tenant` (each of its own
 * event, per their preferences), publishes their notification.created and plans their push,
 * in a few round trips per 1,000 recipients whatever the number of events
 * (notification_batch.c). Once per (event, user, channel): what a replay finds stored is not
 * stored again, and its event is published again only when the outbox no longer holds it.
 * CM_EIO (retry), CM_EAGAIN (a duplicate not readable yet). */
cm_err nf_notify_batch(nf_ctx *ctx, const char *tenant, nf_recipient *r, size_t n);

/* nf_notify_batch for recipients `r[0..n)` of one event `event_id` about `a`. */
cm_err nf_notify_many(nf_ctx *ctx, const char *tenant, const char *event_id, nf_about *a,
                      const nf_recipient *r, size_t n);

/* --- push (notification_push.c) ------------------------------------------------------------ */

/* What a push is about: the stored notification and the text to show. */
typedef struct nf_push_item {
    const char *tenant, *user, *event_id, *notification_id, *type;
    const char *conversation_id, *message_id, *actor, *text;
    int64_t muted_until; /* the recipient's mute of the conversation (ms; 0 none) */
    int push_off;        /* the recipient turned push off for this type */
    int64_t quiet_until; /* quiet hours hold until then (ms; 0 none): deliveries wait */
    const char *title;   /* custom notifications: the title (NULL: from type and actor) */
    const char *channel; /* of the decisions nf_decision records: NULL is "push" */
    int priority;        /* the tenant marked it priority: escalated when left unread */
    int replay;          /* the notification was stored before (a replayed event): its
                            deliveries may be stored too, and are then not sent again */
} nf_push_item;

/* Reads the preferences of `user` of `tenant` into `p` (the defaults when none are stored).
 * CM_EIO when MongoDB failed. */
cm_err nf_prefs_load(nf_ctx *ctx, const char *tenant, const char *user, nf_prefs *p);

/* nf_prefs_load for `users[0..n)` of `tenant` in one query, into `out[0..n)`. */
cm_err nf_prefs_load_many(nf_ctx *ctx, const char *tenant, const char *const *users, size_t n,
                          nf_prefs *out);

/* GET /v1/notifications/preferences */
void nf_prefs_get(cm_http_req *req, void *ud);
/* PUT /v1/notifications/preferences */
void nf_prefs_put(cm_http_req *req, void *ud);

/* Starts the sender thread. `cfg` is copied (its owned strings are taken over). */
cm_err nf_push_start(nf_ctx *ctx, nf_push_config *cfg, nf_push **out);
void nf_push_stop(nf_push *p); /* accepts NULL */

/* Decides whether `it` is pushed and records why (decisions): muted, online (a live
 * WebSocket connection in Redis), no device, or one queued delivery per device (unique per
 * notification and device, so a replay queues nothing twice). CM_EIO when MongoDB failed. */
cm_err nf_push_plan(nf_ctx *ctx, const nf_push_item *it);

/* nf_push_plan for `items[0..n)` (one event's recipients, all of one tenant) in a few round
 * trips whatever n: one presence pipeline to Redis, one devices query, one insert of the
 * deliveries and one of the decisions; the new deliveries are handed to the sender at once
 * (nf_push_kick). CM_EIO when MongoDB failed (retry: what was stored is not stored twice). */
cm_err nf_push_plan_many(nf_ctx *ctx, const nf_push_item *items, size_t n);

/* nf_push_plan_many without waiting for the pushes due now: `*pending` is the handle to give
 * nf_push_wait (NULL when none is being sent), so the caller prepares its next recipients
 * while these are sent. */
cm_err nf_push_plan_async(nf_ctx *ctx, const nf_push_item *items, size_t n,
                          nf_push_batch **pending);

/* Hands the sender `deliveries[0..n)`, stored and queued (a redrive, deferred ones), to send
 * when their next_at comes (copied), and wakes it. */
void nf_push_kick(nf_push *p, const bson_t *const *deliveries, size_t n);

/* Hands `deliveries[0..n)`, built but not stored (their `_id` derived from their unique `k`;
 * the array and each document, allocated with malloc, are taken over), to the sender thread,
 * which sends each and stores it with its first attempt (or queued for a retry; or leaves it
 * when another sender holds it and stores it). `*out` is the handle nf_push_wait awaits.
 * CM_ENOMEM (nothing taken over). */
cm_err nf_push_submit(nf_push *p, bson_t **deliveries, size_t n, nf_push_batch **out);

/* Waits until every delivery of `b` is sent and stored, then frees `b`. The consumer waits
 * before it stores its offsets: a crash before then replays the event, and the replay finds
 * stored what was recorded. CM_EIO when the sender stopped first. Accepts NULL. */
cm_err nf_push_wait(nf_push *p, nf_push_batch *b);

/* The delivery id of `k` ("<notification id>|<device id>"): a UUIDv8 (RFC 9562 section 5.8)
 * whose first 48 bits are the notification's UUIDv7 time (ids sort by creation) and whose
 * rest is SHA-256(k), so a replay computes the same id and finds it by `_id`. */
void nf_delivery_id(const char *notification_id, const char *k, char out[37]);

/* --- devices cache (notification_devcache.c) --------------------------------------------- */

#define NF_DEVICES_PER_USER 16 /* devices of one user pushed to at most */

/* The devices of `users[0..n)` of `tenant` from Redis (one pipeline; the first time for a
 * tenant, or an hour after, all its devices are copied in from MongoDB with one query),
 * into docs[i][0..count[i]) (documents with _id, user_id, platform, token, app_id, p256dh,
 * auth; caller destroys). CM_EIO when Redis or MongoDB cannot answer (nothing returned:
 * read MongoDB instead). */
cm_err nf_devcache_devices(nf_ctx *ctx, const char *tenant, const char *const *users, size_t n,
                           bson_t (*docs)[NF_DEVICES_PER_USER], size_t *count);

/* Writes stored device `dev` (tenant, user_id, _id, platform, token, ...) through to the
 * cache. A failure is logged (the device is missed until the tenant is read again). */
void nf_devcache_put(nf_ctx *ctx, const bson_t *dev);

/* Removes device `device_id` of `user` from the cache, or all their devices when NULL. */
void nf_devcache_forget(nf_ctx *ctx, const char *tenant, const char *user,
                        const char *device_id);

/* Records a decision about pushing notification `it` (`device_id` may be NULL): unique per
 * (event, user, decision, device), so replays record nothing twice. */
void nf_decision(nf_ctx *ctx, const nf_push_item *it, const char *decision, const char *device_id,
                 const char *detail);

/* Prometheus lines of the sender. */
void nf_push_metrics(nf_push *p, void (*emit)(void *ctx, const char *text), void *ctx);

/* POST /v1/devices */
void nf_devices_create(cm_http_req *req, void *ud);
/* GET /v1/devices */
void nf_devices_list(cm_http_req *req, void *ud);
/* DELETE /v1/devices/{id} */
void nf_devices_delete(cm_http_req *req, void *ud);
/* GET /v1/notifications/{id}/deliveries */
void nf_deliveries(cm_http_req *req, void *ud);
/* POST /v1/notifications/deliveries/{id}/redrive */
void nf_redrive(cm_http_req *req, void *ud);
/* POST /v1/notifications/deliveries/{id}/status (notification_receipts.c) */
void nf_delivery_status(cm_http_req *req, void *ud);
/* Reads delivery `id` of `tenant` into `out` (caller destroys it). Otherwise replies to
 * `req` (404 when there is none, the store's error else), leaves `out` untouched and returns
 * that error (CM_ENOTFOUND, CM_EIO). */
cm_err nf_delivery_find(nf_ctx *ctx, cm_http_req *req, const char *tenant, const char *id,
                        bson_t *out);
/* The one rule for what a provider reports after it accepted a delivery (the status endpoint
 * and the providers' own callbacks, notification_callbacks.c): moves stored delivery `d` to
 * `state` ("delivered" or "bounced") when it is sent, or delivered and now bounced; records
 * the report as one more attempt entry with `detail`, the decision for the diagnostics and a
 * notification.delivered event. The same state again changes nothing (providers retry). When
 * `after` is not NULL it receives the delivery as it is now (caller destroys it, on CM_OK
 * only). CM_ECONFLICT (with `why`, size n) when the state does not allow it or changed
 * meanwhile; CM_EIO when MongoDB failed. */
cm_err nf_delivery_report(nf_ctx *ctx, const bson_t *d, const char *state, const char *detail,
                          bson_t *after, char *why, size_t n);
/* Records `decision` (with `detail`) about stored delivery `d` for the diagnostics, on the
 * delivery's channel (push, email or sms) and, for a push, its device. */
void nf_delivery_decision(nf_ctx *ctx, const bson_t *d, const char *decision,
                          const char *detail);
/* Publishes notification.delivered (topic notifications, key user id, id "<delivery
 * id>.<state>") for delivery `d` now in `state` (delivered, bounced or failed) through the
 * outbox; a failure is logged (the delivery's own record stays the source of truth). */
void nf_delivery_event(nf_ctx *ctx, const bson_t *d, const char *state, const char *detail);
/* The API's Delivery object of stored delivery `d` (`ud` unused); NULL when out of memory. */
cJSON *nf_delivery_json(const bson_t *d, void *ud);
/* GET /v1/notifications/diagnostics?user_id=&message_id= */
void nf_diagnostics(cm_http_req *req, void *ud);

/* The API's Notification object of a stored document; NULL when out of memory. */
cJSON *nf_notification_json(const bson_t *doc);

/* The /metrics lines of the process. */
void nf_metrics(void *ud, void (*emit)(void *ctx, const char *text), void *ctx);

/* GET /v1/notifications */
void nf_list(cm_http_req *req, void *ud);
/* GET /v1/notifications/unread_count */
void nf_unread_count(cm_http_req *req, void *ud);
/* POST /v1/notifications/{id}/read */
void nf_read_one(cm_http_req *req, void *ud);
/* POST /v1/notifications/read_all */
void nf_read_all(cm_http_req *req, void *ud);
/* POST /v1/notifications (tenant backend) */
void nf_request(cm_http_req *req, void *ud);

/* --- webhooks (notification_webhooks.c) --------------------------------------------------- */

/* Webhook sender configuration (environment: main.c). */
typedef struct nf_webhooks_config {
    long retry_ms[NF_RETRIES_MAX]; /* delays before retries 1..n (1 s, 5 s, 30 s), +-20 % */
    int nretries;
    long timeout_ms;               /* one request */
    long disable_after;            /* consecutive failed attempts that disable an endpoint */
    const char *allow_private;     /* comma-separated CIDRs exempt from the address check
                                      (tests only; "" none) */
} nf_webhooks_config;

/* 1 when events of `type` can be sent to webhooks (the list in proto/openapi.yaml). */
int nf_webhook_event_type(const char *type);

/* The signature header value "t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>" of `body`
 * (len bytes) at Unix time `t` (seconds), into `out` (size n). CM_ETOOBIG, CM_ENOMEM. */
cm_err nf_webhook_sign(const char *secret, int64_t t, const char *body, size_t len, char *out,
                       size_t n);

/* 1 when the connection to `sa` must be refused: not IPv4/IPv6, or a loopback, private
 * (RFC 1918, RFC 4193), link-local, CGNAT, multicast, reserved or unspecified address not in
 * the `nallow` CIDRs at `allow` (internal type). */
struct sockaddr;
int nf_webhook_addr_refused(const struct sockaddr *sa, const void *allow, int nallow);

/* Starts the webhook sender thread. CM_EINVAL for a malformed allow list. */
cm_err nf_webhooks_start(nf_ctx *ctx, const nf_webhooks_config *cfg, nf_webhooks **out);
void nf_webhooks_stop(nf_webhooks *w); /* accepts NULL */
void nf_webhooks_metrics(nf_webhooks *w, void (*emit)(void *ctx, const char *text), void *ctx);

/* Queues event `event_id` of `type` (its CloudEvent JSON `body`, len bytes) for every enabled
 * endpoint of `tenant` subscribed to the type: one delivery per (endpoint, event), so a
 * replay queues nothing twice. CM_EIO when MongoDB failed (retry). */
cm_err nf_webhooks_enqueue(nf_ctx *ctx, const char *tenant, const char *type,
                           const char *event_id, const char *body, size_t len);

/* POST /v1/webhooks */
void nf_webhooks_create(cm_http_req *req, void *ud);
/* GET /v1/webhooks */
void nf_webhooks_list(cm_http_req *req, void *ud);
/* DELETE /v1/webhooks/{id} */
void nf_webhooks_delete(cm_http_req *req, void *ud);

#endif
