/* messaging_receipts.c - read and delivery receipts, who read a message, unread counts.
 *
 * A member's read and delivered positions live on their member record and move forward only.
 * The record has one writer at a time (the conversation's write section), so a late, lower
 * receipt can never move a position back and no count is lost; reading the unread count of a
 * conversation is one subtraction (last_seq - read_seq). */
#include <stdio.h>
#include <string.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "messaging.h"

/* Conversations this large show receipt counts, not who: and their receipts are not fanned
 * out to every member's sync (only to the member's own devices). */
static const char *receipt_audience(const messaging_tx *tx)
{
    return cm_bson_int(&tx->conv, "member_count", 0) > MSG_WHO_READ_MAX ? tx->user : NULL;
}

/* POST /v1/conversations/{id}/read {"seq": N} and .../delivered {"seq": N}. */
static void receipt(cm_http_req *req, messaging_ctx *ctx, int read)
{
    static const char *const allowed[] = {"seq", NULL};
    const char *field = read ? "read_seq" : "delivered_seq";
    cm_jwt_claims c;
    messaging_tx tx;
    char detail[200], ts[CM_RFC3339_LEN];
    long seq = 0;
    int64_t cur, delivered;
    bson_t set = BSON_INITIALIZER;
    cJSON *body, *d;
    cm_err rc;

    memset(&tx, 0, sizeof(tx));
    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (cm_http_json_body(req, &body) != CM_OK)
        goto out;
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_long(body, "seq", 1, 0, INT32_MAX, &seq, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    rc = messaging_tx_open(ctx, req, &c, cm_http_param(req, "id"), &tx);
    if (rc != CM_OK) {
        messaging_reply_open_error(req, rc);
        goto out;
    }
    if (seq > tx.last_seq) {
        snprintf(detail, sizeof(detail), "field 'seq' is beyond the conversation's last message (%lld)",
                 (long long)tx.last_seq);
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    cur = cm_bson_int(&tx.me, field, 0);
    delivered = cm_bson_int(&tx.me, "delivered_seq", 0);
    if (seq > cur) {
        /* Forward only. Reading implies having received. */
        BSON_APPEND_INT64(&set, field, seq);
        BSON_APPEND_DATE_TIME(&set, read ? "read_at" : "delivered_at", tx.now);
        if (read && seq > delivered) {
            BSON_APPEND_INT64(&set, "delivered_seq", seq);
            delivered = seq;
        }
        cm_clock_rfc3339(tx.now, ts);
        d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "conversation_id", tx.cid);
        cJSON_AddStringToObject(d, "user_id", c.sub);
        if (read) {
            cJSON_AddNumberToObject(d, "read_seq", (double)seq);
            cJSON_AddNumberToObject(d, "delivered_seq", (double)delivered);
            cJSON_AddStringToObject(d, "read_at", ts);
        } else {
            cJSON_AddNumberToObject(d, "delivered_seq", (double)seq);
            cJSON_AddStringToObject(d, "delivered_at", ts);
        }
        rc = messaging_tx_set_me(&tx, &set, read ? "conversation.read" : "message.delivered",
                                 receipt_audience(&tx), d);
        if (rc != CM_OK) {
            cm_http_reply_error(req, rc, "the receipt could not be stored");
            goto out;
        }
    }
    messaging_reply_conversation(req, &tx);
out:
    bson_destroy(&set);
    messaging_tx_close(&tx);
}

/* POST /v1/conversations/{id}/read {"seq": N}: the caller read up to seq N. */
void messaging_receipts_read(cm_http_req *req, void *ud)
{
    receipt(req, ud, 1);
}

/* POST /v1/conversations/{id}/delivered {"seq": N}: the caller's client received up to N. */
void messaging_receipts_delivered(cm_http_req *req, void *ud)
{
    receipt(req, ud, 0);
}

struct who {
    int64_t seq;
    const char *sender;
    cJSON *read_by, *delivered_to;
    int reads, deliveries;
};

static int collect_receipt(const bson_t *m, void *ud)
{
    struct who *w = ud;
    const char *uid = cm_bson_str(m, "user_id", "");
    char ts[CM_RFC3339_LEN];
    if (strcmp(uid, w->sender) == 0)
        return 0;
    if (cm_bson_int(m, "read_seq", 0) >= w->seq) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "user_id", uid);
        cm_clock_rfc3339(cm_bson_int(m, "read_at", cm_bson_int(m, "joined_at", 0)), ts);
        cJSON_AddStringToObject(o, "read_at", ts);
        cJSON_AddItemToArray(w->read_by, o);
        w->reads++;
    }
    if (cm_bson_int(m, "delivered_seq", 0) >= w->seq) {
        cJSON_AddItemToArray(w->delivered_to, cJSON_CreateString(uid));
        w->deliveries++;
    }
    return 0;
}

