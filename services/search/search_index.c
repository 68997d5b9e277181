/* search_index.c - the per-tenant search index: one SQLite database per tenant under the data
 * directory (<dir>/<tenant>.db, erasable by deleting the file), with the messages, the
 * memberships, and two FTS5 indexes over the message text kept in step by apply_message: unicode61
 * with diacritics removed for words and prefixes, trigram_cjk (trigrams plus CJK unigrams and
 * bigrams, search_tokenizer.c) for substrings of unspaced scripts (CJK, Thai). Written by the indexer thread only; each query opens its own read-only
 * connection (WAL: readers never wait for the writer). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/utf8.h"
#include "search.h"

/* jsmn (Debian libjsmn-dev, header only): a JSON tokenizer reporting where each value starts
 * and ends, for search_index_apply_text's message events without a cJSON tree. Strict mode,
 * parent links (the nesting depth); compiled into this file only. */
#define JSMN_STATIC
#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#include <jsmn.h>

#define WRITERS_MAX 64 /* open writer connections kept (least recently opened closed first) */
#define SCHEMA_VERSION 9
#define READERS_MAX 32 /* idle read-only connections kept for queries */
/* rid = (created_ms - RID_EPOCH) * RID_PER_MS + a tie-breaker (search.h, migrate_9) */
#define RID_PER_MS SEARCH_RID_PER_MS
#define RID_EPOCH SEARCH_RID_EPOCH_MS
_Static_assert(SEARCH_RID_PER_MS == 16 && SEARCH_RID_SPILL == 1024 &&
                   SEARCH_RID_EPOCH_MS == 1577836800000LL,
               "SEARCH_RID_WINDOW, SEARCH_RID_BEFORE (search.h) and MIGRATE_9_MAP spell these");
#define STR_(x) #x
#define STR(x) STR_(x)

#define STMTS_MAX 32 /* prepared statements cached per writer connection */

/* A writer connection's prepared statements, by their SQL text's address (the static
 * strings of this file): preparing costs more than running most of them. */
typedef struct stmt_cache {
    const char *sql[STMTS_MAX];
    sqlite3_stmt *st[STMTS_MAX];
    /* erased_users of the connection's file: 0 not known yet, 1 empty, 2 not empty (set by
     * user.deleted; a rolled-back erasure leaves 2, which only costs lookups) */
    int erased;
} stmt_cache;

struct search_index {
    char dir[512];
    sqlite3 *db[WRITERS_MAX];
    stmt_cache cache[WRITERS_MAX];
    char tenant[WRITERS_MAX][SEARCH_ID_MAX];
    int in_txn[WRITERS_MAX]; /* slot's transaction open (a batch is running) */
    int next_evict;
    int batching;
    pthread_mutex_t lock;
    atomic_long applied, duplicates, queries, query_errors;
    /* Idle read-only connections, by tenant: opening one (and reading the schema of ~30
     * tables and FTS5 indexes) cost more than a newest-20 query (bench/README.md). */
    pthread_mutex_t pool_lock;
    int npool;
    char pool_tenant[READERS_MAX][SEARCH_ID_MAX];
    sqlite3 *pool_db[READERS_MAX];
};

/* The cache of the connection being written (set under the index lock by the writer). */
static _Thread_local stmt_cache *tl_cache;

/* `sql` prepared on `db`: from the current writer's cache (reset, bindings cleared) or freshly
 * prepared (and cached when there is room). NULL when SQLite refuses it. Release with
 * stmt_release. */
static sqlite3_stmt *stmt_get(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    stmt_cache *c = tl_cache;
    int i;

    for (i = 0; c && i < STMTS_MAX && c->sql[i]; i++)
        if (c->sql[i] == sql && sqlite3_db_handle(c->st[i]) == db) {
            sqlite3_reset(c->st[i]);
            sqlite3_clear_bindings(c->st[i]);
            return c->st[i];
        }
    if (sqlite3_prepare_v3(db, sql, -1, c ? SQLITE_PREPARE_PERSISTENT : 0, &st, NULL) !=
        SQLITE_OK)
        return NULL;
    if (c && i < STMTS_MAX) {
        c->sql[i] = sql;
        c->st[i] = st;
    }
    return st;
}

/* Done with a statement of stmt_get: reset when cached, finalized otherwise. */
static void stmt_release(sqlite3_stmt *st)
{
    stmt_cache *c = tl_cache;
    for (int i = 0; c && i < STMTS_MAX && c->sql[i]; i++)
        if (c->st[i] == st) {
            sqlite3_reset(st);
            return;
        }
    sqlite3_finalize(st);
}

static void cache_clear(stmt_cache *c)
{
    for (int i = 0; i < STMTS_MAX; i++)
        sqlite3_finalize(c->st[i]);
    memset(c, 0, sizeof(*c));
}

/* The conversation and sender ids: an FTS5 index, not b-tree indexes of messages
 * (MIGRATE_7). in: and from: without text terms, analytics per user and erasure find their
 * rows with a MATCH on its column, then test the stored id exactly (search_id_match). Only
 * rowids per column (detail=column), no sizes (columnsize=0: nothing ranks by it). The
 * characters of ids besides letters and digits (cm_user_id_valid: - _ . @) are token
 * characters (schema version 9), so an id is one token: a UUID was five, which cost 0.04 of
 * the indexing rate against raw FTS5 (bench/README.md, "Schema 9"). */
