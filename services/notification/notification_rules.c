/* notification_rules.c - who is notified of what, and how a notification looks: plain
 * functions over the events' JSON, testable without a server. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "notification.h"

static const char *const type_names[NF_TYPE_COUNT] = {"mention", "reply", "message", "added",
                                                      "custom"};

const char *nf_type_name(nf_type t)
{
    return t < NF_TYPE_COUNT ? type_names[t] : "unknown";
}

nf_type nf_type_parse(const char *name)
{
    for (int i = 0; i < NF_TYPE_COUNT; i++)
        if (strcmp(type_names[i], name) == 0)
            return (nf_type)i;
    return NF_TYPE_COUNT;
}

void nf_prefs_default(nf_prefs *p)
{
    memset(p, 0, sizeof(*p));
    for (int i = 0; i < NF_TYPE_COUNT; i++)
        p->in_app[i] = p->push[i] = 1;
}

int nf_parse_hhmm(const char *s)
{
    if (s == NULL || strlen(s) != 5 || s[2] != ':' || s[0] < '0' || s[0] > '2' || s[1] < '0' ||
        s[1] > '9' || s[3] < '0' || s[3] > '5' || s[4] < '0' || s[4] > '9')
        return -1;
    int h = (s[0] - '0') * 10 + (s[1] - '0'), m = (s[3] - '0') * 10 + (s[4] - '0');
    return h > 23 ? -1 : h * 60 + m;
}

int nf_time_zone_valid(const char *tz)
{
    char path[128];
    size_t n = tz ? strlen(tz) : 0;
    if (n == 0 || n >= 64 || tz[0] == '/' || strstr(tz, "..") != NULL ||
        strspn(tz, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-/") != n)
        return 0;
    snprintf(path, sizeof(path), "/usr/share/zoneinfo/%s", tz);
    return access(path, R_OK) == 0;
}

static pthread_mutex_t tz_lock = PTHREAD_MUTEX_INITIALIZER;

int64_t nf_quiet_until(const nf_prefs *p, int64_t now_ms)
{
    time_t now = (time_t)(now_ms / 1000), end;
    struct tm local;
    int m, in;
    const char *old;
    char saved[128] = "";
    int had = 0;

    if (!p->quiet || !nf_time_zone_valid(p->time_zone))
        return 0;
    pthread_mutex_lock(&tz_lock);
    old = getenv("TZ");
    if (old != NULL && strlen(old) < sizeof(saved)) {
        snprintf(saved, sizeof(saved), "%s", old);
        had = 1;
    }
    setenv("TZ", p->time_zone, 1);
    tzset();
    localtime_r(&now, &local);
    m = local.tm_hour * 60 + local.tm_min;
    in = p->quiet_start < p->quiet_end ? (m >= p->quiet_start && m < p->quiet_end)
                                       : (m >= p->quiet_start || m < p->quiet_end);
    end = 0;
    if (in) {
        /* The next local quiet_end: today when it is still ahead, else tomorrow; mktime
         * normalises the day and applies that date's offset (DST). */
        if (m >= p->quiet_end)
            local.tm_mday += 1;
        local.tm_hour = p->quiet_end / 60;
        local.tm_min = p->quiet_end % 60;
        local.tm_sec = 0;
        local.tm_isdst = -1;
        end = mktime(&local);
    }
    if (had)
        setenv("TZ", saved, 1);
    else
        unsetenv("TZ");
    tzset();
    pthread_mutex_unlock(&tz_lock);
    return in && end > 0 ? (int64_t)end * 1000 : 0;
}

static const char *str_of(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int nf_classify_message(const cJSON *data, const char *recipient, const char *parent_sender,
                        nf_type *out)
{
    const char *sender = str_of(data, "sender_id"), *type = str_of(data, "type");
    const cJSON *mentions = cJSON_GetObjectItemCaseSensitive(data, "mentions"), *m;

    if (sender == NULL || recipient == NULL || strcmp(sender, recipient) == 0)
        return 0;
    if (type != NULL && strcmp(type, "system") == 0)
        return 0; /* joins, leaves and renames: the member events say it */
    if (cJSON_IsArray(mentions)) {
        cJSON_ArrayForEach(m, mentions)
        {
            if (cJSON_IsString(m) && strcmp(m->valuestring, recipient) == 0) {
                *out = NF_TYPE_MENTION;
                return 1;
            }
        }
    }
    if (parent_sender != NULL && strcmp(parent_sender, recipient) == 0) {
        *out = NF_TYPE_REPLY;
        return 1;
    }
    *out = NF_TYPE_MESSAGE;
    return 1;
}

void nf_preview(const char *text, char *out, size_t n)
{
    size_t i = 0, chars = 0, len = text ? strlen(text) : 0;

    if (n < 4) {
        if (n)
            out[0] = '\0';
        return;
    }
    /* Walk whole characters (lead byte and its continuation bytes) while they fit with room
     * for the 3-byte ellipsis. */
    while (i < len && chars < NF_PREVIEW_CHARS) {
        size_t c = 1;
        while (i + c < len && ((unsigned char)text[i + c] & 0xC0) == 0x80)
            c++;
        if (i + c + 4 > n)
            break;
        i += c;
        chars++;
    }
    if (i > 0)
        memcpy(out, text, i);
    if (i < len) {
        memcpy(out + i, "\xE2\x80\xA6", 3);
        i += 3;
    }
    out[i] = '\0';
}

cm_err nf_dedupe_key(const char *tenant, const char *event_id, const char *user,
                     const char *channel, char *out, size_t n)
{
    int w = snprintf(out, n, "%s|%s|%s|%s", tenant, event_id, user, channel);
    return w < 0 || (size_t)w >= n ? CM_ETOOBIG : CM_OK;
}
