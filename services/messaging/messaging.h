/* messaging.h - the messaging service's shared context and the functions its files offer. */
#ifndef MESSAGING_H
#define MESSAGING_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "common/http.h"
#include "common/jwt.h"
#include "common/kafka.h"
#include "common/mongo.h"
#include "common/redis.h"
#include "common/tenant.h"
#include "common/uuid.h"

typedef struct messaging_outbox messaging_outbox;
typedef struct messaging_jobs messaging_jobs;

/* The limits and policies of a tenant (issue 3): the process-wide defaults (environment,
 * main.c), over which messaging_limits_for() lays the tenant's own settings from the user
 * service (send_rate_per_min, message_max_chars, group_member_max, edit_window_s;
 * TenantSettings in proto/openapi.yaml). The process values apply when the user service cannot
 * tell; retention is the shorter of the tenant's retention_days and the platform's
 * RETENTION_DAYS (0: no limit on either side). */
typedef struct messaging_limits {
    long send_rate_per_min;  /* sends per user per minute (0: none); default 60 */
    long group_member_max;   /* members of a group; default 1000 */
    long channel_member_max; /* members of a channel; default 100000 */
    long edit_window_s;      /* the sender may edit this long after sending; default 900 */
    long reaction_emoji_max; /* distinct emojis on one message; default 20 */
    long metadata_max;       /* bytes of a conversation's custom metadata (JSON); default 4096 */
    int deletion_allowed;    /* 0: messages cannot be deleted for everyone (tenant policy) */
    long auto_archive_days;  /* conversations inactive this long are archived; 0: never */
    long retention_days;     /* messages older than this are deleted; 0: kept */
    long text_max;           /* characters (code points) of a message text; default 5000 */
} messaging_limits;

/* Everything a handler needs; created in main.c, read-only afterwards. */
typedef struct messaging_ctx {
    cm_mongo *db;
    cm_kafka_producer *kafka;
    cm_redis *redis;
    cm_jwt *verifier;
    messaging_outbox *outbox;
    messaging_limits limits;   /* the defaults; per tenant: messaging_limits_for() */
    cm_tenant_settings *tenants; /* the tenants' settings, cached (common/tenant.h) */
    const char *db_name; /* MONGO_DB: names this deployment's job leases in Redis */
    const char *media_url;  /* the media service, which checks attachments (issue 8) */
    long media_timeout_ms;  /* budget of one attachment check */
    long lock_ttl_ms;  /* lease of a conversation's write lock */
    long lock_wait_ms; /* how long a writer waits for it before answering 503 */
    atomic_int stopping; /* set at SIGTERM: long housekeeping passes end at the next tenant */
} messaging_ctx;

#define MSG_COLL_CONVERSATIONS "conversations"
#define MSG_COLL_MEMBERS "members"
#define MSG_COLL_MESSAGES "messages"
#define MSG_COLL_EVENTS "events"
#define MSG_COLL_VERSIONS "message_versions"
#define MSG_COLL_REACTIONS "reactions"

#define MSG_TEXT_MAX 5000        /* characters (issue 2) */
#define MSG_CLIENT_ID_MAX 64     /* bytes of client_msg_id */
#define MSG_TITLE_MAX 200        /* characters */
#define MSG_DESCRIPTION_MAX 1000 /* characters */
#define MSG_PAGE_DEFAULT 50
#define MSG_PAGE_MAX 200
#define MSG_MEMBER_KEY_MAX (CM_UUID_STRLEN + 1 + 64 + 1) /* "<conversation>/<user>" */
#define MSG_ADD_MAX 100          /* user ids per add-members request */
#define MSG_MENTIONS_MAX 20      /* mentioned users per message */
#define MSG_ATTACHMENTS_MAX 10   /* media ids per message */
#define MSG_EMOJI_MAX 32         /* bytes of one reaction emoji */
#define MSG_FORWARD_MESSAGES_MAX 10
#define MSG_FORWARD_TARGETS_MAX 5
#define MSG_HIDDEN_MAX 1000      /* messages one member may hide for themself */
#define MSG_MENTION_SEQS_MAX 100 /* unread mention positions kept per member */
#define MSG_WHO_READ_MAX 100     /* per-member receipts up to this many members, counts above */
#define MSG_SYNC_DEFAULT 100
#define MSG_SYNC_MAX 500

/* --- rules (messaging_rules.c): plain functions over plain data ---------------------- */

