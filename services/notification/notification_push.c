/* notification_push.c - push notifications: the plan (muted? online? which devices?), the
 * decisions recorded for diagnostics, and the sender thread that delivers queued deliveries to
 * FCM HTTP v1 (OAuth 2.0 access token from a service-account assertion, RFC 7523, cached) and
 * APNs (ES256 provider token, HTTP/2) and web push endpoints (RFC 8291 encryption, RFC 8292
 * VAPID: notification_webpush.c), retries at the configured delays (1 s, 5 s, 30 s) with
 * jitter, gives up to the DLQ topic, and prunes the tokens a provider reports dead.
 *
 * One delivery per (notification, device), created with a unique key, so a replayed event
 * queues nothing twice. A delivery is claimed with a Redis lease before it is sent (FerretDB
 * updates are not atomic, so two instances could both take it from MongoDB alone). */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "common/clock.h"
#include "common/event.h"
#include "common/httpc.h"
#include "common/json.h"
#include "common/jws.h"
#include "common/log.h"
#include "common/uuid.h"
#include "notification.h"
#include "notification_channels.h"
#include "notification_webpush.h"

#define LEASE_MS 60000          /* a claimed delivery is someone's for this long */
#define BATCH 512               /* deliveries taken per round */
#define PARALLEL 64             /* provider requests in flight at once */
#define SWEEP_MS 300000         /* queued deliveries are read from the store at start and then
                                   this often (what another instance's timers held) */
#define QUEUE_MAX 20000         /* timers held at most (the rest: the next sweep) */
#define TIMERS_PER_ROUND 64     /* timers taken per round (each round reads them again) */
#define PROVIDER_BODY_MAX 65536 /* bytes of a provider's answer kept */

struct nf_push {
    nf_ctx *ctx;
    nf_push_config cfg;
    char instance[33];
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_cond_t done_cv; /* a consumer batch's deliveries are recorded */
    int stop, kick;
    struct nf_push_batch *batches; /* handed over by the consumer, in order (guarded by mu) */
    struct timer *timers;          /* min-heap on due (guarded by mu) */
    size_t ntimers;
    int timers_turn;               /* the next round takes timers before batches (mu) */
    cm_httpc_pool *http; /* kept-alive provider connections, sender thread only */
    /* FCM access token (RFC 6749 section 5.1), used by the sender thread only. */
    char fcm_token[4096];
    int64_t fcm_token_until;
    /* APNs provider token: Apple accepts one for an hour and refuses a new one more often
     * than every 20 minutes ("Establishing a token-based connection to APNs"). */
    char apns_token[1024];
    int64_t apns_token_until;
    atomic_long sent, retried, dead_lettered, dead_tokens, failed, token_fetches;
};

/* --- decisions ------------------------------------------------------------------------- */

/* Builds the decision document (unique k per event, user, decision and device) into `d`. */
static cm_err decision_doc(const nf_push_item *it, const char *decision, const char *device_id,
                           const char *detail, bson_t *d)
{
    char id[CM_UUID_STRLEN], k[600];
    const char *channel = it->channel ? it->channel : "push";

    if (cm_uuid_v7(id) != CM_OK)
        return CM_EIO;
    snprintf(k, sizeof(k), "%s|%s|%s|%s|%s|%s", it->tenant, it->event_id, it->user, channel,
             decision, device_id ? device_id : "");
    bson_init(d);
    BSON_APPEND_UTF8(d, "_id", id);
    BSON_APPEND_UTF8(d, "k", k);
    BSON_APPEND_UTF8(d, "tenant", it->tenant);
    BSON_APPEND_UTF8(d, "user_id", it->user);
    BSON_APPEND_UTF8(d, "event_id", it->event_id);
    BSON_APPEND_UTF8(d, "notification_id", it->notification_id);
    if (it->message_id)
        BSON_APPEND_UTF8(d, "message_id", it->message_id);
    BSON_APPEND_UTF8(d, "channel", channel);
    BSON_APPEND_UTF8(d, "decision", decision);
    if (device_id)
        BSON_APPEND_UTF8(d, "device_id", device_id);
    BSON_APPEND_UTF8(d, "detail", detail ? detail : "");
    BSON_APPEND_DATE_TIME(d, "at", cm_clock_now_ms());
    return CM_OK;
}

void nf_decision(nf_ctx *ctx, const nf_push_item *it, const char *decision, const char *device_id,
                 const char *detail)
{
    bson_t d;

    if (decision_doc(it, decision, device_id, detail, &d) != CM_OK)
        return;
    /* A replay finds its decision already recorded (unique k): nothing to do. */
    (void)cm_mongo_insert(ctx->db, NF_COLL_DECISIONS, &d);
    bson_destroy(&d);
}

/* A growing list of documents written with one insert_many. Each document is allocated on
 * its own: a bson_t cannot be moved (a grown one points into itself), so the array holds
 * pointers. */
typedef struct doc_list {
    bson_t **docs;
    size_t n, cap;
} doc_list;

/* A new document at the end of `l`, uninitialised (the caller bson_init's it, or drops it
 * with doc_list_drop_last); NULL when out of memory. */
static bson_t *doc_list_add(doc_list *l)
{
    bson_t *d;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        bson_t **nd = realloc(l->docs, cap * sizeof(*nd));
        if (nd == NULL)
            return NULL;
        l->docs = nd;
        l->cap = cap;
    }
    if ((d = malloc(sizeof(*d))) == NULL)
        return NULL;
    l->docs[l->n++] = d;
    return d;
}

/* Forgets the last document added, never initialised. */
static void doc_list_drop_last(doc_list *l)
{
    free(l->docs[--l->n]);
}

/* Inserts the documents of `l` into `coll` of `db` in one round trip; those stored before (a
 * replay) are left as they are. */
static cm_err doc_list_insert(cm_mongo *db, const char *coll, const doc_list *l)
{
    unsigned char *dup;
    cm_err rc;

    if (l->n == 0)
        return CM_OK;
    if ((dup = calloc(l->n, 1)) == NULL)
        return CM_ENOMEM;
    rc = cm_mongo_insert_many(db, coll, (const bson_t *const *)l->docs, l->n, dup);
    free(dup);
    return rc;
}

static void doc_list_cleanup(doc_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        bson_destroy(l->docs[i]);
        free(l->docs[i]);
    }
    free(l->docs);
    l->docs = NULL;
    l->n = l->cap = 0;
}

/* Adds a decision to `l` (dropped when out of memory: a decision only explains). */
static void decide(doc_list *l, const nf_push_item *it, const char *decision,
                   const char *device_id, const char *detail)
{
    bson_t *d = doc_list_add(l);
    if (d != NULL && decision_doc(it, decision, device_id, detail, d) != CM_OK)
        doc_list_drop_last(l);
}

/* --- the plan ------------------------------------------------------------------------- */

/* Whether each user of `items[0..n)` has a live WebSocket connection, in one round trip: the
 * socket service keeps each live connection in the sorted set presence:<tenant>:<user>:conns
 * scored by its expiry (ms), refreshed by heartbeats (services/socket/socket_ephemeral.c).
 * on[i] is 1 (online), 0 (offline) or -1 (Redis cannot tell). */
static void online_many(nf_ctx *ctx, const nf_push_item *const *items, size_t n, int *on)
{
    cm_redis_cmd *cmds = calloc(n, sizeof(*cmds));
    char (*keys)[300] = calloc(n, sizeof(*keys)), now[24];
    int64_t *counts = calloc(n, sizeof(*counts));

    for (size_t i = 0; i < n; i++)
        on[i] = -1;
    if (cmds && keys && counts) {
        snprintf(now, sizeof(now), "(%" PRId64, cm_clock_now_ms());
        for (size_t i = 0; i < n; i++) {
            snprintf(keys[i], sizeof(keys[i]), "presence:%s:%s:conns", items[i]->tenant,
                     items[i]->user);
            cmds[i] = (cm_redis_cmd){4, {"ZCOUNT", keys[i], now, "+inf"}};
        }
        if (cm_redis_pipeline(ctx->redis, cmds, n, counts) == CM_OK)
            for (size_t i = 0; i < n; i++)
                on[i] = counts[i] < 0 ? -1 : counts[i] > 0;
    }
    free(cmds);
    free(keys);
    free(counts);
}

typedef struct device_list {
    const nf_push_item *const *items; /* the users asked about */
    size_t n;
    bson_t (*docs)[NF_DEVICES_PER_USER]; /* per item */
    size_t *count;                       /* per item */
} device_list;

static int collect_device(const bson_t *doc, void *ud)
{
    device_list *l = ud;
    const char *user = cm_bson_str(doc, "user_id", "");
    for (size_t i = 0; i < l->n; i++)
        if (l->count[i] < NF_DEVICES_PER_USER && strcmp(l->items[i]->user, user) == 0)
            bson_copy_to(doc, &l->docs[i][l->count[i]++]);
    return 0;
}

