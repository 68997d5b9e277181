/* notification_events.c - the Kafka consumer thread: keeps a projection of who is in which
 * conversation (and their mutes) from the `conversations` topic, and turns `messages` and
 * membership events into in-app notifications. Each record is handled and only then its
 * offset stored (common/kafka.h), and every write is idempotent (the projection by the
 * conversation log's eseq, notifications by their unique dedupe key), so a replay after a
 * crash changes nothing and sends nothing twice. Records that can never be handled go to
 * <topic>.dlq with the reason in the header "error"; MongoDB failures are retried. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "common/uuid.h"
#include "notification.h"
#include "notification_channels.h"

/* Records taken per batch: their notifications are stored together (one round of inserts
 * for all their recipients), so one-recipient events (direct conversations) cost a few round
 * trips per batch rather than per event. */
#define EVENTS_PER_BATCH 128

/* The notifications of the batch's events, stored at its end (flush). The recipients point
 * into `users` (copies) and `abouts`, whose strings point into the batch's parsed events. */
typedef struct pending {
    nf_recipient *r;
    size_t n, cap;
    char **users;  /* n copies */
    nf_about **abouts;
    size_t nabouts, cap_abouts;
    const char **tenants; /* per recipient */
    cJSON **roots; /* the batch's parsed events, freed after the flush */
    size_t nroots;
} pending;

struct nf_consumer {
    nf_ctx *ctx;
    cm_kafka_consumer *consumer; /* owned by kw; read for the lag */
    cm_kafka_worker *kw;
    pending p; /* consumer thread only */
    atomic_int stopping; /* a batch in progress gives up (rewound) so a stop is quick */
    atomic_long handled, dead, retries;
};

/* One decoded event: the envelope's fields the handlers use. */
typedef struct event {
    const cJSON *root, *data;
    const char *id, *type, *tenant;
    int64_t eseq;
} event;

static const char *str_of(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static cm_err dead_letter(nf_consumer *w, const cm_kafka_record *rec, const char *why)
{
    char topic[128];
    cm_kafka_header h[2] = {{"error", why}, {"source_topic", rec->topic}};
    cm_err rc;

    snprintf(topic, sizeof(topic), "%s.dlq", rec->topic);
    rc = cm_kafka_produce(w->ctx->kafka, topic, rec->key, rec->key_len, rec->value,
                          rec->value_len, h, 2, NULL);
    if (rc != CM_OK)
        return rc; /* offset not stored: retried until the DLQ takes it */
    atomic_fetch_add(&w->dead, 1);
    cm_warn("notification: %s[%d]@%lld to %s: %s", rec->topic, (int)rec->partition,
            (long long)rec->offset, topic, why);
    return CM_OK;
}

/* --- the membership projection ------------------------------------------------------------ */

/* Applies one membership change of log position `eseq`: `active` (-1 unchanged) and
 * `muted_until` (ms, -1 unchanged). A change not newer than what the projection holds changes
 * nothing. An update guarded by eseq first, an insert when the member is new: the insert is
 * protected by the unique _id, so two writers cannot create two records (FerretDB updates are
 * not atomic, its unique inserts are). */
static cm_err member_apply(nf_ctx *ctx, const char *tenant, const char *cid, const char *user,
                           int active, int64_t muted_until, int64_t eseq)
{
    char id[320];
    bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, set, lt, doc = BSON_INITIALIZER;
    int64_t matched = 0;
    cm_err rc;

    snprintf(id, sizeof(id), "%s/%s/%s", tenant, cid, user);
    BSON_APPEND_UTF8(&f, "_id", id);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "eseq", &lt);
    BSON_APPEND_INT64(&lt, "$lt", eseq);
    bson_append_document_end(&f, &lt);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    if (active >= 0)
        BSON_APPEND_BOOL(&set, "active", active);
    if (muted_until >= 0)
        BSON_APPEND_INT64(&set, "muted_until", muted_until);
    BSON_APPEND_INT64(&set, "eseq", eseq);
    bson_append_document_end(&u, &set);
    rc = cm_mongo_update(ctx->db, NF_COLL_MEMBERS, &f, &u, 0, 0, &matched);
    if (rc != CM_OK || matched > 0)
        goto out;
    BSON_APPEND_UTF8(&doc, "_id", id);
    BSON_APPEND_UTF8(&doc, "tenant", tenant);
    BSON_APPEND_UTF8(&doc, "conversation_id", cid);
    BSON_APPEND_UTF8(&doc, "user_id", user);
    BSON_APPEND_BOOL(&doc, "active", active != 0); /* a mute of an unseen member: a member */
    BSON_APPEND_INT64(&doc, "muted_until", muted_until > 0 ? muted_until : 0);
    BSON_APPEND_INT64(&doc, "eseq", eseq);
    rc = cm_mongo_insert(ctx->db, NF_COLL_MEMBERS, &doc);
    if (rc == CM_ECONFLICT)
        rc = CM_OK; /* the projection already holds a newer change */
out:
    bson_destroy(&f);
    bson_destroy(&u);
    bson_destroy(&doc);
    return rc;
}

