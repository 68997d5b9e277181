/* search_reindex.c - POST /v1/search/reindex and GET /v1/search/reindex/{id}: a tenant admin
 * rebuilds the tenant's index by replaying the topics messages, conversations and users from
 * their first retained record into a new file, while the live index keeps serving; when the
 * replay has caught up, the new file replaces the live one (SQLite's online backup, under the
 * index lock, after a last catch-up), and the job's progress can be polled meanwhile.
 *
 * Jobs survive a restart: each job's state and progress are kept in SQLite
 * (SEARCH_DATA_DIR/_reindex-jobs.db; '_' cannot start a tenant's file name), written when it
 * starts, after each rebuild batch and when it ends. A job still running at a shutdown keeps its
 * rebuild directory and its consumer group (offsets committed by the shutdown); the next
 * process resumes it from there (search_reindexer_resume): events are applied idempotently
 * by eseq, so records read again after a crash change nothing. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/httpc.h"
#include "common/internal.h"
#include "common/json.h"
#include "common/log.h"
#include "common/uuid.h"
#include "search.h"

#define JOBS_MAX 32        /* jobs remembered (running or finished), oldest finished dropped */
#define POLL_MS 500        /* one poll of the replay consumer */
#define BATCH 500          /* records per rebuild transaction */
#define QUIET_POLLS 2      /* empty polls at lag 0 that mean "caught up" */
#define BACKFILL_PAGE 500  /* events per page of the messaging service's export */
#define BACKFILL_TIMEOUT_MS 30000 /* one page */
#define BACKFILL_MAX_BYTES (64L << 20) /* one page's body */
#define STR_(x) #x
#define STR(x) STR_(x)

typedef enum { JOB_RUNNING, JOB_DONE, JOB_FAILED } job_state;

typedef struct job {
    char id[CM_UUID_STRLEN];
    char tenant[SEARCH_ID_MAX];
    char dir[600]; /* the rebuild's own index directory */
    _Atomic job_state state;
    atomic_int phase; /* 0 replaying, 1 swapping */
    atomic_int merge; /* the topics lost records to retention: replay onto a copy of live */
    atomic_llong dropped;
    atomic_llong total, read, applied, started_ms, finished_ms;
    char error[256];
    int joined;
    pthread_t thread;
    search_ctx *ctx;
    search_index *rebuild;
    cm_kafka_consumer *consumer;
    atomic_int stop;
    int resume; /* loaded as running from the store: resumed by search_reindexer_resume */
    atomic_int backfill; /* read the messaging service's conversation logs before the topics */
    atomic_llong backfilled; /* events read from them */
} job;

struct search_reindexer {
    pthread_mutex_t lock;
    job *jobs[JOBS_MAX];
    char brokers[512], prefix[128], group[128], dir[512];
    char messaging_url[512]; /* "" : no backfill */
    pthread_mutex_t store_lock;
    sqlite3 *store; /* the jobs' state (module comment) */
};