void nf_delivery_id(const char *notification_id, const char *k, char out[37])
{
    unsigned char h[32], b[16];
    unsigned int hl = 0;
    int64_t ms = cm_uuid_v7_time_ms(notification_id);
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    if (!EVP_Digest(k, strlen(k), h, &hl, EVP_sha256(), NULL))
        memset(h, 0, sizeof(h)); /* cannot happen with OpenSSL's SHA-256; ids stay unique by k */
    if (ms < 0)
        ms = 0;
    for (int i = 0; i < 6; i++)
        b[i] = (unsigned char)((uint64_t)ms >> (40 - 8 * i));
    memcpy(b + 6, h, 10);
    b[6] = (unsigned char)(0x80 | (b[6] & 0x0f)); /* version 8 */
    b[8] = (unsigned char)(0x80 | (b[8] & 0x3f)); /* variant 10 */
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    out[o] = '\0';
}

/* The delivery document of `it` to device `dev`, due at `at` (ms), saying `txt` (rendered
 * from the tenant's push templates), into `d`. `queued` (NULL for a deferred one) is why it
 * was queued: the diagnostics show it as the decision "queued" (one document less per push
 * than a decision of its own). */
static cm_err delivery_doc(const nf_push_item *it, const bson_t *dev, int64_t at,
                           const nf_push_text *txt, const char *queued, bson_t *d)
{
    char id[CM_UUID_STRLEN], k[200];
    const char *device_id = cm_bson_str(dev, "_id", "");

    snprintf(k, sizeof(k), "%s|%s", it->notification_id, device_id);
    nf_delivery_id(it->notification_id, k, id);
    bson_init(d);
    BSON_APPEND_UTF8(d, "_id", id);
    BSON_APPEND_UTF8(d, "k", k);
    BSON_APPEND_UTF8(d, "tenant", it->tenant);
    BSON_APPEND_UTF8(d, "user_id", it->user);
    BSON_APPEND_UTF8(d, "event_id", it->event_id);
    BSON_APPEND_UTF8(d, "notification_id", it->notification_id);
    BSON_APPEND_UTF8(d, "type", it->type);
    if (it->conversation_id)
        BSON_APPEND_UTF8(d, "conversation_id", it->conversation_id);
    if (it->message_id)
        BSON_APPEND_UTF8(d, "message_id", it->message_id);
    BSON_APPEND_UTF8(d, "actor_id", it->actor ? it->actor : "");
    BSON_APPEND_UTF8(d, "text", it->text ? it->text : "");
    BSON_APPEND_UTF8(d, "device_id", device_id);
    BSON_APPEND_UTF8(d, "platform", cm_bson_str(dev, "platform", ""));
    BSON_APPEND_UTF8(d, "token", cm_bson_str(dev, "token", ""));
    BSON_APPEND_UTF8(d, "app_id", cm_bson_str(dev, "app_id", ""));
    if (cm_bson_str(dev, "p256dh", NULL) != NULL) {
        /* A web push subscription's keys: the message is encrypted to them when sent. */
        BSON_APPEND_UTF8(d, "p256dh", cm_bson_str(dev, "p256dh", ""));
        BSON_APPEND_UTF8(d, "auth", cm_bson_str(dev, "auth", ""));
    }
    if (queued)
        BSON_APPEND_UTF8(d, "queued_detail", queued);
    if (it->title)
        BSON_APPEND_UTF8(d, "title", it->title);
    BSON_APPEND_UTF8(d, "push_title", txt->title);
    BSON_APPEND_UTF8(d, "push_body", txt->body);
    BSON_APPEND_DATE_TIME(d, "created_at", cm_clock_now_ms());
    /* Last: the sender rewrites these three when it records an attempt. */
    BSON_APPEND_UTF8(d, "state", "queued");
    BSON_APPEND_INT32(d, "attempts", 0);
    BSON_APPEND_INT64(d, "next_at", at);
    return CM_OK;
}

/* The devices of the users of `items[0..n)` (one query: the fallback when the cache cannot
 * answer), into `l` (allocated by the caller). */
static cm_err devices_of(nf_ctx *ctx, const nf_push_item *const *items, size_t n, device_list *l)
{
    bson_t f = BSON_INITIALIZER, in, arr;
    char idx[24];
    cm_err rc;

    BSON_APPEND_UTF8(&f, "tenant", items[0]->tenant);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "user_id", &in);
    BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
    for (size_t i = 0; i < n; i++) {
        snprintf(idx, sizeof(idx), "%zu", i);
        BSON_APPEND_UTF8(&arr, idx, items[i]->user);
    }
    bson_append_array_end(&in, &arr);
    bson_append_document_end(&f, &in);
    rc = cm_mongo_find(ctx->db, NF_COLL_DEVICES, &f, NULL, collect_device, l);
    bson_destroy(&f);
    return rc;
}

/* The devices of the users of `items[0..n)`: from the Redis cache (notification_devcache.c),
 * or from MongoDB when it cannot answer. */
static cm_err devices_for(nf_ctx *ctx, const nf_push_item *const *items, size_t n, device_list *l)
{
    const char **users = calloc(n, sizeof(*users));
    cm_err rc = CM_ENOMEM;

    l->items = items;
    l->n = n;
    l->docs = calloc(n, sizeof(*l->docs));
    l->count = calloc(n, sizeof(*l->count));
    if (users == NULL || l->docs == NULL || l->count == NULL)
        goto out;
    for (size_t i = 0; i < n; i++)
        users[i] = items[i]->user;
    rc = nf_devcache_devices(ctx, items[0]->tenant, users, n, l->docs, l->count);
    if (rc != CM_OK) {
        cm_warn("push: the devices cache cannot answer (%s): read from MongoDB", cm_strerror(rc));
        rc = devices_of(ctx, items, n, l);
    }
out:
    free(users);
    return rc;
}

static void device_list_cleanup(device_list *l)
{
    for (size_t i = 0; l->count && i < l->n; i++)
        for (size_t j = 0; j < l->count[i]; j++)
            bson_destroy(&l->docs[i][j]);
    free(l->docs);
    free(l->count);
}

typedef struct stored_ids {
    doc_list *l;
    unsigned char *there;
} stored_ids;

static int collect_stored_id(const bson_t *doc, void *ud)
{
    stored_ids *s = ud;
    const char *id = cm_bson_str(doc, "_id", "");
    for (size_t i = 0; i < s->l->n; i++)
        if (strcmp(cm_bson_str(s->l->docs[i], "_id", ""), id) == 0)
            s->there[i] = 1;
    return 0;
}

/* A replayed event's notifications were stored before: of their deliveries, drops from `l`
 * those stored already (sent, or queued: the sender has them), with one `_id $in` query. */
static cm_err drop_stored(nf_ctx *ctx, doc_list *l, const unsigned char *replay)
{
    bson_t f = BSON_INITIALIZER, opts = BSON_INITIALIZER, in, arr, proj;
    unsigned char *there = calloc(l->n ? l->n : 1, 1);
    stored_ids s = {l, there};
    size_t k = 0, w = 0;
    char idx[24];
    cm_err rc;

    if (there == NULL)
        return CM_ENOMEM;
    BSON_APPEND_DOCUMENT_BEGIN(&f, "_id", &in);
    BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
    for (size_t i = 0; i < l->n; i++)
        if (replay[i]) {
            snprintf(idx, sizeof(idx), "%zu", k++);
            BSON_APPEND_UTF8(&arr, idx, cm_bson_str(l->docs[i], "_id", ""));
        }
    bson_append_array_end(&in, &arr);
    bson_append_document_end(&f, &in);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
    BSON_APPEND_INT32(&proj, "_id", 1);
    bson_append_document_end(&opts, &proj);
    rc = k == 0 ? CM_OK
                : cm_mongo_find(ctx->ddb, NF_COLL_DELIVERIES, &f, &opts, collect_stored_id, &s);
    if (rc == CM_OK) {
        for (size_t i = 0; i < l->n; i++) {
            if (there[i]) {
                bson_destroy(l->docs[i]);
                free(l->docs[i]);
            } else {
                l->docs[w++] = l->docs[i];
            }
        }
        l->n = w;
    }
    bson_destroy(&f);
    bson_destroy(&opts);
    free(there);
    return rc;
}

cm_err nf_push_plan(nf_ctx *ctx, const nf_push_item *it)
{
    return nf_push_plan_many(ctx, it, 1);
}

cm_err nf_push_plan_many(nf_ctx *ctx, const nf_push_item *items, size_t n)
{
    nf_push_batch *b = NULL;
    cm_err rc = nf_push_plan_async(ctx, items, n, &b), wrc = nf_push_wait(ctx->push, b);
    return rc != CM_OK ? rc : wrc;
}

