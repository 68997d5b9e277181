/* outbox.c - events stored before they are produced, marked by delivery reports, produced
 * again while unmarked. */
#include "common/outbox.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"

/* A delivered event is deleted, not updated to published: on FerretDB 1.x an update is a
 * read-modify-replace of each document (about 48 ms each for 64 of 5,000 on this machine,
 * 3.1 s), a delete of the same 64 by _id $in is one filtered scan and one statement (0.33 s),
 * and it keeps the collection as small as what is in flight, which every scan of it (this
 * delete, the sweep) costs in proportion to (bench/README.md, "Push fan-out"). */
#define MARK_BATCH 500         /* ids per delete */
#define MARK_BUDGET_MS 2000    /* marking per tick at most (what is left waits for the next) */
#define SWEEP_BATCH 500
#define KEEP_PUBLISHED_MS (24 * 3600 * 1000LL)

struct mark {
    struct mark *next;
    char id[];
};

struct cm_outbox {
    cm_mongo *db;
    char *coll;
    int64_t stale_ms;
    cm_kafka_producer *producer;
    pthread_mutex_t lock; /* guards marks */
    struct mark *marks;
    long republished;
};

cm_err cm_outbox_create(cm_mongo *db, const char *coll, int64_t stale_ms, cm_outbox **out)
{
    cm_outbox *o = calloc(1, sizeof(*o));
    bson_t k = BSON_INITIALIZER;

    if (o == NULL || (o->coll = strdup(coll)) == NULL) {
        free(o);
        return CM_ENOMEM;
    }
    o->db = db;
    o->stale_ms = stale_ms;
    pthread_mutex_init(&o->lock, NULL);
    BSON_APPEND_INT32(&k, "published", 1);
    BSON_APPEND_INT32(&k, "created_at", 1);
    if (cm_mongo_create_index(db, coll, &k, "sweep", 0) != CM_OK)
        cm_warn("outbox %s: index not created yet", coll);
    bson_destroy(&k);
    *out = o;
    return CM_OK;
}

void cm_outbox_set_producer(cm_outbox *o, cm_kafka_producer *p)
{
    o->producer = p;
}

void cm_outbox_delivered(cm_err status, void *opaque, void *ud)
{
    cm_outbox *o = ud;
    char *id = opaque;
    struct mark *m;

    if (id == NULL)
        return;
    if (status == CM_OK && (m = malloc(sizeof(*m) + strlen(id) + 1)) != NULL) {
        memcpy(m->id, id, strlen(id) + 1);
        pthread_mutex_lock(&o->lock);
        m->next = o->marks;
        o->marks = m;
        pthread_mutex_unlock(&o->lock);
    }
    free(id); /* undelivered: left unpublished for the tick */
}

/* Produces one stored event; the delivery report gets a copy of its id. */
static cm_err produce(cm_outbox *o, const char *topic, const char *key, const char *id,
                      const char *value, const cm_kafka_header *h, size_t nh)
{
    char *opaque = strdup(id);
    cm_err rc;

    if (opaque == NULL)
        return CM_ENOMEM;
    rc = cm_kafka_produce(o->producer, topic, key, strlen(key), value, strlen(value), h, nh,
                          opaque);
    if (rc != CM_OK)
        free(opaque); /* the callback is never called for a failed produce */
    return rc;
}

cm_err cm_outbox_publish(cm_outbox *o, const char *topic, const char *key, const char *id,
                         const char *value, const cm_kafka_header *headers, size_t nheaders)
{
    bson_t d = BSON_INITIALIZER;
    cm_err rc;

    BSON_APPEND_UTF8(&d, "_id", id);
    BSON_APPEND_UTF8(&d, "topic", topic);
    BSON_APPEND_UTF8(&d, "key", key);
    BSON_APPEND_UTF8(&d, "value", value);
    BSON_APPEND_BOOL(&d, "published", 0);
    BSON_APPEND_DATE_TIME(&d, "created_at", cm_clock_now_ms());
    rc = cm_mongo_insert(o->db, o->coll, &d);
    bson_destroy(&d);
    if (rc != CM_OK)
        cm_error("outbox %s: event %s not stored; produced unprotected", o->coll, id);
    if (produce(o, topic, key, id, value, headers, nheaders) != CM_OK)
        cm_warn("outbox %s: event %s not produced yet; the sweep will", o->coll, id);
    return rc;
}

cm_err cm_outbox_publish_many(cm_outbox *o, const cm_outbox_event *evs, size_t n,
                              const cm_kafka_header *headers, size_t nheaders)
{
    bson_t *docs = n ? calloc(n, sizeof(*docs)) : NULL;
    const bson_t **ptrs = n ? calloc(n, sizeof(*ptrs)) : NULL;
    unsigned char *dup = n ? calloc(n, 1) : NULL;
    int64_t now = cm_clock_now_ms();
    size_t built = 0;
    cm_err rc = CM_ENOMEM;

    if (n == 0)
        return CM_OK;
    if (docs == NULL || ptrs == NULL || dup == NULL)
        goto out;
    for (size_t i = 0; i < n; i++) {
        bson_init(&docs[i]);
        BSON_APPEND_UTF8(&docs[i], "_id", evs[i].id);
        BSON_APPEND_UTF8(&docs[i], "topic", evs[i].topic);
        BSON_APPEND_UTF8(&docs[i], "key", evs[i].key);
        BSON_APPEND_UTF8(&docs[i], "value", evs[i].value);
        BSON_APPEND_BOOL(&docs[i], "published", 0);
        BSON_APPEND_DATE_TIME(&docs[i], "created_at", now);
        ptrs[i] = &docs[i];
        built++;
    }
    /* An event stored before (a replay) stays as it is: the sweep produces it if need be. */
    rc = cm_mongo_insert_many(o->db, o->coll, ptrs, n, dup);
    if (rc != CM_OK)
        cm_error("outbox %s: %zu events not stored; produced unprotected", o->coll, n);
    for (size_t i = 0; i < n; i++)
        if (produce(o, evs[i].topic, evs[i].key, evs[i].id, evs[i].value, headers, nheaders) !=
            CM_OK)
            cm_warn("outbox %s: event %s not produced yet; the sweep will", o->coll, evs[i].id);
out:
    for (size_t i = 0; i < built; i++)
        bson_destroy(&docs[i]);
    free(docs);
    free(ptrs);
    free(dup);
    return rc;
}

