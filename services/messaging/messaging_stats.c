/* messaging_stats.c - GET /v1/conversations/{id}/stats: message volume over time, active
 * members, the median first-response time between members and the busiest hours, computed from
 * the stored messages of the range. */
#include <stdlib.h>
#include <string.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/json.h"
#include "messaging.h"

#define DAY_MS 86400000LL
#define HOUR_MS 3600000LL
#define RANGE_DAYS_MAX 366
#define HOUR_BUCKETS_MAX (31 * 24)
#define STATS_MESSAGES_MAX 200000 /* messages one answer reads */

static int by_value(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int64_t messaging_median(int64_t *v, size_t n)
{
    if (n == 0)
        return -1;
    qsort(v, n, sizeof(*v), by_value);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

struct collect {
    int64_t from, bucket_ms;
    int64_t *buckets;
    size_t nbuckets;
    int64_t hours[24];
    int64_t total, scanned;
    char (*senders)[65];
    size_t nsenders, cap_senders;
    int64_t *gaps;
    size_t ngaps, cap_gaps;
    char prev_sender[65];
    int64_t prev_at;
    int oom;
};

static void note_sender(struct collect *s, const char *who)
{
    for (size_t i = 0; i < s->nsenders; i++)
        if (strcmp(s->senders[i], who) == 0)
            return;
    if (s->nsenders == s->cap_senders) {
        size_t cap = s->cap_senders ? s->cap_senders * 2 : 64;
        void *p = realloc(s->senders, cap * sizeof(*s->senders));
        if (p == NULL) {
            s->oom = 1;
            return;
        }
        s->senders = p;
        s->cap_senders = cap;
    }
    snprintf(s->senders[s->nsenders++], sizeof(s->senders[0]), "%s", who);
}

static int collect_message(const bson_t *m, void *ud)
{
    struct collect *s = ud;
    int64_t at = cm_bson_int(m, "created_at", 0);
    const char *who = cm_bson_str(m, "sender_id", "");
    size_t b = (size_t)((at - s->from) / s->bucket_ms);

    if (++s->scanned > STATS_MESSAGES_MAX)
        return 1;
    if (b < s->nbuckets)
        s->buckets[b]++;
    s->hours[(at / HOUR_MS) % 24]++;
    s->total++;
    note_sender(s, who);
    /* A first response: a message from someone else than the previous message's sender. */
    if (s->prev_sender[0] && strcmp(s->prev_sender, who) != 0) {
        if (s->ngaps == s->cap_gaps) {
            size_t cap = s->cap_gaps ? s->cap_gaps * 2 : 256;
            void *p = realloc(s->gaps, cap * sizeof(*s->gaps));
            if (p == NULL) {
                s->oom = 1;
                return 1;
            }
            s->gaps = p;
            s->cap_gaps = cap;
        }
        s->gaps[s->ngaps++] = at - s->prev_at;
    }
    snprintf(s->prev_sender, sizeof(s->prev_sender), "%s", who);
    s->prev_at = at;
    return s->oom;
}

/* GET /v1/conversations/{id}/stats?from=&to=&bucket=day|hour */
void messaging_stats(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    cm_jwt_claims c;
    const char *cid = cm_http_param(req, "id"), *bucket = cm_http_query(req, "bucket");
    const char *from_s = cm_http_query(req, "from"), *to_s = cm_http_query(req, "to");
    struct collect s;
    int64_t from, to, now = cm_clock_now_ms(), busiest = 0;
    bson_t conv, me, f = BSON_INITIALIZER, range, ne, opts = BSON_INITIALIZER, sort, proj;
    cJSON *body = NULL, *vol, *hours, *top;
    char ts[CM_RFC3339_LEN];
    int have = 0;
    cm_err rc;

    memset(&s, 0, sizeof(s));
    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (bucket == NULL || *bucket == '\0')
        bucket = "day";
    if (strcmp(bucket, "day") != 0 && strcmp(bucket, "hour") != 0) {
        cm_http_reply_error(req, CM_EINVAL, "query parameter 'bucket' must be day or hour");
        goto out;
    }
    to = now;
    if ((to_s && *to_s && !messaging_time_parse(to_s, &to)) ||
        (from_s && *from_s && !messaging_time_parse(from_s, &from))) {
        cm_http_reply_error(req, CM_EINVAL, "query parameters 'from' and 'to' must be RFC 3339 UTC times");
        goto out;
    }
    if (!(from_s && *from_s))
        from = to - 7 * DAY_MS;
    s.bucket_ms = strcmp(bucket, "day") == 0 ? DAY_MS : HOUR_MS;
    from -= from % s.bucket_ms; /* buckets start on whole days or hours (UTC) */
    if (to <= from || to - from > RANGE_DAYS_MAX * DAY_MS ||
        (s.bucket_ms == HOUR_MS && (to - from) / HOUR_MS > HOUR_BUCKETS_MAX)) {
        cm_http_reply_error(req, CM_EINVAL, "the range must be positive, at most 366 days (31 days by hour)");
        goto out;
    }
    rc = messaging_conversation_for_member(ctx, c.tid, cid, c.sub, &conv, &me);
    if (rc != CM_OK) {
        messaging_reply_open_error(req, rc);
        goto out;
    }
    have = 1;
    s.from = from;
    s.nbuckets = (size_t)((to - from + s.bucket_ms - 1) / s.bucket_ms);
    s.buckets = calloc(s.nbuckets, sizeof(*s.buckets));
    if (s.buckets == NULL) {
        cm_http_reply_error(req, CM_ENOMEM, NULL);
        goto out;
    }
    /* Members' messages only: system messages are the service's. */
    BSON_APPEND_UTF8(&f, "conversation_id", cid);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "created_at", &range);
    BSON_APPEND_DATE_TIME(&range, "$gte", from);
    BSON_APPEND_DATE_TIME(&range, "$lt", to);
    bson_append_document_end(&f, &range);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "type", &ne);
    BSON_APPEND_UTF8(&ne, "$ne", "system");
    bson_append_document_end(&f, &ne);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "seq", 1);
    bson_append_document_end(&opts, &sort);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
    BSON_APPEND_INT32(&proj, "created_at", 1);
    BSON_APPEND_INT32(&proj, "sender_id", 1);
    bson_append_document_end(&opts, &proj);
    rc = cm_mongo_find(ctx->db, MSG_COLL_MESSAGES, &f, &opts, collect_message, &s);
    if (rc != CM_OK || s.oom) {
        cm_http_reply_error(req, rc != CM_OK ? rc : CM_ENOMEM, "the messages could not be read");
        goto out;
    }
    body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "conversation_id", cid);
    cm_clock_rfc3339(from, ts);
    cJSON_AddStringToObject(body, "from", ts);
    cm_clock_rfc3339(to, ts);
    cJSON_AddStringToObject(body, "to", ts);
    cJSON_AddStringToObject(body, "bucket", bucket);
    cJSON_AddNumberToObject(body, "messages", (double)s.total);
    cJSON_AddBoolToObject(body, "truncated", s.scanned > STATS_MESSAGES_MAX);
    vol = cJSON_AddArrayToObject(body, "volume");
    for (size_t i = 0; i < s.nbuckets; i++) {
        cJSON *b = cJSON_CreateObject();
        cm_clock_rfc3339(from + (int64_t)i * s.bucket_ms, ts);
        cJSON_AddStringToObject(b, "start", ts);
        cJSON_AddNumberToObject(b, "messages", (double)s.buckets[i]);
        cJSON_AddItemToArray(vol, b);
    }
    cJSON_AddNumberToObject(body, "active_members", (double)s.nsenders);
    if (s.ngaps)
        cJSON_AddNumberToObject(body, "median_first_response_s",
                                (double)messaging_median(s.gaps, s.ngaps) / 1000.0);
    else
        cJSON_AddNullToObject(body, "median_first_response_s");
    hours = cJSON_AddArrayToObject(body, "messages_by_hour");
    for (int h = 0; h < 24; h++) {
        cJSON_AddItemToArray(hours, cJSON_CreateNumber((double)s.hours[h]));
        if (s.hours[h] > busiest)
            busiest = s.hours[h];
    }
    top = cJSON_AddArrayToObject(body, "busiest_hours");
    for (int h = 0; h < 24 && busiest > 0; h++)
        if (s.hours[h] == busiest)
            cJSON_AddItemToArray(top, cJSON_CreateNumber(h));
    cm_http_reply_json(req, 200, body);
    body = NULL;
out:
    cJSON_Delete(body);
    if (have) {
        bson_destroy(&conv);
        bson_destroy(&me);
    }
    free(s.buckets);
    free(s.senders);
    free(s.gaps);
    bson_destroy(&f);
    bson_destroy(&opts);
}