cm_err nf_push_plan_async(nf_ctx *ctx, const nf_push_item *items, size_t n,
                          nf_push_batch **pending)
{
    const nf_push_item **left = calloc(n ? n : 1, sizeof(*left)), **offline = NULL;
    int *on = calloc(n ? n : 1, sizeof(*on)), *off_on = NULL;
    doc_list decisions = {0}, now_list = {0}, later = {0};
    unsigned char *replay = NULL;
    size_t replays = 0;
    device_list l = {0};
    nf_push_templates *tpl = NULL;
    const char **users = NULL;
    char (*locale)[36] = NULL;
    size_t nleft = 0, noff = 0;
    int64_t now = cm_clock_now_ms();
    char detail[128];
    cm_err rc = CM_ENOMEM;

    *pending = NULL;
    if (left == NULL || on == NULL)
        goto out;
    rc = CM_OK;
    for (size_t i = 0; i < n; i++) {
        const nf_push_item *it = &items[i];
        if (it->push_off) {
            decide(&decisions, it, "preference", NULL,
                   "the user turned push off for this type of notification");
        } else if (it->muted_until > now) {
            char until[CM_RFC3339_LEN];
            cm_clock_rfc3339(it->muted_until, until);
            snprintf(detail, sizeof(detail), "the conversation is muted until %s", until);
            decide(&decisions, it, "muted", NULL, detail);
        } else {
            left[nleft++] = it;
        }
    }
    if (nleft == 0)
        goto record;
    online_many(ctx, left, nleft, on);
    offline = calloc(nleft, sizeof(*offline));
    off_on = calloc(nleft, sizeof(*off_on));
    if (offline == NULL || off_on == NULL) {
        rc = CM_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < nleft; i++) {
        if (on[i] == 1) {
            decide(&decisions, left[i], "online", NULL,
                   "the user had a live connection: delivered in-app over the WebSocket");
        } else {
            off_on[noff] = on[i];
            offline[noff++] = left[i];
        }
    }
    if (noff == 0)
        goto record;
    if ((rc = devices_for(ctx, offline, noff, &l)) != CM_OK)
        goto out;
    /* The wording: the tenant's push templates in one query, and the recipients' locales in
     * another only when some template is localized; neither when nobody has a device. */
    for (size_t i = 0; i < noff && tpl == NULL; i++)
        if (l.count[i] > 0 && (rc = nf_push_templates_load(ctx, offline[0]->tenant, &tpl)) != CM_OK)
            goto out;
    users = calloc(noff, sizeof(*users));
    locale = calloc(noff, sizeof(*locale));
    if (users == NULL || locale == NULL) {
        rc = CM_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < noff; i++)
        users[i] = offline[i]->user;
    if (nf_push_templates_localized(tpl) &&
        (rc = nf_locales_load(ctx, offline[0]->tenant, users, noff, locale)) != CM_OK)
        goto out;
    for (size_t i = 0; i < noff; i++) {
        const nf_push_item *it = offline[i];
        nf_vars vars = {{0}, {0}};
        nf_push_text txt;
        if (l.count[i] == 0) {
            decide(&decisions, it, "no_device", NULL, "the user has no registered device");
            continue;
        }
        vars.v[NF_VAR_SENDER_NAME] = it->actor;
        vars.v[NF_VAR_TEXT] = it->text;
        vars.v[NF_VAR_TITLE] = it->title;
        vars.v[NF_VAR_CONVERSATION_ID] = it->conversation_id;
        vars.v[NF_VAR_MESSAGE_ID] = it->message_id;
        vars.v[NF_VAR_USER_ID] = it->user;
        if (nf_push_render(tpl, it->type, locale[i], &vars, &txt) != CM_OK) {
            /* A type without a push default: said plainly rather than not at all. */
            nf_preview(it->title ? it->title : "New message", txt.title, sizeof(txt.title));
            nf_preview(it->text ? it->text : "", txt.body, sizeof(txt.body));
        }
        for (size_t j = 0; j < l.count[i]; j++) {
            const bson_t *dev = &l.docs[i][j];
            const char *did = cm_bson_str(dev, "_id", "");
            int deferred = it->quiet_until > 0;
            doc_list *dl = deferred ? &later : &now_list;
            bson_t *d;
            if ((d = doc_list_add(dl)) == NULL) {
                rc = CM_ENOMEM;
                goto out;
            }
            if ((rc = delivery_doc(it, dev, deferred ? it->quiet_until : now, &txt,
                                   deferred ? NULL
                                   : off_on[i] < 0
                                       ? "presence unknown (Redis unreachable): pushed to be safe"
                                       : "the user was offline",
                                   d)) != CM_OK) {
                doc_list_drop_last(dl);
                goto out;
            }
            if (deferred) {
                /* Quiet hours defer the push to their end; they never drop it. */
                char until[CM_RFC3339_LEN];
                cm_clock_rfc3339(it->quiet_until, until);
                snprintf(detail, sizeof(detail), "quiet hours: deferred until %s", until);
                decide(&decisions, it, "quiet_hours", did, detail);
            } else if (it->replay) {
                unsigned char *r = realloc(replay, now_list.n);
                if (r == NULL) {
                    rc = CM_ENOMEM;
                    goto out;
                }
                replay = r;
                memset(replay + replays, 0, now_list.n - replays);
                replays = now_list.n;
                replay[now_list.n - 1] = 1;
            }
        }
    }
record:
    /* A replayed event: what was recorded before the crash is not sent again. */
    if (replays > 0) {
        unsigned char *r = realloc(replay, now_list.n ? now_list.n : 1);
        if (r == NULL) {
            rc = CM_ENOMEM;
            goto out;
        }
        replay = r;
        memset(replay + replays, 0, now_list.n - replays);
        if ((rc = drop_stored(ctx, &now_list, replay)) != CM_OK)
            goto out;
    }
    /* Deferred deliveries are stored queued (a replay finds them stored: unique k) and
     * handed to the sender's timers; the due ones are sent now and stored with their first
     * attempt: nothing is stored for them before, and nothing updated after. */
    if ((rc = doc_list_insert(ctx->ddb, NF_COLL_DELIVERIES, &later)) != CM_OK)
        goto out;
    (void)doc_list_insert(ctx->db, NF_COLL_DECISIONS, &decisions);
    if (later.n > 0 && ctx->push)
        nf_push_kick(ctx->push, (const bson_t *const *)later.docs, later.n);
    if (now_list.n > 0) {
        if (ctx->push && (rc = nf_push_submit(ctx->push, now_list.docs, now_list.n, pending)) ==
                             CM_OK)
            now_list = (doc_list){0}; /* the sender's now */
        else if (ctx->push == NULL)
            rc = doc_list_insert(ctx->ddb, NF_COLL_DELIVERIES, &now_list);
    }
out:
    device_list_cleanup(&l);
    nf_push_templates_destroy(tpl);
    free(users);
    free(locale);
    free(replay);
    doc_list_cleanup(&decisions);
    doc_list_cleanup(&now_list);
    doc_list_cleanup(&later);
    free(left);
    free(on);
    free(offline);
    free(off_on);
    return rc;
}

/* --- providers ------------------------------------------------------------------------- */

/* What one attempt came to. */
typedef enum outcome {
    OUT_SENT,      /* the provider accepted it */
    OUT_DEAD,      /* the provider says the token is dead: prune the device */
    OUT_RETRY,     /* transient: 5xx, 429, unreachable, timeout */
    OUT_FAIL,      /* refused for good (4xx other than a dead token) */
} outcome;

static outcome classify_status(long status)
{
    if (status >= 200 && status < 300)
        return OUT_SENT;
    if (status == 429 || status >= 500 || status == 408)
        return OUT_RETRY;
    return OUT_FAIL;
}

/* An OAuth 2.0 access token for FCM: a service-account JWT (RFC 7523 section 2.1) exchanged at
 * the credentials' token_uri, kept until a minute before it expires. */
static cm_err fcm_access_token(nf_push *p, char *why, size_t n)
{
    cJSON *cred = NULL, *claims = NULL, *ans = NULL;
    const cJSON *email, *key, *uri;
    char *jwt = NULL, *form = NULL, *body = NULL, detail[128];
    size_t len = 0, flen;
    long status = 0;
    int64_t now = cm_clock_now_ms();
    cm_err rc = CM_EINVAL;

    if (p->fcm_token[0] && now < p->fcm_token_until)
        return CM_OK;
    if (cm_json_parse(p->cfg.fcm_credentials, strlen(p->cfg.fcm_credentials), 8, &cred, detail,
                      sizeof(detail)) != CM_OK) {
        snprintf(why, n, "FCM credentials are not JSON: %s", detail);
        goto out;
    }
    email = cJSON_GetObjectItemCaseSensitive(cred, "client_email");
    key = cJSON_GetObjectItemCaseSensitive(cred, "private_key");
    uri = cJSON_GetObjectItemCaseSensitive(cred, "token_uri");
    if (!cJSON_IsString(email) || !cJSON_IsString(key) || !cJSON_IsString(uri)) {
        snprintf(why, n, "FCM credentials lack client_email, private_key or token_uri");
        goto out;
    }
    claims = cJSON_CreateObject();
    cJSON_AddStringToObject(claims, "iss", email->valuestring);
    cJSON_AddStringToObject(claims, "scope", "https://www.googleapis.com/auth/firebase.messaging");
    cJSON_AddStringToObject(claims, "aud", uri->valuestring);
    cJSON_AddNumberToObject(claims, "iat", (double)(now / 1000));
    cJSON_AddNumberToObject(claims, "exp", (double)(now / 1000 + 3600));
    if ((rc = cm_jws_sign("RS256", key->valuestring, strlen(key->valuestring), NULL, claims,
                          &jwt)) != CM_OK) {
        snprintf(why, n, "the FCM service-account key cannot sign (RS256)");
        goto out;
    }
    flen = strlen(jwt) + 128;
    if ((form = malloc(flen)) == NULL) {
        rc = CM_ENOMEM;
        goto out;
    }
    /* A JWT is base64url and dots: nothing to percent-encode. */
    snprintf(form, flen, "grant_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Agrant-type%%3Ajwt-bearer"
                         "&assertion=%s", jwt);
    {
        const char *hdr[] = {"Content-Type: application/x-www-form-urlencoded", NULL};
        cm_httpc_request r = {"POST", uri->valuestring, hdr, form, strlen(form),
                              p->cfg.timeout_ms, PROVIDER_BODY_MAX, 0, NULL, NULL};
        rc = cm_httpc_request_do(&r, &body, &len, &status);
    }
    atomic_fetch_add(&p->token_fetches, 1);
    if (rc != CM_OK) {
        snprintf(why, n, "the FCM token endpoint is unreachable (%s)", cm_strerror(rc));
        rc = CM_EAGAIN;
        goto out;
    }
    if (status != 200 || cm_json_parse(body, len, 8, &ans, detail, sizeof(detail)) != CM_OK ||
        !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(ans, "access_token"))) {
        snprintf(why, n, "the FCM token endpoint answered %ld", status);
        rc = status >= 500 || status == 429 ? CM_EAGAIN : CM_EINVAL;
        goto out;
    }
    {
        const cJSON *exp = cJSON_GetObjectItemCaseSensitive(ans, "expires_in");
        double secs = cJSON_IsNumber(exp) ? exp->valuedouble : 3600;
        snprintf(p->fcm_token, sizeof(p->fcm_token), "%s",
                 cJSON_GetObjectItemCaseSensitive(ans, "access_token")->valuestring);
        p->fcm_token_until = now + (int64_t)(secs > 120 ? secs - 60 : secs / 2) * 1000;
    }
    rc = CM_OK;
