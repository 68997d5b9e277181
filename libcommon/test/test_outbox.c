/* test_outbox.c - unit tests of the events outbox (common/outbox.h) against the local FerretDB
 * and Kafka: stored then produced, deleted once the delivery report came, produced again after a
 * crash between the two, old events marked published by earlier versions swept away. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <mongoc/mongoc.h>

#include "common/clock.h"
#include "common/config.h"
#include "common/log.h"
#include "common/outbox.h"
#include "common/uuid.h"

#define TOPIC "messages" /* any topic the stack creates; keys are unique per run */

static cm_mongo *db;
static cm_kafka_producer *prod;
static cm_outbox *ob;
static char dbname[64], run[40];

/* The driver's own log: errors only (FerretDB lacks endSessions, which mongoc tries at exit). */
static void driver_log(mongoc_log_level_t level, const char *domain, const char *message,
                       void *ud)
{
    (void)ud;
    if (level <= MONGOC_LOG_LEVEL_ERROR)
        fprintf(stderr, "mongoc %s: %s\n", domain, message);
}

static int setup(void **state)
{
    char rnd[9];
    (void)state;
    cm_log_init("test_outbox", CM_LOG_ERROR + 1);
    mongoc_log_set_handler(driver_log, NULL);
    if (cm_random_hex(rnd, 4) != CM_OK)
        return -1;
    snprintf(run, sizeof(run), "unit-outbox-%ld-%s", (long)getpid(), rnd);
    snprintf(dbname, sizeof(dbname), "unit_outbox_%ld", (long)getpid());
    if (cm_mongo_create(cm_config_str("MONGO_URI", "mongodb://127.0.0.1:27017"), dbname, &db) ||
        cm_outbox_create(db, "outbox", 500, &ob) ||
        cm_kafka_producer_create(cm_config_str("KAFKA_BROKERS", "127.0.0.1:9092"),
                                 cm_config_str("KAFKA_TOPIC_PREFIX", ""), cm_outbox_delivered, ob,
                                 &prod))
        return -1;
    cm_outbox_set_producer(ob, prod);
    return 0;
}

static int teardown(void **state)
{
    bson_error_t e;
    (void)state;
    cm_kafka_producer_destroy(prod);
    cm_outbox_destroy(ob);
    cm_mongo_destroy(db);
    mongoc_client_t *c = mongoc_client_new(cm_config_str("MONGO_URI", "mongodb://127.0.0.1:27017"));
    if (c) {
        mongoc_database_t *d = mongoc_client_get_database(c, dbname);
        mongoc_database_drop(d, &e);
        mongoc_database_destroy(d);
        mongoc_client_destroy(c);
    }
    return 0;
}

/* 0: stored, not yet delivered; 1: marked published (earlier versions); -1: gone (delivered). */
static int published(const char *id)
{
    bson_t f = BSON_INITIALIZER, doc;
    int p = -1;
    BSON_APPEND_UTF8(&f, "_id", id);
    if (cm_mongo_find_one(db, "outbox", &f, NULL, &doc) == CM_OK) {
        p = cm_bson_bool(&doc, "published", 0);
        bson_destroy(&doc);
    }
    bson_destroy(&f);
    return p;
}

static void test_publish_deletes_after_delivery(void **state)
{
    char ids[3][CM_UUID_STRLEN], key[64];
    (void)state;
    snprintf(key, sizeof(key), "%s-a", run);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(cm_uuid_v7(ids[i]), CM_OK);
        assert_int_equal(cm_outbox_publish(ob, TOPIC, key, ids[i], "{\"n\":1}", NULL, 0), CM_OK);
        assert_int_equal(published(ids[i]), 0); /* stored before anything is known */
    }
    assert_int_equal(cm_kafka_flush(prod, 10000), CM_OK);
    assert_int_equal(cm_outbox_tick(ob), CM_OK);
    for (int i = 0; i < 3; i++)
        assert_int_equal(published(ids[i]), -1); /* acknowledged: the topic holds it */
    usleep(600 * 1000);                          /* past the stale age: nothing to produce */
    assert_int_equal(cm_outbox_tick(ob), CM_OK);
    assert_int_equal(cm_outbox_republished(ob), 0);
}

static void test_unpublished_events_are_produced_again(void **state)
{
    char id[CM_UUID_STRLEN], key[64];
    bson_t d = BSON_INITIALIZER;
    int64_t stored;
    (void)state;
    /* The process stored the event and died before producing it. */
    assert_int_equal(cm_uuid_v7(id), CM_OK);
    snprintf(key, sizeof(key), "%s-b", run);
    BSON_APPEND_UTF8(&d, "_id", id);
    BSON_APPEND_UTF8(&d, "topic", TOPIC);
    BSON_APPEND_UTF8(&d, "key", key);
    BSON_APPEND_UTF8(&d, "value", "{\"n\":2}");
    BSON_APPEND_BOOL(&d, "published", 0);
    BSON_APPEND_DATE_TIME(&d, "created_at", stored = cm_clock_now_ms());
    assert_int_equal(cm_mongo_insert(db, "outbox", &d), CM_OK);
    bson_destroy(&d);
    assert_int_equal(cm_outbox_tick(ob), CM_OK);
    /* not stale yet (500 ms), unless a loaded machine made the insert and the tick outlast it */
    if (cm_clock_now_ms() - stored < 500)
        assert_int_equal(cm_outbox_republished(ob), 0);
    usleep(600 * 1000);
    assert_int_equal(cm_outbox_tick(ob), CM_OK);
    assert_int_equal(cm_outbox_republished(ob), 1);
    assert_int_equal(cm_kafka_flush(prod, 10000), CM_OK);
    assert_int_equal(cm_outbox_tick(ob), CM_OK);
    assert_int_equal(published(id), -1); /* the broker acknowledged it */
    assert_int_equal(cm_outbox_republished(ob), 1);
}

static void test_old_published_events_are_swept(void **state)
{
    char id[CM_UUID_STRLEN];
    bson_t d = BSON_INITIALIZER;
    (void)state;
    assert_int_equal(cm_uuid_v7(id), CM_OK);
    BSON_APPEND_UTF8(&d, "_id", id);
    BSON_APPEND_BOOL(&d, "published", 1);
    BSON_APPEND_DATE_TIME(&d, "created_at", cm_clock_now_ms() - 2 * 86400 * 1000LL);
    assert_int_equal(cm_mongo_insert(db, "outbox", &d), CM_OK);
    bson_destroy(&d);
    assert_int_equal(cm_outbox_tick(ob), CM_OK);
    assert_int_equal(published(id), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_publish_deletes_after_delivery),
        cmocka_unit_test(test_unpublished_events_are_produced_again),
        cmocka_unit_test(test_old_published_events_are_swept),
    };
    return cmocka_run_group_tests_name("outbox", tests, setup, teardown);
}
