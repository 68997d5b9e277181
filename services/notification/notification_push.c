/* notification_push.c - push notifications: the plan (muted? online? which devices?), the
 * decisions recorded for diagnostics, and the sender thread that delivers queued deliveries to
 * FCM HTTP v1 (OAuth 2.0 access token from a service-account assertion, RFC 7523, cached) and
 * APNs (ES256 provider token, HTTP/2), retries at the configured delays (1 s, 5 s, 30 s) with
 * jitter, gives up to the DLQ topic, and prunes the tokens a provider reports dead.
 *
 * One delivery per (notification, device), created with a unique key, so a replayed event
 * queues nothing twice. A delivery is claimed with a Redis lease before it is sent (FerretDB
 * updates are not atomic, so two instances could both take it from MongoDB alone). */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/event.h"
#include "common/httpc.h"
#include "common/json.h"
#include "common/jws.h"
#include "common/log.h"
#include "common/uuid.h"
#include "notification.h"
#include "notification_channels.h"

#define LEASE_MS 60000          /* a claimed delivery is someone's for this long */
#define BATCH 32                /* deliveries taken per round */
#define PROVIDER_BODY_MAX 65536 /* bytes of a provider's answer kept */

struct nf_push {
    nf_ctx *ctx;
    nf_push_config cfg;
    char instance[33];
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop, kick;
    /* FCM access token (RFC 6749 section 5.1), used by the sender thread only. */
    char fcm_token[4096];
    int64_t fcm_token_until;
    /* APNs provider token: Apple accepts one for an hour and refuses a new one more often
     * than every 20 minutes ("Establishing a token-based connection to APNs"). */
    char apns_token[1024];
    int64_t apns_token_until;
    atomic_long sent, retried, dead_lettered, dead_tokens, failed, token_fetches;
};

/* --- decisions ------------------------------------------------------------------------- */

void nf_decision(nf_ctx *ctx, const nf_push_item *it, const char *decision, const char *device_id,
                 const char *detail)
{
    char id[CM_UUID_STRLEN], k[600];
    const char *channel = it->channel ? it->channel : "push";
    bson_t d = BSON_INITIALIZER;

    if (cm_uuid_v7(id) != CM_OK)
        return;
    snprintf(k, sizeof(k), "%s|%s|%s|%s|%s|%s", it->tenant, it->event_id, it->user, channel,
             decision, device_id ? device_id : "");
    BSON_APPEND_UTF8(&d, "_id", id);
    BSON_APPEND_UTF8(&d, "k", k);
    BSON_APPEND_UTF8(&d, "tenant", it->tenant);
    BSON_APPEND_UTF8(&d, "user_id", it->user);
    BSON_APPEND_UTF8(&d, "event_id", it->event_id);
    BSON_APPEND_UTF8(&d, "notification_id", it->notification_id);
    if (it->message_id)
        BSON_APPEND_UTF8(&d, "message_id", it->message_id);
    BSON_APPEND_UTF8(&d, "channel", channel);
    BSON_APPEND_UTF8(&d, "decision", decision);
    if (device_id)
        BSON_APPEND_UTF8(&d, "device_id", device_id);
    BSON_APPEND_UTF8(&d, "detail", detail ? detail : "");
    BSON_APPEND_DATE_TIME(&d, "at", cm_clock_now_ms());
    /* A replay finds its decision already recorded (unique k): nothing to do. */
    (void)cm_mongo_insert(ctx->db, NF_COLL_DECISIONS, &d);
    bson_destroy(&d);
}

/* --- the plan ------------------------------------------------------------------------- */

/* 1 when the user has a live WebSocket connection: the socket service keeps each live
 * connection in the sorted set presence:<tenant>:<user>:conns scored by its expiry (ms),
 * refreshed by heartbeats (services/socket/socket_ephemeral.c). -1 when Redis cannot tell. */
static int online(nf_ctx *ctx, const char *tenant, const char *user)
{
    static const char LIVE_LUA[] = "return {redis.call('ZCOUNT', KEYS[1], ARGV[1], '+inf')}";
    char key[300], now[24];
    const char *keys[1] = {key}, *args[1] = {now};
    int64_t n = 0;
    size_t got = 0;

    snprintf(key, sizeof(key), "presence:%s:%s:conns", tenant, user);
    snprintf(now, sizeof(now), "(%" PRId64, cm_clock_now_ms());
    if (cm_redis_eval_ints(ctx->redis, LIVE_LUA, 1, keys, 1, args, &n, 1, &got) != CM_OK ||
        got != 1)
        return -1;
    return n > 0;
}

