/* test_kafka.c - unit tests of the Kafka producer and consumer (common/kafka.h), real broker. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/config.h"
#include "common/kafka.h"
#include "common/log.h"
#include "common/uuid.h"

#define TOPIC "messages" /* created by deploy/stack.sh with 3 partitions */
#define NREC 5
#define PROBES 12
#define RETRY_KEY 2 /* the record whose first delivery the handler refuses */

static const char *brokers, *prefix;
static char run[40];   /* unique per run: keys and the consumer group derive from it */
static char group[64];
static cm_kafka_producer *prod;
static cm_kafka_consumer *cons;

/* Delivery reports of the records of this test (opaque = 1 + index), counted per status. */
static atomic_int delivered_ok[NREC], delivered_err[NREC], probe_reports;

static void on_delivery(cm_err status, void *opaque, void *ud)
{
    intptr_t i = (intptr_t)opaque - 1;
    (void)ud;
    if (i < 0 || i >= NREC) {
        atomic_fetch_add(&probe_reports, 1);
        return;
    }
    if (status == CM_OK)
        atomic_fetch_add(&delivered_ok[i], 1);
    else
        atomic_fetch_add(&delivered_err[i], 1);
}

static int setup(void **state)
{
    char rnd[9];
    (void)state;
    cm_log_init("test_kafka", CM_LOG_ERROR);
    brokers = cm_config_str("KAFKA_BROKERS", "127.0.0.1:9092");
    prefix = cm_config_str("KAFKA_TOPIC_PREFIX", "");
    if (cm_random_hex(rnd, 4) != CM_OK)
        return -1;
    snprintf(run, sizeof(run), "unit-%ld-%s", (long)getpid(), rnd);
    snprintf(group, sizeof(group), "%s-group", run);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cm_kafka_consumer_destroy(cons);
    cm_kafka_producer_destroy(prod);
    return 0;
}

static void test_create(void **state)
{
    const char *const topics[] = {TOPIC};
    (void)state;
    /* The consumer first: a group with no committed offset starts at the end (latest). */
    assert_int_equal(cm_kafka_consumer_create(brokers, prefix, group, topics, 1, 0, &cons), CM_OK);
    assert_int_equal(cm_kafka_producer_create(brokers, prefix, on_delivery, NULL, &prod), CM_OK);
    assert_int_equal(cm_kafka_producer_healthy(prod), 1);
}

/* Keys of the form "<run>-<tag><n>". */
static int our_key(const cm_kafka_record *rec, const char *tag, int *n)
{
    char want[64];
    int len = snprintf(want, sizeof(want), "%s-%s", run, tag);
    if (rec->key == NULL || rec->key_len <= (size_t)len || memcmp(rec->key, want, (size_t)len))
        return 0;
    *n = 0;
    for (size_t i = (size_t)len; i < rec->key_len; i++) {
        if (rec->key[i] < '0' || rec->key[i] > '9')
            return 0;
        *n = *n * 10 + (rec->key[i] - '0');
    }
    return 1;
}

struct probe_seen {
    int round;
    int seen[PROBES];
};

static cm_err probe_handler(const cm_kafka_record *rec, void *ud)
{
    struct probe_seen *ps = ud;
    int n;
    if (our_key(rec, "probe", &n) && n / PROBES == ps->round)
        ps->seen[n % PROBES] = 1;
    return CM_OK;
}

/* Produces rounds of probes until one whole round comes back: then the consumer owns its
 * partitions and has a position, so what is produced next will be seen. */
