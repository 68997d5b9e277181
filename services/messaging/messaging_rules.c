/* messaging_rules.c - message and conversation rules as plain functions (unit-tested). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/utf8.h"
#include "common/uuid.h"
#include "messaging.h"

int messaging_text_problem(const char *text, long max, char *detail, size_t n)
{
    size_t bytes = strlen(text), chars;
    const char *why = "field 'text' must not be only whitespace";

    if (!cm_utf8_valid(text, bytes)) {
        why = "field 'text' must be valid UTF-8";
    } else if ((chars = cm_utf8_count(text, bytes)) == 0) {
        why = "field 'text' must not be empty";
    } else if ((long)chars > max) {
        snprintf(detail, n, "field 'text' has %zu characters, more than the %ld allowed", chars, max);
        return 1;
    } else if (cm_utf8_has_control(text, bytes)) {
        why = "field 'text' must not hold control characters other than newline and tab";
    } else {
        for (const char *p = text; *p; p++)
            if (!isspace((unsigned char)*p))
                return 0;
    }
    snprintf(detail, n, "%s", why);
    return 1;
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

int messaging_key_cursor_parse(const char *s, int uuid, int64_t *num, char *id)
{
    const char *us = s ? strchr(s, '_') : NULL;
    char digits[20];
    size_t nl;

    if (us == NULL)
        return 0;
    nl = (size_t)(us - s);
    if (nl == 0 || nl >= sizeof(digits))
        return 0;
    if (uuid ? !cm_uuid_valid(us + 1) : !cm_user_id_valid(us + 1))
        return 0;
    memcpy(digits, s, nl);
    digits[nl] = '\0';
    if (!messaging_seq_cursor_parse(digits, num))
        return 0;
    memcpy(id, us + 1, strlen(us + 1) + 1);
    return 1;
}

const char *messaging_emoji_problem(const char *emoji)
{
    size_t n = strlen(emoji);
    if (n == 0 || n > MSG_EMOJI_MAX)
        return "the emoji must be 1..32 bytes";
    if (!cm_utf8_valid(emoji, n) || cm_utf8_has_control(emoji, n))
        return "the emoji must be valid UTF-8 without control characters";
    for (const char *p = emoji; *p; p++)
        if (isspace((unsigned char)*p))
            return "the emoji must not hold whitespace";
    return NULL;
}

void messaging_member_key(const char *cid, const char *uid, char out[MSG_MEMBER_KEY_MAX])
{
    snprintf(out, MSG_MEMBER_KEY_MAX, "%s/%s", cid, uid);
}

/* Days from 1970-01-01 to year-month-day (proleptic Gregorian; Howard Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int digits_at(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return 0;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 1;
}

int messaging_time_parse(const char *s, int64_t *ms)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h, mi, sec, frac = 0, fdig = 0;
    const char *p;

    if (s == NULL || strlen(s) < 20 || !digits_at(s, 4, &y) || s[4] != '-' ||
        !digits_at(s + 5, 2, &mo) || s[7] != '-' || !digits_at(s + 8, 2, &d) ||
        (s[10] != 'T' && s[10] != 't') || !digits_at(s + 11, 2, &h) || s[13] != ':' ||
        !digits_at(s + 14, 2, &mi) || s[16] != ':' || !digits_at(s + 17, 2, &sec))
        return 0;
    p = s + 19;
    if (*p == '.') {
        p++;
        while (isdigit((unsigned char)*p)) {
            if (fdig < 3) {
                frac = frac * 10 + (*p - '0');
                fdig++;
            }
            p++;
        }
        if (fdig == 0)
            return 0;
        while (fdig < 3) {
            frac *= 10;
            fdig++;
        }
    }
    if ((*p != 'Z' && *p != 'z') || p[1] != '\0')
        return 0;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || sec > 59 ||
        (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))))
        return 0;
    *ms = ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60000LL + sec * 1000LL + frac;
    return 1;
}

messaging_role messaging_role_parse(const char *s)
{
    if (s == NULL)
        return MSG_ROLE_NONE;
    if (strcmp(s, "member") == 0)
        return MSG_ROLE_MEMBER;
    if (strcmp(s, "admin") == 0)
        return MSG_ROLE_ADMIN;
    if (strcmp(s, "owner") == 0)
        return MSG_ROLE_OWNER;
    return MSG_ROLE_NONE;
}

const char *messaging_role_name(messaging_role r)
{
    static const char *const names[] = {"none", "member", "admin", "owner"};
    return names[r];
}

/* The rules of who may do what, in one place. proto/openapi.yaml states each of them in the
 * description of the endpoint it guards; keep the two in step. */