out:
    cJSON_Delete(cred);
    cJSON_Delete(claims);
    cJSON_Delete(ans);
    free(jwt);
    free(form);
    free(body);
    return rc;
}

/* The payload fields both providers carry for the app. */
static void add_data(cJSON *o, const bson_t *d)
{
    static const char *const keys[] = {"notification_id", "type", "conversation_id",
                                       "message_id", "actor_id", NULL};
    for (int i = 0; keys[i]; i++) {
        const char *v = cm_bson_str(d, keys[i], NULL);
        if (v)
            cJSON_AddStringToObject(o, keys[i], v);
    }
}

/* The title of delivery `d`: rendered from the templates when it was queued, else (a
 * delivery queued before push templates) the built-in wording. */
static void title_of(const bson_t *d, char *out, size_t n)
{
    const char *type = cm_bson_str(d, "type", ""), *actor = cm_bson_str(d, "actor_id", "");
    if (cm_bson_str(d, "push_title", NULL) != NULL)
        snprintf(out, n, "%s", cm_bson_str(d, "push_title", ""));
    else if (cm_bson_str(d, "title", NULL) != NULL)
        snprintf(out, n, "%s", cm_bson_str(d, "title", ""));
    else if (strcmp(type, "mention") == 0)
        snprintf(out, n, "%s mentioned you", actor);
    else if (strcmp(type, "reply") == 0)
        snprintf(out, n, "%s replied to you", actor);
    else if (strcmp(type, "added") == 0)
        snprintf(out, n, "%s added you to a conversation", actor);
    else
        snprintf(out, n, "%s", actor[0] ? actor : "New message");
}

/* The body of delivery `d` (as title_of). */
static const char *body_of(const bson_t *d)
{
    return cm_bson_str(d, "push_body", cm_bson_str(d, "text", ""));
}

/* One job of a sending round: a delivery, its request, and what came of it. */
typedef struct job {
    bson_t d;               /* the delivery (as read again after its lease was taken) */
    int stored;             /* 1: in the store (a retry...); 0: a first attempt, not stored */
    int verify;             /* 1: a first attempt another sender had: sent if still not stored */
    int leased;             /* 1: ours to send */
    int ready;              /* 1: req is to be performed */
    char url[NF_WEBPUSH_ENDPOINT_MAX + 1], auth[4200], topic[300], *json;
    size_t len;             /* bytes of json when binary (web push); 0: strlen */
    const char *hdr[6];
    outcome o;
    long status;
    char why[300];
} job;

/* The FCM HTTP v1 request of `j` (projects.messages.send), or its outcome when none can be
 * made (not configured, no access token). */
static void prepare_fcm(nf_push *p, job *j)
{
    char title[NF_PREVIEW_CHARS * 4 + 4];
    cJSON *m, *msg, *note, *data, *android;
    cm_err rc;

    if (p->cfg.fcm_credentials == NULL) {
        snprintf(j->why, sizeof(j->why), "FCM is not configured (FCM_CREDENTIALS_FILE)");
        j->o = OUT_FAIL;
        return;
    }
    if ((rc = fcm_access_token(p, j->why, sizeof(j->why))) != CM_OK) {
        j->o = rc == CM_EAGAIN ? OUT_RETRY : OUT_FAIL;
        return;
    }
    title_of(&j->d, title, sizeof(title));
    m = cJSON_CreateObject();
    msg = cJSON_AddObjectToObject(m, "message");
    cJSON_AddStringToObject(msg, "token", cm_bson_str(&j->d, "token", ""));
    note = cJSON_AddObjectToObject(msg, "notification");
    cJSON_AddStringToObject(note, "title", title);
    cJSON_AddStringToObject(note, "body", body_of(&j->d));
    data = cJSON_AddObjectToObject(msg, "data");
    add_data(data, &j->d);
    android = cJSON_AddObjectToObject(msg, "android");
    cJSON_AddStringToObject(android, "priority", "high");
    j->json = cm_json_print(m);
    cJSON_Delete(m);
    if (j->json == NULL) {
        snprintf(j->why, sizeof(j->why), "out of memory");
        j->o = OUT_RETRY;
        return;
    }
    snprintf(j->url, sizeof(j->url), "%s/v1/projects/%s/messages:send", p->cfg.fcm_base,
             p->cfg.fcm_project);
    snprintf(j->auth, sizeof(j->auth), "Authorization: Bearer %s", p->fcm_token);
    j->hdr[0] = j->auth;
    j->hdr[1] = "Content-Type: application/json; charset=UTF-8";
    j->hdr[2] = NULL;
    j->ready = 1;
}

/* What FCM's answer to `j` means. */
static void finish_fcm(nf_push *p, job *j, const cm_httpc_result *r)
{
    j->status = r->status;
    if (r->rc != CM_OK) {
        snprintf(j->why, sizeof(j->why), "FCM unreachable: %s", cm_strerror(r->rc));
        j->o = OUT_RETRY;
    } else if (r->status == 404 || strstr(r->body, "UNREGISTERED") != NULL) {
        /* FCM v1 errors: 404 NOT_FOUND / errorCode UNREGISTERED is a token no longer valid
         * (firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode). */
        snprintf(j->why, sizeof(j->why), "FCM: the token is unregistered (%ld)", r->status);
        j->o = OUT_DEAD;
    } else if (r->status == 401) {
        p->fcm_token[0] = '\0'; /* our access token expired */
        snprintf(j->why, sizeof(j->why),
                 "FCM refused the access token (401): fetched again next time");
        j->o = OUT_RETRY;
    } else {
        j->o = classify_status(r->status);
        snprintf(j->why, sizeof(j->why), "FCM answered %ld", r->status);
    }
}

static cm_err apns_provider_token(nf_push *p, char *why, size_t n)
{
    int64_t now = cm_clock_now_ms();
    cJSON *claims;
    char *jwt = NULL;
    cm_err rc;

    if (p->apns_token[0] && now < p->apns_token_until)
        return CM_OK;
    claims = cJSON_CreateObject();
    cJSON_AddStringToObject(claims, "iss", p->cfg.apns_team_id);
    cJSON_AddNumberToObject(claims, "iat", (double)(now / 1000));
    rc = cm_jws_sign("ES256", p->cfg.apns_key, strlen(p->cfg.apns_key), p->cfg.apns_key_id,
                     claims, &jwt);
    cJSON_Delete(claims);
    if (rc != CM_OK) {
        snprintf(why, n, "the APNs key cannot sign (ES256 over P-256)");
        return rc;
    }
    snprintf(p->apns_token, sizeof(p->apns_token), "%s", jwt);
    free(jwt);
    p->apns_token_until = now + 40 * 60 * 1000; /* between Apple's 20 and 60 minutes */
    atomic_fetch_add(&p->token_fetches, 1);
    return CM_OK;
}

