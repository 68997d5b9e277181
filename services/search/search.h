/* search.h - the search service's shared types: the per-tenant SQLite FTS5 index (search_index.c),
 * the query language (search_query.c), the Kafka indexer (search_indexer.c) and the HTTP
 * handlers (search_messages.c). */
#ifndef SEARCH_H
#define SEARCH_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

#include "common/error.h"
#include "common/http.h"
#include "common/jwt.h"
#include "common/kafka.h"

#define SEARCH_Q_MAX_BYTES 512 /* longest q accepted */
#define SEARCH_TERMS_MAX 16    /* search terms (words, phrases, prefixes) in one q */
#define SEARCH_EXPR_MAX 2048   /* an FTS5 MATCH expression built from q */
#define SEARCH_ID_MAX 65       /* ids (user, conversation) with their NUL */
#define SEARCH_LIMIT_MAX 50    /* largest page */
#define SEARCH_OFFSET_MAX 1000 /* deepest result reachable by cursor */
#define SEARCH_RECENT_MAX 20   /* recent searches kept per user */
#define SEARCH_DELETED_USER "deleted-user" /* sender of an erased user's messages (messaging's) */
#define SEARCH_ERASED 2        /* messages.deleted of a message erased with the policy delete */
#define SEARCH_ERASED_STR "2"
/* messages.rid orders messages by time: (created_ms - SEARCH_RID_EPOCH_MS) * SEARCH_RID_PER_MS
 * plus a tie-breaker (seq % SEARCH_RID_PER_MS, moved up by less than SEARCH_RID_SPILL on a
 * clash; search_index.c apply_message). So created_ms >= F implies rid >= (F - EPOCH) *
 * SEARCH_RID_PER_MS, and created_ms < T implies rid < (T - EPOCH) * SEARCH_RID_PER_MS +
 * SEARCH_RID_SPILL: time ranges are rid ranges (the primary key) plus the exact created_ms
 * test, with no index on created_ms (bench/README.md, schema version 6).
 * Schema version 9 (created_ms * 4096 before): FTS5 stores a doclist's first rowid as a varint
 * and each next one as a varint delta, and SQLite its b-tree keys as varints, so smaller and
 * denser rids are smaller indexes: 16 slots per ms (deltas) from 2020-01-01 (a rid of 2026 is
 * a 6-byte varint until 2028-09, then 7 bytes for centuries; 7 bytes from 1970) made
 * msg_words and msg_tri 15-20% smaller on the bench's 200,000 texts and indexing 0.03-0.06
 * faster against raw FTS5 (bench/README.md, "Schema 9"). A message created before the epoch
 * has a negative rid (a 9-byte varint; it works the same). A tenant sustaining more than 16
 * messages per ms moves rids up into later milliseconds' slots; SEARCH_RID_SPILL (64 ms of
 * slots) bounds that move, and an event that finds no free slot within it fails (CM_EINVAL:
 * retrying cannot free a slot, so the indexer dead-letters it) rather than breaking the time
 * ranges. */
#define SEARCH_RID_PER_MS 16
#define SEARCH_RID_SPILL 1024
#define SEARCH_RID_EPOCH_MS 1577836800000LL /* 2020-01-01T00:00:00Z */
/* SQL: the rid window of "m.created_ms >= ?1 AND m.created_ms < ?2" (?1, ?2 in ms; the
 * numbers are SEARCH_RID_EPOCH_MS, SEARCH_RID_PER_MS and SEARCH_RID_SPILL). */
#define SEARCH_RID_WINDOW                                                                      \
    " m.rid >= (?1 - 1577836800000) * 16 AND m.rid < (?2 - 1577836800000) * 16 + 1024 "
/* SQL: the rid window of "m.created_ms < ?2". */
#define SEARCH_RID_BEFORE " m.rid < (?2 - 1577836800000) * 16 + 1024 "

/* --- the query language (search_query.c): plain functions, no SQLite -------------------- */

/* A parsed q plus the HTTP filters: every text term is already an FTS5 string ("..."), so
 * nothing the user typed reaches FTS5 as syntax. */
