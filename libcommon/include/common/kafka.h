/* kafka.h - the Kafka producer and consumer every process uses (librdkafka behind opaque types).
 * Producer: enable.idempotence=true, acks=all, linger.ms=5, Nagle off (kafka.c says why); the
 * delivery report is the ack; flushed on destroy. Consumer: enable.auto.offset.store=false; an
 * offset is stored only after its handler returned CM_OK, so a crash redelivers rather than
 * loses (at-least-once). */
#ifndef COMMON_KAFKA_H
#define COMMON_KAFKA_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

typedef struct cm_kafka_producer cm_kafka_producer;
typedef struct cm_kafka_consumer cm_kafka_consumer;

/* One Kafka record header (name and value are copied by the producer). */
typedef struct cm_kafka_header {
    const char *name;
    const char *value;
} cm_kafka_header;

/* Delivery report: called once per produced record, on the producer's own poll thread, with
 * CM_OK when the broker acknowledged it (acks=all) or CM_EIO when it was given up.
 * `opaque` is the pointer passed to cm_kafka_produce. */
typedef void (*cm_kafka_delivery_fn)(cm_err status, void *opaque, void *ud);

/* Creates a producer for `brokers` ("host:port,..."); topic names given to cm_kafka_produce
 * are prefixed with `topic_prefix` (may be ""). `on_delivery` may be NULL. Starts a thread
 * that serves delivery reports. CM_EINVAL for a bad configuration. */
cm_err cm_kafka_producer_create(const char *brokers, const char *topic_prefix,
                                cm_kafka_delivery_fn on_delivery, void *ud,
                                cm_kafka_producer **out);

/* Queues one record (key and value copied). Returns CM_OK when queued (the delivery report
 * tells the outcome), CM_EAGAIN when the local queue is full, CM_EINVAL for an unknown
 * topic, CM_EIO otherwise. On failure the delivery callback is never called. */
cm_err cm_kafka_produce(cm_kafka_producer *p, const char *topic, const char *key, size_t key_len,
                        const void *value, size_t value_len, const cm_kafka_header *headers,
                        size_t nheaders, void *opaque);

/* Waits up to timeout_ms for every queued record to be delivered. CM_ETIMEOUT otherwise. */
cm_err cm_kafka_flush(cm_kafka_producer *p, int timeout_ms);

/* Returns 1 when the producer has a broker connection it could use, 0 otherwise. */
int cm_kafka_producer_healthy(cm_kafka_producer *p);

/* Records queued but not yet acknowledged. */
int cm_kafka_producer_outq(cm_kafka_producer *p);

/* Flushes (up to 10 s), stops the poll thread, frees. Accepts NULL. */
void cm_kafka_producer_destroy(cm_kafka_producer *p);

/* A consumed record, valid only during the handler call. */
typedef struct cm_kafka_record {
    const char *topic; /* without the prefix */
    int32_t partition;
    int64_t offset;
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
    int64_t timestamp_ms; /* the record's timestamp (the producer's create time, or the broker's
                             log append time), ms since the epoch; -1 when it has none */
} cm_kafka_record;

/* Returns CM_OK when the record is done (its offset is then stored for commit). Any other
 * result leaves the offset unstored and rewinds the partition to this record, so it is
 * delivered again on the next poll. */
typedef cm_err (*cm_kafka_handler)(const cm_kafka_record *rec, void *ud);

/* Creates a consumer in consumer group `group`, subscribed to `topics` (names without the
 * prefix, `ntopics` of them). `from_beginning`: where a group with no committed offset
 * starts (1 earliest, 0 latest). With 0, a partition assigned without a committed offset gets
 * its current end committed at once, so a member that dies before its first auto-commit
 * hands its successor that position rather than a new "latest" past what it never finished. */
cm_err cm_kafka_consumer_create(const char *brokers, const char *topic_prefix, const char *group,
                                const char *const *topics, size_t ntopics, int from_beginning,
                                cm_kafka_consumer **out);