/* The APNs request of `j` (POST /3/device/<token>, HTTP/2), or its outcome. */
static void prepare_apns(nf_push *p, job *j)
{
    char title[NF_PREVIEW_CHARS * 4 + 4];
    const char *app = cm_bson_str(&j->d, "app_id", "");
    cJSON *m, *aps, *alert;

    if (p->cfg.apns_key == NULL) {
        snprintf(j->why, sizeof(j->why), "APNs is not configured (APNS_KEY_FILE)");
        j->o = OUT_FAIL;
        return;
    }
    if (apns_provider_token(p, j->why, sizeof(j->why)) != CM_OK) {
        j->o = OUT_FAIL;
        return;
    }
    title_of(&j->d, title, sizeof(title));
    m = cJSON_CreateObject();
    aps = cJSON_AddObjectToObject(m, "aps");
    alert = cJSON_AddObjectToObject(aps, "alert");
    cJSON_AddStringToObject(alert, "title", title);
    cJSON_AddStringToObject(alert, "body", body_of(&j->d));
    cJSON_AddStringToObject(aps, "sound", "default");
    add_data(m, &j->d);
    j->json = cm_json_print(m);
    cJSON_Delete(m);
    if (j->json == NULL) {
        snprintf(j->why, sizeof(j->why), "out of memory");
        j->o = OUT_RETRY;
        return;
    }
    snprintf(j->url, sizeof(j->url), "%s/3/device/%s", p->cfg.apns_base,
             cm_bson_str(&j->d, "token", ""));
    snprintf(j->auth, sizeof(j->auth), "authorization: bearer %s", p->apns_token);
    snprintf(j->topic, sizeof(j->topic), "apns-topic: %s", app[0] ? app : p->cfg.apns_topic);
    j->hdr[0] = j->auth;
    j->hdr[1] = j->topic;
    j->hdr[2] = "apns-push-type: alert";
    j->hdr[3] = "apns-priority: 10";
    j->hdr[4] = "content-type: application/json";
    j->hdr[5] = NULL;
    j->ready = 1;
}

static void finish_apns(nf_push *p, job *j, const cm_httpc_result *r)
{
    j->status = r->status;
    if (r->rc != CM_OK) {
        snprintf(j->why, sizeof(j->why), "APNs unreachable: %s", cm_strerror(r->rc));
        j->o = OUT_RETRY;
    } else if (r->status == 410 ||
               (r->status == 400 && strstr(r->body, "BadDeviceToken") != NULL)) {
        /* APNs: 410 Unregistered, or 400 BadDeviceToken, means the token is dead ("Handling
         * notification responses from APNs"); 403 ExpiredProviderToken: make a new one. */
        snprintf(j->why, sizeof(j->why), "APNs: the token is dead (%ld)", r->status);
        j->o = OUT_DEAD;
    } else if (r->status == 403 && strstr(r->body, "ExpiredProviderToken") != NULL) {
        p->apns_token[0] = '\0';
        snprintf(j->why, sizeof(j->why), "APNs: provider token expired: made again next time");
        j->o = OUT_RETRY;
    } else {
        j->o = classify_status(r->status);
        snprintf(j->why, sizeof(j->why), "APNs answered %ld", r->status);
    }
}

/* The web push request of `j`: the payload encrypted to the subscription's keys (RFC 8291)
 * and POSTed to its endpoint with a VAPID Authorization (RFC 8292), or its outcome. */
static void prepare_webpush(nf_push *p, job *j)
{
    char title[NF_PREVIEW_CHARS * 4 + 4], vapid[NF_WEBPUSH_VAPID_MAX];
    const char *endpoint = cm_bson_str(&j->d, "token", "");
    cJSON *m, *note, *data;
    unsigned char *enc = NULL;
    char *plain;
    size_t enclen = 0;
    cm_err rc;

    if (p->cfg.vapid_key == NULL || p->cfg.guard == NULL) {
        snprintf(j->why, sizeof(j->why), "web push is not configured (WEBPUSH_VAPID_KEY_FILE)");
        j->o = OUT_FAIL;
        return;
    }
    if (nf_webpush_vapid(p->cfg.vapid_key, strlen(p->cfg.vapid_key), endpoint,
                         p->cfg.vapid_subject, cm_clock_now_ms() / 1000, vapid,
                         sizeof(vapid)) != CM_OK) {
        snprintf(j->why, sizeof(j->why), "the VAPID key cannot sign for this endpoint");
        j->o = OUT_FAIL;
        return;
    }
    title_of(&j->d, title, sizeof(title));
    m = cJSON_CreateObject();
    note = cJSON_AddObjectToObject(m, "notification");
    cJSON_AddStringToObject(note, "title", title);
    cJSON_AddStringToObject(note, "body", body_of(&j->d));
    data = cJSON_AddObjectToObject(m, "data");
    add_data(data, &j->d);
    plain = cm_json_print(m);
    cJSON_Delete(m);
    if (plain == NULL) {
        snprintf(j->why, sizeof(j->why), "out of memory");
        j->o = OUT_RETRY;
        return;
    }
    rc = nf_webpush_encrypt(cm_bson_str(&j->d, "p256dh", ""), cm_bson_str(&j->d, "auth", ""),
                            (const unsigned char *)plain, strlen(plain), &enc, &enclen);
    free(plain);
    if (rc != CM_OK) {
        snprintf(j->why, sizeof(j->why), "the message cannot be encrypted for this subscription "
                                         "(%s)", cm_strerror(rc));
        j->o = rc == CM_ENOMEM ? OUT_RETRY : OUT_FAIL;
        return;
    }
    j->json = (char *)enc;
    j->len = enclen;
    snprintf(j->url, sizeof(j->url), "%s", endpoint);
    snprintf(j->auth, sizeof(j->auth), "Authorization: %s", vapid);
    snprintf(j->topic, sizeof(j->topic), "TTL: %ld", p->cfg.webpush_ttl_s);
    j->hdr[0] = j->auth;
    j->hdr[1] = j->topic;
    j->hdr[2] = "Content-Encoding: aes128gcm";
    j->hdr[3] = "Content-Type: application/octet-stream";
    j->hdr[4] = "Urgency: high";
    j->hdr[5] = NULL;
    j->ready = 1;
}

static void finish_webpush(job *j, const cm_httpc_result *r)
{
    j->status = r->status;
    if (r->rc != CM_OK) {
        snprintf(j->why, sizeof(j->why), "push service unreachable: %s (a refused private "
                                         "address, the network, or a timeout)",
                 cm_strerror(r->rc));
        j->o = OUT_RETRY;
    } else if (r->status == 404 || r->status == 410) {
        /* RFC 8030 section 7.3: a subscription that expired or was unsubscribed is 404 or
         * 410 Gone; the user agent must subscribe again. */
        snprintf(j->why, sizeof(j->why), "web push: the subscription is gone (%ld)", r->status);
        j->o = OUT_DEAD;
    } else {
        j->o = classify_status(r->status);
        snprintf(j->why, sizeof(j->why), "the push service answered %ld", r->status);
    }
}

/* --- the sender ------------------------------------------------------------------------ */

static const char *outcome_name(outcome o)
{
    static const char *const names[] = {"sent", "dead_token", "provider_error", "failed"};
    return names[o];
}

/* The delay before retry `n` (1-based) with +-20 % jitter, so a provider's outage does not
 * bring every retry back in the same millisecond. */
static int64_t retry_delay(nf_push *p, int n)
{
    long base = p->cfg.retry_ms[n - 1];
    unsigned char r;
    char hex[3];
    long jitter;

    if (cm_random_hex(hex, 1) != CM_OK)
        return base;
    r = (unsigned char)strtol(hex, NULL, 16);
    jitter = (long)((double)base * 0.4 * ((double)r / 255.0 - 0.5));
    return base + jitter;
}

/* Gives delivery `d` up: a notification.failed event on the DLQ topic (key: the user id),
 * whose id is the delivery's and its attempt count, so a redriven delivery that fails again
 * is a new event. */
static void dead_letter(nf_push *p, const bson_t *d, int attempts, const char *why)
{
    static const char *const keys[] = {"notification_id", "user_id", "device_id", "platform",
                                       "message_id", NULL};
    const char *user = cm_bson_str(d, "user_id", ""), *did = cm_bson_str(d, "_id", "");
    cJSON *data = cJSON_CreateObject();
    cm_kafka_header h[1] = {{"error", why}};
    char id[CM_UUID_STRLEN + 16], *ev = NULL;

    if (data == NULL)
        return;
    snprintf(id, sizeof(id), "%s.%d", did, attempts);
    cJSON_AddStringToObject(data, "delivery_id", did);
    for (int i = 0; keys[i]; i++) {
        const char *v = cm_bson_str(d, keys[i], NULL);
        if (v)
            cJSON_AddStringToObject(data, keys[i], v);
    }
    cJSON_AddNumberToObject(data, "attempts", attempts);
    cJSON_AddStringToObject(data, "error", why);
    if (cm_event_build(id, "notification.failed", "/notification", user,
                       cm_bson_str(d, "tenant", ""), cm_clock_now_ms(), data, &ev) != CM_OK)
        return;
    if (cm_kafka_produce(p->ctx->kafka, p->cfg.dlq_topic, user, strlen(user), ev, strlen(ev), h,
                         1, NULL) != CM_OK)
        cm_error("push: delivery %s not dead-lettered", did);
    free(ev);
}

static void prune_device(nf_push *p, const bson_t *d)
{
    bson_t f = BSON_INITIALIZER;
    const char *tenant = cm_bson_str(d, "tenant", ""), *did = cm_bson_str(d, "device_id", "");
    BSON_APPEND_UTF8(&f, "_id", did);
    BSON_APPEND_UTF8(&f, "tenant", tenant);
    if (cm_mongo_delete(p->ctx->db, NF_COLL_DEVICES, &f, 0, NULL) == CM_OK) {
        nf_devcache_forget(p->ctx, tenant, cm_bson_str(d, "user_id", ""), did);
        cm_info("push: device %s pruned (dead token)", did);
    }
    bson_destroy(&f);
}

