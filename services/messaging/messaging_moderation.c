/* messaging_moderation.c - a tenant's moderation settings (GET and PUT
 * /v1/moderation/settings) and the checks every send passes before it is stored: bans and
 * mutes, slow mode, flood and duplicate detection, the blocklist, the link policy, the mention
 * cap and the tenant's pre-send hook (an HMAC-signed HTTP call with a time budget). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/sha.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "messaging.h"

#define COLL_SETTINGS "tenant_settings"
#define BLOCKLIST_MAX 100
#define PATTERN_MAX 200
#define DOMAINS_MAX 50
#define HOOK_REPLY_MAX 65536
#define CACHE_SLOTS 64
#define CACHE_TTL_MS 2000

/* Settings documents change rarely and every send reads them: a small per-process cache. */
static struct {
    pthread_mutex_t lock;
    struct slot {
        char tenant[CM_JWT_ID_MAX + 1];
        bson_t *doc; /* NULL: the tenant has no settings (defaults) */
        int64_t at;
    } slots[CACHE_SLOTS];
} cache = {PTHREAD_MUTEX_INITIALIZER, {{{0}, NULL, 0}}};

static unsigned slot_of(const char *tenant)
{
    unsigned h = 5381;
    for (const unsigned char *p = (const unsigned char *)tenant; *p; p++)
        h = h * 33 + *p;
    return h % CACHE_SLOTS;
}

/* Loads the tenant's settings (a copy into `out`, caller destroys; empty for defaults). */
static cm_err settings_load(messaging_ctx *ctx, const char *tenant, bson_t *out)
{
    struct slot *s = &cache.slots[slot_of(tenant)];
    int64_t now = cm_clock_now_ms();
    bson_t doc;
    cm_err rc;

    pthread_mutex_lock(&cache.lock);
    if (strcmp(s->tenant, tenant) == 0 && now - s->at < CACHE_TTL_MS) {
        if (s->doc)
            bson_copy_to(s->doc, out);
        else
            bson_init(out);
        pthread_mutex_unlock(&cache.lock);
        return CM_OK;
    }
    pthread_mutex_unlock(&cache.lock);
    rc = messaging_find_id(ctx, COLL_SETTINGS, tenant, &doc);
    if (rc != CM_OK && rc != CM_ENOTFOUND)
        return rc;
    pthread_mutex_lock(&cache.lock);
    if (s->doc)
        bson_destroy(s->doc);
    s->doc = rc == CM_OK ? bson_copy(&doc) : NULL;
    snprintf(s->tenant, sizeof(s->tenant), "%s", tenant);
    s->at = now;
    pthread_mutex_unlock(&cache.lock);
    if (rc == CM_OK) {
        bson_copy_to(&doc, out);
        bson_destroy(&doc);
    } else {
        bson_init(out);
    }
    return CM_OK;
}

static void settings_forget(const char *tenant)
{
    struct slot *s = &cache.slots[slot_of(tenant)];
    pthread_mutex_lock(&cache.lock);
    if (strcmp(s->tenant, tenant) == 0)
        s->at = 0;
    pthread_mutex_unlock(&cache.lock);
}

static int is_admin(const cm_jwt_claims *c)
{
    return cm_auth_has_role(c, "admin");
}

