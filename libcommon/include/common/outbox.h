/* outbox.h - the outbox for events that are not their own documents (DESIGN.md "Nothing
 * acknowledged may be lost"): an event is stored in an outbox collection before it is
 * produced, deleted from it once Kafka's delivery report has come (the topic holds it then),
 * and produced again by cm_outbox_tick while it stays there, so a crash or a broker outage between the change
 * and the event loses nothing. Consumers deduplicate by the CloudEvents id, which stays the
 * same when an event is produced again. */
#ifndef COMMON_OUTBOX_H
#define COMMON_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/kafka.h"
#include "common/mongo.h"

typedef struct cm_outbox cm_outbox;

/* Creates an outbox over collection `coll` of `db` ({_id: event id, topic, key, value,
 * published: false, created_at}); events still there after `stale_ms` are produced again.
 * The collection holds only events not yet acknowledged by Kafka (plus, for a day, events an
 * earlier version marked published: true instead of deleting them). */
cm_err cm_outbox_create(cm_mongo *db, const char *coll, int64_t stale_ms, cm_outbox **out);

/* The producer the outbox produces with; create it with cm_outbox_delivered as its delivery
 * callback and the outbox as `ud`. Call before the first cm_outbox_publish. */
void cm_outbox_set_producer(cm_outbox *o, cm_kafka_producer *p);

/* The producer's delivery callback (cm_kafka_delivery_fn): records delivered events so the
 * next tick deletes them from the outbox. */
void cm_outbox_delivered(cm_err status, void *opaque, void *ud);

/* Stores the event (`id`, the record `key` and JSON `value` of `topic`), then produces it.
 * CM_OK once stored, even when producing failed (the tick will); the store's error otherwise,
 * after producing anyway (best effort: the event is then not protected). */
cm_err cm_outbox_publish(cm_outbox *o, const char *topic, const char *key, const char *id,
                         const char *value, const cm_kafka_header *headers, size_t nheaders);

/* One event of cm_outbox_publish_many (strings borrowed for the call). */
typedef struct cm_outbox_event {
    const char *topic, *key, *id, *value;
} cm_outbox_event;

/* cm_outbox_publish for `evs[0..n)` with one insert (one round trip) instead of n: an event
 * whose id is stored already is left as it is, then every event is produced (each with the
 * same headers). CM_OK once stored; CM_EIO when the insert failed (after producing anyway). */
cm_err cm_outbox_publish_many(cm_outbox *o, const cm_outbox_event *evs, size_t n,
                              const cm_kafka_header *headers, size_t nheaders);

/* Deletes the delivered events from the outbox (500 per delete, for about 2 s at most: the
 * rest waits for the next tick), produces again those still there after the stale age
 * (oldest first, at most 500), and deletes events marked published by earlier versions once a
 * day old.
 * Call it periodically from one thread, and once after the producer's final flush. */
cm_err cm_outbox_tick(cm_outbox *o);

/* Counters: events produced again by ticks so far. */
long cm_outbox_republished(cm_outbox *o);

/* Frees the outbox (tick first to keep the last marks). Accepts NULL. */
void cm_outbox_destroy(cm_outbox *o);

#endif