static void wait_until_consuming(cm_kafka_consumer *c, const char *what)
{
    int64_t deadline = cm_clock_now_ms() + 30000;
    struct probe_seen ps;
    static int round;

    for (;;) {
        char key[64];
        memset(&ps, 0, sizeof(ps));
        ps.round = round;
        for (int i = 0; i < PROBES; i++) {
            int k = snprintf(key, sizeof(key), "%s-probe%d", run, round * PROBES + i);
            assert_int_equal(cm_kafka_produce(prod, TOPIC, key, (size_t)k, "probe", 5, NULL, 0,
                                              NULL),
                             CM_OK);
        }
        assert_int_equal(cm_kafka_flush(prod, 10000), CM_OK);
        int64_t round_end = cm_clock_now_ms() + 2000;
        int all = 0;
        while (!all && cm_clock_now_ms() < round_end) {
            cm_kafka_consumer_poll(c, 200, probe_handler, &ps);
            all = 1;
            for (int i = 0; i < PROBES; i++)
                all &= ps.seen[i];
        }
        round++;
        if (all)
            return;
        if (cm_clock_now_ms() > deadline)
            fail_msg("%s: the consumer saw no complete round of probes within 30 s", what);
    }
}

static void test_consumer_gets_assigned(void **state)
{
    (void)state;
    assert_non_null(prod);
    assert_non_null(cons);
    wait_until_consuming(cons, "first consumer");
}

static void test_produce_five_delivery_reports(void **state)
{
    cm_kafka_header hdr[] = {{"x-request-id", "unit-rid"}, {"traceparent", "00-abc-def-01"}};
    char key[64], value[128];
    (void)state;
    assert_non_null(prod);
    assert_non_null(cons);
    for (int i = 0; i < NREC; i++) {
        int k = snprintf(key, sizeof(key), "%s-rec%d", run, i);
        int v = snprintf(value, sizeof(value), "{\"n\":%d,\"run\":\"%s\"}", i, run);
        assert_int_equal(cm_kafka_produce(prod, TOPIC, key, (size_t)k, value, (size_t)v, hdr, 2,
                                          (void *)(intptr_t)(i + 1)),
                         CM_OK);
    }
    assert_int_equal(cm_kafka_flush(prod, 15000), CM_OK);
    assert_int_equal(cm_kafka_producer_outq(prod), 0);
    /* Reports are served on the producer's thread; flush returns once they were. */
    for (int tries = 0; tries < 100; tries++) {
        int ok = 0;
        for (int i = 0; i < NREC; i++)
            ok += atomic_load(&delivered_ok[i]);
        if (ok == NREC)
            break;
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < NREC; i++) {
        assert_int_equal(atomic_load(&delivered_ok[i]), 1);
        assert_int_equal(atomic_load(&delivered_err[i]), 0);
    }
}

struct consumed {
    int ok[NREC];       /* handler returned CM_OK */
    int refused[NREC];  /* handler returned CM_EAGAIN */
    int32_t part[NREC]; /* where the record was */
    int64_t off[NREC];
    int moved;          /* a redelivery at another offset */
    int bad_value;
    int bad_topic;
};

static cm_err consume_handler(const cm_kafka_record *rec, void *ud)
{
    struct consumed *c = ud;
    char want[128];
    int n;

    if (!our_key(rec, "rec", &n) || n >= NREC)
        return CM_OK; /* probes, other tests' records */
    if (strcmp(rec->topic, TOPIC) != 0)
        c->bad_topic = 1;
    int v = snprintf(want, sizeof(want), "{\"n\":%d,\"run\":\"%s\"}", n, run);
    if (rec->value_len != (size_t)v || memcmp(rec->value, want, (size_t)v) != 0)
        c->bad_value = 1;
    if (c->ok[n] + c->refused[n] > 0 && (c->part[n] != rec->partition || c->off[n] != rec->offset))
        c->moved = 1;
    c->part[n] = rec->partition;
    c->off[n] = rec->offset;
    if (n == RETRY_KEY && c->refused[n] == 0) {
        c->refused[n]++;
        return CM_EAGAIN; /* not done: the same record must come back */
    }
    c->ok[n]++;
    return CM_OK;
}

