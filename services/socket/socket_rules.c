/* socket_rules.c - the socket service's plain rules: client frame validation, ack and event
 * renderings, the delivery order decision and the circuit breaker; no server needed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/json.h"
#include "common/utf8.h"
#include "socket.h"

/* jsmn (Debian libjsmn-dev, header only): a JSON tokenizer that reports where each value
 * starts and ends in the text, so a consumed event's data can go into the frame as the
 * producer wrote it. Strict mode, parent links; compiled into this file only. */
#define JSMN_STATIC
#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#include <jsmn.h>

#define FRAME_DEPTH 16

int64_t socket_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t socket_wall_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* --- circuit breaker ------------------------------------------------------------------------ */

int socket_breaker_allow(socket_breaker *b, int64_t now_ms)
{
    if (b->failures < b->threshold)
        return 1;
    if (now_ms < b->open_until || b->trial)
        return 0;
    b->trial = 1; /* half-open: one call finds out whether the upstream is back */
    return 1;
}

void socket_breaker_record(socket_breaker *b, int ok, int64_t now_ms)
{
    b->trial = 0;
    if (ok) {
        b->failures = 0;
        return;
    }
    if (++b->failures >= b->threshold)
        b->open_until = now_ms + b->open_ms;
}

/* --- client frames ------------------------------------------------------------------------- */

static const struct {
    const char *name;
    socket_cmd cmd;
} cmds[] = {
    {"message.send", SOCKET_CMD_SEND},         {"message.read", SOCKET_CMD_READ},
    {"message.received", SOCKET_CMD_RECEIVED}, {"typing.start", SOCKET_CMD_TYPING_START},
    {"typing.stop", SOCKET_CMD_TYPING_STOP},   {"presence.set", SOCKET_CMD_PRESENCE},
    {"sync", SOCKET_CMD_SYNC},                 {"ping", SOCKET_CMD_PING},
};

static cm_err fail(char *code, size_t ncode, const char *c)
{
    snprintf(code, ncode, "%s", c);
    return CM_EINVAL;
}

cm_err socket_frame_parse(const char *text, size_t len, socket_frame_in *out, char *code,
                          size_t ncode, char *detail, size_t n, char *id_out)
{
    socket_frame_in f = {0};
    const char *type = NULL;
    long seq = -1;
    cm_err rc = CM_EINVAL;

    id_out[0] = '\0';
    if (cm_json_parse(text, len, FRAME_DEPTH, &f.json, detail, n) != CM_OK) {
        fail(code, ncode, "bad-json");
        goto out;
    }
    if (!cJSON_IsObject(f.json)) {
        snprintf(detail, n, "a frame is a JSON object");
        fail(code, ncode, "bad-json");
        goto out;
    }
    if (cm_json_string(f.json, "id", 0, 1, SOCKET_FRAME_ID_MAX, &f.id, detail, n) != CM_OK) {
        fail(code, ncode, "validation");
        goto out;
    }
    if (f.id)
        snprintf(id_out, SOCKET_FRAME_ID_MAX + 1, "%s", f.id);
    if (cm_json_string(f.json, "type", 1, 1, 32, &type, detail, n) != CM_OK) {
        fail(code, ncode, "validation");
        goto out;
    }
    size_t i = 0;
    for (; i < sizeof(cmds) / sizeof(cmds[0]) && strcmp(cmds[i].name, type) != 0; i++)
        ;
    if (i == sizeof(cmds) / sizeof(cmds[0])) {
        snprintf(detail, n, "unknown frame type '%s'", type);
        fail(code, ncode, "unknown-type");
        goto out;
    }
    f.cmd = cmds[i].cmd;
    switch (f.cmd) {
    case SOCKET_CMD_SEND:
    case SOCKET_CMD_TYPING_START:
    case SOCKET_CMD_TYPING_STOP:
        if (cm_json_string(f.json, "conversation_id", 1, 1, SOCKET_ID_MAX, &f.conversation_id,
                           detail, n) != CM_OK)
            goto bad;
        break;
    case SOCKET_CMD_READ:
    case SOCKET_CMD_RECEIVED:
        if (cm_json_string(f.json, "conversation_id", 1, 1, SOCKET_ID_MAX, &f.conversation_id,
                           detail, n) != CM_OK ||
            cm_json_long(f.json, "seq", 1, 0, 1L << 53, &seq, detail, n) != CM_OK)
            goto bad;
        f.seq = seq;
        break;
    case SOCKET_CMD_PRESENCE:
        if (cm_json_string(f.json, "status", 1, 1, 16, &f.status, detail, n) != CM_OK)
            goto bad;
        if (strcmp(f.status, "online") && strcmp(f.status, "away") &&
            strcmp(f.status, "invisible")) {
            snprintf(detail, n, "field 'status' must be online, away or invisible");
            goto bad;
        }
        break;
    case SOCKET_CMD_SYNC:
        f.since = "";
        if (cm_json_string(f.json, "since", 0, 0, 400000, &f.since, detail, n) != CM_OK)
            goto bad;
        break;
    case SOCKET_CMD_PING:
        break;
    }
    /* Conversation ids go into an upstream URL path: only the characters ids are made of. */
    if (f.conversation_id && strspn(f.conversation_id, "0123456789abcdefABCDEF-") !=
                                 strlen(f.conversation_id)) {
        snprintf(detail, n, "field 'conversation_id' is not a conversation id");
        goto bad;
    }
    *out = f;
    f.json = NULL;
    return CM_OK;
bad:
    fail(code, ncode, "validation");
out:
    cJSON_Delete(f.json);
    return rc;
}

