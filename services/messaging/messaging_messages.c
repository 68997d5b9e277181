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
#include "messaging_media.h"
#include "messaging_users.h"

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

/* A reply in a thread: the root counts it and remembers when the last one came, and the root's
 * new state is logged (message.updated), so every member's copy of the root follows, also one
 * who hid the reply. */
static cm_err count_thread_reply(messaging_tx *tx, const char *root_id)
{
    bson_t root, after, u = BSON_INITIALIZER, set;
    cm_err rc = messaging_message_find(tx->ctx, tx->cid, root_id, &root);
    if (rc != CM_OK)
        return rc;
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_INT64(&set, "reply_count", cm_bson_int(&root, "reply_count", 0) + 1);
    BSON_APPEND_DATE_TIME(&set, "last_reply_at", tx->now);
    bson_append_document_end(&u, &set);
    rc = messaging_message_update(tx, root_id, &u, &after);
    if (rc == CM_OK) {
        rc = messaging_message_logged(tx, "message.updated", &after);
        bson_destroy(&after);
    }
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
    if (rc == CM_OK) {
        int64_t rs = cm_bson_int(&m, "read_seq", 0), unread = 0;
        for (int i = 0; i < n; i++)
            unread += keep[i] > rs;
        messaging_unread_note(tx, uid, -1, unread, -1, 0);
    }
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
    if (rc == CM_OK) /* every mention is at or below the sender's own message */
        messaging_unread_note(tx, tx->user, seq, 0, -1, 0);
    return rc;
}