/* Returns NULL when `text` (valid UTF-8, from the JSON parser) may be sent, else why. */
/* Why `text` cannot be a message text of at most `max` characters (code points), written to
 * `detail` (size n); 0 when it can. */
int messaging_text_problem(const char *text, long max, char *detail, size_t n);

/* The limits for `tenant`: ctx->limits with the tenant's own settings laid over them. When
 * the user service cannot tell (down, and no cached copy), the defaults, with a warning. */
void messaging_limits_for(messaging_ctx *ctx, const char *tenant, messaging_limits *out);

/* Returns 1 when `id` is an acceptable client_msg_id: 1..64 printable ASCII, no spaces. */
int messaging_client_msg_id_valid(const char *id);

/* Returns NULL when `emoji` may be a reaction: 1..32 bytes of UTF-8 without whitespace or
 * control characters; else why. */
const char *messaging_emoji_problem(const char *emoji);

/* Writes the key that makes a direct conversation unique per tenant and unordered pair:
 * "<tenant>/<smaller id>/<larger id>". Returns 0, or -1 when it does not fit in `n`. */
int messaging_direct_key(const char *tenant, const char *a, const char *b, char *out, size_t n);

/* Writes a member record's id "<conversation>/<user>" into `out` (MSG_MEMBER_KEY_MAX). */
void messaging_member_key(const char *cid, const char *uid, char out[MSG_MEMBER_KEY_MAX]);

/* Parses a message-list cursor (a seq, decimal, >= 0). Returns 1 when valid. */
int messaging_seq_cursor_parse(const char *s, int64_t *seq);

/* Parses a keyset cursor "<number>_<id>" (the id: a UUID, or a user id when `uuid` is 0).
 * Returns 1 if valid; `id` must hold 65 bytes. */
int messaging_key_cursor_parse(const char *s, int uuid, int64_t *num, char *id);

/* Parses an RFC 3339 UTC timestamp ("2024-07-01T12:00:00Z", optional fraction) into Unix
 * milliseconds. Returns 1 when valid. */
int messaging_time_parse(const char *s, int64_t *ms);

/* Member roles, weakest first. */
typedef enum messaging_role {
    MSG_ROLE_NONE = 0,
    MSG_ROLE_MEMBER,
    MSG_ROLE_ADMIN,
    MSG_ROLE_OWNER
} messaging_role;

messaging_role messaging_role_parse(const char *s); /* MSG_ROLE_NONE when unknown */
const char *messaging_role_name(messaging_role r);

/* What a member may try to do; messaging_rule decides (the one place the rules live). */
typedef enum messaging_action {
    MSG_ACT_SEND,          /* post a message */
    MSG_ACT_UPDATE,        /* change title, description, image, metadata, settings */
    MSG_ACT_DELETE,        /* delete the conversation for everyone */
    MSG_ACT_ADD_MEMBERS,   /* add members */
    MSG_ACT_REMOVE_MEMBER, /* remove another member */
    MSG_ACT_SET_ROLE,      /* change another member's role */
    MSG_ACT_LEAVE,         /* leave */
    MSG_ACT_PIN,           /* pin and unpin messages */
    MSG_ACT_MODERATE       /* delete other members' messages for everyone */
} messaging_action;

/* The facts a rule looks at. */
typedef struct messaging_rule_input {
    const char *type;       /* "direct", "group" or "channel" */
    messaging_role role;    /* the actor's role in the conversation */
    int members_can_post;   /* channel setting */
    int tenant_moderator;   /* the token carries the tenant role "moderator" or "admin" */
    messaging_role target;  /* REMOVE_MEMBER, SET_ROLE: the target's current role */
    messaging_role new_role;/* SET_ROLE: the role asked for */
    int owners;             /* LEAVE: owners the conversation has */
    int members;            /* LEAVE: members the conversation has */
} messaging_rule_input;

/* Returns NULL when the action is allowed, else the rule that forbids it, as a sentence for
 * the 403 (or 409 where the state, not the role, is the obstacle: see *conflict). */
const char *messaging_rule(messaging_action act, const messaging_rule_input *in, int *conflict);

/* Whether a member record lets its user see a message (and so the media it references): an
 * active member sees the whole history, also what was sent before they joined (the message
 * list shows it); a member who left sees what was sent before they left and nothing later
 * (the rule search and sync follow, proto/openapi.yaml): messages with seq <= `left_seq`, or,
 * for records written before left_seq was kept (`left_seq` < 0), created before `left_at_ms`.
 * `state` is the record's state ("active", "left"); NULL or anything else sees nothing.
 * Returns 1 or 0. */