void socket_frame_in_cleanup(socket_frame_in *f)
{
    if (f) {
        cJSON_Delete(f->json);
        f->json = NULL;
    }
}

char *socket_send_body(const socket_frame_in *f)
{
    cJSON *body = cJSON_Duplicate(f->json, 1);
    char *s;

    if (body == NULL)
        return NULL;
    cJSON_DeleteItemFromObjectCaseSensitive(body, "type");
    cJSON_DeleteItemFromObjectCaseSensitive(body, "id");
    cJSON_DeleteItemFromObjectCaseSensitive(body, "conversation_id");
    s = cm_json_print(body);
    cJSON_Delete(body);
    return s;
}

char *socket_ack_json(const char *id, const char *status, cJSON *extra)
{
    cJSON *o = cJSON_CreateObject();
    char *s;

    cJSON_AddStringToObject(o, "type", "ack");
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "status", status);
    for (cJSON *c = extra ? extra->child : NULL; c;) {
        cJSON *next = c->next;
        cJSON_AddItemToObject(o, c->string, cJSON_DetachItemViaPointer(extra, c));
        c = next;
    }
    cJSON_Delete(extra);
    s = cm_json_print(o);
    cJSON_Delete(o);
    return s;
}

char *socket_rejected_json(const char *id, int status, const char *problem, const char *reason)
{
    cJSON *extra = cJSON_CreateObject(), *p = problem ? cJSON_Parse(problem) : NULL;
    int retryable = status == 0 || status == 429 || status >= 500;

    if (p && !cJSON_IsObject(p)) {
        cJSON_Delete(p);
        p = NULL;
    }
    if (p == NULL) {
        p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "type", status == 429 ? "urn:chat:problem:rate-limited"
                                           : retryable   ? "urn:chat:problem:unavailable"
                                                         : "urn:chat:problem:rejected");
        cJSON_AddStringToObject(p, "title", reason);
        cJSON_AddNumberToObject(p, "status", status ? status : 503);
    }
    cJSON_AddStringToObject(extra, "reason", reason);
    cJSON_AddBoolToObject(extra, "retryable", retryable);
    cJSON_AddItemToObject(extra, "problem", p);
    return socket_ack_json(id, "rejected", extra);
}

