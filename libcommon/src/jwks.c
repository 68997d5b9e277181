/* jwks.c - feeds a verifier's key set from a JWK Set URL with libcurl: at start, on an unknown
 * kid (rate-limited) and periodically on a background thread. */
#include "common/jwks.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "common/config.h"
#include "common/log.h"

struct cm_jwks {
    cm_jwt *jwt; /* the verifier fed; it owns this fetcher */
    char *url;
    long min_interval_ms, max_age_ms, timeout_ms;
    pthread_mutex_t fetch_lock; /* one fetch at a time; guards the fields below */
    int64_t last_fetch_ms;      /* monotonic time of the last fetch attempt, 0: none */
    unsigned long generation;   /* successful fetches; read without the lock as a hint */
    long fetches;
    pthread_mutex_t stop_lock;
    pthread_cond_t stop_cond;
    int stopping, have_thread;
    pthread_t thread;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct body {
    char *buf;
    size_t len, cap;
    int too_big;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    struct body *b = ud;
    size_t n = size * nmemb;

    if (b->len + n > b->cap) {
        b->too_big = 1;
        return 0; /* aborts the transfer */
    }
    memcpy(b->buf + b->len, data, n);
    b->len += n;
    return n;
}

/* One fetch and, when the document is good, the swap. Caller holds fetch_lock. */
static cm_err fetch_locked(cm_jwks *k)
{
    struct body b = {.cap = CM_JWT_JWKS_MAX};
    CURL *curl = curl_easy_init();
    char detail[256];
    long status = 0;
    int nkeys = 0;
    CURLcode cc;
    cm_err rc = CM_ENOMEM;

    k->last_fetch_ms = mono_ms();
    k->fetches++;
    b.buf = malloc(b.cap);
    if (curl == NULL || b.buf == NULL)
        goto out;
    curl_easy_setopt(curl, CURLOPT_URL, k->url);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, k->timeout_ms);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, k->timeout_ms);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, NULL);
    cc = curl_easy_perform(curl);
    if (b.too_big) {
        cm_warn("jwks: %s is larger than %d bytes; keys unchanged", k->url, CM_JWT_JWKS_MAX);
        rc = CM_ETOOBIG;
        goto out;
    }
    if (cc != CURLE_OK) {
        cm_warn("jwks: fetching %s failed: %s; keys unchanged", k->url, curl_easy_strerror(cc));
        rc = CM_EIO;
        goto out;
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
        cm_warn("jwks: %s answered %ld; keys unchanged", k->url, status);
        rc = CM_EIO;
        goto out;
    }
    rc = cm_jwt_set_jwks(k->jwt, b.buf, b.len, &nkeys, detail, sizeof(detail));
    if (rc != CM_OK) {
        cm_warn("jwks: %s refused: %s; keys unchanged", k->url, detail);
        goto out;
    }
    __atomic_add_fetch(&k->generation, 1, __ATOMIC_RELEASE);
    cm_info("jwks: %d keys from %s", nkeys, k->url);
out:
    free(b.buf);
    curl_easy_cleanup(curl);
    return rc;
}

/* The verifier's unknown-kid hook. CM_OK when the keys may have changed since the caller
 * looked, so it looks again. */
static cm_err on_unknown_kid(cm_jwt *j, void *ud)
{
    cm_jwks *k = ud;
    unsigned long seen = __atomic_load_n(&k->generation, __ATOMIC_ACQUIRE);
    int64_t wait;
    cm_err rc;

    (void)j;
    pthread_mutex_lock(&k->fetch_lock);
    if (__atomic_load_n(&k->generation, __ATOMIC_ACQUIRE) != seen) {
        /* Another thread fetched while this one waited for the lock. */
        pthread_mutex_unlock(&k->fetch_lock);
        return CM_OK;
    }
    wait = cm_jwt_key_count(k->jwt) == 0 ? 1000 : k->min_interval_ms;
    if (k->last_fetch_ms != 0 && mono_ms() - k->last_fetch_ms < wait) {
        pthread_mutex_unlock(&k->fetch_lock);
        return CM_EAGAIN;
    }
    rc = fetch_locked(k);
    pthread_mutex_unlock(&k->fetch_lock);
    return rc;
}