/* Renders the settings for the API; the hook's secret is never shown. */
static cJSON *settings_json(const bson_t *s, const messaging_limits *l)
{
    cJSON *o = cJSON_CreateObject(), *bl = cJSON_AddArrayToObject(o, "blocklist"), *h;
    bson_iter_t it, arr;
    if (bson_iter_init_find(&it, s, "blocklist") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr))
        while (bson_iter_next(&arr)) {
            bson_t e;
            uint32_t len;
            const uint8_t *data;
            cJSON *r;
            if (!BSON_ITER_HOLDS_DOCUMENT(&arr))
                continue;
            bson_iter_document(&arr, &len, &data);
            if (!bson_init_static(&e, data, len))
                continue;
            r = cJSON_CreateObject();
            cJSON_AddStringToObject(r, "text", cm_bson_str(&e, "text", ""));
            cJSON_AddStringToObject(r, "kind", cm_bson_str(&e, "kind", "word"));
            cJSON_AddStringToObject(r, "action", cm_bson_str(&e, "action", "reject"));
            cJSON_AddItemToArray(bl, r);
        }
    cJSON_AddStringToObject(o, "links", cm_bson_str(s, "links", "allow"));
    cJSON_AddItemToObject(o, "allowed_domains", messaging_bson_strings(s, "allowed_domains"));
    cJSON_AddNumberToObject(o, "mentions_max", (double)cm_bson_int(s, "mentions_max", MSG_MENTIONS_MAX));
    cJSON_AddNumberToObject(o, "flood_max", (double)cm_bson_int(s, "flood_max", 0));
    cJSON_AddNumberToObject(o, "flood_window_s", (double)cm_bson_int(s, "flood_window_s", 10));
    cJSON_AddNumberToObject(o, "duplicate_window_s", (double)cm_bson_int(s, "duplicate_window_s", 0));
    if (cm_bson_str(s, "hook.url", NULL)) {
        h = cJSON_AddObjectToObject(o, "hook");
        cJSON_AddStringToObject(h, "url", cm_bson_str(s, "hook.url", ""));
        cJSON_AddNumberToObject(h, "timeout_ms", (double)cm_bson_int(s, "hook.timeout_ms", 1500));
        cJSON_AddStringToObject(h, "on_timeout", cm_bson_str(s, "hook.on_timeout", "accept"));
        cJSON_AddBoolToObject(h, "secret_set", 1);
    } else {
        cJSON_AddNullToObject(o, "hook");
    }
    (void)l;
    return o;
}

/* GET /v1/moderation/settings (tenant admins and moderators) */
void messaging_moderation_settings_get(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    cm_jwt_claims c;
    bson_t s;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        return;
    if (!messaging_is_moderator(&c)) {
        cm_http_reply_error(req, CM_EFORBIDDEN, "only the tenant's admins and moderators read the moderation settings");
        return;
    }
    rc = settings_load(ctx, c.tid, &s);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, NULL);
        return;
    }
    cm_http_reply_json(req, 200, settings_json(&s, &ctx->limits));
    bson_destroy(&s);
}

/* Validates the blocklist of a settings body into `doc`. */
static cm_err read_blocklist(const cJSON *body, bson_t *doc, char *detail, size_t dn)
{
    const cJSON *bl = cJSON_GetObjectItemCaseSensitive(body, "blocklist"), *it;
    static const char *const allowed[] = {"text", "kind", "action", NULL};
    bson_t arr, e;
    int n = 0;
    char k[16];

    if (bl == NULL)
        return CM_OK;
    if (!cJSON_IsArray(bl) || cJSON_GetArraySize(bl) > BLOCKLIST_MAX) {
        snprintf(detail, dn, "field 'blocklist' must be an array of at most %d entries", BLOCKLIST_MAX);
        return CM_EINVAL;
    }
    BSON_APPEND_ARRAY_BEGIN(doc, "blocklist", &arr);
    cJSON_ArrayForEach(it, bl)
    {
        const char *text = NULL, *kind = "word", *action = "reject";
        if (!cJSON_IsObject(it) || cm_json_only_keys(it, allowed, detail, dn) ||
            cm_json_string(it, "text", 1, 1, PATTERN_MAX, &text, detail, dn) ||
            cm_json_string(it, "kind", 0, 1, 16, &kind, detail, dn) ||
            cm_json_string(it, "action", 0, 1, 16, &action, detail, dn)) {
            if (!cJSON_IsObject(it))
                snprintf(detail, dn, "each blocklist entry must be an object {text, kind, action}");
            bson_append_array_end(doc, &arr);
            return CM_EINVAL;
        }
        if ((strcmp(kind, "word") != 0 && strcmp(kind, "pattern") != 0) ||
            (strcmp(action, "reject") != 0 && strcmp(action, "mask") != 0) ||
            (strcmp(kind, "pattern") == 0 && !messaging_pattern_valid(text))) {
            snprintf(detail, dn, "blocklist entry %d: kind is word or pattern (a POSIX extended regular expression that compiles), action is reject or mask", n);
            bson_append_array_end(doc, &arr);
            return CM_EINVAL;
        }
        snprintf(k, sizeof(k), "%d", n++);
        BSON_APPEND_DOCUMENT_BEGIN(&arr, k, &e);
        BSON_APPEND_UTF8(&e, "text", text);
        BSON_APPEND_UTF8(&e, "kind", kind);
        BSON_APPEND_UTF8(&e, "action", action);
        bson_append_document_end(&arr, &e);
    }
    bson_append_array_end(doc, &arr);
    return CM_OK;
}

