/* notification_devices.c - the caller's push devices (POST/GET/DELETE /v1/devices), the
 * delivery attempts of a notification, the redrive of a dead-lettered delivery, and the
 * diagnostics that answer "why was user U (not) notified of message M" from the recorded
 * decisions. Every read and write is scoped by the token's tenant. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "common/uuid.h"
#include "notification.h"
#include "notification_channels.h"
#include "notification_webpush.h"

#define DEVICES_MAX 16 /* devices one user may register (the oldest is not evicted: 409) */
#define TOKEN_MAX 4096 /* bytes of a push token (a web push subscription fits) */

static void add_time(cJSON *o, const char *name, const bson_t *doc, const char *field)
{
    bson_iter_t it;
    char ts[CM_RFC3339_LEN];
    if (bson_iter_init_find(&it, doc, field) && BSON_ITER_HOLDS_DATE_TIME(&it)) {
        cm_clock_rfc3339(bson_iter_date_time(&it), ts);
        cJSON_AddStringToObject(o, name, ts);
    }
}

static cJSON *device_json(const bson_t *d, void *ud)
{
    cJSON *o = cJSON_CreateObject();
    const char *app = cm_bson_str(d, "app_id", "");
    (void)ud;
    cJSON_AddStringToObject(o, "id", cm_bson_str(d, "_id", ""));
    cJSON_AddStringToObject(o, "platform", cm_bson_str(d, "platform", ""));
    cJSON_AddStringToObject(o, "token", cm_bson_str(d, "token", ""));
    if (app[0])
        cJSON_AddStringToObject(o, "app_id", app);
    add_time(o, "created_at", d, "created_at");
    return o;
}

static int token_valid(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > TOKEN_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)t[i] < 0x21 || (unsigned char)t[i] > 0x7e)
            return 0;
    return 1;
}

static int app_id_valid(const char *a)
{
    size_t n = strlen(a);
    if (n == 0 || n > 255)
        return 0;
    return strspn(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") == n;
}

/* The string `key` of object `o` (named `name` in problems), 1..max characters; NULL with
 * the reason in `detail` when missing or not such a string. */
static const char *sub_string(const cJSON *o, const char *key, const char *name, size_t max,
                              char *detail, size_t n)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsString(v) || v->valuestring[0] == '\0' || strlen(v->valuestring) > max) {
        snprintf(detail, n, "field '%s' must be a string of 1..%zu characters", name, max);
        return NULL;
    }
    return v->valuestring;
}

/* The web push subscription of `body` (a browser's PushSubscription.toJSON(): endpoint,
 * expirationTime, keys.p256dh, keys.auth) into the out-parameters (pointing into `body`);
 * -1 with the reason in `detail` when it is missing or malformed. */
static int parse_subscription(const cJSON *body, const char **endpoint, const char **p256dh,
                              const char **auth, char *detail, size_t n)
{
    const cJSON *sub = cJSON_GetObjectItemCaseSensitive(body, "subscription"), *keys, *e;
    const cJSON *item;

    if (!cJSON_IsObject(sub)) {
        snprintf(detail, n, "field 'subscription' (the browser's PushSubscription: endpoint, "
                            "keys.p256dh, keys.auth) is required for platform 'webpush'");
        return -1;
    }
    cJSON_ArrayForEach(item, sub)
    {
        if (strcmp(item->string, "endpoint") != 0 && strcmp(item->string, "keys") != 0 &&
            strcmp(item->string, "expirationTime") != 0) {
            snprintf(detail, n, "unknown field 'subscription.%.64s'", item->string);
            return -1;
        }
    }
    e = cJSON_GetObjectItemCaseSensitive(sub, "expirationTime");
    if (e && !cJSON_IsNull(e) && !cJSON_IsNumber(e)) {
        snprintf(detail, n, "field 'subscription.expirationTime' must be a number or null");
        return -1;
    }
    if ((*endpoint = sub_string(sub, "endpoint", "subscription.endpoint",
                                NF_WEBPUSH_ENDPOINT_MAX, detail, n)) == NULL)
        return -1;
    if (!nf_webpush_endpoint_valid(*endpoint)) {
        snprintf(detail, n, "field 'subscription.endpoint' must be an http:// or https:// URL "
                            "of printable ASCII without spaces");
        return -1;
    }
    keys = cJSON_GetObjectItemCaseSensitive(sub, "keys");
    if (!cJSON_IsObject(keys)) {
        snprintf(detail, n, "field 'subscription.keys' must be an object with p256dh and auth");
        return -1;
    }
    if ((*p256dh = sub_string(keys, "p256dh", "subscription.keys.p256dh", 100, detail, n)) ==
            NULL ||
        (*auth = sub_string(keys, "auth", "subscription.keys.auth", 100, detail, n)) == NULL ||
        !nf_webpush_keys_valid(*p256dh, *auth, detail, n))
        return -1;
    return 0;
}

