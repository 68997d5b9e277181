/* messaging_messages.c - messages: POST and GET /v1/conversations/{id}/messages.
 *
 * Seq allocation is by insertion: a message is inserted with seq = last_seq + 1 under the
 * unique index (conversation_id, seq); when another sender took that seq the insert fails and
 * the next one is tried. A seq therefore exists exactly when its message does: no gap even
 * when a process dies between steps, which a separate counter ($inc, then insert) cannot
 * promise without transactions (FerretDB has none). */
#include <stdio.h>
#include <string.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "common/uuid.h"
#include "messaging.h"
#include "messaging_users.h"

#define SEQ_ATTEMPTS 256 /* inserts tried before answering 503; contention never gets near */

/* Finds the caller's earlier message with the same client_msg_id. */
static cm_err find_retry(messaging_ctx *ctx, const char *cid, const char *sender,
                         const char *client_id, bson_t *out)
{
    bson_t f = BSON_INITIALIZER;
    cm_err rc;
    BSON_APPEND_UTF8(&f, "conversation_id", cid);
    BSON_APPEND_UTF8(&f, "sender_id", sender);
    BSON_APPEND_UTF8(&f, "client_msg_id", client_id);
    rc = cm_mongo_find_one(ctx->db, MSG_COLL_MESSAGES, &f, NULL, out);
    bson_destroy(&f);
    return rc;
}

/* Answers a retry: the original message with 200, or 409 when the body differs. */
static void reply_retry(cm_http_req *req, const bson_t *orig, const char *text)
{
    if (strcmp(cm_bson_str(orig, "text", ""), text) != 0) {
        cm_http_reply_error(req, CM_ECONFLICT,
                            "client_msg_id was already used for a different message");
        return;
    }
    cm_http_reply_json(req, 200, messaging_message_json(orig));
}

/* The highest seq stored for a conversation (0 when none). */
static int64_t max_seq(messaging_ctx *ctx, const char *cid)
{
    bson_t f = BSON_INITIALIZER, opts = BSON_INITIALIZER, sort, doc;
    int64_t seq = 0;
    BSON_APPEND_UTF8(&f, "conversation_id", cid);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "seq", -1);
    bson_append_document_end(&opts, &sort);
    if (cm_mongo_find_one(ctx->db, MSG_COLL_MESSAGES, &f, &opts, &doc) == CM_OK) {
        seq = cm_bson_int(&doc, "seq", 0);
        bson_destroy(&doc);
    }
    bson_destroy(&f);
    bson_destroy(&opts);
    return seq;
}

/* Applies the per-user send limit (Redis, fixed one-minute window, shared by instances).
 * Redis being down lets the send through: availability over the limit, logged. */
static int over_rate(cm_http_req *req, messaging_ctx *ctx, const cm_jwt_claims *c)
{
    char key[300], retry[24], lim[24], rem[24];
    int64_t count = 0, ms = 0;

    if (ctx->send_rate_per_min <= 0)
        return 0;
    snprintf(key, sizeof(key), "rl:send:%s:%s", c->tid, c->sub);
    if (cm_redis_window_incr(ctx->redis, key, 60000, &count, &ms) != CM_OK) {
        cm_warn("send rate limit skipped: Redis unavailable");
        return 0;
    }
    snprintf(lim, sizeof(lim), "%ld", ctx->send_rate_per_min);
    snprintf(rem, sizeof(rem), "%lld",
             (long long)(count >= ctx->send_rate_per_min ? 0 : ctx->send_rate_per_min - count));
    snprintf(retry, sizeof(retry), "%lld", (long long)(ms + 999) / 1000);
    cm_http_add_header(req, "RateLimit-Limit", lim);
    cm_http_add_header(req, "RateLimit-Remaining", rem);
    cm_http_add_header(req, "RateLimit-Reset", retry);
    if (count <= ctx->send_rate_per_min)
        return 0;
    cm_http_add_header(req, "Retry-After", retry);
    cm_http_reply_error(req, CM_ELIMIT, "at most the configured number of messages per minute may be sent");
    return 1;
}

/* After the insert: move the conversation's last_seq/last_message and the sender's read
 * position forward (never back: concurrent sends may finish out of order). Best effort: a
 * lost update heals on the next send, and the seq itself is already safe. */
