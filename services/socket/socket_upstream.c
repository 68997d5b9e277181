/* socket_upstream.c - the worker pool that calls the messaging service (libcurl easy handles,
 * one per worker, kept alive), with per-request timeouts and a circuit breaker shared by all
 * workers: while the messaging service is down, calls fail at once instead of queueing. */
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "common/log.h"
#include "socket_upstream.h"

#define RESP_MAX (8 << 20)
#define LOAD_PAGES_MAX 200

struct socket_upstream {
    char *base;
    long timeout_ms;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    socket_job *in_head, *in_tail, *done_head, *done_tail;
    socket_breaker breaker;
    int stop;
    pthread_t *threads;
    int nthreads;
    void (*notify)(void *ud);
    void *ud;
    long calls, failures;
};

typedef struct buf {
    char *p;
    size_t len;
} buf;

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
    buf *b = ud;
    size_t n = size * nmemb;
    char *q;

    if (b->len + n > RESP_MAX || (q = realloc(b->p, b->len + n + 1)) == NULL)
        return 0;
    memcpy(q + b->len, ptr, n);
    b->len += n;
    q[b->len] = '\0';
    b->p = q;
    return n;
}

socket_job *socket_job_new(socket_job_kind kind, int what, uint64_t conn_id, const char *method,
                           const char *path, const char *body, const char *token)
{
    socket_job *j = calloc(1, sizeof(*j));

    if (j == NULL)
        return NULL;
    j->kind = kind;
    j->what = what;
    j->conn_id = conn_id;
    snprintf(j->method, sizeof(j->method), "%s", method);
    j->path = strdup(path);
    j->body = body ? strdup(body) : NULL;
    j->token = strdup(token);
    if (j->path == NULL || j->token == NULL || (body && j->body == NULL)) {
        socket_job_free(j);
        return NULL;
    }
    return j;
}

void socket_job_free(socket_job *j)
{
    if (j == NULL)
        return;
    free(j->path);
    free(j->body);
    free(j->token);
    free(j->resp);
    for (size_t i = 0; i < j->nids; i++)
        free(j->ids[i]);
    free(j->ids);
    free(j);
}

/* One HTTP request; the status (0 when no answer) and body land in `status` and `out`. */
static void request(socket_upstream *u, CURL *c, const char *method, const char *path,
                    const char *body, const char *token, int *status, buf *out)
{
    char url[4096], auth[CM_JWT_ID_MAX * 8 + 64];
    struct curl_slist *h = NULL;
    long code = 0;
    int allowed;

    *status = 0;
    pthread_mutex_lock(&u->mu);
    allowed = socket_breaker_allow(&u->breaker, socket_now_ms());
    u->calls++;
    pthread_mutex_unlock(&u->mu);
    if (!allowed)
        return;
    if (snprintf(url, sizeof(url), "%s%s", u->base, path) >= (int)sizeof(url) ||
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token) >= (int)sizeof(auth)) {
        *status = 400;
        return;
    }
    h = curl_slist_append(h, auth);
    h = curl_slist_append(h, "Content-Type: application/json");
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, u->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, u->timeout_ms < 1000 ? u->timeout_ms : 1000);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(h);
    *status = (int)code;
    pthread_mutex_lock(&u->mu);
    socket_breaker_record(&u->breaker, code > 0 && code < 500, socket_now_ms());
    if (code == 0 || code >= 500)
        u->failures++;
    pthread_mutex_unlock(&u->mu);
}

/* GET /v1/conversations page after page: the ids of the user's conversations. */
static void load(socket_upstream *u, CURL *c, socket_job *j)
{
    char path[1024], *cursor = NULL;
    int pages = 0;

    do {
        buf b = {0};
        cJSON *page, *items, *it, *next;
        int n = snprintf(path, sizeof(path), "/v1/conversations?limit=100%s%s",
                         cursor ? "&cursor=" : "", cursor ? cursor : "");

        free(cursor);
        cursor = NULL;
        if (n >= (int)sizeof(path))
            break;
        request(u, c, "GET", path, NULL, j->token, &j->status, &b);
        page = j->status == 200 && b.p ? cJSON_Parse(b.p) : NULL;
        if (page == NULL) {
            free(j->resp);
            j->resp = b.p;
            if (j->status == 200)
                j->status = 502;
            break;
        }
        free(b.p);
        items = cJSON_GetObjectItemCaseSensitive(page, "items");
        cJSON_ArrayForEach(it, items)
        {
            const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "id"));
            char **grown = id ? realloc(j->ids, (j->nids + 1) * sizeof(char *)) : NULL;
            if (grown) {
                j->ids = grown;
                if ((j->ids[j->nids] = strdup(id)))
                    j->nids++;
            }
        }
        next = cJSON_GetObjectItemCaseSensitive(page, "next_cursor");
        if (cJSON_IsString(next) && strlen(next->valuestring) < 512)
            cursor = strdup(next->valuestring);
        cJSON_Delete(page);
    } while (cursor && ++pages < LOAD_PAGES_MAX);
    free(cursor);
}

