/* search_bench.c - the search index (services/search) next to raw SQLite FTS5 on the same
 * corpus, in one run: indexing rate (ours: each text as a message.created CloudEvent read and
 * applied as the indexer does (search_index_apply_text, the parsed tree when it declines), in
 * batches of 500; raw: INSERTs of the
 * same rows into the same two FTS5 indexes, 500 per transaction), newest-20 query latency
 * (ours: search_query_parse + search_index_messages with its permission rule and snippets;
 * raw: the same MATCH with the same snippet, ORDER BY rowid DESC LIMIT 20), and every query's
 * complete result set for the recall check that bench/search_bench.py makes against a
 * brute-force scan.
 *
 * Usage: search_bench CORPUS QUERIES WORKDIR RESULTS
 *   CORPUS   one text per line (UTF-8, no tabs or newlines inside)
 *   QUERIES  one query per line: "word<TAB>q", "prefix<TAB>q" or "sub<TAB>q" (q as typed)
 *   WORKDIR  an empty directory for the two databases
 *   RESULTS  written: per query "<index><TAB><line numbers of every hit, space separated>"
 * Prints "key value" lines for the driver. */
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

#define CONVERSATIONS 100 /* the corpus is spread over this many conversations */
#define BATCH 500
#define TENANT "bench-tenant"
#define USER "reader"

static char **read_lines(const char *path, size_t *n)
{
    FILE *f = fopen(path, "r");
    char *line = NULL, **out = NULL;
    size_t cap = 0, len = 0, sz = 0;
    ssize_t got;

    if (f == NULL)
        return NULL;
    while ((got = getline(&line, &sz, f)) > 0) {
        if (line[got - 1] == '\n')
            line[--got] = '\0';
        if (len == cap) {
            cap = cap ? cap * 2 : 1024;
            out = realloc(out, cap * sizeof(*out));
        }
        out[len++] = strdup(line);
    }
    free(line);
    fclose(f);
    *n = len;
    return out;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p)
{
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

/* The message.created events of the corpus (line i: message "m<i>" in conversation
 * c<i % CONVERSATIONS>, created i ms after a fixed instant), JSON text as Kafka carries it. */
static char *event_json(size_t i, const char *text, int64_t eseq)
{
    char id[32], cid[40], when[CM_RFC3339_LEN];
    cJSON *ev = cJSON_CreateObject(), *d;
    char *s;

    snprintf(id, sizeof(id), "m%zu", i);
    snprintf(cid, sizeof(cid), "c%zu", i % CONVERSATIONS);
    cm_clock_rfc3339(1700000000000LL + (int64_t)i, when);
    cJSON_AddStringToObject(ev, "specversion", "1.0");
    cJSON_AddStringToObject(ev, "id", id);
    cJSON_AddStringToObject(ev, "type", "message.created");
    cJSON_AddStringToObject(ev, "tenant", TENANT);
    cJSON_AddStringToObject(ev, "time", when);
    cJSON_AddNumberToObject(ev, "eseq", (double)eseq);
    d = cJSON_AddObjectToObject(ev, "data");
    cJSON_AddStringToObject(d, "id", id);
    cJSON_AddStringToObject(d, "conversation_id", cid);
    cJSON_AddStringToObject(d, "sender_id", "writer");
    cJSON_AddNumberToObject(d, "seq", (double)(eseq - 1));
    cJSON_AddStringToObject(d, "type", "text");
    cJSON_AddStringToObject(d, "text", text);
    cJSON_AddStringToObject(d, "created_at", when);
    s = cJSON_PrintUnformatted(ev);
    cJSON_Delete(ev);
    return s;
}

/* As the indexer's handle_one (services/search/search_indexer.c): the text path for message
 * events, else the parsed tree. */
static int apply_json(search_index *ix, const char *json)
{
    char why[256];
    int64_t ms;
    cJSON *ev = NULL;
    cm_err rc = search_index_apply_text(ix, json, strlen(json), 32, &ms, why, sizeof(why));
    if (rc == CM_EAGAIN) {
        ev = cJSON_Parse(json);
        rc = ev ? search_index_apply(ix, ev, why, sizeof(why)) : CM_EINVAL;
    }
    if (rc != CM_OK)
        fprintf(stderr, "apply: %s: %s\n", cm_strerror(rc), why);
    cJSON_Delete(ev);
    return rc == CM_OK;
}

/* Ours: the conversations (the reader a member of each), untimed. */
static void index_ours_setup(search_index *ix)
{
    search_index_batch_begin(ix);
    for (size_t c = 0; c < CONVERSATIONS; c++) {
        char buf[1024];
        snprintf(buf, sizeof(buf),
                 "{\"type\":\"conversation.created\",\"tenant\":\"" TENANT "\",\"eseq\":1,"
                 "\"time\":\"2023-11-14T22:13:20.000Z\",\"data\":{\"id\":\"c%zu\",\"type\":"
                 "\"group\",\"title\":\"bench %zu\",\"created_by\":\"writer\",\"created_at\":"
                 "\"2023-11-14T22:13:20.000Z\",\"initial_members\":[{\"user_id\":\"" USER
                 "\"},{\"user_id\":\"writer\"}]}}",
                 c, c);
        if (!apply_json(ix, buf))
            exit(1);
    }
    search_index_batch_end(ix, 1);
}

/* Ours: events [i, end) as one batch (parsed and applied as the indexer does). */
static void index_ours_batch(search_index *ix, char **events, size_t i, size_t end)
{
    search_index_batch_begin(ix);
    for (size_t k = i; k < end; k++)
        if (!apply_json(ix, events[k]))
            exit(1);
    if (search_index_batch_end(ix, 1) != CM_OK)
        exit(1);
}

/* Raw FTS5: the same two indexes (unicode61 with diacritics removed and prefixes 2 and 3;
 * trigram), rowid = line number. */
static void index_raw_setup(sqlite3 *db, sqlite3_stmt **w, sqlite3_stmt **t)
{
    if (sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                         "CREATE VIRTUAL TABLE w USING fts5(text, tokenize='unicode61"
                         " remove_diacritics 2', prefix='2 3');"
                         "CREATE VIRTUAL TABLE t USING fts5(text, tokenize='trigram');",
                     NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "INSERT INTO w(rowid, text) VALUES (?, ?)", -1, w, NULL) ||
        sqlite3_prepare_v2(db, "INSERT INTO t(rowid, text) VALUES (?, ?)", -1, t, NULL)) {
        fprintf(stderr, "raw: %s\n", sqlite3_errmsg(db));
        exit(1);
    }
}