/* The devices cache after stored device `old` moved to `user` (web push: with new keys
 * `p256dh` and `auth`, else NULL): gone from its former user's devices, in the new one's. */
static void cache_moved(nf_ctx *ctx, const bson_t *old, const char *user, const char *p256dh,
                        const char *auth)
{
    static const char *const keep[] = {"_id", "tenant", "platform", "token", "app_id", NULL};
    bson_t d = BSON_INITIALIZER;

    nf_devcache_forget(ctx, cm_bson_str(old, "tenant", ""), cm_bson_str(old, "user_id", ""),
                       cm_bson_str(old, "_id", ""));
    for (int i = 0; keep[i]; i++)
        if (cm_bson_str(old, keep[i], NULL))
            BSON_APPEND_UTF8(&d, keep[i], cm_bson_str(old, keep[i], ""));
    BSON_APPEND_UTF8(&d, "user_id", user);
    if (p256dh && auth) {
        BSON_APPEND_UTF8(&d, "p256dh", p256dh);
        BSON_APPEND_UTF8(&d, "auth", auth);
    }
    nf_devcache_put(ctx, &d);
    bson_destroy(&d);
}

/* POST /v1/devices {"platform": "fcm"|"apns"|"webpush", "token": ..., "app_id": ...,
 * "subscription": {...} (webpush only; its endpoint is the token)}:
 * 201 with the new device; 200 with the device when the token is already registered (to the
 * caller, or moved to the caller from another user of the tenant: one token, one device). */