typedef struct search_query {
    char words[SEARCH_EXPR_MAX]; /* MATCH on the unicode61 table ("" when none) */
    char tri[SEARCH_EXPR_MAX];   /* MATCH on the trigram table ("" when none) */
    char subs[SEARCH_EXPR_MAX];  /* MATCH on msg_tri (trigram_cjk) of the CJK terms of every
                                    length, for message search ("" when none) */
    char likes[SEARCH_TERMS_MAX][64]; /* CJK substrings under 3 characters (raw UTF-8) */
    int nlikes;
    int nterms;                           /* text terms in all */
    char sender[SEARCH_ID_MAX];           /* from: or sender_id ("" when none) */
    char conversation[SEARCH_ID_MAX];     /* in: or conversation_id ("" when none) */
    int64_t from_ms;                      /* created at or after (0: none) */
    int64_t to_ms;                        /* created before (0: none) */
    int has_attachment;                   /* has:attachment */
} search_query;

/* Parses the query language of q (UTF-8, at most SEARCH_Q_MAX_BYTES) into `out`: words,
 * "phrases", prefix*, from:<user>, in:<conversation>, before:<date>, after:<date>,
 * has:attachment (README.md). Returns CM_OK, or CM_EINVAL / CM_ETOOBIG with a sentence for
 * the user in `why` (size n); `out` is then unspecified. A q with filters only is valid. */
cm_err search_query_parse(const char *q, search_query *out, char *why, size_t n);

/* Writes to `out` (size n) the FTS5 expression that finds the rows of msg_ids whose column
 * `column` (conversation_id or sender_id) may hold `id` (an id of cm_user_id_valid): every
 * token of the id (its runs of letters, digits and - _ . @, the token characters of msg_ids'
 * tokenizer since schema version 9, so a valid id is one token), quoted and ANDed:
 * `column : ("c1-x")`. msg_ids folds case, so this also finds "C1-X" (and, for an id with
 * other characters, ids of the same tokens in another order): callers test the stored id
 * exactly as well. Returns 0 (out "") when the id has no token character, so nothing to look
 * up (the caller tests every row), or when it does not fit. */
int search_id_match(const char *column, const char *id, char *out, size_t n);

/* Parses "YYYY-MM-DD" (start of that UTC day) or RFC 3339 "YYYY-MM-DDTHH:MM:SS[.mmm]Z" into
 * Unix milliseconds. CM_EINVAL when it is neither. */
cm_err search_parse_time(const char *s, int64_t *ms);

/* Returns 1 when code point `cp` belongs to a script written without spaces between words
 * (CJK ideographs, kana, Hangul, Thai, ...), whose terms are searched as substrings. */
int search_is_unspaced(uint32_t cp);

/* Turns an FTS5 highlighted snippet (matches between the bytes 0x01 and 0x02) into the
 * API's {"text": ..., "highlights": [{"start", "end"}]} with offsets in Unicode code points
 * of "text" (end exclusive). Returns NULL when out of memory. */
cJSON *search_snippet_json(const char *marked);

/* --- the FTS5 tokenizer of the message substring index (search_tokenizer.c) ------------- */

/* Registers the tokenizer "trigram_cjk" (SQLite's trigram plus unigrams and bigrams of
 * unspaced scripts) on every SQLite connection the process opens from now on
 * (sqlite3_auto_extension): an index file using it cannot be read without it. Idempotent.
 * CM_EIO when SQLite refuses. */
cm_err search_tokenizer_register(void);

/* --- the per-tenant index (search_index.c) --------------------------------------------- */

typedef struct search_index search_index;
typedef struct sqlite3 sqlite3; /* SQLite's connection (sqlite3.h), used by this service only */

/* Opens the index set under directory `dir` (created when missing). CM_EIO when it cannot
 * be used, CM_ENOMEM. Free with search_index_destroy. */
cm_err search_index_create(const char *dir, search_index **out);
void search_index_destroy(search_index *ix);

/* Returns 1 when `tenant` may name an index file: 1..64 of [A-Za-z0-9-]. */
int search_tenant_valid(const char *tenant);

/* Applies one decoded CloudEvent (envelope `ev`, already known to be of a handled type) to its
 * tenant's index, in its own transaction or, inside a batch, in the batch's; idempotent by the conversation's log seq (eseq): an event
 * not newer than what the index holds for its message or member changes nothing.
 * CM_EINVAL (reason in `why`) for an event that breaks its schema or finds no free rid slot:
 * the caller dead-letters it; CM_EIO when SQLite failed (retry). */