typedef struct members {
    char (*ids)[CM_USER_ID_MAX + 1];
    int64_t *muted_until;
    size_t n, cap;
} members;

static int collect_member(const bson_t *doc, void *ud)
{
    members *m = ud;
    const char *u = cm_bson_str(doc, "user_id", "");
    if (m->n == m->cap)
        return 1;
    m->muted_until[m->n] = cm_bson_int(doc, "muted_until", 0);
    snprintf(m->ids[m->n++], CM_USER_ID_MAX + 1, "%s", u);
    return 0;
}

static void members_free(members *m)
{
    free(m->ids);
    free(m->muted_until);
    m->ids = NULL;
    m->muted_until = NULL;
}

/* The active members of conversation `cid` (at most NF_RECIPIENTS_MAX) into `m`, which the
 * caller frees with members_free. */
static cm_err members_of(nf_ctx *ctx, const char *tenant, const char *cid, members *m)
{
    bson_t f = BSON_INITIALIZER, opts = BSON_INITIALIZER, proj;
    cm_err rc;

    m->n = 0;
    m->cap = NF_RECIPIENTS_MAX;
    m->ids = calloc(m->cap, sizeof(*m->ids));
    m->muted_until = calloc(m->cap, sizeof(*m->muted_until));
    if (m->ids == NULL || m->muted_until == NULL) {
        members_free(m);
        return CM_ENOMEM;
    }
    BSON_APPEND_UTF8(&f, "tenant", tenant);
    BSON_APPEND_UTF8(&f, "conversation_id", cid);
    BSON_APPEND_BOOL(&f, "active", true);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
    BSON_APPEND_INT32(&proj, "user_id", 1);
    BSON_APPEND_INT32(&proj, "muted_until", 1);
    bson_append_document_end(&opts, &proj);
    rc = cm_mongo_find(ctx->db, NF_COLL_MEMBERS, &f, &opts, collect_member, m);
    bson_destroy(&f);
    bson_destroy(&opts);
    if (rc != CM_OK)
        members_free(m);
    return rc;
}

cm_err nf_projection_since(nf_ctx *ctx)
{
    bson_t f = BSON_INITIALIZER, doc = BSON_INITIALIZER, old;
    cm_err rc;

    /* The first instance's insert wins (unique _id); every later start reads it. */
    BSON_APPEND_UTF8(&doc, "_id", "projection");
    BSON_APPEND_INT64(&doc, "since_ms", cm_clock_now_ms());
    rc = cm_mongo_insert(ctx->db, NF_COLL_MEMBERS "_meta", &doc);
    if (rc == CM_OK || rc == CM_ECONFLICT) {
        BSON_APPEND_UTF8(&f, "_id", "projection");
        rc = cm_mongo_find_one(ctx->db, NF_COLL_MEMBERS "_meta", &f, NULL, &old);
        if (rc == CM_OK) {
            ctx->projection_since_ms = cm_bson_int(&old, "since_ms", 0);
            bson_destroy(&old);
        }
    }
    bson_destroy(&f);
    bson_destroy(&doc);
    return rc;
}

