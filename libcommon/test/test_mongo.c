/* test_mongo.c - unit tests of the MongoDB wrapper (common/mongo.h) against the local FerretDB. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mongoc/mongoc.h>

#include "common/config.h"
#include "common/log.h"
#include "common/mongo.h"

#define COLL "things"

static cm_mongo *m;
static char db[64]; /* unique per run: unit_<pid> */
static const char *uri;

/* The driver's own log: keep errors, drop the expected noise (monitor retries against the
 * unreachable port, FerretDB's missing endSessions command at pool shutdown). */
static void driver_log(mongoc_log_level_t level, const char *domain, const char *message,
                       void *ud)
{
    (void)ud;
    if (level <= MONGOC_LOG_LEVEL_ERROR)
        fprintf(stderr, "mongoc %s: %s\n", domain, message);
}

static int setup(void **state)
{
    (void)state;
    cm_log_init("test_mongo", CM_LOG_ERROR);
    mongoc_log_set_handler(driver_log, NULL);
    uri = cm_config_str("MONGO_URI", "mongodb://127.0.0.1:27017");
    snprintf(db, sizeof(db), "unit_%ld", (long)getpid());
    return cm_mongo_create(uri, db, &m) == CM_OK ? 0 : -1;
}

/* Drops the run's database, so runs leave nothing behind (test-only use of the driver). */
static int teardown(void **state)
{
    bson_error_t e;
    (void)state;
    cm_mongo_destroy(m);
    mongoc_client_t *c = mongoc_client_new(uri);
    if (c) {
        mongoc_database_t *d = mongoc_client_get_database(c, db);
        if (!mongoc_database_drop(d, &e))
            fprintf(stderr, "test_mongo: drop %s: %s\n", db, e.message);
        mongoc_database_destroy(d);
        mongoc_client_destroy(c);
    }
    return 0;
}

static bson_t *doc_of(const char *id, const char *name, int32_t n, int flag)
{
    bson_t *d = bson_new(), sub;
    BSON_APPEND_UTF8(d, "_id", id);
    BSON_APPEND_UTF8(d, "name", name);
    BSON_APPEND_INT32(d, "n", n);
    BSON_APPEND_BOOL(d, "flag", flag);
    BSON_APPEND_DOCUMENT_BEGIN(d, "last_message", &sub);
    BSON_APPEND_INT64(&sub, "seq", (int64_t)n * 10);
    BSON_APPEND_UTF8(&sub, "text", "hello");
    BSON_APPEND_BOOL(&sub, "read", true);
    bson_append_document_end(d, &sub);
    return d;
}

static bson_t *by_id(const char *id)
{
    bson_t *f = bson_new();
    BSON_APPEND_UTF8(f, "_id", id);
    return f;
}

static void test_ping(void **state)
{
    (void)state;
    assert_int_equal(cm_mongo_ping(m), CM_OK);
}

static void test_insert_find_one(void **state)
{
    bson_t out;
    (void)state;
    bson_t *d = doc_of("a1", "alpha", 1, 1);
    assert_int_equal(cm_mongo_insert(m, COLL, d), CM_OK);
    bson_t *f = by_id("a1");
    assert_int_equal(cm_mongo_find_one(m, COLL, f, NULL, &out), CM_OK);
    assert_string_equal(cm_bson_str(&out, "name", "?"), "alpha");
    assert_int_equal(cm_bson_int(&out, "n", -1), 1);
    assert_int_equal(cm_bson_bool(&out, "flag", 0), 1);
    bson_destroy(&out);
    /* A projection in opts is honoured. */
    bson_t *opts = BCON_NEW("projection", "{", "name", BCON_INT32(1), "}");
    assert_int_equal(cm_mongo_find_one(m, COLL, f, opts, &out), CM_OK);
    assert_string_equal(cm_bson_str(&out, "name", "?"), "alpha");
    assert_int_equal(cm_bson_int(&out, "n", -1), -1);
    bson_destroy(&out);
    bson_destroy(opts);
    bson_destroy(f);
    bson_destroy(d);
}