void nf_devices_create(cm_http_req *req, void *ud)
{
    static const char *const allowed[] = {"platform", "token", "app_id", "subscription", NULL};
    nf_ctx *ctx = ud;
    cm_jwt_claims c;
    cJSON *body;
    const char *platform = NULL, *token = NULL, *app = NULL, *p256dh = NULL, *auth = NULL;
    const char *endpoint = NULL;
    int web;
    char detail[160], id[CM_UUID_STRLEN], k[TOKEN_MAX + 300];
    bson_t doc = BSON_INITIALIZER, f = BSON_INITIALIZER, old;
    int64_t count = 0;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK || cm_http_json_body(req, &body) != CM_OK)
        goto out;
    if (cm_json_only_keys(body, allowed, detail, sizeof(detail)) ||
        cm_json_string(body, "platform", 1, 1, 16, &platform, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    web = strcmp(platform, "webpush") == 0;
    if (cm_json_string(body, "token", !web, 1, TOKEN_MAX, &token, detail, sizeof(detail)) ||
        cm_json_string(body, "app_id", 0, 1, 255, &app, detail, sizeof(detail))) {
        cm_http_reply_error(req, CM_EINVAL, detail);
        goto out;
    }
    if (web) {
        if (parse_subscription(body, &endpoint, &p256dh, &auth, detail, sizeof(detail)) != 0) {
            cm_http_reply_error(req, CM_EINVAL, detail);
            goto out;
        }
        if (token && strcmp(token, endpoint) != 0) {
            cm_http_reply_error(req, CM_EINVAL, "field 'token' of a web push device is its "
                                                "subscription's endpoint: leave it out");
            goto out;
        }
        token = endpoint;
    } else if (cJSON_GetObjectItemCaseSensitive(body, "subscription") != NULL) {
        cm_http_reply_error(req, CM_EINVAL,
                            "field 'subscription' is for platform 'webpush' only");
        goto out;
    }
    if (strcmp(platform, "fcm") != 0 && strcmp(platform, "apns") != 0 &&
        strcmp(platform, "webpush") != 0) {
        cm_http_reply_error(req, CM_EINVAL, "field 'platform' must be 'fcm', 'apns' or 'webpush'");
        goto out;
    }
    if (!token_valid(token)) {
        cm_http_reply_error(req, CM_EINVAL,
                            "field 'token' must be 1..4096 printable ASCII characters without spaces");
        goto out;
    }
    if (app && !app_id_valid(app)) {
        cm_http_reply_error(req, CM_EINVAL,
                            "field 'app_id' must be 1..255 of A-Z a-z 0-9 . - _ (a bundle or package id)");
        goto out;
    }
    snprintf(k, sizeof(k), "%s|%s|%s", c.tid, platform, token);
    BSON_APPEND_UTF8(&f, "k", k);
    rc = cm_mongo_find_one(ctx->db, NF_COLL_DEVICES, &f, NULL, &old);
    if (rc == CM_OK) {
        if (strcmp(cm_bson_str(&old, "user_id", ""), c.sub) != 0 ||
            (web && (strcmp(cm_bson_str(&old, "p256dh", ""), p256dh) != 0 ||
                     strcmp(cm_bson_str(&old, "auth", ""), auth) != 0))) {
            /* The device changed hands within the tenant (the token now reaches the caller),
             * or the browser subscribed again with new keys. */
            bson_t u = BSON_INITIALIZER, set;
            BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
            BSON_APPEND_UTF8(&set, "user_id", c.sub);
            if (web) {
                BSON_APPEND_UTF8(&set, "p256dh", p256dh);
                BSON_APPEND_UTF8(&set, "auth", auth);
            }
            bson_append_document_end(&u, &set);
            rc = cm_mongo_update(ctx->db, NF_COLL_DEVICES, &f, &u, 0, 0, NULL);
            bson_destroy(&u);
            if (rc != CM_OK) {
                bson_destroy(&old);
                cm_http_reply_error(req, rc, "the device could not be stored");
                goto out;
            }
            cache_moved(ctx, &old, c.sub, p256dh, auth);
        }
        cm_http_reply_json(req, 200, device_json(&old, NULL));
        bson_destroy(&old);
        goto out;
    }
    if (rc != CM_ENOTFOUND) {
        cm_http_reply_error(req, rc, "the devices could not be read");
        goto out;
    }
    bson_reinit(&f);
    BSON_APPEND_UTF8(&f, "tenant", c.tid);
    BSON_APPEND_UTF8(&f, "user_id", c.sub);
    if ((rc = cm_mongo_count(ctx->db, NF_COLL_DEVICES, &f, &count)) != CM_OK) {
        cm_http_reply_error(req, rc, "the devices could not be counted");
        goto out;
    }
    if (count >= DEVICES_MAX) {
        cm_http_reply_error(req, CM_ECONFLICT,
                            "at most 16 devices per user: delete one first (DELETE /v1/devices/{id})");
        goto out;
    }
    if ((rc = cm_uuid_v7(id)) != CM_OK) {
        cm_http_reply_error(req, rc, "no id");
        goto out;
    }
    BSON_APPEND_UTF8(&doc, "_id", id);
    BSON_APPEND_UTF8(&doc, "k", k);
    BSON_APPEND_UTF8(&doc, "tenant", c.tid);
    BSON_APPEND_UTF8(&doc, "user_id", c.sub);
    BSON_APPEND_UTF8(&doc, "platform", platform);
    BSON_APPEND_UTF8(&doc, "token", token);
    if (app)
        BSON_APPEND_UTF8(&doc, "app_id", app);
    if (web) {
        BSON_APPEND_UTF8(&doc, "p256dh", p256dh);
        BSON_APPEND_UTF8(&doc, "auth", auth);
    }
    BSON_APPEND_DATE_TIME(&doc, "created_at", cm_clock_now_ms());
    rc = cm_mongo_insert(ctx->db, NF_COLL_DEVICES, &doc);
    if (rc == CM_ECONFLICT) {
        /* Registered by a concurrent call with the same token: the unique key kept one. */
        cm_http_problem(req, 409, "conflict", "Conflict",
                        "this token was being registered concurrently; send it again");
        goto out;
    }
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the device could not be stored");
        goto out;
    }
    nf_devcache_put(ctx, &doc);
    {
        char loc[80];
        snprintf(loc, sizeof(loc), "/v1/devices/%s", id);
        cm_http_add_header(req, "Location", loc);
    }
    cm_http_reply_json(req, 201, device_json(&doc, NULL));
out:
    bson_destroy(&doc);
    bson_destroy(&f);
}

