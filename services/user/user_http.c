/* user_http.c - what the handlers share about requests and answers: the client address behind
 * the gateway and one keyset-paginated list reply. */
#include <stdio.h>
#include <string.h>

#include "common/auth.h"
#include "common/uuid.h"
#include "user.h"

/* Runs the page query and answers it. */
static void reply_page(cm_http_req *req, user_ctx *ctx, const char *coll, const bson_t *filter,
                       const bson_t *sort, long limit, const char *field,
                       cJSON *(*render)(const bson_t *doc, void *ud), void *ud)
{
    char next[CM_JWT_ID_MAX + 1];
    cJSON *items = NULL;
    cm_err rc = cm_mongo_find_page(ctx->db, coll, filter, sort, limit, field, render, ud, &items,
                                   next, sizeof(next));
    if (rc != CM_OK)
        cm_http_reply_error(req, rc, NULL);
    else
        cm_http_reply_page(req, items, next[0] ? next : NULL);
}

void user_reply_id_page(cm_http_req *req, user_ctx *ctx, const char *coll, bson_t *filter,
                        int newest_first, cJSON *(*render)(const bson_t *doc, void *ud),
                        void *ud)
{
    const char *cursor = cm_http_query(req, "cursor");
    bson_t sort = BSON_INITIALIZER, cmp;
    long limit;

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
    reply_page(req, ctx, coll, filter, &sort, limit, "_id", render, ud);
out:
    bson_destroy(&sort);
}

void user_reply_key_page(cm_http_req *req, user_ctx *ctx, const char *coll, bson_t *filter,
                         const char *key_prefix, const char *id_field, long def_limit,
                         long max_limit, cJSON *(*render)(const bson_t *doc, void *ud))
{
    const char *cursor = cm_http_query(req, "cursor");
    char key[512];
    bson_t sort = BSON_INITIALIZER, gt;
    long limit;

    if (cm_http_query_long(req, "limit", def_limit, 1, max_limit, &limit) != CM_OK)
        goto out;
    if (cursor && *cursor) {
        if (!cm_user_id_valid(cursor)) {
            cm_http_reply_error(req, CM_EINVAL,
                                "the cursor is malformed; pass back next_cursor as given");
            goto out;
        }
        snprintf(key, sizeof(key), "%s%s", key_prefix, cursor);
        BSON_APPEND_DOCUMENT_BEGIN(filter, "_id", &gt);
        BSON_APPEND_UTF8(&gt, "$gt", key);
        bson_append_document_end(filter, &gt);
    }
    BSON_APPEND_INT32(&sort, "_id", 1);
    reply_page(req, ctx, coll, filter, &sort, limit, id_field, render, NULL);
out:
    bson_destroy(&sort);
}

/* Whether `ip` is in the comma-separated list `trusted`. */
static int listed(const char *trusted, const char *ip)
{
    size_t n = strlen(ip);
    for (const char *p = trusted; p && *p;) {
        size_t len = strcspn(p, ",");
        if (len == n && strncmp(p, ip, n) == 0)
            return 1;
        p += len;
        if (*p == ',')
            p++;
    }
    return 0;
}

const char *user_client_ip(cm_http_req *req, const user_ctx *ctx)
{
    const char *peer = cm_http_client_ip(req), *xff, *last;
    char *ip;
    size_t len;

    if (!listed(ctx->trusted_proxies, peer) ||
        (xff = cm_http_header(req, "X-Forwarded-For")) == NULL)
        return peer;
    /* The entry the trusted proxy appended is the last one (RFC 7239 section 5.2 order). */
    last = strrchr(xff, ',');
    last = last ? last + 1 : xff;
    while (*last == ' ')
        last++;
    len = strcspn(last, " ");
    if (len == 0 || len > 45 || strspn(last, "0123456789abcdefABCDEF.:") < len)
        return peer; /* not an IP address: ignore it */
    ip = cm_http_alloc(req, len + 1);
    if (ip == NULL)
        return peer;
    memcpy(ip, last, len);
    ip[len] = '\0';
    return ip;
}
