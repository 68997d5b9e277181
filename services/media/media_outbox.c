/* media_outbox.c - the media document is its own outbox (as messages are, DESIGN.md): every
 * state change (uploaded, processed, failed, deleted) writes pending_event, pending_event_id
 * and pending_since in the same update; the event is produced; the delivery report clears
 * the pending fields of that event id only; a sweeper republishes what stayed pending. So
 * an acknowledged upload or status change always reaches the `media` topic, possibly twice
 * (consumers drop duplicates by event id). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/event.h"
#include "common/log.h"
#include "common/ticker.h"
#include "common/uuid.h"
#include "media.h"

#define SWEEP_EVERY_MS 2000
#define SWEEP_BATCH 200

struct delivered {
    struct delivered *next;
    char id[CM_UUID_STRLEN], event_id[CM_UUID_STRLEN];
    int deleted; /* media.deleted: the tombstone goes once the event is out */
};

struct media_outbox {
    media_ctx *ctx;
    cm_ticker *ticker;
    pthread_mutex_t lock; /* guards head */
    struct delivered *head;
    int64_t next_sweep;
    atomic_ulong published, failed, republished;
};

cm_err media_pending_set(bson_t *set, const char *type, int64_t now_ms)
{
    char eid[CM_UUID_STRLEN];
    if (cm_uuid_v7(eid) != CM_OK)
        return CM_EIO;
    BSON_APPEND_UTF8(set, "pending_event", type);
    BSON_APPEND_UTF8(set, "pending_event_id", eid);
    BSON_APPEND_DATE_TIME(set, "pending_since", now_ms);
    return CM_OK;
}

/* The event's data: the Media object for uploaded and processed, less for the others. */
static cJSON *event_data(const bson_t *doc, const char *type)
{
    cJSON *d;
    if (strcmp(type, "media.uploaded") == 0 || strcmp(type, "media.processed") == 0) {
        d = media_json(doc);
        cJSON_DeleteItemFromObject(d, "failure_reason");
        if (strcmp(type, "media.uploaded") == 0) {
            cJSON_DeleteItemFromObject(d, "variants");
            cJSON_DeleteItemFromObject(d, "processed_at");
            cJSON_ReplaceItemInObject(d, "status", cJSON_CreateString("pending"));
        }
        return d;
    }
    d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "id", cm_bson_str(doc, "_id", ""));
    cJSON_AddStringToObject(d, "uploader", cm_bson_str(doc, "uploader", ""));
    if (strcmp(type, "media.failed") == 0)
        cJSON_AddStringToObject(d, "reason", cm_bson_str(doc, "failure_reason", "unknown"));
    return d;
}

void media_publish(media_ctx *ctx, const bson_t *doc)
{
    const char *type = cm_bson_str(doc, "pending_event", NULL);
    const char *eid = cm_bson_str(doc, "pending_event_id", NULL);
    const char *id = cm_bson_str(doc, "_id", "");
    const char *rid = cm_bson_str(doc, "request_id", "");
    cm_kafka_header h[] = {{"x-request-id", rid}};
    struct delivered *d;
    char *ev = NULL;
    cm_err rc;

    if (type == NULL || eid == NULL || strlen(id) >= CM_UUID_STRLEN ||
        strlen(eid) >= CM_UUID_STRLEN)
        return;
    if (cm_event_build(eid, type, "/media", id, cm_bson_str(doc, "tenant", ""),
                       cm_bson_int(doc, "pending_since", cm_clock_now_ms()),
                       event_data(doc, type), &ev) != CM_OK)
        return;
    d = calloc(1, sizeof(*d));
    if (d == NULL) {
        free(ev);
        return;
    }
    snprintf(d->id, sizeof(d->id), "%s", id);
    snprintf(d->event_id, sizeof(d->event_id), "%s", eid);
    d->deleted = strcmp(type, "media.deleted") == 0;
    rc = cm_kafka_produce(ctx->kafka, "media", id, strlen(id), ev, strlen(ev), h,
                          rid[0] ? 1 : 0, d);
    if (rc != CM_OK) {
        cm_warn("%s for media %s not queued (%s); the sweeper retries", type, id,
                cm_strerror(rc));
        free(d);
    }
    free(ev);
}

void media_outbox_delivered(cm_err status, void *opaque, void *ud)
{
    media_outbox *ob = ud;
    struct delivered *d = opaque;

    if (d == NULL)
        return;
    if (ob == NULL) {
        free(d);
        return;
    }
    if (status != CM_OK) {
        atomic_fetch_add(&ob->failed, 1);
        free(d);
        return;
    }
    atomic_fetch_add(&ob->published, 1);
    pthread_mutex_lock(&ob->lock);
    d->next = ob->head;
    ob->head = d;
    pthread_mutex_unlock(&ob->lock);
    cm_ticker_wake(ob->ticker); /* marked at once: a media document is marked on its own */
}