/* --- events -------------------------------------------------------------------------------- */

int socket_order_decide(int64_t pos, int64_t eseq)
{
    if (pos < 0 || eseq > pos + 1)
        return 2;
    return eseq == pos + 1 ? 1 : 0;
}

void socket_event_release(socket_event *ev)
{
    if (ev == NULL || --ev->refs > 0)
        return;
    for (size_t i = 0; i < ev->nmembers; i++)
        free(ev->members[i]);
    free(ev->members);
    free(ev->frame);
    free(ev);
}

static void copy_str(char *dst, size_t cap, const cJSON *v)
{
    if (cJSON_IsString(v) && strlen(v->valuestring) < cap)
        memcpy(dst, v->valuestring, strlen(v->valuestring) + 1);
}

/* Renders the shared part of an event frame; the connection appends its cursor and "}". */
static cm_err render(socket_event *ev, const char *event_id, const char *time, const cJSON *extra,
                     const cJSON *data)
{
    cJSON *o = cJSON_CreateObject();
    char *s;

    cJSON_AddStringToObject(o, "type", ev->type);
    if (event_id)
        cJSON_AddStringToObject(o, "event_id", event_id);
    cJSON_AddStringToObject(o, "conversation_id", ev->conversation_id);
    cJSON_AddNumberToObject(o, "eseq", (double)ev->eseq);
    if (time)
        cJSON_AddStringToObject(o, "time", time);
    /* References, not copies: printed once here, while the caller still holds them. */
    if (extra)
        cJSON_AddItemReferenceToObject(o, "reason", (cJSON *)extra);
    if (data)
        cJSON_AddItemReferenceToObject(o, "data", (cJSON *)data);
    else
        cJSON_AddItemToObject(o, "data", cJSON_CreateObject());
    s = cm_json_print(o);
    cJSON_Delete(o);
    if (s == NULL)
        return CM_ENOMEM;
    ev->frame_len = strlen(s) - 1; /* without the closing brace */
    s[ev->frame_len] = '\0';
    ev->frame = s;
    return CM_OK;
}

/* A notification.created (proto/events/notification.created.schema.json): its recipient
 * (data.user_id) and the whole frame {"type","event_id","time","data"}. CM_EINVAL without a
 * tenant, recipient, id or data object. */
static cm_err render_notification(socket_event *ev, const cJSON *ce, const cJSON *data)
{
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ce, "id")),
               *time = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ce, "time"));
    cJSON *o;
    char *s;

    ev->kind = SOCKET_EV_NOTIFICATION;
    copy_str(ev->user_id, sizeof(ev->user_id), cJSON_GetObjectItemCaseSensitive(data, "user_id"));
    if (!cJSON_IsObject(data) || id == NULL || strlen(id) >= sizeof(ev->event_id) ||
        !ev->tenant[0] || !ev->user_id[0])
        return CM_EINVAL;
    memcpy(ev->event_id, id, strlen(id) + 1);
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", ev->type);
    cJSON_AddStringToObject(o, "event_id", id);
    if (time)
        cJSON_AddStringToObject(o, "time", time);
    cJSON_AddItemToObject(o, "data", cJSON_Duplicate(data, 1));
    s = cm_json_print(o);
    cJSON_Delete(o);
    if (s == NULL)
        return CM_ENOMEM;
    ev->frame = s;
    ev->frame_len = strlen(s);
    return CM_OK;
}

/* Remembers who a membership event is about, so the index can follow it. */
static void note_members(socket_event *ev, const cJSON *data)
{
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(data, "members"), *m;
    size_t n = (size_t)cJSON_GetArraySize(list);

    copy_str(ev->user_id, sizeof(ev->user_id), cJSON_GetObjectItemCaseSensitive(data, "user_id"));
    if (!cJSON_IsArray(list) || n == 0 || (ev->members = calloc(n, sizeof(char *))) == NULL)
        return;
    cJSON_ArrayForEach(m, list)
    {
        const cJSON *u = cJSON_IsString(m) ? m : cJSON_GetObjectItemCaseSensitive(m, "user_id");
        if (cJSON_IsString(u) && (ev->members[ev->nmembers] = strdup(u->valuestring)))
            ev->nmembers++;
    }
}

