/* notification_webhooks.c - webhooks to tenant URLs (issue 10): a tenant_admin registers
 * endpoints (URL, event filter; a secret generated and shown once), lists and deletes them;
 * each matching event the consumer reads (notification.created and notification.delivered,
 * messages, reactions, conversations, members) is queued once per endpoint (unique key
 * <endpoint>|<event id>) and POSTed by a sender thread with a Stripe-style signature header
 * `Chat-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, retried at
 * WEBHOOK_RETRY_DELAYS_MS (1 s, 5 s, 30 s, +-20 % jitter), then dead-lettered to
 * notifications.dlq; WEBHOOK_DISABLE_AFTER consecutive failed attempts disable the endpoint.
 *
 * Outbound addresses are checked when the connection is opened (libcurl's
 * CURLOPT_OPENSOCKETFUNCTION sees the resolved address), so a name that resolves to a public
 * address at registration and to a private one later (DNS rebinding) is still refused:
 * loopback, private (RFC 1918, RFC 4193), link-local, CGNAT, multicast, unspecified and
 * broadcast addresses are refused unless inside WEBHOOK_ALLOW_PRIVATE_CIDRS (tests only). */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/event.h"
#include "common/httpc.h"
#include "common/json.h"
#include "common/log.h"
#include "common/uuid.h"
#include "notification.h"
#include "notification_webpush.h"

#define WH_BATCH 64             /* deliveries taken per round */
#define WH_LEASE_MS 60000       /* a claimed delivery is this sender's for this long */
#define WH_URL_MAX 2048         /* characters of an endpoint URL */
#define WH_BODY_MAX 65536       /* bytes of an endpoint's answer read */
#define WH_ENDPOINTS_MAX 20     /* endpoints per tenant */
#define WH_TENANTS_MAX 1024     /* tenants with webhooks remembered (more: every event asks) */
#define TENANTS_MS 1000         /* how stale the list of tenants with webhooks may be */
#define CM_TENANT_ID_MAX 64

/* Event types an endpoint may subscribe to (asyncapi.yaml). */
static const char *const EVENT_TYPES[] = {
    "notification.created", "notification.delivered", "message.created",
    "message.updated",      "message.deleted",        "reaction.added",
    "reaction.removed",     "conversation.created",   "conversation.updated",
    "member.added",         "member.removed",         NULL};

typedef struct cidr {
    int family; /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    int bits;
} cidr;

struct nf_webhooks {
    nf_ctx *ctx;
    nf_webhooks_config cfg;
    cidr allow[16];
    int nallow;
    char instance[33];
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop, kick;
    int64_t next_retry; /* earliest retry scheduled (ms; 0 none), sender thread only */
    cm_httpc_pool *http;
    /* The tenants with an enabled endpoint, read again every TENANTS_MS by the consumer
     * thread (its only user): most events are of tenants without webhooks, and a query per
     * event would cost the consumer a round trip each. */
    char tenants[WH_TENANTS_MAX][CM_TENANT_ID_MAX + 1];
    size_t ntenants;
    int64_t tenants_at;
    atomic_long sent, retried, dead_lettered, refused, disabled;
};

int nf_webhook_event_type(const char *type)
{
    for (int i = 0; EVENT_TYPES[i]; i++)
        if (strcmp(EVENT_TYPES[i], type) == 0)
            return 1;
    return 0;
}

/* --- addresses --------------------------------------------------------------------------- */

static int parse_cidr(const char *s, cidr *c)
{
    char buf[64], *slash;
    long bits;

    if (snprintf(buf, sizeof(buf), "%s", s) >= (int)sizeof(buf))
        return -1;
    slash = strchr(buf, '/');
    if (slash)
        *slash = '\0';
    if (inet_pton(AF_INET, buf, c->addr) == 1) {
        c->family = AF_INET;
        bits = 32;
    } else if (inet_pton(AF_INET6, buf, c->addr) == 1) {
        c->family = AF_INET6;
        bits = 128;
    } else {
        return -1;
    }
    if (slash) {
        char *end;
        long b = strtol(slash + 1, &end, 10);
        if (end == slash + 1 || *end != '\0' || b < 0 || b > bits)
            return -1;
        bits = b;
    }
    c->bits = (int)bits;
    return 0;
}

static int in_cidr(const cidr *c, int family, const unsigned char *a)
{
    int full = c->bits / 8, rest = c->bits % 8;
    if (c->family != family)
        return 0;
    if (memcmp(c->addr, a, (size_t)full) != 0)
        return 0;
    return rest == 0 || ((c->addr[full] ^ a[full]) & (0xff << (8 - rest)) & 0xff) == 0;
}