#define MSG_IDS                                                                                \
    "msg_ids USING fts5(conversation_id, sender_id, content='messages', content_rowid='rid',"  \
    " tokenize=\"unicode61 tokenchars '-_.@'\", detail=column, columnsize=0)"

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS messages("
    " rid INTEGER PRIMARY KEY, id TEXT NOT NULL, conversation_id TEXT NOT NULL,"
    " sender_id TEXT NOT NULL, seq INTEGER NOT NULL, created_ms INTEGER NOT NULL,"
    " created_eseq INTEGER NOT NULL, eseq INTEGER NOT NULL, has_attachment INTEGER NOT NULL,"
    " deleted INTEGER NOT NULL, text TEXT NOT NULL);"
    "CREATE VIRTUAL TABLE IF NOT EXISTS msg_words USING fts5(text, content='messages',"
    " content_rowid='rid', tokenize='unicode61 remove_diacritics 2', prefix='2 3');"
    "CREATE VIRTUAL TABLE IF NOT EXISTS " MSG_IDS ";"
    "CREATE VIRTUAL TABLE IF NOT EXISTS msg_tri USING fts5(text, content='messages',"
    " content_rowid='rid', tokenize='trigram_cjk');"
    "CREATE TABLE IF NOT EXISTS members("
    " conversation_id TEXT NOT NULL, user_id TEXT NOT NULL, active INTEGER NOT NULL,"
    " left_eseq INTEGER, eseq INTEGER NOT NULL, PRIMARY KEY (conversation_id, user_id))"
    " WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS members_user ON members(user_id, conversation_id);"
    /* Conversations (title, description) from conversation.created/updated/deleted. */
    "CREATE TABLE IF NOT EXISTS conversations("
    " rid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, type TEXT NOT NULL, title TEXT NOT NULL,"
    " description TEXT NOT NULL, created_by TEXT NOT NULL, created_ms INTEGER NOT NULL,"
    " eseq INTEGER NOT NULL, deleted INTEGER NOT NULL);"
    "CREATE VIRTUAL TABLE IF NOT EXISTS conv_words USING fts5(title, description,"
    " content='conversations', content_rowid='rid', tokenize='unicode61 remove_diacritics 2',"
    " prefix='2 3');"
    "CREATE VIRTUAL TABLE IF NOT EXISTS conv_tri USING fts5(title, description,"
    " content='conversations', content_rowid='rid', tokenize='trigram');"
    "CREATE TRIGGER IF NOT EXISTS conversations_ai AFTER INSERT ON conversations BEGIN"
    " INSERT INTO conv_words(rowid, title, description) VALUES (new.rid, new.title, new.description);"
    " INSERT INTO conv_tri(rowid, title, description) VALUES (new.rid, new.title, new.description); END;"
    "CREATE TRIGGER IF NOT EXISTS conversations_au AFTER UPDATE ON conversations BEGIN"
    " INSERT INTO conv_words(conv_words, rowid, title, description)"
    " VALUES ('delete', old.rid, old.title, old.description);"
    " INSERT INTO conv_tri(conv_tri, rowid, title, description)"
    " VALUES ('delete', old.rid, old.title, old.description);"
    " INSERT INTO conv_words(rowid, title, description) VALUES (new.rid, new.title, new.description);"
    " INSERT INTO conv_tri(rowid, title, description) VALUES (new.rid, new.title, new.description); END;"
    /* Users (id, name, username) from user.created/updated; version = the event time. */
    "CREATE TABLE IF NOT EXISTS users("
    " rid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, name TEXT NOT NULL,"
    " username TEXT NOT NULL, avatar_media_id TEXT, status TEXT NOT NULL,"
    " discoverable INTEGER NOT NULL, created_ms INTEGER NOT NULL, version_ms INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS users_created ON users(created_ms);"
    "CREATE VIRTUAL TABLE IF NOT EXISTS user_words USING fts5(id, name, username,"
    " content='users', content_rowid='rid', tokenize='unicode61 remove_diacritics 2',"
    " prefix='2 3');"
    "CREATE VIRTUAL TABLE IF NOT EXISTS user_tri USING fts5(id, name, username,"
    " content='users', content_rowid='rid', tokenize='trigram');"
    "CREATE TRIGGER IF NOT EXISTS users_ai AFTER INSERT ON users BEGIN"
    " INSERT INTO user_words(rowid, id, name, username) VALUES (new.rid, new.id, new.name, new.username);"
    " INSERT INTO user_tri(rowid, id, name, username) VALUES (new.rid, new.id, new.name, new.username); END;"
    "CREATE TRIGGER IF NOT EXISTS users_ad AFTER DELETE ON users BEGIN"
    " INSERT INTO user_words(user_words, rowid, id, name, username)"
    " VALUES ('delete', old.rid, old.id, old.name, old.username);"
    " INSERT INTO user_tri(user_tri, rowid, id, name, username)"
    " VALUES ('delete', old.rid, old.id, old.name, old.username); END;"
    "CREATE TRIGGER IF NOT EXISTS users_au AFTER UPDATE ON users BEGIN"
    " INSERT INTO user_words(user_words, rowid, id, name, username)"
    " VALUES ('delete', old.rid, old.id, old.name, old.username);"
    " INSERT INTO user_tri(user_tri, rowid, id, name, username)"
    " VALUES ('delete', old.rid, old.id, old.name, old.username);"
    " INSERT INTO user_words(rowid, id, name, username) VALUES (new.rid, new.id, new.name, new.username);"
    " INSERT INTO user_tri(rowid, id, name, username) VALUES (new.rid, new.id, new.name, new.username); END;"
    /* Users erased by user.deleted: their later-replayed events index nothing (GDPR). */
    "CREATE TABLE IF NOT EXISTS erased_users(user_id TEXT PRIMARY KEY, policy TEXT NOT NULL,"
    " erased_ms INTEGER NOT NULL) WITHOUT ROWID;"
    /* A user's recent searches (search_directory.c), at most SEARCH_RECENT_MAX each. */
    "CREATE TABLE IF NOT EXISTS recent(user_id TEXT NOT NULL, q TEXT NOT NULL,"
    " at_ms INTEGER NOT NULL, PRIMARY KEY (user_id, q)) WITHOUT ROWID;";

/* Schema version 2 adds messages.attachments (the count, for analytics' media volume) to the
 * files of version 1; PRAGMA user_version says which a file has. */
static const char MIGRATE_2[] =
    "ALTER TABLE messages ADD COLUMN attachments INTEGER NOT NULL DEFAULT 0;";

/* Version 3 numbers messages by time: rid = created_ms * 4096 + a tie-breaker (16 since
 * version 9, migrate_9), so the FTS5 rowid order is the newest-first order and a newest-N
 * query reads N rows, not all matches. Version 2 files had rids in indexing order: renumbered,
 * then both FTS5 indexes rebuilt from the content table. */
static const char MIGRATE_3[] =
    "DROP TRIGGER IF EXISTS messages_ai; DROP TRIGGER IF EXISTS messages_ad;"
    "DROP TRIGGER IF EXISTS messages_au;"
    "UPDATE messages SET rid = -rid;"
    "UPDATE messages SET rid = n.r FROM (SELECT rid AS old, created_ms * 4096 +"
    " row_number() OVER (PARTITION BY created_ms ORDER BY rid DESC) - 1 AS r FROM messages) AS n"
    " WHERE messages.rid = n.old;"
    "INSERT INTO msg_words(msg_words) VALUES ('rebuild');"
    "INSERT INTO msg_tri(msg_tri) VALUES ('rebuild');";

/* Version 4 indexes the unigrams and bigrams of CJK (and other unspaced scripts) in msg_tri
 * beside the trigrams (tokenizer trigram_cjk, search_tokenizer.c), so terms of 1-2 such
 * characters are index lookups instead of a LIKE scan: msg_tri is recreated and rebuilt from
 * the content table. */
static const char MIGRATE_4[] =
    "DROP TABLE msg_tri;"
    "CREATE VIRTUAL TABLE msg_tri USING fts5(text, content='messages', content_rowid='rid',"
    " tokenize='trigram_cjk');"
    "INSERT INTO msg_tri(msg_tri) VALUES ('rebuild');";

/* Version 5 has no statement of its own: FTS_CONFIG (run by every migration) sets automerge
 * 16 on msg_words in files of version 4. */

/* Version 6 drops the index on messages(created_ms) and the created_ms of the conversation
 * and sender indexes (SCHEMA creates theirs on the id alone): rid follows created_ms
 * (SEARCH_RID_WINDOW) and ends every index entry, so time ranges are rid ranges, alone or
 * after a conversation or sender. The index on created_ms cost a b-tree insert per message
 * (indexing +0.03-0.04 of raw FTS5's rate, bench/search_parts.c), the longer entries +0.02. */
static const char MIGRATE_6[] = "DROP INDEX IF EXISTS messages_time;"
                                "DROP INDEX IF EXISTS messages_conv;"
                                "DROP INDEX IF EXISTS messages_sender;";

/* Version 7 moves the conversation and sender ids from b-tree indexes of messages into the
 * FTS5 index msg_ids (SCHEMA creates it): a b-tree writes a page per row while FTS5 writes its
 * tokens once per transaction, and those two indexes cost 0.15-0.2 of the indexing rate
 * against raw FTS5 (bench/search_parts.c, bench/README.md). It drops the unique index on
 * messages.id too (a message is found by its rid, apply_message): the table is copied without
 * it (which drops its other indexes), then msg_ids is built from it (it holds both ids). The
 * FTS5 indexes name their content table, so they read the copy under the same name. And
 * trigram_cjk no longer emits the bigram of two unspaced characters (a phrase of their
 * unigrams finds them, search_tokenizer.c): msg_tri is rebuilt, else deleting an old row's
 * text would leave its bigrams behind. */
static const char MIGRATE_7[] =
    "CREATE TABLE messages_v7(rid INTEGER PRIMARY KEY, id TEXT NOT NULL,"
    " conversation_id TEXT NOT NULL, sender_id TEXT NOT NULL, seq INTEGER NOT NULL,"
    " created_ms INTEGER NOT NULL, created_eseq INTEGER NOT NULL, eseq INTEGER NOT NULL,"
    " has_attachment INTEGER NOT NULL, deleted INTEGER NOT NULL, text TEXT NOT NULL,"
    " attachments INTEGER NOT NULL DEFAULT 0);"
    "INSERT INTO messages_v7 SELECT rid, id, conversation_id, sender_id, seq, created_ms,"
    " created_eseq, eseq, has_attachment, deleted, text, attachments FROM messages;"
    "DROP TABLE messages;"
    "ALTER TABLE messages_v7 RENAME TO messages;"
    "INSERT INTO msg_ids(msg_ids) VALUES ('rebuild');"
    "INSERT INTO msg_tri(msg_tri) VALUES ('rebuild');";

/* Version 8: trigram_cjk no longer indexes a trigram of three caseless unspaced characters
 * (CJK, kana, Hangul, Thai...), whose unigrams at consecutive positions find the same
 * substring as a phrase (search_tokenizer.c): one token per such character instead of two,
 * which was the CJK index's cost against raw FTS5 (bench/README.md). msg_tri is recreated and
 * rebuilt from the content table (its old trigrams would otherwise stay behind when an old
 * row's text is deleted, and its CJK terms of 3+ characters would find nothing). */
static const char MIGRATE_8[] =
    "DROP TABLE msg_tri;"
    "CREATE VIRTUAL TABLE msg_tri USING fts5(text, content='messages', content_rowid='rid',"
    " tokenize='trigram_cjk');"
    "INSERT INTO msg_tri(msg_tri) VALUES ('rebuild');";

/* FTS5 settings of the message indexes (kept in their %_config tables), applied after the
 * schema and its migrations: 'automerge' above the default 4 merges segments less often while
 * indexing, at the price of more segments per level for a query to read. Measured on the
 * bench (100k texts, indexing CPU time against raw FTS5 with the defaults): 8 on both
 * 0.62x -> 0.68x; 16 on msg_tri (about one token per character, the bulk of the merging)
 * 0.75x with newest-20 p50 unchanged; 16 on msg_words too (schema version 5, which applies
 * it to files of version 4): +0.04-0.05 more in paired runs, newest-20 p50 +0.03-0.1 ms,
 * within the 0.5 ms the issue allows (bench/README.md). With schema 9's rids, at 200k texts,
 * each within the noise of 16 everywhere (+-0.02, bench/README.md "Schema 9"): msg_ids at
 * FTS5's default 4; automerge 8 on all three; 'crisismerge' 32 on all three (which spreads
 * the level-1 merge at the 256th batch, 0.7 s in one COMMIT, over later ones). */
static const char FTS_CONFIG[] =
    "INSERT INTO msg_words(msg_words, rank) VALUES ('automerge', 16);"
    "INSERT INTO msg_tri(msg_tri, rank) VALUES ('automerge', 16);"
    "INSERT INTO msg_ids(msg_ids, rank) VALUES ('automerge', 16);";

/* One integer a PRAGMA answers (-1 when it fails). */
static int pragma_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Version 9 numbers messages with 16 rid slots per millisecond from 2020-01-01 instead of 4096
 * from 1970 (SEARCH_RID_PER_MS, SEARCH_RID_EPOCH_MS): FTS5 writes a doclist's first rowid as a
 * varint and the next ones as varint deltas, and smaller, denser rids made the indexes smaller
 * and indexing faster (search.h). Every message gets the rid apply_message would give it: its
 * slot (created_ms - RID_EPOCH) * RID_PER_MS + seq % RID_PER_MS or, taken, the first free one above, placing messages in the order of
 * their slots (then of their old rids). In that order the next free slot from a message's own
 * is max(own, previous message's rid + 1): new = r + max(own - r) over the messages up to it
 * (r its position). So the slots from a message's own up to its rid are all taken, as
 * apply_message's lookup of a known message requires. Then the three FTS5 indexes are
 * rebuilt from the renumbered content (msg_ids recreated first: version 9 tokenizes an id
 * as one token, MSG_IDS). Fails (the file keeps version 8) when a message would
 * move by SEARCH_RID_SPILL slots or more, which would break the time ranges' rid windows. */
static const char MIGRATE_9_MAP[] =
    "CREATE TEMP TABLE rid_map(old INTEGER PRIMARY KEY, new INTEGER NOT NULL,"
    " own INTEGER NOT NULL);"
    "INSERT INTO temp.rid_map SELECT rid, r + max(own - r) OVER (ORDER BY r ROWS UNBOUNDED"
    " PRECEDING), own FROM (SELECT rid, own, row_number() OVER (ORDER BY own, rid) AS r FROM"
    " (SELECT rid, (created_ms - 1577836800000) * " STR(RID_PER_MS) " + seq % "
    STR(RID_PER_MS) " AS own FROM messages));";
static const char MIGRATE_9_APPLY[] =
    /* out of the way first: version 8 rids are 0..2^53, new ones within +-2^50 */
    "UPDATE messages SET rid = rid - 4611686018427387904;"
    "UPDATE messages SET rid = m.new FROM temp.rid_map m"
    " WHERE messages.rid = m.old - 4611686018427387904;"
    "DROP TABLE temp.rid_map;"
    "INSERT INTO msg_words(msg_words) VALUES ('rebuild');"
    /* ids one token each (MSG_IDS) */
    "DROP TABLE msg_ids;"
    "CREATE VIRTUAL TABLE " MSG_IDS ";"
    "INSERT INTO msg_ids(msg_ids) VALUES ('rebuild');"
    "INSERT INTO msg_tri(msg_tri) VALUES ('rebuild');";

/* Runs version 9's renumbering (above) inside the migration's transaction. 0 with *err set
 * (sqlite3_malloc'd) when SQLite failed or a message would move too far. */
static int migrate_9(sqlite3 *db, char **err)
{
    int far;
    if (sqlite3_exec(db, MIGRATE_9_MAP, NULL, NULL, err) != SQLITE_OK)
        return 0;
    far = pragma_int(db, "SELECT count(*) FROM temp.rid_map WHERE new - own >= " STR(
                             SEARCH_RID_SPILL));
    if (far < 0) {
        *err = sqlite3_mprintf("schema 9: %s", sqlite3_errmsg(db));
        return 0;
    }
    if (far > 0) {
        *err = sqlite3_mprintf("schema 9: %d messages would move %d rid slots or more from"
                               " their own (more than %d messages per ms)",
                               far, SEARCH_RID_SPILL, RID_PER_MS);
        return 0;
    }
    return sqlite3_exec(db, MIGRATE_9_APPLY, NULL, NULL, err) == SQLITE_OK;
}

/* Creates the schema or runs the migrations a file still lacks, in one transaction, then puts
 * the file in WAL mode. A new file's schema is written with synchronous=OFF: as separate
 * durable statements its thirty-odd DDL statements cost ~70 ms of fsyncs per tenant, which
 * made a replay of many tenants crawl; an empty schema lost to a power cut is recreated from
 * the topics like any index (its events' offsets are stored only after later commits). */
static int schema_apply(sqlite3 *db, char **err)
{
    int version = pragma_int(db, "PRAGMA user_version"), fresh, has_col;

    if (version < 0)
        return 0;
    if (version < SCHEMA_VERSION) {
        fresh = pragma_int(db, "PRAGMA page_count") == 0;
        if (sqlite3_exec(db, fresh ? "PRAGMA synchronous=OFF" : "PRAGMA synchronous=FULL",
                         NULL, NULL, err) != SQLITE_OK ||
            sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, err) != SQLITE_OK)
            return 0;
        /* SCHEMA creates what is missing; a file of version 1 lacks messages.attachments
         * (SCHEMA's messages has none either: MIGRATE_2 adds it to both) */
        if (sqlite3_exec(db, SCHEMA, NULL, NULL, err) != SQLITE_OK ||
            (has_col = pragma_int(db, "SELECT count(*) FROM pragma_table_info('messages')"
                                      " WHERE name = 'attachments'")) < 0 ||
            (has_col == 0 && sqlite3_exec(db, MIGRATE_2, NULL, NULL, err) != SQLITE_OK) ||
            (version < 3 && !fresh && sqlite3_exec(db, MIGRATE_3, NULL, NULL, err) != SQLITE_OK) ||
            (version < 4 && !fresh && sqlite3_exec(db, MIGRATE_4, NULL, NULL, err) != SQLITE_OK) ||
            (version < 6 && !fresh && sqlite3_exec(db, MIGRATE_6, NULL, NULL, err) != SQLITE_OK) ||
            (version < 7 && !fresh && sqlite3_exec(db, MIGRATE_7, NULL, NULL, err) != SQLITE_OK) ||
            /* MIGRATE_7 rebuilt msg_tri with the tokenizer of version 8 already */
            (version == 7 && sqlite3_exec(db, MIGRATE_8, NULL, NULL, err) != SQLITE_OK) ||
            (version < 9 && !fresh && !migrate_9(db, err)) ||
            sqlite3_exec(db, FTS_CONFIG, NULL, NULL, err) != SQLITE_OK ||
            sqlite3_exec(db, "PRAGMA user_version = " STR(SCHEMA_VERSION), NULL, NULL, err) !=
                SQLITE_OK ||
            sqlite3_exec(db, "COMMIT", NULL, NULL, err) != SQLITE_OK) {
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            return 0;
        }
    }
    /* Closing a connection skips the checkpoint (and its fsync): the next opener recovers the
     * WAL. Replays cycle through many tenants' connections (WRITERS_MAX). */
    sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
    return sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                            "PRAGMA temp_store=MEMORY", NULL, NULL, err) == SQLITE_OK;
}