static cm_err read_hook(const cJSON *body, bson_t *doc, char *detail, size_t dn)
{
    static const char *const allowed[] = {"url", "secret", "timeout_ms", "on_timeout", NULL};
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(body, "hook");
    const char *url = NULL, *secret = NULL, *on_timeout = "accept";
    long timeout = 1500;
    bson_t sub;

    if (h == NULL || cJSON_IsNull(h))
        return CM_OK;
    if (!cJSON_IsObject(h) || cm_json_only_keys(h, allowed, detail, dn) ||
        cm_json_string(h, "url", 1, 8, 2000, &url, detail, dn) ||
        cm_json_string(h, "secret", 1, 16, 256, &secret, detail, dn) ||
        cm_json_long(h, "timeout_ms", 0, 50, 10000, &timeout, detail, dn) ||
        cm_json_string(h, "on_timeout", 0, 1, 16, &on_timeout, detail, dn)) {
        if (!cJSON_IsObject(h))
            snprintf(detail, dn, "field 'hook' must be an object {url, secret, timeout_ms, on_timeout} or null");
        return CM_EINVAL;
    }
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
        snprintf(detail, dn, "field 'hook.url' must be an http or https URL");
        return CM_EINVAL;
    }
    if (strcmp(on_timeout, "accept") != 0 && strcmp(on_timeout, "reject") != 0) {
        snprintf(detail, dn, "field 'hook.on_timeout' must be accept or reject");
        return CM_EINVAL;
    }
    BSON_APPEND_DOCUMENT_BEGIN(doc, "hook", &sub);
    BSON_APPEND_UTF8(&sub, "url", url);
    BSON_APPEND_UTF8(&sub, "secret", secret);
    BSON_APPEND_INT64(&sub, "timeout_ms", timeout);
    BSON_APPEND_UTF8(&sub, "on_timeout", on_timeout);
    bson_append_document_end(doc, &sub);
    return CM_OK;
}

