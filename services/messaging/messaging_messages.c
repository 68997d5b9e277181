/* messaging_messages.c - messages: send, list, get.
 *
 * Seq allocation is by insertion: a message is inserted with seq = last_seq + 1 under the
 * unique index (conversation_id, seq); when that seq is taken the next one is tried. A seq
 * therefore exists exactly when its message does: no gap even when a process dies between
 * steps, which a separate counter ($inc, then insert) cannot promise without transactions
 * (FerretDB has none, and its $inc loses increments under concurrency). Sends run inside the
 * conversation's write section (messaging_log.c), so last_seq is exact and the first insert
 * normally succeeds; the unique index still guards the seqs if a lease ever runs out. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "common/uuid.h"
#include "messaging.h"

#define SEQ_ATTEMPTS 64 /* inserts tried before answering 503; an overlap needs a dead lease */

/* Finds the sender's earlier message with the same client_msg_id. */
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

/* The stored message at `seq`, and the highest seq (0 when none). */
static cm_err message_at(messaging_ctx *ctx, const char *cid, int64_t seq, bson_t *out)
{
    bson_t f = BSON_INITIALIZER;
    cm_err rc;
    BSON_APPEND_UTF8(&f, "conversation_id", cid);
    BSON_APPEND_INT64(&f, "seq", seq);
    rc = cm_mongo_find_one(ctx->db, MSG_COLL_MESSAGES, &f, NULL, out);
    bson_destroy(&f);
    return rc;
}

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

/* Makes sure a stored message has its message.created in the log: a writer that died between
 * the insert and the append left it out. Appending again is a no-op (the event id is the
 * message id). */
static cm_err ensure_logged(messaging_tx *tx, const bson_t *msg)
{
    if (cm_bson_int(msg, "seq", 0) > tx->last_seq)
        tx->last_seq = cm_bson_int(msg, "seq", 0);
    return messaging_tx_append(tx, "message.created", cm_bson_str(msg, "_id", ""), NULL,
                               messaging_message_json(msg), NULL);
}

static void append_strings(bson_t *doc, const char *key, const cJSON *arr)
{
    bson_t a;
    const cJSON *it;
    int i = 0;
    char k[16];
    if (arr == NULL || cJSON_GetArraySize(arr) == 0)
        return;
    BSON_APPEND_ARRAY_BEGIN(doc, key, &a);
    cJSON_ArrayForEach(it, arr)
    {
        snprintf(k, sizeof(k), "%d", i++);
        BSON_APPEND_UTF8(&a, k, it->valuestring);
    }
    bson_append_array_end(doc, &a);
}

/* A reply in a thread: the root counts it and remembers when the last one came. */
static cm_err count_thread_reply(messaging_tx *tx, const char *root_id)
{
    bson_t root, u = BSON_INITIALIZER, set;
    cm_err rc = messaging_message_find(tx->ctx, tx->cid, root_id, &root);
    if (rc != CM_OK)
        return rc;
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_INT64(&set, "reply_count", cm_bson_int(&root, "reply_count", 0) + 1);
    BSON_APPEND_DATE_TIME(&set, "last_reply_at", tx->now);
    bson_append_document_end(&u, &set);
    rc = messaging_update_id(tx->ctx, MSG_COLL_MESSAGES, root_id, &u);
    bson_destroy(&u);
    bson_destroy(&root);
    return rc;
}

/* A mentioned member keeps the seqs of their newest mentions; those above their read position
 * are their unread mentions. */