/* Deletes up to MARK_BATCH delivered events (their record is the Kafka topic now); returns how
 * many were taken. */
static int mark_some(cm_outbox *o)
{
    struct mark *list, *rest = NULL;
    bson_t f = BSON_INITIALIZER, in, arr;
    char idx[16];
    int n = 0;

    pthread_mutex_lock(&o->lock);
    list = o->marks;
    o->marks = NULL;
    pthread_mutex_unlock(&o->lock);
    if (list == NULL)
        return 0;
    BSON_APPEND_DOCUMENT_BEGIN(&f, "_id", &in);
    BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
    for (struct mark *m = list; m; m = m->next) {
        if (n == MARK_BATCH) {
            rest = m;
            break;
        }
        snprintf(idx, sizeof(idx), "%d", n++);
        BSON_APPEND_UTF8(&arr, idx, m->id);
    }
    bson_append_array_end(&in, &arr);
    bson_append_document_end(&f, &in);
    if (cm_mongo_delete(o->db, o->coll, &f, 1, NULL) != CM_OK) {
        rest = list; /* keep them all for the next tick */
        n = 0;
    }
    /* Free what was marked; put the rest back. */
    for (struct mark *m = list, *next; m && m != rest; m = next) {
        next = m->next;
        free(m);
    }
    if (rest) {
        struct mark *tail = rest;
        while (tail->next)
            tail = tail->next;
        pthread_mutex_lock(&o->lock);
        tail->next = o->marks;
        o->marks = rest;
        pthread_mutex_unlock(&o->lock);
    }
    bson_destroy(&f);
    return n;
}

struct sweep {
    cm_outbox *o;
    int produced;
};

static int resend(const bson_t *doc, void *ud)
{
    struct sweep *s = ud;
    cm_kafka_header h[] = {{"x-outbox", "republished"}};
    if (produce(s->o, cm_bson_str(doc, "topic", ""), cm_bson_str(doc, "key", ""),
                cm_bson_str(doc, "_id", ""), cm_bson_str(doc, "value", ""), h, 1) == CM_OK)
        s->produced++;
    return 0;
}

cm_err cm_outbox_tick(cm_outbox *o)
{
    bson_t f = BSON_INITIALIZER, lt, opts = BSON_INITIALIZER, sort;
    struct sweep s = {o, 0};
    int64_t now = cm_clock_now_ms();
    cm_err rc;

    /* Bounded, so a stop is never held up for long by a backlog of marks (FerretDB takes
     * about 10 ms per document updated under load); marks left over at exit only mean the
     * next instance's sweep produces those events again (same ids: consumers deduplicate). */
    while (mark_some(o) == MARK_BATCH && cm_clock_now_ms() - now < MARK_BUDGET_MS)
        ;
    BSON_APPEND_BOOL(&f, "published", 0);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "created_at", &lt);
    BSON_APPEND_DATE_TIME(&lt, "$lt", now - o->stale_ms);
    bson_append_document_end(&f, &lt);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "created_at", 1);
    bson_append_document_end(&opts, &sort);
    BSON_APPEND_INT64(&opts, "limit", SWEEP_BATCH);
    rc = o->producer ? cm_mongo_find(o->db, o->coll, &f, &opts, resend, &s) : CM_OK;
    if (s.produced) {
        cm_warn("outbox %s: %d events produced again", o->coll, s.produced);
        __atomic_add_fetch(&o->republished, s.produced, __ATOMIC_RELAXED);
    }
    /* Events marked published by earlier versions (delivered events are deleted now). */
    bson_reinit(&f);
    BSON_APPEND_BOOL(&f, "published", 1);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "created_at", &lt);
    BSON_APPEND_DATE_TIME(&lt, "$lt", now - KEEP_PUBLISHED_MS);
    bson_append_document_end(&f, &lt);
    if (rc == CM_OK)
        rc = cm_mongo_delete(o->db, o->coll, &f, 1, NULL);
    bson_destroy(&f);
    bson_destroy(&opts);
    return rc;
}

long cm_outbox_republished(cm_outbox *o)
{
    return __atomic_load_n(&o->republished, __ATOMIC_RELAXED);
}

void cm_outbox_destroy(cm_outbox *o)
{
    if (o == NULL)
        return;
    for (struct mark *m = o->marks, *next; m; m = next) {
        next = m->next;
        free(m);
    }
    pthread_mutex_destroy(&o->lock);
    free(o->coll);
    free(o);
}
