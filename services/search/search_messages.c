/* search_messages.c - GET /v1/search/messages: the caller's message search, scoped to their
 * tenant's index and to the conversations they may read. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/auth.h"
#include "common/log.h"
#include "search.h"

/* Merges an HTTP filter into the one q named; 0 (answered 400) when both disagree. */
static int merge_id(cm_http_req *req, const char *param, const char *op, char *dst)
{
    const char *v = cm_http_query(req, param);
    if (v == NULL || v[0] == '\0')
        return 1;
    if (!cm_user_id_valid(v)) {
        cm_http_problem(req, 400, "validation", "Invalid parameter",
                        "%s takes an id of 1..64 of A-Z a-z 0-9 _ . @ -", param);
        return 0;
    }
    if (dst[0] && strcmp(dst, v) != 0) {
        cm_http_problem(req, 400, "validation", "Invalid parameter",
                        "%s and %s: in q name different ids", param, op);
        return 0;
    }
    snprintf(dst, SEARCH_ID_MAX, "%s", v);
    return 1;
}

static int merge_time(cm_http_req *req, const char *param, int64_t *dst, int upper)
{
    const char *v = cm_http_query(req, param);
    int64_t ms;
    if (v == NULL || v[0] == '\0')
        return 1;
    if (search_parse_time(v, &ms) != CM_OK) {
        cm_http_problem(req, 400, "validation", "Invalid parameter",
                        "%s takes a date YYYY-MM-DD or an RFC 3339 UTC time", param);
        return 0;
    }
    if (*dst == 0 || (upper ? ms < *dst : ms > *dst))
        *dst = ms;
    return 1;
}

int search_parse_cursor(const char *c, long *offset)
{
    char *end;
    long v;
    if (c == NULL || c[0] == '\0') {
        *offset = 0;
        return 1;
    }
    if (c[0] != 'o' || c[1] < '0' || c[1] > '9')
        return 0;
    v = strtol(c + 1, &end, 10);
    if (*end != '\0' || v < 0 || v > SEARCH_OFFSET_MAX)
        return 0;
    *offset = v;
    return 1;
}

/* GET /v1/search/messages */
void search_messages(cm_http_req *req, void *ud)
{
    search_ctx *ctx = ud;
    cm_jwt_claims c;
    search_query *q;
    const char *qs = cm_http_query(req, "q"), *sort = cm_http_query(req, "sort"),
               *has = cm_http_query(req, "has");
    char why[256], next[32];
    long limit, offset;
    int newest = 0, more = 0;
    cJSON *items;
    cm_err rc;

    if (!search_authenticate(req, ctx, &c, NULL, NULL))
        return;
    q = cm_http_alloc(req, sizeof(*q));
    if (q == NULL) {
        cm_http_reply_error(req, CM_ENOMEM, NULL);
        return;
    }
    if (qs == NULL || qs[0] == '\0') {
        cm_http_problem(req, 400, "validation", "Invalid query",
                        "q is required: words, \"a phrase\", a prefix* or filters such as "
                        "from:alice in:<conversation> before:2024-05-01 after:2024-04-01 "
                        "has:attachment");
        return;
    }
    rc = search_query_parse(qs, q, why, sizeof(why));
    if (rc != CM_OK) {
        cm_http_problem(req, 400, "invalid-query", "Invalid query", "%s", why);
        return;
    }
    if (!merge_id(req, "conversation_id", "in", q->conversation) ||
        !merge_id(req, "sender_id", "from", q->sender) ||
        !merge_time(req, "from", &q->from_ms, 0) || !merge_time(req, "to", &q->to_ms, 1))
        return;
    if (has && has[0]) {
        if (strcmp(has, "attachment") != 0) {
            cm_http_problem(req, 400, "validation", "Invalid parameter",
                            "has takes only the value attachment");
            return;
        }
        q->has_attachment = 1;
    }
    if (sort && sort[0] && strcmp(sort, "relevance") != 0) {
        if (strcmp(sort, "newest") != 0) {
            cm_http_problem(req, 400, "validation", "Invalid parameter",
                            "sort is relevance (default) or newest");
            return;
        }
        newest = 1;
    }
    if (!search_parse_cursor(cm_http_query(req, "cursor"), &offset)) {
        cm_http_problem(req, 400, "validation", "Invalid parameter",
                        "cursor is not one this endpoint returned (results go %d deep)",
                        SEARCH_OFFSET_MAX);
        return;
    }
    if (cm_http_query_long(req, "limit", 20, 1, SEARCH_LIMIT_MAX, &limit) != CM_OK)
        return;
    items = cJSON_CreateArray();
    if (items == NULL) {
        cm_http_reply_error(req, CM_ENOMEM, NULL);
        return;
    }
    rc = search_index_messages(ctx->index, c.tid, c.sub, q, newest, offset, limit, items, &more);
    if (rc != CM_OK) {
        cJSON_Delete(items);
        cm_http_reply_error(req, rc == CM_EINVAL ? CM_EIO : rc, "the index could not be read");
        return;
    }
    if (offset == 0)
        search_remember(ctx, c.tid, c.sub, qs);
    more = more && offset + limit <= SEARCH_OFFSET_MAX;
    snprintf(next, sizeof(next), "o%ld", offset + limit);
    cm_http_add_header(req, "Cache-Control", "private, no-store");
    cm_http_reply_page(req, items, more ? next : NULL);
}