/* Counts members other than the sender whose `field` reached seq. */
static cm_err count_at_least(messaging_ctx *ctx, const char *cid, const char *field, int64_t seq,
                             const char *sender, int64_t *n)
{
    bson_t f = BSON_INITIALIZER, gte, ne;
    cm_err rc;
    BSON_APPEND_UTF8(&f, "conversation_id", cid);
    BSON_APPEND_UTF8(&f, "state", "active");
    BSON_APPEND_DOCUMENT_BEGIN(&f, field, &gte);
    BSON_APPEND_INT64(&gte, "$gte", seq);
    bson_append_document_end(&f, &gte);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "user_id", &ne);
    BSON_APPEND_UTF8(&ne, "$ne", sender);
    bson_append_document_end(&f, &ne);
    rc = cm_mongo_count(ctx->db, MSG_COLL_MEMBERS, &f, n);
    bson_destroy(&f);
    return rc;
}

/* GET /v1/conversations/{id}/messages/{message_id}/receipts : who read and who received the
 * message (the sender left out): per member up to 100 members, counts above that. */
void messaging_receipts_who(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    cm_jwt_claims c;
    const char *cid = cm_http_param(req, "id");
    bson_t conv, msg, f = BSON_INITIALIZER;
    struct who w = {0};
    int64_t reads = 0, deliveries = 0;
    cJSON *body = NULL;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        return;
    if (messaging_member_of(req, ctx, &c, &conv, NULL) != CM_OK)
        return;
    rc = messaging_message_find(ctx, cid, cm_http_param(req, "message_id"), &msg);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "no such message" : NULL);
        goto out_conv;
    }
    w.seq = cm_bson_int(&msg, "seq", 0);
    w.sender = cm_bson_str(&msg, "sender_id", "");
    body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "message_id", cm_bson_str(&msg, "_id", ""));
    cJSON_AddNumberToObject(body, "seq", (double)w.seq);
    if (cm_bson_int(&conv, "member_count", 0) <= MSG_WHO_READ_MAX) {
        w.read_by = cJSON_AddArrayToObject(body, "read_by");
        w.delivered_to = cJSON_AddArrayToObject(body, "delivered_to");
        BSON_APPEND_UTF8(&f, "conversation_id", cid);
        BSON_APPEND_UTF8(&f, "state", "active");
        rc = cm_mongo_find(ctx->db, MSG_COLL_MEMBERS, &f, NULL, collect_receipt, &w);
        reads = w.reads;
        deliveries = w.deliveries;
    } else {
        rc = count_at_least(ctx, cid, "read_seq", w.seq, w.sender, &reads);
        if (rc == CM_OK)
            rc = count_at_least(ctx, cid, "delivered_seq", w.seq, w.sender, &deliveries);
    }
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the receipts could not be read");
        goto out;
    }
    cJSON_AddNumberToObject(body, "read_count", (double)reads);
    cJSON_AddNumberToObject(body, "delivered_count", (double)deliveries);
    cm_http_reply_json(req, 200, body);
    body = NULL;
out:
    cJSON_Delete(body);
    bson_destroy(&msg);
out_conv:
    bson_destroy(&conv);
    bson_destroy(&f);
}

void messaging_receipts_unread(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    cm_jwt_claims c;
    messaging_unread_totals t;
    int cached;
    cJSON *body;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        return;
    if (messaging_unread_totals_get(ctx, c.tid, c.sub, &t, &cached) != CM_OK) {
        cm_http_reply_error(req, CM_EIO, "the unread counts could not be read");
        return;
    }
    body = cJSON_CreateObject();
    cJSON_AddNumberToObject(body, "unread_count", (double)t.unread);
    cJSON_AddNumberToObject(body, "conversations_with_unread", (double)t.with_unread);
    cJSON_AddNumberToObject(body, "unread_mentions", (double)t.mentions);
    cJSON_AddNumberToObject(body, "muted_unread_count", (double)t.muted_unread);
    cm_http_reply_json(req, 200, body);
}