static const char STORE_SCHEMA[] =
    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS jobs(id TEXT PRIMARY KEY, tenant TEXT NOT NULL,"
    " state INTEGER NOT NULL, merge INTEGER NOT NULL, dropped INTEGER NOT NULL,"
    " total INTEGER NOT NULL, read INTEGER NOT NULL, applied INTEGER NOT NULL,"
    " started_ms INTEGER NOT NULL, finished_ms INTEGER NOT NULL, error TEXT NOT NULL,"
    " backfill INTEGER NOT NULL, backfilled INTEGER NOT NULL)";

/* Writes job j's state and progress to the store. A failure is logged: the job goes on (only
 * its progress after a restart would be older). */
static void store_save(search_reindexer *r, const job *j)
{
    static const char SQL[] = "INSERT OR REPLACE INTO jobs VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7,"
                              " ?8, ?9, ?10, ?11, ?12, ?13)";
    sqlite3_stmt *st = NULL;

    pthread_mutex_lock(&r->store_lock);
    if (sqlite3_prepare_v2(r->store, SQL, -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, j->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, j->tenant, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, (int)atomic_load(&j->state));
        sqlite3_bind_int(st, 4, atomic_load(&j->merge));
        sqlite3_bind_int64(st, 5, atomic_load(&j->dropped));
        sqlite3_bind_int64(st, 6, atomic_load(&j->total));
        sqlite3_bind_int64(st, 7, atomic_load(&j->read));
        sqlite3_bind_int64(st, 8, atomic_load(&j->applied));
        sqlite3_bind_int64(st, 9, atomic_load(&j->started_ms));
        sqlite3_bind_int64(st, 10, atomic_load(&j->finished_ms));
        sqlite3_bind_text(st, 11, j->error, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 12, atomic_load(&j->backfill));
        sqlite3_bind_int64(st, 13, atomic_load(&j->backfilled));
    }
    if (st == NULL || sqlite3_step(st) != SQLITE_DONE)
        cm_warn("search reindex %s: saving its state: %s", j->id, sqlite3_errmsg(r->store));
    sqlite3_finalize(st);
    pthread_mutex_unlock(&r->store_lock);
}

/* Loads the newest JOBS_MAX jobs of the store; those that were running are flagged for
 * search_reindexer_resume. CM_EIO when the store cannot be read. */
static cm_err store_load(search_reindexer *r)
{
    sqlite3_stmt *st = NULL;
    int n = 0, src;

    /* the store keeps what memory keeps: older jobs are forgotten */
    if (sqlite3_exec(r->store, "DELETE FROM jobs WHERE id NOT IN (SELECT id FROM jobs ORDER BY"
                               " started_ms DESC LIMIT " STR(JOBS_MAX) ")",
                     NULL, NULL, NULL) != SQLITE_OK)
        return CM_EIO;
    if (sqlite3_prepare_v2(r->store, "SELECT id, tenant, state, merge, dropped, total, read,"
                                     " applied, started_ms, finished_ms, error, backfill,"
                                     " backfilled FROM jobs"
                                     " ORDER BY started_ms DESC LIMIT " STR(JOBS_MAX),
                           -1, &st, NULL) != SQLITE_OK)
        return CM_EIO;
    while ((src = sqlite3_step(st)) == SQLITE_ROW && n < JOBS_MAX) {
        job *j = calloc(1, sizeof(*j));
        const char *id = (const char *)sqlite3_column_text(st, 0),
                   *tenant = (const char *)sqlite3_column_text(st, 1);
        int state = sqlite3_column_int(st, 2);
        if (j == NULL)
            break;
        if (id == NULL || tenant == NULL || strlen(id) >= sizeof(j->id) ||
            !search_tenant_valid(tenant) || state < JOB_RUNNING || state > JOB_FAILED) {
            free(j); /* not a row this file wrote */
            continue;
        }
        snprintf(j->id, sizeof(j->id), "%s", id);
        snprintf(j->tenant, sizeof(j->tenant), "%s", tenant);
        snprintf(j->dir, sizeof(j->dir), "%s/reindex-%s", r->dir, j->id);
        atomic_store(&j->state, (job_state)state);
        atomic_store(&j->merge, sqlite3_column_int(st, 3));
        atomic_store(&j->dropped, sqlite3_column_int64(st, 4));
        atomic_store(&j->total, sqlite3_column_int64(st, 5));
        atomic_store(&j->read, sqlite3_column_int64(st, 6));
        atomic_store(&j->applied, sqlite3_column_int64(st, 7));
        atomic_store(&j->started_ms, sqlite3_column_int64(st, 8));
        atomic_store(&j->finished_ms, sqlite3_column_int64(st, 9));
        snprintf(j->error, sizeof(j->error), "%s", (const char *)sqlite3_column_text(st, 10));
        atomic_store(&j->backfill, sqlite3_column_int(st, 11));
        atomic_store(&j->backfilled, sqlite3_column_int64(st, 12));
        j->joined = 1; /* no thread yet */
        j->resume = state == JOB_RUNNING;
        r->jobs[n++] = j;
    }
    sqlite3_finalize(st);
    return src == SQLITE_ROW || src == SQLITE_DONE ? CM_OK : CM_EIO;
}

cm_err search_reindexer_create(const char *brokers, const char *prefix, const char *group,
                               const char *dir, const char *messaging_url,
                               search_reindexer **out)
{
    search_reindexer *r = calloc(1, sizeof(*r));
    char path[600];
    char *err = NULL;

    if (r == NULL)
        return CM_ENOMEM;
    snprintf(r->brokers, sizeof(r->brokers), "%s", brokers);
    snprintf(r->prefix, sizeof(r->prefix), "%s", prefix);
    snprintf(r->group, sizeof(r->group), "%s", group);
    snprintf(r->dir, sizeof(r->dir), "%s", dir);
    snprintf(r->messaging_url, sizeof(r->messaging_url), "%s", messaging_url ? messaging_url : "");
    pthread_mutex_init(&r->lock, NULL);
    pthread_mutex_init(&r->store_lock, NULL);
    if (snprintf(path, sizeof(path), "%s/_reindex-jobs.db", dir) >= (int)sizeof(path) ||
        sqlite3_open_v2(path, &r->store, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                             SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK ||
        sqlite3_busy_timeout(r->store, 5000) != SQLITE_OK ||
        sqlite3_exec(r->store, STORE_SCHEMA, NULL, NULL, &err) != SQLITE_OK ||
        store_load(r) != CM_OK) {
        cm_error("search reindex jobs %s: %s", path,
                 err ? err : r->store ? sqlite3_errmsg(r->store) : "out of memory");
        sqlite3_free(err);
        search_reindexer_destroy(r);
        return CM_EIO;
    }
    *out = r;
    return CM_OK;
}

static void job_free(job *j)
{
    if (j == NULL)
        return;
    if (!j->joined)
        pthread_join(j->thread, NULL);
    free(j);
}

void search_reindexer_destroy(search_reindexer *r)
{
    if (r == NULL)
        return;
    for (int i = 0; i < JOBS_MAX; i++)
        if (r->jobs[i])
            atomic_store(&r->jobs[i]->stop, 1);
    for (int i = 0; i < JOBS_MAX; i++)
        job_free(r->jobs[i]);
    sqlite3_close(r->store);
    pthread_mutex_destroy(&r->store_lock);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

/* Removes the rebuild directory and what is in it (<tenant>.db and its -wal/-shm). */
static void remove_dir(const job *j)
{
    static const char *const SUFFIX[] = {".db", ".db-wal", ".db-shm"};
    char path[700];
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/%s%s", j->dir, j->tenant, SUFFIX[i]);
        unlink(path);
    }
    rmdir(j->dir);
}

/* Applies one replayed record to the rebuild when it is one of the job's tenant's indexable
 * events; everything else (other tenants, other types, poison records, which the live indexer
 * dead-letters) is skipped. */
static cm_err replay_one(const cm_kafka_record *rec, void *ud)
{
    job *j = ud;
    char why[256];
    cJSON *ev = NULL;
    const char *tenant, *type;
    cm_err rc = CM_OK;

    atomic_fetch_add(&j->read, 1);
    if (cm_json_parse(rec->value, rec->value_len, 32, &ev, why, sizeof(why)) != CM_OK)
        return CM_OK;
    tenant = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ev, "tenant"));
    type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ev, "type"));
    if (tenant && type && strcmp(tenant, j->tenant) == 0 && search_indexable(type)) {
        rc = search_index_apply(j->rebuild, ev, why, sizeof(why));
        if (rc == CM_EINVAL)
            rc = CM_OK; /* the live indexer dead-lettered it */
        else if (rc == CM_OK)
            atomic_fetch_add(&j->applied, 1);
    }
    cJSON_Delete(ev);
    return rc;
}