/* --- notifications ------------------------------------------------------------------------ */

/* Queues the notifications of recipients `r[0..n)` of event `ev` about `a` (copied) for the
 * end of the batch. CM_ENOMEM. */
static cm_err queue_notify(nf_ctx *ctx, const event *ev, const nf_about *a, const nf_recipient *r,
                           size_t n)
{
    pending *p = &ctx->consumer->p;
    nf_about *about;

    if (n == 0)
        return CM_OK;
    if (p->nabouts == p->cap_abouts) {
        size_t cap = p->cap_abouts ? p->cap_abouts * 2 : 64;
        nf_about **na = realloc(p->abouts, cap * sizeof(*na));
        if (na == NULL)
            return CM_ENOMEM;
        p->abouts = na;
        p->cap_abouts = cap;
    }
    if (p->n + n > p->cap) {
        size_t cap = p->cap ? p->cap : 256;
        nf_recipient *nr;
        char **nu;
        const char **nt;
        while (cap < p->n + n)
            cap *= 2;
        if ((nr = realloc(p->r, cap * sizeof(*nr))) == NULL)
            return CM_ENOMEM;
        p->r = nr;
        if ((nu = realloc(p->users, cap * sizeof(*nu))) == NULL)
            return CM_ENOMEM;
        p->users = nu;
        if ((nt = realloc(p->tenants, cap * sizeof(*nt))) == NULL)
            return CM_ENOMEM;
        p->tenants = nt;
        p->cap = cap;
    }
    if ((about = malloc(sizeof(*about))) == NULL)
        return CM_ENOMEM;
    *about = *a;
    p->abouts[p->nabouts++] = about;
    for (size_t i = 0; i < n; i++) {
        char *u = strdup(r[i].user);
        if (u == NULL)
            return CM_ENOMEM;
        p->users[p->n] = u;
        p->tenants[p->n] = ev->tenant;
        p->r[p->n] = r[i];
        p->r[p->n].user = u;
        p->r[p->n].event_id = ev->id;
        p->r[p->n].about = about;
        p->n++;
    }
    return CM_OK;
}

/* Stores the queued notifications, one nf_notify_batch per tenant. */
static cm_err flush(nf_consumer *w)
{
    pending *p = &w->p;
    nf_recipient *one = p->n ? calloc(p->n, sizeof(*one)) : NULL;
    unsigned char *done = p->n ? calloc(p->n, 1) : NULL;
    cm_err rc = CM_OK;

    if (p->n > 0 && (one == NULL || done == NULL))
        rc = CM_ENOMEM;
    for (size_t i = 0; rc == CM_OK && i < p->n; i++) {
        size_t k = 0;
        if (done[i])
            continue;
        for (size_t j = i; j < p->n; j++)
            if (!done[j] && strcmp(p->tenants[j], p->tenants[i]) == 0) {
                one[k++] = p->r[j];
                done[j] = 1;
            }
        rc = nf_notify_batch(w->ctx, p->tenants[i], one, k);
    }
    free(one);
    free(done);
    for (size_t i = 0; i < p->n; i++)
        free(p->users[i]);
    for (size_t i = 0; i < p->nabouts; i++)
        free(p->abouts[i]);
    p->n = p->nabouts = 0;
    return rc;
}

/* Forgets the queued notifications (the batch is rewound). */
static cm_err flush_drop(nf_consumer *w)
{
    pending *p = &w->p;
    for (size_t i = 0; i < p->n; i++)
        free(p->users[i]);
    for (size_t i = 0; i < p->nabouts; i++)
        free(p->abouts[i]);
    p->n = p->nabouts = 0;
    return CM_OK;
}

/* One notification for `user` (a membership change). */
static cm_err notify(nf_ctx *ctx, const event *ev, const char *user, nf_type type,
                     const char *cid, const char *actor, const char *text)
{
    nf_recipient r = {user, type, 0, NULL, NULL};
    nf_about a = {.cid = cid, .actor = actor, .text = text};
    return queue_notify(ctx, ev, &a, &r, 1);
}