typedef struct device_list {
    bson_t docs[16];
    size_t n;
} device_list;

static int collect_device(const bson_t *doc, void *ud)
{
    device_list *l = ud;
    if (l->n == sizeof(l->docs) / sizeof(l->docs[0]))
        return 1;
    bson_copy_to(doc, &l->docs[l->n++]);
    return 0;
}

static cm_err queue_delivery(nf_ctx *ctx, const nf_push_item *it, const bson_t *dev,
                             int64_t at)
{
    char id[CM_UUID_STRLEN], k[200];
    const char *device_id = cm_bson_str(dev, "_id", "");
    bson_t d = BSON_INITIALIZER;
    cm_err rc;

    if ((rc = cm_uuid_v7(id)) != CM_OK)
        return rc;
    snprintf(k, sizeof(k), "%s|%s", it->notification_id, device_id);
    BSON_APPEND_UTF8(&d, "_id", id);
    BSON_APPEND_UTF8(&d, "k", k);
    BSON_APPEND_UTF8(&d, "tenant", it->tenant);
    BSON_APPEND_UTF8(&d, "user_id", it->user);
    BSON_APPEND_UTF8(&d, "event_id", it->event_id);
    BSON_APPEND_UTF8(&d, "notification_id", it->notification_id);
    BSON_APPEND_UTF8(&d, "type", it->type);
    if (it->conversation_id)
        BSON_APPEND_UTF8(&d, "conversation_id", it->conversation_id);
    if (it->message_id)
        BSON_APPEND_UTF8(&d, "message_id", it->message_id);
    BSON_APPEND_UTF8(&d, "actor_id", it->actor ? it->actor : "");
    BSON_APPEND_UTF8(&d, "text", it->text ? it->text : "");
    BSON_APPEND_UTF8(&d, "device_id", device_id);
    BSON_APPEND_UTF8(&d, "platform", cm_bson_str(dev, "platform", ""));
    BSON_APPEND_UTF8(&d, "token", cm_bson_str(dev, "token", ""));
    BSON_APPEND_UTF8(&d, "app_id", cm_bson_str(dev, "app_id", ""));
    BSON_APPEND_UTF8(&d, "state", "queued");
    BSON_APPEND_INT32(&d, "attempts", 0);
    BSON_APPEND_INT64(&d, "next_at", at);
    if (it->title)
        BSON_APPEND_UTF8(&d, "title", it->title);
    BSON_APPEND_DATE_TIME(&d, "created_at", cm_clock_now_ms());
    rc = cm_mongo_insert(ctx->db, NF_COLL_DELIVERIES, &d);
    bson_destroy(&d);
    return rc == CM_ECONFLICT ? CM_OK : rc; /* queued before this replay */
}

