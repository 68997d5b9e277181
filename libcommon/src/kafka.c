/* kafka.c - librdkafka producer (idempotent, acks=all) and at-least-once consumer. */
#include "common/kafka.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "common/log.h"

#define TOPIC_MAX 249 /* Kafka's topic name limit */

struct cm_kafka_producer {
    rd_kafka_t *rk;
    char prefix[64];
    cm_kafka_delivery_fn on_delivery;
    void *ud;
    pthread_t thread;
    atomic_int stop;
    atomic_int healthy;
};

struct cm_kafka_consumer {
    rd_kafka_t *rk;
    char prefix[64];
    int from_beginning;
};

static int set(rd_kafka_conf_t *conf, const char *k, const char *v)
{
    char err[256];
    if (rd_kafka_conf_set(conf, k, v, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
        cm_error("kafka: config %s=%s: %s", k, v, err);
        return -1;
    }
    return 0;
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    cm_kafka_producer *p = opaque;
    (void)rk;
    if (m->err)
        cm_warn("kafka: delivery to %s failed: %s", rd_kafka_topic_name(m->rkt),
                rd_kafka_err2str(m->err));
    if (p->on_delivery)
        p->on_delivery(m->err ? CM_EIO : CM_OK, m->_private, p->ud);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    cm_kafka_producer *p = opaque;
    (void)rk;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN || err == RD_KAFKA_RESP_ERR__TRANSPORT)
        atomic_store(&p->healthy, 0);
    cm_warn("kafka: %s", reason);
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[256];
        rd_kafka_fatal_error(rk, why, sizeof(why));
        cm_error("kafka: fatal producer error: %s", why);
    }
}

static void *poll_thread(void *arg)
{
    cm_kafka_producer *p = arg;
    while (!atomic_load(&p->stop))
        rd_kafka_poll(p->rk, 100);
    return NULL;
}

cm_err cm_kafka_producer_create(const char *brokers, const char *topic_prefix,
                                cm_kafka_delivery_fn on_delivery, void *ud,
                                cm_kafka_producer **out)
{
    cm_kafka_producer *p;
    rd_kafka_conf_t *conf;
    char err[256];

    if (brokers == NULL || strlen(topic_prefix) >= sizeof(p->prefix))
        return CM_EINVAL;
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return CM_ENOMEM;
    snprintf(p->prefix, sizeof(p->prefix), "%s", topic_prefix);
    p->on_delivery = on_delivery;
    p->ud = ud;
    atomic_store(&p->healthy, 1);
    conf = rd_kafka_conf_new();
    /* linger.ms 5: a few milliseconds of batching buy throughput (DESIGN.md notes).
     * socket.nagle.disable: the idempotent producer keeps up to 5 requests in flight, and
     * Nagle's algorithm holds a small request back until the one before it is acknowledged,
     * which with delayed ACKs costs tens of milliseconds. Measured on the socket bench's Kafka
     * hop (bench/README.md, socket section, 2026-11-22; 6,262 records/s, load average 1):
     * with linger.ms 5 the p99 was 6.9-10.1 ms in five runs without Nagle, and 6.8-10.6 ms
     * in five, 58 and 70 ms in two of seven with it (with linger.ms 1: 62 and 148 ms with it,
     * 3.1 without). The cost: a request goes out in its own TCP segment even when another
     * would soon follow, which linger.ms already makes rare. */
    if (set(conf, "bootstrap.servers", brokers) || set(conf, "enable.idempotence", "true") ||
        set(conf, "acks", "all") || set(conf, "linger.ms", "5") ||
        set(conf, "socket.nagle.disable", "true") ||
        set(conf, "message.timeout.ms", "30000") || set(conf, "compression.type", "lz4")) {
        rd_kafka_conf_destroy(conf);
        free(p);
        return CM_EINVAL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_opaque(conf, p);
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (p->rk == NULL) {
        cm_error("kafka: cannot create producer: %s", err);
        rd_kafka_conf_destroy(conf);
        free(p);
        return CM_EINVAL;
    }
    if (pthread_create(&p->thread, NULL, poll_thread, p) != 0) {
        rd_kafka_destroy(p->rk);
        free(p);
        return CM_ENOMEM;
    }
    *out = p;
    return CM_OK;
}

cm_err cm_kafka_produce(cm_kafka_producer *p, const char *topic, const char *key, size_t key_len,
                        const void *value, size_t value_len, const cm_kafka_header *headers,
                        size_t nheaders, void *opaque)
{
    char full[TOPIC_MAX + 1];
    rd_kafka_headers_t *hdrs = NULL;
    rd_kafka_resp_err_t err;

    if (snprintf(full, sizeof(full), "%s%s", p->prefix, topic) >= (int)sizeof(full))
        return CM_EINVAL;
    if (nheaders > 0) {
        hdrs = rd_kafka_headers_new(nheaders);
        for (size_t i = 0; i < nheaders; i++)
            rd_kafka_header_add(hdrs, headers[i].name, -1, headers[i].value, -1);
    }
    /* The array form: RD_KAFKA_V_HEADERS expands to two varargs, so it cannot be chosen
     * with a conditional expression in the variadic form. */
    rd_kafka_vu_t vu[6];
    size_t nvu = 0;
    rd_kafka_error_t *perr;
    vu[nvu].vtype = RD_KAFKA_VTYPE_TOPIC;
    vu[nvu++].u.cstr = full;
    vu[nvu].vtype = RD_KAFKA_VTYPE_KEY;
    vu[nvu].u.mem.ptr = (void *)key;
    vu[nvu++].u.mem.size = key_len;
    vu[nvu].vtype = RD_KAFKA_VTYPE_VALUE;
    vu[nvu].u.mem.ptr = (void *)value;
    vu[nvu++].u.mem.size = value_len;
    vu[nvu].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
    vu[nvu++].u.i = RD_KAFKA_MSG_F_COPY;
    vu[nvu].vtype = RD_KAFKA_VTYPE_OPAQUE;
    vu[nvu++].u.ptr = opaque;
    if (hdrs) {
        vu[nvu].vtype = RD_KAFKA_VTYPE_HEADERS;
        vu[nvu++].u.headers = hdrs;
    }
    perr = rd_kafka_produceva(p->rk, vu, nvu);
    err = perr ? rd_kafka_error_code(perr) : RD_KAFKA_RESP_ERR_NO_ERROR;
    rd_kafka_error_destroy(perr);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
        return CM_OK;
    /* On failure the headers were not taken over. */
    rd_kafka_headers_destroy(hdrs);
    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL)
        return CM_EAGAIN;
    cm_warn("kafka: produce to %s failed: %s", full, rd_kafka_err2str(err));
    if (err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC)
        return CM_EINVAL;
    return CM_EIO;
}