static socket_event *event_new(void)
{
    socket_event *ev = calloc(1, sizeof(*ev));

    if (ev)
        ev->refs = 1;
    return ev;
}

/* --- consumed log events without a tree (the fan-out's hot path) ---------------------------- */

/* Tokens of one CloudEvent the fast path reads; an event with more (a message with many
 * mentions or attachments) takes the tree path, as does anything else unusual below. */
#define FAST_TOKENS 256

/* 1 when string token `t` of `js` is exactly `s`. */
static int tok_is(const char *js, const jsmntok_t *t, const char *s)
{
    size_t n = strlen(s);

    return t->type == JSMN_STRING && (size_t)(t->end - t->start) == n &&
           memcmp(js + t->start, s, n) == 0;
}

/* The index of the token after token `i` and everything inside it. */
static int tok_next(const jsmntok_t *t, int n, int i)
{
    int end = t[i].end;

    for (i++; i < n && t[i].start < end; i++)
        ;
    return i;
}

/* 1 when string token `t` holds no escape (its bytes are its value) and is shorter than
 * `cap`; its value is then copied into `dst` when `dst` is not NULL. */
static int tok_plain(const char *js, const jsmntok_t *t, char *dst, size_t cap)
{
    size_t n = (size_t)(t->end - t->start);

    if (t->type != JSMN_STRING || n >= cap || memchr(js + t->start, '\\', n))
        return 0;
    if (dst) {
        memcpy(dst, js + t->start, n);
        dst[n] = '\0';
    }
    return 1;
}

/* Points `*var` at value `v` when member name `k` is `name` and `*var` is not set yet. */
static void take(const char *js, const jsmntok_t *k, const jsmntok_t *v, const char *name,
                 const jsmntok_t **var)
{
    if (*var == NULL && tok_is(js, k, name))
        *var = v;
}

/* The length of the longest prefix of `s[0..len)` whose bytes are all 0x20..0x7f (printable
 * ASCII and DEL): such bytes are valid UTF-8 each on its own, and a multi-byte sequence
 * starts only at a byte >= 0x80, so what follows the prefix can be validated on its own.
 * Eight bytes at a time: a word has a byte >= 0x80 when (w & 0x80..80) is not 0, and a byte
 * below 0x20 when (w - 0x20..20) & ~w & 0x80..80 is not 0 (the "has less than" test of
 * Bit Twiddling Hacks, exact when no byte has its top bit set). */
static size_t printable_ascii_prefix(const char *s, size_t len)
{
    const uint64_t high = 0x8080808080808080ULL, blank = 0x2020202020202020ULL;
    size_t i = 0;

    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if ((w & high) || ((w - blank) & ~w & high))
            break;
    }
    while (i < len && (unsigned char)s[i] >= 0x20 && (unsigned char)s[i] < 0x80)
        i++;
    return i;
}

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

/* The frame of an ordinary log event (a message created, edited, deleted, a reaction...) from
 * the CloudEvent's text, without building a tree: jsmn finds the envelope's members and the
 * bounds of "data", whose bytes become the frame's data as written (the producers print it
 * with cJSON, unformatted; the tree path parsed and printed it again, per event, about a third
 * of the service's CPU in a rooms-of-5 fan-out). The envelope's strings are taken only when
 * they hold no escape, so their bytes are already what cJSON would print. CM_EAGAIN when the
 * event needs the tree path: membership events (their members are read), escapes, control
 * bytes, more than FAST_TOKENS tokens, a missing or non-integer eseq, data not an object,
 * anything jsmn refuses; that path then decides (it also reports malformed events). */