int messaging_member_sees(const char *state, int64_t left_seq, int64_t left_at_ms,
                          int64_t msg_seq, int64_t msg_created_ms);

/* Renders a stored message document as the API's Message object (what every member sees;
 * `viewer` adds per-caller fields: NULL for events). */
cJSON *messaging_message_json(const bson_t *doc);

/* Renders a conversation document's shared fields (the same for every member). */
cJSON *messaging_conversation_json(const bson_t *conv);

/* Adds the caller's own fields to a rendered conversation from their member record: role,
 * archived, muted_until, read_seq, delivered_seq, unread_count, unread_mentions. */
void messaging_conversation_add_mine(cJSON *c, const bson_t *conv, const bson_t *member,
                                     int64_t now);

/* Renders a member record: user_id, role, joined_at, read_seq, delivered_seq. */
cJSON *messaging_member_json(const bson_t *member);

/* Copies the array of strings at `key` of `doc` into a JSON array (empty when absent). */
cJSON *messaging_bson_strings(const bson_t *doc, const char *key);

/* --- the tenant's text filters (messaging_filters.c) ---------------------------------- */

/* One blocklist entry of a tenant. */
typedef struct messaging_block_rule {
    const char *text; /* a word, or a POSIX extended regular expression */
    int is_pattern;   /* 0: a word, matched whole and case-insensitively (ASCII) */
    int mask;         /* 1: the match is replaced by one '*' per character; 0: reject */
} messaging_block_rule;

/* Applies `rules` (n of them) to `text` in order. Returns 0 with `*out` the text after masking
 * (a heap copy, caller frees); 1 when a rejecting rule matched (`*which` its index, nothing
 * allocated); -1 when out of memory. */
int messaging_blocklist_apply(const char *text, const messaging_block_rule *rules, size_t n,
                              char **out, size_t *which);

/* Returns 1 when `pattern` compiles as a POSIX extended regular expression. */
int messaging_pattern_valid(const char *pattern);

typedef enum messaging_link_policy {
    MSG_LINKS_ALLOW,    /* any link */
    MSG_LINKS_BLOCK,    /* no link */
    MSG_LINKS_ALLOWLIST /* only links to the allowed domains and their subdomains */
} messaging_link_policy;

/* Returns 1 when `text` holds a link (http://, https:// or www.) the policy refuses, writing
 * its host into `host` (size hn); 0 when every link is allowed. */
int messaging_link_check(const char *text, messaging_link_policy policy,
                         const char *const *allowed, size_t n, char *host, size_t hn);

/* The pre-send hook's signature: lowercase hex HMAC-SHA256 keyed with `secret` over
 * "<timestamp>.<body>". Returns 0, or -1 on failure. */
int messaging_hook_signature(const char *secret, const char *timestamp, const char *body,
                             size_t body_len, char out[65]);

/* Appends the keyset condition "after (ms, id)" on the date `field` and `_id` as "$or" to `f`:
 * {field: {$lt: ms}} or {field: ms, _id: {$lt: id}} when `descending`, $gt otherwise. */
void messaging_keyset_after(bson_t *f, const char *field, int64_t ms, const char *id,
                            int descending);

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

/* --- storage helpers (messaging_log.c) ---------------------------------------------- */

/* Finds the document `_id` = `id` of `coll` into `out` (caller destroys). CM_ENOTFOUND. */
cm_err messaging_find_id(messaging_ctx *ctx, const char *coll, const char *id, bson_t *out);

/* Applies `update` ({"$set": ...} and the like) to the document `_id` = `id` of `coll`. */
cm_err messaging_update_id(messaging_ctx *ctx, const char *coll, const char *id,
                           const bson_t *update);

/* --- the per-conversation event log (messaging_log.c) ------------------------------- */

/* A conversation's write section. Every change a member must see happens inside one: the
 * conversation's write lock (a Redis lease) is held, so the conversation, its members and
 * its messages have one writer at a time (FerretDB replaces whole documents: two concurrent
 * updates of one document lose fields), and each change is appended to the conversation's
 * event log under the next gap-free log seq ("eseq"), allocated by insertion under the
 * unique index (conversation_id, eseq). The log is what GET /v1/sync reads and the outbox
 * publishes. */