/* The sender of message `id` of `tenant` as the projection knows it, into `out` (size n). */
static int sender_of(nf_ctx *ctx, const char *tenant, const char *id, char *out, size_t n)
{
    char key[256];
    bson_t f = BSON_INITIALIZER, doc;
    int found = 0;

    snprintf(key, sizeof(key), "%s/%s", tenant, id);
    BSON_APPEND_UTF8(&f, "_id", key);
    if (cm_mongo_find_one(ctx->db, NF_COLL_MESSAGES, &f, NULL, &doc) == CM_OK) {
        snprintf(out, n, "%s", cm_bson_str(&doc, "sender_id", ""));
        found = out[0] != '\0';
        bson_destroy(&doc);
    }
    bson_destroy(&f);
    return found;
}

/* message.created: every other active member gets one notification (mention, reply or
 * message). A conversation the projection does not know yet (its conversation.created on the
 * other topic not consumed yet) is retried for a while rather than dropped. */
static cm_err on_message_created(nf_ctx *ctx, const event *ev, char *why, size_t n)
{
    const char *mid = str_of(ev->data, "id"), *cid = str_of(ev->data, "conversation_id"),
               *sender = str_of(ev->data, "sender_id"), *text = str_of(ev->data, "text"),
               *parent = str_of(ev->data, "reply_to");
    char key[256], parent_sender[CM_USER_ID_MAX + 1] = "";
    bson_t doc = BSON_INITIALIZER;
    members m = {0};
    cm_err rc;

    if (mid == NULL || cid == NULL || sender == NULL || text == NULL) {
        snprintf(why, n, "message.created without id, conversation_id, sender_id or text");
        return CM_EINVAL;
    }
    /* Remember who sent it, so replies to it can be told apart later. */
    snprintf(key, sizeof(key), "%s/%s", ev->tenant, mid);
    BSON_APPEND_UTF8(&doc, "_id", key);
    BSON_APPEND_UTF8(&doc, "sender_id", sender);
    rc = cm_mongo_insert(ctx->db, NF_COLL_MESSAGES, &doc);
    bson_destroy(&doc);
    if (rc != CM_OK && rc != CM_ECONFLICT)
        return rc;
    if (parent == NULL)
        parent = str_of(ev->data, "thread_root");
    if (parent)
        sender_of(ctx, ev->tenant, parent, parent_sender, sizeof(parent_sender));
    if ((rc = members_of(ctx, ev->tenant, cid, &m)) != CM_OK)
        return rc;
    if (m.n == 0) {
        /* Not even the sender is known (a group of one still knows its owner): either the
         * conversation.created (other topic) has not been consumed yet, worth waiting a
         * little for, or the conversation predates the projection, whose members cannot be
         * learnt by waiting. Ids are UUIDv7. */
        int64_t born = cm_uuid_v7_time_ms(mid), conv_born = cm_uuid_v7_time_ms(cid);
        if (born > 0 && conv_born >= ctx->projection_since_ms &&
            cm_clock_now_ms() - born < ctx->retry_max_age_ms) {
            members_free(&m);
            return CM_EAGAIN;
        }
    }
    {
        /* Every recipient at once: a few round trips per message, not per recipient. */
        nf_recipient *r = calloc(m.n ? m.n : 1, sizeof(*r));
        const cJSON *seq = cJSON_GetObjectItemCaseSensitive(ev->data, "seq");
        nf_about a = {.cid = cid, .message_id = mid, .actor = sender, .text = text,
                      .seq = cJSON_IsNumber(seq) ? (int64_t)seq->valuedouble : 0};
        size_t k = 0;
        if (r == NULL) {
            members_free(&m);
            return CM_ENOMEM;
        }
        for (size_t i = 0; i < m.n; i++) {
            nf_type t;
            if (nf_classify_message(ev->data, m.ids[i], parent_sender[0] ? parent_sender : NULL,
                                    &t))
                r[k++] = (nf_recipient){m.ids[i], t, m.muted_until[i], NULL, NULL};
        }
        rc = queue_notify(ctx, ev, &a, r, k);
        free(r);
    }
    members_free(&m);
    return rc;
}