const char *messaging_rule(messaging_action act, const messaging_rule_input *in, int *conflict)
{
    int direct = strcmp(in->type, "direct") == 0;
    int channel = strcmp(in->type, "channel") == 0;
    int manager = in->role >= MSG_ROLE_ADMIN; /* owner or admin */

    *conflict = 0;
    switch (act) {
    case MSG_ACT_SEND:
        if (channel && !manager && !in->members_can_post)
            return "only owners and admins post in this channel";
        return NULL;
    case MSG_ACT_UPDATE:
        if (direct)
            return "a direct conversation cannot be changed";
        return manager ? NULL : "only owners and admins change the conversation";
    case MSG_ACT_DELETE:
        if (direct)
            return "a direct conversation cannot be deleted; archive it instead";
        return in->role == MSG_ROLE_OWNER ? NULL : "only an owner deletes the conversation";
    case MSG_ACT_ADD_MEMBERS:
        if (direct)
            return "a direct conversation has exactly two members";
        return manager ? NULL : "only owners and admins add members";
    case MSG_ACT_REMOVE_MEMBER:
        if (direct)
            return "a direct conversation has exactly two members";
        if (!manager)
            return "only owners and admins remove members";
        if (in->target == MSG_ROLE_OWNER)
            return "an owner cannot be removed; owners leave by themselves";
        if (in->role == MSG_ROLE_ADMIN && in->target == MSG_ROLE_ADMIN)
            return "admins remove members, not other admins";
        return NULL;
    case MSG_ACT_SET_ROLE:
        if (direct)
            return "a direct conversation has no roles";
        if (in->role != MSG_ROLE_OWNER)
            return "only an owner changes roles";
        if (in->target == MSG_ROLE_OWNER && in->new_role != MSG_ROLE_OWNER && in->owners < 2) {
            *conflict = 1;
            return "the last owner cannot step down; make another member owner first";
        }
        return NULL;
    case MSG_ACT_LEAVE:
        if (direct)
            return "a direct conversation cannot be left; archive it instead";
        if (in->role == MSG_ROLE_OWNER && in->owners < 2 && in->members > 1) {
            *conflict = 1;
            return "the last owner must make another member owner before leaving";
        }
        return NULL;
    case MSG_ACT_PIN:
        return direct || manager ? NULL : "only owners and admins pin messages";
    case MSG_ACT_MODERATE:
        if (in->tenant_moderator || (!direct && manager))
            return NULL;
        return direct ? "only the sender deletes a message for everyone"
                      : "only the sender, owners, admins and moderators delete a message for everyone";
    }
    return "unknown action";
}

cJSON *messaging_bson_strings(const bson_t *doc, const char *key)
{
    cJSON *a = cJSON_CreateArray();
    bson_iter_t it, arr;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr))
        while (bson_iter_next(&arr))
            if (BSON_ITER_HOLDS_UTF8(&arr))
                cJSON_AddItemToArray(a, cJSON_CreateString(bson_iter_utf8(&arr, NULL)));
    return a;
}

static void add_time(cJSON *o, const char *name, int64_t ms)
{
    char ts[CM_RFC3339_LEN];
    cm_clock_rfc3339(ms, ts);
    cJSON_AddStringToObject(o, name, ts);
}

/* Adds `name` as an array when the document holds a non-empty one. */
static void add_strings_if_any(cJSON *o, const bson_t *doc, const char *name)
{
    cJSON *a = messaging_bson_strings(doc, name);
    if (cJSON_GetArraySize(a) > 0)
        cJSON_AddItemToObject(o, name, a);
    else
        cJSON_Delete(a);
}

