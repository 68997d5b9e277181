/* messaging_users.c - the consumer of the users topic and the block rule: blocks are mirrored
 * from user.blocked/user.unblocked into the blocks collection, user.deleted erases or
 * anonymises the user's messages. */
#include "messaging_users.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/config.h"
#include "common/json.h"
#include "common/log.h"

struct messaging_users {
    messaging_ctx *ctx;
    cm_kafka_consumer *consumer;
    pthread_t thread;
    int stop; /* set by messaging_users_stop, read by the thread (atomics) */
};

static void block_key(const char *tenant, const char *blocker, const char *blocked, char *out,
                      size_t n)
{
    snprintf(out, n, "%s/%s/%s", tenant, blocker, blocked);
}

/* 1 when `blocker` blocked `blocked`, 0 when not, -1 when the store failed. */
static int is_blocked(messaging_ctx *ctx, const char *tenant, const char *blocker,
                      const char *blocked)
{
    char key[400];
    bson_t f = BSON_INITIALIZER;
    int64_t n = 0;
    cm_err rc;

    block_key(tenant, blocker, blocked, key, sizeof(key));
    BSON_APPEND_UTF8(&f, "_id", key);
    BSON_APPEND_UTF8(&f, "state", "blocked");
    rc = cm_mongo_count(ctx->db, MSG_COLL_BLOCKS, &f, &n);
    bson_destroy(&f);
    return rc != CM_OK ? -1 : n > 0;
}

int messaging_users_refuse_direct(cm_http_req *req, messaging_ctx *ctx, const char *tenant,
                                  const char *sender, const char *other)
{
    int b = is_blocked(ctx, tenant, other, sender);
    if (b < 0)
        cm_http_reply_error(req, CM_EIO, "the block list cannot be read right now");
    else if (b)
        cm_http_reply_error(req, CM_EFORBIDDEN, "this user does not accept your messages");
    return b != 0;
}

int messaging_users_refuse_send(cm_http_req *req, messaging_ctx *ctx, const char *tenant,
                                const char *sender, const bson_t *conv)
{
    bson_iter_t it, arr;

    if (strcmp(cm_bson_str(conv, "type", ""), "direct") != 0)
        return 0;
    if (bson_iter_init_find(&it, conv, "members") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr))
        while (bson_iter_next(&arr))
            if (BSON_ITER_HOLDS_UTF8(&arr) && strcmp(bson_iter_utf8(&arr, NULL), sender) != 0)
                return messaging_users_refuse_direct(req, ctx, tenant, sender,
                                                     bson_iter_utf8(&arr, NULL));
    return 0;
}

/* --- the consumer -------------------------------------------------------------------------- */

/* Records the state a block event gives the pair, unless a later event already did: an
 * event produced again by the user service's outbox may arrive after a newer one. Events of
 * one blocker share a partition, and event ids (UUIDv7) sort by time. */
static cm_err on_block(messaging_ctx *ctx, const char *event_id, const char *tenant,
                       const char *blocker, const char *blocked, int add)
{
    char key[400];
    bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, set, cur;
    cm_err rc;

    block_key(tenant, blocker, blocked, key, sizeof(key));
    BSON_APPEND_UTF8(&f, "_id", key);
    rc = cm_mongo_find_one(ctx->db, MSG_COLL_BLOCKS, &f, NULL, &cur);
    if (rc == CM_OK) {
        int stale = strcmp(cm_bson_str(&cur, "event_id", ""), event_id) >= 0;
        bson_destroy(&cur);
        if (stale)
            goto out; /* a newer event (or this one again) already decided */
    } else if (rc != CM_ENOTFOUND) {
        goto out;
    }
    /* An unblock keeps a tombstone, so a late block event cannot resurrect the pair. */
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_UTF8(&set, "tenant", tenant);
    BSON_APPEND_UTF8(&set, "blocker", blocker);
    BSON_APPEND_UTF8(&set, "blocked", blocked);
    BSON_APPEND_UTF8(&set, "state", add ? "blocked" : "unblocked");
    BSON_APPEND_UTF8(&set, "event_id", event_id);
    BSON_APPEND_DATE_TIME(&set, "updated_at", cm_clock_now_ms());
    bson_append_document_end(&u, &set);
    rc = cm_mongo_update(ctx->db, MSG_COLL_BLOCKS, &f, &u, 1, 0, NULL);
out:
    bson_destroy(&f);
    bson_destroy(&u);
    return rc;
}