static cm_err note_mention(messaging_tx *tx, const char *uid, int64_t seq)
{
    char key[MSG_MEMBER_KEY_MAX];
    bson_t m, u = BSON_INITIALIZER, set, arr;
    bson_iter_t it, a;
    int64_t keep[MSG_MENTION_SEQS_MAX];
    int n = 0;
    cm_err rc = messaging_member_find(tx->ctx, tx->cid, uid, &m);
    if (rc != CM_OK)
        return rc == CM_ENOTFOUND ? CM_OK : rc;
    if (bson_iter_init_find(&it, &m, "mention_seqs") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &a))
        while (bson_iter_next(&a)) {
            if (n == MSG_MENTION_SEQS_MAX - 1) {
                memmove(keep, keep + 1, sizeof(keep[0]) * (size_t)(n - 1));
                n--;
            }
            keep[n++] = bson_iter_as_int64(&a);
        }
    keep[n++] = seq;
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_ARRAY_BEGIN(&set, "mention_seqs", &arr);
    for (int i = 0; i < n; i++) {
        char k[16];
        snprintf(k, sizeof(k), "%d", i);
        BSON_APPEND_INT64(&arr, k, keep[i]);
    }
    bson_append_array_end(&set, &arr);
    bson_append_document_end(&u, &set);
    messaging_member_key(tx->cid, uid, key);
    rc = messaging_update_id(tx->ctx, MSG_COLL_MEMBERS, key, &u);
    bson_destroy(&u);
    bson_destroy(&m);
    return rc;
}

/* Sending reads the conversation up to the sent message: own messages are never unread. */
static cm_err sender_read(messaging_tx *tx, int64_t seq)
{
    char key[MSG_MEMBER_KEY_MAX];
    bson_t u = BSON_INITIALIZER, set;
    cm_err rc;
    messaging_member_key(tx->cid, tx->user, key);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_INT64(&set, "read_seq", seq);
    BSON_APPEND_DATE_TIME(&set, "read_at", tx->now);
    bson_append_document_end(&u, &set);
    rc = messaging_update_id(tx->ctx, MSG_COLL_MEMBERS, key, &u);
    bson_destroy(&u);
    return rc;
}

cm_err messaging_message_insert(messaging_tx *tx, const messaging_new_message *nm, bson_t *out)
{
    char mid[CM_UUID_STRLEN];
    const char *client_id = nm->client_msg_id;
    int64_t seq = tx->last_seq + 1;
    const cJSON *it;
    bson_t doc;
    cm_err rc;

    if (cm_uuid_v7(mid) != CM_OK)
        return CM_EIO;
    /* Without a client_msg_id the message id stands in, so the unique index never sees two
     * missing values. */
    if (client_id == NULL)
        client_id = mid;
    for (int attempt = 0;; attempt++) {
        bson_t other;
        if (attempt == SEQ_ATTEMPTS)
            return CM_EAGAIN;
        bson_init(&doc);
        BSON_APPEND_UTF8(&doc, "_id", mid);
        BSON_APPEND_UTF8(&doc, "tenant", tx->tenant);
        BSON_APPEND_UTF8(&doc, "conversation_id", tx->cid);
        BSON_APPEND_INT64(&doc, "seq", seq);
        BSON_APPEND_UTF8(&doc, "sender_id", tx->user);
        BSON_APPEND_UTF8(&doc, "type", nm->type);
        BSON_APPEND_UTF8(&doc, "text", nm->text);
        BSON_APPEND_UTF8(&doc, "client_msg_id", client_id);
        BSON_APPEND_DATE_TIME(&doc, "created_at", tx->now);
        append_strings(&doc, "attachments", nm->attachments);
        append_strings(&doc, "mentions", nm->mentions);
        if (nm->reply_to)
            BSON_APPEND_UTF8(&doc, "reply_to", nm->reply_to);
        if (nm->thread_root)
            BSON_APPEND_UTF8(&doc, "thread_root", nm->thread_root);
        if (nm->forwarded_from)
            BSON_APPEND_DOCUMENT(&doc, "forwarded_from", nm->forwarded_from);
        BSON_APPEND_UTF8(&doc, "request_id", tx->request_id);
        rc = cm_mongo_insert(tx->ctx->db, MSG_COLL_MESSAGES, &doc);
        if (rc == CM_OK)
            break;
        bson_destroy(&doc);
        if (rc != CM_ECONFLICT)
            return rc;
        /* Either the sender already sent this client_msg_id (a retry: answer the original,
         * logged), or the seq was taken by a message whose writer died before logging it. */
        if (nm->client_msg_id && find_retry(tx->ctx, tx->cid, tx->user, client_id, out) == CM_OK) {
            rc = ensure_logged(tx, out);
            if (rc != CM_OK) {
                bson_destroy(out);
                return rc;
            }
            return CM_ECONFLICT;
        }
        if (message_at(tx->ctx, tx->cid, seq, &other) == CM_OK) {
            rc = ensure_logged(tx, &other);
            bson_destroy(&other);
            if (rc != CM_OK)
                return rc;
        }
        seq = (attempt % 4 == 3) ? max_seq(tx->ctx, tx->cid) + 1 : seq + 1;
    }
    rc = messaging_tx_append(tx, "message.created", mid, NULL, messaging_message_json(&doc), NULL);
    if (rc == CM_OK && nm->thread_root)
        rc = count_thread_reply(tx, nm->thread_root);
    if (nm->mentions)
        cJSON_ArrayForEach(it, nm->mentions) if (rc == CM_OK && strcmp(it->valuestring, tx->user) != 0)
            rc = note_mention(tx, it->valuestring, seq);
    if (rc == CM_OK)
        rc = sender_read(tx, seq);
    if (rc != CM_OK) {
        bson_destroy(&doc);
        return rc;
    }
    tx->last_seq = seq;
    if (tx->have_last_message)
        bson_destroy(&tx->last_message);
    bson_copy_to(&doc, &tx->last_message);
    tx->have_last_message = 1;
    bson_steal(out, &doc);
    return CM_OK;
}