static void advance(messaging_ctx *ctx, const bson_t *msg, const char *cid, const char *sender,
                    int64_t seq, int64_t now)
{
    bson_t f = BSON_INITIALIZER, lt, u = BSON_INITIALIZER, set, mf = BSON_INITIALIZER, mlt,
           mu = BSON_INITIALIZER, mset;
    char key[256];

    BSON_APPEND_UTF8(&f, "_id", cid);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "last_seq", &lt);
    BSON_APPEND_INT64(&lt, "$lt", seq);
    bson_append_document_end(&f, &lt);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_INT64(&set, "last_seq", seq);
    BSON_APPEND_DATE_TIME(&set, "last_activity_at", now);
    BSON_APPEND_DOCUMENT(&set, "last_message", msg);
    bson_append_document_end(&u, &set);
    cm_mongo_update(ctx->db, MSG_COLL_CONVERSATIONS, &f, &u, 0, 0, NULL);

    snprintf(key, sizeof(key), "%s/%s", cid, sender);
    BSON_APPEND_UTF8(&mf, "_id", key);
    BSON_APPEND_DOCUMENT_BEGIN(&mf, "read_seq", &mlt);
    BSON_APPEND_INT64(&mlt, "$lt", seq);
    bson_append_document_end(&mf, &mlt);
    BSON_APPEND_DOCUMENT_BEGIN(&mu, "$set", &mset);
    BSON_APPEND_INT64(&mset, "read_seq", seq);
    bson_append_document_end(&mu, &mset);
    cm_mongo_update(ctx->db, MSG_COLL_MEMBERS, &mf, &mu, 0, 0, NULL);
    bson_destroy(&f);
    bson_destroy(&u);
    bson_destroy(&mf);
    bson_destroy(&mu);
}

/* POST /v1/conversations/{id}/messages */
void messaging_messages_send(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    static const char *const allowed[] = {"text", "client_msg_id", NULL};
    cm_jwt_claims c;
    const char *cid = cm_http_param(req, "id"), *text = NULL, *client_id = NULL, *why;
    char detail[256], mid[CM_UUID_STRLEN], loc[160];
    bson_t conv, orig, doc;
    int have_conv = 0, have_doc = 0;
    int64_t seq, now;
    cJSON *body;
    cm_err rc = CM_EINTERNAL;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (cm_http_json_body(req, &body) != CM_OK)
        goto out;
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_string(body, "text", 1, 0, (size_t)-1, &text, detail, sizeof(detail)) ||
        cm_json_string(body, "client_msg_id", 0, 1, MSG_CLIENT_ID_MAX, &client_id, detail,
                       sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    if ((why = messaging_text_problem(text)) != NULL) {
        cm_http_reply_error(req, CM_EINVAL, why);
        goto out;
    }
    if (client_id && !messaging_client_msg_id_valid(client_id)) {
        cm_http_reply_error(req, CM_EINVAL,
                            "field 'client_msg_id' must be 1..64 printable ASCII characters");
        goto out;
    }
    rc = messaging_conversation_for_member(ctx, c.tid, cid, c.sub, &conv);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "no such conversation" : NULL);
        goto out;
    }
    have_conv = 1;
    if (messaging_users_refuse_send(req, ctx, c.tid, c.sub, &conv))
        goto out;
    /* A retry is answered before the rate limit: returning the original costs nothing. */
    if (client_id) {
        rc = find_retry(ctx, cid, c.sub, client_id, &orig);
        if (rc == CM_OK) {
            reply_retry(req, &orig, text);
            bson_destroy(&orig);
            goto out;
        }
        if (rc != CM_ENOTFOUND) {
            cm_http_reply_error(req, rc, NULL);
            goto out;
        }
    }
    if (over_rate(req, ctx, &c))
        goto out;
    if (cm_uuid_v7(mid) != CM_OK) {
        cm_http_reply_error(req, CM_EINTERNAL, "the random source failed");
        goto out;
    }
    /* Without a client_msg_id the message id stands in, so the unique index never sees
     * two missing values. */
    if (client_id == NULL)
        client_id = mid;
    now = cm_clock_now_ms();
    seq = cm_bson_int(&conv, "last_seq", 0) + 1;
    for (int attempt = 0;; attempt++) {
        if (attempt == SEQ_ATTEMPTS) {
            cm_http_reply_error(req, CM_EAGAIN, "the conversation is too busy; retry");
            goto out;
        }
        if (have_doc)
            bson_destroy(&doc);
        bson_init(&doc);
        have_doc = 1;
        BSON_APPEND_UTF8(&doc, "_id", mid);
        BSON_APPEND_UTF8(&doc, "tenant", c.tid);
        BSON_APPEND_UTF8(&doc, "conversation_id", cid);
        BSON_APPEND_INT64(&doc, "seq", seq);
        BSON_APPEND_UTF8(&doc, "sender_id", c.sub);
        BSON_APPEND_UTF8(&doc, "type", "text");
        BSON_APPEND_UTF8(&doc, "text", text);
        BSON_APPEND_UTF8(&doc, "client_msg_id", client_id);
        BSON_APPEND_DATE_TIME(&doc, "created_at", now);
        BSON_APPEND_UTF8(&doc, "request_id", cm_http_request_id(req)); /* for republishing */
        BSON_APPEND_BOOL(&doc, "published", false);
        rc = cm_mongo_insert(ctx->db, MSG_COLL_MESSAGES, &doc);
        if (rc == CM_OK)
            break;
        if (rc != CM_ECONFLICT) {
            cm_http_reply_error(req, rc, "the message could not be stored");
            goto out;
        }
        /* Either the seq was taken or a concurrent retry of this very message won. */
        if (find_retry(ctx, cid, c.sub, client_id, &orig) == CM_OK) {
            reply_retry(req, &orig, text);
            bson_destroy(&orig);
            goto out;
        }
        /* Under contention, jump to the real end instead of walking one by one. */
        seq = (attempt % 4 == 3) ? max_seq(ctx, cid) + 1 : seq + 1;
    }
    advance(ctx, &doc, cid, c.sub, seq, now);
    messaging_publish_message(ctx, &doc);
    snprintf(loc, sizeof(loc), "/v1/conversations/%s/messages/%s", cid, mid);
    cm_http_add_header(req, "Location", loc);
    cm_http_reply_json(req, 201, messaging_message_json(&doc));