typedef struct messaging_tx {
    messaging_ctx *ctx;
    const char *tenant, *user, *request_id;
    char cid[CM_UUID_STRLEN];
    char token[33]; /* lock holder token */
    int locked;
    bson_t conv; /* the conversation, read under the lock */
    bson_t me;   /* the caller's active member record */
    int have_conv, have_me;
    messaging_role role; /* the caller's role */
    int64_t last_eseq, last_seq, now;
    bson_t set;  /* fields $set on the conversation at commit */
    int nset;
    bson_t last_message; /* the conversation's newest message, written in this section */
    int have_last_message;
    int activity; /* a message was added: last_activity_at moves to now */
    struct messaging_appended *appended; /* to publish after commit */
    int64_t opened_seq;                  /* last_seq when the section opened */
    struct messaging_unread_note *unread; /* members' unread changes, applied at commit */
    int nunread;
} messaging_tx;

/* Opens a write section on conversation `cid` for the caller `c` (which must outlive the
 * section: it points into it): takes the lock (waiting up
 * to lock_wait_ms), loads the conversation of the caller's tenant and the caller's active
 * member record. CM_ENOTFOUND for an unknown id, another tenant's conversation or a
 * non-member (the caller cannot tell them apart), CM_EAGAIN when the lock stays busy, CM_EIO.
 * On failure nothing is held; on success end with messaging_tx_close (after commit). */
cm_err messaging_tx_open(messaging_ctx *ctx, cm_http_req *req, const cm_jwt_claims *c,
                         const char *cid, messaging_tx *tx);

/* Like messaging_tx_open for a tenant moderator acting on a conversation of their tenant they
 * need not belong to (the caller checked the role): tx->me is then empty, tx->role NONE. */
cm_err messaging_tx_open_moderator(messaging_ctx *ctx, cm_http_req *req, const cm_jwt_claims *c,
                                   const char *cid, messaging_tx *tx);

/* Appends an event of `type` to the log under the next eseq. `event_id` NULL makes a new
 * UUIDv7; an id already in the log makes this a no-op (CM_OK), so repairs can re-append.
 * `audience` NULL: every member sees it; a user id: only that member (their own settings).
 * `data` is taken over. On success `*eseq` (may be NULL) receives the seq. */
cm_err messaging_tx_append(messaging_tx *tx, const char *type, const char *event_id,
                           const char *audience, cJSON *data, int64_t *eseq);

/* The $set document applied to the conversation at commit (append fields to it). */
bson_t *messaging_tx_conv_set(messaging_tx *tx);

/* Writes the conversation's new log position and the queued $set fields, releases the lock
 * and publishes the appended events. CM_OK or the storage error. */
cm_err messaging_tx_commit(messaging_tx *tx);

/* Releases whatever the section still holds. Accepts a zeroed or closed tx. */
void messaging_tx_close(messaging_tx *tx);

/* Starts a log for a conversation that is being created (no lock: nobody else knows it yet). */
void messaging_tx_init_new(messaging_tx *tx, messaging_ctx *ctx, const cm_jwt_claims *c,
                           const char *request_id, const char *cid, int64_t now);

/* Publishes what the section appended (messaging_tx_commit does it for open sections). */
void messaging_tx_publish(messaging_tx *tx);

/* Notes a stored message changed inside the section (edit, delete, reaction, pin): when it
 * is the conversation's newest, the conversation's last_message follows. */
void messaging_tx_message_changed(messaging_tx *tx, const bson_t *msg);

/* The conversation as it will be after commit: tx->conv with the queued $set applied. */
void messaging_tx_conv_view(messaging_tx *tx, bson_t *out);

/* Replaces fields of the section's copy of the caller's member record (after writing them), so
 * what is rendered next shows the record as written. */
void messaging_tx_me_update(messaging_tx *tx, const bson_t *fields);

/* Writes `fields` ($set) on the caller's own member record, appends `type` with `data` (taken
 * over) for `audience`, commits, and keeps tx->me as written. */
cm_err messaging_tx_set_me(messaging_tx *tx, const bson_t *fields, const char *type,
                           const char *audience, cJSON *data);

/* Answers 200 with the section's conversation as the caller sees it, queued changes included. */
void messaging_reply_conversation(cm_http_req *req, messaging_tx *tx);

/* The data of a conversation.* event: the section's conversation with its queued changes,
 * `changed` (a JSON array of field names, taken over; may be NULL) and "by". */
cJSON *messaging_conversation_event(messaging_tx *tx, cJSON *changed);

/* Checks that the caller is an active member of the conversation {id} of the request's path,
 * without a lock, loading it and their record into `conv` and `me` (each may be NULL; the
 * caller destroys what it asked for). On failure it has answered 404 (or 503). */