static void test_find_one_not_found(void **state)
{
    bson_t out;
    (void)state;
    bson_t *f = by_id("no-such-id");
    assert_int_equal(cm_mongo_find_one(m, COLL, f, NULL, &out), CM_ENOTFOUND);
    bson_destroy(f);
}

static void test_bson_readers(void **state)
{
    bson_t out;
    (void)state;
    bson_t *d = doc_of("r1", "reader", 7, 0);
    assert_int_equal(cm_mongo_insert(m, COLL, d), CM_OK);
    bson_t *f = by_id("r1");
    assert_int_equal(cm_mongo_find_one(m, COLL, f, NULL, &out), CM_OK);
    /* Dotted paths into a subdocument. */
    assert_int_equal(cm_bson_int(&out, "last_message.seq", -1), 70);
    assert_string_equal(cm_bson_str(&out, "last_message.text", "?"), "hello");
    assert_int_equal(cm_bson_bool(&out, "last_message.read", 0), 1);
    /* Absent fields and other types give the default. */
    assert_string_equal(cm_bson_str(&out, "last_message.nope", "dflt"), "dflt");
    assert_string_equal(cm_bson_str(&out, "n", "dflt"), "dflt");
    assert_int_equal(cm_bson_int(&out, "name", -9), -9);
    assert_int_equal(cm_bson_int(&out, "last_message.seq.deeper", -9), -9);
    assert_int_equal(cm_bson_bool(&out, "n", 1), 1);
    assert_int_equal(cm_bson_bool(&out, "flag", 1), 0);
    assert_int_equal(cm_bson_int(&out, "missing", 42), 42);
    bson_destroy(&out);
    bson_destroy(f);
    bson_destroy(d);

    /* int64, double and date-time read as integers. */
    bson_t *t = BCON_NEW("i64", BCON_INT64(1LL << 40), "dbl", BCON_DOUBLE(3.0), "when",
                         BCON_DATE_TIME(1700000000123LL));
    assert_int_equal(cm_bson_int(t, "i64", 0), 1LL << 40);
    assert_int_equal(cm_bson_int(t, "dbl", 0), 3);
    assert_int_equal(cm_bson_int(t, "when", 0), 1700000000123LL);
    bson_destroy(t);
}

static void test_update_matched(void **state)
{
    int64_t matched = -1;
    bson_t out;
    (void)state;
    bson_t *d = doc_of("u1", "before", 1, 0);
    assert_int_equal(cm_mongo_insert(m, COLL, d), CM_OK);
    bson_t *f = by_id("u1");
    bson_t *upd = BCON_NEW("$set", "{", "name", BCON_UTF8("after"), "}");
    assert_int_equal(cm_mongo_update(m, COLL, f, upd, 0, 0, &matched), CM_OK);
    assert_int_equal(matched, 1);
    assert_int_equal(cm_mongo_find_one(m, COLL, f, NULL, &out), CM_OK);
    assert_string_equal(cm_bson_str(&out, "name", "?"), "after");
    bson_destroy(&out);
    bson_t *none = by_id("u-missing");
    assert_int_equal(cm_mongo_update(m, COLL, none, upd, 0, 0, &matched), CM_OK);
    assert_int_equal(matched, 0);
    assert_int_equal(cm_mongo_update(m, COLL, f, upd, 0, 0, NULL), CM_OK); /* matched optional */
    /* Upsert creates the document. */
    bson_t *ups = by_id("u2");
    assert_int_equal(cm_mongo_update(m, COLL, ups, upd, 1, 0, &matched), CM_OK);
    assert_int_equal(matched, 1);
    assert_int_equal(cm_mongo_find_one(m, COLL, ups, NULL, &out), CM_OK);
    assert_string_equal(cm_bson_str(&out, "name", "?"), "after");
    bson_destroy(&out);
    bson_destroy(ups);
    bson_destroy(none);
    bson_destroy(upd);
    bson_destroy(f);
    bson_destroy(d);
}

