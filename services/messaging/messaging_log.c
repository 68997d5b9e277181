/* messaging_log.c - the per-conversation event log and the write section that appends to it.
 *
 * Every change a member must see (a message, an edit, a reaction, a member joining, a read
 * receipt...) is written inside a write section on its conversation: the conversation's lock
 * is held, the state is changed, then the change is appended to the conversation's log under
 * the next log seq (eseq) and, after the conversation records its new log position, published
 * to Kafka. Under the lock, the log order is the order the state changed in, so a client that
 * applies the log in eseq order ends with the server's state. The eseq itself is allocated by
 * insertion under the unique index (conversation_id, eseq), like message seqs: even if a lease
 * ran out and two writers overlapped, two events can never share an eseq and none is skipped.
 * See README.md in this folder for the whole design. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/event.h"
#include "common/json.h"
#include "common/log.h"
#include "messaging.h"

#define APPEND_ATTEMPTS 16 /* inserts tried before giving up; overlap is rare, not busy */

struct messaging_appended {
    struct messaging_appended *next;
    bson_t *doc; /* heap: a bson_t inside a calloc'ed struct would be misaligned */
};

cm_err messaging_find_id(messaging_ctx *ctx, const char *coll, const char *id, bson_t *out)
{
    bson_t f = BSON_INITIALIZER;
    cm_err rc;
    BSON_APPEND_UTF8(&f, "_id", id);
    rc = cm_mongo_find_one(ctx->db, coll, &f, NULL, out);
    bson_destroy(&f);
    return rc;
}

cm_err messaging_update_id(messaging_ctx *ctx, const char *coll, const char *id,
                           const bson_t *update)
{
    bson_t f = BSON_INITIALIZER;
    cm_err rc;
    BSON_APPEND_UTF8(&f, "_id", id);
    rc = cm_mongo_update(ctx->db, coll, &f, update, 0, 0, NULL);
    bson_destroy(&f);
    return rc;
}

cm_err messaging_member_find(messaging_ctx *ctx, const char *cid, const char *uid, bson_t *out)
{
    char key[MSG_MEMBER_KEY_MAX];
    cm_err rc;

    messaging_member_key(cid, uid, key);
    rc = messaging_find_id(ctx, MSG_COLL_MEMBERS, key, out);
    if (rc == CM_OK && strcmp(cm_bson_str(out, "state", ""), "active") != 0) {
        bson_destroy(out);
        rc = CM_ENOTFOUND;
    }
    return rc;
}

cm_err messaging_message_find(messaging_ctx *ctx, const char *cid, const char *mid, bson_t *out)
{
    cm_err rc;
    if (mid == NULL || !cm_uuid_valid(mid))
        return CM_ENOTFOUND;
    rc = messaging_find_id(ctx, MSG_COLL_MESSAGES, mid, out);
    if (rc == CM_OK && strcmp(cm_bson_str(out, "conversation_id", ""), cid) != 0) {
        bson_destroy(out);
        rc = CM_ENOTFOUND;
    }
    return rc;
}

int messaging_is_moderator(const cm_jwt_claims *c)
{
    return cm_auth_has_role(c, "moderator") || cm_auth_has_role(c, "admin");
}

