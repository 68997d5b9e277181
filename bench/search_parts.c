/* search_parts.c - where the search index's indexing time goes, next to raw SQLite FTS5 in
 * the same run (make bench-search-parts): the rows of the corpus inserted, 500 per transaction,
 * batch by batch interleaved (raw, then each variant, ...), into
 *   raw      the peer of search_bench.c: two FTS5 tables with content of their own
 *            (unicode61 remove_diacritics 2 prefix '2 3'; trigram), rowid = line number;
 *   sql      the index's own schema (a tenant file created by search_index_open, so it
 *            cannot drift from services/search/search_index.c) written with plain INSERTs:
 *            the messages row (by rid alone), then msg_words, msg_tri (trigram_cjk) and
 *            msg_ids (conversation and sender ids) as apply_message writes them; no JSON;
 *   v6       sql with the schema of version 6: a unique index on the message id, and
 *            conversation and sender as b-tree indexes of messages instead of msg_ids (FTS5
 *            batches its writes per transaction; b-trees write per row);
 *   noids    sql without msg_ids: what the ids cost;
 *   plaintri sql with SQLite's plain trigram tokenizer on msg_tri (no CJK unigrams/bigrams);
 *   2files   sql with msg_tri moved to a second file (its own text table, rid, eseq and
 *            sender, as an idempotent replica would need) written by a second thread while
 *            the first writes messages and msg_words; the batch ends when both committed;
 *   real     the service's code path: each text a message.created CloudEvent (JSON text),
 *            read by search_index_apply_text (the cJSON tree and search_index_apply when it
 *            declines) in a batch, as search_bench.c and the indexer do.
 * The variants are measurements of what each part costs, not options the service offers.
 * Per variant: CPU seconds of the threads that did its work, wall seconds, and both as a
 * ratio to raw (texts per second, ours / raw; above 1 is faster than raw).
 *
 * Usage: search_parts CORPUS WORKDIR [TEXTS]
 *   CORPUS   one text per line (UTF-8); the first TEXTS lines (default 100000) are used
 *   WORKDIR  an empty directory for the databases */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cJSON.h>
#include <sqlite3.h>

#include "common/clock.h"
#include "common/log.h"
#include "search.h"
#include "bench_clock.h"

/* Raw FTS5's connection opened as the index opens its writers (search_index.c): no mutex of
 * its own (one thread uses it), so neither side pays SQLite's per-call locking. */
#define RAW_OPEN (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX)

#define BATCH 500
#define CONVERSATIONS 100
#define TENANT_PREFIX "parts-"

static char **texts;
static size_t ntexts;

static void must(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "search_parts: %s: %s\n", sql, err ? err : sqlite3_errmsg(db));
        exit(1);
    }
}

/* One writer: a connection, its INSERTs in order, the CPU seconds spent. */
typedef struct writer {
    sqlite3 *db;
    sqlite3_stmt *st[4];
    int nst;
    double cpu;
} writer;

static void add_stmt(writer *w, const char *sql)
{
    if (sqlite3_prepare_v2(w->db, sql, -1, &w->st[w->nst++], NULL) != SQLITE_OK) {
        fprintf(stderr, "search_parts: %s: %s\n", sql, sqlite3_errmsg(w->db));
        exit(1);
    }
}

/* Line i as the bench's message: id "m<i>", conversation c<i % 100>, sender "writer",
 * created 1700000000000 + i ms, seq i / 100; rid as search_index.c numbers it. */
#define CREATED_MS(i) (1700000000000LL + (int64_t)(i))
#define RID(i)                                                                             \
    ((CREATED_MS(i) - SEARCH_RID_EPOCH_MS) * SEARCH_RID_PER_MS +                           \
     (int64_t)((i) / CONVERSATIONS + 1) % SEARCH_RID_PER_MS)

/* Binds by parameter name, so one loop serves every variant's statements. */
static void bind_row(sqlite3_stmt *st, size_t i)
{
    char id[32], cid[32];
    int k;
    snprintf(id, sizeof(id), "m%zu", i);
    snprintf(cid, sizeof(cid), "c%zu", i % CONVERSATIONS);
    if ((k = sqlite3_bind_parameter_index(st, ":rid")))
        sqlite3_bind_int64(st, k, RID(i));
    if ((k = sqlite3_bind_parameter_index(st, ":text")))
        sqlite3_bind_text(st, k, texts[i], -1, SQLITE_STATIC);
    if ((k = sqlite3_bind_parameter_index(st, ":id")))
        sqlite3_bind_text(st, k, id, -1, SQLITE_TRANSIENT);
    if ((k = sqlite3_bind_parameter_index(st, ":cid")))
        sqlite3_bind_text(st, k, cid, -1, SQLITE_TRANSIENT);
    if ((k = sqlite3_bind_parameter_index(st, ":seq")))
        sqlite3_bind_int64(st, k, (int64_t)(i / CONVERSATIONS + 1));
    if ((k = sqlite3_bind_parameter_index(st, ":ms")))
        sqlite3_bind_int64(st, k, CREATED_MS(i));
}