/* PUT /v1/moderation/settings (tenant admins): replaces the tenant's settings. */
void messaging_moderation_settings_put(cm_http_req *req, void *ud)
{
    messaging_ctx *ctx = ud;
    static const char *const allowed[] = {"blocklist", "links", "allowed_domains", "mentions_max",
                                          "flood_max", "flood_window_s", "duplicate_window_s",
                                          "hook", NULL};
    cm_jwt_claims c;
    char detail[256];
    const char *links = "allow";
    long mentions = MSG_MENTIONS_MAX, flood = 0, flood_window = 10, dup = 0;
    const cJSON *domains, *it;
    bson_t doc = BSON_INITIALIZER, f = BSON_INITIALIZER, arr, saved;
    cJSON *body;
    int n = 0;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (!is_admin(&c)) {
        cm_http_reply_error(req, CM_EFORBIDDEN, "only the tenant's admins change the moderation settings");
        goto out;
    }
    if (cm_http_json_body(req, &body) != CM_OK)
        goto out;
    BSON_APPEND_UTF8(&doc, "_id", c.tid);
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_string(body, "links", 0, 1, 16, &links, detail, sizeof(detail)) ||
        cm_json_long(body, "mentions_max", 0, 0, MSG_MENTIONS_MAX, &mentions, detail, sizeof(detail)) ||
        cm_json_long(body, "flood_max", 0, 0, 1000, &flood, detail, sizeof(detail)) ||
        cm_json_long(body, "flood_window_s", 0, 1, 3600, &flood_window, detail, sizeof(detail)) ||
        cm_json_long(body, "duplicate_window_s", 0, 0, 86400, &dup, detail, sizeof(detail)) ||
        read_blocklist(body, &doc, detail, sizeof(detail)) ||
        read_hook(body, &doc, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    if (strcmp(links, "allow") != 0 && strcmp(links, "block") != 0 && strcmp(links, "allowlist") != 0) {
        cm_http_reply_error(req, CM_EINVAL, "field 'links' must be allow, block or allowlist");
        goto out;
    }
    domains = cJSON_GetObjectItemCaseSensitive(body, "allowed_domains");
    if (domains && (!cJSON_IsArray(domains) || cJSON_GetArraySize(domains) > DOMAINS_MAX)) {
        cm_http_reply_error(req, CM_EINVAL, "field 'allowed_domains' must be an array of at most 50 domains");
        goto out;
    }
    BSON_APPEND_UTF8(&doc, "links", links);
    BSON_APPEND_ARRAY_BEGIN(&doc, "allowed_domains", &arr);
    cJSON_ArrayForEach(it, domains)
    {
        char k[16];
        if (!cJSON_IsString(it) || strlen(it->valuestring) == 0 || strlen(it->valuestring) > 253 ||
            strspn(it->valuestring, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") !=
                strlen(it->valuestring)) {
            bson_append_array_end(&doc, &arr);
            cm_http_reply_error(req, CM_EINVAL, "field 'allowed_domains' must hold domain names");
            goto out;
        }
        snprintf(k, sizeof(k), "%d", n++);
        BSON_APPEND_UTF8(&arr, k, it->valuestring);
    }
    bson_append_array_end(&doc, &arr);
    BSON_APPEND_INT64(&doc, "mentions_max", mentions);
    BSON_APPEND_INT64(&doc, "flood_max", flood);
    BSON_APPEND_INT64(&doc, "flood_window_s", flood_window);
    BSON_APPEND_INT64(&doc, "duplicate_window_s", dup);
    BSON_APPEND_UTF8(&doc, "updated_by", c.sub);
    BSON_APPEND_DATE_TIME(&doc, "updated_at", cm_clock_now_ms());
    /* One document per tenant, replaced whole (a remove-then-insert would leave a gap where
     * the defaults apply; a concurrent PUT wins or loses as a whole). */
    BSON_APPEND_UTF8(&f, "_id", c.tid);
    rc = cm_mongo_delete(ctx->db, COLL_SETTINGS, &f, 0, NULL);
    if (rc == CM_OK)
        rc = cm_mongo_insert(ctx->db, COLL_SETTINGS, &doc);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the settings could not be stored");
        goto out;
    }
    settings_forget(c.tid);
    if (settings_load(ctx, c.tid, &saved) == CM_OK) {
        cm_http_reply_json(req, 200, settings_json(&saved, &ctx->limits));
        bson_destroy(&saved);
    } else {
        cm_http_reply_error(req, CM_EIO, NULL);
    }
out:
    bson_destroy(&doc);
    bson_destroy(&f);
}

/* --- the pre-send hook --------------------------------------------------------------------- */

struct buf {
    char *data;
    size_t len;
    int too_big;
};

static size_t on_reply(char *p, size_t size, size_t n, void *ud)
{
    struct buf *b = ud;
    size_t add = size * n;
    char *grown;
    if (b->len + add > HOOK_REPLY_MAX) {
        b->too_big = 1;
        return 0;
    }
    grown = realloc(b->data, b->len + add + 1);
    if (grown == NULL)
        return 0;
    b->data = grown;
    memcpy(b->data + b->len, p, add);
    b->len += add;
    b->data[b->len] = '\0';
    return add;
}

typedef enum { HOOK_ACCEPT, HOOK_REJECT, HOOK_REWRITE, HOOK_FAILED } hook_verdict;

/* POSTs the message to the tenant's hook, signed, within its time budget. `*text` receives a
 * rewritten text (heap) for HOOK_REWRITE; `why` the reason of a rejection or failure. */
static hook_verdict call_hook(const bson_t *s, const cm_jwt_claims *c, const char *cid,
                              const messaging_new_message *nm, char **text, char *why, size_t wn)
{
    char ts[24], sig[65], hsig[100], hts[48];
    struct buf reply = {0};
    struct curl_slist *h = NULL;
    cJSON *body = cJSON_CreateObject(), *r = NULL, *a;
    char *json;
    CURL *curl;
    CURLcode cc;
    long status = 0;
    hook_verdict v = HOOK_FAILED;

    cJSON_AddStringToObject(body, "tenant", c->tid);
    cJSON_AddStringToObject(body, "conversation_id", cid);
    cJSON_AddStringToObject(body, "sender_id", c->sub);
    cJSON_AddStringToObject(body, "type", nm->type);
    cJSON_AddStringToObject(body, "text", nm->text);
    if (nm->mentions)
        cJSON_AddItemToObject(body, "mentions", cJSON_Duplicate(nm->mentions, 1));
    if (nm->attachments)
        cJSON_AddItemToObject(body, "attachments", cJSON_Duplicate(nm->attachments, 1));
    json = cm_json_print(body);
    cJSON_Delete(body);
    snprintf(ts, sizeof(ts), "%lld", (long long)(cm_clock_now_ms() / 1000));
    if (json == NULL ||
        messaging_hook_signature(cm_bson_str(s, "hook.secret", ""), ts, json, strlen(json), sig) != 0 ||
        (curl = curl_easy_init()) == NULL) {
        snprintf(why, wn, "the hook request could not be made");
        free(json);
        return HOOK_FAILED;
    }
    snprintf(hts, sizeof(hts), "X-Chat-Timestamp: %s", ts);
    snprintf(hsig, sizeof(hsig), "X-Chat-Signature: sha256=%s", sig);
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, hts);
    h = curl_slist_append(h, hsig);
    curl_easy_setopt(curl, CURLOPT_URL, cm_bson_str(s, "hook.url", ""));
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, json);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)cm_bson_int(s, "hook.timeout_ms", 1500));
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_reply);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &reply);
    cc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (cc != CURLE_OK) {
        snprintf(why, wn, cc == CURLE_OPERATION_TIMEDOUT ? "the hook did not answer within its time budget"
                                                         : "the hook could not be reached");
    } else if (status != 200 || reply.data == NULL || (r = cJSON_Parse(reply.data)) == NULL ||
               !cJSON_IsString(a = cJSON_GetObjectItemCaseSensitive(r, "action"))) {
        snprintf(why, wn, "the hook answered %ld without a verdict", status);
    } else if (strcmp(a->valuestring, "accept") == 0) {
        v = HOOK_ACCEPT;
    } else if (strcmp(a->valuestring, "reject") == 0) {
        const cJSON *reason = cJSON_GetObjectItemCaseSensitive(r, "reason");
        snprintf(why, wn, "%s", cJSON_IsString(reason) ? reason->valuestring : "rejected by the tenant's check");
        v = HOOK_REJECT;
    } else if (strcmp(a->valuestring, "rewrite") == 0 &&
               cJSON_IsString(cJSON_GetObjectItemCaseSensitive(r, "text"))) {
        *text = strdup(cJSON_GetObjectItemCaseSensitive(r, "text")->valuestring);
        v = *text ? HOOK_REWRITE : HOOK_FAILED;
    } else {
        snprintf(why, wn, "the hook answered an unknown verdict");
    }
    cJSON_Delete(r);
    free(reply.data);
    curl_slist_free_all(h);
    curl_easy_cleanup(curl);
    free(json);
    return v;
}