cm_err messaging_member_of(cm_http_req *req, messaging_ctx *ctx, const cm_jwt_claims *c,
                           bson_t *conv, bson_t *me);

/* messaging_member_of, then the message {message_id} of the path into `msg` (caller destroys
 * `msg` and `me`, which may be NULL). On failure it has answered 404 and holds nothing. */
cm_err messaging_member_message(cm_http_req *req, messaging_ctx *ctx, const cm_jwt_claims *c,
                                bson_t *me, bson_t *msg);

/* Loads a member record "<cid>/<uid>" into `out` (caller destroys); CM_ENOTFOUND when absent
 * or no longer active. */
cm_err messaging_member_find(messaging_ctx *ctx, const char *cid, const char *uid, bson_t *out);

/* Loads a message of the conversation by id into `out` (caller destroys). CM_ENOTFOUND. */
cm_err messaging_message_find(messaging_ctx *ctx, const char *cid, const char *mid,
                              bson_t *out);

/* Returns 1 when the caller's token carries the tenant role "moderator" or "admin". */
int messaging_is_moderator(const cm_jwt_claims *c);

/* Builds the CloudEvent (heap string, caller frees) for a stored log entry. */
cm_err messaging_event_envelope(const bson_t *event, char **out);

/* The Kafka topic of an event type: "messages" or "conversations". */
const char *messaging_event_topic(const char *type);

/* Answers the usual problem for a failed messaging_tx_open. */
void messaging_reply_open_error(cm_http_req *req, cm_err rc);

/* --- housekeeping (messaging_jobs.c) and analytics (messaging_stats.c) ----------------- */

/* One housekeeping pass: auto-archive (AUTO_ARCHIVE_DAYS) and retention (per tenant), each
 * under a Redis lease so one instance runs it at a time; `*archived` and `*deleted` count what
 * this pass did. Idempotent. */
cm_err messaging_jobs_run(messaging_ctx *ctx, int64_t *archived, int64_t *deleted);

/* Starts the thread that runs a pass every `every_s` seconds. */
cm_err messaging_jobs_start(messaging_ctx *ctx, long every_s, messaging_jobs **out);
void messaging_jobs_stop(messaging_jobs *j); /* accepts NULL */

/* The median of `v` (n values, sorted in place), or -1 when n is 0. */
int64_t messaging_median(int64_t *v, size_t n);

void messaging_jobs_http(cm_http_req *req, void *ud); /* POST /internal/v1/messaging/jobs/run */
void messaging_stats(cm_http_req *req, void *ud);     /* GET /v1/conversations/{id}/stats */

/* --- outbox (messaging_outbox.c) ---------------------------------------------------- */

/* Starts the outbox thread: marks delivered events published and republishes what stayed
 * unpublished longer than `stale_ms` (crash between insert and delivery report). */
cm_err messaging_outbox_start(messaging_ctx *ctx, int64_t stale_ms, messaging_outbox **out);

/* Stops the thread after a last marking pass. Accepts NULL. */
void messaging_outbox_stop(messaging_outbox *ob);

/* The producer's delivery callback; `opaque` is a heap copy of the event id. */
void messaging_outbox_delivered(cm_err status, void *opaque, void *ud);

/* Queues a stored log entry for Kafka. It stays unpublished until the delivery report marks
 * it; on failure the sweeper retries later. */
void messaging_publish_event(messaging_ctx *ctx, const bson_t *event);

/* Counters for /metrics. */
void messaging_outbox_metrics(void *ud, void (*emit)(void *ctx, const char *text), void *ectx);

/* --- handlers ----------------------------------------------------------------------- */

/* GET /internal/v1/messaging/attachments/{media_id}?tenant=&user= (messaging_attachments.c):
 * the media service's question whether `user` may read a media object because a message that
 * references it is in a conversation they see (messaging_member_sees). Service port only. */
void messaging_attachment_access(cm_http_req *req, void *ud);

/* GET /internal/v1/messaging/events?tenant=&after=&limit= (messaging_export.c): the tenant's
 * conversation logs as CloudEvent envelopes, by event id, for search's reindex backfill.
 * Service port only. */
void messaging_export_events(cm_http_req *req, void *ud);

/* --- conversations and members (messaging_conversations.c, messaging_members.c) ------- */

/* Loads conversation `cid` of `tenant` and `user`'s active member record in it (both for the
 * caller to destroy). CM_ENOTFOUND for unknown ids, other tenants' and non-members alike. */