/* conversation.created: its initial members join the projection; in a group or channel each
 * one but the creator is told they were added (a direct conversation says so with its first
 * message). */
static cm_err on_conversation_created(nf_ctx *ctx, const event *ev, char *why, size_t n)
{
    const char *cid = str_of(ev->data, "id"), *by = str_of(ev->data, "created_by"),
               *title = str_of(ev->data, "title"), *type = str_of(ev->data, "type");
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(ev->data, "initial_members"), *it;
    cm_err rc = CM_OK;

    if (cid == NULL || by == NULL || !cJSON_IsArray(list)) {
        snprintf(why, n, "conversation.created without id, created_by or initial_members");
        return CM_EINVAL;
    }
    cJSON_ArrayForEach(it, list)
    {
        const char *u = str_of(it, "user_id");
        if (u == NULL || !cm_user_id_valid(u))
            continue;
        if ((rc = member_apply(ctx, ev->tenant, cid, u, 1, -1, ev->eseq)) != CM_OK)
            return rc;
    }
    if (type != NULL && strcmp(type, "direct") == 0)
        return CM_OK;
    {
        nf_recipient *r = calloc((size_t)cJSON_GetArraySize(list) + 1, sizeof(*r));
        nf_about a = {.cid = cid, .actor = by, .text = title ? title : ""};
        size_t k = 0;
        if (r == NULL)
            return CM_ENOMEM;
        cJSON_ArrayForEach(it, list)
        {
            const char *u = str_of(it, "user_id");
            if (u && cm_user_id_valid(u) && strcmp(u, by) != 0)
                r[k++] = (nf_recipient){u, NF_TYPE_ADDED, 0, NULL, NULL};
        }
        rc = queue_notify(ctx, ev, &a, r, k);
        free(r);
    }
    return rc;
}

/* Parses RFC 3339 UTC "YYYY-MM-DDTHH:MM:SS[.mmm]Z" into Unix ms; -1 when malformed. */
static int64_t parse_time(const char *s)
{
    struct tm tm = {0};
    int ms = 0, used = 0;

    if (s == NULL || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon,
                            &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &used) != 6)
        return -1;
    s += used;
    if (*s == '.') {
        int digits = 0;
        for (s++; *s >= '0' && *s <= '9'; s++)
            if (digits++ < 3)
                ms = ms * 10 + (*s - '0');
        while (digits > 0 && digits < 3)
            ms *= 10, digits++;
    }
    if (strcmp(s, "Z") != 0)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm) * 1000 + ms;
}

/* member.added, member.removed, member.updated (mute). */
static cm_err on_member(nf_ctx *ctx, const event *ev, char *why, size_t n)
{
    const char *cid = str_of(ev->data, "conversation_id"), *u = str_of(ev->data, "user_id"),
               *by = str_of(ev->data, "by");
    cm_err rc;

    if (cid == NULL || u == NULL || !cm_user_id_valid(u)) {
        snprintf(why, n, "%s without conversation_id or a valid user_id", ev->type);
        return CM_EINVAL;
    }
    if (strcmp(ev->type, "member.removed") == 0)
        return member_apply(ctx, ev->tenant, cid, u, 0, -1, ev->eseq);
    if (strcmp(ev->type, "member.updated") == 0) {
        const cJSON *mu = cJSON_GetObjectItemCaseSensitive(ev->data, "muted_until");
        int64_t until = cJSON_IsString(mu) ? parse_time(mu->valuestring) : 0;
        return member_apply(ctx, ev->tenant, cid, u, -1, until < 0 ? 0 : until, ev->eseq);
    }
    rc = member_apply(ctx, ev->tenant, cid, u, 1, -1, ev->eseq);
    if (rc == CM_OK && by != NULL && strcmp(by, u) != 0)
        rc = notify(ctx, ev, u, NF_TYPE_ADDED, cid, by, "");
    return rc;
}