cm_err nf_push_plan(nf_ctx *ctx, const nf_push_item *it)
{
    bson_t f = BSON_INITIALIZER;
    device_list l = {.n = 0};
    char detail[128];
    int on;
    cm_err rc = CM_OK;

    if (it->push_off) {
        nf_decision(ctx, it, "preference", NULL,
                    "the user turned push off for this type of notification");
        return CM_OK;
    }
    if (it->muted_until > cm_clock_now_ms()) {
        char until[CM_RFC3339_LEN];
        cm_clock_rfc3339(it->muted_until, until);
        snprintf(detail, sizeof(detail), "the conversation is muted until %s", until);
        nf_decision(ctx, it, "muted", NULL, detail);
        return CM_OK;
    }
    on = online(ctx, it->tenant, it->user);
    if (on == 1) {
        nf_decision(ctx, it, "online", NULL,
                    "the user had a live connection: delivered in-app over the WebSocket");
        return CM_OK;
    }
    BSON_APPEND_UTF8(&f, "tenant", it->tenant);
    BSON_APPEND_UTF8(&f, "user_id", it->user);
    rc = cm_mongo_find(ctx->db, NF_COLL_DEVICES, &f, NULL, collect_device, &l);
    bson_destroy(&f);
    if (rc != CM_OK)
        goto out;
    if (l.n == 0) {
        nf_decision(ctx, it, "no_device", NULL, "the user has no registered device");
        goto out;
    }
    for (size_t i = 0; i < l.n && rc == CM_OK; i++) {
        const char *platform = cm_bson_str(&l.docs[i], "platform", ""),
                   *dev = cm_bson_str(&l.docs[i], "_id", "");
        if (strcmp(platform, "webpush") == 0) {
            nf_decision(ctx, it, "unsupported", dev, "web push is not sent yet");
            continue;
        }
        if (it->quiet_until > 0) {
            /* Quiet hours defer the push to their end; they never drop it. */
            char until[CM_RFC3339_LEN];
            cm_clock_rfc3339(it->quiet_until, until);
            snprintf(detail, sizeof(detail), "quiet hours: deferred until %s", until);
            rc = queue_delivery(ctx, it, &l.docs[i], it->quiet_until);
            if (rc == CM_OK)
                nf_decision(ctx, it, "quiet_hours", dev, detail);
            continue;
        }
        rc = queue_delivery(ctx, it, &l.docs[i], cm_clock_now_ms());
        if (rc == CM_OK)
            nf_decision(ctx, it, "queued", dev,
                        on < 0 ? "presence unknown (Redis unreachable): pushed to be safe"
                               : "the user was offline");
    }
    if (rc == CM_OK && ctx->push) {
        pthread_mutex_lock(&ctx->push->mu);
        ctx->push->kick = 1;
        pthread_cond_signal(&ctx->push->cv);
        pthread_mutex_unlock(&ctx->push->mu);
    }
out:
    for (size_t i = 0; i < l.n; i++)
        bson_destroy(&l.docs[i]);
    return rc;
}

/* --- providers ------------------------------------------------------------------------- */

/* What one attempt came to. */
typedef enum outcome {
    OUT_SENT,      /* the provider accepted it */
    OUT_DEAD,      /* the provider says the token is dead: prune the device */
    OUT_RETRY,     /* transient: 5xx, 429, unreachable, timeout */
    OUT_FAIL,      /* refused for good (4xx other than a dead token) */
} outcome;

static outcome classify_status(long status)
{
    if (status >= 200 && status < 300)
        return OUT_SENT;
    if (status == 429 || status >= 500 || status == 408)
        return OUT_RETRY;
    return OUT_FAIL;
}

/* An OAuth 2.0 access token for FCM: a service-account JWT (RFC 7523 section 2.1) exchanged at
 * the credentials' token_uri, kept until a minute before it expires. */