static cm_err replay_batch(const cm_kafka_record *recs, size_t n, void *ud)
{
    job *j = ud;
    cm_err rc = CM_OK;
    search_index_batch_begin(j->rebuild);
    for (size_t i = 0; i < n && rc == CM_OK; i++)
        rc = replay_one(&recs[i], j);
    if (search_index_batch_end(j->rebuild, rc == CM_OK) != CM_OK && rc == CM_OK)
        rc = CM_EIO;
    if (rc == CM_OK)
        store_save(j->ctx->reindexer, j); /* progress, for a restart */
    return rc;
}

/* Polls until the replay has read everything the topics hold (lag 0 and QUIET_POLLS empty
 * polls in a row). The total is the largest lag seen, for the progress. */
static cm_err catch_up(job *j)
{
    int quiet = 0;
    while (!atomic_load(&j->stop)) {
        int64_t lag;
        cm_err rc = cm_kafka_consumer_poll_batch(j->consumer, POLL_MS, BATCH, replay_batch, j);
        if (rc != CM_OK && rc != CM_EAGAIN)
            return rc;
        lag = cm_kafka_consumer_lag(j->consumer);
        if (lag >= 0 && lag + atomic_load(&j->read) > atomic_load(&j->total))
            atomic_store(&j->total, lag + atomic_load(&j->read));
        quiet = (rc == CM_EAGAIN && lag == 0) ? quiet + 1 : 0;
        if (quiet >= QUIET_POLLS)
            return CM_OK;
    }
    return CM_ETIMEOUT; /* stopped by shutdown */
}

