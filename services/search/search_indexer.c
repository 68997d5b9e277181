/* search_indexer.c - the Kafka consumer thread that builds the index from the topics
 * `messages`, `conversations` and `users`: records are taken in batches (what has arrived, up to
 * BATCH_MAX), applied in one transaction per tenant, and the batch's offsets are stored only
 * after every transaction committed (common/kafka.h), so a crash replays rather than loses. Records that can never be applied (not JSON, schema broken) go to
 * <topic>.dlq with the reason in the header "x-error"; SQLite failures are retried. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "search.h"

struct search_indexer {
    search_ctx *ctx;
    cm_kafka_consumer *consumer; /* owned by kw; read for the lag */
    cm_kafka_worker *kw;
    atomic_long handled, dead, retries, batches;
    atomic_llong last_event_ms, last_applied_ms;
};

#define BATCH_MAX 500 /* records per transaction at most */

static const char *const HANDLED[] = {"message.created",      "message.updated",
                                      "message.deleted",      "conversation.created",
                                      "conversation.updated", "conversation.deleted",
                                      "member.added",         "member.removed",
                                      "user.created",         "user.updated",
                                      "user.deleted",         NULL};

int search_indexable(const char *type)
{
    for (int i = 0; HANDLED[i]; i++)
        if (strcmp(type, HANDLED[i]) == 0)
            return 1;
    return 0;
}

static cm_err dead_letter(search_indexer *w, const cm_kafka_record *rec, const char *why)
{
    char topic[128];
    /* The headers of every .dlq (proto/asyncapi.yaml): the reason, and which consumer parked
     * it (several consume `users`). */
    cm_kafka_header h[3] = {{"x-error", why}, {"x-consumer", "search"},
                            {"x-source-topic", rec->topic}};
    cm_err rc;

    snprintf(topic, sizeof(topic), "%s.dlq", rec->topic);
    rc = cm_kafka_produce(w->ctx->dlq, topic, rec->key, rec->key_len, rec->value,
                          rec->value_len, h, 3, NULL);
    if (rc != CM_OK)
        return rc; /* not stored: retried until the DLQ takes it */
    atomic_fetch_add(&w->dead, 1);
    cm_warn("search: %s[%d]@%lld to %s: %s", rec->topic, (int)rec->partition,
            (long long)rec->offset, topic, why);
    return CM_OK;
}

/* One record inside a batch: applied, dead-lettered, or skipped. */
static cm_err handle_one(search_indexer *w, const cm_kafka_record *rec)
{
    char why[256] = "";
    const char *type;
    cJSON *ev = NULL;
    int64_t ms;
    cm_err rc;

    /* Message events (most of the traffic) are read from the text without a tree. */
    rc = search_index_apply_text(w->ctx->index, rec->value, rec->value_len, 32, &ms, why,
                                 sizeof(why));
    if (rc == CM_OK) {
        atomic_fetch_add(&w->handled, 1);
        if (ms >= 0)
            atomic_store(&w->last_event_ms, ms);
        return CM_OK;
    }
    if (rc == CM_EINVAL)
        return dead_letter(w, rec, why);
    if (rc != CM_EAGAIN)
        return rc;
    if (cm_json_parse(rec->value, rec->value_len, 32, &ev, why, sizeof(why)) != CM_OK ||
        !cJSON_IsObject(ev) ||
        !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(ev, "type"))) {
        cJSON_Delete(ev);
        return dead_letter(w, rec, why[0] ? why : "not a CloudEvent: no type");
    }
    type = cJSON_GetObjectItemCaseSensitive(ev, "type")->valuestring;
    if (!search_indexable(type)) {
        cJSON_Delete(ev);
        return CM_OK; /* reactions, receipts, ...: not searchable */
    }
    rc = search_index_apply(w->ctx->index, ev, why, sizeof(why));
    if (rc == CM_OK) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(ev, "time");
        atomic_fetch_add(&w->handled, 1);
        if (cJSON_IsString(t) && search_parse_time(t->valuestring, &ms) == CM_OK)
            atomic_store(&w->last_event_ms, ms);
    } else if (rc == CM_EINVAL) {
        rc = dead_letter(w, rec, why);
    }
    cJSON_Delete(ev);
    return rc;
}

