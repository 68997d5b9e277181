/* tenant.c - tenant settings from the user service, cached per process (common/tenant.h). */
#include "common/tenant.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/httpc.h"
#include "common/internal.h"
#include "common/log.h"

#define BUCKETS 1024
#define ENTRIES_MAX 8192     /* tenants cached at once; past it the cache starts over */
#define BODY_MAX (64 * 1024) /* a settings object is well under 4 KiB */
#define TENANT_ID_MAX 64
#define RETRY_MS 1000 /* after a failed fetch, the user service is not asked again for this long */

struct entry {
    struct entry *next;
    char tenant[TENANT_ID_MAX + 1];
    cJSON *settings;  /* as received; NULL: the user service said 404, or never answered */
    int answered;     /* it answered once (200 or 404): settings is its answer */
    int64_t fetched;  /* ms, cm_clock_now_ms, of that answer */
    int64_t retry_at; /* ms: no fetch before (a failed fetch, or one in flight) */
};

struct cm_tenant_settings {
    char *user_url;
    long ttl_ms, timeout_ms;
    pthread_mutex_t lock;
    struct entry *bucket[BUCKETS];
    long n;
};

cm_err cm_tenant_settings_create(const char *user_url, long ttl_ms, long timeout_ms,
                                 cm_tenant_settings **out)
{
    cm_tenant_settings *ts;

    if (user_url == NULL || ttl_ms < 0 || timeout_ms <= 0)
        return CM_EINVAL;
    ts = calloc(1, sizeof(*ts));
    if (ts == NULL || (ts->user_url = strdup(user_url)) == NULL) {
        free(ts);
        return CM_ENOMEM;
    }
    ts->ttl_ms = ttl_ms;
    ts->timeout_ms = timeout_ms;
    pthread_mutex_init(&ts->lock, NULL);
    *out = ts;
    return CM_OK;
}

static void clear(cm_tenant_settings *ts)
{
    for (int i = 0; i < BUCKETS; i++) {
        struct entry *e = ts->bucket[i];
        while (e) {
            struct entry *next = e->next;
            cJSON_Delete(e->settings);
            free(e);
            e = next;
        }
        ts->bucket[i] = NULL;
    }
    ts->n = 0;
}

void cm_tenant_settings_destroy(cm_tenant_settings *ts)
{
    if (ts == NULL)
        return;
    clear(ts);
    pthread_mutex_destroy(&ts->lock);
    free(ts->user_url);
    free(ts);
}

static unsigned hash(const char *s)
{
    unsigned h = 2166136261u;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 16777619u;
    return h % BUCKETS;
}

static int tenant_ok(const char *t)
{
    size_t n = 0;
    for (; t[n]; n++)
        if (!((t[n] >= 'a' && t[n] <= 'z') || (t[n] >= 'A' && t[n] <= 'Z') ||
              (t[n] >= '0' && t[n] <= '9') || t[n] == '-' || t[n] == '_'))
            return 0;
    return n > 0 && n <= TENANT_ID_MAX;
}

/* Under the lock: the entry of `tenant`, or NULL. */
static struct entry *lookup(cm_tenant_settings *ts, const char *tenant)
{
    for (struct entry *e = ts->bucket[hash(tenant)]; e; e = e->next)
        if (strcmp(e->tenant, tenant) == 0)
            return e;
    return NULL;
}

/* Turns a cached answer into the caller's copy. */
static cm_err answer(const cJSON *settings, cJSON **out)
{
    if (settings == NULL)
        return CM_ENOTFOUND;
    *out = cJSON_Duplicate(settings, 1);
    return *out ? CM_OK : CM_ENOMEM;
}

/* Under the lock: the entry of `tenant`, created empty when there is none (NULL: no memory). */
static struct entry *entry_for(cm_tenant_settings *ts, const char *tenant)
{
    struct entry *e = lookup(ts, tenant);

    if (e == NULL) {
        if (ts->n >= ENTRIES_MAX)
            clear(ts);
        if ((e = calloc(1, sizeof(*e))) == NULL)
            return NULL;
        snprintf(e->tenant, sizeof(e->tenant), "%s", tenant);
        e->next = ts->bucket[hash(tenant)];
        ts->bucket[hash(tenant)] = e;
        ts->n++;
    }
    return e;
}