/* GET /v1/devices: the caller's devices, oldest first (at most 16, one page). */
void nf_devices_list(cm_http_req *req, void *ud)
{
    nf_ctx *ctx = ud;
    cm_jwt_claims c;
    bson_t f = BSON_INITIALIZER, sort = BSON_INITIALIZER;
    cJSON *items = NULL;
    char next[64] = "";
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    BSON_APPEND_UTF8(&f, "tenant", c.tid);
    BSON_APPEND_UTF8(&f, "user_id", c.sub);
    BSON_APPEND_INT32(&sort, "_id", 1);
    rc = cm_mongo_find_page(ctx->db, NF_COLL_DEVICES, &f, &sort, DEVICES_MAX, "_id", device_json,
                            NULL, &items, next, sizeof(next));
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the devices could not be read");
        goto out;
    }
    cm_http_reply_page(req, items, NULL);
out:
    bson_destroy(&f);
    bson_destroy(&sort);
}

/* DELETE /v1/devices/{id}: 204; another user's or tenant's device is 404. */
void nf_devices_delete(cm_http_req *req, void *ud)
{
    nf_ctx *ctx = ud;
    cm_jwt_claims c;
    const char *id = cm_http_param(req, "id");
    bson_t f = BSON_INITIALIZER;
    int64_t n = 0;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    BSON_APPEND_UTF8(&f, "_id", id);
    BSON_APPEND_UTF8(&f, "tenant", c.tid);
    BSON_APPEND_UTF8(&f, "user_id", c.sub);
    if ((rc = cm_mongo_delete(ctx->db, NF_COLL_DEVICES, &f, 0, &n)) != CM_OK) {
        cm_http_reply_error(req, rc, "the device could not be deleted");
        goto out;
    }
    if (n == 0) {
        cm_http_problem(req, 404, "not-found", "Not Found", "no device %s", id);
        goto out;
    }
    nf_devcache_forget(ctx, c.tid, c.sub, id);
    cm_http_reply_json(req, 204, NULL);
out:
    bson_destroy(&f);
}

/* --- deliveries --------------------------------------------------------------------------- */

static cJSON *delivery_json(const bson_t *d, void *ud)
{
    cJSON *o = cJSON_CreateObject(), *hist = cJSON_AddArrayToObject(o, "attempts");
    bson_iter_t it, arr;
    (void)ud;
    cJSON_AddStringToObject(o, "id", cm_bson_str(d, "_id", ""));
    cJSON_AddStringToObject(o, "notification_id", cm_bson_str(d, "notification_id", ""));
    cJSON_AddStringToObject(o, "device_id", cm_bson_str(d, "device_id", ""));
    cJSON_AddStringToObject(o, "platform", cm_bson_str(d, "platform", ""));
    cJSON_AddStringToObject(o, "state", cm_bson_str(d, "state", ""));
    add_time(o, "created_at", d, "created_at");
    if (bson_iter_init_find(&it, d, "history") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr)) {
        while (bson_iter_next(&arr)) {
            const uint8_t *data;
            uint32_t len;
            bson_t h;
            cJSON *a;
            if (!BSON_ITER_HOLDS_DOCUMENT(&arr))
                continue;
            bson_iter_document(&arr, &len, &data);
            if (!bson_init_static(&h, data, len))
                continue;
            a = cJSON_CreateObject();
            cJSON_AddNumberToObject(a, "attempt", (double)cm_bson_int(&h, "attempt", 0));
            add_time(a, "at", &h, "at");
            cJSON_AddStringToObject(a, "outcome", cm_bson_str(&h, "outcome", ""));
            if (cm_bson_int(&h, "status", 0) > 0)
                cJSON_AddNumberToObject(a, "status", (double)cm_bson_int(&h, "status", 0));
            cJSON_AddStringToObject(a, "detail", cm_bson_str(&h, "detail", ""));
            cJSON_AddItemToArray(hist, a);
        }
    }
    return o;
}

cJSON *nf_delivery_json(const bson_t *d, void *ud)
{
    return delivery_json(d, ud);
}

/* Whether the caller may look at `user`'s notifications: they are that user, or they may
 * manage the tenant (tenant_admin). */
static int may_inspect(const cm_jwt_claims *c, const char *user)
{
    return strcmp(c->sub, user) == 0 || cm_auth_can(c, "tenant.manage");
}

/* GET /v1/notifications/{id}/deliveries: the push deliveries of one notification with every
 * attempt (outcome, provider status, detail). */