cm_err cm_kafka_flush(cm_kafka_producer *p, int timeout_ms)
{
    return rd_kafka_flush(p->rk, timeout_ms) == RD_KAFKA_RESP_ERR_NO_ERROR ? CM_OK : CM_ETIMEOUT;
}

int cm_kafka_producer_outq(cm_kafka_producer *p)
{
    return rd_kafka_outq_len(p->rk);
}

int cm_kafka_producer_healthy(cm_kafka_producer *p)
{
    const struct rd_kafka_metadata *md = NULL;
    /* A metadata round trip proves a broker answers; cheap enough for /health/ready. */
    if (rd_kafka_metadata(p->rk, 0, NULL, &md, 2000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return 0;
    rd_kafka_metadata_destroy(md);
    atomic_store(&p->healthy, 1);
    return 1;
}

void cm_kafka_producer_destroy(cm_kafka_producer *p)
{
    if (p == NULL)
        return;
    if (rd_kafka_flush(p->rk, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        cm_error("kafka: %d records not delivered at shutdown", rd_kafka_outq_len(p->rk));
    atomic_store(&p->stop, 1);
    pthread_join(p->thread, NULL);
    rd_kafka_destroy(p->rk);
    free(p);
}

/* A group that starts at the latest offset must not lose what was produced between its
 * first assignment and its first commit: when a member died in that window, "latest" applied
 * again by its successor skipped every record the dead one had not finished. So partitions
 * assigned without a committed offset get the current end committed at once (what "latest"
 * meant at that moment), and a successor resumes from there. */
static void pin_latest(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts)
{
    rd_kafka_topic_partition_list_t *fresh = rd_kafka_topic_partition_list_new(parts->cnt);
    rd_kafka_resp_err_t e;

    if (rd_kafka_committed(rk, parts, 5000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        goto out; /* the assignment then falls back on auto.offset.reset */
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *p = &parts->elems[i];
        int64_t lo = 0, hi = 0;
        if (p->offset != RD_KAFKA_OFFSET_INVALID)
            continue;
        if (rd_kafka_query_watermark_offsets(rk, p->topic, p->partition, &lo, &hi, 5000) !=
            RD_KAFKA_RESP_ERR_NO_ERROR)
            continue;
        p->offset = hi;
        rd_kafka_topic_partition_list_add(fresh, p->topic, p->partition)->offset = hi;
    }
    if (fresh->cnt > 0 && (e = rd_kafka_commit(rk, fresh, 0)) != RD_KAFKA_RESP_ERR_NO_ERROR)
        cm_warn("kafka: first offsets of %d partitions not committed: %s", fresh->cnt,
                rd_kafka_err2str(e));
out:
    rd_kafka_topic_partition_list_destroy(fresh);
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    cm_kafka_consumer *c = opaque;
    int cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        if (!c->from_beginning)
            pin_latest(rk, parts);
        if (cooperative)
            rd_kafka_error_destroy(rd_kafka_incremental_assign(rk, parts));
        else
            rd_kafka_assign(rk, parts);
    } else if (cooperative) {
        rd_kafka_error_destroy(rd_kafka_incremental_unassign(rk, parts));
    } else {
        rd_kafka_assign(rk, NULL);
    }
}

cm_err cm_kafka_consumer_create(const char *brokers, const char *topic_prefix, const char *group,
                                const char *const *topics, size_t ntopics, int from_beginning,
                                cm_kafka_consumer **out)
{
    cm_kafka_consumer *c;
    rd_kafka_conf_t *conf;
    rd_kafka_topic_partition_list_t *subs;
    char err[256], full[TOPIC_MAX + 1];
    rd_kafka_resp_err_t e;

    if (brokers == NULL || group == NULL || ntopics == 0 ||
        strlen(topic_prefix) >= sizeof(c->prefix))
        return CM_EINVAL;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return CM_ENOMEM;
    snprintf(c->prefix, sizeof(c->prefix), "%s", topic_prefix);
    c->from_beginning = from_beginning;
    conf = rd_kafka_conf_new();
    if (set(conf, "bootstrap.servers", brokers) || set(conf, "group.id", group) ||
        set(conf, "enable.auto.offset.store", "false") || set(conf, "enable.auto.commit", "true") ||
        set(conf, "auto.offset.reset", from_beginning ? "earliest" : "latest") ||
        set(conf, "enable.partition.eof", "false") ||
        /* A consumer that dies keeps its partitions until its session times out (45 s by
         * default): 10 s hands them to the survivors sooner, within the broker's 6..300 s. */
        set(conf, "session.timeout.ms", "10000") || set(conf, "heartbeat.interval.ms", "3000")) {
        rd_kafka_conf_destroy(conf);
        free(c);
        return CM_EINVAL;
    }
    rd_kafka_conf_set_opaque(conf, c);
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (c->rk == NULL) {
        cm_error("kafka: cannot create consumer: %s", err);
        rd_kafka_conf_destroy(conf);
        free(c);
        return CM_EINVAL;
    }
    rd_kafka_poll_set_consumer(c->rk);
    subs = rd_kafka_topic_partition_list_new((int)ntopics);
    for (size_t i = 0; i < ntopics; i++) {
        snprintf(full, sizeof(full), "%s%s", c->prefix, topics[i]);
        rd_kafka_topic_partition_list_add(subs, full, RD_KAFKA_PARTITION_UA);
    }
    e = rd_kafka_subscribe(c->rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        cm_error("kafka: subscribe failed: %s", rd_kafka_err2str(e));
        rd_kafka_destroy(c->rk);
        free(c);
        return CM_EIO;
    }
    *out = c;
    return CM_OK;
}

cm_err cm_kafka_consumer_poll_batch(cm_kafka_consumer *c, int timeout_ms, size_t max,
                                    cm_kafka_batch_handler handler, void *ud)
{
    rd_kafka_message_t **ms = NULL;
    cm_kafka_record *recs = NULL;
    rd_kafka_topic_partition_list_t *l = NULL;
    size_t n = 0, plen = strlen(c->prefix);
    cm_err rc = CM_ENOMEM;

    if (max == 0)
        return CM_EINVAL;
    ms = calloc(max, sizeof(*ms));
    recs = calloc(max, sizeof(*recs));
    if (ms == NULL || recs == NULL)
        goto out;
    while (n < max) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, n == 0 ? timeout_ms : 0);
        if (m == NULL)
            break;
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                cm_warn("kafka: consumer: %s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            if (n == 0) {
                rc = CM_EIO;
                goto out;
            }
            break;
        }
        ms[n++] = m;
    }
    if (n == 0) {
        rc = CM_EAGAIN;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const char *name = rd_kafka_topic_name(ms[i]->rkt);
        recs[i].topic = strncmp(name, c->prefix, plen) == 0 ? name + plen : name;
        recs[i].partition = ms[i]->partition;
        recs[i].offset = ms[i]->offset;
        recs[i].key = ms[i]->key;
        recs[i].key_len = ms[i]->key_len;
        recs[i].value = ms[i]->payload ? ms[i]->payload : "";
        recs[i].value_len = ms[i]->len;
        recs[i].timestamp_ms = rd_kafka_message_timestamp(ms[i], NULL);
    }
    rc = handler(recs, n, ud);
    /* Per partition: after success the offset after its last record; after a failure its
     * first record of the batch, to seek back to. */
    l = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++) {
        const char *name = rd_kafka_topic_name(ms[i]->rkt);
        rd_kafka_topic_partition_t *p = rd_kafka_topic_partition_list_find(l, name, ms[i]->partition);
        if (p == NULL)
            rd_kafka_topic_partition_list_add(l, name, ms[i]->partition)->offset =
                rc == CM_OK ? ms[i]->offset + 1 : ms[i]->offset;
        else if (rc == CM_OK && ms[i]->offset + 1 > p->offset)
            p->offset = ms[i]->offset + 1;
        else if (rc != CM_OK && ms[i]->offset < p->offset)
            p->offset = ms[i]->offset;
    }
    if (rc == CM_OK)
        rd_kafka_offsets_store(c->rk, l);
    else
        rd_kafka_seek_partitions(c->rk, l, 5000);
out:
    if (l)
        rd_kafka_topic_partition_list_destroy(l);
    for (size_t i = 0; i < n; i++)
        rd_kafka_message_destroy(ms[i]);
    free(ms);
    free(recs);
    return rc;
}