cm_err search_index_apply(search_index *ix, const cJSON *ev, char *why, size_t n);

/* search_index_apply for the JSON text of a message.created/updated/deleted CloudEvent
 * (`len` bytes at `json`, as consumed from Kafka), read with jsmn instead of a cJSON tree:
 * the same checks and effects as cm_json_parse (nesting at most `max_depth`) followed by
 * search_index_apply, at about half the CPU of cJSON's parse and free (perf, bench/README.md
 * "Schema 8"). On CM_OK, *time_ms
 * (when not NULL) is the envelope's time in ms since the epoch, -1 when absent or not
 * RFC 3339. CM_EAGAIN, having changed nothing, for whatever it does not read itself: other
 * event types, strings with escapes, numbers that are not integers, more than 128 JSON
 * tokens, malformed text: the caller then takes the tree path (cm_json_parse +
 * search_index_apply), which decides and reports. Otherwise as search_index_apply. */
cm_err search_index_apply_text(search_index *ix, const char *json, size_t len, int max_depth,
                               int64_t *time_ms, char *why, size_t n);

/* Starts a batch: the events applied until search_index_batch_end share one transaction per
 * tenant (a connection evicted meanwhile commits early, which is safe: offsets come later). */
void search_index_batch_begin(search_index *ix);

/* Ends the batch: commits every tenant's transaction (`commit` 1) or rolls them back (0).
 * CM_EIO when a commit failed (that tenant's events are rolled back: redo the batch). */
cm_err search_index_batch_end(search_index *ix, int commit);

/* One page of message search for user `user` of `tenant`: appends result objects to `items`
 * and sets `*more` when another page follows. `newest` orders by time instead of relevance.
 * CM_EIO when SQLite failed. A tenant without index yet has no results. */
cm_err search_index_messages(search_index *ix, const char *tenant, const char *user,
                             const search_query *q, int newest, long offset, long limit,
                             cJSON *items, int *more);

/* Opens a connection of its own to `tenant`'s index file: read-only (`writable` 0) for
 * queries, read-write for the recent searches (the file is then created when missing).
 * CM_ENOTFOUND (read-only) when nothing was indexed for the tenant yet, CM_EINVAL for a
 * malformed tenant, CM_EIO. A read-only one may come from the pool of idle connections; give
 * it back with search_index_release. */
cm_err search_index_open(search_index *ix, const char *tenant, int writable, sqlite3 **out);

/* Writes into `out` (size n >= 3) a LIKE pattern matching `term` anywhere: '%', the term
 * with % _ and \ escaped by \ (for ESCAPE '\'), '%'; a term too long is cut at a byte
 * boundary that keeps the pattern valid SQL (callers size `out` for SEARCH_TERMS' 64 bytes). */
void search_like_pattern(const char *term, char *out, size_t n);

/* Gives back a connection of search_index_open: an idle read-only one is kept for the next
 * query of `tenant` (READERS_MAX at most), any other is closed. Accepts NULL. */
void search_index_release(search_index *ix, const char *tenant, sqlite3 *db);

/* Counts one query for /metrics (`failed` 1: one that failed in SQLite). */
void search_index_count_query(search_index *ix, int failed);

/* Prometheus lines of the index (events applied, duplicates, open handles). */
void search_index_metrics(search_index *ix, void (*emit)(void *ctx, const char *text), void *ctx);

/* Copies `tenant`'s live index into a new file at `path` (SQLite's online backup, a
 * consistent snapshot). CM_OK without a file when the tenant has none yet; CM_EIO. */
cm_err search_index_copy(search_index *ix, const char *tenant, const char *path);

/* Replaces `tenant`'s live index by the rebuilt file at `path` (same schema): under the
 * index's lock (the indexer waits), commits the tenant's open transaction, runs `before(ud)`
 * (the rebuild's last catch-up, which must leave `path` committed), copies the tenant's recent
 * searches into the rebuild, then copies the rebuild over the live file with SQLite's online
 * backup, so readers see the old index or the new, never a mix. CM_EIO when SQLite failed,
 * or what `before` returned; the live index is then unchanged. */
cm_err search_index_replace(search_index *ix, const char *tenant, const char *path,
                            cm_err (*before)(void *ud), void *ud, search_index *rebuild);