/* Applies one page's events (an array of CloudEvents) of the job's tenant to the rebuild, in
 * one batch. */
static cm_err backfill_page(job *j, const cJSON *items)
{
    const cJSON *ev;
    char why[256];
    cm_err rc = CM_OK;

    search_index_batch_begin(j->rebuild);
    cJSON_ArrayForEach(ev, items)
    {
        const char *tenant = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ev, "tenant")),
                   *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ev, "type"));
        atomic_fetch_add(&j->backfilled, 1);
        if (!tenant || !type || strcmp(tenant, j->tenant) != 0 || !search_indexable(type))
            continue;
        rc = search_index_apply(j->rebuild, ev, why, sizeof(why));
        if (rc == CM_EINVAL)
            rc = CM_OK; /* as the live indexer, which dead-letters it */
        else if (rc == CM_OK)
            atomic_fetch_add(&j->applied, 1);
        if (rc != CM_OK)
            break;
    }
    if (search_index_batch_end(j->rebuild, rc == CM_OK) != CM_OK && rc == CM_OK)
        rc = CM_EIO;
    return rc;
}

/* The backfill: every page of the messaging service's export of the tenant's conversation
 * logs (GET /internal/v1/messaging/events), which keeps the history the topics' retention
 * dropped, applied to the rebuild before the topics are replayed. Events apply idempotently
 * by eseq in any order, so the replay that follows and a resumed job's second backfill change
 * nothing they already hold. */
static cm_err backfill(job *j)
{
    search_reindexer *r = j->ctx->reindexer;
    char url[1024], *body = NULL, cursor[128] = "";
    cm_err rc = CM_OK;

    atomic_store(&j->backfilled, 0);
    while (rc == CM_OK && !atomic_load(&j->stop)) {
        size_t len;
        long status;
        cJSON *page = NULL;
        const char *next;
        int w = snprintf(url, sizeof(url),
                         "%s/internal/v1/messaging/events?tenant=%s&limit=" STR(BACKFILL_PAGE)
                         "%s%s",
                         r->messaging_url, j->tenant, cursor[0] ? "&after=" : "", cursor);
        if (w <= 0 || (size_t)w >= sizeof(url))
            return CM_EINVAL;
        rc = cm_httpc_get_with(url, cm_internal_key_header(), BACKFILL_TIMEOUT_MS, BACKFILL_MAX_BYTES, &body, &len, &status);
        if (rc != CM_OK)
            break;
        if (status != 200 || (page = cJSON_ParseWithLength(body, len)) == NULL ||
            !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(page, "items"))) {
            cm_warn("search reindex %s: backfill: messaging answered %ld", j->id, status);
            rc = CM_EIO;
        }
        free(body);
        body = NULL;
        if (rc == CM_OK)
            rc = backfill_page(j, cJSON_GetObjectItemCaseSensitive(page, "items"));
        next = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(page, "next_cursor"));
        /* cursors are event ids (UUIDs): nothing in them needs escaping in a query */
        if (rc == CM_OK && next && strlen(next) < sizeof(cursor) && strspn(next,
                "0123456789abcdefABCDEF-") == strlen(next))
            snprintf(cursor, sizeof(cursor), "%s", next);
        else if (rc == CM_OK && next)
            rc = CM_EIO;
        else if (rc == CM_OK)
            cursor[0] = '\0';
        cJSON_Delete(page);
        store_save(r, j);
        if (rc == CM_OK && cursor[0] == '\0')
            return CM_OK; /* the last page */
    }
    return rc != CM_OK ? rc : CM_ETIMEOUT; /* stopped by a shutdown */
}