static void test_update_many(void **state)
{
    int64_t matched = -1, count = -1;
    (void)state;
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof(id), "many%d", i);
        bson_t *d = doc_of(id, "group-m", i, 0);
        assert_int_equal(cm_mongo_insert(m, COLL, d), CM_OK);
        bson_destroy(d);
    }
    bson_t *f = BCON_NEW("name", BCON_UTF8("group-m"));
    bson_t *upd = BCON_NEW("$set", "{", "flag", BCON_BOOL(true), "}");
    assert_int_equal(cm_mongo_update(m, COLL, f, upd, 0, 1, &matched), CM_OK);
    assert_int_equal(matched, 3);
    bson_t *cf = BCON_NEW("name", BCON_UTF8("group-m"), "flag", BCON_BOOL(true));
    assert_int_equal(cm_mongo_count(m, COLL, cf, &count), CM_OK);
    assert_int_equal(count, 3);
    bson_destroy(cf);
    bson_destroy(upd);
    bson_destroy(f);
}

static void test_find_and_modify_inc(void **state)
{
    bson_t out;
    (void)state;
    bson_t *d = doc_of("c1", "counter", 5, 0);
    assert_int_equal(cm_mongo_insert(m, COLL, d), CM_OK);
    bson_t *f = by_id("c1");
    bson_t *inc = BCON_NEW("$inc", "{", "n", BCON_INT32(1), "}");
    /* return_new: the document after the update. */
    assert_int_equal(cm_mongo_find_and_modify(m, COLL, f, NULL, inc, 0, 1, &out), CM_OK);
    assert_int_equal(cm_bson_int(&out, "n", -1), 6);
    bson_destroy(&out);
    assert_int_equal(cm_mongo_find_and_modify(m, COLL, f, NULL, inc, 0, 1, &out), CM_OK);
    assert_int_equal(cm_bson_int(&out, "n", -1), 7);
    bson_destroy(&out);
    /* Without return_new: the document before the update. */
    assert_int_equal(cm_mongo_find_and_modify(m, COLL, f, NULL, inc, 0, 0, &out), CM_OK);
    assert_int_equal(cm_bson_int(&out, "n", -1), 7);
    bson_destroy(&out);
    bson_t *none = by_id("c-missing");
    assert_int_equal(cm_mongo_find_and_modify(m, COLL, none, NULL, inc, 0, 1, &out),
                     CM_ENOTFOUND);
    /* Upsert creates it. */
    assert_int_equal(cm_mongo_find_and_modify(m, COLL, none, NULL, inc, 1, 1, &out), CM_OK);
    assert_int_equal(cm_bson_int(&out, "n", -1), 1);
    bson_destroy(&out);
    bson_destroy(none);
    bson_destroy(inc);
    bson_destroy(f);
    bson_destroy(d);
}

static void test_find_and_modify_sort(void **state)
{
    bson_t out;
    (void)state;
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof(id), "s%d", i);
        bson_t *d = doc_of(id, "sorted", 10 + i, 0);
        assert_int_equal(cm_mongo_insert(m, COLL, d), CM_OK);
        bson_destroy(d);
    }
    bson_t *f = BCON_NEW("name", BCON_UTF8("sorted"));
    bson_t *sort = BCON_NEW("n", BCON_INT32(-1));
    bson_t *set = BCON_NEW("$set", "{", "flag", BCON_BOOL(true), "}");
    assert_int_equal(cm_mongo_find_and_modify(m, COLL, f, sort, set, 0, 1, &out), CM_OK);
    assert_string_equal(cm_bson_str(&out, "_id", "?"), "s2"); /* the highest n */
    bson_destroy(&out);
    bson_destroy(set);
    bson_destroy(sort);
    bson_destroy(f);
}