/* A batch of records: one transaction per tenant, committed before the handler returns, so
 * the offsets (stored when it returns CM_OK) never run ahead of the index. */
static cm_err handle_batch(const cm_kafka_record *recs, size_t n, void *ud)
{
    search_indexer *w = ud;
    cm_err rc = CM_OK;

    search_index_batch_begin(w->ctx->index);
    for (size_t i = 0; i < n && rc == CM_OK; i++)
        rc = handle_one(w, &recs[i]);
    if (search_index_batch_end(w->ctx->index, rc == CM_OK) != CM_OK && rc == CM_OK)
        rc = CM_EIO;
    if (rc == CM_OK) {
        atomic_fetch_add(&w->batches, 1);
        atomic_store(&w->last_applied_ms, cm_clock_now_ms());
    } else {
        atomic_fetch_add(&w->retries, 1);
    }
    return rc;
}

cm_err search_indexer_start(search_ctx *ctx, const char *brokers, const char *prefix,
                            const char *group, search_indexer **out)
{
    static const char *const topics[] = {"messages", "conversations", "users"};
    search_indexer *w = calloc(1, sizeof(*w));
    cm_kafka_worker_config kc = {.many = handle_batch, .batch = BATCH_MAX, .backoff_ms = 200,
                                 .ud = w};
    cm_err rc;

    if (w == NULL)
        return CM_ENOMEM;
    w->ctx = ctx;
    /* From the beginning: the index is rebuilt from the topics when the group is new. A
     * failed batch (a broken disk) is retried after 200 ms. */
    rc = cm_kafka_consumer_create(brokers, prefix, group, topics, 3, 1, &w->consumer);
    if (rc == CM_OK)
        rc = cm_kafka_worker_start(w->consumer, &kc, &w->kw);
    if (rc != CM_OK) {
        free(w);
        return rc;
    }
    *out = w;
    return CM_OK;
}

void search_indexer_stop(search_indexer *w)
{
    if (w == NULL)
        return;
    cm_kafka_worker_stop(w->kw);
    free(w);
}

void search_metrics(void *ud, void (*emit)(void *ctx, const char *text), void *ctx)
{
    search_ctx *sc = ud;
    search_indexer *w = sc->indexer;
    char buf[1536];
    long long last = w ? atomic_load(&w->last_event_ms) : 0,
              applied = w ? atomic_load(&w->last_applied_ms) : 0;

    snprintf(buf, sizeof(buf),
             "# HELP search_consumer_lag Records of the assigned partitions not yet indexed.\n"
             "# TYPE search_consumer_lag gauge\n"
             "search_consumer_lag %lld\n"
             "# HELP search_events_handled_total Indexable events applied (changed or not).\n"
             "# TYPE search_events_handled_total counter\n"
             "search_events_handled_total %ld\n"
             "# HELP search_events_dead_lettered_total Records sent to a .dlq topic.\n"
             "# TYPE search_events_dead_lettered_total counter\n"
             "search_events_dead_lettered_total %ld\n"
             "# HELP search_index_retries_total Batches rewound after an index failure.\n"
             "# TYPE search_index_retries_total counter\n"
             "search_index_retries_total %ld\n"
             "# HELP search_batches_total Batches committed (one transaction per tenant each).\n"
             "# TYPE search_batches_total counter\n"
             "search_batches_total %ld\n"
             "# HELP search_last_event_delay_ms Last applied event: applied time minus event time.\n"
             "# TYPE search_last_event_delay_ms gauge\n"
             "search_last_event_delay_ms %lld\n",
             w ? (long long)cm_kafka_consumer_lag(w->consumer) : -1LL,
             w ? atomic_load(&w->handled) : 0L, w ? atomic_load(&w->dead) : 0L,
             w ? atomic_load(&w->retries) : 0L, w ? atomic_load(&w->batches) : 0L, last && applied ? applied - last : 0LL);
    emit(ctx, buf);
    search_index_metrics(sc->index, emit, ctx);
}