/* Runs under the live index's lock, right before the swap: the last records, which the live
 * indexer may have applied to the old file meanwhile, go into the rebuild too. */
static cm_err last_catch_up(void *ud)
{
    job *j = ud;
    cm_err rc;
    atomic_store(&j->phase, 1);
    rc = catch_up(j);
    return rc;
}

static void *run(void *arg)
{
    job *j = arg;
    static const char *const topics[] = {"messages", "conversations", "users"};
    char group[256], path[700];
    search_reindexer *r = j->ctx->reindexer;
    cm_err rc;

    snprintf(group, sizeof(group), "%s-reindex-%s", r->group, j->id);
    snprintf(path, sizeof(path), "%s/%s.db", j->dir, j->tenant);
    /* A resumed job's group goes on from its committed offsets, into the rebuild it left. */
    rc = cm_kafka_consumer_create(r->brokers, r->prefix, group, topics, 3, 1, &j->consumer);
    if (rc == CM_OK && j->resume && access(j->dir, F_OK) == 0) {
        cm_info("search reindex %s of tenant %s: resumed after %lld records", j->id, j->tenant,
                (long long)atomic_load(&j->read));
        goto replay;
    }
    atomic_store(&j->read, 0); /* a resumed job whose rebuild is gone starts over */
    atomic_store(&j->applied, 0);
    atomic_store(&j->total, 0);
    atomic_store(&j->dropped, 0);
    /* Do the topics still hold every record ever written? If retention dropped some, a
     * rebuild from nothing would lose that history: replay onto a copy of the live index
     * instead, which restores what the live index lost or missed within the retention and
     * keeps what is older. */
    for (int i = 0; i < 3 && rc == CM_OK; i++) {
        int64_t dropped = 0, retained = 0;
        rc = cm_kafka_topic_watermarks(j->consumer, topics[i], 10000, &dropped, &retained);
        atomic_fetch_add(&j->dropped, dropped);
        atomic_fetch_add(&j->total, retained); /* what the replay will read, as of now */
    }
    if (rc == CM_OK && mkdir(j->dir, 0750) != 0)
        rc = CM_EIO;
    if (rc == CM_OK && atomic_load(&j->dropped) > 0) {
        atomic_store(&j->merge, 1);
        /* what the topics lost, the messaging service's logs still hold */
        if (r->messaging_url[0])
            atomic_store(&j->backfill, 1);
        rc = search_index_copy(j->ctx->index, j->tenant, path);
    }
    store_save(r, j);
replay:
    if (rc == CM_OK)
        rc = search_index_create(j->dir, &j->rebuild);
    if (rc == CM_OK && atomic_load(&j->backfill))
        rc = backfill(j);
    if (rc == CM_OK)
        rc = catch_up(j);
    if (rc == CM_OK)
        rc = search_index_replace(j->ctx->index, j->tenant, path, last_catch_up, j,
                                  j->rebuild);
    if (rc != CM_OK && atomic_load(&j->stop)) {
        /* a shutdown: the job stays running in the store, its rebuild and its group's
         * offsets (committed by the consumer's destroy) are where the next process resumes */
        cm_kafka_consumer_destroy(j->consumer);
        j->consumer = NULL;
        search_index_destroy(j->rebuild);
        j->rebuild = NULL;
        store_save(r, j);
        cm_info("search reindex %s of tenant %s: paused by the shutdown after %lld records",
                j->id, j->tenant, (long long)atomic_load(&j->read));
        return NULL;
    }
    if (rc == CM_OK) {
        atomic_store(&j->state, JOB_DONE);
        cm_info("search reindex %s of tenant %s: done, %lld records read, %lld events applied",
                j->id, j->tenant, (long long)atomic_load(&j->read),
                (long long)atomic_load(&j->applied));
    } else {
        snprintf(j->error, sizeof(j->error), "%s (the live index is unchanged)",
                 cm_strerror(rc));
        atomic_store(&j->state, JOB_FAILED);
        cm_warn("search reindex %s of tenant %s failed: %s", j->id, j->tenant, cm_strerror(rc));
    }
    cm_kafka_consumer_destroy(j->consumer);
    j->consumer = NULL;
    search_index_destroy(j->rebuild);
    j->rebuild = NULL;
    remove_dir(j);
    atomic_store(&j->finished_ms, cm_clock_now_ms());
    store_save(r, j);
    return NULL;
}