int search_tenant_valid(const char *t)
{
    size_t n = 0;
    for (; t[n]; n++)
        if (!((t[n] >= '0' && t[n] <= '9') || (t[n] >= 'a' && t[n] <= 'z') ||
              (t[n] >= 'A' && t[n] <= 'Z') || t[n] == '-'))
            return 0;
    return n >= 1 && n < SEARCH_ID_MAX;
}

static int tenant_path(const search_index *ix, const char *tenant, char *out, size_t n)
{
    int w = snprintf(out, n, "%s/%s.db", ix->dir, tenant);
    return w > 0 && (size_t)w < n;
}

cm_err search_index_create(const char *dir, search_index **out)
{
    search_index *ix;
    int w;

    if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
        cm_error("SEARCH_DATA_DIR %s: %s", dir, strerror(errno));
        return CM_EIO;
    }
    if (access(dir, W_OK) != 0) {
        cm_error("SEARCH_DATA_DIR %s is not writable", dir);
        return CM_EIO;
    }
    if (search_tokenizer_register() != CM_OK) {
        cm_error("search index: cannot register the FTS5 tokenizer trigram_cjk");
        return CM_EIO;
    }
    ix = calloc(1, sizeof(*ix));
    if (ix == NULL)
        return CM_ENOMEM;
    w = snprintf(ix->dir, sizeof(ix->dir), "%s", dir);
    if (w <= 0 || (size_t)w >= sizeof(ix->dir)) {
        free(ix);
        return CM_EINVAL;
    }
    pthread_mutex_init(&ix->lock, NULL);
    pthread_mutex_init(&ix->pool_lock, NULL);
    *out = ix;
    return CM_OK;
}

void search_index_destroy(search_index *ix)
{
    if (ix == NULL)
        return;
    for (int i = 0; i < WRITERS_MAX; i++) {
        cache_clear(&ix->cache[i]);
        sqlite3_close(ix->db[i]);
    }
    for (int i = 0; i < ix->npool; i++)
        sqlite3_close(ix->pool_db[i]);
    pthread_mutex_destroy(&ix->pool_lock);
    pthread_mutex_destroy(&ix->lock);
    free(ix);
}

/* Ends slot i's open transaction: COMMIT, or ROLLBACK when `commit` is 0 or COMMIT failed.
 * Committing before the batch ends is always safe: offsets are stored later still. */
static cm_err end_txn(search_index *ix, int i, int commit)
{
    cm_err rc = CM_OK;
    if (!ix->in_txn[i])
        return CM_OK;
    if (commit && sqlite3_exec(ix->db[i], "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        cm_warn("search index %s: commit: %s", ix->tenant[i], sqlite3_errmsg(ix->db[i]));
        rc = CM_EIO;
    }
    if (!commit || rc != CM_OK)
        sqlite3_exec(ix->db[i], "ROLLBACK", NULL, NULL, NULL);
    ix->in_txn[i] = 0;
    return rc;
}

/* The writer connection of `tenant` (its slot in *slot), opened (and its schema created) on
 * first use. */
static cm_err writer(search_index *ix, const char *tenant, int *slotp)
{
    char path[600];
    sqlite3 *db = NULL;
    char *err = NULL;
    int slot;

    for (int i = 0; i < WRITERS_MAX; i++)
        if (ix->db[i] && strcmp(ix->tenant[i], tenant) == 0) {
            *slotp = i;
            return CM_OK;
        }
    if (!tenant_path(ix, tenant, path, sizeof(path)))
        return CM_EINVAL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                       SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK ||
        sqlite3_busy_timeout(db, 5000) != SQLITE_OK ||
        !schema_apply(db, &err)) {
        cm_error("search index %s: %s", path, err ? err : sqlite3_errmsg(db));
        sqlite3_free(err);
        sqlite3_close(db);
        return CM_EIO;
    }
    slot = ix->next_evict;
    ix->next_evict = (ix->next_evict + 1) % WRITERS_MAX;
    if (end_txn(ix, slot, 1) != CM_OK) {
        sqlite3_close(db);
        return CM_EIO;
    }
    cache_clear(&ix->cache[slot]);
    sqlite3_close(ix->db[slot]);
    ix->db[slot] = db;
    snprintf(ix->tenant[slot], sizeof(ix->tenant[slot]), "%s", tenant);
    *slotp = slot;
    return CM_OK;
}

static const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int step_done(sqlite3 *db, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        cm_warn("search index: %s", sqlite3_errmsg(db));
    stmt_release(st);
    return rc == SQLITE_DONE;
}

/* 0 when `user` was not erased, 1 when erased with the policy anonymize, 2 with delete, -1 when
 * SQLite failed. */
static int erased_policy(sqlite3 *db, const char *user)
{
    sqlite3_stmt *st;
    int rc;
    static const char SQL[] = "SELECT policy FROM erased_users WHERE user_id = ?";
    stmt_cache *c = tl_cache;

    /* Most files never saw a user.deleted: one look per connection instead of one per event. */
    if (c && c->erased == 0) {
        if ((rc = pragma_int(db, "SELECT EXISTS (SELECT 1 FROM erased_users)")) < 0)
            return -1;
        c->erased = rc ? 2 : 1;
    }
    if (c && c->erased == 1)
        return 0;
    if ((st = stmt_get(db, SQL)) == NULL)
        return -1;
    sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        rc = strcmp((const char *)sqlite3_column_text(st, 0), "delete") == 0 ? 2 : 1;
    else
        rc = rc == SQLITE_DONE ? 0 : -1;
    stmt_release(st);
    return rc;
}

/* Adds (`add` 1) or removes (0) text `text` of row `rid` in both FTS5 indexes. The message
 * text is external content: FTS5 must be told the exact text it indexed to remove it. Done
 * here rather than by triggers, which cost 2.7x the indexing time (bench/README.md). */