void messaging_reply_open_error(cm_http_req *req, cm_err rc)
{
    cm_http_reply_error(req, rc,
                        rc == CM_ENOTFOUND ? "no such conversation"
                        : rc == CM_EAGAIN  ? "the conversation is busy; retry"
                                           : NULL);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Takes the conversation's lease, waiting with a growing pause while another writer has it. */
static cm_err lock_conversation(messaging_tx *tx)
{
    char key[80];
    int64_t deadline = cm_clock_now_ms() + tx->ctx->lock_wait_ms;
    long pause = 1;

    if (cm_random_hex(tx->token, 16) != CM_OK)
        return CM_EIO;
    snprintf(key, sizeof(key), "lock:conv:%s", tx->cid);
    for (;;) {
        cm_err rc = cm_redis_lock(tx->ctx->redis, key, tx->token, tx->ctx->lock_ttl_ms);
        if (rc == CM_OK) {
            tx->locked = 1;
            return CM_OK;
        }
        if (rc != CM_ECONFLICT)
            return rc;
        if (cm_clock_now_ms() >= deadline)
            return CM_EAGAIN;
        sleep_ms(pause);
        if (pause < 16)
            pause *= 2;
    }
}

static void unlock_conversation(messaging_tx *tx)
{
    char key[80];
    if (!tx->locked)
        return;
    snprintf(key, sizeof(key), "lock:conv:%s", tx->cid);
    if (cm_redis_unlock(tx->ctx->redis, key, tx->token) == CM_ENOTFOUND)
        cm_warn("the write lock of conversation %s had expired before it was released; "
                "raise LOCK_TTL_MS",
                tx->cid);
    tx->locked = 0;
}

/* The highest eseq stored for a conversation (0 when none): the slow path after a conflict. */
static int64_t max_eseq(messaging_ctx *ctx, const char *cid)
{
    bson_t f = BSON_INITIALIZER, opts = BSON_INITIALIZER, sort, doc;
    int64_t eseq = 0;
    BSON_APPEND_UTF8(&f, "conversation_id", cid);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "eseq", -1);
    bson_append_document_end(&opts, &sort);
    if (cm_mongo_find_one(ctx->db, MSG_COLL_EVENTS, &f, &opts, &doc) == CM_OK) {
        eseq = cm_bson_int(&doc, "eseq", 0);
        bson_destroy(&doc);
    }
    bson_destroy(&f);
    bson_destroy(&opts);
    return eseq;
}

static cm_err open_section(messaging_ctx *ctx, cm_http_req *req, const cm_jwt_claims *c,
                           const char *cid, int need_member, messaging_tx *tx)
{
    cm_err rc;

    memset(tx, 0, sizeof(*tx));
    tx->ctx = ctx;
    tx->tenant = c->tid;
    tx->user = c->sub;
    tx->request_id = req ? cm_http_request_id(req) : "";
    if (cid == NULL || !cm_uuid_valid(cid))
        return CM_ENOTFOUND;
    memcpy(tx->cid, cid, CM_UUID_STRLEN);
    rc = lock_conversation(tx);
    if (rc != CM_OK)
        goto fail;
    rc = cm_mongo_find_owned(ctx->db, MSG_COLL_CONVERSATIONS, cid, c->tid, NULL, &tx->conv);
    if (rc != CM_OK)
        goto fail;
    tx->have_conv = 1;
    rc = messaging_member_find(ctx, cid, c->sub, &tx->me);
    if (rc == CM_OK) {
        tx->have_me = 1;
        tx->role = messaging_role_parse(cm_bson_str(&tx->me, "role", ""));
    } else if (rc != CM_ENOTFOUND || need_member) {
        goto fail;
    } else {
        bson_init(&tx->me); /* a moderator's section: no record, no role */
        tx->have_me = 1;
    }
    tx->last_eseq = cm_bson_int(&tx->conv, "last_eseq", 0);
    tx->last_seq = cm_bson_int(&tx->conv, "last_seq", 0);
    tx->opened_seq = tx->last_seq;
    tx->now = cm_clock_now_ms();
    bson_init(&tx->set);
    return CM_OK;
fail:
    messaging_tx_close(tx);
    return rc;
}

void messaging_tx_init_new(messaging_tx *tx, messaging_ctx *ctx, const cm_jwt_claims *c,
                           const char *request_id, const char *cid, int64_t now)
{
    memset(tx, 0, sizeof(*tx));
    tx->ctx = ctx;
    tx->tenant = c->tid;
    tx->user = c->sub;
    tx->request_id = request_id;
    snprintf(tx->cid, sizeof(tx->cid), "%s", cid);
    tx->now = now;
}