static void test_unique_index_conflict(void **state)
{
    (void)state;
    bson_t *keys = BCON_NEW("email", BCON_INT32(1));
    assert_int_equal(cm_mongo_create_index(m, "uniq", keys, "email_unique", 1), CM_OK);
    /* Creating it again is fine ("if absent"). */
    assert_int_equal(cm_mongo_create_index(m, "uniq", keys, "email_unique", 1), CM_OK);
    bson_t *a = BCON_NEW("_id", BCON_UTF8("x1"), "email", BCON_UTF8("a@example.org"));
    bson_t *b = BCON_NEW("_id", BCON_UTF8("x2"), "email", BCON_UTF8("a@example.org"));
    bson_t *c = BCON_NEW("_id", BCON_UTF8("x3"), "email", BCON_UTF8("c@example.org"));
    assert_int_equal(cm_mongo_insert(m, "uniq", a), CM_OK);
    assert_int_equal(cm_mongo_insert(m, "uniq", b), CM_ECONFLICT);
    assert_int_equal(cm_mongo_insert(m, "uniq", c), CM_OK);
    /* The _id index is unique too. */
    assert_int_equal(cm_mongo_insert(m, "uniq", a), CM_ECONFLICT);
    /* An update into a taken key is a conflict as well. */
    bson_t *f = BCON_NEW("_id", BCON_UTF8("x3"));
    bson_t *upd = BCON_NEW("$set", "{", "email", BCON_UTF8("a@example.org"), "}");
    assert_int_equal(cm_mongo_update(m, "uniq", f, upd, 0, 0, NULL), CM_ECONFLICT);
    int64_t count = -1;
    bson_t *all = bson_new();
    assert_int_equal(cm_mongo_count(m, "uniq", all, &count), CM_OK);
    assert_int_equal(count, 2);
    int64_t deleted = -1;
    assert_int_equal(cm_mongo_delete(m, "uniq", all, 1, &deleted), CM_OK);
    assert_int_equal(deleted, 2);
    bson_destroy(all);
    bson_destroy(upd);
    bson_destroy(f);
    bson_destroy(a);
    bson_destroy(b);
    bson_destroy(c);
    bson_destroy(keys);
}

struct seen {
    int n;
    int64_t last;
    int ordered;
};

static int collect(const bson_t *doc, void *ud)
{
    struct seen *s = ud;
    int64_t v = cm_bson_int(doc, "n", -1);
    if (s->n > 0 && v < s->last)
        s->ordered = 0;
    s->last = v;
    s->n++;
    return 0;
}

static int stop_after_two(const bson_t *doc, void *ud)
{
    int *n = ud;
    (void)doc;
    return ++*n == 2;
}

static int add_value(const char *v, void *ud)
{
    char *seen = ud; /* 64 bytes */
    size_t n = strlen(seen);
    snprintf(seen + n, 64 - n, "%s,", v);
    return 0;
}

static void test_distinct(void **state)
{
    static const char *const ten[] = {"tb", "ta", "tb", "tc", "ta"};
    char seen[64] = "";
    bson_t f = BSON_INITIALIZER;
    (void)state;

    for (int i = 0; i < 5; i++) {
        bson_t d = BSON_INITIALIZER;
        BSON_APPEND_UTF8(&d, "kind", "distinct");
        BSON_APPEND_UTF8(&d, "tenant", ten[i]);
        BSON_APPEND_INT32(&d, "n", i);
        assert_int_equal(cm_mongo_insert(m, COLL, &d), CM_OK);
        bson_destroy(&d);
    }
    BSON_APPEND_UTF8(&f, "kind", "distinct");
    assert_int_equal(cm_mongo_distinct(m, COLL, "tenant", &f, add_value, seen), CM_OK);
    /* Each once, whatever the order the server gives. */
    assert_int_equal(strlen(seen), 9);
    assert_non_null(strstr(seen, "ta,"));
    assert_non_null(strstr(seen, "tb,"));
    assert_non_null(strstr(seen, "tc,"));
    bson_destroy(&f);
}