/* --- the checks of a send --------------------------------------------------------------- */

/* 422: the content itself is refused by the tenant's moderation. */
static void unprocessable(cm_http_req *req, const char *detail)
{
    cm_http_problem(req, 422, "rejected", "Unprocessable Content", "%s", detail);
}

/* Loads the tenant's blocklist into rules (borrowing strings from `s`). */
static size_t blocklist_of(const bson_t *s, messaging_block_rule *rules, size_t cap)
{
    bson_iter_t it, arr;
    size_t n = 0;
    if (bson_iter_init_find(&it, s, "blocklist") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr))
        while (bson_iter_next(&arr) && n < cap) {
            bson_t e;
            uint32_t len;
            const uint8_t *data;
            if (!BSON_ITER_HOLDS_DOCUMENT(&arr))
                continue;
            bson_iter_document(&arr, &len, &data);
            if (!bson_init_static(&e, data, len))
                continue;
            rules[n].text = cm_bson_str(&e, "text", NULL); /* borrowed from `s` */
            rules[n].is_pattern = strcmp(cm_bson_str(&e, "kind", "word"), "pattern") == 0;
            rules[n].mask = strcmp(cm_bson_str(&e, "action", "reject"), "mask") == 0;
            if (rules[n].text)
                n++;
        }
    return n;
}