/* notification.requested (POST /v1/notifications, one event per batch of recipients): each
 * recipient gets one custom notification, deduplicated by (batch event, user), so a crash in
 * the middle of a batch redoes only what is missing. */
static cm_err on_requested(nf_ctx *ctx, const event *ev, char *why, size_t n)
{
    const cJSON *users = cJSON_GetObjectItemCaseSensitive(ev->data, "user_ids"), *u;
    const char *title = str_of(ev->data, "title"), *body = str_of(ev->data, "body"),
               *by = str_of(ev->data, "requested_by");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(ev->data, "data");
    nf_about a = {.actor = by, .text = body, .title = title, .data = data,
                  .priority = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ev->data, "priority"))};
    nf_recipient *r;
    size_t k = 0;
    cm_err rc;

    if (!cJSON_IsArray(users) || title == NULL || body == NULL) {
        snprintf(why, n, "notification.requested without user_ids, title or body");
        return CM_EINVAL;
    }
    if ((r = calloc((size_t)cJSON_GetArraySize(users) + 1, sizeof(*r))) == NULL)
        return CM_ENOMEM;
    cJSON_ArrayForEach(u, users)
    {
        if (cJSON_IsString(u) && cm_user_id_valid(u->valuestring))
            r[k++] = (nf_recipient){u->valuestring, NF_TYPE_CUSTOM, 0, NULL, NULL};
    }
    rc = queue_notify(ctx, ev, &a, r, k);
    free(r);
    return rc;
}

/* One record: handled, dead-lettered, skipped, or left for a retry. */
/* user.deleted (topic `users`): everything this service holds about the user goes, whatever
 * the tenant's erase_policy (a notification quotes messages: anonymising would keep their
 * text). Idempotent, so a redelivery is harmless (issue 5's erasure, in every service). */
static cm_err on_user_deleted(nf_ctx *ctx, const event *ev, char *why, size_t n)
{
    static const char *const colls[] = {NF_COLL_NOTIFICATIONS, NF_COLL_DEVICES, NF_COLL_DELIVERIES,
                                        NF_COLL_DECISIONS,     NF_COLL_PREFS,   NF_COLL_MEMBERS,
                                        NF_COLL_CONTACTS,      NF_COLL_DIGESTS, NF_COLL_READS,
                                        NF_COLL_ESCALATIONS};
    const char *user = str_of(ev->data, "user_id");
    cm_err rc = CM_OK;

    if (user == NULL) {
        snprintf(why, n, "user.deleted without data.user_id");
        return CM_EINVAL;
    }
    for (size_t i = 0; rc == CM_OK && i < sizeof(colls) / sizeof(colls[0]); i++) {
        bson_t f = BSON_INITIALIZER;
        BSON_APPEND_UTF8(&f, "tenant", ev->tenant);
        BSON_APPEND_UTF8(&f, "user_id", user);
        rc = cm_mongo_delete(strcmp(colls[i], NF_COLL_DELIVERIES) == 0 ? ctx->ddb : ctx->db,
                             colls[i], &f, 1, NULL);
        bson_destroy(&f);
    }
    if (rc == CM_OK)
        nf_devcache_forget(ctx, ev->tenant, user, NULL);
    return rc;
}

/* One record of a batch: handled (its notifications queued), dead-lettered, skipped, or an
 * error that rewinds the batch. Its parsed event stays alive in w->p.roots until the batch
 * ends (the queued notifications point into it). */
