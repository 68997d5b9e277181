/* ratelimit.h - request rate limits in Redis answered the way DESIGN.md asks (429 with
 * Retry-After and the RateLimit-Limit/-Remaining/-Reset headers of the IETF httpapi draft):
 * a fixed window per key, and a growing backoff after repeated failures (for credentials:
 * OWASP Authentication Cheat Sheet, "account lockout" without a permanent lock).
 * When Redis cannot be reached the limits are skipped (logged): they protect capacity and
 * slow guessing, they are not what authenticates. */
#ifndef COMMON_RATELIMIT_H
#define COMMON_RATELIMIT_H

#include <stdint.h>

#include "common/http.h"
#include "common/redis.h"

/* Counts one request against `key` in a fixed window of `window_ms` and sets the RateLimit-*
 * headers. Past `limit` requests it answers 429 with Retry-After (seconds until the window
 * ends, rounded up) and `detail`, and returns CM_ELIMIT; otherwise CM_OK. */
cm_err cm_ratelimit_window(cm_http_req *req, cm_redis *r, const char *key, long limit,
                           int64_t window_ms, const char *detail);

/* While `key` is backing off after failures, answers 429 with Retry-After (seconds left,
 * rounded up) and `detail` and returns CM_ELIMIT; otherwise CM_OK and no answer. */
cm_err cm_ratelimit_backoff_check(cm_http_req *req, cm_redis *r, const char *key,
                                  const char *detail);

/* Records a failure of `key`: the first `free` failures (counted over a day) cost nothing,
 * each one after makes `key` back off for 1, 2, 4, ... seconds, at most `max_s`. */
void cm_ratelimit_backoff_fail(cm_redis *r, const char *key, long free, long max_s);

/* Forgets `key`'s failures (after a success). */
void cm_ratelimit_backoff_clear(cm_redis *r, const char *key);

#endif