/* A message in a conversation the housekeeping archived brings it back for everyone. */
static cm_err unarchive(messaging_tx *tx, const bson_t *msg, int64_t seq)
{
    BSON_APPEND_BOOL(messaging_tx_conv_set(tx), "auto_archived", false);
    tx->last_seq = seq; /* the snapshot shows the message that woke it up */
    if (tx->have_last_message)
        bson_destroy(&tx->last_message);
    bson_copy_to(msg, &tx->last_message);
    tx->have_last_message = 1;
    tx->activity = 1;
    return messaging_tx_append(
        tx, "conversation.updated", NULL, NULL,
        messaging_conversation_event(tx, cJSON_CreateStringArray((const char *[]){"auto_archived"}, 1)),
        NULL);
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
        if (nm->sent_text) /* what a retry of this message will send again */
            BSON_APPEND_UTF8(&doc, "sent_text", nm->sent_text);
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
    if (rc == CM_OK && cm_bson_bool(&tx->conv, "auto_archived", 0) && !bson_has_field(&tx->set, "auto_archived"))
        rc = unarchive(tx, &doc, seq);
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
    tx->activity = 1;
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

/* Applies the per-user send limit of `max` a minute (the tenant's send_rate_per_min; Redis,
 * fixed one-minute window, shared by instances).
 * Redis being down lets the send through: availability over the limit, logged. */
static int over_rate(cm_http_req *req, messaging_ctx *ctx, const cm_jwt_claims *c, long max)
{
    char key[300], retry[24], lim[24], rem[24];
    int64_t count = 0, ms = 0;

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
    snprintf(key, sizeof(key), "at most %ld messages per minute may be sent (send_rate_per_min)", max);
    cm_http_reply_error(req, CM_ELIMIT, key);
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

/* Validates a send body into `nm` (texts of at most `text_max` characters); answers 400 itself
 * and returns non-CM_OK on bad input. */
static cm_err read_send_body(cm_http_req *req, const cJSON *body, long text_max,
                             messaging_new_message *nm)
{
    static const char *const allowed[] = {"text",     "client_msg_id", "type",        "attachments",
                                          "mentions", "reply_to",      "thread_root", NULL};
    char detail[256];
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
    else if (messaging_text_problem(nm->text, text_max, detail, sizeof(detail)))
        goto bad;
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

/* Asks the media service whether each attachment may be sent by the caller: it exists in the
 * tenant, the caller uploaded it, and it is processed. Runs before the conversation's lock (an
 * HTTP call). Answers the problem itself. */
static cm_err check_attachments(cm_http_req *req, messaging_ctx *ctx, const cm_jwt_claims *c,
                                const messaging_new_message *nm)
{
    char why[200], detail[320];
    const cJSON *it;
    cJSON_ArrayForEach(it, nm->attachments)
    {
        cm_err rc = messaging_media_attachable(ctx->media_url, c->tid, c->sub, it->valuestring,
                                               ctx->media_timeout_ms, why, sizeof(why));
        if (rc == CM_OK)
            continue;
        if (rc == CM_ENOTFOUND || rc == CM_EINVAL)
            snprintf(detail, sizeof(detail), "attachment '%s' is no media object of this tenant", it->valuestring);
        else if (rc == CM_ECONFLICT)
            snprintf(detail, sizeof(detail), "attachment '%s' cannot be sent: %s", it->valuestring, why);
        else
            snprintf(detail, sizeof(detail), "the media service could not check attachment '%s'; retry", it->valuestring);
        cm_http_reply_error(req, rc == CM_ENOTFOUND ? CM_EINVAL : rc == CM_ETIMEOUT ? CM_EAGAIN : rc, detail);
        return rc;
    }
    return CM_OK;
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
    const char *sent = cm_bson_str(orig, "sent_text", cm_bson_str(orig, "text", ""));
    if (strcmp(sent, nm->sent_text ? nm->sent_text : nm->text) != 0 ||
        strcmp(cm_bson_str(orig, "type", ""), nm->type) != 0) {
        cm_http_reply_error(req, CM_ECONFLICT,
                            "client_msg_id was already used for a different message");
        return;
    }
    cm_http_reply_json(req, 200, messaging_message_json(orig));
}

/* POST /v1/conversations/{id}/messages
 * validate -> membership and permission -> moderation (bans, limits, filters, the tenant's
 * hook) -> rate limit, references -> seq by insertion, log entry -> commit -> reply. All in
 * the conversation's write section, except a tenant's hook: with one, membership and the
 * moderation run before the lock is taken, so a slow hook never holds the conversation. */
void messaging_messages_send(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    cm_jwt_claims c;
    messaging_tx tx;
    messaging_new_message nm;
    messaging_rule_input in;
    messaging_limits lim;
    char loc[160], *moderated = NULL;
    const char *cid = cm_http_param(req, "id");
    bson_t doc, conv, me;
    cJSON *body;
    int hook;
    cm_err rc;

    memset(&tx, 0, sizeof(tx));
    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    messaging_limits_for(ctx, c.tid, &lim);
    if (cm_http_json_body(req, &body) != CM_OK ||
        read_send_body(req, body, lim.text_max, &nm) != CM_OK ||
        (nm.attachments && check_attachments(req, ctx, &c, &nm) != CM_OK))
        goto out;
    hook = messaging_moderation_has_hook(ctx, c.tid);
    if (hook) {
        /* The tenant's hook may take its whole time budget: moderate before the lock. */
        rc = messaging_conversation_for_member(ctx, c.tid, cid, c.sub, &conv, &me);
        if (rc != CM_OK) {
            messaging_reply_open_error(req, rc);
            goto out;
        }
        rc = messaging_moderate_send(req, ctx, &c, &conv, &me, &nm, &moderated);
        bson_destroy(&conv);
        bson_destroy(&me);
        if (rc != CM_OK)
            goto out;
    }
    rc = messaging_tx_open(ctx, req, &c, cid, &tx);
    if (rc != CM_OK) {
        messaging_reply_open_error(req, rc);
        goto out;
    }
    messaging_rule_input_of(&tx, &c, &in);
    if (messaging_refuse_if_deleted(req, &tx) || messaging_refuse_unless(req, MSG_ACT_SEND, &in) ||
        messaging_users_refuse_send(req, ctx, c.tid, c.sub, &tx.conv))
        goto out;
    /* Without a hook every check is quick: done here, on what the section already read. */
    if (!hook && messaging_moderate_send(req, ctx, &c, &tx.conv, &tx.me, &nm, &moderated) != CM_OK)
        goto out;
    if (moderated) {
        nm.sent_text = nm.text;
        nm.text = moderated;
    }
    /* The rate limit counts attempts, retries included: a retry is told apart only by the
     * insert below, which keeps the common path to a single write. */
    if (over_rate(req, ctx, &c, lim.send_rate_per_min) || check_references(req, &tx, &nm) != CM_OK)
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
    free(moderated);
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
    messaging_mark_my_reactions(ctx, c.sub, p.items);
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
    bson_t m;
    cJSON *j;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK ||
        messaging_member_message(req, ctx, &c, NULL, &m) != CM_OK)
        return;
    j = messaging_message_json(&m);
    messaging_mark_my_reactions(ctx, c.sub, j);
    cm_http_reply_json(req, 200, j);
    bson_destroy(&m);
}

/* GET /v1/conversations/{id}/messages/{message_id}/thread?cursor=&limit= : the replies in the
 * thread the message starts, oldest first. */
void messaging_messages_thread(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    cm_jwt_claims c;
    const char *cid = cm_http_param(req, "id"), *cursor = cm_http_query(req, "cursor");
    messaging_page p = {0};
    bson_t conv, me, root, f = BSON_INITIALIZER, range, sort = BSON_INITIALIZER;
    int64_t cseq = 0;
    char next[24];
    long limit;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (cursor && *cursor == '\0')
        cursor = NULL;
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
    bson_destroy(&conv);
    rc = messaging_message_find(ctx, cid, cm_http_param(req, "message_id"), &root);
    if (rc != CM_OK) {
        bson_destroy(&me);
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "no such message" : NULL);
        goto out;
    }
    BSON_APPEND_UTF8(&f, "conversation_id", cid);
    BSON_APPEND_UTF8(&f, "thread_root", cm_bson_str(&root, "_id", ""));
    BSON_APPEND_DOCUMENT_BEGIN(&f, "seq", &range);
    BSON_APPEND_INT64(&range, "$gt", cseq);
    bson_append_document_end(&f, &range);
    exclude_hidden(&f, &me);
    bson_destroy(&me);
    bson_destroy(&root);
    BSON_APPEND_INT32(&sort, "seq", 1);
    rc = messaging_page_find(ctx->db, MSG_COLL_MESSAGES, &f, &sort, limit, messaging_message_json, &p);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the thread could not be listed");
        goto out;
    }
    messaging_mark_my_reactions(ctx, c.sub, p.items);
    if (p.more)
        snprintf(next, sizeof(next), "%lld", (long long)cm_bson_int(&p.last, "seq", 0));
    cm_http_reply_page(req, p.items, p.more ? next : NULL);
    p.items = NULL;
out:
    messaging_page_cleanup(&p);
    bson_destroy(&f);
    bson_destroy(&sort);
}