static cm_err event_fast(const char *key, size_t key_len, const char *json, size_t len,
                         socket_event **out)
{
    jsmntok_t t[FAST_TOKENS];
    jsmn_parser parser;
    const jsmntok_t *type = NULL, *tenant = NULL, *id = NULL, *tm = NULL, *eseq = NULL,
                    *audience = NULL, *data = NULL;
    char num[24], *end = NULL, *p;
    long long seq;
    socket_event *ev;
    int n, i;

    size_t plain;

    if (len == 0 || len > (size_t)1 << 30 || key_len == 0 || key_len > SOCKET_ID_MAX)
        return CM_EAGAIN;
    /* Control bytes are whitespace between tokens (not printed by cJSON) or malformed strings:
     * either way the tree path, which prints what clients can parse. An event is mostly
     * printable ASCII, checked a word at a time; the rest, byte by byte and for UTF-8. */
    plain = printable_ascii_prefix(json, len);
    for (size_t k = plain; k < len; k++)
        if ((unsigned char)json[k] < 0x20)
            return CM_EAGAIN;
    for (size_t k = 0; k < key_len; k++)
        if ((unsigned char)key[k] < 0x20 || (unsigned char)key[k] > 0x7e || key[k] == '"' ||
            key[k] == '\\')
            return CM_EAGAIN;
    if ((plain < len && !cm_utf8_valid(json + plain, len - plain)) ||
        (memchr(json, '\\', len) && memmem(json, len, "\\u0000", 6)))
        return CM_EAGAIN;
    jsmn_init(&parser);
    n = jsmn_parse(&parser, json, len, t, FAST_TOKENS);
    if (n < 1 || t[0].type != JSMN_OBJECT || t[0].start != 0 || (size_t)t[0].end != len)
        return CM_EAGAIN;
    /* The envelope's members; the first of a repeated name counts, as with cJSON. */
    for (i = 1; i < n && t[i].start < t[0].end;) {
        const jsmntok_t *k = &t[i], *v = i + 1 < n ? &t[i + 1] : NULL;
        if (v == NULL || k->type != JSMN_STRING || k->size != 1)
            return CM_EAGAIN;
        if (memchr(json + k->start, '\\', (size_t)(k->end - k->start)))
            return CM_EAGAIN; /* an escaped name: the tree compares them unescaped */
        take(json, k, v, "type", &type);
        take(json, k, v, "tenant", &tenant);
        take(json, k, v, "id", &id);
        take(json, k, v, "time", &tm);
        take(json, k, v, "eseq", &eseq);
        take(json, k, v, "audience", &audience);
        take(json, k, v, "data", &data);
        i = tok_next(t, n, i + 1);
    }
    if (type == NULL || tenant == NULL || eseq == NULL || data == NULL ||
        data->type != JSMN_OBJECT || eseq->type != JSMN_PRIMITIVE ||
        (size_t)(eseq->end - eseq->start) >= sizeof(num) || (id && !tok_plain(json, id, NULL, 256)) ||
        (tm && !tok_plain(json, tm, NULL, 256)))
        return CM_EAGAIN;
    memcpy(num, json + eseq->start, (size_t)(eseq->end - eseq->start));
    num[eseq->end - eseq->start] = '\0';
    if (num[0] < '1' || num[0] > '9')
        return CM_EAGAIN;
    errno = 0;
    seq = strtoll(num, &end, 10);
    if (errno || *end != '\0' || seq > ((long long)1 << 53))
        return CM_EAGAIN; /* a fraction, an exponent or out of range: the tree decides */
    if ((ev = event_new()) == NULL)
        return CM_ENOMEM;
    if (!tok_plain(json, type, ev->type, sizeof(ev->type)) || !ev->type[0] ||
        !tok_plain(json, tenant, ev->tenant, sizeof(ev->tenant)) || !ev->tenant[0] ||
        (audience && !tok_plain(json, audience, ev->audience, sizeof(ev->audience))) ||
        /* Membership events: their members and user are read from the tree. */
        strcmp(ev->type, "conversation.created") == 0 || strcmp(ev->type, "member.added") == 0 ||
        strcmp(ev->type, "member.removed") == 0) {
        socket_event_release(ev);
        return CM_EAGAIN;
    }
    ev->kind = SOCKET_EV_CONVERSATION;
    memcpy(ev->conversation_id, key, key_len);
    ev->conversation_id[key_len] = '\0';
    ev->key = cm_cursor_key(ev->conversation_id);
    ev->eseq = (int64_t)seq;
    /* {"type":"..","event_id":"..","conversation_id":"..","eseq":N,"time":"..","data":{..}
     * (render's members and order), open at the end for the connection's cursor. */
    size_t cap = 96 + (size_t)(type->end - type->start) + key_len + strlen(num) +
                 (id ? (size_t)(id->end - id->start) : 0) +
                 (tm ? (size_t)(tm->end - tm->start) : 0) +
                 (size_t)(data->end - data->start);
    if ((ev->frame = malloc(cap)) == NULL) {
        socket_event_release(ev);
        return CM_ENOMEM;
    }
    p = put(ev->frame, "{\"type\":\"", 9);
    p = put(p, json + type->start, (size_t)(type->end - type->start));
    if (id) {
        p = put(p, "\",\"event_id\":\"", 14);
        p = put(p, json + id->start, (size_t)(id->end - id->start));
    }
    p = put(p, "\",\"conversation_id\":\"", 21);
    p = put(p, key, key_len);
    p = put(p, "\",\"eseq\":", 9);
    p = put(p, num, strlen(num));
    if (tm) {
        p = put(p, ",\"time\":\"", 9);
        p = put(p, json + tm->start, (size_t)(tm->end - tm->start));
        p = put(p, "\"", 1);
    }
    p = put(p, ",\"data\":", 8);
    p = put(p, json + data->start, (size_t)(data->end - data->start));
    *p = '\0';
    ev->frame_len = (size_t)(p - ev->frame);
    *out = ev;
    return CM_OK;
}