static cJSON *job_json(const job *j)
{
    static const char *const STATE[] = {"running", "done", "failed"};
    char when[CM_RFC3339_LEN];
    cJSON *o = cJSON_CreateObject();
    long long total = atomic_load(&j->total), read = atomic_load(&j->read);
    job_state st = atomic_load(&j->state);

    if (o == NULL)
        return NULL;
    cJSON_AddStringToObject(o, "id", j->id);
    cJSON_AddStringToObject(o, "status", STATE[st]);
    cJSON_AddStringToObject(o, "phase", st != JOB_RUNNING ? STATE[st]
                                        : atomic_load(&j->phase) ? "swapping"
                                                                 : "replaying");
    cJSON_AddStringToObject(o, "mode", atomic_load(&j->merge) ? "merge" : "full");
    cJSON_AddNumberToObject(o, "records_dropped", (double)atomic_load(&j->dropped));
    cJSON_AddNumberToObject(o, "records_read", (double)read);
    cJSON_AddNumberToObject(o, "records_total", (double)total);
    cJSON_AddNumberToObject(o, "events_applied", (double)atomic_load(&j->applied));
    cJSON_AddBoolToObject(o, "backfill", atomic_load(&j->backfill));
    cJSON_AddNumberToObject(o, "events_backfilled", (double)atomic_load(&j->backfilled));
    cJSON_AddNumberToObject(o, "progress", st == JOB_DONE             ? 1.0
                                           : total > 0 && read < total ? (double)read / (double)total
                                           : total > 0                 ? 0.999
                                                                       : 0.0);
    cm_clock_rfc3339(atomic_load(&j->started_ms), when);
    cJSON_AddStringToObject(o, "started_at", when);
    if (atomic_load(&j->finished_ms)) {
        cm_clock_rfc3339(atomic_load(&j->finished_ms), when);
        cJSON_AddStringToObject(o, "finished_at", when);
    } else {
        cJSON_AddNullToObject(o, "finished_at");
    }
    if (st == JOB_FAILED)
        cJSON_AddStringToObject(o, "error", j->error);
    return o;
}

static int admin(cm_http_req *req, search_ctx *ctx, cm_jwt_claims *c)
{
    return search_authenticate(req, ctx, c, "tenant.manage",
                               "reindexing is for the tenant's admins (permission tenant.manage)");
}