void nf_deliveries(cm_http_req *req, void *ud)
{
    nf_ctx *ctx = ud;
    cm_jwt_claims c;
    const char *id = cm_http_param(req, "id");
    bson_t f = BSON_INITIALIZER, sort = BSON_INITIALIZER, n;
    cJSON *items = NULL;
    char next[64] = "";
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    rc = cm_mongo_find_owned(ctx->db, NF_COLL_NOTIFICATIONS, id, c.tid, NULL, &n);
    if (rc == CM_OK && !may_inspect(&c, cm_bson_str(&n, "user_id", ""))) {
        bson_destroy(&n);
        rc = CM_ENOTFOUND;
    } else if (rc == CM_OK) {
        bson_destroy(&n);
    }
    if (rc == CM_ENOTFOUND) {
        cm_http_problem(req, 404, "not-found", "Not Found", "no notification %s", id);
        goto out;
    }
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the notification could not be read");
        goto out;
    }
    bson_reinit(&f);
    BSON_APPEND_UTF8(&f, "tenant", c.tid);
    BSON_APPEND_UTF8(&f, "notification_id", id);
    BSON_APPEND_INT32(&sort, "_id", 1);
    rc = cm_mongo_find_page(ctx->ddb, NF_COLL_DELIVERIES, &f, &sort, 100, "_id", delivery_json,
                            NULL, &items, next, sizeof(next));
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the deliveries could not be read");
        goto out;
    }
    cm_http_reply_page(req, items, NULL);
out:
    bson_destroy(&f);
    bson_destroy(&sort);
}

/* POST /v1/notifications/deliveries/{id}/redrive (tenant_admin): a dead-lettered or failed
 * delivery is queued again with fresh retries. 409 while it is queued or once sent. */
void nf_redrive(cm_http_req *req, void *ud)
{
    nf_ctx *ctx = ud;
    cm_jwt_claims c;
    const char *id = cm_http_param(req, "id");
    char state[32];
    bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, set, push, h, d;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto out;
    if (!cm_auth_can(&c, "tenant.manage")) {
        cm_http_problem(req, 403, "forbidden", "Forbidden",
                        "redriving a delivery needs the permission tenant.manage");
        goto out;
    }
    if (nf_delivery_find(ctx, req, c.tid, id, &d) != CM_OK)
        goto out;
    BSON_APPEND_UTF8(&f, "_id", id);
    BSON_APPEND_UTF8(&f, "tenant", c.tid);
    snprintf(state, sizeof(state), "%s", cm_bson_str(&d, "state", ""));
    if (strcmp(state, "dead_lettered") != 0 && strcmp(state, "failed") != 0) {
        cm_http_problem(req, 409, "conflict", "Conflict",
                        "only a dead_lettered or failed delivery is redriven; this one is %s",
                        state);
        bson_destroy(&d);
        goto out;
    }
    bson_destroy(&d);
    BSON_APPEND_UTF8(&f, "state", state); /* unchanged since read */
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_UTF8(&set, "state", "queued");
    BSON_APPEND_INT32(&set, "attempts", 0);
    BSON_APPEND_INT64(&set, "next_at", cm_clock_now_ms());
    bson_append_document_end(&u, &set);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$push", &push);
    BSON_APPEND_DOCUMENT_BEGIN(&push, "history", &h);
    BSON_APPEND_INT32(&h, "attempt", 0);
    BSON_APPEND_DATE_TIME(&h, "at", cm_clock_now_ms());
    BSON_APPEND_UTF8(&h, "outcome", "redriven");
    BSON_APPEND_UTF8(&h, "detail", c.sub);
    bson_append_document_end(&push, &h);
    bson_append_document_end(&u, &push);
    if ((rc = cm_mongo_update(ctx->ddb, NF_COLL_DELIVERIES, &f, &u, 0, 0, NULL)) != CM_OK) {
        cm_http_reply_error(req, rc, "the delivery could not be queued again");
        goto out;
    }
    bson_reinit(&f);
    BSON_APPEND_UTF8(&f, "_id", id);
    if (cm_mongo_find_one(ctx->ddb, NF_COLL_DELIVERIES, &f, NULL, &d) != CM_OK) {
        cm_http_reply_error(req, CM_EIO, "the delivery could not be read back");
        goto out;
    }
    cm_http_reply_json(req, 202, delivery_json(&d, NULL));
    if (ctx->push && strcmp(cm_bson_str(&d, "platform", ""), "email") != 0 &&
        strcmp(cm_bson_str(&d, "platform", ""), "sms") != 0) {
        /* This process's sender takes it now (its timers; the others' sweeps would later). */
        const bson_t *one = &d;
        nf_push_kick(ctx->push, &one, 1);
    } else {
        nf_mail_kick(ctx->mail); /* the e-mail and SMS sender sleeps until a kick or a due time */
    }
    bson_destroy(&d);
out:
    bson_destroy(&f);
    bson_destroy(&u);
}

