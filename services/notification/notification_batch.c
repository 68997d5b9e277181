/* notification_batch.c - one event's notifications for all its recipients in a few round
 * trips, whatever their number (issue 10, throughput): one preferences query, one unordered
 * insert of every notification (the unique key <tenant>|<event id>|<user>|<channel> refuses
 * what a replay stored before, which then counts as stored), one outbox insert of their
 * notification.created events, and the push plan (one presence pipeline, one devices query,
 * one insert of the deliveries and one of the decisions). Before, each recipient cost about
 * five round trips in order on the consumer thread. */
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

typedef struct in_outbox {
    char (*ids)[CM_UUID_STRLEN];
    int *there;
    size_t n;
} in_outbox;

static int collect_outbox(const bson_t *doc, void *ud)
{
    in_outbox *o = ud;
    const char *id = cm_bson_str(doc, "_id", "");
    for (size_t i = 0; i < o->n; i++)
        if (strcmp(o->ids[i], id) == 0)
            o->there[i] = 1;
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

/* Publishes notification.created for the documents `docs[0..n)` whose `pick` is set, with
 * one outbox insert. */
static cm_err publish(nf_ctx *ctx, const bson_t *const *docs, const int *pick, size_t n)
{
    cm_outbox_event *evs = calloc(n ? n : 1, sizeof(*evs));
    char **values = calloc(n ? n : 1, sizeof(*values));
    cm_kafka_header h[] = {{"x-request-id", cm_log_request_id()}};
    size_t k = 0;
    cm_err rc = CM_ENOMEM;

    if (evs == NULL || values == NULL)
        goto out;
    for (size_t i = 0; i < n; i++) {
        if (!pick[i])
            continue;
        if ((rc = nf_created_event(docs[i], &values[k])) != CM_OK)
            goto out;
        evs[k] = (cm_outbox_event){NF_TOPIC, cm_bson_str(docs[i], "user_id", ""),
                                   cm_bson_str(docs[i], "_id", ""), values[k]};
        k++;
    }
    rc = cm_outbox_publish_many(ctx->outbox, evs, k, h, 1);
    if (rc == CM_OK)
        atomic_fetch_add(&ctx->published, (long)k);
out:
    for (size_t i = 0; values && i < n; i++)
        free(values[i]);
    free(values);
    free(evs);
    return rc;
}

static cm_err notify_chunk(nf_ctx *ctx, const char *tenant, const nf_recipient *r, size_t n)
{
    const char **users = calloc(n, sizeof(*users));
    nf_prefs *prefs = calloc(n, sizeof(*prefs));
    bson_t *docs = calloc(n, sizeof(*docs));
    const bson_t **ptrs = calloc(n, sizeof(*ptrs)), **pub = calloc(n, sizeof(*pub));
    unsigned char *dup = calloc(n, 1);
    int *pick = calloc(n, sizeof(*pick)), *there = calloc(n, sizeof(*there));
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
    if (!users || !prefs || !docs || !ptrs || !pub || !dup || !pick || !there || !items ||
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
        /* Stored before (a replay after a crash): publish the stored ones again unless the
         * outbox still holds them (it does while unpublished and for a day after). */
        bson_t f = BSON_INITIALIZER, opts = BSON_INITIALIZER, proj;
        int *want = calloc(n, sizeof(*want));
        in_outbox ob = {st.ids, there, n};
        if (want == NULL)
            goto out;
        for (size_t i = 0; i < n; i++)
            want[i] = dup[i];
        append_in(&f, "k", (const char *)st.keys, sizeof(st.keys[0]), n, want);
        st.n = n;
        /* collect_stored matches only those not found yet: the duplicates. */
        rc = cm_mongo_find(ctx->db, NF_COLL_NOTIFICATIONS, &f, NULL, collect_stored, &st);
        bson_reinit(&f);
        for (size_t i = 0; rc == CM_OK && i < n; i++)
            if (dup[i] && !st.found[i])
                rc = CM_EAGAIN; /* refused as a duplicate yet not found: look again */
        for (size_t i = 0; i < n; i++)
            want[i] = dup[i] && st.found[i] && !st.hidden[i];
        if (rc == CM_OK) {
            append_in(&f, "_id", (const char *)st.ids, sizeof(st.ids[0]), n, want);
            BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
            BSON_APPEND_INT32(&proj, "_id", 1);
            bson_append_document_end(&opts, &proj);
            rc = cm_mongo_find(ctx->db, NF_COLL_OUTBOX, &f, &opts, collect_outbox, &ob);
        }
        for (size_t i = 0; rc == CM_OK && i < n; i++)
            if (want[i] && !there[i]) {
                pub[i] = &st.old[i];
                pick[i] = 1;
            }
        bson_destroy(&f);
        bson_destroy(&opts);
        free(want);
        if (rc != CM_OK)
            goto out;
    }
    if ((rc = publish(ctx, pub, pick, n)) != CM_OK)
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
    }
    rc = nf_push_plan_many(ctx, items, n);
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
    free(there);
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
    cm_err rc = CM_OK;

    for (size_t i = 0; i < n; i++)
        if (i == 0 || r[i].about != r[i - 1].about)
            nf_preview(r[i].about->text ? r[i].about->text : "", r[i].about->preview,
                       sizeof(r[i].about->preview));
    for (size_t at = 0; at < n && rc == CM_OK; at += CHUNK)
        rc = notify_chunk(ctx, tenant, r + at, n - at < CHUNK ? n - at : CHUNK);
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
