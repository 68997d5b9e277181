/* httpc.c - one bounded HTTP request with libcurl. */
#include "common/httpc.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "common/log.h"

struct body {
    char *buf;
    size_t len, max;
    int too_big, oom;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    struct body *b = ud;
    size_t n = size * nmemb;
    char *p;

    if (b->len + n > b->max) {
        b->too_big = 1;
        return 0; /* aborts the transfer */
    }
    p = realloc(b->buf, b->len + n + 1);
    if (p == NULL) {
        b->oom = 1;
        return 0;
    }
    b->buf = p;
    memcpy(b->buf + b->len, data, n);
    b->len += n;
    b->buf[b->len] = '\0';
    return n;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

cm_err cm_httpc_get(const char *url, const char *bearer, long timeout_ms, size_t max,
                    char **body, size_t *len, long *status)
{
    char auth[4096];

    if (bearer &&
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", bearer) >= (int)sizeof(auth))
        return CM_ENOMEM;
    return cm_httpc_get_with(url, bearer ? auth : NULL, timeout_ms, max, body, len, status);
}

cm_err cm_httpc_get_with(const char *url, const char *header, long timeout_ms, size_t max,
                         char **body, size_t *len, long *status)
{
    const char *headers[] = {header, NULL};
    cm_httpc_request req = {.method = "GET", .url = url, .headers = headers,
                            .timeout_ms = timeout_ms, .max = max};
    return cm_httpc_request_do(&req, body, len, status);
}

cm_err cm_httpc_request_do(const cm_httpc_request *req, char **body, size_t *len, long *status)
{
    struct body b = {.max = req->max};
    struct curl_slist *headers = NULL, *h;
    CURL *curl;
    CURLcode cc;
    cm_err rc = CM_ENOMEM;

    if (strncasecmp(req->url, "http://", 7) != 0 && strncasecmp(req->url, "https://", 8) != 0)
        return CM_EIO;
    pthread_once(&curl_once, curl_init_once);
    curl = curl_easy_init();
    if (curl == NULL)
        return CM_ENOMEM;
    /* An empty Expect: a 100-continue round trip per POST only slows provider calls down. */
    if ((headers = curl_slist_append(NULL, "Expect:")) == NULL)
        goto out;
    for (size_t i = 0; req->headers && req->headers[i]; i++) {
        if ((h = curl_slist_append(headers, req->headers[i])) == NULL)
            goto out;
        headers = h;
    }
    curl_easy_setopt(curl, CURLOPT_URL, req->url);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, req->timeout_ms);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, req->timeout_ms);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, req->method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    if (req->body) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, req->body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    }
    if (req->http2)
        curl_easy_setopt(curl, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2_0);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b);
    cc = curl_easy_perform(curl);
    if (b.too_big) {
        rc = CM_ETOOBIG;
    } else if (b.oom) {
        rc = CM_ENOMEM;
    } else if (cc == CURLE_OPERATION_TIMEDOUT) {
        rc = CM_ETIMEOUT;
    } else if (cc != CURLE_OK) {
        cm_warn("%s %s: %s", req->method, req->url, curl_easy_strerror(cc));
        rc = CM_EIO;
    } else {
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, status);
        if (b.buf == NULL && (b.buf = calloc(1, 1)) == NULL)
            goto out;
        *body = b.buf;
        *len = b.len;
        b.buf = NULL;
        rc = CM_OK;
    }
out:
    free(b.buf);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    return rc;
}

/* --- a pool of kept-alive connections for many requests at once ------------------------- */

struct cm_httpc_pool {
    CURLM *multi; /* owns the connection cache its easy handles share */
    size_t max;
};

cm_err cm_httpc_pool_create(size_t max_parallel, cm_httpc_pool **out)
{
    cm_httpc_pool *p;

    if (max_parallel < 1)
        return CM_EINVAL;
    pthread_once(&curl_once, curl_init_once);
    if ((p = calloc(1, sizeof(*p))) == NULL || (p->multi = curl_multi_init()) == NULL) {
        free(p);
        return CM_ENOMEM;
    }
    p->max = max_parallel;
    curl_multi_setopt(p->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    curl_multi_setopt(p->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)max_parallel);
    curl_multi_setopt(p->multi, CURLMOPT_MAXCONNECTS, (long)max_parallel);
    *out = p;
    return CM_OK;
}

void cm_httpc_pool_destroy(cm_httpc_pool *p)
{
    if (p == NULL)
        return;
    curl_multi_cleanup(p->multi);
    free(p);
}

/* One transfer of cm_httpc_pool_perform. */
struct xfer {
    CURL *curl;
    struct curl_slist *headers;
    struct body b;
    size_t index;
};