/* --- diagnostics -------------------------------------------------------------------------- */

static const char *explain(const char *decision)
{
    static const struct {
        const char *d, *text;
    } words[] = {
        {"sent", "pushed: the provider accepted it"},
        {"online", "not pushed: the user was online, so it went in-app over the WebSocket"},
        {"muted", "not pushed: the user muted the conversation"},
        {"no_device", "not pushed: the user has no registered device"},
        {"dead_token", "not pushed: the provider said the device token is dead (device removed)"},
        {"provider_error", "not pushed: the provider refused or kept failing (see deliveries)"},
        {"queued", "push queued for a device"},
        {"preference", "not pushed: the user turned push off for this type"},
        {"quiet_hours", "push deferred to the end of the user's quiet hours (not dropped)"},
        {"delivered", "pushed and delivered: the device or the tenant's backend confirmed it"},
        {"bounced", "pushed but not delivered: the tenant's backend reported it bounced"},
    };
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strcmp(words[i].d, decision) == 0)
            return words[i].text;
    return decision;
}

static int collect_decision(const bson_t *doc, void *ud)
{
    cJSON *arr = ud, *o = cJSON_CreateObject();
    const char *dev = cm_bson_str(doc, "device_id", NULL), *dec = cm_bson_str(doc, "decision", "");
    cJSON_AddStringToObject(o, "channel", cm_bson_str(doc, "channel", ""));
    cJSON_AddStringToObject(o, "decision", dec);
    cJSON_AddStringToObject(o, "explanation",
                            strcmp(cm_bson_str(doc, "channel", "push"), "push") == 0
                                ? explain(dec)
                                : nf_channel_explain(cm_bson_str(doc, "channel", ""), dec));
    if (dev)
        cJSON_AddStringToObject(o, "device_id", dev);
    cJSON_AddStringToObject(o, "detail", cm_bson_str(doc, "detail", ""));
    add_time(o, "at", doc, "at");
    cJSON_AddItemToArray(arr, o);
    return 0;
}

/* The decisions a push delivery stands for (one document less per push): "queued" when the
 * consumer queued it (the reason is in queued_detail; a deferred one has its "quiet_hours"
 * decision instead), and "sent" for each attempt the provider accepted. */
static int collect_delivery_decisions(const bson_t *d, void *ud)
{
    cJSON *arr = ud;
    const char *platform = cm_bson_str(d, "platform", ""), *dev = cm_bson_str(d, "device_id", "");
    bson_iter_t it, hist;

    if (strcmp(platform, "email") == 0 || strcmp(platform, "sms") == 0)
        return 0; /* their decisions are documents of their own */
    if (cm_bson_str(d, "queued_detail", NULL) != NULL) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "channel", "push");
        cJSON_AddStringToObject(o, "decision", "queued");
        cJSON_AddStringToObject(o, "explanation", explain("queued"));
        cJSON_AddStringToObject(o, "device_id", dev);
        cJSON_AddStringToObject(o, "detail", cm_bson_str(d, "queued_detail", ""));
        add_time(o, "at", d, "created_at");
        cJSON_AddItemToArray(arr, o);
    }
    if (bson_iter_init_find(&it, d, "history") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &hist)) {
        while (bson_iter_next(&hist)) {
            const uint8_t *data;
            uint32_t len;
            bson_t h;
            cJSON *o;
            if (!BSON_ITER_HOLDS_DOCUMENT(&hist))
                continue;
            bson_iter_document(&hist, &len, &data);
            if (!bson_init_static(&h, data, len) ||
                strcmp(cm_bson_str(&h, "outcome", ""), "sent") != 0)
                continue;
            o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "channel", "push");
            cJSON_AddStringToObject(o, "decision", "sent");
            cJSON_AddStringToObject(o, "explanation", explain("sent"));
            cJSON_AddStringToObject(o, "device_id", dev);
            cJSON_AddStringToObject(o, "detail", cm_bson_str(&h, "detail", ""));
            add_time(o, "at", &h, "at");
            cJSON_AddItemToArray(arr, o);
        }
    }
    return 0;
}

