/* media_jobs.c - housekeeping: unfinished tus uploads past their expiry, and message media
 * past the tenant's expiry (the seeds' 90-day GDPR rule). Each step is idempotent and safe on
 * several instances at once: deleting a media object is a conditional status flip that only
 * one instance wins, and removing a blob that is already gone is not an error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/ticker.h"
#include "media.h"

#define BATCH 500
#define DAY_MS 86400000LL

struct media_jobs {
    media_ctx *ctx;
    cm_ticker *ticker;
};

struct pass {
    media_ctx *ctx;
    int64_t deleted;
};

static int remove_part(const bson_t *doc, void *ud)
{
    struct pass *p = ud;
    p->ctx->store->remove(p->ctx->store, cm_bson_str(doc, "key", ""));
    return 0;
}

/* Removes an expired upload: its part blobs, its part records, then the upload itself. */
static int expire_upload(const bson_t *doc, void *ud)
{
    struct pass *p = ud;
    const char *id = cm_bson_str(doc, "_id", "");
    bson_t f = BSON_INITIALIZER, uf = BSON_INITIALIZER;
    int64_t n = 0;

    BSON_APPEND_UTF8(&f, "upload_id", id);
    if (cm_mongo_find(p->ctx->db, MEDIA_COLL_PARTS, &f, NULL, remove_part, p) == CM_OK &&
        cm_mongo_delete(p->ctx->db, MEDIA_COLL_PARTS, &f, 1, NULL) == CM_OK) {
        BSON_APPEND_UTF8(&uf, "_id", id);
        BSON_APPEND_BOOL(&uf, "complete", false);
        if (cm_mongo_delete(p->ctx->db, MEDIA_COLL_UPLOADS, &uf, 0, &n) == CM_OK)
            p->deleted += n;
    }
    bson_destroy(&f);
    bson_destroy(&uf);
    return 0;
}

static int expire_media(const bson_t *doc, void *ud)
{
    struct pass *p = ud;
    if (media_delete_doc(p->ctx, doc) == CM_OK)
        p->deleted++;
    return 0;
}

/* Deletes message media of `tenant` (or of every tenant not in `except` when tenant is NULL)
 * created before `before_ms`. */
static cm_err expire_tenant(struct pass *p, const char *tenant, const bson_t *except,
                            int64_t before_ms)
{
    bson_t f = BSON_INITIALIZER, ne, lt, nin, opts = BSON_INITIALIZER;
    cm_err rc;

    if (tenant) {
        BSON_APPEND_UTF8(&f, "tenant", tenant);
    } else {
        BSON_APPEND_DOCUMENT_BEGIN(&f, "tenant", &nin);
        BSON_APPEND_ARRAY(&nin, "$nin", except);
        bson_append_document_end(&f, &nin);
    }
    BSON_APPEND_UTF8(&f, "purpose", "message");
    BSON_APPEND_DOCUMENT_BEGIN(&f, "status", &ne);
    BSON_APPEND_UTF8(&ne, "$ne", "deleted");
    bson_append_document_end(&f, &ne);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "created_at", &lt);
    BSON_APPEND_DATE_TIME(&lt, "$lt", before_ms);
    bson_append_document_end(&f, &lt);
    BSON_APPEND_INT64(&opts, "limit", BATCH);
    rc = cm_mongo_find(p->ctx->db, MEDIA_COLL, &f, &opts, expire_media, p);
    bson_destroy(&f);
    bson_destroy(&opts);
    return rc;
}

struct tenants {
    struct pass *p;
    int64_t now;
    bson_t except; /* array of tenants with their own settings */
    int n;
    cm_err rc;
};

static int per_tenant(const bson_t *doc, void *ud)
{
    struct tenants *t = ud;
    const char *tenant = cm_bson_str(doc, "_id", "");
    int64_t days = cm_bson_int(doc, "message_expiry_days", -1);
    char k[16];

    snprintf(k, sizeof(k), "%d", t->n++);
    BSON_APPEND_UTF8(&t->except, k, tenant);
    if (days < 0)
        days = t->p->ctx->defaults.message_expiry_days;
    if (days > 0) {
        cm_err rc = expire_tenant(t->p, tenant, NULL, t->now - days * DAY_MS);
        if (rc != CM_OK)
            t->rc = rc;
    }
    return 0;
}

cm_err media_jobs_run(media_ctx *ctx, int64_t now_ms, int64_t *deleted)
{
    struct pass p = {ctx, 0};
    struct tenants t = {.p = &p, .now = now_ms};
    bson_t f = BSON_INITIALIZER, lt, opts = BSON_INITIALIZER;
    cm_err rc;

    BSON_APPEND_BOOL(&f, "complete", false);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "expires_at", &lt);
    BSON_APPEND_DATE_TIME(&lt, "$lt", now_ms);
    bson_append_document_end(&f, &lt);
    BSON_APPEND_INT64(&opts, "limit", BATCH);
    rc = cm_mongo_find(ctx->db, MEDIA_COLL_UPLOADS, &f, &opts, expire_upload, &p);
    bson_destroy(&f);
    bson_destroy(&opts);
    if (rc != CM_OK)
        return rc;

    bson_init(&t.except);
    bson_init(&f);
    rc = cm_mongo_find(ctx->db, MEDIA_COLL_SETTINGS, &f, NULL, per_tenant, &t);
    if (rc == CM_OK)
        rc = t.rc;
    if (rc == CM_OK && ctx->defaults.message_expiry_days > 0)
        rc = expire_tenant(&p, NULL, &t.except,
                           now_ms - ctx->defaults.message_expiry_days * DAY_MS);
    bson_destroy(&t.except);
    bson_destroy(&f);
    if (deleted)
        *deleted = p.deleted;
    return rc;
}

static void jobs_tick(void *ud, int last)
{
    media_jobs *j = ud;
    int64_t n = 0;
    (void)last;
    if (media_jobs_run(j->ctx, cm_clock_now_ms(), &n) == CM_OK && n > 0)
        cm_info("housekeeping deleted %lld expired uploads and media", (long long)n);
}

cm_err media_jobs_start(media_ctx *ctx, int64_t every_ms, media_jobs **out)
{
    media_jobs *j = calloc(1, sizeof(*j));
    cm_err rc;

    if (j == NULL)
        return CM_ENOMEM;
    j->ctx = ctx;
    rc = cm_ticker_start(every_ms, 0, jobs_tick, j, &j->ticker);
    if (rc != CM_OK) {
        free(j);
        return rc;
    }
    *out = j;
    return CM_OK;
}

void media_jobs_stop(media_jobs *j)
{
    if (j == NULL)
        return;
    cm_ticker_stop(j->ticker);
    free(j);
}

/* POST /internal/v1/jobs/run: one housekeeping pass now (operators and tests). */
void media_jobs_http(cm_http_req *req, void *ud)
{
    media_ctx *ctx = ud;
    int64_t n = 0;
    cm_err rc = media_jobs_run(ctx, cm_clock_now_ms(), &n);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the housekeeping pass failed");
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "deleted", (double)n);
    cm_http_reply_json(req, 200, o);
}