/* 1 when an IPv4 address (network order bytes) is not publicly routable. */
static int v4_private(const unsigned char *b)
{
    return b[0] == 0 || b[0] == 10 || b[0] == 127 ||                /* this, RFC 1918, loopback */
           (b[0] == 100 && (b[1] & 0xc0) == 64) ||                  /* 100.64/10 CGNAT */
           (b[0] == 169 && b[1] == 254) ||                          /* link-local */
           (b[0] == 172 && (b[1] & 0xf0) == 16) ||                  /* RFC 1918 */
           (b[0] == 192 && b[1] == 168) ||                          /* RFC 1918 */
           (b[0] == 192 && b[1] == 0 && b[2] == 0) ||               /* IETF protocol */
           (b[0] == 198 && (b[1] & 0xfe) == 18) ||                  /* benchmarking */
           b[0] >= 224;                                             /* multicast, reserved */
}

int nf_webhook_addr_refused(const struct sockaddr *sa, const void *allow, int nallow)
{
    const cidr *al = allow;
    unsigned char a[16];
    int family = sa->sa_family, priv;

    if (family == AF_INET) {
        memcpy(a, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        priv = v4_private(a);
    } else if (family == AF_INET6) {
        const unsigned char *b = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        memcpy(a, b, 16);
        if (memcmp(b, mapped, 12) == 0) {
            /* ::ffff:a.b.c.d is the IPv4 address underneath. */
            family = AF_INET;
            memmove(a, b + 12, 4);
            priv = v4_private(a);
        } else {
            static const unsigned char zero[16] = {0};
            priv = memcmp(b, zero, 15) == 0 ||                   /* :: and ::1 */
                   (b[0] & 0xfe) == 0xfc ||                      /* fc00::/7 unique local */
                   (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) ||    /* fe80::/10 link-local */
                   b[0] == 0xff;                                 /* multicast */
        }
    } else {
        return 1; /* not IP */
    }
    if (!priv)
        return 0;
    for (int i = 0; i < nallow; i++)
        if (in_cidr(&al[i], family, a))
            return 0;
    return 1;
}

/* CURLOPT_OPENSOCKETFUNCTION: refuses a resolved address that is not public (and not allowed
 * by configuration) right before connecting. */
static curl_socket_t open_checked(void *ud, curlsocktype purpose, struct curl_sockaddr *addr)
{
    nf_webhooks *w = ud;
    (void)purpose;
    if (nf_webhook_addr_refused(&addr->addr, w->allow, w->nallow)) {
        char ip[INET6_ADDRSTRLEN] = "?";
        if (addr->family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)&addr->addr)->sin_addr, ip, sizeof(ip));
        else if (addr->family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)(void *)&addr->addr)->sin6_addr, ip, sizeof(ip));
        cm_warn("webhooks: refused to connect to %s (not a public address)", ip);
        atomic_fetch_add(&w->refused, 1);
        return CURL_SOCKET_BAD;
    }
    return socket(addr->family, addr->socktype, addr->protocol);
}

/* The same check for web push endpoints (notification_webpush.h). */
curl_socket_t nf_webhook_open_checked(void *webhooks, curlsocktype purpose,
                                      struct curl_sockaddr *addr)
{
    return open_checked(webhooks, purpose, addr);
}

/* --- signatures -------------------------------------------------------------------------- */

cm_err nf_webhook_sign(const char *secret, int64_t t, const char *body, size_t len,
                       char *out, size_t n)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    char ts[24], *msg;
    int w = snprintf(ts, sizeof(ts), "%" PRId64 ".", t);

    /* The signed payload is "<t>.<body>" (Stripe's scheme). */
    if ((msg = malloc((size_t)w + len + 1)) == NULL)
        return CM_ENOMEM;
    memcpy(msg, ts, (size_t)w);
    memcpy(msg + w, body, len);
    if (HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)msg,
             (size_t)w + len, mac, &maclen) == NULL) {
        free(msg);
        return CM_EIO;
    }
    free(msg);
    w = snprintf(out, n, "t=%" PRId64 ",v1=", t);
    if (w < 0 || (size_t)w + maclen * 2 + 1 > n)
        return CM_ETOOBIG;
    for (unsigned int i = 0; i < maclen; i++)
        snprintf(out + w + i * 2, 3, "%02x", mac[i]);
    return CM_OK;
}

/* --- HTTP: endpoints ---------------------------------------------------------------------- */

