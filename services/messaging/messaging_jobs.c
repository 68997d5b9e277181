/* messaging_jobs.c - housekeeping: conversations inactive for AUTO_ARCHIVE_DAYS are archived for
 * everyone, and messages (with their log entries) older than the tenant's retention are deleted
 * (its retention_days setting, capped by the platform's RETENTION_DAYS; messaging_limits_for). A pass
 * runs every JOBS_EVERY_S on a background thread and on POST /internal/v1/messaging/jobs/run.
 * Both jobs are idempotent and safe on several instances at once: a Redis lease lets one
 * instance run a job at a time, and each conversation is changed inside its own write section,
 * which re-checks the condition under the conversation's lock. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "common/ticker.h"
#include "messaging.h"

#define DAY_MS 86400000LL
#define BATCH 500 /* conversations one pass takes per job */

struct messaging_jobs {
    messaging_ctx *ctx;
    cm_ticker *ticker;
};

struct ids {
    char (*id)[CM_UUID_STRLEN];
    char (*tenant)[CM_JWT_ID_MAX + 1];
    int n, cap;
};

static int collect_id(const bson_t *doc, void *ud)
{
    struct ids *ids = ud;
    if (ids->n == ids->cap)
        return 1;
    snprintf(ids->id[ids->n], CM_UUID_STRLEN, "%s", cm_bson_str(doc, "_id", ""));
    snprintf(ids->tenant[ids->n], CM_JWT_ID_MAX + 1, "%s", cm_bson_str(doc, "tenant", ""));
    ids->n++;
    return 0;
}

/* Collects the distinct conversations of log entries. */
static int collect_conversation_of(const bson_t *doc, void *ud)
{
    struct ids *ids = ud;
    const char *cid = cm_bson_str(doc, "conversation_id", "");
    for (int i = 0; i < ids->n; i++)
        if (strcmp(ids->id[i], cid) == 0)
            return 0;
    if (ids->n == ids->cap)
        return 1;
    snprintf(ids->id[ids->n], CM_UUID_STRLEN, "%s", cid);
    snprintf(ids->tenant[ids->n], CM_JWT_ID_MAX + 1, "%s", cm_bson_str(doc, "tenant", ""));
    ids->n++;
    return 0;
}

static int ids_init(struct ids *ids)
{
    ids->n = 0;
    ids->cap = BATCH;
    ids->id = calloc(BATCH, sizeof(*ids->id));
    ids->tenant = calloc(BATCH, sizeof(*ids->tenant));
    return ids->id && ids->tenant ? 0 : -1;
}

static void ids_free(struct ids *ids)
{
    free(ids->id);
    free(ids->tenant);
}

/* Opens a write section as the service itself on a conversation of `tenant`; `sys` holds the
 * identity and must outlive the section (the section points into it). */
static cm_err open_system(messaging_ctx *ctx, const char *tenant, const char *cid,
                          cm_jwt_claims *sys, messaging_tx *tx)
{
    memset(sys, 0, sizeof(*sys));
    snprintf(sys->tid, sizeof(sys->tid), "%s", tenant);
    snprintf(sys->sub, sizeof(sys->sub), "system");
    return messaging_tx_open_moderator(ctx, NULL, sys, cid, tx);
}