/* Redis-counted limits per user and conversation: slow mode, flood, duplicates. */
static int over_redis_limits(cm_http_req *req, messaging_ctx *ctx, const cm_jwt_claims *c,
                             const bson_t *conv, const bson_t *member, const bson_t *s,
                             const messaging_new_message *nm)
{
    const char *cid = cm_bson_str(conv, "_id", "");
    int64_t slow = cm_bson_int(conv, "slow_mode_s", 0), count = 0, ms = 0;
    int manager = messaging_role_parse(cm_bson_str(member, "role", "")) >= MSG_ROLE_ADMIN ||
                  messaging_is_moderator(c);
    char key[400], retry[24], detail[160];

    if (slow > 0 && !manager) {
        snprintf(key, sizeof(key), "slow:%s:%s", cid, c->sub);
        if (cm_redis_window_incr(ctx->redis, key, slow * 1000, &count, &ms) == CM_OK && count > 1) {
            snprintf(retry, sizeof(retry), "%lld", (long long)(ms + 999) / 1000);
            cm_http_add_header(req, "Retry-After", retry);
            snprintf(detail, sizeof(detail), "slow mode: one message every %lld seconds", (long long)slow);
            cm_http_reply_error(req, CM_ELIMIT, detail);
            return 1;
        }
    }
    snprintf(key, sizeof(key), "flood:%s:%s", cid, c->sub);
    if (cm_bson_int(s, "flood_max", 0) > 0 &&
        cm_redis_window_incr(ctx->redis, key, cm_bson_int(s, "flood_window_s", 10) * 1000, &count,
                             &ms) == CM_OK &&
        count > cm_bson_int(s, "flood_max", 0)) {
        snprintf(retry, sizeof(retry), "%lld", (long long)(ms + 999) / 1000);
        cm_http_add_header(req, "Retry-After", retry);
        cm_http_reply_error(req, CM_ELIMIT, "flood: too many messages in this conversation in a short time");
        return 1;
    }
    if (cm_bson_int(s, "duplicate_window_s", 0) > 0 && nm->text[0]) {
        /* The previous text's digest and client_msg_id: the same text again is refused,
         * unless it is a retry of that very message. */
        unsigned char d[SHA256_DIGEST_LENGTH];
        char val[2 * SHA256_DIGEST_LENGTH + MSG_CLIENT_ID_MAX + 2 + 16], prev[sizeof(val)];
        SHA256((const unsigned char *)nm->text, strlen(nm->text), d);
        for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
            snprintf(val + 2 * i, 3, "%02x", d[i]);
        snprintf(val + 2 * SHA256_DIGEST_LENGTH, sizeof(val) - 2 * SHA256_DIGEST_LENGTH, "|%s",
                 nm->client_msg_id ? nm->client_msg_id : "");
        snprintf(key, sizeof(key), "dup:%s:%s", cid, c->sub);
        if (cm_redis_get(ctx->redis, key, prev, sizeof(prev)) == CM_OK &&
            strncmp(prev, val, 2 * SHA256_DIGEST_LENGTH) == 0 &&
            (nm->client_msg_id == NULL || strcmp(prev, val) != 0)) {
            cm_http_reply_error(req, CM_ECONFLICT, "duplicate: the same text as your previous message here");
            return 1;
        }
        cm_redis_set(ctx->redis, key, val, cm_bson_int(s, "duplicate_window_s", 0) * 1000);
    }
    return 0;
}

int messaging_moderation_has_hook(messaging_ctx *ctx, const char *tenant)
{
    bson_t s;
    int has;
    if (settings_load(ctx, tenant, &s) != CM_OK)
        return 1; /* unknown: take the path that can call it */
    has = cm_bson_str(&s, "hook.url", NULL) != NULL;
    bson_destroy(&s);
    return has;
}

