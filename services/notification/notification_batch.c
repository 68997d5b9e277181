/* notification_batch.c - one event's notifications for all its recipients in a few round
 * trips, whatever their number (issue 10, throughput): one preferences query, one unordered
 * insert of every notification (the unique key <tenant>|<event id>|<user>|<channel> refuses
 * what a replay stored before, which then counts as stored), their notification.created
 * events produced straight to Kafka and awaited, and the push plan (one Redis pipeline of
 * presence, one of the devices cache, the pushes sent and then stored with their first
 * attempt in one insert). Before, each recipient cost about five round trips in order on the
 * consumer thread. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/uuid.h"
#include "notification.h"
#include "notification_channels.h"

/* Recipients handled per round of inserts: MongoDB's batch and 16 MiB limits stay far. */
#define CHUNK 1000

typedef struct stored_of {
    char (*keys)[512];
    char (*ids)[CM_UUID_STRLEN];
    int *hidden;
    bson_t *old; /* copies of the stored documents (republished when need be) */
    int *found;
    size_t n;
} stored_of;

static int collect_stored(const bson_t *doc, void *ud)
{
    stored_of *s = ud;
    const char *k = cm_bson_str(doc, "k", "");
    for (size_t i = 0; i < s->n; i++)
        if (!s->found[i] && strcmp(s->keys[i], k) == 0) {
            snprintf(s->ids[i], CM_UUID_STRLEN, "%s", cm_bson_str(doc, "_id", ""));
            s->hidden[i] = cm_bson_bool(doc, "hidden", 0);
            bson_copy_to(doc, &s->old[i]);
            s->found[i] = 1;
            return 0;
        }
    return 0;
}

/* Appends {field: {$in: [values...]}} to `f` for the `n` strings at `base` spaced `stride`
 * bytes apart, those whose `pick` is non-zero (NULL: all). */
static void append_in(bson_t *f, const char *field, const char *base, size_t stride, size_t n,
                      const int *pick)
{
    bson_t in, arr;
    char idx[24];
    size_t k = 0;

    BSON_APPEND_DOCUMENT_BEGIN(f, field, &in);
    BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
    for (size_t i = 0; i < n; i++)
        if (pick == NULL || pick[i]) {
            snprintf(idx, sizeof(idx), "%zu", k++);
            BSON_APPEND_UTF8(&arr, idx, base + i * stride);
        }
    bson_append_array_end(&in, &arr);
    bson_append_document_end(f, &in);
}

/* Builds the in-app notification document of recipient `r` into `doc`. */
static void build(const char *tenant, const nf_recipient *r, const nf_prefs *prefs,
                  const char *id, const char *k, int64_t now, bson_t *doc)
{
    const nf_about *a = r->about;
    const char *event_id = r->event_id, *preview = a->preview;

    bson_init(doc);
    BSON_APPEND_UTF8(doc, "_id", id);
    BSON_APPEND_UTF8(doc, "k", k);
    if (!prefs->in_app[r->type])
        BSON_APPEND_BOOL(doc, "hidden", true); /* kept for push and diagnostics only */
    BSON_APPEND_UTF8(doc, "tenant", tenant);
    BSON_APPEND_UTF8(doc, "user_id", r->user);
    BSON_APPEND_UTF8(doc, "channel", "in_app");
    BSON_APPEND_UTF8(doc, "type", nf_type_name(r->type));
    BSON_APPEND_UTF8(doc, "event_id", event_id);
    if (a->cid)
        BSON_APPEND_UTF8(doc, "conversation_id", a->cid);
    if (a->title)
        BSON_APPEND_UTF8(doc, "title", a->title);
    if (cJSON_IsObject(a->data)) {
        /* Only string values (checked by the HTTP API): typed appends, never parsed JSON. */
        const cJSON *kv;
        bson_t d;
        BSON_APPEND_DOCUMENT_BEGIN(doc, "data", &d);
        cJSON_ArrayForEach(kv, a->data)
        {
            if (cJSON_IsString(kv))
                BSON_APPEND_UTF8(&d, kv->string, kv->valuestring);
        }
        bson_append_document_end(doc, &d);
    }
    if (a->message_id)
        BSON_APPEND_UTF8(doc, "message_id", a->message_id);
    if (a->message_id && a->seq > 0)
        /* Reading the conversation up to this seq (conversation.read) reads it here too. */
        BSON_APPEND_INT64(doc, "seq", a->seq);
    if (a->actor)
        BSON_APPEND_UTF8(doc, "actor_id", a->actor);
    BSON_APPEND_UTF8(doc, "text", preview);
    BSON_APPEND_BOOL(doc, "read", false);
    BSON_APPEND_DATE_TIME(doc, "created_at", now);
}