out:
    if (have_conv)
        bson_destroy(&conv);
    if (have_doc)
        bson_destroy(&doc);
}

/* GET /v1/conversations/{id}/messages?direction=forward|backward&cursor=&limit=
 * forward: seq ascending after the cursor (from the start without one); backward: seq
 * descending before the cursor (from the newest without one). */
void messaging_messages_list(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    cm_jwt_claims c;
    const char *cid = cm_http_param(req, "id"), *dir = cm_http_query(req, "direction");
    const char *cursor = cm_http_query(req, "cursor");
    int forward;
    long limit;
    int64_t cseq = 0;
    messaging_page p = {0};
    bson_t conv, f = BSON_INITIALIZER, range, sort = BSON_INITIALIZER;
    char next[24];
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (dir && strcmp(dir, "forward") != 0 && strcmp(dir, "backward") != 0) {
        cm_http_reply_error(req, CM_EINVAL, "query parameter 'direction' must be forward or backward");
        goto out;
    }
    forward = dir == NULL || strcmp(dir, "forward") == 0;
    if (cursor && *cursor == '\0')
        cursor = NULL; /* "cursor=" is the first page, like an absent one */
    if (cursor && !messaging_seq_cursor_parse(cursor, &cseq)) {
        cm_http_reply_error(req, CM_EINVAL, "the cursor is malformed; pass back next_cursor as given");
        goto out;
    }
    if (cm_http_query_long(req, "limit", MSG_PAGE_DEFAULT, 1, MSG_PAGE_MAX, &limit) != CM_OK)
        goto out;
    rc = messaging_conversation_for_member(ctx, c.tid, cid, c.sub, &conv);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "no such conversation" : NULL);
        goto out;
    }
    bson_destroy(&conv);
    BSON_APPEND_UTF8(&f, "conversation_id", cid);
    if (forward || cursor) {
        BSON_APPEND_DOCUMENT_BEGIN(&f, "seq", &range);
        BSON_APPEND_INT64(&range, forward ? "$gt" : "$lt", cseq);
        bson_append_document_end(&f, &range);
    }
    BSON_APPEND_INT32(&sort, "seq", forward ? 1 : -1);
    rc = messaging_page_find(ctx->db, MSG_COLL_MESSAGES, &f, &sort, limit, messaging_message_json,
                             &p);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "messages could not be listed");
        goto out;
    }
    if (p.more)
        snprintf(next, sizeof(next), "%lld", (long long)cm_bson_int(&p.last, "seq", 0));
    cm_http_reply_page(req, p.items, p.more ? next : NULL);
    p.items = NULL; /* taken by the reply */
    messaging_page_cleanup(&p);
out:
    bson_destroy(&f);
    bson_destroy(&sort);
}
