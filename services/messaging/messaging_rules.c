/* messaging_rules.c - message and conversation rules as plain functions (unit-tested). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/event.h"
#include "common/utf8.h"
#include "common/uuid.h"
#include "messaging.h"

const char *messaging_text_problem(const char *text)
{
    size_t bytes = strlen(text), chars;

    if (!cm_utf8_valid(text, bytes))
        return "field 'text' must be valid UTF-8";
    chars = cm_utf8_count(text, bytes);
    if (chars == 0)
        return "field 'text' must not be empty";
    if (chars > MSG_TEXT_MAX)
        return "field 'text' has more than 5000 characters";
    if (cm_utf8_has_control(text, bytes))
        return "field 'text' must not hold control characters other than newline and tab";
    for (const char *p = text; *p; p++)
        if (!isspace((unsigned char)*p))
            return NULL;
    return "field 'text' must not be only whitespace";
}

int messaging_client_msg_id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > MSG_CLIENT_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (id[i] <= 0x20 || id[i] >= 0x7f)
            return 0;
    return 1;
}

int messaging_direct_key(const char *tenant, const char *a, const char *b, char *out, size_t n)
{
    const char *lo = strcmp(a, b) <= 0 ? a : b, *hi = lo == a ? b : a;
    int w = snprintf(out, n, "%s/%s/%s", tenant, lo, hi);
    return (w < 0 || (size_t)w >= n) ? -1 : 0;
}

int messaging_seq_cursor_parse(const char *s, int64_t *seq)
{
    char *end;
    long long v;

    if (s == NULL || *s == '\0' || !isdigit((unsigned char)*s) || strlen(s) > 18)
        return 0;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || *end != '\0' || v < 0)
        return 0;
    *seq = v;
    return 1;
}

int messaging_conv_cursor_parse(const char *s, int64_t *ms, char *id)
{
    const char *us = s ? strchr(s, '_') : NULL;
    char num[20];
    size_t nl;

    if (us == NULL)
        return 0;
    nl = (size_t)(us - s);
    if (nl == 0 || nl >= sizeof(num) || !cm_uuid_valid(us + 1))
        return 0;
    memcpy(num, s, nl);
    num[nl] = '\0';
    if (!messaging_seq_cursor_parse(num, ms))
        return 0;
    memcpy(id, us + 1, CM_UUID_STRLEN);
    return 1;
}

cJSON *messaging_message_json(const bson_t *doc)
{
    char ts[CM_RFC3339_LEN];
    cJSON *m = cJSON_CreateObject();

    cJSON_AddStringToObject(m, "id", cm_bson_str(doc, "_id", ""));
    cJSON_AddStringToObject(m, "conversation_id", cm_bson_str(doc, "conversation_id", ""));
    cJSON_AddNumberToObject(m, "seq", (double)cm_bson_int(doc, "seq", 0));
    cJSON_AddStringToObject(m, "sender_id", cm_bson_str(doc, "sender_id", ""));
    cJSON_AddStringToObject(m, "type", cm_bson_str(doc, "type", "text"));
    cJSON_AddStringToObject(m, "text", cm_bson_str(doc, "text", ""));
    cJSON_AddStringToObject(m, "client_msg_id", cm_bson_str(doc, "client_msg_id", ""));
    cm_clock_rfc3339(cm_bson_int(doc, "created_at", 0), ts);
    cJSON_AddStringToObject(m, "created_at", ts);
    return m;
}

cm_err messaging_message_event(const bson_t *doc, char **out)
{
    /* The event id is the message id: a republished event keeps it, so consumers dedupe. */
    return cm_event_build(cm_bson_str(doc, "_id", ""), "message.created", "/messaging",
                          cm_bson_str(doc, "conversation_id", ""), cm_bson_str(doc, "tenant", ""),
                          cm_bson_int(doc, "created_at", 0), messaging_message_json(doc), out);
}

static int page_collect(const bson_t *doc, void *ud)
{
    messaging_page *p = ud;
    if (p->n == p->limit) {
        p->more = 1;
        return 1;
    }
    cJSON_AddItemToArray(p->items, p->render(doc));
    if (p->n > 0)
        bson_destroy(&p->last);
    bson_copy_to(doc, &p->last);
    p->n++;
    return 0;
}

cm_err messaging_page_find(cm_mongo *db, const char *coll, const bson_t *filter,
                           const bson_t *sort, long limit, cJSON *(*render)(const bson_t *doc),
                           messaging_page *page)
{
    bson_t opts = BSON_INITIALIZER;
    cm_err rc;

    memset(page, 0, sizeof(*page));
    page->items = cJSON_CreateArray();
    page->limit = (int)limit;
    page->render = render;
    BSON_APPEND_DOCUMENT(&opts, "sort", sort);
    BSON_APPEND_INT64(&opts, "limit", limit + 1);
    rc = cm_mongo_find(db, coll, filter, &opts, page_collect, page);
    bson_destroy(&opts);
    if (rc != CM_OK)
        messaging_page_cleanup(page);
    return rc;
}

void messaging_page_cleanup(messaging_page *page)
{
    cJSON_Delete(page->items);
    page->items = NULL;
    if (page->n > 0)
        bson_destroy(&page->last);
    page->n = 0;
}
