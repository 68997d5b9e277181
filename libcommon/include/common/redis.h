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

/* Runs `script` with `nkeys` keys (at most 64) and `nargs` arguments (at most 16), expecting an
 * array of integers: writes up to `max` of them to `out` and their count to `*n`. CM_EIO when
 * Redis cannot be reached or the script fails (logged), CM_EINVAL for too many keys or
 * arguments or a reply that is not an array of integers. The script is sent once (SCRIPT
 * LOAD) and then run by its SHA1 (EVALSHA, again EVAL after a NOSCRIPT), remembered by the
 * script's address for up to 16 scripts: pass a string constant. */
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

/* PTTL key: milliseconds the key has left, written to `*ms`. CM_ENOTFOUND when the key does
 * not exist; a key without expiry gives -1. */
cm_err cm_redis_pttl(cm_redis *r, const char *key, int64_t *ms);

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

/* One command of a pipeline: argv[0..argc) (1..CM_REDIS_CMD_ARGS strings, borrowed). */
#define CM_REDIS_CMD_ARGS 8
typedef struct cm_redis_cmd {
    int argc;
    const char *argv[CM_REDIS_CMD_ARGS];
} cm_redis_cmd;

/* Sends `cmds[0..n)` in one round trip on one connection and writes one number per reply to
 * `out[i]`: an integer reply's value, 0 for nil, -1 for an error reply (logged), 1 for any
 * other reply (OK, a string, an array). CM_EINVAL for a command without arguments or with
 * too many, CM_EIO when Redis cannot be reached or the connection broke midway (`out` is
 * then partly written: treat every command as not run, or as run, whichever is safe). */
cm_err cm_redis_pipeline(cm_redis *r, const cm_redis_cmd *cmds, size_t n, int64_t *out);

/* What cm_redis_pipeline_strings hands over per reply `i`: `err` -1 for an error reply
 * (logged), else 0; the reply's strings v[0..n) (lengths len[0..n)): one for a bulk or status
 * string, the string elements of an array (HGETALL: field, value, field, value...), none for
 * nil or an integer. The strings live until the callback returns. */
typedef void (*cm_redis_strings_fn)(void *ud, size_t i, int err, const char *const *v,
                                    const size_t *len, size_t n);

/* cm_redis_pipeline for commands whose replies are strings or arrays of strings (GET,
 * HGETALL, SMEMBERS): `fn` is called once per reply, in order, on this thread. Errors as
 * cm_redis_pipeline; after CM_EIO some replies may not have been handed over. */
cm_err cm_redis_pipeline_strings(cm_redis *r, const cm_redis_cmd *cmds, size_t n,
                                 cm_redis_strings_fn fn, void *ud);

/* PUBLISH `message` on `channel`: writes how many subscribers received it to `*receivers` (may
 * be NULL). CM_EIO when Redis cannot be reached. */
cm_err cm_redis_publish(cm_redis *r, const char *channel, const char *message,
                        int64_t *receivers);

/* Called by cm_redis_listen for each message: its channel and payload `msg[0..len)` (not
 * NUL-terminated, valid during the call only). */
typedef void (*cm_redis_message_fn)(void *ud, const char *channel, const char *msg, size_t len);

/* Returns non-zero when cm_redis_listen should return. */
typedef int (*cm_redis_stop_fn)(void *ud);

/* Subscribes to `channels[0..n)` (1..16) on a connection of its own to host:port and calls
 * `on_message` for each message, on the calling thread, until `should_stop` returns non-zero
 * (checked at least every `poll_ms` milliseconds). Reconnects and resubscribes after a lost
 * connection (messages published meanwhile are missed: pub/sub keeps nothing), calling
 * `on_message` only for messages. Returns CM_OK when stopped, CM_EINVAL for bad arguments. */
cm_err cm_redis_listen(const char *host, int port, const char *const *channels, size_t n,
                       int poll_ms, cm_redis_message_fn on_message, cm_redis_stop_fn should_stop,
                       void *ud);

#endif