cm_err messaging_conversation_for_member(messaging_ctx *ctx, const char *tenant, const char *cid,
                                         const char *user, bson_t *conv, bson_t *member);

/* One of a user's membership records. */
typedef struct messaging_membership {
    char cid[CM_UUID_STRLEN];
    bson_t *doc; /* heap (bson_new): bson_t needs an alignment calloc does not give */
} messaging_membership;

typedef struct messaging_memberships {
    messaging_membership *items;
    int n, cap;
} messaging_memberships;

/* Unread totals (messaging_unread.c): a per-user Redis hash kept by the write sections, so
 * GET /v1/conversations/unread is O(1) (issue 3). */
#define MSG_UNREAD_KEY_MAX (8 + CM_JWT_ID_MAX + 1 + CM_JWT_ID_MAX + 1) /* "unread:<t>:<u>" */

typedef struct messaging_unread_totals {
    int64_t unread;       /* unread messages in conversations not muted */
    int64_t with_unread;  /* conversations not muted with at least one */
    int64_t mentions;     /* unread mentions, muted conversations included */
    int64_t muted_unread; /* unread messages in muted conversations */
} messaging_unread_totals;

/* Notes in the open section that `user`'s read position (`read_seq`), unread mentions
 * (`mentions`) or mute end (`muted_until`, ms; 0 none) change, -1 for unchanged, and whether
 * they join (`membership` 1) or leave (-1); messaging_tx_commit applies it. Best effort: a
 * failure leaves the cached totals stale until they expire (a day), never wrong in MongoDB. */
void messaging_unread_note(messaging_tx *tx, const char *user, int64_t read_seq,
                           int64_t mentions, int64_t muted_until, int membership);

/* Builds the member registry of a conversation being created (users[0..n), its members)
 * before any of its records exist, so no change can be missed and its first message fans out
 * without reading its members from MongoDB (a scan of the members collection on FerretDB).
 * Best effort: on a Redis failure the first fan-out builds the registry as for any other. A
 * direct create that finds its pair's conversation leaves this one unused: it expires after
 * a day, as every registry does. */
void messaging_unread_seed(messaging_ctx *ctx, const char *tenant, const char *cid,
                           const char *const *users, int n);

/* Applies the section's notes and, when it added messages (last_seq above `opened_seq`), the
 * new last seq to every active member's totals. Called by messaging_tx_commit. */
void messaging_unread_apply(messaging_tx *tx, int64_t opened_seq);
void messaging_unread_free(messaging_tx *tx);

/* The caller's totals: one Redis call when cached (`*cached` 1); otherwise summed from
 * MongoDB (one record per conversation) while the cache is built. CM_EIO from MongoDB. */
cm_err messaging_unread_totals_get(messaging_ctx *ctx, const char *tenant, const char *user,
                                   messaging_unread_totals *out, int *cached);

/* Erasure: drops the user's cached totals (CM_EIO when Redis cannot be reached; the
 * caller retries the event). */
cm_err messaging_unread_forget(messaging_ctx *ctx, const char *tenant, const char *user);

/* Mention positions in `member` above `read_seq`: the member's unread mentions. */
int64_t messaging_unread_mentions(const bson_t *member, int64_t read_seq);

/* Loads a user's membership records (only active ones, or also those they left). */
cm_err messaging_memberships_load(messaging_ctx *ctx, const char *tenant, const char *user,
                                  int active_only, messaging_memberships *ms);
void messaging_memberships_free(messaging_memberships *ms);

/* Reads the optional "metadata" object of a body as compact JSON of at most `max` bytes into a
 * heap string `*out` (NULL when absent or null; caller frees); `*present` says whether the
 * field was given. CM_EINVAL with `detail` when it is not an object or too large. */
cm_err messaging_metadata_read(const cJSON *body, long max, char **out, int *present,
                               char *detail, size_t dn);

/* Adds (or brings back) `uid` as a member with `role` inside an open section: the member
 * record, member_count, a member.added event. CM_ECONFLICT when already a member. */
cm_err messaging_member_add(messaging_tx *tx, const char *uid, const char *role);

/* Ends `uid`'s membership inside an open section (`member` is their record): a member.removed
 * event naming `reason` ("left" or "removed"), member_count. */
cm_err messaging_member_remove(messaging_tx *tx, const char *uid, const bson_t *member,
                               const char *reason);

/* Answers 409 and returns 1 when the open section's conversation was deleted (read-only). */
int messaging_refuse_if_deleted(cm_http_req *req, const messaging_tx *tx);