cJSON *messaging_message_json(const bson_t *doc)
{
    cJSON *m = cJSON_CreateObject();
    const char *s;
    bson_iter_t it, arr;

    cJSON_AddStringToObject(m, "id", cm_bson_str(doc, "_id", ""));
    cJSON_AddStringToObject(m, "conversation_id", cm_bson_str(doc, "conversation_id", ""));
    cJSON_AddNumberToObject(m, "seq", (double)cm_bson_int(doc, "seq", 0));
    cJSON_AddStringToObject(m, "sender_id", cm_bson_str(doc, "sender_id", ""));
    cJSON_AddStringToObject(m, "type", cm_bson_str(doc, "type", "text"));
    cJSON_AddStringToObject(m, "text", cm_bson_str(doc, "text", ""));
    cJSON_AddStringToObject(m, "client_msg_id", cm_bson_str(doc, "client_msg_id", ""));
    add_time(m, "created_at", cm_bson_int(doc, "created_at", 0));
    add_strings_if_any(m, doc, "attachments");
    add_strings_if_any(m, doc, "mentions");
    if ((s = cm_bson_str(doc, "reply_to", NULL)) != NULL)
        cJSON_AddStringToObject(m, "reply_to", s);
    if ((s = cm_bson_str(doc, "thread_root", NULL)) != NULL)
        cJSON_AddStringToObject(m, "thread_root", s);
    if (cm_bson_int(doc, "reply_count", 0) > 0) {
        cJSON_AddNumberToObject(m, "reply_count", (double)cm_bson_int(doc, "reply_count", 0));
        add_time(m, "last_reply_at", cm_bson_int(doc, "last_reply_at", 0));
    }
    if (bson_iter_init_find(&it, doc, "forwarded_from") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        cJSON *f = cJSON_AddObjectToObject(m, "forwarded_from");
        cJSON_AddStringToObject(f, "conversation_id", cm_bson_str(doc, "forwarded_from.conversation_id", ""));
        cJSON_AddStringToObject(f, "message_id", cm_bson_str(doc, "forwarded_from.message_id", ""));
        cJSON_AddStringToObject(f, "sender_id", cm_bson_str(doc, "forwarded_from.sender_id", ""));
    }
    if (cm_bson_int(doc, "edits", 0) > 0) {
        cJSON_AddNumberToObject(m, "edits", (double)cm_bson_int(doc, "edits", 0));
        add_time(m, "edited_at", cm_bson_int(doc, "edited_at", 0));
    }
    if (cm_bson_bool(doc, "deleted", 0)) {
        cJSON_AddBoolToObject(m, "deleted", 1);
        add_time(m, "deleted_at", cm_bson_int(doc, "deleted_at", 0));
    }
    if (cm_bson_bool(doc, "pinned", 0)) {
        cJSON_AddBoolToObject(m, "pinned", 1);
        cJSON_AddStringToObject(m, "pinned_by", cm_bson_str(doc, "pinned_by", ""));
        add_time(m, "pinned_at", cm_bson_int(doc, "pinned_at", 0));
    }
    /* Reactions: [{e, n}] in first-reaction order, rendered [{emoji, count}]. */
    if (bson_iter_init_find(&it, doc, "reactions") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr)) {
        cJSON *rs = cJSON_CreateArray();
        while (bson_iter_next(&arr)) {
            bson_iter_t e;
            const char *emoji = NULL;
            int64_t n = 0;
            if (!BSON_ITER_HOLDS_DOCUMENT(&arr) || !bson_iter_recurse(&arr, &e))
                continue;
            while (bson_iter_next(&e)) {
                if (strcmp(bson_iter_key(&e), "e") == 0 && BSON_ITER_HOLDS_UTF8(&e))
                    emoji = bson_iter_utf8(&e, NULL);
                else if (strcmp(bson_iter_key(&e), "n") == 0)
                    n = bson_iter_as_int64(&e);
            }
            if (emoji && n > 0) {
                cJSON *r = cJSON_CreateObject();
                cJSON_AddStringToObject(r, "emoji", emoji);
                cJSON_AddNumberToObject(r, "count", (double)n);
                cJSON_AddItemToArray(rs, r);
            }
        }
        if (cJSON_GetArraySize(rs) > 0)
            cJSON_AddItemToObject(m, "reactions", rs);
        else
            cJSON_Delete(rs);
    }
    return m;
}