/* Stores the answer for `tenant` (NULL: unknown tenant); takes `settings`. */
static void store(cm_tenant_settings *ts, const char *tenant, cJSON *settings)
{
    struct entry *e;

    pthread_mutex_lock(&ts->lock);
    e = entry_for(ts, tenant);
    if (e == NULL) {
        pthread_mutex_unlock(&ts->lock);
        cJSON_Delete(settings);
        return;
    }
    cJSON_Delete(e->settings);
    e->settings = settings;
    e->answered = 1;
    e->fetched = cm_clock_now_ms();
    e->retry_at = 0;
    pthread_mutex_unlock(&ts->lock);
}

cm_err cm_tenant_settings_get(cm_tenant_settings *ts, const char *tenant, cJSON **out)
{
    char url[1024], *body = NULL;
    size_t len = 0;
    long status = 0;
    struct entry *e;
    int64_t now;
    cm_err rc;

    *out = NULL;
    if (tenant == NULL || !tenant_ok(tenant))
        return CM_EINVAL;
    pthread_mutex_lock(&ts->lock);
    e = lookup(ts, tenant);
    now = cm_clock_now_ms();
    if (e && e->answered && now - e->fetched < ts->ttl_ms) {
        rc = answer(e->settings, out);
        pthread_mutex_unlock(&ts->lock);
        return rc;
    }
    if (e && now < e->retry_at) {
        /* Failed a moment ago, or being fetched by another thread: the last copy, or the
         * defaults, without waiting on the user service again. */
        rc = e->answered ? answer(e->settings, out) : CM_EIO;
        pthread_mutex_unlock(&ts->lock);
        return rc;
    }
    /* A stale copy is refreshed by one thread; the others go on with it meanwhile. A tenant
     * without one is fetched by every thread that asks: none may run on the defaults while
     * its first answer is on its way. */
    if (e && e->answered)
        e->retry_at = now + ts->timeout_ms + RETRY_MS;
    pthread_mutex_unlock(&ts->lock);

    /* Fetched outside the lock. */
    snprintf(url, sizeof(url), "%s/internal/v1/tenants/%s/settings", ts->user_url, tenant);
    rc = cm_httpc_get_with(url, cm_internal_key_header(), ts->timeout_ms, BODY_MAX, &body, &len, &status);
    if (rc == CM_OK && status == 200) {
        cJSON *o = cJSON_Parse(body);
        free(body);
        if (cJSON_IsObject(o)) {
            *out = cJSON_Duplicate(o, 1);
            store(ts, tenant, o);
            return *out ? CM_OK : CM_ENOMEM;
        }
        cJSON_Delete(o);
        body = NULL;
    } else if (rc == CM_OK && status == 404) {
        free(body);
        store(ts, tenant, NULL);
        return CM_ENOTFOUND;
    }
    free(body);
    /* No usable answer: the last copy, however old, beats the defaults; either serves every
     * caller for RETRY_MS before the user service is asked again. */
    cm_warn("tenant settings of %s: the user service did not answer (%s, HTTP %ld); asked again "
            "in %d ms", tenant, cm_strerror(rc), status, RETRY_MS);
    pthread_mutex_lock(&ts->lock);
    if ((e = entry_for(ts, tenant)) != NULL) /* its callers get the defaults at once meanwhile */
        e->retry_at = cm_clock_now_ms() + RETRY_MS;
    rc = e && e->answered ? answer(e->settings, out) : CM_EIO;
    pthread_mutex_unlock(&ts->lock);
    return rc;
}

long cm_tenant_setting_long(const cJSON *settings, const char *name, long def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(settings, name);
    return cJSON_IsNumber(v) ? (long)v->valuedouble : def;
}

long cm_tenant_settings_long(cm_tenant_settings *ts, const char *tenant, const char *name, long def)
{
    struct entry *e;
    cJSON *s = NULL;
    long v = def;

    if (tenant != NULL && tenant_ok(tenant)) {
        /* The fresh copy is read in place: no copy on the hot path. */
        pthread_mutex_lock(&ts->lock);
        e = lookup(ts, tenant);
        if (e && e->answered && cm_clock_now_ms() - e->fetched < ts->ttl_ms) {
            if (e->settings)
                v = cm_tenant_setting_long(e->settings, name, def);
            pthread_mutex_unlock(&ts->lock);
            return v;
        }
        pthread_mutex_unlock(&ts->lock);
    }
    if (cm_tenant_settings_get(ts, tenant, &s) == CM_OK) {
        v = cm_tenant_setting_long(s, name, def);
        cJSON_Delete(s);
    }
    return v;
}