/* Orders `arr` by "at" (RFC 3339 in UTC with milliseconds: sorts as text), stably. */
static void sort_by_at(cJSON *arr)
{
    int n = cJSON_GetArraySize(arr);
    cJSON **v = calloc(n > 0 ? (size_t)n : 1, sizeof(*v));
    if (v == NULL)
        return;
    for (int i = n - 1; i >= 0; i--)
        v[i] = cJSON_DetachItemFromArray(arr, i);
    for (int i = 1; i < n; i++) {
        cJSON *x = v[i];
        const cJSON *xa = cJSON_GetObjectItemCaseSensitive(x, "at");
        const char *xs = cJSON_IsString(xa) ? xa->valuestring : "";
        int j = i - 1;
        for (; j >= 0; j--) {
            const cJSON *ya = cJSON_GetObjectItemCaseSensitive(v[j], "at");
            if (strcmp(cJSON_IsString(ya) ? ya->valuestring : "", xs) <= 0)
                break;
            v[j + 1] = v[j];
        }
        v[j + 1] = x;
    }
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, v[i]);
    free(v);
}

/* GET /v1/notifications/diagnostics?user_id=U&message_id=M: whether U got an in-app
 * notification of M, and every push decision recorded for it, in order, each explained.
 * The user themselves or a tenant_admin; another tenant's user or message: nothing. */
void nf_diagnostics(cm_http_req *req, void *ud)
{
    nf_ctx *ctx = ud;
    cm_jwt_claims c;
    const char *user = cm_http_query(req, "user_id"), *msg = cm_http_query(req, "message_id");
    bson_t f = BSON_INITIALIZER, opts = BSON_INITIALIZER, sort, n;
    cJSON *out = NULL, *decisions;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK)
        goto done;
    if (user == NULL || !cm_user_id_valid(user) || msg == NULL || !cm_uuid_valid(msg)) {
        cm_http_reply_error(req, CM_EINVAL,
                            "query parameters user_id (a user id) and message_id (a message id) are required");
        goto done;
    }
    if (!may_inspect(&c, user)) {
        cm_http_problem(req, 403, "forbidden", "Forbidden",
                        "only the user themselves or a tenant_admin may diagnose their notifications");
        goto done;
    }
    out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "user_id", user);
    cJSON_AddStringToObject(out, "message_id", msg);
    BSON_APPEND_UTF8(&f, "tenant", c.tid);
    BSON_APPEND_UTF8(&f, "user_id", user);
    BSON_APPEND_UTF8(&f, "message_id", msg);
    rc = cm_mongo_find_one(ctx->db, NF_COLL_NOTIFICATIONS, &f, NULL, &n);
    if (rc == CM_OK) {
        cJSON_AddItemToObject(out, "in_app", nf_notification_json(&n));
        bson_destroy(&n);
    } else if (rc == CM_ENOTFOUND) {
        cJSON_AddNullToObject(out, "in_app");
    } else {
        cm_http_reply_error(req, rc, "the notifications could not be read");
        goto done;
    }
    decisions = cJSON_AddArrayToObject(out, "decisions");
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "_id", 1);
    bson_append_document_end(&opts, &sort);
    if ((rc = cm_mongo_find(ctx->db, NF_COLL_DECISIONS, &f, &opts, collect_decision, decisions)) !=
        CM_OK) {
        cm_http_reply_error(req, rc, "the decisions could not be read");
        goto done;
    }
    if ((rc = cm_mongo_find(ctx->ddb, NF_COLL_DELIVERIES, &f, NULL, collect_delivery_decisions,
                            decisions)) != CM_OK) {
        cm_http_reply_error(req, rc, "the deliveries could not be read");
        goto done;
    }
    sort_by_at(decisions);
    cJSON_AddStringToObject(
        out, "summary",
        cJSON_GetObjectItemCaseSensitive(out, "in_app") &&
                cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(out, "in_app"))
            ? "no notification: the user sent the message, was not a member of its conversation "
              "when it arrived, it was a system message, or it has not been processed yet"
        : cJSON_GetArraySize(decisions) == 0
            ? "notified in-app; no push decision recorded yet"
            : "notified in-app; the push decisions say what happened on each device");
    cm_http_reply_json(req, 200, out);
    out = NULL;
done:
    cJSON_Delete(out);
    bson_destroy(&f);
    bson_destroy(&opts);
}