/* Reads an array of 1..max distinct UUIDs; answers 400 with `what` in the detail otherwise. */
static int uuid_list(cm_http_req *req, const cJSON *body, const char *key, int max,
                     const char *what, const char **out, int *n)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(body, key), *it;
    char detail[160];
    *n = 0;
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) == 0) {
        snprintf(detail, sizeof(detail), "field '%s' must be a non-empty array of ids", key);
        cm_http_reply_error(req, CM_EINVAL, detail);
        return 0;
    }
    if (cJSON_GetArraySize(arr) > max) {
        snprintf(detail, sizeof(detail), "at most %d %s can be forwarded at once", max, what);
        cm_http_reply_error(req, CM_EINVAL, detail);
        return 0;
    }
    cJSON_ArrayForEach(it, arr)
    {
        if (!cJSON_IsString(it) || !cm_uuid_valid(it->valuestring)) {
            snprintf(detail, sizeof(detail), "field '%s' must hold ids", key);
            cm_http_reply_error(req, CM_EINVAL, detail);
            return 0;
        }
        for (int i = 0; i < *n; i++)
            if (strcmp(out[i], it->valuestring) == 0) {
                snprintf(detail, sizeof(detail), "field '%s' names '%s' twice", key, it->valuestring);
                cm_http_reply_error(req, CM_EINVAL, detail);
                return 0;
            }
        out[(*n)++] = it->valuestring;
    }
    return 1;
}

/* Copies the forwarded messages into one target conversation. */
static cm_err forward_into(cm_http_req *req, messaging_ctx *ctx, const cm_jwt_claims *c,
                           const char *target, bson_t *const *msgs, int n, const char *source,
                           cJSON *out)
{
    messaging_tx tx;
    messaging_rule_input in;
    cJSON *list;
    cm_err rc = messaging_tx_open(ctx, req, c, target, &tx);

    if (rc != CM_OK)
        return rc;
    messaging_rule_input_of(&tx, c, &in);
    if (cm_bson_bool(&tx.conv, "deleted", 0)) {
        rc = CM_ECONFLICT;
        goto out;
    }
    if (messaging_rule(MSG_ACT_SEND, &in, &(int){0}) != NULL) {
        rc = CM_EFORBIDDEN;
        goto out;
    }
    list = cJSON_CreateArray();
    for (int i = 0; i < n && rc == CM_OK; i++) {
        messaging_new_message nm = {0};
        bson_t from = BSON_INITIALIZER, doc;
        cJSON *atts = messaging_bson_strings(msgs[i], "attachments");
        /* A forwarded forward still names where the message was first written. */
        BSON_APPEND_UTF8(&from, "conversation_id",
                         cm_bson_str(msgs[i], "forwarded_from.conversation_id", source));
        BSON_APPEND_UTF8(&from, "message_id",
                         cm_bson_str(msgs[i], "forwarded_from.message_id", cm_bson_str(msgs[i], "_id", "")));
        BSON_APPEND_UTF8(&from, "sender_id",
                         cm_bson_str(msgs[i], "forwarded_from.sender_id", cm_bson_str(msgs[i], "sender_id", "")));
        nm.type = cm_bson_str(msgs[i], "type", "text");
        nm.text = cm_bson_str(msgs[i], "text", "");
        nm.attachments = cJSON_GetArraySize(atts) ? atts : NULL;
        nm.forwarded_from = &from;
        rc = messaging_message_insert(&tx, &nm, &doc);
        if (rc == CM_OK) {
            cJSON_AddItemToArray(list, messaging_message_json(&doc));
            bson_destroy(&doc);
        }
        bson_destroy(&from);
        cJSON_Delete(atts);
    }
    if (rc == CM_OK)
        rc = messaging_tx_commit(&tx);
    if (rc == CM_OK) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "conversation_id", target);
        cJSON_AddItemToObject(o, "messages", list);
        cJSON_AddItemToArray(out, o);
    } else {
        cJSON_Delete(list);
    }
