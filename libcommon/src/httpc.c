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
    const char *headers[2] = {NULL, NULL};
    cm_httpc_request r = {"GET", url, headers, NULL, 0, timeout_ms, max, 0};

    if (bearer) {
        if (snprintf(auth, sizeof(auth), "Authorization: Bearer %s", bearer) >= (int)sizeof(auth))
            return CM_ENOMEM;
        headers[0] = auth;
    }
    return cm_httpc_request_do(&r, body, len, status);
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