static cm_err handle(nf_consumer *w, const cm_kafka_record *rec)
{
    char why[256] = "";
    cJSON *root = NULL;
    const cJSON *eseq;
    event ev = {0};
    cm_err rc = CM_OK;

    if (cm_json_parse(rec->value, rec->value_len, 32, &root, why, sizeof(why)) != CM_OK ||
        !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return dead_letter(w, rec, why[0] ? why : "not a JSON object");
    }
    ev.root = root;
    ev.id = str_of(root, "id");
    ev.type = str_of(root, "type");
    ev.tenant = str_of(root, "tenant");
    ev.data = cJSON_GetObjectItemCaseSensitive(root, "data");
    eseq = cJSON_GetObjectItemCaseSensitive(root, "eseq");
    ev.eseq = cJSON_IsNumber(eseq) ? (int64_t)eseq->valuedouble : 0;
    if (ev.type == NULL || ev.id == NULL || ev.tenant == NULL || !cJSON_IsObject(ev.data)) {
        rc = dead_letter(w, rec, "not a CloudEvent with id, type, tenant and data");
        goto out;
    }
    if (strcmp(ev.type, "message.created") == 0)
        rc = on_message_created(w->ctx, &ev, why, sizeof(why));
    else if (strcmp(ev.type, "conversation.created") == 0)
        rc = on_conversation_created(w->ctx, &ev, why, sizeof(why));
    else if (strcmp(ev.type, "notification.requested") == 0)
        rc = on_requested(w->ctx, &ev, why, sizeof(why));
    else if (strcmp(ev.type, "user.deleted") == 0) {
        /* What the batch queued for this user is stored before the erasure, not after. */
        if ((rc = flush(w)) == CM_OK)
            rc = on_user_deleted(w->ctx, &ev, why, sizeof(why));
    }
    else if (strcmp(ev.type, "conversation.read") == 0)
        rc = nf_conversation_read(w->ctx, ev.tenant, ev.data, why, sizeof(why));
    else if (strcmp(ev.type, "user.verification_requested") == 0 ||
             strcmp(ev.type, "user.password_reset_requested") == 0)
        rc = nf_account_email(w->ctx, ev.id, ev.type, ev.tenant, ev.data, why, sizeof(why));
    else if (strcmp(ev.type, "member.added") == 0 || strcmp(ev.type, "member.removed") == 0 ||
             strcmp(ev.type, "member.updated") == 0)
        rc = on_member(w->ctx, &ev, why, sizeof(why));
    /* Reactions, receipts, edits: nobody is notified in-app (yet); webhooks may want them. */
    if (rc == CM_OK && nf_webhook_event_type(ev.type))
        rc = nf_webhooks_enqueue(w->ctx, ev.tenant, ev.type, ev.id, rec->value, rec->value_len);
    if (rc == CM_EINVAL)
        rc = dead_letter(w, rec, why);
    else if (rc == CM_OK)
        atomic_fetch_add(&w->handled, 1);
    else
        atomic_fetch_add(&w->retries, 1); /* rewound: comes again (cm_kafka_worker) */
out:
    w->p.roots[w->p.nroots++] = root;
    return rc;
}

/* A batch of records (cm_kafka_worker): each handled in order (the membership projection is
 * applied as it goes), then the notifications of all of them stored together. Any failure
 * rewinds the whole batch, which is then handled again: every write is idempotent (a poison
 * record may then be dead-lettered twice). */
static cm_err handle_batch(const cm_kafka_record *recs, size_t n, void *ud)
{
    nf_consumer *w = ud;
    cm_err rc = CM_OK;

    unsigned char *later = calloc(n, 1);

    w->p.nroots = 0;
    /* A record may be handled twice (deferred below): room for two parses each. */
    if (later == NULL || (w->p.roots = calloc(2 * n, sizeof(*w->p.roots))) == NULL) {
        free(later);
        return CM_ENOMEM;
    }
    for (size_t i = 0; i < n && rc == CM_OK; i++) {
        if (atomic_load(&w->stopping)) {
            rc = CM_EAGAIN; /* rewound: the next instance handles the batch */
            break;
        }
        rc = handle(w, &recs[i]);
        if (rc == CM_EAGAIN) {
            /* A message whose conversation is not projected yet: its conversation.created
             * (another topic) may be later in this batch; try it again at the end. */
            later[i] = 1;
            rc = CM_OK;
        }
    }
    for (size_t i = 0; i < n && rc == CM_OK; i++)
        if (later[i])
            rc = handle(w, &recs[i]);
    free(later);
    if (rc == CM_OK)
        rc = flush(w);
    else
        (void)flush_drop(w);
    for (size_t i = 0; i < w->p.nroots; i++)
        cJSON_Delete(w->p.roots[i]);
    free(w->p.roots);
    w->p.roots = NULL;
    w->p.nroots = 0;
    return rc;
}

