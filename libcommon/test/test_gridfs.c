/* test_gridfs.c - unit tests of the GridFS calls of common/mongo.h against the local FerretDB. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mongoc/mongoc.h>

#include "common/config.h"
#include "common/log.h"
#include "common/mongo.h"

#define BUCKET "blobs"
#define CHUNK (255 * 1024) /* the GridFS default chunk size the bucket uses */

static cm_mongo *m;
static char db[64];
static const char *uri;

static int setup(void **state)
{
    (void)state;
    cm_log_init("test_gridfs", CM_LOG_ERROR);
    uri = cm_config_str("MONGO_URI", "mongodb://127.0.0.1:27017");
    snprintf(db, sizeof(db), "unit_gridfs_%ld", (long)getpid());
    return cm_mongo_create(uri, db, &m) == CM_OK ? 0 : -1;
}

static int teardown(void **state)
{
    bson_error_t e;
    (void)state;
    cm_mongo_destroy(m);
    mongoc_client_t *c = mongoc_client_new(uri);
    if (c) {
        mongoc_database_t *d = mongoc_client_get_database(c, db);
        if (!mongoc_database_drop(d, &e))
            fprintf(stderr, "test_gridfs: drop %s: %s\n", db, e.message);
        mongoc_database_destroy(d);
        mongoc_client_destroy(c);
    }
    return 0;
}

/* A deterministic, non-repeating-per-chunk pattern so a misplaced byte is caught. */
static unsigned char *pattern(size_t n)
{
    unsigned char *p = malloc(n ? n : 1);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (unsigned char)x;
    }
    return p;
}

static void test_put_size_read_whole(void **state)
{
    size_t n = 3 * CHUNK + 1234, got = 0;
    unsigned char *data = pattern(n), *back = malloc(n + 10);
    int64_t len = -1;
    (void)state;
    assert_int_equal(cm_mongo_gridfs_put(m, BUCKET, "whole", data, n), CM_OK);
    assert_int_equal(cm_mongo_gridfs_size(m, BUCKET, "whole", &len), CM_OK);
    assert_int_equal(len, (int64_t)n);
    assert_int_equal(cm_mongo_gridfs_read(m, BUCKET, "whole", 0, back, n + 10, &got), CM_OK);
    assert_int_equal(got, n);
    assert_memory_equal(back, data, n);
    free(data);
    free(back);
}

static void test_read_ranges_across_chunks(void **state)
{
    size_t n = 2 * CHUNK + 777, got;
    unsigned char *data = pattern(n), buf[4096];
    struct {
        int64_t off;
        size_t len, want;
    } cases[] = {
        {0, 1, 1},                      /* first byte */
        {CHUNK - 10, 20, 20},           /* across the first chunk boundary */
        {CHUNK, 100, 100},              /* the start of the second chunk */
        {2 * CHUNK + 700, 4096, 77},    /* the tail: short read */
        {(int64_t)n - 1, 10, 1},        /* the last byte */
        {(int64_t)n, 10, 0},            /* at the end */
        {(int64_t)n + 100, 10, 0},      /* past the end */
    };
    (void)state;
    assert_int_equal(cm_mongo_gridfs_put(m, BUCKET, "ranges", data, n), CM_OK);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        got = 999;
        assert_int_equal(cm_mongo_gridfs_read(m, BUCKET, "ranges", cases[i].off, buf,
                                              cases[i].len, &got),
                         CM_OK);
        if (got != cases[i].want)
            fail_msg("case %zu: offset %lld length %zu: got %zu bytes, want %zu", i,
                     (long long)cases[i].off, cases[i].len, got, cases[i].want);
        if (got)
            assert_memory_equal(buf, data + cases[i].off, got);
    }
    assert_int_equal(cm_mongo_gridfs_read(m, BUCKET, "ranges", -1, buf, 1, &got), CM_EINVAL);
    free(data);
}

static void test_empty_file(void **state)
{
    int64_t len = -1;
    size_t got = 5;
    char buf[8];
    (void)state;
    assert_int_equal(cm_mongo_gridfs_put(m, BUCKET, "empty", "", 0), CM_OK);
    assert_int_equal(cm_mongo_gridfs_size(m, BUCKET, "empty", &len), CM_OK);
    assert_int_equal(len, 0);
    assert_int_equal(cm_mongo_gridfs_read(m, BUCKET, "empty", 0, buf, sizeof(buf), &got), CM_OK);
    assert_int_equal(got, 0);
}

static void test_duplicate_id_and_delete(void **state)
{
    int64_t len;
    size_t got;
    char buf[8];
    (void)state;
    assert_int_equal(cm_mongo_gridfs_put(m, BUCKET, "dup", "abc", 3), CM_OK);
    assert_int_equal(cm_mongo_gridfs_put(m, BUCKET, "dup", "xyz", 3), CM_ECONFLICT);
    assert_int_equal(cm_mongo_gridfs_read(m, BUCKET, "dup", 0, buf, 3, &got), CM_OK);
    assert_memory_equal(buf, "abc", 3); /* the first write stays */
    assert_int_equal(cm_mongo_gridfs_delete(m, BUCKET, "dup"), CM_OK);
    assert_int_equal(cm_mongo_gridfs_size(m, BUCKET, "dup", &len), CM_ENOTFOUND);
    assert_int_equal(cm_mongo_gridfs_read(m, BUCKET, "dup", 0, buf, 3, &got), CM_ENOTFOUND);
    assert_int_equal(cm_mongo_gridfs_delete(m, BUCKET, "dup"), CM_ENOTFOUND);
    /* Once deleted, the id can be used again. */
    assert_int_equal(cm_mongo_gridfs_put(m, BUCKET, "dup", "xyz", 3), CM_OK);
}

static void test_missing_chunk_is_eio(void **state)
{
    unsigned char *data = pattern(2 * CHUNK);
    unsigned char buf[16];
    bson_t f = BSON_INITIALIZER;
    int64_t deleted = 0;
    size_t got;
    char coll[64];
    (void)state;
    assert_int_equal(cm_mongo_gridfs_put(m, BUCKET, "holed", data, 2 * CHUNK), CM_OK);
    snprintf(coll, sizeof(coll), "%s.chunks", BUCKET);
    BSON_APPEND_UTF8(&f, "files_id", "holed");
    BSON_APPEND_INT32(&f, "n", 1);
    assert_int_equal(cm_mongo_delete(m, coll, &f, 0, &deleted), CM_OK);
    assert_int_equal(deleted, 1);
    cm_log_init("test_gridfs", CM_LOG_ERROR + 1); /* the corruption is logged; keep output clean */
    assert_int_equal(cm_mongo_gridfs_read(m, BUCKET, "holed", CHUNK + 5, buf, 8, &got), CM_EIO);
    cm_log_init("test_gridfs", CM_LOG_ERROR);
    assert_int_equal(cm_mongo_gridfs_read(m, BUCKET, "holed", 5, buf, 8, &got), CM_OK);
    assert_memory_equal(buf, data + 5, 8); /* the chunk that is there still reads */
    bson_destroy(&f);
    free(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_size_read_whole),
        cmocka_unit_test(test_read_ranges_across_chunks),
        cmocka_unit_test(test_empty_file),
        cmocka_unit_test(test_duplicate_id_and_delete),
        cmocka_unit_test(test_missing_chunk_is_eio),
    };
    return cmocka_run_group_tests_name("gridfs", tests, setup, teardown);
}