static cm_err fcm_access_token(nf_push *p, char *why, size_t n)
{
    cJSON *cred = NULL, *claims = NULL, *ans = NULL;
    const cJSON *email, *key, *uri;
    char *jwt = NULL, *form = NULL, *body = NULL, detail[128];
    size_t len = 0, flen;
    long status = 0;
    int64_t now = cm_clock_now_ms();
    cm_err rc = CM_EINVAL;

    if (p->fcm_token[0] && now < p->fcm_token_until)
        return CM_OK;
    if (cm_json_parse(p->cfg.fcm_credentials, strlen(p->cfg.fcm_credentials), 8, &cred, detail,
                      sizeof(detail)) != CM_OK) {
        snprintf(why, n, "FCM credentials are not JSON: %s", detail);
        goto out;
    }
    email = cJSON_GetObjectItemCaseSensitive(cred, "client_email");
    key = cJSON_GetObjectItemCaseSensitive(cred, "private_key");
    uri = cJSON_GetObjectItemCaseSensitive(cred, "token_uri");
    if (!cJSON_IsString(email) || !cJSON_IsString(key) || !cJSON_IsString(uri)) {
        snprintf(why, n, "FCM credentials lack client_email, private_key or token_uri");
        goto out;
    }
    claims = cJSON_CreateObject();
    cJSON_AddStringToObject(claims, "iss", email->valuestring);
    cJSON_AddStringToObject(claims, "scope", "https://www.googleapis.com/auth/firebase.messaging");
    cJSON_AddStringToObject(claims, "aud", uri->valuestring);
    cJSON_AddNumberToObject(claims, "iat", (double)(now / 1000));
    cJSON_AddNumberToObject(claims, "exp", (double)(now / 1000 + 3600));
    if ((rc = cm_jws_sign("RS256", key->valuestring, strlen(key->valuestring), NULL, claims,
                          &jwt)) != CM_OK) {
        snprintf(why, n, "the FCM service-account key cannot sign (RS256)");
        goto out;
    }
    flen = strlen(jwt) + 128;
    if ((form = malloc(flen)) == NULL) {
        rc = CM_ENOMEM;
        goto out;
    }
    /* A JWT is base64url and dots: nothing to percent-encode. */
    snprintf(form, flen, "grant_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Agrant-type%%3Ajwt-bearer"
                         "&assertion=%s", jwt);
    {
        const char *hdr[] = {"Content-Type: application/x-www-form-urlencoded", NULL};
        cm_httpc_request r = {"POST", uri->valuestring, hdr, form, strlen(form),
                              p->cfg.timeout_ms, PROVIDER_BODY_MAX, 0};
        rc = cm_httpc_request_do(&r, &body, &len, &status);
    }
    atomic_fetch_add(&p->token_fetches, 1);
    if (rc != CM_OK) {
        snprintf(why, n, "the FCM token endpoint is unreachable (%s)", cm_strerror(rc));
        rc = CM_EAGAIN;
        goto out;
    }
    if (status != 200 || cm_json_parse(body, len, 8, &ans, detail, sizeof(detail)) != CM_OK ||
        !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(ans, "access_token"))) {
        snprintf(why, n, "the FCM token endpoint answered %ld", status);
        rc = status >= 500 || status == 429 ? CM_EAGAIN : CM_EINVAL;
        goto out;
    }
    {
        const cJSON *exp = cJSON_GetObjectItemCaseSensitive(ans, "expires_in");
        double secs = cJSON_IsNumber(exp) ? exp->valuedouble : 3600;
        snprintf(p->fcm_token, sizeof(p->fcm_token), "%s",
                 cJSON_GetObjectItemCaseSensitive(ans, "access_token")->valuestring);
        p->fcm_token_until = now + (int64_t)(secs > 120 ? secs - 60 : secs / 2) * 1000;
    }
    rc = CM_OK;
out:
    cJSON_Delete(cred);
    cJSON_Delete(claims);
    cJSON_Delete(ans);
    free(jwt);
    free(form);
    free(body);
    return rc;
}

/* The payload fields both providers carry for the app. */
static void add_data(cJSON *o, const bson_t *d)
{
    static const char *const keys[] = {"notification_id", "type", "conversation_id",
                                       "message_id", "actor_id", NULL};
    for (int i = 0; keys[i]; i++) {
        const char *v = cm_bson_str(d, keys[i], NULL);
        if (v)
            cJSON_AddStringToObject(o, keys[i], v);
    }
}

static void title_of(const bson_t *d, char *out, size_t n)
{
    const char *type = cm_bson_str(d, "type", ""), *actor = cm_bson_str(d, "actor_id", "");
    if (cm_bson_str(d, "title", NULL) != NULL)
        snprintf(out, n, "%s", cm_bson_str(d, "title", ""));
    else if (strcmp(type, "mention") == 0)
        snprintf(out, n, "%s mentioned you", actor);
    else if (strcmp(type, "reply") == 0)
        snprintf(out, n, "%s replied to you", actor);
    else if (strcmp(type, "added") == 0)
        snprintf(out, n, "%s added you to a conversation", actor);
    else
        snprintf(out, n, "%s", actor[0] ? actor : "New message");
}