static cJSON *endpoint_json(const bson_t *d, void *ud)
{
    cJSON *o = cJSON_CreateObject(), *ev = cJSON_AddArrayToObject(o, "events");
    bson_iter_t it, arr;
    char ts[CM_RFC3339_LEN];
    (void)ud;
    cJSON_AddStringToObject(o, "id", cm_bson_str(d, "_id", ""));
    cJSON_AddStringToObject(o, "url", cm_bson_str(d, "url", ""));
    if (bson_iter_init_find(&it, d, "events") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr))
        while (bson_iter_next(&arr))
            if (BSON_ITER_HOLDS_UTF8(&arr))
                cJSON_AddItemToArray(ev, cJSON_CreateString(bson_iter_utf8(&arr, NULL)));
    cJSON_AddBoolToObject(o, "enabled", cm_bson_bool(d, "enabled", 1));
    cJSON_AddNumberToObject(o, "consecutive_failures", (double)cm_bson_int(d, "failures", 0));
    if (cm_bson_str(d, "disabled_reason", NULL))
        cJSON_AddStringToObject(o, "disabled_reason", cm_bson_str(d, "disabled_reason", ""));
    if (bson_iter_init_find(&it, d, "created_at") && BSON_ITER_HOLDS_DATE_TIME(&it)) {
        cm_clock_rfc3339(bson_iter_date_time(&it), ts);
        cJSON_AddStringToObject(o, "created_at", ts);
    }
    return o;
}

/* The caller may manage webhooks: tenant.manage (a tenant_admin), else 403 answered. */
static int admin(cm_http_req *req, nf_ctx *ctx, cm_jwt_claims *c)
{
    if (cm_auth_bearer(req, ctx->verifier, c) != CM_OK)
        return 0;
    if (!cm_auth_can(c, "tenant.manage")) {
        cm_http_problem(req, 403, "forbidden", "Forbidden",
                        "webhooks are managed with the permission tenant.manage (a tenant_admin)");
        return 0;
    }
    return 1;
}

/* POST /v1/webhooks {"url", "events": [...]}: 201 with the secret, shown this once. */
void nf_webhooks_create(cm_http_req *req, void *ud)
{
    static const char *const allowed[] = {"url", "events", NULL};
    nf_ctx *ctx = ud;
    cm_jwt_claims c;
    cJSON *body, *o;
    const cJSON *events, *e;
    const char *url = NULL;
    char why[200], id[CM_UUID_STRLEN], secret[6 + 65], loc[80];
    bson_t doc = BSON_INITIALIZER, arr, f = BSON_INITIALIZER;
    int64_t count = 0;
    size_t i = 0;
    cm_err rc;

    if (!admin(req, ctx, &c) || cm_http_json_body(req, &body) != CM_OK)
        goto out;
    if (cm_json_only_keys(body, allowed, why, sizeof(why)) ||
        cm_json_string(body, "url", 1, 8, WH_URL_MAX, &url, why, sizeof(why))) {
        cm_http_reply_error(req, CM_EINVAL, why);
        goto out;
    }
    if (strncasecmp(url, "https://", 8) != 0 && strncasecmp(url, "http://", 7) != 0) {
        cm_http_reply_error(req, CM_EINVAL, "field 'url' must be an http:// or https:// URL");
        goto out;
    }
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) {
            cm_http_reply_error(req, CM_EINVAL,
                                "field 'url' must be printable ASCII without spaces");
            goto out;
        }
    events = cJSON_GetObjectItemCaseSensitive(body, "events");
    if (!cJSON_IsArray(events) || cJSON_GetArraySize(events) < 1 ||
        cJSON_GetArraySize(events) > 10) {
        cm_http_reply_error(req, CM_EINVAL,
                            "field 'events' must be an array of 1..10 event types");
        goto out;
    }
    cJSON_ArrayForEach(e, events)
    {
        if (!cJSON_IsString(e) || !nf_webhook_event_type(e->valuestring)) {
            cm_http_problem(req, 400, "validation", "Invalid request",
                            "events[%zu] is not an event type a webhook can receive "
                            "(notification.created, message.created, message.updated, "
                            "message.deleted, reaction.added, reaction.removed, "
                            "conversation.created, conversation.updated, member.added, "
                            "member.removed)", i);
            goto out;
        }
        i++;
    }
    BSON_APPEND_UTF8(&f, "tenant", c.tid);
    if ((rc = cm_mongo_count(ctx->db, NF_COLL_WEBHOOKS, &f, &count)) != CM_OK) {
        cm_http_reply_error(req, rc, "the webhooks could not be counted");
        goto out;
    }
    if (count >= WH_ENDPOINTS_MAX) {
        cm_http_reply_error(req, CM_ECONFLICT,
                            "at most 20 webhook endpoints per tenant: delete one first");
        goto out;
    }
    memcpy(secret, "whsec_", 6);
    if (cm_uuid_v7(id) != CM_OK || cm_random_hex(secret + 6, 32) != CM_OK) {
        cm_http_reply_error(req, CM_EIO, "no id or secret");
        goto out;
    }
    BSON_APPEND_UTF8(&doc, "_id", id);
    BSON_APPEND_UTF8(&doc, "tenant", c.tid);
    BSON_APPEND_UTF8(&doc, "url", url);
    BSON_APPEND_ARRAY_BEGIN(&doc, "events", &arr);
    i = 0;
    cJSON_ArrayForEach(e, events)
    {
        char idx[24];
        snprintf(idx, sizeof(idx), "%zu", i++);
        BSON_APPEND_UTF8(&arr, idx, e->valuestring);
    }
    bson_append_array_end(&doc, &arr);
    BSON_APPEND_UTF8(&doc, "secret", secret);
    BSON_APPEND_BOOL(&doc, "enabled", true);
    BSON_APPEND_INT32(&doc, "failures", 0);
    BSON_APPEND_DATE_TIME(&doc, "created_at", cm_clock_now_ms());
    if ((rc = cm_mongo_insert(ctx->db, NF_COLL_WEBHOOKS, &doc)) != CM_OK) {
        cm_http_reply_error(req, rc, "the webhook could not be stored");
        goto out;
    }
    o = endpoint_json(&doc, NULL);
    cJSON_AddStringToObject(o, "secret", secret);
    snprintf(loc, sizeof(loc), "/v1/webhooks/%s", id);
    cm_http_add_header(req, "Location", loc);
    cm_http_reply_json(req, 201, o);