struct ids {
    char (*id)[64];
    int n, cap;
};

static int collect_id(const bson_t *doc, void *ud)
{
    struct ids *l = ud;
    if (l->n == l->cap)
        return 1;
    snprintf(l->id[l->n++], 64, "%s", cm_bson_str(doc, "_id", ""));
    return 0;
}

/* Anonymises one message: no text, no sender, and the client's id replaced by the message id
 * (the idempotency index is per sender: two erased senders may have used the same one). */
static cm_err anonymise(messaging_ctx *ctx, const char *mid)
{
    bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, set;
    cm_err rc;

    BSON_APPEND_UTF8(&f, "_id", mid);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_UTF8(&set, "text", "");
    BSON_APPEND_UTF8(&set, "sender_id", MSG_ERASED_SENDER);
    BSON_APPEND_UTF8(&set, "client_msg_id", mid);
    BSON_APPEND_BOOL(&set, "erased", 1);
    bson_append_document_end(&u, &set);
    rc = cm_mongo_update(ctx->db, MSG_COLL_MESSAGES, &f, &u, 0, 0, NULL);
    bson_destroy(&f);
    bson_destroy(&u);
    return rc;
}

static cm_err on_deleted(messaging_ctx *ctx, const char *tenant, const char *user, int delete)
{
    char ids[256][64];
    struct ids l = {.id = ids, .cap = 256};
    bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, set;
    cm_err rc = CM_OK;

    BSON_APPEND_UTF8(&f, "tenant", tenant);
    BSON_APPEND_UTF8(&f, "sender_id", user);
    if (delete) {
        rc = cm_mongo_delete(ctx->db, MSG_COLL_MESSAGES, &f, 1, NULL);
    } else {
        /* In batches: each anonymised message leaves the filter. */
        do {
            l.n = 0;
            rc = cm_mongo_find(ctx->db, MSG_COLL_MESSAGES, &f, NULL, collect_id, &l);
            for (int i = 0; rc == CM_OK && i < l.n; i++)
                rc = anonymise(ctx, ids[i]);
        } while (rc == CM_OK && l.n == l.cap);
    }
    /* The conversation list shows the last message: it goes the same way. */
    bson_reinit(&f);
    BSON_APPEND_UTF8(&f, "tenant", tenant);
    BSON_APPEND_UTF8(&f, "last_message.sender_id", user);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_UTF8(&set, "last_message.text", "");
    BSON_APPEND_UTF8(&set, "last_message.sender_id", MSG_ERASED_SENDER);
    bson_append_document_end(&u, &set);
    if (rc == CM_OK)
        rc = cm_mongo_update(ctx->db, MSG_COLL_CONVERSATIONS, &f, &u, 0, 1, NULL);
    /* And the user's blocks, both ways. */
    for (int side = 0; rc == CM_OK && side < 2; side++) {
        bson_reinit(&f);
        BSON_APPEND_UTF8(&f, "tenant", tenant);
        BSON_APPEND_UTF8(&f, side ? "blocked" : "blocker", user);
        rc = cm_mongo_delete(ctx->db, MSG_COLL_BLOCKS, &f, 1, NULL);
    }
    if (rc == CM_OK)
        rc = messaging_unread_forget(ctx, tenant, user);
    if (rc == CM_OK)
        cm_info("messages of %s/%s %s", tenant, user, delete ? "deleted" : "anonymised");
    bson_destroy(&f);
    bson_destroy(&u);
    return rc;
}

/* Sends an event this service cannot read to users.dlq, with the reason. */
static void dead_letter(messaging_ctx *ctx, const cm_kafka_record *rec, const char *why)
{
    /* x-consumer: the search service parks what it cannot read in the same topic */
    cm_kafka_header h[] = {{"x-error", why}, {"x-consumer", "messaging"}};
    cm_warn("users event at %d/%lld unreadable (%s): sent to users.dlq", rec->partition,
            (long long)rec->offset, why);
    if (cm_kafka_produce(ctx->kafka, "users.dlq", rec->key, rec->key_len, rec->value,
                         rec->value_len, h, 2, NULL) != CM_OK)
        cm_error("users.dlq: the unreadable event could not be parked");
}