/* One FCM HTTP v1 send (projects.messages.send). */
static outcome send_fcm(nf_push *p, const bson_t *d, long *status, char *why, size_t n)
{
    char url[512], auth[4200], title[160], *json = NULL, *body = NULL;
    cJSON *m = cJSON_CreateObject(), *msg, *note, *data, *android;
    size_t len = 0;
    outcome out = OUT_RETRY;
    cm_err rc;

    *status = 0;
    if (p->cfg.fcm_credentials == NULL) {
        snprintf(why, n, "FCM is not configured (FCM_CREDENTIALS_FILE)");
        out = OUT_FAIL;
        goto done;
    }
    if ((rc = fcm_access_token(p, why, n)) != CM_OK) {
        out = rc == CM_EAGAIN ? OUT_RETRY : OUT_FAIL;
        goto done;
    }
    title_of(d, title, sizeof(title));
    msg = cJSON_AddObjectToObject(m, "message");
    cJSON_AddStringToObject(msg, "token", cm_bson_str(d, "token", ""));
    note = cJSON_AddObjectToObject(msg, "notification");
    cJSON_AddStringToObject(note, "title", title);
    cJSON_AddStringToObject(note, "body", cm_bson_str(d, "text", ""));
    data = cJSON_AddObjectToObject(msg, "data");
    add_data(data, d);
    android = cJSON_AddObjectToObject(msg, "android");
    cJSON_AddStringToObject(android, "priority", "high");
    if ((json = cm_json_print(m)) == NULL)
        goto done;
    snprintf(url, sizeof(url), "%s/v1/projects/%s/messages:send", p->cfg.fcm_base,
             p->cfg.fcm_project);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", p->fcm_token);
    {
        const char *hdr[] = {auth, "Content-Type: application/json; charset=UTF-8", NULL};
        cm_httpc_request r = {"POST", url, hdr, json, strlen(json), p->cfg.timeout_ms,
                              PROVIDER_BODY_MAX, 0};
        rc = cm_httpc_request_do(&r, &body, &len, status);
    }
    if (rc != CM_OK) {
        snprintf(why, n, "FCM unreachable: %s", cm_strerror(rc));
        goto done;
    }
    /* FCM v1 errors: 404 NOT_FOUND / errorCode UNREGISTERED is a token no longer valid
     * (firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode); 401: our token expired. */
    if (*status == 404 || strstr(body, "UNREGISTERED") != NULL) {
        snprintf(why, n, "FCM: the token is unregistered (%ld)", *status);
        out = OUT_DEAD;
    } else if (*status == 401) {
        p->fcm_token[0] = '\0';
        snprintf(why, n, "FCM refused the access token (401): fetched again next time");
        out = OUT_RETRY;
    } else {
        out = classify_status(*status);
        snprintf(why, n, "FCM answered %ld", *status);
    }
done:
    cJSON_Delete(m);
    free(json);
    free(body);
    return out;
}

static cm_err apns_provider_token(nf_push *p, char *why, size_t n)
{
    int64_t now = cm_clock_now_ms();
    cJSON *claims;
    char *jwt = NULL;
    cm_err rc;

    if (p->apns_token[0] && now < p->apns_token_until)
        return CM_OK;
    claims = cJSON_CreateObject();
    cJSON_AddStringToObject(claims, "iss", p->cfg.apns_team_id);
    cJSON_AddNumberToObject(claims, "iat", (double)(now / 1000));
    rc = cm_jws_sign("ES256", p->cfg.apns_key, strlen(p->cfg.apns_key), p->cfg.apns_key_id,
                     claims, &jwt);
    cJSON_Delete(claims);
    if (rc != CM_OK) {
        snprintf(why, n, "the APNs key cannot sign (ES256 over P-256)");
        return rc;
    }
    snprintf(p->apns_token, sizeof(p->apns_token), "%s", jwt);
    free(jwt);
    p->apns_token_until = now + 40 * 60 * 1000; /* between Apple's 20 and 60 minutes */
    atomic_fetch_add(&p->token_fetches, 1);
    return CM_OK;
}