cm_err messaging_system_message(messaging_tx *tx, const char *text)
{
    messaging_new_message nm = {0};
    bson_t out;
    cm_err rc;
    nm.type = "system";
    nm.text = text;
    rc = messaging_message_insert(tx, &nm, &out);
    if (rc == CM_OK)
        bson_destroy(&out);
    return rc;
}

/* Applies the per-user send limit (Redis, fixed one-minute window, shared by instances).
 * Redis being down lets the send through: availability over the limit, logged. */
static int over_rate(cm_http_req *req, messaging_ctx *ctx, const cm_jwt_claims *c)
{
    char key[300], retry[24], lim[24], rem[24];
    int64_t count = 0, ms = 0;
    long max = ctx->limits.send_rate_per_min;

    if (max <= 0)
        return 0;
    snprintf(key, sizeof(key), "rl:send:%s:%s", c->tid, c->sub);
    if (cm_redis_window_incr(ctx->redis, key, 60000, &count, &ms) != CM_OK) {
        cm_warn("send rate limit skipped: Redis unavailable");
        return 0;
    }
    snprintf(lim, sizeof(lim), "%ld", max);
    snprintf(rem, sizeof(rem), "%lld", (long long)(count >= max ? 0 : max - count));
    snprintf(retry, sizeof(retry), "%lld", (long long)(ms + 999) / 1000);
    cm_http_add_header(req, "RateLimit-Limit", lim);
    cm_http_add_header(req, "RateLimit-Remaining", rem);
    cm_http_add_header(req, "RateLimit-Reset", retry);
    if (count <= max)
        return 0;
    cm_http_add_header(req, "Retry-After", retry);
    cm_http_reply_error(req, CM_ELIMIT, "at most the configured number of messages per minute may be sent");
    return 1;
}