static void *worker(void *arg)
{
    socket_upstream *u = arg;
    CURL *c = curl_easy_init();

    for (;;) {
        socket_job *j;

        pthread_mutex_lock(&u->mu);
        while (!u->stop && u->in_head == NULL)
            pthread_cond_wait(&u->cv, &u->mu);
        if (u->stop) {
            pthread_mutex_unlock(&u->mu);
            break;
        }
        j = u->in_head;
        u->in_head = j->next;
        if (u->in_head == NULL)
            u->in_tail = NULL;
        pthread_mutex_unlock(&u->mu);
        j->next = NULL;
        if (c == NULL) {
            j->status = 0;
        } else if (j->kind == SOCKET_JOB_LOAD) {
            load(u, c, j);
        } else {
            buf b = {0};
            request(u, c, j->method, j->path, j->body, j->token, &j->status, &b);
            j->resp = b.p;
        }
        j->refused = j->status == 0 && u->breaker.failures >= u->breaker.threshold;
        pthread_mutex_lock(&u->mu);
        if (u->done_tail)
            u->done_tail->next = j;
        else
            u->done_head = j;
        u->done_tail = j;
        pthread_mutex_unlock(&u->mu);
        u->notify(u->ud);
    }
    curl_easy_cleanup(c);
    return NULL;
}

cm_err socket_upstream_create(const char *base_url, int threads, long timeout_ms, int threshold,
                              long open_ms, void (*notify)(void *ud), void *ud,
                              socket_upstream **out)
{
    socket_upstream *u = calloc(1, sizeof(*u));

    if (u == NULL || (u->base = strdup(base_url)) == NULL ||
        (u->threads = calloc((size_t)threads, sizeof(pthread_t))) == NULL) {
        socket_upstream_destroy(u);
        return CM_ENOMEM;
    }
    pthread_mutex_init(&u->mu, NULL);
    pthread_cond_init(&u->cv, NULL);
    u->timeout_ms = timeout_ms;
    u->breaker.threshold = threshold;
    u->breaker.open_ms = open_ms;
    u->notify = notify;
    u->ud = ud;
    for (; u->nthreads < threads; u->nthreads++)
        if (pthread_create(&u->threads[u->nthreads], NULL, worker, u) != 0) {
            socket_upstream_destroy(u);
            return CM_EIO;
        }
    *out = u;
    return CM_OK;
}

void socket_upstream_destroy(socket_upstream *u)
{
    if (u == NULL)
        return;
    if (u->threads) {
        pthread_mutex_lock(&u->mu);
        u->stop = 1;
        pthread_cond_broadcast(&u->cv);
        pthread_mutex_unlock(&u->mu);
        for (int i = 0; i < u->nthreads; i++)
            pthread_join(u->threads[i], NULL);
        pthread_mutex_destroy(&u->mu);
        pthread_cond_destroy(&u->cv);
    }
    for (socket_job *lists[2] = {u->in_head, u->done_head}, **l = lists; l < lists + 2; l++)
        while (*l) {
            socket_job *next = (*l)->next;
            socket_job_free(*l);
            *l = next;
        }
    free(u->threads);
    free(u->base);
    free(u);
}

void socket_upstream_submit(socket_upstream *u, socket_job *j)
{
    j->next = NULL;
    pthread_mutex_lock(&u->mu);
    if (u->in_tail)
        u->in_tail->next = j;
    else
        u->in_head = j;
    u->in_tail = j;
    pthread_cond_signal(&u->cv);
    pthread_mutex_unlock(&u->mu);
}

socket_job *socket_upstream_take_done(socket_upstream *u)
{
    socket_job *j;

    pthread_mutex_lock(&u->mu);
    j = u->done_head;
    u->done_head = u->done_tail = NULL;
    pthread_mutex_unlock(&u->mu);
    return j;
}

void socket_upstream_stats(socket_upstream *u, long *calls, long *failures, int *open)
{
    pthread_mutex_lock(&u->mu);
    *calls = u->calls;
    *failures = u->failures;
    *open = u->breaker.failures >= u->breaker.threshold;
    pthread_mutex_unlock(&u->mu);
}