/* Archives for everyone the conversations without a message since `before`. */
static cm_err auto_archive(messaging_ctx *ctx, int64_t before, int64_t *done)
{
    bson_t f = BSON_INITIALIZER, lt, ne, del, opts = BSON_INITIALIZER, proj;
    struct ids ids;
    cm_err rc;

    if (ids_init(&ids) != 0) {
        ids_free(&ids);
        return CM_ENOMEM;
    }
    BSON_APPEND_DOCUMENT_BEGIN(&f, "last_activity_at", &lt);
    BSON_APPEND_DATE_TIME(&lt, "$lt", before);
    bson_append_document_end(&f, &lt);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "auto_archived", &ne);
    BSON_APPEND_BOOL(&ne, "$ne", true);
    bson_append_document_end(&f, &ne);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "deleted", &del);
    BSON_APPEND_BOOL(&del, "$ne", true);
    bson_append_document_end(&f, &del);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
    BSON_APPEND_INT32(&proj, "tenant", 1);
    bson_append_document_end(&opts, &proj);
    BSON_APPEND_INT64(&opts, "limit", BATCH);
    rc = cm_mongo_find(ctx->db, MSG_COLL_CONVERSATIONS, &f, &opts, collect_id, &ids);
    for (int i = 0; rc == CM_OK && i < ids.n && !atomic_load(&ctx->stopping); i++) {
        messaging_tx tx;
        cm_jwt_claims sys;
        cJSON *data;
        if (open_system(ctx, ids.tenant[i], ids.id[i], &sys, &tx) != CM_OK)
            continue; /* busy or gone: the next pass */
        /* Under the lock: still inactive, still not archived (another instance may have). */
        if (cm_bson_int(&tx.conv, "last_activity_at", 0) < before &&
            !cm_bson_bool(&tx.conv, "auto_archived", 0)) {
            BSON_APPEND_BOOL(messaging_tx_conv_set(&tx), "auto_archived", true);
            data = messaging_conversation_event(
                &tx, cJSON_CreateStringArray((const char *[]){"auto_archived"}, 1));
            if (messaging_tx_append(&tx, "conversation.updated", NULL, NULL, data, NULL) == CM_OK &&
                messaging_tx_commit(&tx) == CM_OK)
                (*done)++;
        }
        messaging_tx_close(&tx);
    }
    bson_destroy(&f);
    bson_destroy(&opts);
    ids_free(&ids);
    return rc;
}

static int collect_max(const bson_t *doc, void *ud)
{
    int64_t *max = ud, v = cm_bson_int(doc, "eseq", 0);
    if (v > *max)
        *max = v;
    return 0;
}

/* Deletes one conversation's messages and log entries older than `before`, inside its section. */
static cm_err retain_one(messaging_ctx *ctx, const char *tenant, const char *cid, int64_t before,
                         int64_t *deleted)
{
    messaging_tx tx;
    cm_jwt_claims sys;
    bson_t f = BSON_INITIALIZER, lt, g = BSON_INITIALIZER, lte, opts = BSON_INITIALIZER, sort;
    int64_t max_eseq = 0, n = 0;
    cm_err rc = open_system(ctx, tenant, cid, &sys, &tx);

    if (rc != CM_OK)
        return rc == CM_ENOTFOUND ? CM_OK : rc;
    /* The log's entries older than the cutoff: a prefix of eseqs (written under the lock, in
     * time order). The floor moves above them first, so a sync never reads a half-cut log. */
    BSON_APPEND_UTF8(&f, "conversation_id", cid);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "created_at", &lt);
    BSON_APPEND_DATE_TIME(&lt, "$lt", before);
    bson_append_document_end(&f, &lt);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "eseq", -1);
    bson_append_document_end(&opts, &sort);
    BSON_APPEND_INT64(&opts, "limit", 1);
    rc = cm_mongo_find(ctx->db, MSG_COLL_EVENTS, &f, &opts, collect_max, &max_eseq);
    if (rc == CM_OK && max_eseq >= cm_bson_int(&tx.conv, "log_floor", 1)) {
        bson_t u = BSON_INITIALIZER, set;
        BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
        BSON_APPEND_INT64(&set, "log_floor", max_eseq + 1);
        bson_append_document_end(&u, &set);
        rc = messaging_update_id(ctx, MSG_COLL_CONVERSATIONS, cid, &u);
        bson_destroy(&u);
        if (rc == CM_OK) {
            BSON_APPEND_UTF8(&g, "conversation_id", cid);
            BSON_APPEND_DOCUMENT_BEGIN(&g, "eseq", &lte);
            BSON_APPEND_INT64(&lte, "$lte", max_eseq);
            bson_append_document_end(&g, &lte);
            rc = cm_mongo_delete(ctx->db, MSG_COLL_EVENTS, &g, 1, NULL);
        }
    }
    if (rc == CM_OK) {
        /* The messages themselves, then what hangs off them. */
        rc = cm_mongo_delete(ctx->db, MSG_COLL_MESSAGES, &f, 1, &n);
        *deleted += n;
        if (rc == CM_OK && n > 0) {
            bson_t v = BSON_INITIALIZER, vlt;
            BSON_APPEND_UTF8(&v, "conversation_id", cid);
            BSON_APPEND_DOCUMENT_BEGIN(&v, "message_at", &vlt);
            BSON_APPEND_DATE_TIME(&vlt, "$lt", before);
            bson_append_document_end(&v, &vlt);
            rc = cm_mongo_delete(ctx->db, MSG_COLL_VERSIONS, &v, 1, NULL);
            bson_destroy(&v);
            if (rc == CM_OK)
                rc = cm_mongo_delete(ctx->db, MSG_COLL_REACTIONS, &f, 1, NULL);
        }
    }
    if (rc == CM_OK && n > 0 && cm_bson_int(&tx.conv, "last_message.created_at", INT64_MAX) < before) {
        BSON_APPEND_NULL(messaging_tx_conv_set(&tx), "last_message");
        rc = messaging_tx_commit(&tx);
    }
    messaging_tx_close(&tx);
    bson_destroy(&f);
    bson_destroy(&g);
    bson_destroy(&opts);
    return rc;
}