/* Checks an optional array field of ids: each valid per `valid`, at most `max`, no repeats. */
static cm_err id_array(const cJSON *body, const char *key, int max, int (*valid)(const char *),
                       const cJSON **out, char *detail, size_t dn)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(body, key), *it, *jt;
    *out = NULL;
    if (arr == NULL)
        return CM_OK;
    if (!cJSON_IsArray(arr)) {
        snprintf(detail, dn, "field '%s' must be an array", key);
        return CM_EINVAL;
    }
    if (cJSON_GetArraySize(arr) > max) {
        snprintf(detail, dn, "field '%s' may hold at most %d entries", key, max);
        return CM_EINVAL;
    }
    cJSON_ArrayForEach(it, arr)
    {
        if (!cJSON_IsString(it) || !valid(it->valuestring)) {
            snprintf(detail, dn, "field '%s' holds an invalid id", key);
            return CM_EINVAL;
        }
        for (jt = arr->child; jt != it; jt = jt->next)
            if (strcmp(jt->valuestring, it->valuestring) == 0) {
                snprintf(detail, dn, "field '%s' names '%s' twice", key, it->valuestring);
                return CM_EINVAL;
            }
    }
    *out = arr;
    return CM_OK;
}

/* Validates a send body into `nm`; answers 400 itself and returns non-CM_OK on bad input. */
static cm_err read_send_body(cm_http_req *req, const cJSON *body, messaging_new_message *nm)
{
    static const char *const allowed[] = {"text",     "client_msg_id", "type",        "attachments",
                                          "mentions", "reply_to",      "thread_root", NULL};
    char detail[256];
    const char *why;
    int media;

    memset(nm, 0, sizeof(*nm));
    nm->type = "text";
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_string(body, "type", 0, 1, 16, &nm->type, detail, sizeof(detail)) ||
        cm_json_string(body, "text", 0, 0, (size_t)-1, &nm->text, detail, sizeof(detail)) ||
        cm_json_string(body, "client_msg_id", 0, 1, MSG_CLIENT_ID_MAX, &nm->client_msg_id,
                       detail, sizeof(detail)) ||
        cm_json_string(body, "reply_to", 0, 1, 64, &nm->reply_to, detail, sizeof(detail)) ||
        cm_json_string(body, "thread_root", 0, 1, 64, &nm->thread_root, detail, sizeof(detail)) ||
        id_array(body, "attachments", MSG_ATTACHMENTS_MAX, cm_uuid_valid, &nm->attachments,
                 detail, sizeof(detail)) ||
        id_array(body, "mentions", MSG_MENTIONS_MAX, cm_user_id_valid, &nm->mentions, detail,
                 sizeof(detail)))
        goto bad;
    if (strcmp(nm->type, "system") == 0) {
        snprintf(detail, sizeof(detail), "system messages are written by the service, not sent");
        goto bad;
    }
    media = strcmp(nm->type, "image") == 0 || strcmp(nm->type, "file") == 0;
    if (!media && strcmp(nm->type, "text") != 0) {
        snprintf(detail, sizeof(detail), "field 'type' must be 'text', 'image' or 'file'");
        goto bad;
    }
    if (media && cJSON_GetArraySize(nm->attachments) == 0) {
        snprintf(detail, sizeof(detail), "an %s message needs at least one media id in 'attachments'", nm->type);
        goto bad;
    }
    if (!media && nm->attachments) {
        snprintf(detail, sizeof(detail), "attachments belong to 'image' or 'file' messages");
        goto bad;
    }
    if (nm->text == NULL && !media) {
        snprintf(detail, sizeof(detail), "field 'text' is required");
        goto bad;
    }
    if (nm->text == NULL)
        nm->text = "";
    else if ((why = messaging_text_problem(nm->text)) != NULL) {
        snprintf(detail, sizeof(detail), "%s", why);
        goto bad;
    }
    if (nm->client_msg_id && !messaging_client_msg_id_valid(nm->client_msg_id)) {
        snprintf(detail, sizeof(detail), "field 'client_msg_id' must be 1..64 printable ASCII characters");
        goto bad;
    }
    if ((nm->reply_to && !cm_uuid_valid(nm->reply_to)) ||
        (nm->thread_root && !cm_uuid_valid(nm->thread_root))) {
        snprintf(detail, sizeof(detail), "fields 'reply_to' and 'thread_root' must be message ids");
        goto bad;
    }
    return CM_OK;