int64_t cm_kafka_consumer_lag(cm_kafka_consumer *c)
{
    rd_kafka_topic_partition_list_t *l = NULL;
    int64_t lag = 0;

    if (rd_kafka_assignment(c->rk, &l) != RD_KAFKA_RESP_ERR_NO_ERROR || l == NULL)
        return -1;
    if (l->cnt == 0 || rd_kafka_position(c->rk, l) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_topic_partition_list_destroy(l);
        return -1;
    }
    /* No position yet (nothing fetched since the assignment): the group's committed offset is
     * where it resumes, so a resumed consumer at the end has no lag (counting from the low
     * watermark made a resumed reindex wait minutes for traffic on every partition). */
    for (int i = 0; i < l->cnt; i++)
        if (l->elems[i].offset < 0) {
            rd_kafka_topic_partition_list_t *u = rd_kafka_topic_partition_list_copy(l);
            if (rd_kafka_committed(c->rk, u, 2000) == RD_KAFKA_RESP_ERR_NO_ERROR)
                for (int k = 0; k < l->cnt; k++)
                    if (l->elems[k].offset < 0 && u->elems[k].offset >= 0)
                        l->elems[k].offset = u->elems[k].offset;
            rd_kafka_topic_partition_list_destroy(u);
            break;
        }
    for (int i = 0; i < l->cnt; i++) {
        int64_t lo = -1, hi = -1;
        rd_kafka_topic_partition_t *p = &l->elems[i];
        if (rd_kafka_get_watermark_offsets(c->rk, p->topic, p->partition, &lo, &hi) !=
                RD_KAFKA_RESP_ERR_NO_ERROR || hi < 0)
            continue;
        /* Neither fetched nor committed: everything from the low watermark is pending. */
        lag += hi - (p->offset >= 0 ? p->offset : (lo >= 0 ? lo : hi));
    }
    rd_kafka_topic_partition_list_destroy(l);
    return lag;
}