cJSON *messaging_conversation_json(const bson_t *conv)
{
    cJSON *c = cJSON_CreateObject(), *meta;
    const char *s, *type = cm_bson_str(conv, "type", "");
    bson_iter_t it;

    cJSON_AddStringToObject(c, "id", cm_bson_str(conv, "_id", ""));
    cJSON_AddStringToObject(c, "type", type);
    if ((s = cm_bson_str(conv, "title", NULL)) != NULL)
        cJSON_AddStringToObject(c, "title", s);
    if ((s = cm_bson_str(conv, "description", NULL)) != NULL)
        cJSON_AddStringToObject(c, "description", s);
    if ((s = cm_bson_str(conv, "image", NULL)) != NULL)
        cJSON_AddStringToObject(c, "image", s);
    if ((s = cm_bson_str(conv, "metadata", NULL)) != NULL && (meta = cJSON_Parse(s)) != NULL)
        cJSON_AddItemToObject(c, "metadata", meta);
    if (strcmp(type, "direct") == 0)
        cJSON_AddItemToObject(c, "members", messaging_bson_strings(conv, "members"));
    cJSON_AddNumberToObject(c, "member_count", (double)cm_bson_int(conv, "member_count", 0));
    if (strcmp(type, "channel") == 0)
        cJSON_AddBoolToObject(c, "members_can_post", cm_bson_bool(conv, "members_can_post", 0));
    if (cm_bson_int(conv, "slow_mode_s", 0) > 0)
        cJSON_AddNumberToObject(c, "slow_mode_s", (double)cm_bson_int(conv, "slow_mode_s", 0));
    cJSON_AddStringToObject(c, "created_by", cm_bson_str(conv, "created_by", ""));
    add_time(c, "created_at", cm_bson_int(conv, "created_at", 0));
    add_time(c, "last_activity_at", cm_bson_int(conv, "last_activity_at", 0));
    cJSON_AddNumberToObject(c, "last_seq", (double)cm_bson_int(conv, "last_seq", 0));
    if (bson_iter_init_find(&it, conv, "last_message") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        uint32_t len;
        const uint8_t *data;
        bson_t lm;
        bson_iter_document(&it, &len, &data);
        if (bson_init_static(&lm, data, len))
            cJSON_AddItemToObject(c, "last_message", messaging_message_json(&lm));
    } else {
        cJSON_AddNullToObject(c, "last_message");
    }
    if (cm_bson_bool(conv, "auto_archived", 0))
        cJSON_AddBoolToObject(c, "auto_archived", 1);
    if (cm_bson_bool(conv, "deleted", 0)) {
        cJSON_AddBoolToObject(c, "deleted", 1);
        add_time(c, "deleted_at", cm_bson_int(conv, "deleted_at", 0));
    }
    return c;
}

int64_t messaging_unread_mentions(const bson_t *member, int64_t read_seq)
{
    bson_iter_t it, arr;
    int64_t n = 0;
    if (bson_iter_init_find(&it, member, "mention_seqs") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr))
        while (bson_iter_next(&arr))
            if (bson_iter_as_int64(&arr) > read_seq)
                n++;
    return n;
}