void messaging_tx_conv_view(messaging_tx *tx, bson_t *out)
{
    static const char *const written[] = {"last_seq", "last_message", "last_activity_at", NULL};
    bson_iter_t it, s;
    int skip;

    bson_init(out);
    if (bson_iter_init(&it, &tx->conv))
        while (bson_iter_next(&it)) {
            skip = bson_iter_init_find(&s, &tx->set, bson_iter_key(&it));
            for (int i = 0; written[i] && !skip; i++)
                skip = tx->have_last_message && strcmp(bson_iter_key(&it), written[i]) == 0 &&
                       (i < 2 || tx->activity);
            if (!skip)
                bson_append_iter(out, NULL, 0, &it);
        }
    if (bson_iter_init(&it, &tx->set))
        while (bson_iter_next(&it))
            bson_append_iter(out, NULL, 0, &it);
    /* What the commit will write from the messages inserted in this section. */
    if (tx->have_last_message) {
        BSON_APPEND_INT64(out, "last_seq", tx->last_seq);
        BSON_APPEND_DOCUMENT(out, "last_message", &tx->last_message);
        if (tx->activity)
            BSON_APPEND_DATE_TIME(out, "last_activity_at", tx->now);
    }
}

void messaging_tx_message_changed(messaging_tx *tx, const bson_t *msg)
{
    if (cm_bson_int(msg, "seq", 0) != tx->last_seq)
        return;
    if (tx->have_last_message)
        bson_destroy(&tx->last_message);
    bson_copy_to(msg, &tx->last_message);
    tx->have_last_message = 1;
}

cm_err messaging_tx_open(messaging_ctx *ctx, cm_http_req *req, const cm_jwt_claims *c,
                         const char *cid, messaging_tx *tx)
{
    return open_section(ctx, req, c, cid, 1, tx);
}

cm_err messaging_tx_open_moderator(messaging_ctx *ctx, cm_http_req *req, const cm_jwt_claims *c,
                                   const char *cid, messaging_tx *tx)
{
    return open_section(ctx, req, c, cid, 0, tx);
}

void messaging_tx_me_update(messaging_tx *tx, const bson_t *fields)
{
    bson_t merged = BSON_INITIALIZER;
    bson_iter_t it;
    if (bson_iter_init(&it, &tx->me))
        while (bson_iter_next(&it))
            if (!bson_has_field(fields, bson_iter_key(&it)))
                bson_append_iter(&merged, NULL, 0, &it);
    if (bson_iter_init(&it, fields))
        while (bson_iter_next(&it))
            bson_append_iter(&merged, NULL, 0, &it);
    bson_destroy(&tx->me);
    bson_copy_to(&merged, &tx->me);
    bson_destroy(&merged);
}

cm_err messaging_tx_set_me(messaging_tx *tx, const bson_t *fields, const char *type,
                           const char *audience, cJSON *data)
{
    char key[MSG_MEMBER_KEY_MAX];
    bson_t u = BSON_INITIALIZER;
    cm_err rc;

    messaging_member_key(tx->cid, tx->user, key);
    BSON_APPEND_DOCUMENT(&u, "$set", fields);
    rc = messaging_update_id(tx->ctx, MSG_COLL_MEMBERS, key, &u);
    if (rc == CM_OK && (bson_has_field(fields, "read_seq") || bson_has_field(fields, "muted_until"))) {
        int64_t rs = bson_has_field(fields, "read_seq") ? cm_bson_int(fields, "read_seq", 0)
                                                       : cm_bson_int(&tx->me, "read_seq", 0);
        int64_t muted = bson_has_field(fields, "muted_until") ? cm_bson_int(fields, "muted_until", 0)
                                                             : cm_bson_int(&tx->me, "muted_until", 0);
        messaging_unread_note(tx, tx->user, rs, messaging_unread_mentions(&tx->me, rs), muted, 0);
    }
    bson_destroy(&u);
    if (rc != CM_OK) {
        cJSON_Delete(data);
        return rc;
    }
    if ((rc = messaging_tx_append(tx, type, NULL, audience, data, NULL)) != CM_OK ||
        (rc = messaging_tx_commit(tx)) != CM_OK)
        return rc;
    messaging_tx_me_update(tx, fields);
    return CM_OK;
}

void messaging_reply_conversation(cm_http_req *req, messaging_tx *tx)
{
    bson_t view;
    cJSON *c;
    messaging_tx_conv_view(tx, &view);
    c = messaging_conversation_json(&view);
    messaging_conversation_add_mine(c, &view, &tx->me, tx->now);
    bson_destroy(&view);
    cm_http_reply_json(req, 200, c);
}