cm_err cm_kafka_topic_watermarks(cm_kafka_consumer *c, const char *topic, int timeout_ms,
                                 int64_t *dropped, int64_t *retained)
{
    char full[256];
    rd_kafka_topic_t *rkt = NULL;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err;
    int64_t sum = 0, held = 0;
    cm_err rc = CM_EIO;

    if (snprintf(full, sizeof(full), "%s%s", c->prefix, topic) >= (int)sizeof(full))
        return CM_EINVAL;
    rkt = rd_kafka_topic_new(c->rk, full, NULL);
    if (rkt == NULL)
        return CM_ENOMEM;
    err = rd_kafka_metadata(c->rk, 0, rkt, &md, timeout_ms);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR || md->topic_cnt != 1 || md->topics[0].err) {
        cm_warn("kafka: metadata of %s: %s", full,
                rd_kafka_err2str(err ? err : md->topic_cnt == 1 ? md->topics[0].err
                                                                : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC));
        goto out;
    }
    for (int i = 0; i < md->topics[0].partition_cnt; i++) {
        int64_t lo = -1, hi = -1;
        err = rd_kafka_query_watermark_offsets(c->rk, full, md->topics[0].partitions[i].id, &lo,
                                               &hi, timeout_ms);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            cm_warn("kafka: watermarks of %s: %s", full, rd_kafka_err2str(err));
            goto out;
        }
        sum += lo > 0 ? lo : 0;
        held += hi > lo && lo >= 0 ? hi - lo : 0;
    }
    *dropped = sum;
    *retained = held;
    rc = CM_OK;