/* One APNs send (POST /3/device/<token>, HTTP/2). */
static outcome send_apns(nf_push *p, const bson_t *d, long *status, char *why, size_t n)
{
    char url[600], auth[1100], topic[300], title[160], *json = NULL, *body = NULL;
    const char *app = cm_bson_str(d, "app_id", "");
    cJSON *m = cJSON_CreateObject(), *aps, *alert;
    size_t len = 0;
    outcome out = OUT_RETRY;
    cm_err rc;

    *status = 0;
    if (p->cfg.apns_key == NULL) {
        snprintf(why, n, "APNs is not configured (APNS_KEY_FILE)");
        out = OUT_FAIL;
        goto done;
    }
    if (apns_provider_token(p, why, n) != CM_OK) {
        out = OUT_FAIL;
        goto done;
    }
    title_of(d, title, sizeof(title));
    aps = cJSON_AddObjectToObject(m, "aps");
    alert = cJSON_AddObjectToObject(aps, "alert");
    cJSON_AddStringToObject(alert, "title", title);
    cJSON_AddStringToObject(alert, "body", cm_bson_str(d, "text", ""));
    cJSON_AddStringToObject(aps, "sound", "default");
    add_data(m, d);
    if ((json = cm_json_print(m)) == NULL)
        goto done;
    snprintf(url, sizeof(url), "%s/3/device/%s", p->cfg.apns_base, cm_bson_str(d, "token", ""));
    snprintf(auth, sizeof(auth), "authorization: bearer %s", p->apns_token);
    snprintf(topic, sizeof(topic), "apns-topic: %s", app[0] ? app : p->cfg.apns_topic);
    {
        const char *hdr[] = {auth, topic, "apns-push-type: alert", "apns-priority: 10",
                             "content-type: application/json", NULL};
        cm_httpc_request r = {"POST", url, hdr, json, strlen(json), p->cfg.timeout_ms,
                              PROVIDER_BODY_MAX, 1};
        rc = cm_httpc_request_do(&r, &body, &len, status);
    }
    if (rc != CM_OK) {
        snprintf(why, n, "APNs unreachable: %s", cm_strerror(rc));
        goto done;
    }
    /* APNs: 410 Unregistered, or 400 BadDeviceToken, means the token is dead ("Handling
     * notification responses from APNs"); 403 ExpiredProviderToken: make a new one. */
    if (*status == 410 || (*status == 400 && strstr(body, "BadDeviceToken") != NULL)) {
        snprintf(why, n, "APNs: the token is dead (%ld)", *status);
        out = OUT_DEAD;
    } else if (*status == 403 && strstr(body, "ExpiredProviderToken") != NULL) {
        p->apns_token[0] = '\0';
        snprintf(why, n, "APNs: provider token expired: made again next time");
        out = OUT_RETRY;
    } else {
        out = classify_status(*status);
        snprintf(why, n, "APNs answered %ld", *status);
    }
done:
    cJSON_Delete(m);
    free(json);
    free(body);
    return out;
}

/* --- the sender ------------------------------------------------------------------------ */

static const char *outcome_name(outcome o)
{
    static const char *const names[] = {"sent", "dead_token", "provider_error", "failed"};
    return names[o];
}

/* The delay before retry `n` (1-based) with +-20 % jitter, so a provider's outage does not
 * bring every retry back in the same millisecond. */
static int64_t retry_delay(nf_push *p, int n)
{
    long base = p->cfg.retry_ms[n - 1];
    unsigned char r;
    char hex[3];
    long jitter;

    if (cm_random_hex(hex, 1) != CM_OK)
        return base;
    r = (unsigned char)strtol(hex, NULL, 16);
    jitter = (long)((double)base * 0.4 * ((double)r / 255.0 - 0.5));
    return base + jitter;
}

/* Gives delivery `d` up: a notification.failed event on the DLQ topic (key: the user id),
 * whose id is the delivery's and its attempt count, so a redriven delivery that fails again
 * is a new event. */
static void dead_letter(nf_push *p, const bson_t *d, int attempts, const char *why)
{
    static const char *const keys[] = {"notification_id", "user_id", "device_id", "platform",
                                       "message_id", NULL};
    const char *user = cm_bson_str(d, "user_id", ""), *did = cm_bson_str(d, "_id", "");
    cJSON *data = cJSON_CreateObject();
    cm_kafka_header h[1] = {{"error", why}};
    char id[CM_UUID_STRLEN + 16], *ev = NULL;

    if (data == NULL)
        return;
    snprintf(id, sizeof(id), "%s.%d", did, attempts);
    cJSON_AddStringToObject(data, "delivery_id", did);
    for (int i = 0; keys[i]; i++) {
        const char *v = cm_bson_str(d, keys[i], NULL);
        if (v)
            cJSON_AddStringToObject(data, keys[i], v);
    }
    cJSON_AddNumberToObject(data, "attempts", attempts);
    cJSON_AddStringToObject(data, "error", why);
    if (cm_event_build(id, "notification.failed", "/notification", user,
                       cm_bson_str(d, "tenant", ""), cm_clock_now_ms(), data, &ev) != CM_OK)
        return;
    if (cm_kafka_produce(p->ctx->kafka, p->cfg.dlq_topic, user, strlen(user), ev, strlen(ev), h,
                         1, NULL) != CM_OK)
        cm_error("push: delivery %s not dead-lettered", did);
    free(ev);
}