/* Deletes the messages of `tenant` older than `before`, in every conversation that has some. */
static cm_err retention(messaging_ctx *ctx, const char *tenant, int64_t before, int64_t *deleted)
{
    bson_t f = BSON_INITIALIZER, lt, opts = BSON_INITIALIZER, proj;
    struct ids ids;
    cm_err rc;

    if (ids_init(&ids) != 0) {
        ids_free(&ids);
        return CM_ENOMEM;
    }
    /* The conversations that still have log entries older than the cutoff (each pass removes
     * theirs, so the next one finds the others). */
    BSON_APPEND_UTF8(&f, "tenant", tenant);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "created_at", &lt);
    BSON_APPEND_DATE_TIME(&lt, "$lt", before);
    bson_append_document_end(&f, &lt);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
    BSON_APPEND_INT32(&proj, "tenant", 1);
    BSON_APPEND_INT32(&proj, "conversation_id", 1);
    bson_append_document_end(&opts, &proj);
    BSON_APPEND_INT64(&opts, "limit", BATCH * 20);
    rc = cm_mongo_find(ctx->db, MSG_COLL_EVENTS, &f, &opts, collect_conversation_of, &ids);
    for (int i = 0; rc == CM_OK && i < ids.n; i++)
        if (retain_one(ctx, ids.tenant[i], ids.id[i], before, deleted) != CM_OK)
            cm_warn("retention: conversation %s skipped this pass", ids.id[i]);
    bson_destroy(&f);
    bson_destroy(&opts);
    ids_free(&ids);
    return rc;
}

/* Takes the job's lease for this deployment (its database), when no other instance holds it.
 * A pass that dies keeps it until the lease ends (5 minutes). */
static int leased(messaging_ctx *ctx, const char *name, char *token)
{
    char key[200];
    snprintf(key, sizeof(key), "job:%s:%s", ctx->db_name, name);
    return cm_random_hex(token, 16) == CM_OK &&
           cm_redis_lock(ctx->redis, key, token, 5 * 60 * 1000) == CM_OK;
}

static void release(messaging_ctx *ctx, const char *name, const char *token)
{
    char key[200];
    snprintf(key, sizeof(key), "job:%s:%s", ctx->db_name, name);
    cm_redis_unlock(ctx->redis, key, token);
}