static int fts_message(sqlite3 *db, int64_t rid, const char *text, int add)
{
    static const char ADD_W[] = "INSERT INTO msg_words(rowid, text) VALUES (?1, ?2)",
                      ADD_T[] = "INSERT INTO msg_tri(rowid, text) VALUES (?1, ?2)",
                      DEL_W[] = "INSERT INTO msg_words(msg_words, rowid, text)"
                                " VALUES ('delete', ?1, ?2)",
                      DEL_T[] = "INSERT INTO msg_tri(msg_tri, rowid, text)"
                                " VALUES ('delete', ?1, ?2)";
    const char *sql[2] = {add ? ADD_W : DEL_W, add ? ADD_T : DEL_T};
    for (int i = 0; i < 2; i++) {
        sqlite3_stmt *st = stmt_get(db, sql[i]);
        if (st == NULL)
            return 0;
        sqlite3_bind_int64(st, 1, rid);
        sqlite3_bind_text(st, 2, text, -1, SQLITE_STATIC);
        if (!step_done(db, st))
            return 0;
    }
    return 1;
}

/* Adds new row `rid`'s conversation and sender to msg_ids (an edit changes neither). */
static int ids_message(sqlite3 *db, int64_t rid, const char *cid, const char *sender)
{
    static const char SQL[] =
        "INSERT INTO msg_ids(rowid, conversation_id, sender_id) VALUES (?1, ?2, ?3)";
    sqlite3_stmt *st = stmt_get(db, SQL);
    if (st == NULL)
        return 0;
    sqlite3_bind_int64(st, 1, rid);
    sqlite3_bind_text(st, 2, cid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, sender, -1, SQLITE_STATIC);
    return step_done(db, st);
}

/* The fields of a message event's data that the index reads (proto/events/message.*), from
 * the tree (msg_from_tree) or straight from the JSON text (msg_from_text). Strings are NULL
 * when absent or not strings; they point into the event, which outlives the apply. */
typedef struct msg_fields {
    const char *id, *cid, *sender, *text, *mtype, *created;
    int has_seq;     /* seq is a number */
    int64_t seq;
    int deleted;     /* data.deleted is true */
    int attachments; /* members of data.attachments (0 when absent) */
} msg_fields;

static void msg_from_tree(const cJSON *d, msg_fields *f)
{
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(d, "seq");
    f->id = str(d, "id");
    f->cid = str(d, "conversation_id");
    f->sender = str(d, "sender_id");
    f->text = str(d, "text");
    f->mtype = str(d, "type");
    f->created = str(d, "created_at");
    f->has_seq = cJSON_IsNumber(seq);
    f->seq = f->has_seq ? (int64_t)seq->valuedouble : 0;
    f->deleted = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(d, "deleted"));
    f->attachments = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(d, "attachments"));
}

/* message.created / message.updated / message.deleted: the whole message after the change. */
static cm_err apply_message(sqlite3 *db, const char *type, const msg_fields *f, int64_t eseq,
                            int *changed, char *why, size_t n)
{
    static const char FIND[] = "SELECT eseq, deleted, text FROM messages WHERE rid = ?1"
                               " AND id = ?2",
                      INSERT[] =
                          "INSERT INTO messages(rid, id, conversation_id, sender_id, seq,"
                          " created_ms, created_eseq, eseq, has_attachment, deleted, text,"
                          " attachments) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9, ?10, ?11)",
                      UPDATE[] = "UPDATE messages SET eseq = ?2, has_attachment = ?3,"
                                 " deleted = ?4, text = ?5, attachments = ?6 WHERE rid = ?1";
    const char *id = f->id, *cid = f->cid, *sender = f->sender, *text = f->text,
               *mtype = f->mtype, *created = f->created;
    int deleted = strcmp(type, "message.deleted") == 0 || f->deleted;
    int64_t created_ms, rid = 0, old_eseq = 0;
    int erased, old_deleted = 0, src, same;
    char *old_text = NULL;
    sqlite3_stmt *st;
    cm_err rc = CM_EIO;

    if (!id || !cid || !sender || !text || !mtype || !created || !f->has_seq ||
        search_parse_time(created, &created_ms) != CM_OK) {
        snprintf(why, n, "%s: data lacks id, conversation_id, sender_id, seq, type, text or "
                 "created_at", type);
        return CM_EINVAL;
    }
    if (strcmp(mtype, "system") == 0)
        return CM_OK; /* joins, leaves and renames are not searchable content */
    /* A replayed message of an erased user is stored as what the erasure left of it. */
    if ((erased = erased_policy(db, sender)) < 0)
        return CM_EIO;
    if (erased) {
        deleted = erased == 2 ? SEARCH_ERASED : 1;
        sender = SEARCH_DELETED_USER;
    }
    /* A tombstone keeps no text: nothing of a deleted message stays in either index. */
    if (deleted)
        text = "";
    /* A message's rid follows from its created_at and seq, which its events all carry and
     * never change (MIGRATE_3; proto/events/message.*.schema.json): its own slot, or on the
     * rare clash (same ms, same low seq bits) the next free one, rows being never removed.
     * So the rid slots from its own on, up to the first free one, hold it if it is known: most
     * events are a new message, inserted at once; a taken slot is looked at (its id). This
     * replaced a unique index on messages.id, a b-tree insert per message (0.08 of the
     * indexing rate against raw FTS5, bench/search_parts.c). */
    if ((st = stmt_get(db, INSERT)) == NULL)
        return CM_EIO;
    sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, cid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, sender, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)f->seq);
    sqlite3_bind_int64(st, 6, created_ms);
    sqlite3_bind_int64(st, 7, eseq);
    sqlite3_bind_int(st, 8, f->attachments > 0);
    sqlite3_bind_int(st, 9, deleted);
    sqlite3_bind_text(st, 10, text, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 11, f->attachments);
    rid = (created_ms - RID_EPOCH) * RID_PER_MS + (f->seq % RID_PER_MS);
    for (int tries = 0;; tries++) {
        sqlite3_stmt *find;
        sqlite3_bind_int64(st, 1, rid);
        if (sqlite3_step(st) == SQLITE_DONE) {
            stmt_release(st);
            if (!fts_message(db, rid, text, 1) || !ids_message(db, rid, cid, sender))
                return CM_EIO;
            *changed += 1;
            return CM_OK;
        }
        if (sqlite3_extended_errcode(db) != SQLITE_CONSTRAINT_PRIMARYKEY) {
            cm_warn("search index: %s", sqlite3_errmsg(db));
            stmt_release(st);
            return CM_EIO;
        }
        sqlite3_reset(st);
        /* the slot is taken: by this message? */
        if ((find = stmt_get(db, FIND)) == NULL) {
            stmt_release(st);
            return CM_EIO;
        }
        sqlite3_bind_int64(find, 1, rid);
        sqlite3_bind_text(find, 2, id, -1, SQLITE_STATIC);
        src = sqlite3_step(find);
        if (src == SQLITE_ROW) {
            old_eseq = sqlite3_column_int64(find, 0);
            old_deleted = sqlite3_column_int(find, 1);
            old_text = strdup((const char *)sqlite3_column_text(find, 2));
        }
        stmt_release(find);
        if (src == SQLITE_ROW)
            break;
        if (src != SQLITE_DONE) {
            cm_warn("search index: message %s: %s", id, sqlite3_errmsg(db));
            stmt_release(st);
            return CM_EIO;
        }
        if (tries >= SEARCH_RID_SPILL - 1) {
            /* Retrying cannot free a slot: the event is parked (dead-lettered), and the
             * tenant's indexing goes on instead of stalling behind it. */
            snprintf(why, n, "%s: message %s: no free rid slot in the %d from its own (its "
                     "tenant created over %d messages per ms for %d ms)", type, id,
                     SEARCH_RID_SPILL, SEARCH_RID_PER_MS, SEARCH_RID_SPILL / SEARCH_RID_PER_MS);
            stmt_release(st);
            return CM_EINVAL;
        }
        rid++;
    }
    stmt_release(st);
    if (old_text == NULL)
        goto out;
    if (eseq <= old_eseq || old_deleted) {
        rc = CM_OK; /* not newer, or a tombstone: nothing changes */
        goto out;
    }
    /* An edit changes the text only (msg_ids keeps the row's conversation and sender). */
    same = strcmp(old_text, text) == 0;
    if ((!same && !fts_message(db, rid, old_text, 0)) ||
        (st = stmt_get(db, UPDATE)) == NULL)
        goto out;
    sqlite3_bind_int64(st, 1, rid);
    sqlite3_bind_int64(st, 2, eseq);
    sqlite3_bind_int(st, 3, f->attachments > 0);
    sqlite3_bind_int(st, 4, deleted);
    sqlite3_bind_text(st, 5, text, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 6, f->attachments);
    if (!step_done(db, st) || (!same && !fts_message(db, rid, text, 1)))
        goto out;
    *changed += 1;
    rc = CM_OK;
out:
    free(old_text);
    return rc;
}

static cm_err upsert_member(sqlite3 *db, const char *cid, const char *uid, int active,
                            int64_t eseq, int *changed)
{
    static const char SQL[] =
        "INSERT INTO members(conversation_id, user_id, active, left_eseq, eseq)"
        " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO UPDATE SET active = excluded.active,"
        " left_eseq = excluded.left_eseq, eseq = excluded.eseq"
        " WHERE excluded.eseq > members.eseq";
    sqlite3_stmt *st;
    int erased = erased_policy(db, uid);

    if (erased < 0)
        return CM_EIO;
    if (erased)
        return CM_OK; /* an erased user's memberships are not kept */
    if ((st = stmt_get(db, SQL)) == NULL)
        return CM_EIO;
    sqlite3_bind_text(st, 1, cid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, uid, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, active);
    if (active)
        sqlite3_bind_null(st, 4);
    else
        sqlite3_bind_int64(st, 4, eseq);
    sqlite3_bind_int64(st, 5, eseq);
    if (!step_done(db, st))
        return CM_EIO;
    *changed += sqlite3_changes(db);
    return CM_OK;
}