/* Answers 403 (or 409 where the state is the obstacle) and returns 1 when messaging_rule
 * forbids `act`; returns 0 when it is allowed. */
int messaging_refuse_unless(cm_http_req *req, messaging_action act, const messaging_rule_input *in);

/* Fills the rule facts known from an open section and the caller's token. */
void messaging_rule_input_of(const messaging_tx *tx, const cm_jwt_claims *c,
                             messaging_rule_input *in);

/* The owners a conversation has (for the last-owner rules). */
cm_err messaging_owner_count(messaging_ctx *ctx, const char *cid, int *owners);

/* --- messages (messaging_messages.c) ------------------------------------------------ */

/* A message to insert with messaging_message_insert. */
typedef struct messaging_new_message {
    const char *type;             /* "text", "image", "file" or "system" */
    const char *text;             /* "" allowed for image and file (no caption) */
    const char *client_msg_id;    /* NULL: the message id stands in */
    const cJSON *attachments;     /* array of media ids, or NULL */
    const cJSON *mentions;        /* array of member user ids, or NULL */
    const char *reply_to;         /* a message of the conversation, or NULL */
    const char *thread_root;      /* a root message of the conversation, or NULL */
    const bson_t *forwarded_from; /* {conversation_id, message_id, sender_id}, or NULL */
    const char *sent_text;        /* the client's text when moderation changed it, or NULL */
} messaging_new_message;

/* Inserts a message from `tx->user` inside an open section. Its seq is allocated by insertion
 * under the unique index (conversation_id, seq): last seq + 1, the next one on a conflict, so a
 * seq exists exactly when its message does. Then the message.created event, the thread root's
 * reply count, the mentioned members' unread mentions, the sender's read position and the
 * conversation's last message follow. On CM_OK `out` holds the stored message (caller
 * destroys). CM_ECONFLICT when the sender already used nm->client_msg_id here: `out` then holds
 * that original message. */
cm_err messaging_message_insert(messaging_tx *tx, const messaging_new_message *nm, bson_t *out);

/* Opens a write section on the conversation {id} of the request's path and loads its message
 * {message_id} into `msg` (caller destroys). On failure it has answered (404, 503) and the
 * caller closes `tx`. */
cm_err messaging_open_message(cm_http_req *req, messaging_ctx *ctx, const cm_jwt_claims *c,
                              messaging_tx *tx, bson_t *msg);

/* Applies `update` to message `mid` inside an open section and reads it back into `after`
 * (caller destroys). */
cm_err messaging_message_update(messaging_tx *tx, const char *mid, const bson_t *update,
                                bson_t *after);

/* Appends an event of `type` carrying the whole message `msg` (after a change), keeping the
 * conversation's last message current. */
cm_err messaging_message_logged(messaging_tx *tx, const char *type, const bson_t *msg);

/* Turns message `msg` into a tombstone inside an open section, deleted for everyone by `by`:
 * text emptied; attachments, mentions, reactions, pin and edit history removed; seq kept; a
 * message.deleted event. The caller checks who may, and commits. */
cm_err messaging_message_tombstone(messaging_tx *tx, const char *by, const bson_t *msg);

/* Sets "me" on each reaction of the rendered message(s) `messages` (an object or an array of
 * them) that `user` made, false on the others. */
void messaging_mark_my_reactions(messaging_ctx *ctx, const char *user, cJSON *messages);

/* Inserts a system message (joins, leaves, renames) written by the service for `tx->user`. */
cm_err messaging_system_message(messaging_tx *tx, const char *text);

/* --- moderation (messaging_moderation.c, messaging_sanctions.c) ------------------------ */

/* Runs the tenant's moderation on a message `nm` that `c->sub` is about to send to `conv`
 * (their member record `member`): bans and mutes, the mention cap, slow mode, flood and
 * duplicates, the blocklist, the link policy, then the pre-send hook. When refused it has
 * answered (403, 409, 422, 429, 503) and returns non-CM_OK. On CM_OK `*text` is NULL or the
 * text to store instead (masked or rewritten; heap, caller frees). */
cm_err messaging_moderate_send(cm_http_req *req, messaging_ctx *ctx, const cm_jwt_claims *c,
                               const bson_t *conv, const bson_t *member,
                               const messaging_new_message *nm, char **text);

/* Returns 1 when the tenant has a pre-send hook (the send then moderates before taking the
 * conversation's lock, so a slow hook never holds it), 0 otherwise. */
int messaging_moderation_has_hook(messaging_ctx *ctx, const char *tenant);

