/* notification_rules.c - who is notified of what, and how a notification looks: plain
 * functions over the events' JSON, testable without a server. */
#include <stdio.h>
#include <string.h>

#include "notification.h"

static const char *const type_names[NF_TYPE_COUNT] = {"mention", "reply", "message", "added"};

const char *nf_type_name(nf_type t)
{
    return t < NF_TYPE_COUNT ? type_names[t] : "unknown";
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