struct tenants {
    char (*id)[CM_JWT_ID_MAX + 1];
    int n, cap;
};

static int collect_tenant(const char *tenant, void *ud)
{
    struct tenants *t = ud;
    if (t->n == t->cap) {
        int cap = t->cap ? t->cap * 2 : 64;
        void *p = realloc(t->id, (size_t)cap * sizeof(*t->id));
        if (p == NULL)
            return 1;
        t->id = p;
        t->cap = cap;
    }
    snprintf(t->id[t->n++], CM_JWT_ID_MAX + 1, "%s", tenant);
    return 0;
}

/* Retention, tenant by tenant: each with its own number of days (messaging_limits_for). */
static cm_err retention_all(messaging_ctx *ctx, int64_t now, int64_t *deleted)
{
    struct tenants t = {0};
    cm_err rc = cm_mongo_distinct(ctx->db, MSG_COLL_CONVERSATIONS, "tenant", NULL, collect_tenant, &t);

    /* A tenant's settings may take a round trip (USER_URL, up to its timeout): a stopping
     * service ends the pass at the next tenant instead of holding its stop for all of them
     * (the next pass does the rest). */
    for (int i = 0; rc == CM_OK && i < t.n && !atomic_load(&ctx->stopping); i++) {
        messaging_limits l;
        messaging_limits_for(ctx, t.id[i], &l);
        if (l.retention_days > 0)
            rc = retention(ctx, t.id[i], now - l.retention_days * DAY_MS, deleted);
    }
    free(t.id);
    return rc;
}

cm_err messaging_jobs_run(messaging_ctx *ctx, int64_t *archived, int64_t *deleted)
{
    char token[33];
    int64_t now = cm_clock_now_ms();
    cm_err rc = CM_OK;

    *archived = *deleted = 0;
    if (ctx->limits.auto_archive_days > 0 && leased(ctx, "auto-archive", token)) {
        rc = auto_archive(ctx, now - ctx->limits.auto_archive_days * DAY_MS, archived);
        release(ctx, "auto-archive", token);
    }
    if (rc == CM_OK && leased(ctx, "retention", token)) {
        rc = retention_all(ctx, now, deleted);
        release(ctx, "retention", token);
    }
    if (*archived || *deleted)
        cm_info("jobs: %lld conversations archived, %lld messages deleted", (long long)*archived,
                (long long)*deleted);
    return rc;
}

/* POST /internal/v1/messaging/jobs/run (the service's own port; not routed by the gateway) */
void messaging_jobs_http(cm_http_req *req, void *ud)
{
    int64_t archived, deleted;
    cm_err rc = messaging_jobs_run(ud, &archived, &deleted);
    cJSON *body;
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the housekeeping pass failed");
        return;
    }
    body = cJSON_CreateObject();
    cJSON_AddNumberToObject(body, "archived", (double)archived);
    cJSON_AddNumberToObject(body, "deleted", (double)deleted);
    cm_http_reply_json(req, 200, body);
}

static void jobs_tick(void *ud, int last)
{
    messaging_jobs *j = ud;
    int64_t archived, deleted;
    (void)last;
    messaging_jobs_run(j->ctx, &archived, &deleted);
}

cm_err messaging_jobs_start(messaging_ctx *ctx, long every_s, messaging_jobs **out)
{
    messaging_jobs *j = calloc(1, sizeof(*j));
    cm_err rc;

    if (j == NULL)
        return CM_ENOMEM;
    j->ctx = ctx;
    rc = cm_ticker_start((int64_t)every_s * 1000, 0, jobs_tick, j, &j->ticker);
    if (rc != CM_OK) {
        free(j);
        return rc;
    }
    *out = j;
    return CM_OK;
}

void messaging_jobs_stop(messaging_jobs *j)
{
    if (j == NULL)
        return;
    cm_ticker_stop(j->ticker);
    free(j);
}