/* conversation.created's initial_members, checked whole before anything is written. */
static cm_err members_valid(const cJSON *d, char *why, size_t n)
{
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(d, "initial_members"), *m;
    if (str(d, "id") == NULL || !cJSON_IsArray(list)) {
        snprintf(why, n, "conversation.created: data lacks id or initial_members");
        return CM_EINVAL;
    }
    cJSON_ArrayForEach(m, list)
    {
        if (str(m, "user_id") == NULL) {
            snprintf(why, n, "conversation.created: an initial member lacks user_id");
            return CM_EINVAL;
        }
    }
    return CM_OK;
}

static cm_err apply_members(sqlite3 *db, const char *type, const cJSON *ev, const cJSON *d,
                            int64_t eseq, int *changed, char *why, size_t n)
{
    const char *cid = str(d, "conversation_id");
    cm_err rc = CM_OK;

    if (strcmp(type, "conversation.created") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(d, "initial_members"), *m;
        cid = str(d, "id");
        if (cid == NULL || !cJSON_IsArray(list)) {
            snprintf(why, n, "conversation.created: data lacks id or initial_members");
            return CM_EINVAL;
        }
        cJSON_ArrayForEach(m, list)
        {
            const char *uid = str(m, "user_id");
            if (uid == NULL) {
                snprintf(why, n, "conversation.created: an initial member lacks user_id");
                return CM_EINVAL;
            }
            if ((rc = upsert_member(db, cid, uid, 1, eseq, changed)) != CM_OK)
                return rc;
        }
        return CM_OK;
    }
    (void)ev;
    if (cid == NULL || str(d, "user_id") == NULL) {
        snprintf(why, n, "%s: data lacks conversation_id or user_id", type);
        return CM_EINVAL;
    }
    return upsert_member(db, cid, str(d, "user_id"), strcmp(type, "member.added") == 0, eseq,
                         changed);
}

/* The string `k` of `o`, "" when null or absent. */
static const char *str_or_empty(const cJSON *o, const char *k)
{
    const char *v = str(o, k);
    return v ? v : "";
}

/* conversation.created / conversation.updated / conversation.deleted: the conversation's shared
 * fields after the change (title and description are what is searched). */
static cm_err apply_conversation(sqlite3 *db, const char *type, const cJSON *d, int64_t eseq,
                                 int *changed, char *why, size_t n)
{
    static const char SQL[] =
        "INSERT INTO conversations(id, type, title, description, created_by, created_ms, eseq,"
        " deleted) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        " ON CONFLICT(id) DO UPDATE SET title = excluded.title,"
        " description = excluded.description, eseq = excluded.eseq, deleted = excluded.deleted"
        " WHERE excluded.eseq > conversations.eseq";
    const char *id = str(d, "id"), *ctype = str(d, "type"), *by = str(d, "created_by"),
               *created = str(d, "created_at");
    int64_t created_ms;
    sqlite3_stmt *st;

    if (!id || !ctype || !by || !created || search_parse_time(created, &created_ms) != CM_OK) {
        snprintf(why, n, "%s: data lacks id, type, created_by or created_at", type);
        return CM_EINVAL;
    }
    if ((st = stmt_get(db, SQL)) == NULL)
        return CM_EIO;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, ctype, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, str_or_empty(d, "title"), -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, str_or_empty(d, "description"), -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, by, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, created_ms);
    sqlite3_bind_int64(st, 7, eseq);
    sqlite3_bind_int(st, 8, strcmp(type, "conversation.deleted") == 0);
    if (!step_done(db, st))
        return CM_EIO;
    *changed += sqlite3_changes(db);
    return CM_OK;
}

/* user.created / user.updated: the user's public view; `version` (the event time, ms) orders
 * them, since user events carry no log seq. */
static cm_err apply_user(sqlite3 *db, const char *type, const cJSON *d, int64_t version,
                         int *changed, char *why, size_t n)
{
    static const char SQL[] =
        "INSERT INTO users(id, name, username, avatar_media_id, status, discoverable,"
        " created_ms, version_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        " ON CONFLICT(id) DO UPDATE SET name = excluded.name, username = excluded.username,"
        " avatar_media_id = excluded.avatar_media_id, status = excluded.status,"
        " discoverable = excluded.discoverable, version_ms = excluded.version_ms"
        " WHERE excluded.version_ms >= users.version_ms";
    const char *id = str(d, "id"), *name = str(d, "name"), *status = str(d, "status"),
               *created = str(d, "created_at");
    const cJSON *disc = cJSON_GetObjectItemCaseSensitive(d, "discoverable");
    int64_t created_ms = version;
    int erased;
    sqlite3_stmt *st;

    /* The first user services published id and name only: status and created_at default to
     * active and the event's time. */
    if (!id || !name || (created && search_parse_time(created, &created_ms) != CM_OK)) {
        snprintf(why, n, "%s: data lacks id or name, or created_at is not RFC 3339", type);
        return CM_EINVAL;
    }
    if (status == NULL)
        status = "active";
    if ((erased = erased_policy(db, id)) != 0)
        return erased < 0 ? CM_EIO : CM_OK;
    if ((st = stmt_get(db, SQL)) == NULL)
        return CM_EIO;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, str_or_empty(d, "username"), -1, SQLITE_STATIC);
    if (str(d, "avatar_media_id"))
        sqlite3_bind_text(st, 4, str(d, "avatar_media_id"), -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 4);
    sqlite3_bind_text(st, 5, status, -1, SQLITE_STATIC);
    /* Absent in events of user services older than the field: discoverable, its default. */
    sqlite3_bind_int(st, 6, !cJSON_IsFalse(disc));
    sqlite3_bind_int64(st, 7, created_ms);
    sqlite3_bind_int64(st, 8, version);
    if (!step_done(db, st))
        return CM_EIO;
    *changed += sqlite3_changes(db);
    return CM_OK;
}

/* user.deleted: erases what the index holds about the user, per the tenant's erase_policy
 * (proto/events/user.deleted.schema.json): the profile, memberships and recent searches are
 * deleted; the user's messages lose their text and sender (anonymize: still counted by the
 * analytics as a deleted user's; delete: not counted either). The user id is remembered so a
 * replay of older events indexes nothing of them again. */
static cm_err apply_user_deleted(sqlite3 *db, const cJSON *d, int64_t version, int *changed,
                                 char *why, size_t n)
{
    /* The user's message rows: found through msg_ids' sender_id column (MIGRATE_7) and
     * tested exactly, or every row tested when the id has no token to look up. Collected
     * first: msg_ids is then written from them. */
    static const char ROWS_FTS[] = "INSERT INTO temp.erased_rids SELECT m.rid FROM messages m"
                                   " WHERE m.rid IN (SELECT rowid FROM msg_ids WHERE"
                                   " msg_ids MATCH ?2) AND m.sender_id = ?1",
                      ROWS_SCAN[] = "INSERT INTO temp.erased_rids SELECT m.rid FROM messages m"
                                    " WHERE m.sender_id = ?1 AND ?2 IS NULL";
    static const char *const SQL[] = {
        "INSERT OR REPLACE INTO erased_users(user_id, policy, erased_ms) VALUES (?1, ?2, ?3)",
        "DELETE FROM users WHERE id = ?1",
        "DELETE FROM members WHERE user_id = ?1",
        "DELETE FROM recent WHERE user_id = ?1",
        "DELETE FROM temp.erased_rids",
        NULL, /* ROWS_FTS or ROWS_SCAN */
        /* the text leaves both FTS5 indexes and the ids msg_ids (external content: FTS5 is
         * told the values it indexed) */
        "INSERT INTO msg_words(msg_words, rowid, text) SELECT 'delete', rid, text FROM messages"
        " WHERE rid IN temp.erased_rids AND text <> ''",
        "INSERT INTO msg_tri(msg_tri, rowid, text) SELECT 'delete', rid, text FROM messages"
        " WHERE rid IN temp.erased_rids AND text <> ''",
        "INSERT INTO msg_ids(msg_ids, rowid, conversation_id, sender_id)"
        " SELECT 'delete', rid, conversation_id, sender_id FROM messages"
        " WHERE rid IN temp.erased_rids",
        "UPDATE messages SET text = '', sender_id = '" SEARCH_DELETED_USER "',"
        " deleted = CASE ?2 WHEN 'delete' THEN " SEARCH_ERASED_STR " ELSE 1 END"
        " WHERE rid IN temp.erased_rids",
        /* and come back to msg_ids under the deleted user's id */
        "INSERT INTO msg_ids(rowid, conversation_id, sender_id)"
        " SELECT rid, conversation_id, sender_id FROM messages WHERE rid IN temp.erased_rids",
    };
    const char *uid = str(d, "user_id"), *policy = str(d, "erase_policy");
    char match[SEARCH_ID_MAX + 32];
    int fts;
    sqlite3_stmt *st;

    if (!uid || !policy || (strcmp(policy, "delete") != 0 && strcmp(policy, "anonymize") != 0)) {
        snprintf(why, n, "user.deleted: data lacks user_id or erase_policy (anonymize|delete)");
        return CM_EINVAL;
    }
    fts = search_id_match("sender_id", uid, match, sizeof(match));
    if (tl_cache)
        tl_cache->erased = 2;
    if (sqlite3_exec(db, "CREATE TEMP TABLE IF NOT EXISTS erased_rids(rid INTEGER PRIMARY KEY)",
                     NULL, NULL, NULL) != SQLITE_OK) {
        cm_warn("search index: %s", sqlite3_errmsg(db));
        return CM_EIO;
    }
    for (size_t i = 0; i < sizeof(SQL) / sizeof(SQL[0]); i++) {
        const char *sql = SQL[i] ? SQL[i] : fts ? ROWS_FTS : ROWS_SCAN;
        int rows = SQL[i] == NULL; /* ?2 is the MATCH there, not the policy */
        if ((st = stmt_get(db, sql)) == NULL)
            return CM_EIO;
        sqlite3_bind_text(st, 1, uid, -1, SQLITE_STATIC);
        if (rows && fts)
            sqlite3_bind_text(st, 2, match, -1, SQLITE_STATIC);
        else if (!rows && sqlite3_bind_parameter_count(st) >= 2)
            sqlite3_bind_text(st, 2, policy, -1, SQLITE_STATIC);
        if (sqlite3_bind_parameter_count(st) >= 3)
            sqlite3_bind_int64(st, 3, version);
        if (!step_done(db, st))
            return CM_EIO;
        if (i < 4 || i == 9)
            *changed += sqlite3_changes(db);
    }
    return CM_OK;
}