/* Answers 403 and returns CM_EFORBIDDEN when `c->sub` is banned or muted tenant-wide or in
 * `cid` (NULL: tenant-wide only) right now; CM_OK otherwise. */
cm_err messaging_sanction_check(cm_http_req *req, messaging_ctx *ctx, const cm_jwt_claims *c,
                                const char *cid);

/* Returns 1 when `user` is banned tenant-wide or from `cid` right now. */
int messaging_sanction_banned(messaging_ctx *ctx, const char *tenant, const char *cid,
                              const char *user);

void messaging_moderation_settings_get(cm_http_req *req, void *ud); /* GET /v1/moderation/settings */
void messaging_moderation_settings_put(cm_http_req *req, void *ud); /* PUT /v1/moderation/settings */
void messaging_sanctions_add(cm_http_req *req, void *ud);  /* POST /v1/moderation/sanctions */
void messaging_sanctions_lift(cm_http_req *req, void *ud); /* POST .../sanctions/lift */
void messaging_sanctions_list(cm_http_req *req, void *ud); /* GET /v1/moderation/sanctions */
void messaging_flags_add(cm_http_req *req, void *ud);      /* POST .../messages/{mid}/flags */
void messaging_flags_list(cm_http_req *req, void *ud);     /* GET /v1/moderation/flags */
void messaging_flags_resolve(cm_http_req *req, void *ud);  /* POST .../flags/{flag_id}/resolve */

void messaging_conversations_create(cm_http_req *req, void *ud); /* POST /v1/conversations */
void messaging_conversations_list(cm_http_req *req, void *ud);   /* GET /v1/conversations */
void messaging_conversations_get(cm_http_req *req, void *ud);    /* GET /v1/conversations/{id} */
void messaging_conversations_update(cm_http_req *req, void *ud); /* PATCH /v1/conversations/{id} */
void messaging_conversations_delete(cm_http_req *req, void *ud); /* DELETE /v1/conversations/{id} */
void messaging_conversations_me(cm_http_req *req, void *ud);     /* PATCH .../{id}/me */
void messaging_conversations_leave(cm_http_req *req, void *ud);  /* POST .../{id}/leave */

void messaging_members_list(cm_http_req *req, void *ud);   /* GET .../{id}/members */
void messaging_members_add(cm_http_req *req, void *ud);    /* POST .../{id}/members */
void messaging_members_remove(cm_http_req *req, void *ud); /* DELETE .../{id}/members/{user} */
void messaging_members_update(cm_http_req *req, void *ud); /* PATCH .../{id}/members/{user} */

void messaging_messages_send(cm_http_req *req, void *ud);   /* POST .../{id}/messages */
void messaging_messages_list(cm_http_req *req, void *ud);   /* GET .../{id}/messages */
void messaging_messages_get(cm_http_req *req, void *ud);    /* GET .../messages/{mid} */
void messaging_messages_thread(cm_http_req *req, void *ud); /* GET .../messages/{mid}/thread */
void messaging_messages_forward(cm_http_req *req, void *ud); /* POST .../{id}/forward */
void messaging_messages_edit(cm_http_req *req, void *ud);   /* PATCH .../messages/{mid} */
void messaging_messages_history(cm_http_req *req, void *ud); /* GET .../messages/{mid}/history */
void messaging_messages_delete(cm_http_req *req, void *ud); /* DELETE .../messages/{mid} */
void messaging_reactions_add(cm_http_req *req, void *ud);   /* POST .../{mid}/reactions */
void messaging_reactions_remove(cm_http_req *req, void *ud); /* DELETE .../reactions/{emoji} */
void messaging_pins_add(cm_http_req *req, void *ud);        /* POST .../{mid}/pin */
void messaging_pins_remove(cm_http_req *req, void *ud);     /* DELETE .../{mid}/pin */
void messaging_pins_list(cm_http_req *req, void *ud);       /* GET .../{id}/pins */

void messaging_receipts_read(cm_http_req *req, void *ud);      /* POST .../{id}/read */
void messaging_receipts_delivered(cm_http_req *req, void *ud); /* POST .../{id}/delivered */
void messaging_receipts_who(cm_http_req *req, void *ud);       /* GET .../{mid}/receipts */
void messaging_receipts_unread(cm_http_req *req, void *ud);    /* GET /v1/conversations/unread */

void messaging_sync(cm_http_req *req, void *ud); /* GET and POST /v1/sync */

cm_err messaging_ensure_indexes(messaging_ctx *ctx);

#endif