/* Waits up to timeout_ms for one record and hands it to `handler`. Returns CM_OK when a
 * record was handled, CM_EAGAIN when none arrived, the handler's error when it failed,
 * CM_EIO on a consumer error. */
cm_err cm_kafka_consumer_poll(cm_kafka_consumer *c, int timeout_ms, cm_kafka_handler handler,
                              void *ud);

/* A batch handler: `recs` (n >= 1, valid only during the call) in the order consumed. CM_OK
 * stores the offset of every record of the batch; any other result stores none and rewinds
 * each partition to its first record in the batch, so the whole batch comes again. */
typedef cm_err (*cm_kafka_batch_handler)(const cm_kafka_record *recs, size_t n, void *ud);

/* Waits up to timeout_ms for a first record, then takes the records that have already arrived
 * (no further waiting), up to `max` (>= 1) in all, and hands them to `handler` at once: for
 * consumers that apply a batch in one transaction and may store offsets only after it
 * committed. Returns CM_OK when a batch was handled, CM_EAGAIN when none arrived, the
 * handler's error when it failed, CM_EIO on a consumer error before any record, CM_ENOMEM. */
cm_err cm_kafka_consumer_poll_batch(cm_kafka_consumer *c, int timeout_ms, size_t max,
                                    cm_kafka_batch_handler handler, void *ud);

/* --- a consumer thread ------------------------------------------------------------------
 * The loop of every service that consumes (the media worker, the search indexer, the
 * notification consumer): a thread polls `c` for up to 200 ms at a time and hands what came to
 * `one` (record by record) or, when `one` is NULL, to `many` in batches of up to `batch`.
 * A failed handler rewinds (as the poll functions say) and the thread waits `backoff_ms` before
 * polling again, so a dependency that is down is not spun on. CM_EAGAIN from a handler (not
 * ready yet) rewinds too, and waits `again_ms` while other records are waiting (lag > 0), so
 * they come first. */
typedef struct cm_kafka_worker cm_kafka_worker;

typedef struct cm_kafka_worker_config {
    cm_kafka_handler one;        /* record by record, or NULL */
    cm_kafka_batch_handler many; /* batches, when `one` is NULL */
    size_t batch;                /* records per batch for `many` (>= 1) */
    int backoff_ms;              /* wait after a failure */
    int again_ms;                /* wait after CM_EAGAIN while records wait (0: none) */
    void *ud;                    /* passed to the handler */
} cm_kafka_worker_config;

/* Starts the thread over `c`, which it owns from then on (also on failure: destroyed).
 * CM_EINVAL (no handler), CM_ENOMEM. */
cm_err cm_kafka_worker_start(cm_kafka_consumer *c, const cm_kafka_worker_config *cfg,
                             cm_kafka_worker **out);

/* Stops the thread after the poll in progress, then destroys the consumer (closing it leaves
 * the group). Accepts NULL. */
void cm_kafka_worker_stop(cm_kafka_worker *w);

/* Consumer lag: the records of the partitions assigned to `c` not yet consumed (high watermark
 * minus position, from the watermarks librdkafka caches from its fetches), summed. A partition
 * not fetched from since its assignment counts from the group's committed offset (one broker
 * round trip, at most 2 s), else from its low watermark. -1 when nothing is assigned yet.
 * Safe to call from another thread than the polling one. */
int64_t cm_kafka_consumer_lag(cm_kafka_consumer *c);

/* The watermarks of `topic` (name without the prefix), asked of the brokers, waiting up to
 * timeout_ms: `dropped`, the records no longer retained (the sum over its partitions of the
 * low watermark; 0 means a replay from the start sees every record ever written), and
 * `retained`, the records still held (high minus low watermarks). CM_EIO when the brokers
 * cannot say (unknown topic, timeout); the outputs are then unchanged. */
cm_err cm_kafka_topic_watermarks(cm_kafka_consumer *c, const char *topic, int timeout_ms,
                                 int64_t *dropped, int64_t *retained);

/* Commits stored offsets synchronously and leaves the group. Accepts NULL. */
void cm_kafka_consumer_destroy(cm_kafka_consumer *c);

#endif