/* Clears the pending fields for one delivered event (or drops a delivered tombstone). */
static void mark(media_outbox *ob, struct delivered *d)
{
    bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, unset;
    BSON_APPEND_UTF8(&f, "_id", d->id);
    BSON_APPEND_UTF8(&f, "pending_event_id", d->event_id);
    if (d->deleted) {
        BSON_APPEND_UTF8(&f, "status", "deleted");
        cm_mongo_delete(ob->ctx->db, MEDIA_COLL, &f, 0, NULL);
    } else {
        BSON_APPEND_DOCUMENT_BEGIN(&u, "$unset", &unset);
        BSON_APPEND_UTF8(&unset, "pending_event", "");
        BSON_APPEND_UTF8(&unset, "pending_event_id", "");
        BSON_APPEND_UTF8(&unset, "pending_since", "");
        bson_append_document_end(&u, &unset);
        /* A newer state change has another event id: its pending fields stay. */
        cm_mongo_update(ob->ctx->db, MEDIA_COLL, &f, &u, 0, 0, NULL);
    }
    bson_destroy(&f);
    bson_destroy(&u);
}

static int republish_one(const bson_t *doc, void *ud)
{
    media_outbox *ob = ud;
    /* A delete that crashed before its blobs went: remove them now (idempotent). */
    if (strcmp(cm_bson_str(doc, "status", ""), "deleted") == 0)
        media_remove_blobs(ob->ctx, doc);
    media_publish(ob->ctx, doc);
    atomic_fetch_add(&ob->republished, 1);
    return 0;
}

static void sweep(media_outbox *ob)
{
    bson_t f = BSON_INITIALIZER, lt, opts = BSON_INITIALIZER;
    BSON_APPEND_DOCUMENT_BEGIN(&f, "pending_since", &lt);
    BSON_APPEND_DATE_TIME(&lt, "$lt", cm_clock_now_ms() - ob->ctx->outbox_stale_ms);
    bson_append_document_end(&f, &lt);
    BSON_APPEND_INT64(&opts, "limit", SWEEP_BATCH);
    cm_mongo_find(ob->ctx->db, MEDIA_COLL, &f, &opts, republish_one, ob);
    bson_destroy(&f);
    bson_destroy(&opts);
}

/* Marks what was delivered (at once when woken, and once more at the stop), and sweeps every
 * SWEEP_EVERY_MS. */
static void outbox_tick(void *ud, int last)
{
    media_outbox *ob = ud;
    struct delivered *batch;

    pthread_mutex_lock(&ob->lock);
    batch = ob->head;
    ob->head = NULL;
    pthread_mutex_unlock(&ob->lock);
    while (batch) {
        struct delivered *next = batch->next;
        mark(ob, batch);
        free(batch);
        batch = next;
    }
    if (!last && cm_clock_now_ms() >= ob->next_sweep) {
        sweep(ob);
        ob->next_sweep = cm_clock_now_ms() + SWEEP_EVERY_MS;
    }
}

cm_err media_outbox_start(media_ctx *ctx, media_outbox **out)
{
    media_outbox *ob = calloc(1, sizeof(*ob));
    cm_err rc;

    if (ob == NULL)
        return CM_ENOMEM;
    ob->ctx = ctx;
    ob->next_sweep = cm_clock_now_ms() + 500;
    pthread_mutex_init(&ob->lock, NULL);
    rc = cm_ticker_start(100, 1, outbox_tick, ob, &ob->ticker);
    if (rc != CM_OK) {
        pthread_mutex_destroy(&ob->lock);
        free(ob);
        return rc;
    }
    *out = ob;
    return CM_OK;
}

void media_outbox_stop(media_outbox *ob)
{
    if (ob == NULL)
        return;
    cm_ticker_stop(ob->ticker);
    pthread_mutex_destroy(&ob->lock);
    free(ob);
}

void media_outbox_metrics(void *ud, void (*emit)(void *ctx, const char *text), void *ectx)
{
    media_outbox *ob = ud;
    char buf[512];
    snprintf(buf, sizeof(buf),
             "# TYPE media_outbox_events_total counter\n"
             "media_outbox_events_total{outcome=\"delivered\"} %lu\n"
             "media_outbox_events_total{outcome=\"failed\"} %lu\n"
             "media_outbox_events_total{outcome=\"republished\"} %lu\n",
             atomic_load(&ob->published), atomic_load(&ob->failed),
             atomic_load(&ob->republished));
    emit(ectx, buf);
}
