/* user_http.c - what the handlers share in answering: one keyset-paginated list reply. */
#include "common/uuid.h"
#include "user.h"

void user_reply_id_page(cm_http_req *req, user_ctx *ctx, const char *coll, bson_t *filter,
                        int newest_first, cJSON *(*render)(const bson_t *doc, void *ud),
                        void *ud)
{
    const char *cursor = cm_http_query(req, "cursor");
    char next[CM_UUID_STRLEN];
    bson_t sort = BSON_INITIALIZER, cmp;
    cJSON *items = NULL;
    long limit;
    cm_err rc;

    if (cm_http_query_long(req, "limit", 50, 1, 200, &limit) != CM_OK)
        goto out;
    if (cursor && *cursor) { /* "cursor=" is the first page, like an absent one */
        if (!cm_uuid_valid(cursor)) {
            cm_http_reply_error(req, CM_EINVAL,
                                "the cursor is malformed; pass back next_cursor as given");
            goto out;
        }
        BSON_APPEND_DOCUMENT_BEGIN(filter, "_id", &cmp);
        BSON_APPEND_UTF8(&cmp, newest_first ? "$lt" : "$gt", cursor);
        bson_append_document_end(filter, &cmp);
    }
    BSON_APPEND_INT32(&sort, "_id", newest_first ? -1 : 1); /* UUIDv7 ids sort by time */
    rc = cm_mongo_find_page(ctx->db, coll, filter, &sort, limit, "_id", render, ud, &items, next,
                            sizeof(next));
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, NULL);
        goto out;
    }
    cm_http_reply_page(req, items, next[0] ? next : NULL);
out:
    bson_destroy(&sort);
}