cm_err messaging_moderate_send(cm_http_req *req, messaging_ctx *ctx, const cm_jwt_claims *c,
                               const bson_t *conv, const bson_t *member,
                               const messaging_new_message *nm, char **text)
{
    messaging_block_rule rules[BLOCKLIST_MAX];
    const char *domains[DOMAINS_MAX];
    char host[256], why[300];
    char *masked = NULL, *rewritten = NULL;
    size_t nrules, which, nd = 0;
    const char *links;
    messaging_link_policy policy;
    bson_iter_t it, arr;
    bson_t s;
    cm_err rc;

    *text = NULL;
    rc = messaging_sanction_check(req, ctx, c, cm_bson_str(conv, "_id", ""));
    if (rc != CM_OK)
        return rc;
    rc = settings_load(ctx, c->tid, &s);
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the moderation settings could not be read");
        return rc;
    }
    rc = CM_EINVAL;
    if (nm->mentions && cJSON_GetArraySize(nm->mentions) > cm_bson_int(&s, "mentions_max", MSG_MENTIONS_MAX)) {
        snprintf(why, sizeof(why), "at most %lld mentions per message",
                 (long long)cm_bson_int(&s, "mentions_max", MSG_MENTIONS_MAX));
        cm_http_reply_error(req, CM_EINVAL, why);
        goto out;
    }
    if (over_redis_limits(req, ctx, c, conv, member, &s, nm)) {
        rc = CM_ELIMIT;
        goto out;
    }
    nrules = blocklist_of(&s, rules, BLOCKLIST_MAX);
    switch (messaging_blocklist_apply(nm->text, rules, nrules, &masked, &which)) {
    case 1:
        snprintf(why, sizeof(why), "the message holds a word the tenant blocks (%s)", rules[which].text);
        unprocessable(req, why);
        goto out;
    case -1:
        rc = CM_ENOMEM;
        cm_http_reply_error(req, rc, NULL);
        goto out;
    default:
        break;
    }
    links = cm_bson_str(&s, "links", "allow");
    policy = strcmp(links, "block") == 0 ? MSG_LINKS_BLOCK
             : strcmp(links, "allowlist") == 0 ? MSG_LINKS_ALLOWLIST : MSG_LINKS_ALLOW;
    if (bson_iter_init_find(&it, &s, "allowed_domains") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr))
        while (bson_iter_next(&arr) && nd < DOMAINS_MAX)
            if (BSON_ITER_HOLDS_UTF8(&arr))
                domains[nd++] = bson_iter_utf8(&arr, NULL);
    if (messaging_link_check(masked, policy, domains, nd, host, sizeof(host))) {
        snprintf(why, sizeof(why), "links to %s are not allowed here", host);
        unprocessable(req, why);
        goto out;
    }
    if (cm_bson_str(&s, "hook.url", NULL)) {
        messaging_new_message hooked = *nm;
        hooked.text = masked;
        switch (call_hook(&s, c, cm_bson_str(conv, "_id", ""), &hooked, &rewritten, why, sizeof(why))) {
        case HOOK_REJECT:
            {
                char d[400];
                snprintf(d, sizeof(d), "the tenant's check rejected the message: %s", why);
                unprocessable(req, d);
            }
            goto out;
        case HOOK_REWRITE: {
            messaging_limits lim;
            char bad[160];
            messaging_limits_for(ctx, c->tid, &lim);
            if (messaging_text_problem(rewritten, lim.text_max, bad, sizeof(bad)) &&
                !(rewritten[0] == '\0' && strcmp(nm->type, "text") != 0)) {
                cm_warn("pre-send hook of tenant %s rewrote to an invalid text: %s", c->tid, bad);
                snprintf(why, sizeof(why), "the tenant's check rewrote the message into an invalid one: %s", bad);
                unprocessable(req, why);
                goto out;
            }
            free(masked);
            masked = rewritten;
            rewritten = NULL;
            break;
        }
        case HOOK_FAILED:
            cm_warn("pre-send hook of tenant %s: %s", c->tid, why);
            if (strcmp(cm_bson_str(&s, "hook.on_timeout", "accept"), "reject") == 0) {
                cm_http_add_header(req, "Retry-After", "1");
                cm_http_problem(req, 503, "unavailable", "Service Unavailable",
                                "%s, and the tenant's policy is to reject then", why);
                rc = CM_EAGAIN;
                goto out;
            }
            break;
        case HOOK_ACCEPT:
            break;
        }
    }
    if (strcmp(masked, nm->text) != 0) {
        *text = masked;
        masked = NULL;
    }
    rc = CM_OK;
out:
    free(masked);
    free(rewritten);
    bson_destroy(&s);
    return rc;
}