static void write_batch(writer *w, size_t b, size_t e)
{
    double c0 = cpu_s();
    must(w->db, "BEGIN IMMEDIATE");
    for (size_t i = b; i < e; i++)
        for (int s = 0; s < w->nst; s++) {
            bind_row(w->st[s], i);
            if (sqlite3_step(w->st[s]) != SQLITE_DONE) {
                fprintf(stderr, "search_parts: %s\n", sqlite3_errmsg(w->db));
                exit(1);
            }
            sqlite3_reset(w->st[s]);
        }
    must(w->db, "COMMIT");
    w->cpu += cpu_s() - c0;
}

static const char INS_MSG[] =
    "INSERT INTO messages(rid, id, conversation_id, sender_id, seq, created_ms, created_eseq,"
    " eseq, has_attachment, deleted, text, attachments) VALUES (:rid, :id, :cid, 'writer',"
    " :seq, :ms, :seq, :seq, 0, 0, :text, 0)",
                  INS_W[] = "INSERT INTO msg_words(rowid, text) VALUES (:rid, :text)",
                  INS_I[] = "INSERT INTO msg_ids(rowid, conversation_id, sender_id)"
                            " VALUES (:rid, :cid, 'writer')",
                  INS_T[] = "INSERT INTO msg_tri(rowid, text) VALUES (:rid, :text)";

/* A tenant file of the index itself (schema, PRAGMAs, FTS5 settings), then `alter`. */
static void ours_sql(search_index *ix, const char *tenant, const char *alter, const char *ins_w,
                     int tri, writer *w)
{
    if (search_index_open(ix, tenant, 1, &w->db) != CM_OK)
        exit(1);
    if (alter)
        must(w->db, alter);
    add_stmt(w, INS_MSG);
    add_stmt(w, ins_w ? ins_w : INS_W);
    if (tri)
        add_stmt(w, INS_T);
}

/* 2files: the second thread's side. */
typedef struct tri_job {
    writer *w;
    size_t b, e;
    int go, done, quit;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} tri_job;

static void *tri_thread(void *arg)
{
    tri_job *j = arg;
    for (;;) {
        size_t b, e;
        pthread_mutex_lock(&j->mu);
        while (!j->go && !j->quit)
            pthread_cond_wait(&j->cv, &j->mu);
        if (j->quit) {
            pthread_mutex_unlock(&j->mu);
            return NULL;
        }
        j->go = 0;
        b = j->b;
        e = j->e;
        pthread_mutex_unlock(&j->mu);
        write_batch(j->w, b, e);
        pthread_mutex_lock(&j->mu);
        j->done = 1;
        pthread_cond_broadcast(&j->cv);
        pthread_mutex_unlock(&j->mu);
    }
}

/* real: the CloudEvent of line i, as search_bench.c builds it. */
static char *event_json(size_t i)
{
    char id[32], cid[32], when[CM_RFC3339_LEN];
    cJSON *ev = cJSON_CreateObject(), *d;
    char *s;
    snprintf(id, sizeof(id), "m%zu", i);
    snprintf(cid, sizeof(cid), "c%zu", i % CONVERSATIONS);
    cm_clock_rfc3339(CREATED_MS(i), when);
    cJSON_AddStringToObject(ev, "specversion", "1.0");
    cJSON_AddStringToObject(ev, "id", id);
    cJSON_AddStringToObject(ev, "type", "message.created");
    cJSON_AddStringToObject(ev, "tenant", TENANT_PREFIX "real");
    cJSON_AddStringToObject(ev, "time", when);
    cJSON_AddNumberToObject(ev, "eseq", (double)(i / CONVERSATIONS + 2));
    d = cJSON_AddObjectToObject(ev, "data");
    cJSON_AddStringToObject(d, "id", id);
    cJSON_AddStringToObject(d, "conversation_id", cid);
    cJSON_AddStringToObject(d, "sender_id", "writer");
    cJSON_AddNumberToObject(d, "seq", (double)(i / CONVERSATIONS + 1));
    cJSON_AddStringToObject(d, "type", "text");
    cJSON_AddStringToObject(d, "text", texts[i]);
    cJSON_AddStringToObject(d, "created_at", when);
    s = cJSON_PrintUnformatted(ev);
    cJSON_Delete(ev);
    return s;
}