/* Prepares `x->curl` for `req` (as cm_httpc_request_do does). 0, or -1 when out of memory. */
static int xfer_setup(struct xfer *x, const cm_httpc_request *req)
{
    struct curl_slist *h;

    x->b = (struct body){.max = req->max};
    if ((x->headers = curl_slist_append(NULL, "Expect:")) == NULL)
        return -1;
    for (size_t i = 0; req->headers && req->headers[i]; i++) {
        if ((h = curl_slist_append(x->headers, req->headers[i])) == NULL)
            return -1;
        x->headers = h;
    }
    curl_easy_setopt(x->curl, CURLOPT_URL, req->url);
    curl_easy_setopt(x->curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(x->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(x->curl, CURLOPT_TIMEOUT_MS, req->timeout_ms);
    curl_easy_setopt(x->curl, CURLOPT_CONNECTTIMEOUT_MS, req->timeout_ms);
    curl_easy_setopt(x->curl, CURLOPT_CUSTOMREQUEST, req->method);
    curl_easy_setopt(x->curl, CURLOPT_HTTPHEADER, x->headers);
    if (req->body) {
        curl_easy_setopt(x->curl, CURLOPT_POSTFIELDS, req->body);
        curl_easy_setopt(x->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    }
    if (req->http2)
        curl_easy_setopt(x->curl, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2_0);
    if (req->addr_ok) {
        curl_easy_setopt(x->curl, CURLOPT_OPENSOCKETFUNCTION, req->addr_ok);
        curl_easy_setopt(x->curl, CURLOPT_OPENSOCKETDATA, req->addr_ok_ud);
    }
    curl_easy_setopt(x->curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(x->curl, CURLOPT_WRITEDATA, &x->b);
    curl_easy_setopt(x->curl, CURLOPT_PRIVATE, x);
    return 0;
}

static void xfer_done(struct xfer *x, CURLcode cc, const cm_httpc_request *req,
                      cm_httpc_result *r)
{
    r->body = NULL;
    r->len = 0;
    r->status = 0;
    if (x->b.too_big) {
        r->rc = CM_ETOOBIG;
    } else if (x->b.oom) {
        r->rc = CM_ENOMEM;
    } else if (cc == CURLE_OPERATION_TIMEDOUT) {
        r->rc = CM_ETIMEOUT;
    } else if (cc == CURLE_COULDNT_CONNECT && req->addr_ok) {
        r->rc = CM_EIO; /* possibly refused by addr_ok: said once, by the caller */
    } else if (cc != CURLE_OK) {
        cm_warn("%s %s: %s", req->method, req->url, curl_easy_strerror(cc));
        r->rc = CM_EIO;
    } else if (x->b.buf == NULL && (x->b.buf = calloc(1, 1)) == NULL) {
        r->rc = CM_ENOMEM;
    } else {
        curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &r->status);
        r->body = x->b.buf;
        r->len = x->b.len;
        x->b.buf = NULL;
        r->rc = CM_OK;
    }
    free(x->b.buf);
    x->b = (struct body){0};
    curl_slist_free_all(x->headers);
    x->headers = NULL;
}

cm_err cm_httpc_pool_perform(cm_httpc_pool *p, const cm_httpc_request *reqs, size_t n,
                             cm_httpc_result *res)
{
    size_t slots = n < p->max ? n : p->max, next = 0, done = 0;
    struct xfer *x = calloc(slots ? slots : 1, sizeof(*x));
    cm_err rc = CM_ENOMEM;

    for (size_t i = 0; i < n; i++)
        res[i] = (cm_httpc_result){.rc = CM_EIO};
    if (x == NULL)
        return CM_ENOMEM;
    for (size_t i = 0; i < slots; i++)
        if ((x[i].curl = curl_easy_init()) == NULL)
            goto out;
    /* Each slot takes the next request when its transfer ends; the multi handle keeps the
     * connections alive in between (and across calls). */
    for (size_t i = 0; i < slots; i++, next++) {
        x[i].index = next;
        if (strncasecmp(reqs[next].url, "http://", 7) != 0 &&
            strncasecmp(reqs[next].url, "https://", 8) != 0) {
            res[next] = (cm_httpc_result){.rc = CM_EIO};
            x[i].index = (size_t)-1;
            done++;
            continue;
        }
        if (xfer_setup(&x[i], &reqs[next]) != 0)
            goto out;
        curl_multi_add_handle(p->multi, x[i].curl);
    }
    while (done < n) {
        int running = 0, left = 0;
        CURLMsg *msg;
        curl_multi_perform(p->multi, &running);
        while ((msg = curl_multi_info_read(p->multi, &left)) != NULL) {
            struct xfer *t = NULL;
            if (msg->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
            curl_multi_remove_handle(p->multi, t->curl);
            xfer_done(t, msg->data.result, &reqs[t->index], &res[t->index]);
            done++;
            t->index = (size_t)-1;
            while (next < n) {
                size_t k = next++;
                if (strncasecmp(reqs[k].url, "http://", 7) != 0 &&
                    strncasecmp(reqs[k].url, "https://", 8) != 0) {
                    res[k] = (cm_httpc_result){.rc = CM_EIO};
                    done++;
                    continue;
                }
                curl_easy_reset(t->curl);
                t->index = k;
                if (xfer_setup(t, &reqs[k]) != 0) {
                    xfer_done(t, CURLE_OUT_OF_MEMORY, &reqs[k], &res[k]);
                    res[k].rc = CM_ENOMEM;
                    done++;
                    t->index = (size_t)-1;
                    continue;
                }
                curl_multi_add_handle(p->multi, t->curl);
                running++; /* `running` was counted before this transfer was added */
                break;
            }
        }
        if (done < n && running > 0)
            curl_multi_poll(p->multi, NULL, 0, 100, NULL);
        else if (done < n && running == 0 && next >= n) {
            /* Every slot idle yet results missing: none can come (should not happen). */
            break;
        }
    }
    rc = done == n ? CM_OK : CM_EIO;
out:
    for (size_t i = 0; i < slots; i++) {
        if (x[i].curl == NULL)
            continue;
        if (x[i].index != (size_t)-1 && x[i].headers) {
            curl_multi_remove_handle(p->multi, x[i].curl);
            free(x[i].b.buf);
            curl_slist_free_all(x[i].headers);
            if (rc == CM_OK)
                rc = CM_EIO;
        }
        curl_easy_cleanup(x[i].curl);
    }
    free(x);
    return rc;
}