/* --- timers: deliveries stored queued, sent when their next_at comes -------------------- */

/* Timers are a binary min-heap on `due` (guarded by mu). `verify`: a delivery another sender
 * held the lease of when it was to be sent for the first time: at `due` it is sent only when
 * it is still not stored (that sender died before recording it). */
typedef struct timer {
    int64_t due;
    int verify;
    bson_t d;
} timer;

/* Adds a copy of `d` due at `due`, unless a timer for the same delivery is there already
 * (a sweep finds what the timers hold). Called with mu held. */
static void timer_add(nf_push *p, const bson_t *d, int64_t due, int verify)
{
    const char *id = cm_bson_str(d, "_id", "");
    size_t i;
    if (p->ntimers == QUEUE_MAX) {
        cm_warn("push: %d timers: delivery %s is left to the next sweep", QUEUE_MAX, id);
        return;
    }
    for (i = 0; i < p->ntimers; i++)
        if (strcmp(cm_bson_str(&p->timers[i].d, "_id", ""), id) == 0)
            return;
    i = p->ntimers++;
    while (i > 0 && p->timers[(i - 1) / 2].due > due) {
        /* A bson_t cannot be moved by value (a grown one points into itself): the parent is
         * copied down, then destroyed. */
        timer *parent = &p->timers[(i - 1) / 2];
        p->timers[i].due = parent->due;
        p->timers[i].verify = parent->verify;
        bson_copy_to(&parent->d, &p->timers[i].d);
        bson_destroy(&parent->d);
        i = (i - 1) / 2;
    }
    p->timers[i].due = due;
    p->timers[i].verify = verify;
    bson_copy_to(d, &p->timers[i].d);
}

/* Takes the earliest timer into `out` (caller destroys out->d). Called with mu held. */
static void timer_pop(nf_push *p, timer *out)
{
    size_t i = 0, n = --p->ntimers;
    out->due = p->timers[0].due;
    out->verify = p->timers[0].verify;
    bson_copy_to(&p->timers[0].d, &out->d);
    bson_destroy(&p->timers[0].d);
    if (n == 0)
        return;
    /* The last one sinks from the root. */
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && p->timers[c + 1].due < p->timers[c].due)
            c++;
        if (p->timers[c].due >= p->timers[n].due)
            break;
        p->timers[i].due = p->timers[c].due;
        p->timers[i].verify = p->timers[c].verify;
        bson_copy_to(&p->timers[c].d, &p->timers[i].d);
        bson_destroy(&p->timers[c].d);
        i = c;
    }
    p->timers[i].due = p->timers[n].due;
    p->timers[i].verify = p->timers[n].verify;
    bson_copy_to(&p->timers[n].d, &p->timers[i].d);
    bson_destroy(&p->timers[n].d);
}

/* What attempt `j` (number `n`) comes to: its state, the time of the next attempt (0 none)
 * and the decision to record (NULL none); prunes a dead token and dead-letters what is given
 * up. */
static const char *settle(nf_push *p, const job *j, int n, int64_t now, int64_t *next,
                          const char **decision)
{
    *next = 0;
    *decision = NULL;
    switch (j->o) {
    case OUT_SENT:
        atomic_fetch_add(&p->sent, 1);
        return "sent"; /* the diagnostics read it from the delivery: no decision document */
    case OUT_DEAD:
        atomic_fetch_add(&p->dead_tokens, 1);
        prune_device(p, &j->d);
        *decision = "dead_token";
        nf_delivery_event(p->ctx, &j->d, "failed", j->why);
        return "failed";
    case OUT_RETRY:
        if (n <= p->cfg.nretries) {
            *next = now + retry_delay(p, n);
            atomic_fetch_add(&p->retried, 1);
            return "queued";
        }
        atomic_fetch_add(&p->dead_lettered, 1);
        dead_letter(p, &j->d, n, j->why);
        *decision = "provider_error";
        return "dead_lettered";
    default:
        atomic_fetch_add(&p->failed, 1);
        *decision = "provider_error";
        nf_delivery_event(p->ctx, &j->d, "failed", j->why);
        return "failed";
    }
}

/* The attempt's entry of the history. */
static void append_attempt(bson_t *h, const job *j, int attempt, int64_t now)
{
    BSON_APPEND_INT32(h, "attempt", attempt);
    BSON_APPEND_DATE_TIME(h, "at", now);
    BSON_APPEND_UTF8(h, "outcome", outcome_name(j->o));
    BSON_APPEND_INT32(h, "status", (int32_t)j->status);
    BSON_APPEND_UTF8(h, "detail", j->why);
}

/* What a sent delivery no longer needs: what the push said and where it went (a sent one
 * is never sent again; e-mail drops its bodies the same way). Every byte counts: FerretDB
 * spends its time per byte inserted. */
static int content_field(const char *key)
{
    static const char *const content[] = {"type",  "actor_id",   "text",      "token",
                                          "app_id", "p256dh",    "auth",      "title",
                                          "push_title", "push_body", "conversation_id", NULL};
    for (int i = 0; content[i]; i++)
        if (strcmp(content[i], key) == 0)
            return 1;
    return 0;
}

/* `d` (a delivery as built, never stored) with its first attempt recorded, into `out`; when
 * it is sent, without its content. */
static void with_first_attempt(const bson_t *d, const job *j, const char *state, int64_t next,
                               int64_t now, bson_t *out)
{
    int sent = strcmp(state, "sent") == 0;
    bson_iter_t it;
    bson_t arr, h;

    bson_init(out);
    if (bson_iter_init(&it, d))
        while (bson_iter_next(&it)) {
            const char *key = bson_iter_key(&it);
            if (strcmp(key, "state") != 0 && strcmp(key, "attempts") != 0 &&
                strcmp(key, "next_at") != 0 && strcmp(key, "history") != 0 &&
                !(sent && content_field(key)))
                bson_append_iter(out, key, -1, &it);
        }
    BSON_APPEND_UTF8(out, "state", state);
    BSON_APPEND_INT32(out, "attempts", 1);
    BSON_APPEND_INT64(out, "next_at", next);
    BSON_APPEND_ARRAY_BEGIN(out, "history", &arr);
    BSON_APPEND_DOCUMENT_BEGIN(&arr, "0", &h);
    append_attempt(&h, j, 1, now);
    bson_append_document_end(&arr, &h);
    bson_append_array_end(out, &arr);
}

/* Records the attempts of the sent jobs. A first attempt stores its delivery for the first
 * time, with the attempt in it (one insert of the round's deliveries: FerretDB inserts are
 * cheap, its updates a read-modify-replace each); a later one (a retry, a redrive, a
 * deferred push) updates its delivery by `_id`. A retry's next attempt becomes a timer.
 * Decisions only for what failed: "queued" and "sent" are read from the delivery. */
static void record(nf_push *p, job *jobs, size_t n, int64_t now)
{
    doc_list decisions = {0}, first = {0};

    for (size_t i = 0; i < n; i++) {
        job *j = &jobs[i];
        const char *state, *decision;
        int attempt;
        int64_t next;
        if (!j->leased)
            continue;
        attempt = (int)cm_bson_int(&j->d, "attempts", 0) + 1;
        state = settle(p, j, attempt, now, &next, &decision);
        if (!j->stored) {
            bson_t *d = doc_list_add(&first);
            if (d != NULL)
                with_first_attempt(&j->d, j, state, next, now, d);
        } else {
            bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, set, push, h;
            BSON_APPEND_UTF8(&f, "_id", cm_bson_str(&j->d, "_id", ""));
            BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
            BSON_APPEND_UTF8(&set, "state", state);
            BSON_APPEND_INT32(&set, "attempts", attempt);
            BSON_APPEND_INT64(&set, "next_at", next);
            bson_append_document_end(&u, &set);
            BSON_APPEND_DOCUMENT_BEGIN(&u, "$push", &push);
            BSON_APPEND_DOCUMENT_BEGIN(&push, "history", &h);
            append_attempt(&h, j, attempt, now);
            bson_append_document_end(&push, &h);
            bson_append_document_end(&u, &push);
            if (cm_mongo_update(p->ctx->ddb, NF_COLL_DELIVERIES, &f, &u, 0, 0, NULL) != CM_OK)
                cm_warn("push: attempt %d of delivery %s not recorded", attempt,
                        cm_bson_str(&j->d, "_id", ""));
            bson_destroy(&f);
            bson_destroy(&u);
        }
        if (next > 0) {
            /* The retry's timer holds the delivery as it now stands. */
            bson_t cur = BSON_INITIALIZER;
            bson_iter_t it;
            if (bson_iter_init(&it, &j->d))
                while (bson_iter_next(&it)) {
                    const char *key = bson_iter_key(&it);
                    if (strcmp(key, "state") != 0 && strcmp(key, "attempts") != 0 &&
                        strcmp(key, "next_at") != 0 && strcmp(key, "history") != 0)
                        bson_append_iter(&cur, key, -1, &it);
                }
            BSON_APPEND_UTF8(&cur, "state", "queued");
            BSON_APPEND_INT32(&cur, "attempts", attempt);
            BSON_APPEND_INT64(&cur, "next_at", next);
            pthread_mutex_lock(&p->mu);
            timer_add(p, &cur, next, 0);
            pthread_mutex_unlock(&p->mu);
            bson_destroy(&cur);
        }
        if (decision != NULL) {
            nf_push_item it = {0};
            it.tenant = cm_bson_str(&j->d, "tenant", "");
            it.user = cm_bson_str(&j->d, "user_id", "");
            it.event_id = cm_bson_str(&j->d, "event_id", "");
            it.notification_id = cm_bson_str(&j->d, "notification_id", "");
            it.message_id = cm_bson_str(&j->d, "message_id", NULL);
            decide(&decisions, &it, decision, cm_bson_str(&j->d, "device_id", ""), j->why);
        }
    }
    /* A duplicate key is a copy another sender recorded first (it held the lease after
     * ours ran out): left as it is. */
    if (doc_list_insert(p->ctx->ddb, NF_COLL_DELIVERIES, &first) != CM_OK)
        cm_warn("push: %zu first attempts not recorded", first.n);
    (void)doc_list_insert(p->ctx->db, NF_COLL_DECISIONS, &decisions);
    doc_list_cleanup(&first);
    doc_list_cleanup(&decisions);
}

