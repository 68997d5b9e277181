/* log.h - JSON-lines logging to stderr, one object per line, carrying the request id. */
#ifndef COMMON_LOG_H
#define COMMON_LOG_H

#include <stdarg.h>
#include <stddef.h>

typedef enum cm_log_level { CM_LOG_DEBUG, CM_LOG_INFO, CM_LOG_WARN, CM_LOG_ERROR } cm_log_level;

/* Sets the service name written in every line and the lowest level written.
 * Call once at start-up, before threads start. `service` must outlive the process. */
void cm_log_init(const char *service, cm_log_level min_level);

/* Parses "debug", "info", "warn" or "error"; returns `def` for anything else. */
cm_log_level cm_log_level_parse(const char *s, cm_log_level def);

/* Sets (or clears, with NULL) the request id of the calling thread; it is copied
 * (at most 64 bytes) and written in every line this thread logs until changed. */
void cm_log_set_request_id(const char *request_id);

/* Returns the calling thread's request id, or "" when none is set. */
const char *cm_log_request_id(void);

/* 1 when lines of `level` are written (cm_log_init's min_level), so that a caller can skip
 * formatting what would be dropped; 0 otherwise. */
int cm_log_enabled(cm_log_level level);

/* Writes {"ts","level","service","request_id","msg"} as one line to stderr.
 * The message is printf-formatted, truncated at 2 KiB, and JSON-escaped. */
void cm_log(cm_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Like cm_log, then appends `fields_json`, which must be the *inside* of a JSON object
 * ("\"status\":200,\"route\":\"/x\""), already escaped by the caller (see cm_json_escape). */
void cm_log_fields(cm_log_level level, const char *msg, const char *fields_json);

#define cm_debug(...) cm_log(CM_LOG_DEBUG, __VA_ARGS__)
#define cm_info(...) cm_log(CM_LOG_INFO, __VA_ARGS__)
#define cm_warn(...) cm_log(CM_LOG_WARN, __VA_ARGS__)
#define cm_error(...) cm_log(CM_LOG_ERROR, __VA_ARGS__)

/* Escapes `in` as the contents of a JSON string into `out` (size `n`, always terminated).
 * Returns the length written, or -1 when it did not fit (the output is then truncated). */
int cm_json_escape(const char *in, char *out, size_t n);

#endif