static cm_err handle(const cm_kafka_record *rec, void *ud)
{
    messaging_users *mu = ud;
    char why[160];
    const char *type = NULL, *id = NULL, *tenant = NULL, *user = NULL, *other = NULL;
    const char *policy = NULL;
    cJSON *ev = NULL, *data;
    cm_err rc = CM_OK;

    if (cm_json_parse(rec->value, rec->value_len, 8, &ev, why, sizeof(why)) != CM_OK ||
        cm_json_string(ev, "type", 1, 1, 64, &type, why, sizeof(why)) != CM_OK ||
        cm_json_string(ev, "id", 1, 1, 64, &id, why, sizeof(why)) != CM_OK) {
        dead_letter(mu->ctx, rec, why);
        goto out;
    }
    if (strcmp(type, "user.blocked") != 0 && strcmp(type, "user.unblocked") != 0 &&
        strcmp(type, "user.deleted") != 0)
        goto out; /* someone else's concern */
    data = cJSON_GetObjectItemCaseSensitive(ev, "data");
    if (!cJSON_IsObject(data) ||
        cm_json_string(data, "tenant_id", 1, 1, 64, &tenant, why, sizeof(why)) ||
        cm_json_string(data, "user_id", 1, 1, 64, &user, why, sizeof(why)) ||
        cm_json_string(data, "blocked_id", strcmp(type, "user.deleted") != 0, 1, 64, &other, why,
                       sizeof(why)) ||
        cm_json_string(data, "erase_policy", 0, 1, 16, &policy, why, sizeof(why)) ||
        !cm_user_id_valid(user) || (other && !cm_user_id_valid(other)) || strchr(tenant, '/')) {
        dead_letter(mu->ctx, rec, cJSON_IsObject(data) ? why : "no data object");
        goto out;
    }
    if (strcmp(type, "user.deleted") == 0)
        rc = on_deleted(mu->ctx, tenant, user, policy && strcmp(policy, "delete") == 0);
    else
        rc = on_block(mu->ctx, id, tenant, user, other, strcmp(type, "user.blocked") == 0);
out:
    cJSON_Delete(ev);
    return rc; /* a store failure leaves the offset: the event comes again */
}

static void *run(void *arg)
{
    messaging_users *mu = arg;
    struct timespec pause = {1, 0};

    while (!__atomic_load_n(&mu->stop, __ATOMIC_ACQUIRE)) {
        cm_err rc = cm_kafka_consumer_poll(mu->consumer, 500, handle, mu);
        if (rc != CM_OK && rc != CM_EAGAIN)
            nanosleep(&pause, NULL); /* MongoDB or Kafka trouble: do not spin */
    }
    return NULL;
}

cm_err messaging_users_start(messaging_ctx *ctx, messaging_users **out)
{
    static const char *const topics[] = {"users"};
    messaging_users *mu = calloc(1, sizeof(*mu));
    cm_err rc;

    if (mu == NULL)
        return CM_ENOMEM;
    mu->ctx = ctx;
    /* Erasure looks a user's messages up by sender. */
    bson_t k = BSON_INITIALIZER;
    BSON_APPEND_INT32(&k, "tenant", 1);
    BSON_APPEND_INT32(&k, "sender_id", 1);
    rc = cm_mongo_create_index(ctx->db, MSG_COLL_MESSAGES, &k, "by_sender", 0);
    bson_destroy(&k);
    if (rc != CM_OK)
        cm_warn("index by_sender not created; erasures will scan");
    rc = cm_kafka_consumer_create(cm_config_str("KAFKA_BROKERS", "127.0.0.1:9092"),
                                  cm_config_str("KAFKA_TOPIC_PREFIX", ""),
                                  cm_config_str("USERS_CONSUMER_GROUP", "messaging-users"), topics,
                                  1, 1, &mu->consumer);
    if (rc == CM_OK && pthread_create(&mu->thread, NULL, run, mu) != 0)
        rc = CM_ENOMEM;
    if (rc != CM_OK) {
        cm_kafka_consumer_destroy(mu->consumer);
        free(mu);
        return rc;
    }
    *out = mu;
    return CM_OK;
}

void messaging_users_stop(messaging_users *mu)
{
    if (mu == NULL)
        return;
    __atomic_store_n(&mu->stop, 1, __ATOMIC_RELEASE);
    pthread_join(mu->thread, NULL);
    cm_kafka_consumer_destroy(mu->consumer);
    free(mu);
}