bad:
    cm_http_reply_error(req, CM_EINVAL, detail);
    return CM_EINVAL;
}

/* Checks what the message refers to: replies and thread roots in this conversation, mentioned
 * users members. Answers 400 itself. */
static cm_err check_references(cm_http_req *req, messaging_tx *tx, const messaging_new_message *nm)
{
    char detail[200];
    bson_t m;
    const cJSON *it;

    if (nm->reply_to) {
        if (messaging_message_find(tx->ctx, tx->cid, nm->reply_to, &m) != CM_OK) {
            cm_http_reply_error(req, CM_EINVAL, "field 'reply_to' names no message of this conversation");
            return CM_EINVAL;
        }
        bson_destroy(&m);
    }
    if (nm->thread_root) {
        if (messaging_message_find(tx->ctx, tx->cid, nm->thread_root, &m) != CM_OK) {
            cm_http_reply_error(req, CM_EINVAL, "field 'thread_root' names no message of this conversation");
            return CM_EINVAL;
        }
        int nested = cm_bson_str(&m, "thread_root", NULL) != NULL;
        bson_destroy(&m);
        if (nested) {
            cm_http_reply_error(req, CM_EINVAL, "field 'thread_root' must be the thread's first message, not a reply in it");
            return CM_EINVAL;
        }
    }
    if (nm->mentions)
        cJSON_ArrayForEach(it, nm->mentions)
        {
            if (messaging_member_find(tx->ctx, tx->cid, it->valuestring, &m) != CM_OK) {
                snprintf(detail, sizeof(detail), "mentioned user '%s' is not a member of the conversation", it->valuestring);
                cm_http_reply_error(req, CM_EINVAL, detail);
                return CM_EINVAL;
            }
            bson_destroy(&m);
        }
    return CM_OK;
}

/* Answers a retry: the original message with 200, or 409 when the body differs. */
static void reply_retry(cm_http_req *req, const bson_t *orig, const messaging_new_message *nm)
{
    if (strcmp(cm_bson_str(orig, "text", ""), nm->text) != 0 ||
        strcmp(cm_bson_str(orig, "type", ""), nm->type) != 0) {
        cm_http_reply_error(req, CM_ECONFLICT,
                            "client_msg_id was already used for a different message");
        return;
    }
    cm_http_reply_json(req, 200, messaging_message_json(orig));
}

/* POST /v1/conversations/{id}/messages */
void messaging_messages_send(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    cm_jwt_claims c;
    messaging_tx tx;
    messaging_new_message nm;
    messaging_rule_input in;
    char loc[160];
    bson_t doc;
    cJSON *body;
    cm_err rc;

    memset(&tx, 0, sizeof(tx));
    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (cm_http_json_body(req, &body) != CM_OK || read_send_body(req, body, &nm) != CM_OK)
        goto out;
    rc = messaging_tx_open(ctx, req, &c, cm_http_param(req, "id"), &tx);
    if (rc != CM_OK) {
        messaging_reply_open_error(req, rc);
        goto out;
    }
    messaging_rule_input_of(&tx, &c, &in);
    if (messaging_refuse_if_deleted(req, &tx) || messaging_refuse_unless(req, MSG_ACT_SEND, &in))
        goto out;
    /* The rate limit counts attempts, retries included: a retry is told apart only by the
     * insert below, which keeps the common path to a single write. */
    if (over_rate(req, ctx, &c) || check_references(req, &tx, &nm) != CM_OK)
        goto out;
    rc = messaging_message_insert(&tx, &nm, &doc);
    if (rc == CM_ECONFLICT) {
        /* A retry: the original, already logged (the repair of a crash is committed too). */
        if (messaging_tx_commit(&tx) == CM_OK)
            reply_retry(req, &doc, &nm);
        else
            cm_http_reply_error(req, CM_EIO, "the message could not be stored");
        bson_destroy(&doc);
        goto out;
    }
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the message could not be stored");
        goto out;
    }
    rc = messaging_tx_commit(&tx);
    if (rc != CM_OK) {
        /* The message and its event are stored; only the conversation's summary lags. The
         * client retries with its client_msg_id and gets the original. */
        cm_http_reply_error(req, rc, "the message was stored but the conversation was not updated; retry");
        bson_destroy(&doc);
        goto out;
    }
    snprintf(loc, sizeof(loc), "/v1/conversations/%s/messages/%s", tx.cid, cm_bson_str(&doc, "_id", ""));
    cm_http_add_header(req, "Location", loc);
    cm_http_reply_json(req, 201, messaging_message_json(&doc));
    bson_destroy(&doc);