/* The acknowledgements of one publish_start(): shared with the producer's delivery
 * reports, freed by whichever of them and the waiter lets go last (a waiter that gives up
 * must not leave the reports a freed counter). */
typedef struct nf_acks {
    atomic_long pending, failed, refs; /* refs: pending reports + the waiter */
    size_t produced;                   /* events produced (the waiter's count) */
} nf_acks;

static void acks_release(nf_acks *a)
{
    if (atomic_fetch_sub(&a->refs, 1) == 1)
        free(a);
}

void nf_created_delivered(cm_err status, void *opaque, void *ud)
{
    nf_acks *a = opaque;
    (void)ud;
    if (a == NULL)
        return;
    if (status != CM_OK)
        atomic_fetch_add(&a->failed, 1);
    atomic_fetch_sub(&a->pending, 1);
    acks_release(a);
}

/* Produces notification.created for the documents `docs[0..n)` whose `pick` is set, straight
 * to Kafka (event id = the notification id, so a replay's copy is the same event and is
 * deduplicated by its consumers). Before, each went through the outbox collection: an insert
 * and a delete per notification on FerretDB. The acknowledgements (acks=all) are awaited by
 * publish_wait, which nf_notify_batch calls with the pushes' before it returns: only then may
 * the consumer store the offsets of the events they came from. The consumer does not wait
 * for them between chunks (20-80 ms per 1,000 recipients, on its critical path before):
 * a push may leave before its notification.created is acknowledged, and when one is not, the
 * batch is handled again and the replay finds the pushes recorded (sent once). `*out` (freed
 * by publish_wait) is set even when an error is returned, with what was produced. */
static cm_err publish_start(nf_ctx *ctx, const bson_t *const *docs, const int *pick, size_t n,
                            nf_acks **out)
{
    cm_kafka_header h[] = {{"x-request-id", cm_log_request_id()}};
    nf_acks *a = calloc(1, sizeof(*a));
    int64_t deadline = cm_clock_now_ms() + 30000;
    cm_err rc = CM_OK;

    *out = a;
    if (a == NULL)
        return CM_ENOMEM;
    atomic_store(&a->refs, 1);
    for (size_t i = 0; i < n && rc == CM_OK; i++) {
        const char *user = cm_bson_str(docs[i], "user_id", "");
        char *value = NULL;
        if (!pick[i])
            continue;
        if ((rc = nf_created_event(docs[i], &value)) != CM_OK)
            break;
        atomic_fetch_add(&a->pending, 1);
        atomic_fetch_add(&a->refs, 1);
        for (;;) {
            rc = cm_kafka_produce(ctx->created_producer, NF_TOPIC, user, strlen(user), value,
                                  strlen(value), h, 1, a);
            if (rc != CM_EAGAIN || cm_clock_now_ms() > deadline)
                break;
            (void)cm_kafka_flush(ctx->created_producer, 100); /* the local queue is full: drain it */
        }
        free(value);
        if (rc != CM_OK) {
            /* Never reported: the callback will not come for this one. */
            atomic_fetch_sub(&a->pending, 1);
            atomic_fetch_sub(&a->refs, 1);
        } else {
            a->produced++;
        }
    }
    return rc;
}

/* Waits (up to 30 s) until the broker has acknowledged each event publish_start produced
 * into `a`, and frees `a` (NULL: CM_OK). CM_EIO when one was not acknowledged (the batch is
 * handled again). */