/* Deletes the lease only while it is still ours. */
static const char UNLOCK_LUA[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end "
    "return 0";

/* Takes (or with `release`, gives back) the Redis leases of the jobs in one round trip; on
 * taking, marks the jobs whose lease was had. When Redis cannot answer, nothing is leased. */
static void leases(nf_push *p, job *jobs, size_t n, int release)
{
    cm_redis_cmd *cmds = calloc(n ? n : 1, sizeof(*cmds));
    char (*keys)[80] = calloc(n ? n : 1, sizeof(*keys)), ms[24];
    int64_t *out = calloc(n ? n : 1, sizeof(*out));
    size_t k = 0;

    if (!release)
        for (size_t i = 0; i < n; i++)
            jobs[i].leased = 0;
    if (cmds && keys && out) {
        snprintf(ms, sizeof(ms), "%d", LEASE_MS);
        for (size_t i = 0; i < n; i++) {
            if (release && !jobs[i].leased)
                continue;
            snprintf(keys[k], sizeof(keys[k]), "nf:delivery:%s",
                     cm_bson_str(&jobs[i].d, "_id", ""));
            cmds[k] = release ? (cm_redis_cmd){5, {"EVAL", UNLOCK_LUA, "1", keys[k], p->instance}}
                              : (cm_redis_cmd){6, {"SET", keys[k], p->instance, "NX", "PX", ms}};
            k++;
        }
        if (cm_redis_pipeline(p->ctx->redis, cmds, k, out) == CM_OK && !release)
            for (size_t i = 0; i < n; i++)
                jobs[i].leased = out[i] == 1; /* OK; nil when someone else holds it */
    }
    free(cmds);
    free(keys);
    free(out);
}

typedef struct fresh {
    job *jobs;
    size_t n;
    unsigned char *found;
} fresh;

static int collect_fresh(const bson_t *doc, void *ud)
{
    fresh *f = ud;
    const char *id = cm_bson_str(doc, "_id", "");
    for (size_t i = 0; i < f->n; i++) {
        job *j = &f->jobs[i];
        if (f->found[i] || !j->leased || !(j->stored || j->verify) ||
            strcmp(cm_bson_str(&j->d, "_id", ""), id) != 0)
            continue;
        f->found[i] = 1;
        /* Still queued, due and not attempted since the copy was taken: sent from what is
         * stored now. */
        if (j->stored && strcmp(cm_bson_str(doc, "state", ""), "queued") == 0 &&
            cm_bson_int(doc, "attempts", 0) == cm_bson_int(&j->d, "attempts", 0)) {
            bson_destroy(&j->d);
            bson_copy_to(doc, &j->d);
            f->found[i] = 2;
        }
    }
    return 0;
}

/* Under their leases, reads the stored jobs (retries, deferred pushes, redrives) and the
 * verify jobs again, in one query: a stored job is sent only while still queued, due and not
 * attempted since its copy was taken (another sender may have done it meanwhile); a verify
 * job only when its delivery is still not stored (its sender died before recording it: it
 * becomes a first attempt). The leases of the others are given back. When the store cannot
 * be read, none of them is sent this round (their timers come back). */
static void refresh(nf_push *p, job *jobs, size_t n, int64_t now)
{
    bson_t f = BSON_INITIALIZER, in, arr;
    unsigned char *found = calloc(n ? n : 1, 1);
    fresh fr = {jobs, n, found};
    size_t k = 0;
    char idx[24];
    cm_err rc = CM_ENOMEM;

    BSON_APPEND_DOCUMENT_BEGIN(&f, "_id", &in);
    BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
    for (size_t i = 0; i < n; i++)
        if (jobs[i].leased && (jobs[i].stored || jobs[i].verify)) {
            snprintf(idx, sizeof(idx), "%zu", k++);
            BSON_APPEND_UTF8(&arr, idx, cm_bson_str(&jobs[i].d, "_id", ""));
        }
    bson_append_array_end(&in, &arr);
    bson_append_document_end(&f, &in);
    if (k == 0) {
        bson_destroy(&f);
        free(found);
        return;
    }
    if (found != NULL)
        rc = cm_mongo_find(p->ctx->ddb, NF_COLL_DELIVERIES, &f, NULL, collect_fresh, &fr);
    bson_destroy(&f);
    for (size_t i = 0; i < n; i++) {
        job *j = &jobs[i];
        int keep;
        if (!j->leased || !(j->stored || j->verify))
            continue;
        if (rc != CM_OK) {
            keep = 0;
            pthread_mutex_lock(&p->mu);
            timer_add(p, &j->d, now + 1000, j->verify);
            pthread_mutex_unlock(&p->mu);
        } else if (j->verify) {
            keep = !found[i];
            j->verify = 0; /* not stored: a first attempt */
        } else {
            keep = found[i] == 2 && cm_bson_int(&j->d, "next_at", 0) <= now;
            if (found[i] == 2 && !keep) {
                /* Deferred further (a redrive's timer replaced it): its own time. */
                pthread_mutex_lock(&p->mu);
                timer_add(p, &j->d, cm_bson_int(&j->d, "next_at", 0), 0);
                pthread_mutex_unlock(&p->mu);
            }
        }
        if (!keep) {
            job gone = *j;
            j->leased = 0;
            leases(p, &gone, 1, 1);
        }
    }
    free(found);
}

/* The deliveries a consumer batch hands over (nf_push_submit), sent in rounds of BATCH. */
struct nf_push_batch {
    bson_t **docs; /* owned, each malloc'd */
    size_t n, taken, done;
    struct nf_push_batch *next;
};

/* The queued deliveries of the store (push platforms), at most QUEUE_MAX, as timers: at
 * start (what a crashed process left: retries, deferred pushes, redrives) and every
 * SWEEP_MS (what a dead instance's timers held, or more than the timers could). */
static int collect_queued(const bson_t *doc, void *ud)
{
    nf_push *p = ud;
    int full;
    pthread_mutex_lock(&p->mu);
    timer_add(p, doc, cm_bson_int(doc, "next_at", 0), 0);
    full = p->ntimers >= QUEUE_MAX;
    pthread_mutex_unlock(&p->mu);
    return full;
}

static void sweep(nf_push *p)
{
    bson_t f = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&f, "state", "queued");
    nf_push_only(&f); /* e-mail and SMS have their own sender (notification_email.c) */
    if (cm_mongo_find(p->ctx->ddb, NF_COLL_DELIVERIES, &f, NULL, collect_queued, p) != CM_OK)
        cm_warn("push: the queued deliveries could not be read: swept again later");
    bson_destroy(&f);
}

/* One round: up to BATCH deliveries, first those a consumer batch hands over (not stored
 * yet), then the timers due, each claimed by a Redis lease, sent concurrently over kept-alive
 * connections, and recorded. */