cm_err nf_consumer_start(nf_ctx *ctx, const char *brokers, const char *prefix, const char *group,
                         int from_beginning, nf_consumer **out)
{
    static const char *const topics[] = {"messages", "conversations", NF_TOPIC, "users"};
    nf_consumer *w = calloc(1, sizeof(*w));
    /* A down database: 200 ms between attempts. A message whose conversation is not projected
     * yet (CM_EAGAIN): 50 ms, while the other topic's records come first. */
    cm_kafka_worker_config kc = {.many = handle_batch, .batch = EVENTS_PER_BATCH,
                                 .backoff_ms = 200, .again_ms = 50, .ud = w};
    cm_err rc;

    if (w == NULL)
        return CM_ENOMEM;
    w->ctx = ctx;
    rc = cm_kafka_consumer_create(brokers, prefix, group, topics, 4, from_beginning,
                                  &w->consumer);
    if (rc == CM_OK)
        rc = cm_kafka_worker_start(w->consumer, &kc, &w->kw);
    if (rc != CM_OK) {
        free(w);
        return rc;
    }
    *out = w;
    return CM_OK;
}

void nf_consumer_stop(nf_consumer *w)
{
    if (w == NULL)
        return;
    atomic_store(&w->stopping, 1);
    cm_kafka_worker_stop(w->kw);
    free(w->p.r);
    free(w->p.users);
    free(w->p.tenants);
    free(w->p.abouts);
    free(w);
}

int nf_consumer_assigned(nf_consumer *w)
{
    return w != NULL && cm_kafka_consumer_lag(w->consumer) >= 0;
}

void nf_metrics(void *ud, void (*emit)(void *ctx, const char *text), void *ctx)
{
    nf_ctx *c = ud;
    nf_consumer *w = c->consumer;
    char buf[1536];

    snprintf(buf, sizeof(buf),
             "# HELP notification_consumer_lag Records of the assigned partitions not yet handled.\n"
             "# TYPE notification_consumer_lag gauge\n"
             "notification_consumer_lag %lld\n"
             "# HELP notification_events_handled_total Events handled (notified or not).\n"
             "# TYPE notification_events_handled_total counter\n"
             "notification_events_handled_total %ld\n"
             "# HELP notification_events_dead_lettered_total Records sent to a .dlq topic.\n"
             "# TYPE notification_events_dead_lettered_total counter\n"
             "notification_events_dead_lettered_total %ld\n"
             "# HELP notification_event_retries_total Records rewound to be handled again.\n"
             "# TYPE notification_event_retries_total counter\n"
             "notification_event_retries_total %ld\n"
             "# HELP notification_created_total In-app notifications stored.\n"
             "# TYPE notification_created_total counter\n"
             "notification_created_total %ld\n"
             "# HELP notification_duplicates_total Notifications already stored (replays).\n"
             "# TYPE notification_duplicates_total counter\n"
             "notification_duplicates_total %ld\n"
             "# HELP notification_outbox_republished_total Events produced again by the outbox.\n"
             "# TYPE notification_outbox_republished_total counter\n"
             "notification_outbox_republished_total %ld\n",
             w ? (long long)cm_kafka_consumer_lag(w->consumer) : -1LL,
             w ? atomic_load(&w->handled) : 0L, w ? atomic_load(&w->dead) : 0L,
             w ? atomic_load(&w->retries) : 0L, atomic_load(&c->created),
             atomic_load(&c->duplicates), c->outbox ? cm_outbox_republished(c->outbox) : 0L);
    emit(ctx, buf);
    nf_push_metrics(c->push, emit, ctx);
    nf_mail_metrics(c->mail, emit, ctx);
    nf_webhooks_metrics(c->webhooks, emit, ctx);
}