/* --- the indexer and the process context -------------------------------------------------- */

typedef struct search_indexer search_indexer;
typedef struct search_reindexer search_reindexer;

typedef struct search_ctx {
    search_index *index;
    cm_jwt *verifier;
    cm_kafka_producer *dlq;
    search_indexer *indexer;
    search_reindexer *reindexer;
} search_ctx;

/* Returns 1 when events of `type` change the index (message.*, conversation.*, member.added,
 * member.removed, user.created/updated/deleted), 0 otherwise. */
int search_indexable(const char *type);

/* The reindex jobs of POST /v1/search/reindex: each replays the topics (prefix `prefix`)
 * through brokers `brokers` in a consumer group of its own ("<group>-reindex-<job id>") into
 * a rebuild under `dir`, after backfilling from the messaging service at `messaging_url`
 * (GET /internal/v1/messaging/events; "" : never) when asked or when the topics lost records. Free with search_reindexer_destroy, before the index. */
cm_err search_reindexer_create(const char *brokers, const char *prefix, const char *group,
                               const char *dir, const char *messaging_url,
                               search_reindexer **out);
/* Starts again the jobs a previous process left running (their state is kept in
 * <dir>/_reindex-jobs.db), each from where it was. Call once, after ctx->index and
 * ctx->reindexer are set. CM_EIO when a job's thread could not start (that job is failed). */
cm_err search_reindexer_resume(search_ctx *ctx);
/* Stops running jobs (the live index stays as it was; they resume at the next start) and
 * frees. Accepts NULL. */
void search_reindexer_destroy(search_reindexer *r);
/* POST /v1/search/reindex and GET /v1/search/reindex/{id} (search_reindex.c) */
void search_reindex_start(cm_http_req *req, void *ud);
void search_reindex_get(cm_http_req *req, void *ud);

/* Starts the consumer thread: group `group` on the topics messages and conversations, each
 * event applied and only then its offset stored; poison events go to <topic>.dlq with the
 * error in the header "x-error" and "x-consumer: search". */
cm_err search_indexer_start(search_ctx *ctx, const char *brokers, const char *prefix,
                            const char *group, search_indexer **out);
/* Stops and joins the thread, commits stored offsets. Accepts NULL. */
void search_indexer_stop(search_indexer *w);

/* The /metrics lines of the process: indexer counters, consumer lag, index counters. */
void search_metrics(void *ud, void (*emit)(void *ctx, const char *text), void *ctx);

/* Remembers q as `user`'s most recent search in `tenant`'s index, keeping the newest
 * SEARCH_RECENT_MAX. A failure is logged and otherwise ignored: the search was answered. */
void search_remember(search_ctx *ctx, const char *tenant, const char *user, const char *q);

/* Authenticates the bearer token of `req` (verified, session not revoked), checks its tenant
 * can name an index file and, when `perm` is not NULL, that it grants `perm` (cm_auth_can;
 * 403 with `why` otherwise). Returns 1 with the claims in *c, or 0 once the error reply is
 * sent. */
int search_authenticate(cm_http_req *req, search_ctx *ctx, cm_jwt_claims *c, const char *perm,
                        const char *why);

/* Reads a page cursor of the search endpoints, "o<offset>" with 0 <= offset <=
 * SEARCH_OFFSET_MAX, into *offset (0 when `c` is NULL or empty). Returns 0 when malformed. */
int search_parse_cursor(const char *c, long *offset);

/* GET /v1/search/messages */
void search_messages(cm_http_req *req, void *ud);
/* GET /v1/search/conversations, GET /v1/search/users, GET /v1/search (search_directory.c) */
void search_conversations(cm_http_req *req, void *ud);
void search_users(cm_http_req *req, void *ud);
void search_global(cm_http_req *req, void *ud);
/* GET /v1/search/suggest, GET and DELETE /v1/search/recent (search_directory.c) */
void search_suggest(cm_http_req *req, void *ud);
void search_recent_list(cm_http_req *req, void *ud);
void search_recent_delete(cm_http_req *req, void *ud);
/* GET /v1/analytics/tenant, GET /v1/analytics/users/{id} (search_analytics.c) */
void search_analytics_tenant(cm_http_req *req, void *ud);
void search_analytics_user(cm_http_req *req, void *ud);

#endif