/* Raw: rows [i, end) in one transaction. */
static void index_raw_batch(sqlite3 *db, sqlite3_stmt *w, sqlite3_stmt *t, char **texts, size_t i,
                            size_t end)
{
    sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    for (size_t k = i; k < end; k++) {
        sqlite3_stmt *st[2] = {w, t};
        for (int s = 0; s < 2; s++) {
            sqlite3_bind_int64(st[s], 1, (sqlite3_int64)k);
            sqlite3_bind_text(st[s], 2, texts[k], -1, SQLITE_STATIC);
            if (sqlite3_step(st[s]) != SQLITE_DONE) {
                fprintf(stderr, "raw insert: %s\n", sqlite3_errmsg(db));
                exit(1);
            }
            sqlite3_reset(st[s]);
        }
    }
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        exit(1);
}

/* Both, batch by batch of BATCH, interleaved (raw, then ours, then raw...) so that the load
 * of the shared machine falls on both alike; wall and thread CPU time summed per side. */
static void index_both(search_index *ix, sqlite3 *raw, char **texts, size_t n, double *wall,
                       double *cpu)
{
    char **events = malloc(n * sizeof(*events));
    int64_t *eseq = calloc(CONVERSATIONS, sizeof(*eseq));
    sqlite3_stmt *w, *t;

    for (size_t c = 0; c < CONVERSATIONS; c++)
        eseq[c] = 1;
    index_ours_setup(ix);
    index_raw_setup(raw, &w, &t);
    for (size_t i = 0; i < n; i++)
        events[i] = event_json(i, texts[i], ++eseq[i % CONVERSATIONS]);
    wall[0] = wall[1] = cpu[0] = cpu[1] = 0;
    for (size_t i = 0; i < n; i += BATCH) {
        size_t end = i + BATCH < n ? i + BATCH : n;
        double w0 = now_s(), c0 = cpu_s(), w1, c1;
        index_raw_batch(raw, w, t, texts, i, end);
        w1 = now_s();
        c1 = cpu_s();
        wall[1] += w1 - w0;
        cpu[1] += c1 - c0;
        index_ours_batch(ix, events, i, end);
        wall[0] += now_s() - w1;
        cpu[0] += cpu_s() - c1;
    }
    sqlite3_finalize(w);
    sqlite3_finalize(t);
    for (size_t i = 0; i < n; i++)
        cJSON_free(events[i]);
    free(events);
    free(eseq);
}