static void prune_device(nf_push *p, const bson_t *d)
{
    bson_t f = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&f, "_id", cm_bson_str(d, "device_id", ""));
    BSON_APPEND_UTF8(&f, "tenant", cm_bson_str(d, "tenant", ""));
    if (cm_mongo_delete(p->ctx->db, NF_COLL_DEVICES, &f, 0, NULL) == CM_OK)
        cm_info("push: device %s pruned (dead token)", cm_bson_str(d, "device_id", ""));
    bson_destroy(&f);
}

/* One attempt of delivery `d`: the provider call, then one update that records it. */
static void attempt(nf_push *p, const bson_t *d)
{
    const char *platform = cm_bson_str(d, "platform", ""), *id = cm_bson_str(d, "_id", "");
    int n = (int)cm_bson_int(d, "attempts", 0) + 1;
    char why[300] = "";
    long status = 0;
    outcome o;
    const char *state, *decision = NULL;
    int64_t next = 0, now;
    bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, set, push, h;
    nf_push_item it = {0};

    o = strcmp(platform, "fcm") == 0    ? send_fcm(p, d, &status, why, sizeof(why))
        : strcmp(platform, "apns") == 0 ? send_apns(p, d, &status, why, sizeof(why))
                                        : (snprintf(why, sizeof(why), "unknown platform"), OUT_FAIL);
    now = cm_clock_now_ms();
    switch (o) {
    case OUT_SENT:
        state = "sent";
        decision = "sent";
        atomic_fetch_add(&p->sent, 1);
        break;
    case OUT_DEAD:
        state = "failed";
        decision = "dead_token";
        atomic_fetch_add(&p->dead_tokens, 1);
        prune_device(p, d);
        break;
    case OUT_RETRY:
        if (n <= p->cfg.nretries) {
            state = "queued";
            next = now + retry_delay(p, n);
            atomic_fetch_add(&p->retried, 1);
        } else {
            state = "dead_lettered";
            decision = "provider_error";
            atomic_fetch_add(&p->dead_lettered, 1);
            dead_letter(p, d, n, why);
        }
        break;
    default:
        state = "failed";
        decision = "provider_error";
        atomic_fetch_add(&p->failed, 1);
        break;
    }
    BSON_APPEND_UTF8(&f, "_id", id);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_UTF8(&set, "state", state);
    BSON_APPEND_INT32(&set, "attempts", n);
    BSON_APPEND_INT64(&set, "next_at", next);
    bson_append_document_end(&u, &set);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$push", &push);
    BSON_APPEND_DOCUMENT_BEGIN(&push, "history", &h);
    BSON_APPEND_INT32(&h, "attempt", n);
    BSON_APPEND_DATE_TIME(&h, "at", now);
    BSON_APPEND_UTF8(&h, "outcome", outcome_name(o));
    BSON_APPEND_INT32(&h, "status", (int32_t)status);
    BSON_APPEND_UTF8(&h, "detail", why);
    bson_append_document_end(&push, &h);
    bson_append_document_end(&u, &push);
    if (cm_mongo_update(p->ctx->db, NF_COLL_DELIVERIES, &f, &u, 0, 0, NULL) != CM_OK)
        cm_warn("push: attempt %d of delivery %s (%s) not recorded", n, id, state);
    bson_destroy(&f);
    bson_destroy(&u);
    if (decision) {
        it.tenant = cm_bson_str(d, "tenant", "");
        it.user = cm_bson_str(d, "user_id", "");
        it.event_id = cm_bson_str(d, "event_id", "");
        it.notification_id = cm_bson_str(d, "notification_id", "");
        it.message_id = cm_bson_str(d, "message_id", NULL);
        nf_decision(p->ctx, &it, decision, cm_bson_str(d, "device_id", ""), why);
    }
}

typedef struct due {
    bson_t docs[BATCH];
    size_t n;
} due;

static int collect_due(const bson_t *doc, void *ud)
{
    due *q = ud;
    if (q->n == BATCH)
        return 1;
    bson_copy_to(doc, &q->docs[q->n++]);
    return 0;
}

