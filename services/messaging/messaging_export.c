/* messaging_export.c - GET /internal/v1/messaging/events: a tenant's conversation logs (the
 * events collection, every event each conversation published, kept until the tenant's
 * retention deletes messages and log together, messaging_jobs.c) as the CloudEvents the
 * topics carried, page by page, for the search service's reindex backfill when the topics'
 * retention is shorter than the history. Service port only, like the other /internal routes
 * (the gateway routes no /internal path). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/auth.h"
#include "common/json.h"
#include "common/log.h"
#include "messaging.h"

#define EXPORT_LIMIT_MAX 1000 /* events per page */
#define EXPORT_ID_MAX 64      /* event ids are UUIDs (36); a longer cursor is not one of them */

typedef struct export_page {
    cJSON *items;
    char last[EXPORT_ID_MAX + 1];
    long n;
    cm_err rc;
} export_page;

static int add_event(const bson_t *doc, void *ud)
{
    export_page *p = ud;
    char *ev = NULL;
    cJSON *o;

    if (messaging_event_envelope(doc, &ev) != CM_OK || (o = cJSON_Parse(ev)) == NULL) {
        free(ev);
        p->rc = CM_ENOMEM;
        return 1; /* stop */
    }
    free(ev);
    cJSON_AddItemToArray(p->items, o);
    snprintf(p->last, sizeof(p->last), "%s", cm_bson_str(doc, "_id", ""));
    p->n++;
    return 0; /* go on */
}

void messaging_export_events(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    const char *tenant = cm_http_query(req, "tenant"), *after = cm_http_query(req, "after");
    bson_t f = BSON_INITIALIZER, gt, opts = BSON_INITIALIZER, sort;
    export_page p = {0};
    long limit;
    cm_err rc;

    if (tenant == NULL || !cm_user_id_valid(tenant)) {
        cm_http_reply_error(req, CM_EINVAL, "query parameter 'tenant' is required");
        goto out;
    }
    if (after && (after[0] == '\0' || strlen(after) > EXPORT_ID_MAX)) {
        cm_http_reply_error(req, CM_EINVAL, "'after' is the next_cursor of a previous page");
        goto out;
    }
    if (cm_http_query_long(req, "limit", 500, 1, EXPORT_LIMIT_MAX, &limit) != CM_OK)
        goto out;
    /* By _id: a total order that later inserts cannot reorder before the cursor in a way that
     * matters, since search applies events idempotently by eseq whatever their order. */
    BSON_APPEND_UTF8(&f, "tenant", tenant);
    if (after) {
        BSON_APPEND_DOCUMENT_BEGIN(&f, "_id", &gt);
        BSON_APPEND_UTF8(&gt, "$gt", after);
        bson_append_document_end(&f, &gt);
    }
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "_id", 1);
    bson_append_document_end(&opts, &sort);
    BSON_APPEND_INT64(&opts, "limit", limit);
    p.items = cJSON_CreateArray();
    if (p.items == NULL) {
        cm_http_reply_error(req, CM_ENOMEM, NULL);
        goto out;
    }
    rc = cm_mongo_find(ctx->db, MSG_COLL_EVENTS, &f, &opts, add_event, &p);
    if (rc == CM_OK)
        rc = p.rc;
    if (rc != CM_OK) {
        cJSON_Delete(p.items);
        cm_http_reply_error(req, rc, "the conversation logs could not be read");
        goto out;
    }
    cm_http_reply_page(req, p.items, p.n == limit ? p.last : NULL);
out:
    bson_destroy(&f);
    bson_destroy(&opts);
}