static size_t round_once(nf_push *p)
{
    job *jobs = calloc(BATCH, sizeof(*jobs));
    struct nf_push_batch **from = calloc(BATCH, sizeof(*from));
    cm_httpc_request *reqs = NULL;
    cm_httpc_result *res = NULL;
    size_t n = 0, nreq = 0, sent = 0, *which = NULL;
    int64_t now = cm_clock_now_ms();
    int timers_due, batch_round;

    if (jobs == NULL || from == NULL) {
        free(jobs);
        free(from);
        return 0;
    }
    pthread_mutex_lock(&p->mu);
    /* A round takes the consumer's deliveries or the timers due, in turn when both wait: a
     * round of timers reads the store first, and must not hold up a batch. */
    timers_due = p->ntimers > 0 && p->timers[0].due <= now;
    if (!timers_due || !p->timers_turn)
        for (struct nf_push_batch *b = p->batches; b && n < BATCH; b = b->next)
            while (b->taken < b->n && n < BATCH) {
                from[n] = b;
                bson_copy_to(b->docs[b->taken++], &jobs[n++].d);
            }
    batch_round = n > 0;
    p->timers_turn = batch_round;
    while (!batch_round && n < TIMERS_PER_ROUND && p->ntimers > 0 && p->timers[0].due <= now) {
        timer t;
        timer_pop(p, &t);
        bson_copy_to(&t.d, &jobs[n].d);
        bson_destroy(&t.d);
        jobs[n].stored = !t.verify;
        jobs[n++].verify = t.verify;
    }
    pthread_mutex_unlock(&p->mu);
    if (n == 0)
        goto out;
    leases(p, jobs, n, 0);
    for (size_t i = 0; i < n; i++) {
        job *j = &jobs[i];
        if (!j->leased) {
            /* Another sender has it (a consumer that took over the partition, a sweep): for
             * a first attempt, look again once its lease has run out, in case it died. */
            if (!j->stored) {
                pthread_mutex_lock(&p->mu);
                timer_add(p, &j->d, now + LEASE_MS, 1);
                pthread_mutex_unlock(&p->mu);
            }
            continue;
        }
    }
    refresh(p, jobs, n, now);
    reqs = calloc(n, sizeof(*reqs));
    res = calloc(n, sizeof(*res));
    which = calloc(n, sizeof(*which));
    if (reqs == NULL || res == NULL || which == NULL) {
        leases(p, jobs, n, 1);
        for (size_t i = 0; i < n; i++)
            if (jobs[i].leased && !jobs[i].stored) {
                pthread_mutex_lock(&p->mu);
                timer_add(p, &jobs[i].d, now + 1000, 1);
                pthread_mutex_unlock(&p->mu);
            }
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        job *j = &jobs[i];
        const char *platform = cm_bson_str(&j->d, "platform", "");
        if (!j->leased)
            continue;
        sent++;
        if (strcmp(platform, "fcm") == 0) {
            prepare_fcm(p, j);
        } else if (strcmp(platform, "apns") == 0) {
            prepare_apns(p, j);
        } else if (strcmp(platform, "webpush") == 0) {
            prepare_webpush(p, j);
        } else {
            snprintf(j->why, sizeof(j->why), "unknown platform");
            j->o = OUT_FAIL;
        }
        if (j->ready) {
            int web = strcmp(platform, "webpush") == 0;
            /* A web push endpoint is the user's to choose: its address is checked at connect
             * time like a webhook's. */
            reqs[nreq] = (cm_httpc_request){"POST", j->url, j->hdr, j->json,
                                            j->len ? j->len : strlen(j->json),
                                            p->cfg.timeout_ms, PROVIDER_BODY_MAX,
                                            strcmp(platform, "apns") == 0,
                                            web ? (void *)nf_webhook_open_checked : NULL,
                                            web ? (void *)p->cfg.guard : NULL};
            which[nreq++] = i;
        }
    }
    (void)cm_httpc_pool_perform(p->http, reqs, nreq, res);
    for (size_t k = 0; k < nreq; k++) {
        job *j = &jobs[which[k]];
        if (strcmp(cm_bson_str(&j->d, "platform", ""), "fcm") == 0)
            finish_fcm(p, j, &res[k]);
        else if (strcmp(cm_bson_str(&j->d, "platform", ""), "webpush") == 0)
            finish_webpush(j, &res[k]);
        else
            finish_apns(p, j, &res[k]);
        free(res[k].body);
    }
    record(p, jobs, n, cm_clock_now_ms());
    leases(p, jobs, n, 1);
done:
    /* The consumer batches whose deliveries are all sent and recorded may go on. */
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < n; i++)
        if (from[i] != NULL)
            from[i]->done++;
    pthread_cond_broadcast(&p->done_cv);
    pthread_mutex_unlock(&p->mu);
out:
    for (size_t i = 0; i < n; i++) {
        bson_destroy(&jobs[i].d);
        free(jobs[i].json);
    }
    free(jobs);
    free(from);
    free(reqs);
    free(res);
    free(which);
    return n > 0 ? (sent > 0 ? sent : 1) : 0;
}

void nf_push_kick(nf_push *p, const bson_t *const *deliveries, size_t n)
{
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < n; i++)
        timer_add(p, deliveries[i], cm_bson_int(deliveries[i], "next_at", 0), 0);
    p->kick = 1;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

cm_err nf_push_submit(nf_push *p, bson_t **deliveries, size_t n, nf_push_batch **out)
{
    nf_push_batch *b = calloc(1, sizeof(*b)), **at;

    *out = NULL;
    if (b == NULL)
        return CM_ENOMEM;
    b->docs = deliveries;
    b->n = n;
    pthread_mutex_lock(&p->mu);
    for (at = &p->batches; *at; at = &(*at)->next)
        ;
    *at = b;
    p->kick = 1;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    *out = b;
    return CM_OK;
}

cm_err nf_push_wait(nf_push *p, nf_push_batch *b)
{
    nf_push_batch **at;
    cm_err rc = CM_OK;

    if (b == NULL)
        return CM_OK;
    pthread_mutex_lock(&p->mu);
    while (b->done < b->n && !p->stop)
        pthread_cond_wait(&p->done_cv, &p->mu);
    if (b->done < b->n)
        rc = CM_EIO; /* stopping: the event is consumed again by the next process */
    for (at = &p->batches; *at; at = &(*at)->next)
        if (*at == b) {
            *at = b->next;
            break;
        }
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < b->n; i++) {
        bson_destroy(b->docs[i]);
        free(b->docs[i]);
    }
    free(b->docs);
    free(b);
    return rc;
}

static void *run(void *arg)
{
    nf_push *p = arg;
    int64_t next_sweep = 0;

    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        size_t done;
        int64_t now = cm_clock_now_ms();
        pthread_mutex_unlock(&p->mu);
        if (now >= next_sweep) {
            /* The first sweep, at start, is the recovery of what a crash left. */
            sweep(p);
            next_sweep = cm_clock_now_ms() + SWEEP_MS;
        }
        done = round_once(p);
        pthread_mutex_lock(&p->mu);
        if (done == 0 && !p->kick && !p->stop) {
            /* Sleep until the next timer or sweep, whichever comes first. */
            struct timespec ts;
            int64_t wake = next_sweep;
            int has_batch = 0;
            for (struct nf_push_batch *b = p->batches; b; b = b->next)
                has_batch |= b->taken < b->n;
            now = cm_clock_now_ms();
            if (p->ntimers > 0 && p->timers[0].due < wake)
                wake = p->timers[0].due;
            if (wake < now + 1)
                wake = now + 1;
            if (!has_batch) {
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_sec += (wake - now) / 1000;
                ts.tv_nsec += ((wake - now) % 1000) * 1000000L;
                if (ts.tv_nsec >= 1000000000L) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&p->cv, &p->mu, &ts);
            }
        }
        p->kick = 0;
    }
    pthread_cond_broadcast(&p->done_cv);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

cm_err nf_push_start(nf_ctx *ctx, nf_push_config *cfg, nf_push **out)
{
    nf_push *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return CM_ENOMEM;
    p->ctx = ctx;
    p->cfg = *cfg;
    cfg->fcm_credentials = NULL; /* taken over */
    cfg->apns_key = NULL;
    cfg->vapid_key = NULL;
    if (cm_random_hex(p->instance, 16) != CM_OK ||
        (p->timers = calloc(QUEUE_MAX, sizeof(*p->timers))) == NULL ||
        cm_httpc_pool_create(PARALLEL, &p->http) != CM_OK) {
        free(p->timers);
        free(p);
        return CM_EIO;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    if (pthread_create(&p->thread, NULL, run, p) != 0) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
        pthread_cond_destroy(&p->done_cv);
        cm_httpc_pool_destroy(p->http);
        free(p->timers);
        free(p);
        return CM_EIO;
    }
    *out = p;
    return CM_OK;
}

void nf_push_stop(nf_push *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_signal(&p->cv);
    pthread_cond_broadcast(&p->done_cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    pthread_cond_destroy(&p->done_cv);
    for (size_t i = 0; i < p->ntimers; i++)
        bson_destroy(&p->timers[i].d); /* stored: the next start's sweep finds them */
    free(p->timers);
    cm_httpc_pool_destroy(p->http);
    free(p->cfg.fcm_credentials);
    free(p->cfg.apns_key);
    free(p->cfg.vapid_key);
    free(p);
}

void nf_push_metrics(nf_push *p, void (*emit)(void *ctx, const char *text), void *ctx)
{
    char buf[1024];
    if (p == NULL)
        return;
    snprintf(buf, sizeof(buf),
             "# HELP notification_push_total Push attempts by outcome.\n"
             "# TYPE notification_push_total counter\n"
             "notification_push_total{outcome=\"sent\"} %ld\n"
             "notification_push_total{outcome=\"retried\"} %ld\n"
             "notification_push_total{outcome=\"dead_lettered\"} %ld\n"
             "notification_push_total{outcome=\"dead_token\"} %ld\n"
             "notification_push_total{outcome=\"failed\"} %ld\n"
             "# HELP notification_provider_token_fetches_total FCM access and APNs provider tokens made.\n"
             "# TYPE notification_provider_token_fetches_total counter\n"
             "notification_provider_token_fetches_total %ld\n",
             atomic_load(&p->sent), atomic_load(&p->retried), atomic_load(&p->dead_lettered),
             atomic_load(&p->dead_tokens), atomic_load(&p->failed),
             atomic_load(&p->token_fetches));
    emit(ctx, buf);
}