static cm_err publish_wait(nf_ctx *ctx, nf_acks *a)
{
    int64_t deadline = cm_clock_now_ms() + 30000;
    cm_err rc = CM_OK;

    if (a == NULL)
        return CM_OK;
    while (atomic_load(&a->pending) > 0 && cm_clock_now_ms() < deadline)
        (void)cm_kafka_flush(ctx->created_producer, 100);
    if (atomic_load(&a->pending) > 0 || atomic_load(&a->failed) > 0) {
        cm_warn("notification.created: %ld of %zu not acknowledged: the batch is handled again",
                atomic_load(&a->pending) + atomic_load(&a->failed), a->produced);
        rc = CM_EIO;
    } else {
        atomic_fetch_add(&ctx->published, (long)a->produced);
    }
    acks_release(a);
    return rc;
}

static cm_err notify_chunk(nf_ctx *ctx, const char *tenant, const nf_recipient *r, size_t n,
                           nf_push_batch **pending, nf_acks **acked)
{
    const char **users = calloc(n, sizeof(*users));
    nf_prefs *prefs = calloc(n, sizeof(*prefs));
    bson_t *docs = calloc(n, sizeof(*docs));
    const bson_t **ptrs = calloc(n, sizeof(*ptrs)), **pub = calloc(n, sizeof(*pub));
    unsigned char *dup = calloc(n, 1);
    int *pick = calloc(n, sizeof(*pick));
    nf_push_item *items = calloc(n, sizeof(*items));
    stored_of st = {0};
    size_t built = 0, ndup = 0;
    int64_t now = cm_clock_now_ms();
    cm_err rc = CM_ENOMEM;

    st.keys = calloc(n, sizeof(*st.keys));
    st.ids = calloc(n, sizeof(*st.ids));
    st.hidden = calloc(n, sizeof(*st.hidden));
    st.old = calloc(n, sizeof(*st.old));
    st.found = calloc(n, sizeof(*st.found));
    if (!users || !prefs || !docs || !ptrs || !pub || !dup || !pick || !items ||
        !st.keys || !st.ids || !st.hidden || !st.old || !st.found)
        goto out;
    for (size_t i = 0; i < n; i++)
        users[i] = r[i].user;
    if ((rc = nf_prefs_load_many(ctx, tenant, users, n, prefs)) != CM_OK)
        goto out;
    for (size_t i = 0; i < n; i++, built++) {
        if (nf_dedupe_key(tenant, r[i].event_id, r[i].user, "in_app", st.keys[i],
                          sizeof(st.keys[i])) != CM_OK) {
            rc = CM_EINVAL;
            goto out;
        }
        if ((rc = cm_uuid_v7(st.ids[i])) != CM_OK)
            goto out;
        build(tenant, &r[i], &prefs[i], st.ids[i], st.keys[i], now, &docs[i]);
        ptrs[i] = &docs[i];
        st.hidden[i] = !prefs[i].in_app[r[i].type];
    }
    if ((rc = cm_mongo_insert_many(ctx->db, NF_COLL_NOTIFICATIONS, ptrs, n, dup)) != CM_OK)
        goto out;
    for (size_t i = 0; i < n; i++) {
        if (dup[i]) {
            ndup++;
        } else {
            st.found[i] = 1; /* ours */
            pub[i] = &docs[i];
            pick[i] = !st.hidden[i];
        }
    }
    atomic_fetch_add(&ctx->created, (long)(n - ndup));
    atomic_fetch_add(&ctx->duplicates, (long)ndup);
    if (ndup > 0) {
        /* Stored before (a replay after a crash): read back, and published again (the same
         * event id: consumers deduplicate), since the crash may have come before Kafka had
         * it. One `k $in` query, on this rare path only. */
        bson_t f = BSON_INITIALIZER;
        int *want = calloc(n, sizeof(*want));
        if (want == NULL)
            goto out;
        for (size_t i = 0; i < n; i++)
            want[i] = dup[i];
        append_in(&f, "k", (const char *)st.keys, sizeof(st.keys[0]), n, want);
        st.n = n;
        /* collect_stored matches only those not found yet: the duplicates. */
        rc = cm_mongo_find(ctx->db, NF_COLL_NOTIFICATIONS, &f, NULL, collect_stored, &st);
        for (size_t i = 0; rc == CM_OK && i < n; i++)
            if (dup[i] && !st.found[i])
                rc = CM_EAGAIN; /* refused as a duplicate yet not found: look again */
        for (size_t i = 0; rc == CM_OK && i < n; i++)
            if (dup[i] && st.found[i] && !st.hidden[i]) {
                pub[i] = &st.old[i];
                pick[i] = 1;
            }
        bson_destroy(&f);
        free(want);
        if (rc != CM_OK)
            goto out;
    }
    if ((rc = publish_start(ctx, pub, pick, n, acked)) != CM_OK)
        goto out;
    for (size_t i = 0; i < n; i++) {
        nf_push_item *it = &items[i];
        const nf_about *a = r[i].about;
        it->tenant = tenant;
        it->user = r[i].user;
        it->event_id = r[i].event_id;
        it->notification_id = st.ids[i];
        it->type = nf_type_name(r[i].type);
        it->conversation_id = a->cid;
        it->message_id = a->message_id;
        it->actor = a->actor;
        it->text = a->preview;
        it->muted_until = r[i].muted_until;
        it->push_off = !prefs[i].push[r[i].type];
        it->quiet_until = nf_quiet_until(&prefs[i], now);
        it->title = a->title;
        it->priority = r[i].type == NF_TYPE_CUSTOM && a->priority;
        it->replay = dup[i];
    }
    rc = nf_push_plan_async(ctx, items, n, pending);
    /* E-mail and SMS (notification_email.c), per recipient after the push plan. */
    for (size_t i = 0; rc == CM_OK && i < n; i++)
        rc = nf_channels_plan(ctx, &items[i], &prefs[i]);
out:
    for (size_t i = 0; i < built; i++)
        bson_destroy(&docs[i]);
    for (size_t i = 0; st.found && st.old && i < n; i++)
        if (dup && dup[i] && st.found[i])
            bson_destroy(&st.old[i]);
    free(users);
    free(prefs);
    free(docs);
    free(ptrs);
    free(pub);
    free(dup);
    free(pick);
    free(items);
    free(st.keys);
    free(st.ids);
    free(st.hidden);
    free(st.old);
    free(st.found);
    return rc;
}