out:
    bson_destroy(&doc);
    bson_destroy(&f);
}

/* GET /v1/webhooks: the tenant's endpoints, without their secrets. */
void nf_webhooks_list(cm_http_req *req, void *ud)
{
    nf_ctx *ctx = ud;
    cm_jwt_claims c;
    bson_t f = BSON_INITIALIZER, sort = BSON_INITIALIZER;
    cJSON *items = NULL;
    char next[8];
    cm_err rc;

    if (!admin(req, ctx, &c))
        goto out;
    BSON_APPEND_UTF8(&f, "tenant", c.tid);
    BSON_APPEND_INT32(&sort, "_id", 1);
    rc = cm_mongo_find_page(ctx->db, NF_COLL_WEBHOOKS, &f, &sort, WH_ENDPOINTS_MAX, "_id",
                            endpoint_json, NULL, &items, next, sizeof(next));
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the webhooks could not be read");
        goto out;
    }
    cm_http_reply_page(req, items, NULL);
out:
    bson_destroy(&f);
    bson_destroy(&sort);
}

/* DELETE /v1/webhooks/{id}: 204; another tenant's endpoint is 404. Its queued deliveries are
 * dropped by the sender (the endpoint is gone). */
void nf_webhooks_delete(cm_http_req *req, void *ud)
{
    nf_ctx *ctx = ud;
    cm_jwt_claims c;
    const char *id = cm_http_param(req, "id");
    bson_t f = BSON_INITIALIZER;
    int64_t n = 0;
    cm_err rc;

    if (!admin(req, ctx, &c))
        goto out;
    BSON_APPEND_UTF8(&f, "_id", id);
    BSON_APPEND_UTF8(&f, "tenant", c.tid);
    if ((rc = cm_mongo_delete(ctx->db, NF_COLL_WEBHOOKS, &f, 0, &n)) != CM_OK) {
        cm_http_reply_error(req, rc, "the webhook could not be deleted");
        goto out;
    }
    if (n == 0) {
        cm_http_problem(req, 404, "not-found", "Not Found", "no webhook %s", id);
        goto out;
    }
    cm_http_reply_json(req, 204, NULL);
out:
    bson_destroy(&f);
}

/* --- queueing (consumer thread) ------------------------------------------------------------ */

typedef struct fan {
    const char *type, *event_id, *tenant, *body;
    size_t body_len;
    bson_t docs[WH_ENDPOINTS_MAX];
    size_t n;
} fan;

static int collect_endpoint(const bson_t *ep, void *ud)
{
    fan *f = ud;
    bson_iter_t it, arr;
    int match = 0;
    char id[CM_UUID_STRLEN], k[200];
    bson_t *d;

    if (f->n == WH_ENDPOINTS_MAX)
        return 1;
    if (bson_iter_init_find(&it, ep, "events") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr))
        while (bson_iter_next(&arr))
            if (BSON_ITER_HOLDS_UTF8(&arr) && strcmp(bson_iter_utf8(&arr, NULL), f->type) == 0)
                match = 1;
    if (!match || cm_uuid_v7(id) != CM_OK)
        return 0;
    snprintf(k, sizeof(k), "%s|%s", cm_bson_str(ep, "_id", ""), f->event_id);
    d = &f->docs[f->n++];
    bson_init(d);
    BSON_APPEND_UTF8(d, "_id", id);
    BSON_APPEND_UTF8(d, "k", k);
    BSON_APPEND_UTF8(d, "tenant", f->tenant);
    BSON_APPEND_UTF8(d, "endpoint_id", cm_bson_str(ep, "_id", ""));
    BSON_APPEND_UTF8(d, "event_id", f->event_id);
    BSON_APPEND_UTF8(d, "event_type", f->type);
    bson_append_utf8(d, "body", 4, f->body, (int)f->body_len);
    BSON_APPEND_UTF8(d, "state", "queued");
    BSON_APPEND_INT32(d, "attempts", 0);
    BSON_APPEND_INT64(d, "next_at", cm_clock_now_ms());
    BSON_APPEND_DATE_TIME(d, "created_at", cm_clock_now_ms());
    return 0;
}

