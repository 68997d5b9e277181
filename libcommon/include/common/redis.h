/* redis.h - a small thread-safe Redis client (hiredis behind an opaque type): a fixed pool of
 * connections, reconnecting on failure, with the few operations the services need. */
#ifndef COMMON_REDIS_H
#define COMMON_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

typedef struct cm_redis cm_redis;

/* Creates a client for host:port with `conns` connections (>= 1) and a per-command timeout
 * in milliseconds. Connections are opened lazily, so this succeeds with Redis down. */
cm_err cm_redis_create(const char *host, int port, int conns, int timeout_ms, cm_redis **out);
void cm_redis_destroy(cm_redis *r); /* accepts NULL */

/* PING. CM_OK or CM_EIO. */
cm_err cm_redis_ping(cm_redis *r);

/* Fixed-window counter: increments `key`, setting its expiry to `window_ms` when the window
 * starts, atomically (one Lua script). Writes the count in this window and the milliseconds
 * until the window ends. CM_EIO when Redis cannot be reached. */
cm_err cm_redis_window_incr(cm_redis *r, const char *key, int64_t window_ms, int64_t *count,
                            int64_t *remaining_ms);

/* EVAL `script` with `nkeys` keys and `nargs` arguments (at most 16 of each), expecting an
 * array of integers: writes up to `max` of them to `out` and their count to `*n`. CM_EIO when
 * Redis cannot be reached or the script fails (logged), CM_EINVAL for too many keys or
 * arguments or a reply that is not an array of integers. */
cm_err cm_redis_eval_ints(cm_redis *r, const char *script, size_t nkeys, const char *const *keys,
                          size_t nargs, const char *const *args, int64_t *out, size_t max,
                          size_t *n);

/* SET key value PX ttl_ms (ttl_ms 0: no expiry). */
cm_err cm_redis_set(cm_redis *r, const char *key, const char *value, int64_t ttl_ms);

/* GET key into `out` (size `n`, NUL-terminated). CM_ENOTFOUND when absent, CM_ETOOBIG when
 * the value does not fit. */
cm_err cm_redis_get(cm_redis *r, const char *key, char *out, size_t n);

/* EXISTS key...: writes how many of the `n` keys exist to `*count` (one round trip). */
cm_err cm_redis_exists(cm_redis *r, const char *const *keys, size_t n, int64_t *count);

/* DEL key. */
cm_err cm_redis_del(cm_redis *r, const char *key);

/* Takes the lease `key` for `ttl_ms` milliseconds when nobody holds it (SET key token NX PX):
 * CM_OK when taken, CM_ECONFLICT when another holder has it, CM_EIO when Redis cannot be
 * reached. `token` names the holder (a random string) and is needed to release it. */
cm_err cm_redis_lock(cm_redis *r, const char *key, const char *token, int64_t ttl_ms);

/* Releases the lease `key` only while `token` still holds it (compare and delete in one Lua
 * script): CM_OK when released, CM_ENOTFOUND when it had expired or passed to another holder,
 * CM_EIO when Redis cannot be reached. */
cm_err cm_redis_unlock(cm_redis *r, const char *key, const char *token);

#endif