out:
    messaging_tx_close(&tx);
}

/* Appends {_id: {$nin: [ids the member hid for themself]}} when there are any. */
static void exclude_hidden(bson_t *f, const bson_t *member)
{
    bson_iter_t it;
    bson_t nin;
    if (!bson_iter_init_find(&it, member, "hidden") || !BSON_ITER_HOLDS_ARRAY(&it))
        return;
    BSON_APPEND_DOCUMENT_BEGIN(f, "_id", &nin);
    bson_append_iter(&nin, "$nin", 4, &it);
    bson_append_document_end(f, &nin);
}

/* GET /v1/conversations/{id}/messages?direction=forward|backward&cursor=&limit=
 * forward: seq ascending after the cursor (from the start without one); backward: seq
 * descending before the cursor (from the newest without one). Messages the caller deleted for
 * themself are left out; messages deleted for everyone stay as tombstones (their seq kept). */
void messaging_messages_list(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    cm_jwt_claims c;
    const char *cid = cm_http_param(req, "id"), *dir = cm_http_query(req, "direction");
    const char *cursor = cm_http_query(req, "cursor");
    int forward, have = 0;
    long limit;
    int64_t cseq = 0;
    messaging_page p = {0};
    bson_t conv, me, f = BSON_INITIALIZER, range, sort = BSON_INITIALIZER;
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
    rc = messaging_conversation_for_member(ctx, c.tid, cid, c.sub, &conv, &me);
    if (rc != CM_OK) {
        messaging_reply_open_error(req, rc);
        goto out;
    }
    have = 1;
    BSON_APPEND_UTF8(&f, "conversation_id", cid);
    if (forward || cursor) {
        BSON_APPEND_DOCUMENT_BEGIN(&f, "seq", &range);
        BSON_APPEND_INT64(&range, forward ? "$gt" : "$lt", cseq);
        bson_append_document_end(&f, &range);
    }
    exclude_hidden(&f, &me);
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
    if (have) {
        bson_destroy(&conv);
        bson_destroy(&me);
    }
    bson_destroy(&f);
    bson_destroy(&sort);
}

/* GET /v1/conversations/{id}/messages/{message_id} */
void messaging_messages_get(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    cm_jwt_claims c;
    const char *cid = cm_http_param(req, "id");
    bson_t conv, me, m;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        return;
    rc = messaging_conversation_for_member(ctx, c.tid, cid, c.sub, &conv, &me);
    if (rc != CM_OK) {
        messaging_reply_open_error(req, rc);
        return;
    }
    rc = messaging_message_find(ctx, cid, cm_http_param(req, "message_id"), &m);
    if (rc != CM_OK)
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "no such message" : NULL);
    else {
        cm_http_reply_json(req, 200, messaging_message_json(&m));
        bson_destroy(&m);
    }
    bson_destroy(&conv);
    bson_destroy(&me);
}
