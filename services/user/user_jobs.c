/* user_jobs.c - the user service's background thread: runs queued GDPR exports, ticks the
 * events outbox every second and, every JANITOR_EVERY_S (a minute), does the expiry MongoDB
 * cannot do by itself here (no TTL indexes on FerretDB): spent and expired tokens, old revoked
 * sessions, old exports, stuck export jobs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/ticker.h"
#include "user.h"

#define EXPORT_KEEP_MS (7 * 86400 * 1000LL) /* a finished export is kept a week */
#define EXPORT_STUCK_MS (10 * 60 * 1000LL)  /* a job running longer died with its process */
#define DAY_MS (86400 * 1000LL)

struct user_jobs {
    user_ctx *ctx;
    cm_ticker *ticker;
    int64_t last_janitor;
};

void user_jobs_wake(user_jobs *j)
{
    if (j != NULL)
        cm_ticker_wake(j->ticker);
}

/* Deletes the documents of `coll` whose date `field` is before `before` (and `extra`). */
static void expire(user_ctx *ctx, const char *coll, const char *field, int64_t before,
                   const char *status)
{
    bson_t f = BSON_INITIALIZER, lt;
    int64_t n = 0;

    BSON_APPEND_DOCUMENT_BEGIN(&f, field, &lt);
    BSON_APPEND_DATE_TIME(&lt, "$lt", before);
    bson_append_document_end(&f, &lt);
    if (status)
        BSON_APPEND_UTF8(&f, "status", status);
    if (cm_mongo_delete(ctx->db, coll, &f, 1, &n) == CM_OK && n > 0)
        cm_info("expired %lld from %s", (long long)n, coll);
    bson_destroy(&f);
}

static void janitor(user_ctx *ctx)
{
    int64_t now = cm_clock_now_ms(), refresh_ms = ctx->refresh_ttl_s * 1000LL;
    bson_t f = BSON_INITIALIZER, lt, u = BSON_INITIALIZER, set;

    expire(ctx, USER_COLL_REFRESH, "expires_at", now - DAY_MS, NULL);
    expire(ctx, USER_COLL_ONETIME, "expires_at", now, NULL);
    /* A spent token's record must outlive the token it guards, the longest being a refresh. */
    expire(ctx, USER_COLL_SPENT, "used_at", now - refresh_ms - DAY_MS, NULL);
    expire(ctx, USER_COLL_SESSIONS, "revoked_at", now - refresh_ms, "revoked");
    expire(ctx, USER_COLL_EXPORTS, "finished_at", now - EXPORT_KEEP_MS, NULL);
    BSON_APPEND_UTF8(&f, "status", "running");
    BSON_APPEND_DOCUMENT_BEGIN(&f, "started_at", &lt);
    BSON_APPEND_DATE_TIME(&lt, "$lt", now - EXPORT_STUCK_MS);
    bson_append_document_end(&f, &lt);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_UTF8(&set, "status", "failed");
    BSON_APPEND_UTF8(&set, "error", "the job stopped with its process; ask for a new export");
    BSON_APPEND_DATE_TIME(&set, "finished_at", now);
    bson_append_document_end(&u, &set);
    cm_mongo_update(ctx->db, USER_COLL_EXPORTS, &f, &u, 0, 1, NULL);
    bson_destroy(&f);
    bson_destroy(&u);
}

struct pending {
    bson_t jobs[8];
    int n;
};

static int collect(const bson_t *doc, void *ud)
{
    struct pending *p = ud;
    bson_copy_to(doc, &p->jobs[p->n++]);
    return p->n == 8;
}

/* Claims a job: inserting its claim is atomic (FerretDB has no compare-and-set), so with
 * several instances each job runs once. */
static int claim(user_ctx *ctx, const char *id)
{
    char key[64];
    bson_t d = BSON_INITIALIZER;
    cm_err rc;

    snprintf(key, sizeof(key), "export:%s", id);
    BSON_APPEND_UTF8(&d, "_id", key);
    BSON_APPEND_DATE_TIME(&d, "used_at", cm_clock_now_ms());
    rc = cm_mongo_insert(ctx->db, USER_COLL_SPENT, &d);
    bson_destroy(&d);
    return rc == CM_OK;
}

static void run_exports(user_ctx *ctx)
{
    struct pending p = {.n = 0};
    bson_t f = BSON_INITIALIZER;

    BSON_APPEND_UTF8(&f, "status", "pending");
    cm_mongo_find(ctx->db, USER_COLL_EXPORTS, &f, NULL, collect, &p);
    bson_destroy(&f);
    for (int i = 0; i < p.n; i++) {
        if (claim(ctx, cm_bson_str(&p.jobs[i], "_id", "")))
            user_export_run(ctx, &p.jobs[i]);
        bson_destroy(&p.jobs[i]);
    }
}

/* Every second (other instances' exports), at once when an export is created here. */
static void tick(void *ud, int last)
{
    user_jobs *j = ud;
    (void)last;
    run_exports(j->ctx);
    cm_outbox_tick(j->ctx->outbox); /* mark delivered events, produce stale ones again */
    if (cm_clock_now_ms() - j->last_janitor >= j->ctx->janitor_every_s * 1000LL) {
        janitor(j->ctx);
        j->last_janitor = cm_clock_now_ms();
    }
}

cm_err user_jobs_start(user_ctx *ctx, user_jobs **out)
{
    user_jobs *j = calloc(1, sizeof(*j));
    cm_err rc;

    if (j == NULL)
        return CM_ENOMEM;
    j->ctx = ctx;
    rc = cm_ticker_start(1000, 0, tick, j, &j->ticker);
    if (rc != CM_OK) {
        free(j);
        return rc;
    }
    *out = j;
    return CM_OK;
}

void user_jobs_stop(user_jobs *j)
{
    if (j == NULL)
        return;
    cm_ticker_stop(j->ticker); /* a running export finishes first */
    free(j);
}