static void test_find_count_delete(void **state)
{
    int64_t count = -1, deleted = -1;
    (void)state;
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof(id), "f%d", i);
        bson_t *d = doc_of(id, "findme", 4 - i, 0);
        assert_int_equal(cm_mongo_insert(m, COLL, d), CM_OK);
        bson_destroy(d);
    }
    bson_t *f = BCON_NEW("name", BCON_UTF8("findme"));
    assert_int_equal(cm_mongo_count(m, COLL, f, &count), CM_OK);
    assert_int_equal(count, 5);
    bson_t *opts = BCON_NEW("sort", "{", "n", BCON_INT32(1), "}");
    struct seen s = {0, 0, 1};
    assert_int_equal(cm_mongo_find(m, COLL, f, opts, collect, &s), CM_OK);
    assert_int_equal(s.n, 5);
    assert_int_equal(s.ordered, 1);
    int stopped = 0;
    assert_int_equal(cm_mongo_find(m, COLL, f, opts, stop_after_two, &stopped), CM_OK);
    assert_int_equal(stopped, 2);
    /* One, then the rest. */
    assert_int_equal(cm_mongo_delete(m, COLL, f, 0, &deleted), CM_OK);
    assert_int_equal(deleted, 1);
    assert_int_equal(cm_mongo_delete(m, COLL, f, 1, &deleted), CM_OK);
    assert_int_equal(deleted, 4);
    assert_int_equal(cm_mongo_count(m, COLL, f, &count), CM_OK);
    assert_int_equal(count, 0);
    bson_destroy(opts);
    bson_destroy(f);
}

static void test_delete_everything_of_the_run(void **state)
{
    int64_t deleted = -1, count = -1;
    (void)state;
    bson_t *all = bson_new();
    assert_int_equal(cm_mongo_delete(m, COLL, all, 1, &deleted), CM_OK);
    assert_true(deleted > 0);
    assert_int_equal(cm_mongo_count(m, COLL, all, &count), CM_OK);
    assert_int_equal(count, 0);
    bson_destroy(all);
}

static cJSON *render_name(const bson_t *doc, void *ud)
{
    (*(int *)ud)++;
    return cJSON_CreateString(cm_bson_str(doc, "name", "?"));
}

/* Keyset pagination: pages of 2 over 5 documents, following the cursor until the last page. */
static void test_find_page(void **state)
{
    char next[64] = "", ids[16];
    int renders = 0;
    (void)state;
    for (int i = 0; i < 5; i++) {
        snprintf(ids, sizeof(ids), "pg-%d", i);
        bson_t *d = doc_of(ids, ids + 3, i, 1);
        BSON_APPEND_UTF8(d, "group", "paged");
        assert_int_equal(cm_mongo_insert(m, "pages", d), CM_OK);
        bson_destroy(d);
    }
    bson_t sort = BSON_INITIALIZER;
    BSON_APPEND_INT32(&sort, "_id", 1);
    const char *want[] = {"[\"0\",\"1\"]", "[\"2\",\"3\"]", "[\"4\"]"};
    for (int pg = 0; pg < 3; pg++) {
        bson_t f = BSON_INITIALIZER, gt;
        cJSON *items = NULL;
        BSON_APPEND_UTF8(&f, "group", "paged");
        if (next[0]) {
            BSON_APPEND_DOCUMENT_BEGIN(&f, "_id", &gt);
            BSON_APPEND_UTF8(&gt, "$gt", next);
            bson_append_document_end(&f, &gt);
        }
        assert_int_equal(cm_mongo_find_page(m, "pages", &f, &sort, 2, "_id", render_name, &renders,
                                            &items, next, sizeof(next)),
                         CM_OK);
        char *txt = cJSON_PrintUnformatted(items);
        assert_string_equal(txt, want[pg]);
        free(txt);
        cJSON_Delete(items);
        bson_destroy(&f);
        if (pg < 2)
            assert_string_equal(next, pg == 0 ? "pg-1" : "pg-3");
    }
    assert_string_equal(next, ""); /* the last page */
    assert_int_equal(renders, 5); /* the look-ahead document is fetched, never rendered */
    bson_destroy(&sort);
}