static cm_err apply_event(search_index *ix, const char *tenant, const char *type,
                          const cJSON *ev, const cJSON *d, const msg_fields *mf,
                          int64_t version, char *why, size_t n);

cm_err search_index_apply(search_index *ix, const cJSON *ev, char *why, size_t n)
{
    const char *type = str(ev, "type"), *tenant = str(ev, "tenant");
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(ev, "data"),
                *es = cJSON_GetObjectItemCaseSensitive(ev, "eseq");
    const char *when = str(ev, "time");
    int user_ev = type && strncmp(type, "user.", 5) == 0;
    int64_t version = 0;

    /* Messaging's events are ordered by the conversation's log seq (eseq); the user service's
     * carry none and are ordered by their time. */
    if (type == NULL || tenant == NULL || !search_tenant_valid(tenant) || !cJSON_IsObject(d) ||
        (user_ev ? (when == NULL || search_parse_time(when, &version) != CM_OK)
                 : (!cJSON_IsNumber(es) || es->valuedouble < 1))) {
        snprintf(why, n, "the envelope lacks type, a valid tenant, %s or data",
                 user_ev ? "time" : "eseq");
        return CM_EINVAL;
    }
    if (!user_ev)
        version = (int64_t)es->valuedouble;
    if (strncmp(type, "message.", 8) == 0) {
        msg_fields f;
        msg_from_tree(d, &f);
        return apply_event(ix, tenant, type, ev, d, &f, version, why, n);
    }
    return apply_event(ix, tenant, type, ev, d, NULL, version, why, n);
}

/* Applies an event whose envelope is checked: in the tenant's open transaction (begun here
 * when none is), committed at once outside a batch. A message event comes as its fields
 * `mf`; any other as its tree (`ev`, its data `d`). */
static cm_err apply_event(search_index *ix, const char *tenant, const char *type,
                          const cJSON *ev, const cJSON *d, const msg_fields *mf,
                          int64_t version, char *why, size_t n)
{
    int changed = 0, slot = -1, user_ev = strncmp(type, "user.", 5) == 0;
    sqlite3 *db;
    cm_err rc;

    pthread_mutex_lock(&ix->lock);
    rc = writer(ix, tenant, &slot);
    if (rc != CM_OK)
        goto out;
    db = ix->db[slot];
    if (!ix->in_txn[slot]) {
        if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
            rc = CM_EIO;
            goto out;
        }
        ix->in_txn[slot] = 1;
    }
    /* No savepoint per event: each apply_* checks its whole event before its first write, so
     * a refused event leaves nothing, and a failed write rolls the whole batch back.
     * (A savepoint per event made SQLite copy every page an event touched into its
     * sub-journal: 2.2x the indexing time, bench/README.md.) */
    tl_cache = &ix->cache[slot];
    if (mf != NULL)
        rc = apply_message(db, type, mf, version, &changed, why, n);
    else if (strcmp(type, "user.deleted") == 0)
        rc = apply_user_deleted(db, d, version, &changed, why, n);
    else if (user_ev)
        rc = apply_user(db, type, d, version, &changed, why, n);
    else if (strncmp(type, "conversation.", 13) == 0) {
        rc = strcmp(type, "conversation.created") == 0 ? members_valid(d, why, n) : CM_OK;
        if (rc == CM_OK)
            rc = apply_conversation(db, type, d, version, &changed, why, n);
        if (rc == CM_OK && strcmp(type, "conversation.created") == 0)
            rc = apply_members(db, type, ev, d, version, &changed, why, n);
    } else
        rc = apply_members(db, type, ev, d, version, &changed, why, n);
    tl_cache = NULL;
    if ((rc == CM_OK || rc == CM_EINVAL) && !ix->batching && end_txn(ix, slot, 1) != CM_OK)
        rc = CM_EIO;
    if (rc == CM_OK)
        atomic_fetch_add(changed ? &ix->applied : &ix->duplicates, 1);
out:
    tl_cache = NULL;
    if (rc != CM_OK && rc != CM_EINVAL && slot >= 0)
        end_txn(ix, slot, 0); /* a failed write: the whole batch is redone */
    pthread_mutex_unlock(&ix->lock);
    return rc;
}

/* --- message events from their JSON text ------------------------------------------------ */

#define TEXT_TOKENS 128 /* jsmn tokens of an event the text path reads; more: the tree path */
#define TEXT_STACK 2048 /* events up to this size are copied to the stack, larger to the heap */

/* 1 when string token `t` of `js` is exactly `s`. */
static int jtok_eq(const char *js, const jsmntok_t *t, const char *s)
{
    size_t n = strlen(s);
    return (size_t)(t->end - t->start) == n && memcmp(js + t->start, s, n) == 0;
}

/* `v` as a NUL-terminated string in the copy `buf` of the text (its closing quote becomes the
 * NUL; the text holds no escape): NULL when `v` is absent or not a string. */
static const char *jtok_str(char *buf, const jsmntok_t *v)
{
    if (v == NULL || v->type != JSMN_STRING)
        return NULL;
    buf[v->end] = '\0';
    return buf + v->start;
}

/* An integer primitive (no fraction, no exponent, |v| <= 2^53: where cJSON's double is exact)
 * in *out: 1, else 0. */
static int jtok_int(const char *js, const jsmntok_t *v, int64_t *out)
{
    int64_t x = 0;
    int i = v->start, neg = 0;
    if (v->type != JSMN_PRIMITIVE || v->end - v->start > 17)
        return 0;
    if (js[i] == '-') {
        neg = 1;
        i++;
    }
    if (i >= v->end || (js[i] == '0' && v->end - i > 1))
        return 0;
    for (; i < v->end; i++) {
        if (js[i] < '0' || js[i] > '9')
            return 0;
        x = x * 10 + (js[i] - '0');
    }
    if (x > ((int64_t)1 << 53))
        return 0;
    *out = neg ? -x : x;
    return 1;
}

/* 1 when primitive token `t` is true, false, null or a number as RFC 8259 writes it (jsmn
 * checks no more than the first character). */
static int jtok_literal(const char *js, const jsmntok_t *t)
{
    const char *p = js + t->start, *e = js + t->end;
    size_t n = (size_t)(e - p);
    int digits;

    if ((n == 4 && (memcmp(p, "true", 4) == 0 || memcmp(p, "null", 4) == 0)) ||
        (n == 5 && memcmp(p, "false", 5) == 0))
        return 1;
    if (p < e && *p == '-')
        p++;
    if (p < e && *p == '0')
        p++;
    else {
        for (digits = 0; p < e && *p >= '0' && *p <= '9'; p++)
            digits++;
        if (digits == 0)
            return 0;
    }
    if (p < e && *p == '.') {
        for (p++, digits = 0; p < e && *p >= '0' && *p <= '9'; p++)
            digits++;
        if (digits == 0)
            return 0;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-'))
            p++;
        for (digits = 0; p < e && *p >= '0' && *p <= '9'; p++)
            digits++;
        if (digits == 0)
            return 0;
    }
    return p == e;
}

/* The values of the members of object token `obj` (of `nt` tokens `t`) named names[0..count):
 * vals[k] the first such member's value (as cJSON finds it), NULL when there is none. A
 * member's name is a token whose parent is the object, its value the token after it. */
static void jtok_members(const char *js, const jsmntok_t *t, int nt, int obj,
                         const char *const *names, const jsmntok_t **vals, int count)
{
    for (int k = 0; k < count; k++)
        vals[k] = NULL;
    for (int i = obj + 1; i + 1 < nt && t[i].start < t[obj].end; i++) {
        if (t[i].parent != obj)
            continue;
        for (int k = 0; k < count; k++)
            if (vals[k] == NULL && jtok_eq(js, &t[i], names[k])) {
                vals[k] = &t[i + 1];
                break;
            }
    }
}

cm_err search_index_apply_text(search_index *ix, const char *json, size_t len, int max_depth,
                               int64_t *time_ms, char *why, size_t n)
{
    jsmntok_t t[TEXT_TOKENS];
    int depth[TEXT_TOKENS];
    jsmn_parser parser;
    static const char *const ENVELOPE[] = {"type", "tenant", "eseq", "time", "data"};
    static const char *const DATA[] = {"id",   "conversation_id", "sender_id",
                                       "text", "type",            "created_at",
                                       "seq",  "deleted",         "attachments"};
    const jsmntok_t *env[5], *dv[9], *seq;
    char stack[TEXT_STACK], *buf;
    const char *stype, *stenant, *stm;
    int64_t version;
    msg_fields f;
    int nt;
    cm_err rc;

    /* Whatever jsmn might accept and cm_json_parse refuse (control bytes, bad UTF-8, escapes
     * such as lone surrogates, malformed literals, too deep) goes to the tree path, which
     * decides and reports; so do tabs and newlines between tokens (cJSON prints none). */
    if (len < 2 || len > ((size_t)1 << 24) || memchr(json, '\\', len) ||
        memmem(json, len, "message.", 8) == NULL)
        return CM_EAGAIN;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)json[i] < 0x20)
            return CM_EAGAIN;
    jsmn_init(&parser);
    nt = jsmn_parse(&parser, json, len, t, TEXT_TOKENS);
    if (nt < 1 || t[0].type != JSMN_OBJECT || t[0].start != 0 || (size_t)t[0].end != len)
        return CM_EAGAIN;
    for (int i = 0; i < nt; i++) {
        /* containers nest one deeper than their parent container; a member's name is the
         * parent of its value in jsmn, at the object's level */
        int p = t[i].parent;
        depth[i] = p < 0 ? 1 : depth[p] + (t[p].type == JSMN_STRING ? 0 : 1);
        if ((t[i].type == JSMN_OBJECT || t[i].type == JSMN_ARRAY) && depth[i] > max_depth)
            return CM_EAGAIN;
        if (t[i].type == JSMN_PRIMITIVE && !jtok_literal(json, &t[i]))
            return CM_EAGAIN;
    }
    if (!cm_utf8_valid(json, len))
        return CM_EAGAIN;
    jtok_members(json, t, nt, 0, ENVELOPE, env, 5);
    if (env[4] == NULL || env[4]->type != JSMN_OBJECT || env[2] == NULL ||
        !jtok_int(json, env[2], &version) || version < 1)
        return CM_EAGAIN;
    jtok_members(json, t, nt, (int)(env[4] - t), DATA, dv, 9);
    /* the copy whose strings are NUL-terminated in place */
    buf = len < sizeof(stack) ? stack : malloc(len + 1);
    if (buf == NULL)
        return CM_ENOMEM;
    memcpy(buf, json, len);
    buf[len] = '\0';
    memset(&f, 0, sizeof(f));
    stype = jtok_str(buf, env[0]);
    stenant = jtok_str(buf, env[1]);
    stm = jtok_str(buf, env[3]);
    f.id = jtok_str(buf, dv[0]);
    f.cid = jtok_str(buf, dv[1]);
    f.sender = jtok_str(buf, dv[2]);
    f.text = jtok_str(buf, dv[3]);
    f.mtype = jtok_str(buf, dv[4]);
    f.created = jtok_str(buf, dv[5]);
    seq = dv[6];
    /* cJSON_GetArraySize: the members of an array or object, 0 for anything else */
    f.attachments = dv[8] && (dv[8]->type == JSMN_ARRAY || dv[8]->type == JSMN_OBJECT)
                        ? dv[8]->size : 0;
    f.deleted = dv[7] && dv[7]->type == JSMN_PRIMITIVE && buf[dv[7]->start] == 't';
    f.has_seq = seq && jtok_int(json, seq, &f.seq);
    if (stype == NULL || stenant == NULL || strncmp(stype, "message.", 8) != 0 ||
        !search_indexable(stype) || !search_tenant_valid(stenant) ||
        (seq && seq->type == JSMN_PRIMITIVE && !f.has_seq &&
         (buf[seq->start] == '-' || (buf[seq->start] >= '0' && buf[seq->start] <= '9')))) {
        rc = CM_EAGAIN; /* other events, a seq that is a number but not an integer */
        goto out;
    }
    rc = apply_event(ix, stenant, stype, NULL, NULL, &f, version, why, n);
    if (rc == CM_OK && time_ms && !(stm && search_parse_time(stm, time_ms) == CM_OK))
        *time_ms = -1;