static void test_consume_with_one_retry(void **state)
{
    struct consumed c;
    int64_t deadline = cm_clock_now_ms() + 20000;
    int refused_polls = 0;
    (void)state;
    assert_non_null(prod);
    assert_non_null(cons);
    memset(&c, 0, sizeof(c));
    for (;;) {
        int done = 1;
        for (int i = 0; i < NREC; i++)
            done &= c.ok[i] > 0;
        if (done)
            break;
        if (cm_clock_now_ms() > deadline)
            fail_msg("not every record came back within 20 s: ok %d %d %d %d %d", c.ok[0],
                     c.ok[1], c.ok[2], c.ok[3], c.ok[4]);
        cm_err rc = cm_kafka_consumer_poll(cons, 200, consume_handler, &c);
        if (rc == CM_EAGAIN && c.refused[RETRY_KEY] == 1 && c.ok[RETRY_KEY] == 0)
            refused_polls++; /* the refusal itself, or an empty poll */
    }
    assert_true(refused_polls >= 1); /* poll returned the handler's error */
    assert_int_equal(c.refused[RETRY_KEY], 1);
    for (int i = 0; i < NREC; i++)
        assert_int_equal(c.ok[i], 1); /* each done exactly once: no skips, no duplicates */
    assert_int_equal(c.moved, 0);     /* the retried record is the same partition and offset */
    assert_int_equal(c.bad_value, 0);
    assert_int_equal(c.bad_topic, 0);
}

static cm_err count_handler(const cm_kafka_record *rec, void *ud)
{
    int *again = ud, n;
    if (our_key(rec, "rec", &n))
        (*again)++;
    return CM_OK;
}

static void test_offsets_committed_on_destroy(void **state)
{
    const char *const topics[] = {TOPIC};
    int again = 0;
    (void)state;
    assert_non_null(prod);
    assert_non_null(cons);
    /* Leaving the group commits what was done; the group then resumes after it, even when
     * asked to start from the beginning. */
    cm_kafka_consumer_destroy(cons);
    cons = NULL;
    assert_int_equal(cm_kafka_consumer_create(brokers, prefix, group, topics, 1, 1, &cons), CM_OK);
    wait_until_consuming(cons, "second consumer");
    for (int i = 0; i < 5; i++)
        cm_kafka_consumer_poll(cons, 100, count_handler, &again);
    assert_int_equal(again, 0);
}

static void test_bad_arguments(void **state)
{
    const char *const topics[] = {TOPIC};
    cm_kafka_consumer *c = NULL;
    cm_kafka_producer *p = NULL;
    char long_name[300];
    (void)state;
    assert_non_null(prod);
    assert_int_equal(cm_kafka_consumer_create(brokers, prefix, group, topics, 0, 0, &c), CM_EINVAL);
    assert_int_equal(cm_kafka_consumer_create(brokers, prefix, NULL, topics, 1, 0, &c), CM_EINVAL);
    assert_int_equal(cm_kafka_consumer_create(NULL, prefix, group, topics, 1, 0, &c), CM_EINVAL);
    assert_null(c);
    assert_int_equal(cm_kafka_producer_create(NULL, "", NULL, NULL, &p), CM_EINVAL);
    memset(long_name, 'p', 100);
    long_name[100] = '\0';
    assert_int_equal(cm_kafka_producer_create(brokers, long_name, NULL, NULL, &p), CM_EINVAL);
    assert_null(p);
    /* A topic name longer than Kafka allows is refused up front, with no delivery report. */
    int before = atomic_load(&probe_reports);
    memset(long_name, 't', 260);
    long_name[260] = '\0';
    assert_int_equal(cm_kafka_produce(prod, long_name, "k", 1, "v", 1, NULL, 0, NULL), CM_EINVAL);
    assert_int_equal(cm_kafka_flush(prod, 1000), CM_OK);
    assert_int_equal(atomic_load(&probe_reports), before);
    cm_kafka_consumer_destroy(NULL);
    cm_kafka_producer_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create),
        cmocka_unit_test(test_consumer_gets_assigned),
        cmocka_unit_test(test_produce_five_delivery_reports),
        cmocka_unit_test(test_consume_with_one_retry),
        cmocka_unit_test(test_offsets_committed_on_destroy),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests_name("kafka", tests, setup, teardown);
}