/* The raw MATCH expression of a query: the term quoted as our parser quotes it. */
static void raw_match(const char *kind, const char *q, char *out, size_t n)
{
    size_t at = 0;
    const char *p = q;
    size_t len = strlen(q);
    if (strcmp(kind, "prefix") == 0 && len && q[len - 1] == '*')
        len--;
    out[at++] = '"';
    for (size_t i = 0; i < len && at + 4 < n; i++, p++) {
        if (*p == '"')
            out[at++] = '"';
        out[at++] = *p;
    }
    out[at++] = '"';
    if (strcmp(kind, "prefix") == 0)
        out[at++] = '*';
    out[at] = '\0';
}

static size_t cp_len(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

int main(int argc, char **argv)
{
    size_t n, nq;
    char **texts, **queries, path[1024];
    search_index *ix;
    sqlite3 *raw;
    double wall[2], cpu[2], *lat_ours, *lat_raw, *cpu_ours, *cpu_raw;
    FILE *res;
    size_t timed = 0;

    if (argc != 5) {
        fprintf(stderr, "usage: %s CORPUS QUERIES WORKDIR RESULTS\n", argv[0]);
        return 2;
    }
    cm_log_init("search_bench", CM_LOG_ERROR);
    texts = read_lines(argv[1], &n);
    queries = read_lines(argv[2], &nq);
    if (texts == NULL || queries == NULL || n == 0 || nq == 0) {
        fprintf(stderr, "cannot read %s or %s\n", argv[1], argv[2]);
        return 1;
    }
    snprintf(path, sizeof(path), "%s/raw.db", argv[3]);
    if (search_index_create(argv[3], &ix) != CM_OK ||
        sqlite3_open_v2(path, &raw, RAW_OPEN, NULL) != SQLITE_OK)
        return 1;
    index_both(ix, raw, texts, n, wall, cpu);
    printf("texts %zu\n", n);
    printf("index_ours_per_s %.0f\n", (double)n / wall[0]);
    printf("index_raw_per_s %.0f\n", (double)n / wall[1]);
    printf("index_ours_cpu_per_s %.0f\n", (double)n / cpu[0]);
    printf("index_raw_cpu_per_s %.0f\n", (double)n / cpu[1]);

    lat_ours = calloc(nq, sizeof(double));
    lat_raw = calloc(nq, sizeof(double));
    cpu_ours = calloc(nq, sizeof(double));
    cpu_raw = calloc(nq, sizeof(double));
    res = fopen(argv[4], "w");
    for (size_t i = 0; i < nq; i++) {
        char *tab = strchr(queries[i], '\t'), why[256], match[1100], sql[256];
        const char *kind = queries[i], *q;
        search_query *sq = calloc(1, sizeof(*sq));
        cJSON *items;
        int more = 0, sub;
        sqlite3_stmt *st;
        double t0, c0;

        if (tab == NULL)
            continue;
        *tab = '\0';
        q = tab + 1;
        if (search_query_parse(q, sq, why, sizeof(why)) != CM_OK) {
            fprintf(stderr, "query %s: %s\n", q, why);
            return 1;
        }
        sub = strcmp(kind, "sub") == 0;
        /* Timed: the newest 20, ours then raw, alternating query by query. */
        items = cJSON_CreateArray();
        t0 = now_s();
        c0 = cpu_s();
        if (search_index_messages(ix, TENANT, USER, sq, 1, 0, 20, items, &more) != CM_OK)
            return 1;
        lat_ours[timed] = now_s() - t0;
        cpu_ours[timed] = cpu_s() - c0;
        if (getenv("SEARCH_BENCH_SLOW") && lat_ours[timed] > atof(getenv("SEARCH_BENCH_SLOW")))
            fprintf(stderr, "slow: %s %s %.3f ms\n", kind, q, lat_ours[timed] * 1e3);
        cJSON_Delete(items);
        raw_match(kind, q, match, sizeof(match));
        if (sub && cp_len(q) < 3) {
            /* FTS5's trigram table answers no row for a LIKE shorter than 3 characters (its
             * documented limit): raw FTS5's way to find them is a scan of its content. */
            snprintf(sql, sizeof(sql), "SELECT id, c0 FROM t_content WHERE c0 LIKE ?"
                                       " ORDER BY id DESC LIMIT 20");
            snprintf(match, sizeof(match), "%%%s%%", q);
        } else {
            snprintf(sql, sizeof(sql),
                     "SELECT rowid, snippet(%s, 0, char(1), char(2), '…', 16) FROM %s WHERE %s"
                     " MATCH ? ORDER BY rowid DESC LIMIT 20",
                     sub ? "t" : "w", sub ? "t" : "w", sub ? "t" : "w");
        }
        t0 = now_s();
        c0 = cpu_s();
        if (sqlite3_prepare_v2(raw, sql, -1, &st, NULL) != SQLITE_OK)
            return 1;
        sqlite3_bind_text(st, 1, match, -1, SQLITE_STATIC);
        while (sqlite3_step(st) == SQLITE_ROW)
            ;
        sqlite3_finalize(st);
        lat_raw[timed] = now_s() - t0;
        cpu_raw[timed++] = cpu_s() - c0;
        /* Untimed: every hit, for the recall check (SEARCH_BENCH_NO_RECALL: skipped, for
         * profiling the timed part). */
        if (getenv("SEARCH_BENCH_NO_RECALL")) {
            free(sq);
            continue;
        }
        items = cJSON_CreateArray();
        if (search_index_messages(ix, TENANT, USER, sq, 1, 0, 1000000, items, &more) != CM_OK)
            return 1;
        fprintf(res, "%zu\t", i);
        {
            cJSON *it;
            int first = 1;
            cJSON_ArrayForEach(it, items)
            {
                fprintf(res, "%s%s", first ? "" : " ",
                        cJSON_GetStringValue(cJSON_GetObjectItem(it, "id")) + 1);
                first = 0;
            }
        }
        fprintf(res, "\n");
        cJSON_Delete(items);
        free(sq);
    }
    fclose(res);
    qsort(lat_ours, timed, sizeof(double), cmp_double);
    qsort(lat_raw, timed, sizeof(double), cmp_double);
    printf("queries %zu\n", timed);
    printf("query_ours_p50_ms %.3f\n", pct(lat_ours, timed, 0.50) * 1e3);
    printf("query_ours_p99_ms %.3f\n", pct(lat_ours, timed, 0.99) * 1e3);
    printf("query_raw_p50_ms %.3f\n", pct(lat_raw, timed, 0.50) * 1e3);
    printf("query_raw_p99_ms %.3f\n", pct(lat_raw, timed, 0.99) * 1e3);
    qsort(cpu_ours, timed, sizeof(double), cmp_double);
    qsort(cpu_raw, timed, sizeof(double), cmp_double);
    printf("query_ours_cpu_p50_ms %.3f\n", pct(cpu_ours, timed, 0.50) * 1e3);
    printf("query_ours_cpu_p99_ms %.3f\n", pct(cpu_ours, timed, 0.99) * 1e3);
    printf("query_raw_cpu_p50_ms %.3f\n", pct(cpu_raw, timed, 0.50) * 1e3);
    printf("query_raw_cpu_p99_ms %.3f\n", pct(cpu_raw, timed, 0.99) * 1e3);
    search_index_destroy(ix);
    sqlite3_close(raw);
    return 0;
}