out:
    if (buf != stack)
        free(buf);
    return rc;
}

cm_err search_index_copy(search_index *ix, const char *tenant, const char *path)
{
    sqlite3 *src = NULL, *dst = NULL;
    sqlite3_backup *bk = NULL;
    cm_err rc = search_index_open(ix, tenant, 0, &src);

    if (rc == CM_ENOTFOUND)
        return CM_OK; /* nothing to start from */
    if (rc != CM_OK)
        return rc;
    rc = CM_EIO;
    if (sqlite3_open_v2(path, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                        SQLITE_OPEN_NOMUTEX, NULL) == SQLITE_OK &&
        (bk = sqlite3_backup_init(dst, "main", src, "main")) != NULL &&
        sqlite3_backup_step(bk, -1) == SQLITE_DONE)
        rc = CM_OK;
    if (bk && sqlite3_backup_finish(bk) != SQLITE_OK)
        rc = CM_EIO;
    if (rc != CM_OK)
        cm_warn("search index %s: copy: %s", tenant, dst ? sqlite3_errmsg(dst) : "out of memory");
    sqlite3_close(dst);
    sqlite3_close(src);
    return rc;
}

cm_err search_index_replace(search_index *ix, const char *tenant, const char *path,
                            cm_err (*before)(void *ud), void *ud, search_index *rebuild)
{
    sqlite3 *src = NULL;
    sqlite3_backup *bk = NULL;
    sqlite3_stmt *st = NULL;
    char live[600];
    int slot = -1;
    cm_err rc;

    pthread_mutex_lock(&ix->lock);
    rc = writer(ix, tenant, &slot);
    if (rc != CM_OK || (rc = end_txn(ix, slot, 1)) != CM_OK || (rc = before(ud)) != CM_OK)
        goto out;
    (void)rebuild;
    rc = CM_EIO;
    if (!tenant_path(ix, tenant, live, sizeof(live)) ||
        sqlite3_open_v2(path, &src, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
            SQLITE_OK ||
        sqlite3_busy_timeout(src, 5000) != SQLITE_OK ||
        !schema_apply(src, NULL) ||
        sqlite3_prepare_v2(src, "ATTACH ? AS live", -1, &st, NULL) != SQLITE_OK)
        goto out;
    sqlite3_bind_text(st, 1, live, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE ||
        /* recent searches are no event: they are carried over */
        sqlite3_exec(src, "INSERT OR REPLACE INTO main.recent SELECT * FROM live.recent;"
                          "DETACH live", NULL, NULL, NULL) != SQLITE_OK)
        goto out;
    bk = sqlite3_backup_init(ix->db[slot], "main", src, "main");
    ix->cache[slot].erased = 0; /* the copied file's erased_users: looked at again */
    if (bk == NULL || sqlite3_backup_step(bk, -1) != SQLITE_DONE)
        goto out;
    rc = CM_OK;
out:
    if (bk && sqlite3_backup_finish(bk) != SQLITE_OK && rc == CM_OK)
        rc = CM_EIO;
    if (rc != CM_OK && slot >= 0)
        cm_warn("search index %s: replace: %s", tenant, sqlite3_errmsg(src ? src : ix->db[slot]));
    sqlite3_finalize(st);
    sqlite3_close(src);
    pthread_mutex_unlock(&ix->lock);
    return rc;
}

void search_index_batch_begin(search_index *ix)
{
    pthread_mutex_lock(&ix->lock);
    ix->batching = 1;
    pthread_mutex_unlock(&ix->lock);
}

cm_err search_index_batch_end(search_index *ix, int commit)
{
    cm_err rc = CM_OK;
    pthread_mutex_lock(&ix->lock);
    for (int i = 0; i < WRITERS_MAX; i++)
        if (end_txn(ix, i, commit) != CM_OK)
            rc = CM_EIO;
    ix->batching = 0;
    pthread_mutex_unlock(&ix->lock);
    return rc;
}

/* --- queries ------------------------------------------------------------------------------ */

cm_err search_index_open(search_index *ix, const char *tenant, int writable, sqlite3 **out)
{
    char path[600];
    sqlite3 *db = NULL;
    int version;

    *out = NULL;
    if (!search_tenant_valid(tenant) || !tenant_path(ix, tenant, path, sizeof(path)))
        return CM_EINVAL;
    if (!writable) {
        pthread_mutex_lock(&ix->pool_lock);
        for (int i = ix->npool - 1; i >= 0; i--)
            if (strcmp(ix->pool_tenant[i], tenant) == 0) {
                *out = ix->pool_db[i];
                ix->npool--;
                memcpy(ix->pool_tenant[i], ix->pool_tenant[ix->npool], SEARCH_ID_MAX);
                ix->pool_db[i] = ix->pool_db[ix->npool];
                break;
            }
        pthread_mutex_unlock(&ix->pool_lock);
        if (*out)
            return CM_OK;
    }
    if (!writable && access(path, F_OK) != 0)
        return CM_ENOTFOUND;
    /* A writer may come before the tenant's first event: it creates the file and schema. */
    if (sqlite3_open_v2(path, &db,
                        (writable ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
                                  : SQLITE_OPEN_READONLY) |
                            SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK ||
        sqlite3_busy_timeout(db, writable ? 5000 : 2000) != SQLITE_OK ||
        (writable && !schema_apply(db, NULL))) {
        cm_warn("search index %s: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return CM_EIO;
    }
    /* The writer that creates a tenant's file commits its schema (and user_version) in one
     * transaction after the file exists: a reader in between sees an empty database, which is
     * "nothing indexed yet", not an error (a search racing the tenant's first event). */
    if (!writable && (version = pragma_int(db, "PRAGMA user_version")) <= 0) {
        if (version < 0)
            cm_warn("search index %s: %s", path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return version < 0 ? CM_EIO : CM_ENOTFOUND;
    }
    *out = db;
    return CM_OK;
}

/* 1 when a statement of `db` is running (stepped, not yet reset or done). */
static int stmt_running(sqlite3 *db)
{
    for (sqlite3_stmt *st = sqlite3_next_stmt(db, NULL); st; st = sqlite3_next_stmt(db, st))
        if (sqlite3_stmt_busy(st))
            return 1;
    return 0;
}

void search_index_release(search_index *ix, const char *tenant, sqlite3 *db)
{
    if (db == NULL)
        return;
    /* Only idle read-only connections are kept (a reader holds no transaction between
     * statements: WAL shows it each commit of the writer). FTS5 keeps statements of its own
     * prepared on the connection (its %_config, %_docsize, content reads): idle is "no
     * statement running", not "no statement" (that test closed every connection that had
     * run a MATCH, so each query opened a new one and parsed the schema again: a third of
     * a newest-20 query's time). */
    if (sqlite3_db_readonly(db, "main") == 1 && sqlite3_get_autocommit(db) && !stmt_running(db)) {
        pthread_mutex_lock(&ix->pool_lock);
        if (ix->npool < READERS_MAX) {
            snprintf(ix->pool_tenant[ix->npool], SEARCH_ID_MAX, "%s", tenant);
            ix->pool_db[ix->npool++] = db;
            db = NULL;
        }
        pthread_mutex_unlock(&ix->pool_lock);
    }
    sqlite3_close(db);
}

void search_index_count_query(search_index *ix, int failed)
{
    atomic_fetch_add(failed ? &ix->query_errors : &ix->queries, 1);
}

void search_like_pattern(const char *term, char *out, size_t n)
{
    size_t at = 0;
    out[at++] = '%';
    for (const char *p = term; *p && at + 4 < n; p++) {
        if (*p == '%' || *p == '_' || *p == '\\')
            out[at++] = '\\';
        out[at++] = *p;
    }
    out[at++] = '%';
    out[at] = '\0';
}

/* A snippet of `text` marked like FTS5's (0x01 .. 0x02) around the occurrences of `term`
 * (empty: none) within a window of about 240 bytes; heap string, caller frees. */
static char *mark_substring(const char *text, const char *term)
{
    size_t len = strlen(text), tl = strlen(term), from = 0, to = len, at = 0;
    const char *hit = tl ? strstr(text, term) : NULL;
    char *out;

    if (hit && (size_t)(hit - text) > 80)
        from = (size_t)(hit - text) - 80;
    if (to - from > 240)
        to = from + 240;
    while (from > 0 && ((unsigned char)text[from] & 0xC0) == 0x80)
        from--;
    while (to < len && ((unsigned char)text[to] & 0xC0) == 0x80)
        to++;
    out = malloc(2 * (to - from) + 8);
    if (out == NULL)
        return NULL;
    if (from > 0)
        at += (size_t)snprintf(out + at, 4, "…");
    for (size_t i = from; i < to;) {
        if (tl && i + tl <= to && memcmp(text + i, term, tl) == 0) {
            out[at++] = 0x01;
            memcpy(out + at, term, tl);
            at += tl;
            out[at++] = 0x02;
            i += tl;
        } else {
            out[at++] = text[i++];
        }
    }
    if (to < len)
        at += (size_t)snprintf(out + at, 4, "…");
    out[at] = '\0';
    return out;
}

cm_err search_index_messages(search_index *ix, const char *tenant, const char *user,
                             const search_query *q, int newest, long offset, long limit,
                             cJSON *items, int *more)
{
    /* The words drive when there are some, else the CJK terms of 3+ characters (their snippet
     * highlights whole terms), else the short CJK ones (marked by mark_substring: FTS5 would
     * highlight the trigram at their position, one or two characters too many), else the
     * in:/from: ids (msg_ids), else the rid order of messages. With text terms, the ids are
     * only tested on the rows the text finds, as they were with the b-tree indexes of
     * schema 6 (a MATCH on msg_ids beside would collect every row of the conversation). */
    char conv_m[2 * SEARCH_ID_MAX + 32], sender_m[2 * SEARCH_ID_MAX + 32];
    char ids[sizeof(conv_m) + sizeof(sender_m) + 8];
    int has_conv = q->conversation[0] &&
                   search_id_match("conversation_id", q->conversation, conv_m, sizeof(conv_m));
    int has_sender = q->sender[0] && search_id_match("sender_id", q->sender, sender_m,
                                                     sizeof(sender_m));
    int ids_only = !q->words[0] && !q->subs[0] && (has_conv || has_sender);
    const char *fts = q->words[0] ? "msg_words" : q->subs[0] ? "msg_tri" : ids_only ? "msg_ids" : NULL;
    const char *match = q->words[0] ? q->words : q->tri[0] ? q->tri : q->subs[0] ? q->subs : ids;
    int own_snippet = ids_only || (!q->words[0] && !q->tri[0] && q->subs[0]);
    int subs_filter = q->words[0] ? q->subs[0] != 0 : q->tri[0] && q->nlikes;
    char sql[2048];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int w, b = 1, rows = 0, src;
    cm_err rc = CM_EIO;

    *more = 0;
    atomic_fetch_add(&ix->queries, 1);
    rc = search_index_open(ix, tenant, 0, &db);
    if (rc == CM_ENOTFOUND)
        return CM_OK; /* nothing indexed for this tenant yet */
    if (rc != CM_OK)
        return rc;
    rc = CM_EIO;
    snprintf(ids, sizeof(ids), "%s%s%s", has_conv ? conv_m : "",
             has_conv && has_sender ? " AND " : "", has_sender ? sender_m : "");
#define ADD(...)                                                                                \
    do {                                                                                        \
        int k_ = snprintf(sql + w, sizeof(sql) - (size_t)w, __VA_ARGS__);                       \
        if (k_ < 0 || (size_t)(w + k_) >= sizeof(sql))                                          \
            goto out;                                                                           \
        w += k_;                                                                                \
    } while (0)
    if (fts) {
        w = snprintf(sql, sizeof(sql),
                     "SELECT m.id, m.conversation_id, m.sender_id, m.seq, m.created_ms,"
                     " m.has_attachment, m.text,"
                     " %s%s%s"
                     " FROM %s JOIN messages m ON m.rid = %s.rowid"
                     " WHERE %s MATCH ? AND m.deleted = 0",
                     own_snippet ? "NULL" : "snippet(", own_snippet ? "" : fts,
                     own_snippet ? "" : ", 0, char(1), char(2), '…', 16)", fts, fts, fts);
        if (w <= 0 || (size_t)w >= sizeof(sql))
            goto out;
    } else {
        w = snprintf(sql, sizeof(sql),
                     "SELECT m.id, m.conversation_id, m.sender_id, m.seq, m.created_ms,"
                     " m.has_attachment, m.text, NULL FROM messages m WHERE m.deleted = 0");
    }
    /* The CJK terms of the words' query, or the short ones of a long CJK term's query (which
     * stay out of the driving MATCH for the sake of its highlights). */
    if (subs_filter)
        ADD(" AND m.rid IN (SELECT rowid FROM msg_tri WHERE msg_tri MATCH ?)");
    /* Who may see what (README.md): members see the whole history of their conversations;
     * after leaving, what was sent before they left. */
    ADD(" AND EXISTS (SELECT 1 FROM members mb WHERE mb.conversation_id = m.conversation_id"
        " AND mb.user_id = ? AND (mb.active = 1 OR m.created_eseq < mb.left_eseq))");
    /* the exact test of the ids (their MATCH also finds ids made of the same tokens) */
    if (q->conversation[0])
        ADD(" AND m.conversation_id = ?");
    if (q->sender[0])
        ADD(" AND m.sender_id = ?");
    /* with their rid windows (SEARCH_RID_WINDOW): no index on created_ms */
    if (q->from_ms)
        ADD(" AND m.rid >= %lld AND m.created_ms >= ?",
            (long long)(q->from_ms - RID_EPOCH) * RID_PER_MS);
    if (q->to_ms)
        ADD(" AND m.rid < %lld AND m.created_ms < ?",
            (long long)(q->to_ms - RID_EPOCH) * RID_PER_MS + SEARCH_RID_SPILL);
    if (q->has_attachment)
        ADD(" AND m.has_attachment = 1");
    /* Newest first is rid order (rid follows created_ms): FTS5 walks its rowids backwards
     * and stops after the page, instead of sorting every match. */
    if (fts && !newest && !ids_only)
        ADD(" ORDER BY bm25(%s), m.rid DESC LIMIT ? OFFSET ?", fts);
    else if (fts)
        ADD(" ORDER BY %s.rowid DESC LIMIT ? OFFSET ?", fts);
    else
        ADD(" ORDER BY m.rid DESC LIMIT ? OFFSET ?");
#undef ADD
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        cm_warn("search query: %s", sqlite3_errmsg(db));
        goto out;
    }
    if (fts)
        sqlite3_bind_text(st, b++, match, -1, SQLITE_STATIC);
    if (subs_filter)
        sqlite3_bind_text(st, b++, q->subs, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, b++, user, -1, SQLITE_STATIC);
    if (q->conversation[0])
        sqlite3_bind_text(st, b++, q->conversation, -1, SQLITE_STATIC);
    if (q->sender[0])
        sqlite3_bind_text(st, b++, q->sender, -1, SQLITE_STATIC);
    if (q->from_ms)
        sqlite3_bind_int64(st, b++, q->from_ms);
    if (q->to_ms)
        sqlite3_bind_int64(st, b++, q->to_ms);
    sqlite3_bind_int64(st, b++, limit + 1);
    sqlite3_bind_int64(st, b++, offset);
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        char when[CM_RFC3339_LEN];
        const char *snip = (const char *)sqlite3_column_text(st, 7);
        char *own = NULL;
        cJSON *it, *sj;
        if (rows++ == limit) {
            *more = 1;
            break;
        }
        it = cJSON_CreateObject();
        if (it == NULL || !cJSON_AddItemToArray(items, it)) {
            cJSON_Delete(it);
            rc = CM_ENOMEM;
            goto out;
        }
        cJSON_AddStringToObject(it, "id", (const char *)sqlite3_column_text(st, 0));
        cJSON_AddStringToObject(it, "conversation_id", (const char *)sqlite3_column_text(st, 1));
        cJSON_AddStringToObject(it, "sender_id", (const char *)sqlite3_column_text(st, 2));
        cJSON_AddNumberToObject(it, "seq", (double)sqlite3_column_int64(st, 3));
        cm_clock_rfc3339(sqlite3_column_int64(st, 4), when);
        cJSON_AddStringToObject(it, "created_at", when);
        cJSON_AddBoolToObject(it, "has_attachment", sqlite3_column_int(st, 5));
        cJSON_AddStringToObject(it, "text", (const char *)sqlite3_column_text(st, 6));
        if (snip == NULL)
            snip = own = mark_substring((const char *)sqlite3_column_text(st, 6),
                                        q->nlikes ? q->likes[0] : "");
        sj = snip ? search_snippet_json(snip) : NULL;
        free(own);
        if (sj == NULL) {
            rc = CM_ENOMEM;
            goto out;
        }
        cJSON_AddItemToObject(it, "snippet", sj);
    }
    if (src != SQLITE_ROW && src != SQLITE_DONE) {
        cm_warn("search query: %s", sqlite3_errmsg(db));
        goto out;
    }
    rc = CM_OK;
out:
    if (rc != CM_OK)
        atomic_fetch_add(&ix->query_errors, 1);
    sqlite3_finalize(st);
    search_index_release(ix, tenant, db);
    return rc;
}

void search_index_metrics(search_index *ix, void (*emit)(void *ctx, const char *text), void *ctx)
{
    char buf[1024];
    snprintf(buf, sizeof(buf),
             "# HELP search_events_applied_total Events that changed the index.\n"
             "# TYPE search_events_applied_total counter\n"
             "search_events_applied_total %ld\n"
             "# HELP search_events_duplicate_total Events the index already held (by eseq).\n"
             "# TYPE search_events_duplicate_total counter\n"
             "search_events_duplicate_total %ld\n"
             "# HELP search_queries_total Message searches run.\n"
             "# TYPE search_queries_total counter\n"
             "search_queries_total %ld\n"
             "# HELP search_query_errors_total Message searches that failed in SQLite.\n"
             "# TYPE search_query_errors_total counter\n"
             "search_query_errors_total %ld\n",
             atomic_load(&ix->applied), atomic_load(&ix->duplicates), atomic_load(&ix->queries),
             atomic_load(&ix->query_errors));
    emit(ctx, buf);
}