cm_err socket_event_from_cloudevent(const char *topic, const char *key, size_t key_len,
                                    const char *json, size_t len, socket_event **out)
{
    char detail[128];
    cJSON *ce = NULL;
    const cJSON *type, *eseq, *data;
    socket_event *ev = NULL;
    cm_err rc = CM_EINVAL;

    if (strcmp(topic, "messages") == 0 || strcmp(topic, "conversations") == 0) {
        rc = event_fast(key, key_len, json, len, out);
        if (rc != CM_EAGAIN)
            return rc;
        rc = CM_EINVAL;
    }
    if (cm_json_parse(json, len, 64, &ce, detail, sizeof(detail)) != CM_OK ||
        !cJSON_IsObject(ce))
        goto out;
    type = cJSON_GetObjectItemCaseSensitive(ce, "type");
    data = cJSON_GetObjectItemCaseSensitive(ce, "data");
    if (!cJSON_IsString(type) || (ev = event_new()) == NULL) {
        rc = ev ? CM_EINVAL : CM_ENOMEM;
        goto out;
    }
    copy_str(ev->type, sizeof(ev->type), type);
    copy_str(ev->tenant, sizeof(ev->tenant), cJSON_GetObjectItemCaseSensitive(ce, "tenant"));
    if (strcmp(topic, "users") == 0) {
        rc = CM_ENOTFOUND;
        if (strcmp(ev->type, "session.revoked") != 0)
            goto out;
        ev->kind = SOCKET_EV_REVOKED;
        copy_str(ev->sid, sizeof(ev->sid), cJSON_GetObjectItemCaseSensitive(data, "session_id"));
        copy_str(ev->user_id, sizeof(ev->user_id),
                 cJSON_GetObjectItemCaseSensitive(data, "user_id"));
        rc = ev->sid[0] && ev->tenant[0] ? CM_OK : CM_EINVAL;
        goto out;
    }
    if (strcmp(topic, "notifications") == 0) {
        rc = CM_ENOTFOUND; /* notification.requested is the notification service's own */
        if (strcmp(ev->type, "notification.created") != 0)
            goto out;
        rc = render_notification(ev, ce, data);
        goto out;
    }
    eseq = cJSON_GetObjectItemCaseSensitive(ce, "eseq");
    if (!cJSON_IsNumber(eseq) || eseq->valuedouble < 1 || key_len == 0 ||
        key_len > SOCKET_ID_MAX || !ev->tenant[0] || !ev->type[0]) {
        rc = CM_ENOTFOUND; /* not from a conversation log: nothing to deliver in order */
        goto out;
    }
    ev->kind = SOCKET_EV_CONVERSATION;
    memcpy(ev->conversation_id, key, key_len);
    ev->conversation_id[key_len] = '\0';
    ev->key = cm_cursor_key(ev->conversation_id);
    ev->eseq = (int64_t)eseq->valuedouble;
    copy_str(ev->audience, sizeof(ev->audience),
             cJSON_GetObjectItemCaseSensitive(ce, "audience"));
    note_members(ev, data);
    rc = render(ev, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ce, "id")),
                cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ce, "time")), NULL, data);