cJSON *messaging_conversation_event(messaging_tx *tx, cJSON *changed)
{
    bson_t view;
    cJSON *data;
    messaging_tx_conv_view(tx, &view);
    data = messaging_conversation_json(&view);
    bson_destroy(&view);
    if (changed)
        cJSON_AddItemToObject(data, "changed", changed);
    cJSON_AddStringToObject(data, "by", tx->user);
    return data;
}

cm_err messaging_member_of(cm_http_req *req, messaging_ctx *ctx, const cm_jwt_claims *c,
                           bson_t *conv, bson_t *me)
{
    bson_t cv, m;
    cm_err rc = messaging_conversation_for_member(ctx, c->tid, cm_http_param(req, "id"), c->sub,
                                                  &cv, &m);
    if (rc != CM_OK) {
        messaging_reply_open_error(req, rc);
        return rc;
    }
    if (conv)
        bson_steal(conv, &cv);
    else
        bson_destroy(&cv);
    if (me)
        bson_steal(me, &m);
    else
        bson_destroy(&m);
    return CM_OK;
}

cm_err messaging_member_message(cm_http_req *req, messaging_ctx *ctx, const cm_jwt_claims *c,
                                bson_t *me, bson_t *msg)
{
    cm_err rc = messaging_member_of(req, ctx, c, NULL, me);
    if (rc != CM_OK)
        return rc;
    rc = messaging_message_find(ctx, cm_http_param(req, "id"), cm_http_param(req, "message_id"), msg);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, rc == CM_ENOTFOUND ? "no such message" : NULL);
        if (me)
            bson_destroy(me);
    }
    return rc;
}

bson_t *messaging_tx_conv_set(messaging_tx *tx)
{
    tx->nset++;
    return &tx->set;
}

cm_err messaging_tx_append(messaging_tx *tx, const char *type, const char *event_id,
                           const char *audience, cJSON *data, int64_t *eseq)
{
    char id[CM_UUID_STRLEN];
    char *json = cm_json_print(data);
    int64_t next = tx->last_eseq + 1;
    struct messaging_appended *a = NULL;
    cm_err rc = CM_ENOMEM;

    cJSON_Delete(data);
    if (json == NULL)
        return CM_ENOMEM;
    if (event_id == NULL) {
        if (cm_uuid_v7(id) != CM_OK) {
            rc = CM_EIO;
            goto out;
        }
        event_id = id;
    }
    a = calloc(1, sizeof(*a));
    if (a == NULL)
        goto out;
    for (int attempt = 0;; attempt++) {
        bson_t existing;
        a->doc = bson_new();
        BSON_APPEND_UTF8(a->doc, "_id", event_id);
        BSON_APPEND_UTF8(a->doc, "tenant", tx->tenant);
        BSON_APPEND_UTF8(a->doc, "conversation_id", tx->cid);
        BSON_APPEND_INT64(a->doc, "eseq", next);
        BSON_APPEND_UTF8(a->doc, "type", type);
        if (audience)
            BSON_APPEND_UTF8(a->doc, "audience", audience);
        BSON_APPEND_UTF8(a->doc, "data", json);
        BSON_APPEND_DATE_TIME(a->doc, "created_at", tx->now);
        BSON_APPEND_UTF8(a->doc, "request_id", tx->request_id);
        BSON_APPEND_BOOL(a->doc, "published", false);
        rc = cm_mongo_insert(tx->ctx->db, MSG_COLL_EVENTS, a->doc);
        if (rc == CM_OK)
            break;
        bson_destroy(a->doc);
        a->doc = NULL;
        if (rc != CM_ECONFLICT)
            goto out;
        /* Either this very event is already in the log (a repair), or the eseq was taken:
         * by a writer whose lease overlapped ours, or by one that died before its commit. */
        if (messaging_find_id(tx->ctx, MSG_COLL_EVENTS, event_id, &existing) == CM_OK) {
            bson_destroy(&existing);
            free(a);
            a = NULL;
            rc = CM_OK;
            goto out;
        }
        if (attempt + 1 == APPEND_ATTEMPTS) {
            rc = CM_EAGAIN;
            goto out;
        }
        next = max_eseq(tx->ctx, tx->cid) + 1;
    }
    tx->last_eseq = next;
    if (eseq)
        *eseq = next;
    a->next = tx->appended;
    tx->appended = a;
    a = NULL;
out:
    free(a);
    free(json);
    return rc;
}