static int stopping(nf_push *p)
{
    int stop;
    pthread_mutex_lock(&p->mu);
    stop = p->stop;
    pthread_mutex_unlock(&p->mu);
    return stop;
}

/* One round: the due deliveries, oldest first, each claimed by a Redis lease. A stop ends it
 * between two deliveries: a round of slow providers must not hold up the shutdown. */
static size_t round_once(nf_push *p)
{
    bson_t f = BSON_INITIALIZER, opts = BSON_INITIALIZER, lte, sort;
    due q = {.n = 0};
    size_t done = 0;

    BSON_APPEND_UTF8(&f, "state", "queued");
    nf_push_only(&f); /* e-mail and SMS have their own sender (notification_email.c) */
    BSON_APPEND_DOCUMENT_BEGIN(&f, "next_at", &lte);
    BSON_APPEND_INT64(&lte, "$lte", cm_clock_now_ms());
    bson_append_document_end(&f, &lte);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "next_at", 1);
    bson_append_document_end(&opts, &sort);
    BSON_APPEND_INT64(&opts, "limit", BATCH);
    if (cm_mongo_find(p->ctx->db, NF_COLL_DELIVERIES, &f, &opts, collect_due, &q) == CM_OK) {
        for (size_t i = 0; i < q.n && !stopping(p); i++) {
            char key[80];
            snprintf(key, sizeof(key), "nf:delivery:%s", cm_bson_str(&q.docs[i], "_id", ""));
            if (cm_redis_lock(p->ctx->redis, key, p->instance, LEASE_MS) == CM_OK) {
                attempt(p, &q.docs[i]);
                cm_redis_unlock(p->ctx->redis, key, p->instance);
                done++;
            }
        }
    }
    for (size_t i = 0; i < q.n; i++)
        bson_destroy(&q.docs[i]);
    bson_destroy(&f);
    bson_destroy(&opts);
    return done;
}

static void *run(void *arg)
{
    nf_push *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        size_t done;
        pthread_mutex_unlock(&p->mu);
        done = round_once(p);
        pthread_mutex_lock(&p->mu);
        if (done == 0 && !p->kick && !p->stop) {
            /* Retries fall due by the clock: look again within 100 ms. */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 100 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&p->cv, &p->mu, &ts);
        }
        p->kick = 0;
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

cm_err nf_push_start(nf_ctx *ctx, nf_push_config *cfg, nf_push **out)
{
    nf_push *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return CM_ENOMEM;
    p->ctx = ctx;
    p->cfg = *cfg;
    cfg->fcm_credentials = NULL; /* taken over */
    cfg->apns_key = NULL;
    if (cm_random_hex(p->instance, 16) != CM_OK) {
        free(p);
        return CM_EIO;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (pthread_create(&p->thread, NULL, run, p) != 0) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
        free(p);
        return CM_EIO;
    }
    *out = p;
    return CM_OK;
}

void nf_push_stop(nf_push *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->cfg.fcm_credentials);
    free(p->cfg.apns_key);
    free(p);
}

void nf_push_metrics(nf_push *p, void (*emit)(void *ctx, const char *text), void *ctx)
{
    char buf[1024];
    if (p == NULL)
        return;
    snprintf(buf, sizeof(buf),
             "# HELP notification_push_total Push attempts by outcome.\n"
             "# TYPE notification_push_total counter\n"
             "notification_push_total{outcome=\"sent\"} %ld\n"
             "notification_push_total{outcome=\"retried\"} %ld\n"
             "notification_push_total{outcome=\"dead_lettered\"} %ld\n"
             "notification_push_total{outcome=\"dead_token\"} %ld\n"
             "notification_push_total{outcome=\"failed\"} %ld\n"
             "# HELP notification_provider_token_fetches_total FCM access and APNs provider tokens made.\n"
             "# TYPE notification_provider_token_fetches_total counter\n"
             "notification_provider_token_fetches_total %ld\n",
             atomic_load(&p->sent), atomic_load(&p->retried), atomic_load(&p->dead_lettered),
             atomic_load(&p->dead_tokens), atomic_load(&p->failed),
             atomic_load(&p->token_fetches));
    emit(ctx, buf);
}
