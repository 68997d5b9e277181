/* ratelimit.c - fixed windows and failure backoff in Redis, answered with 429 and headers. */
#include "common/ratelimit.h"

#include <stdio.h>

#include "common/log.h"

#define KEY_MAX 512
#define FAILURE_WINDOW_MS (24 * 3600 * 1000LL)

static void too_many(cm_http_req *req, int64_t ms, const char *detail)
{
    char retry[24];
    snprintf(retry, sizeof(retry), "%lld", (long long)((ms + 999) / 1000));
    cm_http_add_header(req, "Retry-After", retry);
    cm_http_reply_error(req, CM_ELIMIT, detail);
}

cm_err cm_ratelimit_window(cm_http_req *req, cm_redis *r, const char *key, long limit,
                           int64_t window_ms, const char *detail)
{
    char lim[24], rem[24], reset[24];
    int64_t count = 0, ms = 0;

    if (cm_redis_window_incr(r, key, window_ms, &count, &ms) != CM_OK) {
        cm_warn("rate limit %s skipped: Redis unavailable", key);
        return CM_OK;
    }
    snprintf(lim, sizeof(lim), "%ld", limit);
    snprintf(rem, sizeof(rem), "%lld", (long long)(count >= limit ? 0 : limit - count));
    snprintf(reset, sizeof(reset), "%lld", (long long)((ms + 999) / 1000));
    cm_http_add_header(req, "RateLimit-Limit", lim);
    cm_http_add_header(req, "RateLimit-Remaining", rem);
    cm_http_add_header(req, "RateLimit-Reset", reset);
    if (count <= limit)
        return CM_OK;
    too_many(req, ms, detail);
    return CM_ELIMIT;
}

cm_err cm_ratelimit_backoff_check(cm_http_req *req, cm_redis *r, const char *key,
                                  const char *detail)
{
    char lock[KEY_MAX];
    int64_t ms = 0;

    snprintf(lock, sizeof(lock), "%s:lock", key);
    if (cm_redis_pttl(r, lock, &ms) != CM_OK || ms <= 0)
        return CM_OK; /* absent, or Redis down: no backoff */
    too_many(req, ms, detail);
    return CM_ELIMIT;
}

void cm_ratelimit_backoff_fail(cm_redis *r, const char *key, long free, long max_s)
{
    char k[KEY_MAX];
    int64_t failures = 0, left = 0, ms;

    snprintf(k, sizeof(k), "%s:fail", key);
    if (cm_redis_window_incr(r, k, FAILURE_WINDOW_MS, &failures, &left) != CM_OK ||
        failures < free)
        return;
    /* 1 s at the free-th failure, doubling: 2^(failures - free) seconds, capped. */
    ms = failures - free >= 30 ? max_s * 1000LL : (1LL << (failures - free)) * 1000;
    if (ms > max_s * 1000LL)
        ms = max_s * 1000LL;
    snprintf(k, sizeof(k), "%s:lock", key);
    cm_redis_set(r, k, "1", ms);
}

void cm_ratelimit_backoff_clear(cm_redis *r, const char *key)
{
    char k[KEY_MAX];
    snprintf(k, sizeof(k), "%s:fail", key);
    cm_redis_del(r, k);
    snprintf(k, sizeof(k), "%s:lock", key);
    cm_redis_del(r, k);
}