static void test_bad_uri_and_unreachable(void **state)
{
    cm_mongo *x = NULL;
    (void)state;
    cm_log_init("test_mongo", CM_LOG_ERROR + 1); /* the failures are logged; expected */
    assert_int_equal(cm_mongo_create("not-a-uri", "db", &x), CM_EINVAL);
    assert_null(x);
    assert_int_equal(
        cm_mongo_create("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300", "db", &x), CM_OK);
    assert_int_equal(cm_mongo_ping(x), CM_EIO);
    bson_t *d = BCON_NEW("_id", BCON_UTF8("z"));
    assert_int_equal(cm_mongo_insert(x, COLL, d), CM_EIO);
    bson_destroy(d);
    cm_mongo_destroy(x);
    cm_mongo_destroy(NULL);
    cm_log_init("test_mongo", CM_LOG_ERROR);
}

/* Writers racing on one document each set their own field: every field must survive. Fails
 * without the per-document write lock on FerretDB, whose update is read-modify-replace. */
#define RACERS 8
#define RACE_ROUNDS 10

struct racer {
    int n;
    char id[32];
};

static void *race_one(void *arg)
{
    struct racer *r = arg;
    for (int i = 0; i < RACE_ROUNDS; i++) {
        char field[32];
        bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, set;
        snprintf(field, sizeof(field), "f%d_%d", r->n, i);
        BSON_APPEND_UTF8(&f, "_id", r->id);
        BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
        BSON_APPEND_INT32(&set, field, 1);
        bson_append_document_end(&u, &set);
        if (r->n % 2)
            cm_mongo_update(m, COLL, &f, &u, 0, 0, NULL);
        else {
            bson_t out;
            if (cm_mongo_find_and_modify(m, COLL, &f, NULL, &u, 0, 1, &out) == CM_OK)
                bson_destroy(&out);
        }
        bson_destroy(&f);
        bson_destroy(&u);
    }
    return NULL;
}

static void test_concurrent_updates_of_one_document_all_survive(void **state)
{
    pthread_t t[RACERS];
    struct racer r[RACERS];
    bson_t doc = BSON_INITIALIZER, f = BSON_INITIALIZER, got;
    (void)state;

    BSON_APPEND_UTF8(&doc, "_id", "race-1");
    assert_int_equal(cm_mongo_insert(m, COLL, &doc), CM_OK);
    for (int i = 0; i < RACERS; i++) {
        r[i].n = i;
        snprintf(r[i].id, sizeof(r[i].id), "race-1");
        assert_int_equal(pthread_create(&t[i], NULL, race_one, &r[i]), 0);
    }
    for (int i = 0; i < RACERS; i++)
        pthread_join(t[i], NULL);
    BSON_APPEND_UTF8(&f, "_id", "race-1");
    assert_int_equal(cm_mongo_find_one(m, COLL, &f, NULL, &got), CM_OK);
    for (int i = 0; i < RACERS; i++)
        for (int k = 0; k < RACE_ROUNDS; k++) {
            char field[32];
            snprintf(field, sizeof(field), "f%d_%d", i, k);
            assert_int_equal(cm_bson_int(&got, field, 0), 1);
        }
    bson_destroy(&got);
    bson_destroy(&f);
    bson_destroy(&doc);
}