out:
    messaging_tx_close(&tx);
    return rc;
}

/* POST /v1/conversations/{id}/forward {"message_ids": [...], "to": [...]}: copies up to 10
 * messages of this conversation into up to 5 conversations the caller may post in. */
void messaging_messages_forward(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    static const char *const allowed[] = {"message_ids", "to", NULL};
    cm_jwt_claims c;
    messaging_limits lim;
    const char *cid = cm_http_param(req, "id");
    const char *mids[MSG_FORWARD_MESSAGES_MAX], *targets[MSG_FORWARD_TARGETS_MAX];
    bson_t *msgs[MSG_FORWARD_MESSAGES_MAX] = {0};
    char detail[200];
    int nm = 0, nt = 0;
    bson_t conv, me;
    cJSON *body, *out = NULL;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        return;
    if (cm_http_json_body(req, &body) != CM_OK)
        return;
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        return;
    }
    if (!uuid_list(req, body, "message_ids", MSG_FORWARD_MESSAGES_MAX, "messages", mids, &nm) ||
        !uuid_list(req, body, "to", MSG_FORWARD_TARGETS_MAX, "target conversations", targets, &nt))
        return;
    if (messaging_member_of(req, ctx, &c, NULL, NULL) != CM_OK)
        return;
    for (int i = 0; i < nm; i++) {
        bson_t m;
        if (messaging_message_find(ctx, cid, mids[i], &m) != CM_OK) {
            snprintf(detail, sizeof(detail), "message '%s' is not in this conversation", mids[i]);
            cm_http_reply_error(req, CM_EINVAL, detail);
            goto done;
        }
        msgs[i] = bson_copy(&m);
        bson_destroy(&m);
        if (cm_bson_bool(msgs[i], "deleted", 0) || strcmp(cm_bson_str(msgs[i], "type", ""), "system") == 0) {
            snprintf(detail, sizeof(detail), "message '%s' cannot be forwarded (deleted or a system message)", mids[i]);
            cm_http_reply_error(req, CM_EINVAL, detail);
            goto done;
        }
    }
    /* Every target first, so that a refusal changes nothing. */
    for (int i = 0; i < nt; i++) {
        if (messaging_conversation_for_member(ctx, c.tid, targets[i], c.sub, &conv, &me) != CM_OK) {
            snprintf(detail, sizeof(detail), "no such conversation '%s'", targets[i]);
            cm_http_reply_error(req, CM_ENOTFOUND, detail);
            goto done;
        }
        bson_destroy(&conv);
        bson_destroy(&me);
    }
    messaging_limits_for(ctx, c.tid, &lim);
    if (over_rate(req, ctx, &c, lim.send_rate_per_min))
        goto done;
    out = cJSON_CreateArray();
    for (int i = 0; i < nt; i++) {
        rc = forward_into(req, ctx, &c, targets[i], msgs, nm, cid, out);
        if (rc != CM_OK) {
            snprintf(detail, sizeof(detail),
                     rc == CM_EFORBIDDEN ? "the caller may not post in conversation '%s'"
                     : rc == CM_ECONFLICT ? "conversation '%s' was deleted by its owner"
                                          : "forwarding into '%s' failed; the targets before it were done",
                     targets[i]);
            cm_http_reply_error(req, rc, detail);
            goto done;
        }
    }
    body = cJSON_CreateObject();
    cJSON_AddItemToObject(body, "forwarded", out);
    out = NULL;
    cm_http_reply_json(req, 201, body);
done:
    cJSON_Delete(out);
    for (int i = 0; i < nm; i++)
        if (msgs[i])
            bson_destroy(msgs[i]);
}