/* POST /v1/search/reindex */
void search_reindex_start(cm_http_req *req, void *ud)
{
    search_ctx *ctx = ud;
    search_reindexer *r = ctx->reindexer;
    cm_jwt_claims c;
    job *j = NULL;
    int slot = -1, want_backfill = 0;
    char loc[128];
    size_t blen = 0;

    if (!admin(req, ctx, &c))
        return;
    /* optional body {"backfill": true}: read the messaging service's logs too, whatever the
     * topics hold (merge mode does it by itself) */
    cm_http_body(req, &blen);
    if (blen > 0) {
        cJSON *body, *b;
        if (cm_http_json_body(req, &body) != CM_OK)
            return;
        b = cJSON_GetObjectItemCaseSensitive(body, "backfill");
        if (b && !cJSON_IsBool(b)) {
            cm_http_reply_error(req, CM_EINVAL, "backfill must be true or false");
            return;
        }
        want_backfill = cJSON_IsTrue(b);
        if (want_backfill && r->messaging_url[0] == '\0') {
            cm_http_reply_error(req, CM_EINVAL, "backfill needs the messaging service "
                                                "(MESSAGING_URL is empty here)");
            return;
        }
    }
    pthread_mutex_lock(&r->lock);
    for (int i = 0; i < JOBS_MAX; i++) {
        job *o = r->jobs[i];
        if (o && strcmp(o->tenant, c.tid) == 0 && atomic_load(&o->state) == JOB_RUNNING) {
            pthread_mutex_unlock(&r->lock);
            cm_http_problem(req, 409, "conflict", "Reindex under way",
                            "reindex %s of this tenant is still running", o->id);
            return;
        }
    }
    /* a free slot, or the one of the oldest finished job */
    for (int i = 0; i < JOBS_MAX && slot < 0; i++)
        if (r->jobs[i] == NULL)
            slot = i;
    for (int i = 0; i < JOBS_MAX && slot < 0; i++)
        if (atomic_load(&r->jobs[i]->state) != JOB_RUNNING &&
            (slot < 0 || r->jobs[i]->finished_ms < r->jobs[slot]->finished_ms))
            slot = i;
    if (slot < 0) {
        pthread_mutex_unlock(&r->lock);
        cm_http_reply_error(req, CM_ELIMIT, "too many reindex jobs are running");
        return;
    }
    j = calloc(1, sizeof(*j));
    if (j == NULL || cm_uuid_v7(j->id) != CM_OK) {
        pthread_mutex_unlock(&r->lock);
        free(j);
        cm_http_reply_error(req, CM_ENOMEM, NULL);
        return;
    }
    /* search_tenant_valid(c.tid) held: it fits; the directory name is checked */
    if (snprintf(j->tenant, sizeof(j->tenant), "%s", c.tid) >= (int)sizeof(j->tenant) ||
        snprintf(j->dir, sizeof(j->dir), "%s/reindex-%s", r->dir, j->id) >= (int)sizeof(j->dir)) {
        pthread_mutex_unlock(&r->lock);
        free(j);
        cm_http_reply_error(req, CM_EINVAL, "SEARCH_DATA_DIR is too long for a job directory");
        return;
    }
    j->ctx = ctx;
    atomic_store(&j->backfill, want_backfill);
    atomic_store(&j->started_ms, cm_clock_now_ms());
    store_save(r, j);
    if (pthread_create(&j->thread, NULL, run, j) != 0) {
        pthread_mutex_unlock(&r->lock);
        free(j);
        cm_http_reply_error(req, CM_EIO, "the job could not be started");
        return;
    }
    job_free(r->jobs[slot]);
    r->jobs[slot] = j;
    snprintf(loc, sizeof(loc), "/v1/search/reindex/%s", j->id);
    cm_http_add_header(req, "Location", loc);
    cm_http_reply_json(req, 202, job_json(j));
    pthread_mutex_unlock(&r->lock);
}

/* GET /v1/search/reindex/{id} */
void search_reindex_get(cm_http_req *req, void *ud)
{
    search_ctx *ctx = ud;
    search_reindexer *r = ctx->reindexer;
    const char *id = cm_http_param(req, "id");
    cm_jwt_claims c;
    cJSON *body = NULL;

    if (!admin(req, ctx, &c))
        return;
    pthread_mutex_lock(&r->lock);
    for (int i = 0; i < JOBS_MAX && body == NULL; i++)
        if (r->jobs[i] && id && strcmp(r->jobs[i]->id, id) == 0 &&
            strcmp(r->jobs[i]->tenant, c.tid) == 0) /* another tenant's job: 404 */
            body = job_json(r->jobs[i]);
    pthread_mutex_unlock(&r->lock);
    if (body == NULL) {
        cm_http_reply_error(req, CM_ENOTFOUND, "no such reindex job (the newest "
                                               STR(JOBS_MAX) " jobs are kept)");
        return;
    }
    cm_http_add_header(req, "Cache-Control", "no-store");
    cm_http_reply_json(req, 200, body);
}

cm_err search_reindexer_resume(search_ctx *ctx)
{
    search_reindexer *r = ctx->reindexer;
    cm_err rc = CM_OK;

    pthread_mutex_lock(&r->lock);
    for (int i = 0; i < JOBS_MAX; i++) {
        job *j = r->jobs[i];
        if (j == NULL || !j->resume)
            continue;
        j->ctx = ctx;
        if (pthread_create(&j->thread, NULL, run, j) != 0) {
            snprintf(j->error, sizeof(j->error), "could not be resumed after a restart");
            atomic_store(&j->state, JOB_FAILED);
            atomic_store(&j->finished_ms, cm_clock_now_ms());
            store_save(r, j);
            rc = CM_EIO;
            continue;
        }
        j->joined = 0;
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}