void messaging_conversation_add_mine(cJSON *c, const bson_t *conv, const bson_t *member,
                                     int64_t now)
{
    int64_t last = cm_bson_int(conv, "last_seq", 0), rs = cm_bson_int(member, "read_seq", 0);
    int64_t muted = cm_bson_int(member, "muted_until", 0);

    cJSON_AddStringToObject(c, "role", cm_bson_str(member, "role", "member"));
    cJSON_AddBoolToObject(c, "archived", cm_bson_bool(member, "archived", 0));
    if (muted > now)
        add_time(c, "muted_until", muted);
    else
        cJSON_AddNullToObject(c, "muted_until");
    cJSON_AddNumberToObject(c, "read_seq", (double)rs);
    cJSON_AddNumberToObject(c, "delivered_seq", (double)cm_bson_int(member, "delivered_seq", 0));
    /* Sending moves the sender's read_seq, so own messages never count as unread. */
    cJSON_AddNumberToObject(c, "unread_count", (double)(last > rs ? last - rs : 0));
    cJSON_AddNumberToObject(c, "unread_mentions", (double)messaging_unread_mentions(member, rs));
}

cJSON *messaging_member_json(const bson_t *member)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "user_id", cm_bson_str(member, "user_id", ""));
    cJSON_AddStringToObject(m, "role", cm_bson_str(member, "role", "member"));
    add_time(m, "joined_at", cm_bson_int(member, "joined_at", 0));
    cJSON_AddNumberToObject(m, "read_seq", (double)cm_bson_int(member, "read_seq", 0));
    cJSON_AddNumberToObject(m, "delivered_seq", (double)cm_bson_int(member, "delivered_seq", 0));
    return m;
}

void messaging_keyset_after(bson_t *f, const char *field, int64_t ms, const char *id, int descending)
{
    const char *op = descending ? "$lt" : "$gt";
    bson_t or, a, b, cmp, cmpid;
    BSON_APPEND_ARRAY_BEGIN(f, "$or", &or);
    BSON_APPEND_DOCUMENT_BEGIN(&or, "0", &a);
    BSON_APPEND_DOCUMENT_BEGIN(&a, field, &cmp);
    BSON_APPEND_DATE_TIME(&cmp, op, ms);
    bson_append_document_end(&a, &cmp);
    bson_append_document_end(&or, &a);
    BSON_APPEND_DOCUMENT_BEGIN(&or, "1", &b);
    BSON_APPEND_DATE_TIME(&b, field, ms);
    BSON_APPEND_DOCUMENT_BEGIN(&b, "_id", &cmpid);
    BSON_APPEND_UTF8(&cmpid, op, id);
    bson_append_document_end(&b, &cmpid);
    bson_append_document_end(&or, &b);
    bson_append_array_end(f, &or);
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

void messaging_limits_for(messaging_ctx *ctx, const char *tenant, messaging_limits *out)
{
    cJSON *s = NULL;
    long days;
    cm_err rc;

    *out = ctx->limits;
    if (ctx->tenants == NULL)
        return;
    /* On an error the defaults apply: an unknown tenant has no token to get here with, and a
     * user service that did not answer is logged by cm_tenant_settings_get, once a retry. */
    rc = cm_tenant_settings_get(ctx->tenants, tenant, &s);
    if (rc != CM_OK)
        return;
    out->send_rate_per_min = cm_tenant_setting_long(s, "send_rate_per_min", out->send_rate_per_min);
    out->text_max = cm_tenant_setting_long(s, "message_max_chars", out->text_max);
    out->group_member_max = cm_tenant_setting_long(s, "group_member_max", out->group_member_max);
    out->edit_window_s = cm_tenant_setting_long(s, "edit_window_s", out->edit_window_s);
    /* Retention: the shorter of the tenant's and the platform's, 0 meaning no limit. */
    days = cm_tenant_setting_long(s, "retention_days", 0);
    if (days > 0 && (out->retention_days == 0 || days < out->retention_days))
        out->retention_days = days;
    cJSON_Delete(s);
}

int messaging_member_sees(const char *state, int64_t left_seq, int64_t left_at_ms,
                          int64_t msg_seq, int64_t msg_created_ms)
{
    if (state == NULL)
        return 0;
    if (strcmp(state, "active") == 0)
        return 1;
    if (strcmp(state, "left") != 0)
        return 0;
    /* Seqs are allocated inside the conversation's write section, like the leave itself, so
     * they order the two exactly; the time is only the fallback for older records. */
    if (left_seq >= 0)
        return msg_seq <= left_seq;
    return msg_created_ms < left_at_ms;
}