static void real_batch(search_index *ix, char **events, size_t b, size_t e, double *cpu)
{
    char why[256];
    double c0 = cpu_s();
    search_index_batch_begin(ix);
    for (size_t i = b; i < e; i++) {
        cJSON *ev = NULL;
        cm_err rc = search_index_apply_text(ix, events[i], strlen(events[i]), 32, NULL, why,
                                            sizeof(why));
        if (rc == CM_EAGAIN) {
            ev = cJSON_Parse(events[i]);
            rc = ev ? search_index_apply(ix, ev, why, sizeof(why)) : CM_EINVAL;
        }
        if (rc != CM_OK) {
            fprintf(stderr, "search_parts: apply: %s\n", why);
            exit(1);
        }
        cJSON_Delete(ev);
    }
    if (search_index_batch_end(ix, 1) != CM_OK)
        exit(1);
    *cpu += cpu_s() - c0;
}

enum { V_SQL, V_V6, V_NOIDS, V_PLAINTRI, V_2FILES, V_REAL, NV };
static const char *const NAMES[NV] = {"sql", "v6", "noids", "plaintri", "2files", "real"};

int main(int argc, char **argv)
{
    search_index *ix;
    writer raw = {0}, v[NV] = {{0}}, tri = {0};
    tri_job job = {.w = &tri};
    pthread_t th;
    char **events, path[1024], *line = NULL;
    size_t sz = 0, cap = 0, limit = 100000;
    double wall_raw = 0, wall[NV] = {0};
    ssize_t got;
    FILE *f;

    if (argc > 3) {
        char *end;
        long n = strtol(argv[3], &end, 10);
        if (*end != '\0' || n <= 0) {
            fprintf(stderr, "TEXTS must be a positive count, not %s\n", argv[3]);
            return 2;
        }
        limit = (size_t)n;
    }
    if (argc < 3 || (f = fopen(argv[1], "r")) == NULL) {
        fprintf(stderr, "usage: %s CORPUS WORKDIR [TEXTS]\n", argv[0]);
        return 2;
    }
    while (ntexts < limit && (got = getline(&line, &sz, f)) > 0) {
        if (line[got - 1] == '\n')
            line[got - 1] = '\0';
        if (ntexts == cap) {
            cap = cap ? cap * 2 : 4096;
            texts = realloc(texts, cap * sizeof(*texts));
        }
        texts[ntexts++] = strdup(line);
    }
    free(line);
    fclose(f);
    cm_log_init("search_parts", CM_LOG_ERROR);
    if (search_index_create(argv[2], &ix) != CM_OK)
        return 1;

    snprintf(path, sizeof(path), "%s/raw.db", argv[2]);
    if (sqlite3_open_v2(path, &raw.db, RAW_OPEN, NULL) != SQLITE_OK)
        return 1;
    must(raw.db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                 "CREATE VIRTUAL TABLE w USING fts5(text, tokenize='unicode61"
                 " remove_diacritics 2', prefix='2 3');"
                 "CREATE VIRTUAL TABLE t USING fts5(text, tokenize='trigram');");
    add_stmt(&raw, "INSERT INTO w(rowid, text) VALUES (:rid, :text)");
    add_stmt(&raw, "INSERT INTO t(rowid, text) VALUES (:rid, :text)");

    ours_sql(ix, TENANT_PREFIX "sql", NULL, NULL, 1, &v[V_SQL]);
    add_stmt(&v[V_SQL], INS_I);
    ours_sql(ix, TENANT_PREFIX "v6",
             "DROP TABLE msg_ids;"
             "CREATE UNIQUE INDEX messages_by_id ON messages(id);"
             "CREATE INDEX messages_by_conv ON messages(conversation_id);"
             "CREATE INDEX messages_by_sender ON messages(sender_id)",
             NULL, 1, &v[V_V6]);
    ours_sql(ix, TENANT_PREFIX "noids", "DROP TABLE msg_ids", NULL, 1, &v[V_NOIDS]);
    ours_sql(ix, TENANT_PREFIX "plaintri",
             "DROP TABLE msg_tri; CREATE VIRTUAL TABLE msg_tri USING fts5(text,"
             " content='messages', content_rowid='rid', tokenize='trigram');"
             "INSERT INTO msg_tri(msg_tri, rank) VALUES ('automerge', 16)",
             NULL, 1, &v[V_PLAINTRI]);
    add_stmt(&v[V_PLAINTRI], INS_I);
    ours_sql(ix, TENANT_PREFIX "2files", "DROP TABLE msg_tri", NULL, 0, &v[V_2FILES]);
    add_stmt(&v[V_2FILES], INS_I);
    snprintf(path, sizeof(path), "%s/" TENANT_PREFIX "2files.tri.db", argv[2]);
    if (sqlite3_open_v2(path, &tri.db, RAW_OPEN, NULL) != SQLITE_OK)
        return 1;
    must(tri.db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                 "CREATE TABLE tri_text(rid INTEGER PRIMARY KEY, eseq INTEGER NOT NULL,"
                 " sender_id TEXT NOT NULL, text TEXT NOT NULL);"
                 "CREATE INDEX tri_sender ON tri_text(sender_id);"
                 "CREATE VIRTUAL TABLE msg_tri USING fts5(text, content='tri_text',"
                 " content_rowid='rid', tokenize='trigram_cjk');"
                 "INSERT INTO msg_tri(msg_tri, rank) VALUES ('automerge', 16);");
    add_stmt(&tri, "INSERT INTO tri_text(rid, eseq, sender_id, text)"
                   " VALUES (:rid, :seq, 'writer', :text)");
    add_stmt(&tri, INS_T);
    pthread_mutex_init(&job.mu, NULL);
    pthread_cond_init(&job.cv, NULL);
    pthread_create(&th, NULL, tri_thread, &job);

    events = malloc(ntexts * sizeof(*events));
    for (size_t i = 0; i < ntexts; i++)
        events[i] = event_json(i);

    for (size_t b = 0; b < ntexts; b += BATCH) {
        size_t e = b + BATCH < ntexts ? b + BATCH : ntexts;
        double t = now_s(), t1;
        write_batch(&raw, b, e);
        wall_raw += (t1 = now_s()) - t;
        for (int k = 0; k < NV; k++) {
            t = t1;
            if (k == V_REAL) {
                real_batch(ix, events, b, e, &v[k].cpu);
            } else if (k == V_2FILES) {
                pthread_mutex_lock(&job.mu);
                job.b = b;
                job.e = e;
                job.done = 0;
                job.go = 1;
                pthread_cond_broadcast(&job.cv);
                pthread_mutex_unlock(&job.mu);
                write_batch(&v[k], b, e);
                pthread_mutex_lock(&job.mu);
                while (!job.done)
                    pthread_cond_wait(&job.cv, &job.mu);
                pthread_mutex_unlock(&job.mu);
            } else {
                write_batch(&v[k], b, e);
            }
            wall[k] += (t1 = now_s()) - t;
        }
    }
    pthread_mutex_lock(&job.mu);
    job.quit = 1;
    pthread_cond_broadcast(&job.cv);
    pthread_mutex_unlock(&job.mu);
    pthread_join(th, NULL);
    v[V_2FILES].cpu += tri.cpu;

    printf("texts %zu, %d per transaction, batches interleaved\n", ntexts, BATCH);
    printf("%-9s %8s %8s %11s %11s\n", "variant", "cpu s", "wall s", "ratio cpu", "ratio wall");
    printf("%-9s %8.2f %8.2f %11s %11s\n", "raw", raw.cpu, wall_raw, "1.00x", "1.00x");
    for (int k = 0; k < NV; k++)
        printf("%-9s %8.2f %8.2f %10.2fx %10.2fx\n", NAMES[k], v[k].cpu, wall[k],
               raw.cpu / v[k].cpu, wall_raw / wall[k]);
    for (int k = 0; k < NV; k++) {
        for (int s = 0; s < v[k].nst; s++)
            sqlite3_finalize(v[k].st[s]);
        sqlite3_close(v[k].db);
    }
    for (int s = 0; s < raw.nst; s++)
        sqlite3_finalize(raw.st[s]);
    for (int s = 0; s < tri.nst; s++)
        sqlite3_finalize(tri.st[s]);
    sqlite3_close(raw.db);
    sqlite3_close(tri.db);
    for (size_t i = 0; i < ntexts; i++) {
        cJSON_free(events[i]);
        free(texts[i]);
    }
    free(events);
    free(texts);
    search_index_destroy(ix);
    return 0;
}