out:
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return rc;
}

cm_err cm_kafka_consumer_poll(cm_kafka_consumer *c, int timeout_ms, cm_kafka_handler handler,
                              void *ud)
{
    rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, timeout_ms);
    cm_kafka_record rec;
    size_t plen = strlen(c->prefix);
    const char *name;
    cm_err rc;

    if (m == NULL)
        return CM_EAGAIN;
    if (m->err) {
        rc = (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) ? CM_EAGAIN : CM_EIO;
        if (rc == CM_EIO)
            cm_warn("kafka: consumer: %s", rd_kafka_message_errstr(m));
        rd_kafka_message_destroy(m);
        return rc;
    }
    name = rd_kafka_topic_name(m->rkt);
    rec.topic = strncmp(name, c->prefix, plen) == 0 ? name + plen : name;
    rec.partition = m->partition;
    rec.offset = m->offset;
    rec.key = m->key;
    rec.key_len = m->key_len;
    rec.value = m->payload ? m->payload : "";
    rec.value_len = m->len;
    rec.timestamp_ms = rd_kafka_message_timestamp(m, NULL);
    rc = handler(&rec, ud);
    if (rc == CM_OK) {
        /* Store exactly this record's offset + 1 (the next one to read). */
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, name, m->partition)->offset = m->offset + 1;
        rd_kafka_offsets_store(c->rk, l);
        rd_kafka_topic_partition_list_destroy(l);
    } else {
        /* Rewind so the record comes back on the next poll. */
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, name, m->partition)->offset = m->offset;
        rd_kafka_seek_partitions(c->rk, l, 5000);
        rd_kafka_topic_partition_list_destroy(l);
    }
    rd_kafka_message_destroy(m);
    return rc;
}

void cm_kafka_consumer_destroy(cm_kafka_consumer *c)
{
    if (c == NULL)
        return;
    rd_kafka_commit(c->rk, NULL, 0);
    rd_kafka_consumer_close(c->rk);
    rd_kafka_destroy(c->rk);
    free(c);
}

struct cm_kafka_worker {
    cm_kafka_consumer *c;
    cm_kafka_worker_config cfg;
    pthread_t thread;
    atomic_int stop;
};

static void pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    if (ms > 0)
        nanosleep(&ts, NULL);
}

static void *worker_main(void *arg)
{
    cm_kafka_worker *w = arg;
    while (!atomic_load(&w->stop)) {
        cm_err rc = w->cfg.one
                        ? cm_kafka_consumer_poll(w->c, 200, w->cfg.one, w->cfg.ud)
                        : cm_kafka_consumer_poll_batch(w->c, 200, w->cfg.batch, w->cfg.many,
                                                       w->cfg.ud);
        if (rc == CM_EAGAIN) {
            /* Nothing came, or a handler is not ready: then let the others come first. */
            if (w->cfg.again_ms > 0 && cm_kafka_consumer_lag(w->c) > 0)
                pause_ms(w->cfg.again_ms);
        } else if (rc != CM_OK) {
            pause_ms(w->cfg.backoff_ms); /* rewound: redelivered after the pause */
        }
    }
    return NULL;
}

cm_err cm_kafka_worker_start(cm_kafka_consumer *c, const cm_kafka_worker_config *cfg,
                             cm_kafka_worker **out)
{
    cm_kafka_worker *w;

    if (cfg->one == NULL && (cfg->many == NULL || cfg->batch == 0)) {
        cm_kafka_consumer_destroy(c);
        return CM_EINVAL;
    }
    w = calloc(1, sizeof(*w));
    if (w == NULL) {
        cm_kafka_consumer_destroy(c);
        return CM_ENOMEM;
    }
    w->c = c;
    w->cfg = *cfg;
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
        cm_kafka_consumer_destroy(c);
        free(w);
        return CM_ENOMEM;
    }
    *out = w;
    return CM_OK;
}

void cm_kafka_worker_stop(cm_kafka_worker *w)
{
    if (w == NULL)
        return;
    atomic_store(&w->stop, 1);
    pthread_join(w->thread, NULL);
    cm_kafka_consumer_destroy(w->c);
    free(w);
}