static void *refresher(void *ud)
{
    cm_jwks *k = ud;
    struct timespec until;

    pthread_mutex_lock(&k->stop_lock);
    while (!k->stopping) {
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += k->max_age_ms / 1000;
        if (pthread_cond_timedwait(&k->stop_cond, &k->stop_lock, &until) != ETIMEDOUT)
            continue;
        pthread_mutex_unlock(&k->stop_lock);
        pthread_mutex_lock(&k->fetch_lock);
        fetch_locked(k);
        pthread_mutex_unlock(&k->fetch_lock);
        pthread_mutex_lock(&k->stop_lock);
    }
    pthread_mutex_unlock(&k->stop_lock);
    return NULL;
}

static void jwks_free(void *ud)
{
    cm_jwks *k = ud;

    if (k == NULL)
        return;
    if (k->have_thread) {
        pthread_mutex_lock(&k->stop_lock);
        k->stopping = 1;
        pthread_cond_signal(&k->stop_cond);
        pthread_mutex_unlock(&k->stop_lock);
        pthread_join(k->thread, NULL);
    }
    pthread_cond_destroy(&k->stop_cond);
    pthread_mutex_destroy(&k->stop_lock);
    pthread_mutex_destroy(&k->fetch_lock);
    free(k->url);
    free(k);
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

cm_err cm_jwks_attach(cm_jwt *j, const cm_jwks_config *cfg, cm_jwks **fetcher)
{
    pthread_condattr_t ca;
    cm_jwks *k;

    if (cfg->url == NULL ||
        (strncasecmp(cfg->url, "http://", 7) != 0 && strncasecmp(cfg->url, "https://", 8) != 0) ||
        cfg->min_interval_s < 1 || cfg->min_interval_s > 86400 || cfg->max_age_s < 0 ||
        cfg->max_age_s > 86400 * 7 || cfg->timeout_ms < 10 || cfg->timeout_ms > 60000)
        return CM_EINVAL;
    pthread_once(&curl_once, curl_init_once);
    k = calloc(1, sizeof(*k));
    if (k == NULL || (k->url = strdup(cfg->url)) == NULL) {
        free(k);
        return CM_ENOMEM;
    }
    k->jwt = j;
    k->min_interval_ms = cfg->min_interval_s * 1000;
    k->max_age_ms = cfg->max_age_s * 1000;
    k->timeout_ms = cfg->timeout_ms;
    pthread_mutex_init(&k->fetch_lock, NULL);
    pthread_mutex_init(&k->stop_lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&k->stop_cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_lock(&k->fetch_lock);
    if (fetch_locked(k) != CM_OK)
        cm_warn("jwks: no keys yet from %s; tokens are refused until a fetch succeeds", k->url);
    pthread_mutex_unlock(&k->fetch_lock);
    if (k->max_age_ms > 0) {
        if (pthread_create(&k->thread, NULL, refresher, k) != 0) {
            jwks_free(k);
            return CM_ENOMEM;
        }
        k->have_thread = 1;
    }
    cm_jwt_set_refresh(j, on_unknown_kid, k, jwks_free);
    if (fetcher)
        *fetcher = k;
    return CM_OK;
}

cm_err cm_jwks_refresh_now(cm_jwks *k)
{
    cm_err rc;
    pthread_mutex_lock(&k->fetch_lock);
    rc = fetch_locked(k);
    pthread_mutex_unlock(&k->fetch_lock);
    return rc;
}

long cm_jwks_fetch_count(cm_jwks *k)
{
    long n;
    pthread_mutex_lock(&k->fetch_lock);
    n = k->fetches;
    pthread_mutex_unlock(&k->fetch_lock);
    return n;
}

cm_err cm_jwt_verifier_from_env(cm_jwt **out)
{
    const char *url = cm_config_str("JWT_JWKS_URL", NULL);
    cm_jwks_config cfg = {.url = url};
    cm_jwt *j = NULL;
    cm_err rc;

    if (url == NULL)
        return cm_jwt_from_env("JWT_PUBLIC_KEY_FILE", out);
    if (cm_config_long("JWT_JWKS_MIN_REFRESH_S", 30, 1, 86400, &cfg.min_interval_s) ||
        cm_config_long("JWT_JWKS_MAX_AGE_S", 300, 0, 86400 * 7, &cfg.max_age_s) ||
        cm_config_long("JWT_JWKS_TIMEOUT_MS", 2000, 10, 60000, &cfg.timeout_ms))
        return CM_EINVAL;
    rc = cm_jwt_keyless_from_env(&j);
    if (rc != CM_OK)
        return rc;
    rc = cm_jwks_attach(j, &cfg, NULL);
    if (rc != CM_OK) {
        cm_error("config: JWT_JWKS_URL must be an http or https URL");
        cm_jwt_destroy(j);
        return rc;
    }
    *out = j;
    return CM_OK;
}