static int add_tenant(const char *t, void *ud)
{
    nf_webhooks *w = ud;
    if (w->ntenants == WH_TENANTS_MAX)
        return 1;
    snprintf(w->tenants[w->ntenants++], CM_TENANT_ID_MAX + 1, "%s", t);
    return 0;
}

/* 1 when `tenant` may have an enabled endpoint (also when the list cannot be read). */
static int has_webhooks(nf_ctx *ctx, nf_webhooks *w, const char *tenant)
{
    int64_t now = cm_clock_now_ms();
    if (now - w->tenants_at >= TENANTS_MS) {
        bson_t f = BSON_INITIALIZER;
        BSON_APPEND_BOOL(&f, "enabled", true);
        w->ntenants = 0;
        if (cm_mongo_distinct(ctx->db, NF_COLL_WEBHOOKS, "tenant", &f, add_tenant, w) != CM_OK)
            w->ntenants = WH_TENANTS_MAX; /* unknown: ask per event */
        w->tenants_at = now;
        bson_destroy(&f);
    }
    if (w->ntenants == WH_TENANTS_MAX)
        return 1;
    for (size_t i = 0; i < w->ntenants; i++)
        if (strcmp(w->tenants[i], tenant) == 0)
            return 1;
    return 0;
}

cm_err nf_webhooks_enqueue(nf_ctx *ctx, const char *tenant, const char *type,
                           const char *event_id, const char *body, size_t len)
{
    fan f = {.type = type, .event_id = event_id, .tenant = tenant, .body = body, .body_len = len};
    bson_t q = BSON_INITIALIZER;
    const bson_t *ptrs[WH_ENDPOINTS_MAX];
    unsigned char dup[WH_ENDPOINTS_MAX];
    cm_err rc;

    if (!nf_webhook_event_type(type))
        return CM_OK;
    if (ctx->webhooks && !has_webhooks(ctx, ctx->webhooks, tenant))
        return CM_OK;
    BSON_APPEND_UTF8(&q, "tenant", tenant);
    BSON_APPEND_BOOL(&q, "enabled", true);
    rc = cm_mongo_find(ctx->db, NF_COLL_WEBHOOKS, &q, NULL, collect_endpoint, &f);
    bson_destroy(&q);
    for (size_t i = 0; i < f.n; i++)
        ptrs[i] = &f.docs[i];
    /* One delivery per (endpoint, event): a replay queues nothing twice. */
    if (rc == CM_OK && f.n > 0)
        rc = cm_mongo_insert_many(ctx->db, NF_COLL_WEBHOOK_DELIVERIES, ptrs, f.n, dup);
    for (size_t i = 0; i < f.n; i++)
        bson_destroy(&f.docs[i]);
    if (rc == CM_OK && f.n > 0 && ctx->webhooks) {
        pthread_mutex_lock(&ctx->webhooks->mu);
        ctx->webhooks->kick = 1;
        pthread_cond_signal(&ctx->webhooks->cv);
        pthread_mutex_unlock(&ctx->webhooks->mu);
    }
    return rc;
}

/* --- the sender ----------------------------------------------------------------------------- */

typedef struct whjob {
    bson_t d;          /* the delivery */
    bson_t ep;         /* its endpoint */
    int have_ep;
    char sig[160], sighdr[200], idhdr[80], typehdr[80];
    const char *hdr[5];
} whjob;

static int64_t jitter(long base)
{
    char hex[3];
    if (cm_random_hex(hex, 1) != CM_OK)
        return base;
    return base + (long)((double)base * 0.4 * ((double)strtol(hex, NULL, 16) / 255.0 - 0.5));
}