cm_err messaging_tx_commit(messaging_tx *tx)
{
    bson_t u = BSON_INITIALIZER, set;
    bson_iter_t it;
    cm_err rc;

    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_INT64(&set, "last_eseq", tx->last_eseq);
    BSON_APPEND_DATE_TIME(&set, "last_event_at", tx->now);
    BSON_APPEND_INT64(&set, "last_seq", tx->last_seq);
    if (tx->have_last_message)
        BSON_APPEND_DOCUMENT(&set, "last_message", &tx->last_message);
    if (tx->activity)
        BSON_APPEND_DATE_TIME(&set, "last_activity_at", tx->now);
    if (bson_iter_init(&it, &tx->set))
        while (bson_iter_next(&it))
            if (!bson_has_field(&set, bson_iter_key(&it)))
                bson_append_iter(&set, NULL, 0, &it);
    bson_append_document_end(&u, &set);
    rc = messaging_update_id(tx->ctx, MSG_COLL_CONVERSATIONS, tx->cid, &u);
    bson_destroy(&u);
    unlock_conversation(tx);
    messaging_tx_publish(tx);
    if (rc == CM_OK)
        messaging_unread_apply(tx, tx->opened_seq); /* versioned: needs no lock */
    return rc;
}

void messaging_tx_publish(messaging_tx *tx)
{
    struct messaging_appended *rev = NULL;

    /* Publish in log order (the list was built newest first). */
    while (tx->appended) {
        struct messaging_appended *a = tx->appended;
        tx->appended = a->next;
        a->next = rev;
        rev = a;
    }
    while (rev) {
        struct messaging_appended *a = rev;
        rev = a->next;
        messaging_publish_event(tx->ctx, a->doc);
        bson_destroy(a->doc);
        free(a);
    }
}

void messaging_tx_close(messaging_tx *tx)
{
    if (tx->ctx == NULL)
        return;
    unlock_conversation(tx);
    /* Appended but not committed (an error after the append): the sweeper publishes them. */
    while (tx->appended) {
        struct messaging_appended *a = tx->appended;
        tx->appended = a->next;
        bson_destroy(a->doc);
        free(a);
    }
    if (tx->have_conv)
        bson_destroy(&tx->conv);
    if (tx->have_me)
        bson_destroy(&tx->me);
    if (tx->have_conv && tx->have_me)
        bson_destroy(&tx->set); /* initialised with them (open_section) */
    if (tx->have_last_message)
        bson_destroy(&tx->last_message);
    messaging_unread_free(tx);
    tx->have_conv = tx->have_me = tx->have_last_message = 0;
    tx->ctx = NULL;
}

const char *messaging_event_topic(const char *type)
{
    if (strcmp(type, "message.delivered") == 0)
        return "conversations";
    if (strncmp(type, "message.", 8) == 0 || strncmp(type, "reaction.", 9) == 0)
        return "messages";
    return "conversations";
}

cm_err messaging_event_envelope(const bson_t *event, char **out)
{
    const char *json = cm_bson_str(event, "data", "{}");
    cJSON *data = cJSON_Parse(json), *ext = cJSON_CreateObject();
    const char *audience = cm_bson_str(event, "audience", NULL);

    if (data == NULL || ext == NULL) {
        cJSON_Delete(data);
        cJSON_Delete(ext);
        return CM_ENOMEM;
    }
    /* The log seq travels with the event, so the WebSocket can advance a sync cursor. */
    cJSON_AddNumberToObject(ext, "eseq", (double)cm_bson_int(event, "eseq", 0));
    if (audience)
        cJSON_AddStringToObject(ext, "audience", audience);
    return cm_event_build_ext(cm_bson_str(event, "_id", ""), cm_bson_str(event, "type", ""),
                              "/messaging", cm_bson_str(event, "conversation_id", ""),
                              cm_bson_str(event, "tenant", ""), cm_bson_int(event, "created_at", 0),
                              data, ext, out);
}