out:
    cJSON_Delete(ce);
    if (rc == CM_OK)
        *out = ev;
    else
        socket_event_release(ev);
    return rc;
}

cm_err socket_event_from_sync_item(const char *tenant, const cJSON *item, socket_event **out)
{
    const cJSON *cid = cJSON_GetObjectItemCaseSensitive(item, "conversation_id"),
                *type = cJSON_GetObjectItemCaseSensitive(item, "type"),
                *eseq = cJSON_GetObjectItemCaseSensitive(item, "eseq"),
                *data = cJSON_GetObjectItemCaseSensitive(item, "data");
    socket_event *ev;
    cm_err rc;

    if (!cJSON_IsString(cid) || !cJSON_IsString(type) || !cJSON_IsNumber(eseq) ||
        strlen(cid->valuestring) > SOCKET_ID_MAX)
        return CM_EINVAL;
    if ((ev = event_new()) == NULL)
        return CM_ENOMEM;
    ev->kind = SOCKET_EV_CONVERSATION;
    snprintf(ev->tenant, sizeof(ev->tenant), "%s", tenant);
    copy_str(ev->conversation_id, sizeof(ev->conversation_id), cid);
    copy_str(ev->type, sizeof(ev->type), type);
    ev->key = cm_cursor_key(ev->conversation_id);
    ev->eseq = (int64_t)eseq->valuedouble;
    note_members(ev, data);
    rc = render(ev, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(item, "id")),
                cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(item, "time")),
                cJSON_GetObjectItemCaseSensitive(item, "reason"), data);
    if (rc != CM_OK) {
        socket_event_release(ev);
        return rc;
    }
    *out = ev;
    return CM_OK;
}

int socket_origin_allowed(const char *allowed, const char *origin)
{
    size_t olen;

    if (allowed == NULL || allowed[0] == '\0' || origin == NULL)
        return 1;
    olen = strlen(origin);
    while (*allowed) {
        const char *end = strchr(allowed, ',');
        size_t len = end ? (size_t)(end - allowed) : strlen(allowed);
        const char *a = allowed;
        while (len && *a == ' ') {
            a++;
            len--;
        }
        while (len && a[len - 1] == ' ')
            len--;
        if ((len == 1 && a[0] == '*') || (len == olen && len && strncasecmp(a, origin, len) == 0))
            return 1;
        if (end == NULL)
            break;
        allowed = end + 1;
    }
    return 0;
}