static void dead_letter(nf_webhooks *w, const bson_t *d, int attempts, const char *why)
{
    cJSON *data = cJSON_CreateObject();
    cm_kafka_header h[1] = {{"error", why}};
    const char *did = cm_bson_str(d, "_id", ""), *ep = cm_bson_str(d, "endpoint_id", "");
    char id[CM_UUID_STRLEN + 16], *ev = NULL;

    if (data == NULL)
        return;
    snprintf(id, sizeof(id), "%s.%d", did, attempts);
    cJSON_AddStringToObject(data, "webhook_delivery_id", did);
    cJSON_AddStringToObject(data, "endpoint_id", ep);
    cJSON_AddStringToObject(data, "event_id", cm_bson_str(d, "event_id", ""));
    cJSON_AddStringToObject(data, "event_type", cm_bson_str(d, "event_type", ""));
    cJSON_AddNumberToObject(data, "attempts", attempts);
    cJSON_AddStringToObject(data, "error", why);
    if (cm_event_build(id, "webhook.failed", "/notification", ep, cm_bson_str(d, "tenant", ""),
                       cm_clock_now_ms(), data, &ev) != CM_OK)
        return;
    if (cm_kafka_produce(w->ctx->kafka, NF_TOPIC ".dlq", ep, strlen(ep), ev, strlen(ev), h, 1,
                         NULL) != CM_OK)
        cm_error("webhooks: delivery %s not dead-lettered", did);
    free(ev);
}

/* Records attempt `n` of job `j` and the endpoint's failure count (disabling it after
 * cfg.disable_after consecutive failures). */