cm_err nf_notify_batch(nf_ctx *ctx, const char *tenant, nf_recipient *r, size_t n)
{
    nf_push_batch **pending = calloc(n / CHUNK + 1, sizeof(*pending));
    nf_acks **acked = calloc(n / CHUNK + 1, sizeof(*acked));
    size_t k = 0;
    cm_err rc = CM_OK;

    for (size_t i = 0; i < n; i++)
        if (i == 0 || r[i].about != r[i - 1].about)
            nf_preview(r[i].about->text ? r[i].about->text : "", r[i].about->preview,
                       sizeof(r[i].about->preview));
    if (pending == NULL || acked == NULL) {
        free(pending);
        free(acked);
        return CM_ENOMEM;
    }
    /* Each chunk's pushes are sent while the next chunk is stored; all are awaited before
     * the offsets of their events may be stored. */
    for (size_t at = 0; at < n && rc == CM_OK; at += CHUNK, k++)
        rc = notify_chunk(ctx, tenant, r + at, n - at < CHUNK ? n - at : CHUNK, &pending[k],
                          &acked[k]);
    for (size_t i = 0; i < k; i++) {
        cm_err wrc = nf_push_wait(ctx->push, pending[i]);
        cm_err arc = publish_wait(ctx, acked[i]);
        if (rc == CM_OK)
            rc = wrc != CM_OK ? wrc : arc;
    }
    free(pending);
    free(acked);
    return rc;
}

cm_err nf_notify_many(nf_ctx *ctx, const char *tenant, const char *event_id, nf_about *a,
                      const nf_recipient *r, size_t n)
{
    nf_recipient *all = calloc(n ? n : 1, sizeof(*all));
    cm_err rc;

    if (all == NULL)
        return CM_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        all[i] = r[i];
        all[i].event_id = event_id;
        all[i].about = a;
    }
    rc = nf_notify_batch(ctx, tenant, all, n);
    free(all);
    return rc;
}
