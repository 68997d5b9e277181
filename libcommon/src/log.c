/* log.c - JSON-lines logger; one write(2) per line so lines from threads never interleave. */
#include "common/log.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *log_service = "unknown";
static cm_log_level log_min = CM_LOG_INFO;
static _Thread_local char log_rid[65];

static const char *level_names[] = {"debug", "info", "warn", "error"};

int cm_log_enabled(cm_log_level level)
{
    return level >= log_min;
}

void cm_log_init(const char *service, cm_log_level min_level)
{
    log_service = service ? service : "unknown";
    log_min = min_level;
}

cm_log_level cm_log_level_parse(const char *s, cm_log_level def)
{
    if (s == NULL)
        return def;
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0)
            return (cm_log_level)i;
    return def;
}

void cm_log_set_request_id(const char *request_id)
{
    if (request_id == NULL) {
        log_rid[0] = '\0';
        return;
    }
    size_t n = strnlen(request_id, sizeof(log_rid) - 1);
    memcpy(log_rid, request_id, n);
    log_rid[n] = '\0';
}

const char *cm_log_request_id(void)
{
    return log_rid;
}

int cm_json_escape(const char *in, char *out, size_t n)
{
    size_t o = 0;
    if (n == 0)
        return -1;
    for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
        char esc[8];
        size_t k;
        switch (*p) {
        case '"': k = 2; memcpy(esc, "\\\"", 2); break;
        case '\\': k = 2; memcpy(esc, "\\\\", 2); break;
        case '\n': k = 2; memcpy(esc, "\\n", 2); break;
        case '\r': k = 2; memcpy(esc, "\\r", 2); break;
        case '\t': k = 2; memcpy(esc, "\\t", 2); break;
        default:
            if (*p < 0x20) {
                k = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", *p);
            } else {
                esc[0] = (char)*p;
                k = 1;
            }
        }
        if (o + k >= n) {
            out[o] = '\0';
            return -1;
        }
        memcpy(out + o, esc, k);
        o += k;
    }
    out[o] = '\0';
    return (int)o;
}

static void log_write(cm_log_level level, const char *msg, const char *fields)
{
    char ts[40], emsg[4096], line[8192];
    struct timespec now;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    size_t tl = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + tl, sizeof(ts) - tl, ".%03ldZ", now.tv_nsec / 1000000);
    cm_json_escape(msg, emsg, sizeof(emsg));
    int len = snprintf(line, sizeof(line),
                       "{\"ts\":\"%s\",\"level\":\"%s\",\"service\":\"%s\",\"request_id\":\"%s\","
                       "\"msg\":\"%s\"%s%s}\n",
                       ts, level_names[level], log_service, log_rid, emsg, fields ? "," : "",
                       fields ? fields : "");
    if (len < 0)
        return;
    if ((size_t)len >= sizeof(line)) {
        /* Keep the line valid JSON even when truncated: drop the extra fields, and cut the
         * message at 2000 bytes on an escape and character boundary (a cut "\\" would
         * escape the closing quote). */
        size_t cut = 0;
        while (emsg[cut]) {
            size_t k = emsg[cut] != '\\' ? 1 : emsg[cut + 1] == 'u' ? 6 : 2;
            if (cut + k > 2000)
                break;
            cut += k;
        }
        while (cut > 0 && ((unsigned char)emsg[cut] & 0xc0) == 0x80)
            cut--;
        emsg[cut] = '\0';
        len = snprintf(line, sizeof(line),
                       "{\"ts\":\"%s\",\"level\":\"%s\",\"service\":\"%s\",\"request_id\":\"%s\","
                       "\"msg\":\"%s\",\"truncated\":true}\n",
                       ts, level_names[level], log_service, log_rid, emsg);
        if (len < 0 || (size_t)len >= sizeof(line))
            return;
    }
    ssize_t w = write(STDERR_FILENO, line, (size_t)len);
    (void)w;
}

void cm_log(cm_log_level level, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;

    if (level < log_min)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_write(level, msg, NULL);
}

void cm_log_fields(cm_log_level level, const char *msg, const char *fields_json)
{
    if (level < log_min)
        return;
    log_write(level, msg, fields_json);
}