static void record(nf_webhooks *w, whjob *j, int ok, long status, const char *why)
{
    const char *id = cm_bson_str(&j->d, "_id", "");
    int n = (int)cm_bson_int(&j->d, "attempts", 0) + 1;
    int64_t now = cm_clock_now_ms(), next = 0;
    const char *state;
    bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, set, push, h;

    if (ok) {
        state = "sent";
        atomic_fetch_add(&w->sent, 1);
    } else if (n <= w->cfg.nretries) {
        state = "queued";
        next = now + jitter(w->cfg.retry_ms[n - 1]);
        if (w->next_retry == 0 || next < w->next_retry)
            w->next_retry = next;
        atomic_fetch_add(&w->retried, 1);
    } else {
        state = "dead_lettered";
        atomic_fetch_add(&w->dead_lettered, 1);
        dead_letter(w, &j->d, n, why);
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
    BSON_APPEND_INT32(&h, "status", (int32_t)status);
    BSON_APPEND_UTF8(&h, "detail", why);
    bson_append_document_end(&push, &h);
    bson_append_document_end(&u, &push);
    if (cm_mongo_update(w->ctx->db, NF_COLL_WEBHOOK_DELIVERIES, &f, &u, 0, 0, NULL) != CM_OK)
        cm_warn("webhooks: attempt %d of delivery %s not recorded", n, id);
    bson_destroy(&f);
    bson_destroy(&u);
    if (!j->have_ep)
        return;
    /* The endpoint's run of failures: reset by a success, disabling it when it gets long. */
    {
        int64_t failures = ok ? 0 : cm_bson_int(&j->ep, "failures", 0) + 1;
        int disable = !ok && failures >= w->cfg.disable_after;
        bson_t ef = BSON_INITIALIZER, eu = BSON_INITIALIZER, es;
        BSON_APPEND_UTF8(&ef, "_id", cm_bson_str(&j->ep, "_id", ""));
        BSON_APPEND_DOCUMENT_BEGIN(&eu, "$set", &es);
        BSON_APPEND_INT32(&es, "failures", (int32_t)failures);
        if (disable) {
            char reason[300];
            snprintf(reason, sizeof(reason), "%" PRId64 " consecutive failed deliveries; last: %s",
                     failures, why);
            BSON_APPEND_BOOL(&es, "enabled", false);
            BSON_APPEND_UTF8(&es, "disabled_reason", reason);
            atomic_fetch_add(&w->disabled, 1);
            cm_warn("webhooks: endpoint %s disabled (%s)", cm_bson_str(&j->ep, "_id", ""), reason);
        }
        bson_append_document_end(&eu, &es);
        if (cm_mongo_update(w->ctx->db, NF_COLL_WEBHOOKS, &ef, &eu, 0, 0, NULL) == CM_OK) {
            /* Later jobs of this round see the new count. */
            bson_t copy = BSON_INITIALIZER;
            bson_copy_to_excluding_noinit(&j->ep, &copy, "failures", "enabled", NULL);
            BSON_APPEND_INT64(&copy, "failures", failures);
            BSON_APPEND_BOOL(&copy, "enabled", !disable && cm_bson_bool(&j->ep, "enabled", 1));
            /* A bson_t cannot be moved by value (a grown one points into itself). */
            bson_destroy(&j->ep);
            bson_copy_to(&copy, &j->ep);
            bson_destroy(&copy);
        }
        bson_destroy(&ef);
        bson_destroy(&eu);
    }
}

typedef struct whdue {
    whjob *jobs;
    size_t n;
} whdue;

static int collect_whdue(const bson_t *doc, void *ud)
{
    whdue *q = ud;
    if (q->n == WH_BATCH)
        return 1;
    bson_copy_to(doc, &q->jobs[q->n++].d);
    return 0;
}

/* One round: due deliveries (leased in Redis), their endpoints, the POSTs at once, records. */
static size_t round_once(nf_webhooks *w)
{
    whdue q = {calloc(WH_BATCH, sizeof(whjob)), 0};
    bson_t f = BSON_INITIALIZER, opts = BSON_INITIALIZER, lte, sort;
    cm_httpc_request reqs[WH_BATCH];
    cm_httpc_result res[WH_BATCH];
    size_t which[WH_BATCH], nreq = 0, done = 0;
    int leased[WH_BATCH] = {0};

    if (q.jobs == NULL)
        return 0;
    BSON_APPEND_UTF8(&f, "state", "queued");
    BSON_APPEND_DOCUMENT_BEGIN(&f, "next_at", &lte);
    BSON_APPEND_INT64(&lte, "$lte", cm_clock_now_ms());
    bson_append_document_end(&f, &lte);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "next_at", 1);
    bson_append_document_end(&opts, &sort);
    BSON_APPEND_INT64(&opts, "limit", WH_BATCH);
    (void)cm_mongo_find(w->ctx->db, NF_COLL_WEBHOOK_DELIVERIES, &f, &opts, collect_whdue, &q);
    for (size_t i = 0; i < q.n; i++) {
        whjob *j = &q.jobs[i];
        char key[80];
        bson_t ef = BSON_INITIALIZER;
        int64_t t = cm_clock_now_ms() / 1000;
        const char *body = cm_bson_str(&j->d, "body", "");
        snprintf(key, sizeof(key), "nf:webhook:%s", cm_bson_str(&j->d, "_id", ""));
        if (cm_redis_lock(w->ctx->redis, key, w->instance, WH_LEASE_MS) != CM_OK)
            continue;
        leased[i] = 1;
        BSON_APPEND_UTF8(&ef, "_id", cm_bson_str(&j->d, "endpoint_id", ""));
        j->have_ep = cm_mongo_find_one(w->ctx->db, NF_COLL_WEBHOOKS, &ef, NULL, &j->ep) == CM_OK;
        bson_destroy(&ef);
        if (!j->have_ep || !cm_bson_bool(&j->ep, "enabled", 1)) {
            /* Deleted or disabled since: given up without a request. */
            bson_t cf = BSON_INITIALIZER, cu = BSON_INITIALIZER, cs;
            BSON_APPEND_UTF8(&cf, "_id", cm_bson_str(&j->d, "_id", ""));
            BSON_APPEND_DOCUMENT_BEGIN(&cu, "$set", &cs);
            BSON_APPEND_UTF8(&cs, "state", j->have_ep ? "cancelled_disabled" : "cancelled_deleted");
            bson_append_document_end(&cu, &cs);
            (void)cm_mongo_update(w->ctx->db, NF_COLL_WEBHOOK_DELIVERIES, &cf, &cu, 0, 0, NULL);
            bson_destroy(&cf);
            bson_destroy(&cu);
            continue;
        }
        if (nf_webhook_sign(cm_bson_str(&j->ep, "secret", ""), t, body, strlen(body), j->sig,
                            sizeof(j->sig)) != CM_OK)
            continue;
        snprintf(j->sighdr, sizeof(j->sighdr), "Chat-Signature: %s", j->sig);
        snprintf(j->idhdr, sizeof(j->idhdr), "Chat-Webhook-Id: %s", cm_bson_str(&j->d, "_id", ""));
        snprintf(j->typehdr, sizeof(j->typehdr), "Chat-Event-Type: %s",
                 cm_bson_str(&j->d, "event_type", ""));
        j->hdr[0] = "Content-Type: application/json";
        j->hdr[1] = j->sighdr;
        j->hdr[2] = j->idhdr;
        j->hdr[3] = j->typehdr;
        j->hdr[4] = NULL;
        reqs[nreq] = (cm_httpc_request){"POST", cm_bson_str(&j->ep, "url", ""), j->hdr, body,
                                        strlen(body), w->cfg.timeout_ms, WH_BODY_MAX, 0,
                                        (void *)open_checked, w};
        which[nreq++] = i;
    }
    (void)cm_httpc_pool_perform(w->http, reqs, nreq, res);
    for (size_t k = 0; k < nreq; k++) {
        whjob *j = &q.jobs[which[k]];
        char why[200];
        int ok = res[k].rc == CM_OK && res[k].status >= 200 && res[k].status < 300;
        if (res[k].rc != CM_OK)
            snprintf(why, sizeof(why), "not delivered: %s (a refused private address, the "
                     "network, or a timeout)", cm_strerror(res[k].rc));
        else
            snprintf(why, sizeof(why), "the endpoint answered %ld", res[k].status);
        record(w, j, ok, res[k].rc == CM_OK ? res[k].status : 0, why);
        free(res[k].body);
        done++;
    }
    for (size_t i = 0; i < q.n; i++) {
        if (leased[i]) {
            char key[80];
            snprintf(key, sizeof(key), "nf:webhook:%s", cm_bson_str(&q.jobs[i].d, "_id", ""));
            cm_redis_unlock(w->ctx->redis, key, w->instance);
        }
        bson_destroy(&q.jobs[i].d);
        if (q.jobs[i].have_ep)
            bson_destroy(&q.jobs[i].ep);
    }
    free(q.jobs);
    bson_destroy(&f);
    bson_destroy(&opts);
    return done;
}