static void test_find_owned(void **state)
{
    bson_t d = BSON_INITIALIZER, out;
    (void)state;
    BSON_APPEND_UTF8(&d, "_id", "own-1");
    BSON_APPEND_UTF8(&d, "tenant", "t-a");
    BSON_APPEND_UTF8(&d, "name", "mine");
    assert_int_equal(cm_mongo_insert(m, COLL, &d), CM_OK);
    assert_int_equal(cm_mongo_find_owned(m, COLL, "own-1", "t-a", NULL, &out), CM_OK);
    assert_string_equal(cm_bson_str(&out, "name", "?"), "mine");
    bson_destroy(&out);
    /* Another tenant's id reads as a missing one; so does an unknown id. */
    assert_int_equal(cm_mongo_find_owned(m, COLL, "own-1", "t-b", NULL, &out), CM_ENOTFOUND);
    assert_int_equal(cm_mongo_find_owned(m, COLL, "own-none", "t-a", NULL, &out), CM_ENOTFOUND);
    /* A document without a tenant belongs to nobody. */
    assert_int_equal(cm_mongo_find_owned(m, COLL, "a1", "", NULL, &out), CM_ENOTFOUND);
    bson_destroy(&d);
}

#define MARKED 300 /* more documents than the 120 statements that stop FerretDB 1.24 */

/* The messaging outbox marks its delivered events with one {_id: {$in: [...]}} update a batch
 * (services/messaging/messaging_outbox.c): every listed document is updated, a missing id
 * changes nothing, and the server answers (one command, whatever its number of documents). */
static void test_update_many_by_ids(void **state)
{
    static char names[MARKED][32];
    bson_t *docs[MARKED], u = BSON_INITIALIZER, set, f = BSON_INITIALIZER, in, arr, out;
    int64_t matched = -1, marked = 0;
    char key[16];
    (void)state;

    BSON_APPEND_DOCUMENT_BEGIN(&f, "_id", &in);
    BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
    for (int i = 0; i < MARKED; i++) {
        snprintf(names[i], sizeof(names[i]), "mark-%d", i);
        docs[i] = bson_new();
        BSON_APPEND_UTF8(docs[i], "_id", names[i]);
        BSON_APPEND_BOOL(docs[i], "published", false);
        snprintf(key, sizeof(key), "%d", i);
        BSON_APPEND_UTF8(&arr, key, names[i]);
    }
    BSON_APPEND_UTF8(&arr, "300", "mark-missing");
    bson_append_array_end(&in, &arr);
    bson_append_document_end(&f, &in);
    assert_int_equal(cm_mongo_insert_many(m, COLL, (const bson_t *const *)docs, MARKED, NULL), CM_OK);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_BOOL(&set, "published", true);
    bson_append_document_end(&u, &set);
    assert_int_equal(cm_mongo_update(m, COLL, &f, &u, 0, 1, &matched), CM_OK);
    assert_int_equal(matched, MARKED);
    for (int i = 0; i < MARKED; i++) {
        bson_t *one = by_id(names[i]);
        assert_int_equal(cm_mongo_find_one(m, COLL, one, NULL, &out), CM_OK);
        marked += cm_bson_bool(&out, "published", 0);
        bson_destroy(&out);
        bson_destroy(one);
        bson_destroy(docs[i]);
    }
    assert_int_equal(marked, MARKED);
    bson_destroy(&f);
    bson_destroy(&u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ping),
        cmocka_unit_test(test_insert_find_one),
        cmocka_unit_test(test_find_one_not_found),
        cmocka_unit_test(test_bson_readers),
        cmocka_unit_test(test_update_matched),
        cmocka_unit_test(test_update_many),
        cmocka_unit_test(test_find_and_modify_inc),
        cmocka_unit_test(test_find_and_modify_sort),
        cmocka_unit_test(test_unique_index_conflict),
        cmocka_unit_test(test_find_count_delete),
        cmocka_unit_test(test_distinct),
        cmocka_unit_test(test_delete_everything_of_the_run),
        cmocka_unit_test(test_find_page),
        cmocka_unit_test(test_concurrent_updates_of_one_document_all_survive),
        cmocka_unit_test(test_find_owned),
        cmocka_unit_test(test_update_many_by_ids),
        cmocka_unit_test(test_bad_uri_and_unreachable),
    };
    return cmocka_run_group_tests_name("mongo", tests, setup, teardown);
}