static void *run(void *arg)
{
    nf_webhooks *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        size_t done;
        pthread_mutex_unlock(&w->mu);
        done = round_once(w);
        pthread_mutex_lock(&w->mu);
        if (done == 0 && !w->kick && !w->stop) {
            /* Wake for the next retry, or after a second (what a crash left, a lost kick). */
            struct timespec ts;
            int64_t now = cm_clock_now_ms(), wake = now + 1000;
            if (w->next_retry > now && w->next_retry < wake)
                wake = w->next_retry;
            else if (w->next_retry > 0 && w->next_retry <= now)
                wake = now + 10;
            if (w->next_retry > 0 && w->next_retry <= wake)
                w->next_retry = 0;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += (wake - now) / 1000;
            ts.tv_nsec += ((wake - now) % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&w->cv, &w->mu, &ts);
        }
        w->kick = 0;
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

cm_err nf_webhooks_start(nf_ctx *ctx, const nf_webhooks_config *cfg, nf_webhooks **out)
{
    nf_webhooks *w = calloc(1, sizeof(*w));
    const char *p;

    if (w == NULL)
        return CM_ENOMEM;
    w->ctx = ctx;
    w->cfg = *cfg;
    for (p = cfg->allow_private; p && *p;) {
        char one[64];
        size_t len = strcspn(p, ",");
        if (len >= sizeof(one) || w->nallow == (int)(sizeof(w->allow) / sizeof(w->allow[0]))) {
            cm_error("config: WEBHOOK_ALLOW_PRIVATE_CIDRS: at most 16 CIDRs of 63 characters");
            free(w);
            return CM_EINVAL;
        }
        memcpy(one, p, len);
        one[len] = '\0';
        if (parse_cidr(one, &w->allow[w->nallow++]) != 0) {
            cm_error("config: WEBHOOK_ALLOW_PRIVATE_CIDRS: '%s' is not an address/bits", one);
            free(w);
            return CM_EINVAL;
        }
        p += len;
        if (*p == ',')
            p++;
    }
    if (w->nallow > 0)
        cm_warn("webhooks: private addresses allowed for %s (tests only)", cfg->allow_private);
    if (cm_random_hex(w->instance, 16) != CM_OK || cm_httpc_pool_create(16, &w->http) != CM_OK) {
        free(w);
        return CM_EIO;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (pthread_create(&w->thread, NULL, run, w) != 0) {
        cm_httpc_pool_destroy(w->http);
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        free(w);
        return CM_EIO;
    }
    *out = w;
    return CM_OK;
}

void nf_webhooks_stop(nf_webhooks *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    cm_httpc_pool_destroy(w->http);
    free(w);
}

void nf_webhooks_metrics(nf_webhooks *w, void (*emit)(void *ctx, const char *text), void *ctx)
{
    char buf[1024];
    if (w == NULL)
        return;
    snprintf(buf, sizeof(buf),
             "# HELP notification_webhook_total Webhook attempts by outcome.\n"
             "# TYPE notification_webhook_total counter\n"
             "notification_webhook_total{outcome=\"sent\"} %ld\n"
             "notification_webhook_total{outcome=\"retried\"} %ld\n"
             "notification_webhook_total{outcome=\"dead_lettered\"} %ld\n"
             "# HELP notification_webhook_refused_total Connections refused to non-public addresses.\n"
             "# TYPE notification_webhook_refused_total counter\n"
             "notification_webhook_refused_total %ld\n"
             "# HELP notification_webhook_disabled_total Endpoints disabled after repeated failures.\n"
             "# TYPE notification_webhook_disabled_total counter\n"
             "notification_webhook_disabled_total %ld\n",
             atomic_load(&w->sent), atomic_load(&w->retried), atomic_load(&w->dead_lettered),
             atomic_load(&w->refused), atomic_load(&w->disabled));
    emit(ctx, buf);
}
