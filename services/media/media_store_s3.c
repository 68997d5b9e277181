/* media_store_s3.c - the S3 blob store: any S3-compatible server over HTTP(S), each request
 * signed with AWS Signature Version 4 by libcurl itself (CURLOPT_AWS_SIGV4), path-style
 * URLs ({endpoint}/{bucket}/{key}). Ranged reads use Range (RFC 9110); deletes of missing
 * keys succeed, as S3 answers them. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/evp.h>

#include "common/log.h"
#include "media.h"

#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

typedef struct s3_store {
    media_store base;
    char *endpoint, *bucket, *sigv4, *userpwd;
} s3_store;

struct sink {
    char *buf;
    size_t cap, len;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    struct sink *s = ud;
    size_t n = size * nmemb, take = n;
    if (s->buf == NULL)
        return n; /* error bodies are dropped */
    if (take > s->cap - s->len)
        return 0; /* more than asked for: the server ignored Range; abort */
    memcpy(s->buf + s->len, data, take);
    s->len += take;
    return n;
}

struct source {
    const char *data;
    size_t len, off;
};

static size_t on_read(char *buf, size_t size, size_t nmemb, void *ud)
{
    struct source *s = ud;
    size_t n = size * nmemb;
    if (n > s->len - s->off)
        n = s->len - s->off;
    memcpy(buf, s->data + s->off, n);
    s->off += n;
    return n;
}

/* Runs one signed request; `*status` gets the HTTP status. */
static cm_err s3_request(s3_store *s, const char *method, const char *key,
                         struct curl_slist *headers, struct source *src, struct sink *dst,
                         long *status)
{
    CURL *c = curl_easy_init();
    char url[1024];
    CURLcode cc;

    if (c == NULL)
        return CM_ENOMEM;
    if (snprintf(url, sizeof(url), "%s/%s/%s", s->endpoint, s->bucket, key) >=
        (int)sizeof(url)) {
        curl_easy_cleanup(c);
        return CM_EINVAL;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_AWS_SIGV4, s->sigv4);
    curl_easy_setopt(c, CURLOPT_USERPWD, s->userpwd);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 120000L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, dst);
    if (strcmp(method, "PUT") == 0) {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, src);
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)src->len);
    } else if (strcmp(method, "DELETE") == 0) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "DELETE");
    }
    cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_easy_cleanup(c);
    if (cc != CURLE_OK) {
        cm_error("s3: %s %s: %s", method, key, curl_easy_strerror(cc));
        return cc == CURLE_OPERATION_TIMEDOUT ? CM_ETIMEOUT : CM_EIO;
    }
    return CM_OK;
}

static void sha256_hex(const void *data, size_t len, char out[65])
{
    static const char h[] = "0123456789abcdef";
    unsigned char d[32];
    unsigned int n = 0;
    EVP_Digest(data, len, d, &n, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++) {
        out[2 * i] = h[d[i] >> 4];
        out[2 * i + 1] = h[d[i] & 15];
    }
    out[64] = '\0';
}

static cm_err s3_put(media_store *st, const char *key, const void *data, size_t len)
{
    s3_store *s = (s3_store *)st;
    struct source src = {data, len, 0};
    struct sink dst = {0};
    struct curl_slist *h = NULL;
    char line[128], hash[65];
    long status = 0;
    cm_err rc;

    /* S3 wants the payload hash in x-amz-content-sha256; libcurl signs it with the rest. */
    sha256_hex(data, len, hash);
    snprintf(line, sizeof(line), "x-amz-content-sha256: %s", hash);
    h = curl_slist_append(h, line);
    h = curl_slist_append(h, "Content-Type: application/octet-stream");
    h = curl_slist_append(h, "Expect:");
    rc = s3_request(s, "PUT", key, h, &src, &dst, &status);
    curl_slist_free_all(h);
    if (rc == CM_OK && (status < 200 || status > 299)) {
        cm_error("s3: PUT %s answered %ld", key, status);
        rc = CM_EIO;
    }
    return rc;
}

static cm_err s3_read(media_store *st, const char *key, uint64_t offset, void *buf, size_t n,
                      size_t *got)
{
    s3_store *s = (s3_store *)st;
    struct sink dst = {buf, n, 0};
    struct curl_slist *h = NULL;
    char line[96];
    long status = 0;
    cm_err rc;

    *got = 0;
    if (n == 0)
        return CM_OK;
    snprintf(line, sizeof(line), "Range: bytes=%llu-%llu", (unsigned long long)offset,
             (unsigned long long)(offset + n - 1));
    h = curl_slist_append(h, line);
    h = curl_slist_append(h, "x-amz-content-sha256: " EMPTY_SHA256);
    rc = s3_request(s, "GET", key, h, NULL, &dst, &status);
    curl_slist_free_all(h);
    if (rc != CM_OK)
        return rc;
    if (status == 404)
        return CM_ENOTFOUND;
    if (status == 416)
        return CM_OK; /* at or past the end */
    if (status != 206 && !(status == 200 && offset == 0)) {
        cm_error("s3: GET %s answered %ld", key, status);
        return CM_EIO;
    }
    *got = dst.len;
    return CM_OK;
}

static cm_err s3_remove(media_store *st, const char *key)
{
    s3_store *s = (s3_store *)st;
    struct sink dst = {0};
    struct curl_slist *h = curl_slist_append(NULL, "x-amz-content-sha256: " EMPTY_SHA256);
    long status = 0;
    cm_err rc = s3_request(s, "DELETE", key, h, NULL, &dst, &status);
    curl_slist_free_all(h);
    if (rc == CM_OK && status != 204 && status != 200 && status != 404) {
        cm_error("s3: DELETE %s answered %ld", key, status);
        rc = CM_EIO;
    }
    return rc;
}

static void s3_destroy(media_store *st)
{
    s3_store *s = (s3_store *)st;
    if (s == NULL)
        return;
    free(s->endpoint);
    free(s->bucket);
    free(s->sigv4);
    free(s->userpwd);
    free(s);
}

cm_err media_store_s3_create(const char *endpoint, const char *bucket, const char *region,
                             const char *access_key, const char *secret_key, media_store **out)
{
    s3_store *s;
    size_t el;

    if (endpoint == NULL || strncmp(endpoint, "http", 4) != 0 || bucket == NULL || !*bucket ||
        region == NULL || !*region || access_key == NULL || !*access_key ||
        secret_key == NULL || !*secret_key) {
        cm_error("s3: S3_ENDPOINT (http[s]://...), S3_BUCKET, S3_REGION, S3_ACCESS_KEY and S3_SECRET_KEY are required");
        return CM_EINVAL;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return CM_ENOMEM;
    el = strlen(endpoint);
    while (el > 0 && endpoint[el - 1] == '/')
        el--;
    s->endpoint = strndup(endpoint, el);
    s->bucket = strdup(bucket);
    s->sigv4 = malloc(strlen(region) + 16);
    s->userpwd = malloc(strlen(access_key) + strlen(secret_key) + 2);
    if (!s->endpoint || !s->bucket || !s->sigv4 || !s->userpwd) {
        s3_destroy(&s->base);
        return CM_ENOMEM;
    }
    snprintf(s->sigv4, strlen(region) + 16, "aws:amz:%s:s3", region);
    snprintf(s->userpwd, strlen(access_key) + strlen(secret_key) + 2, "%s:%s", access_key,
             secret_key);
    s->base = (media_store){"s3", s3_put, s3_read, s3_remove, s3_destroy};
    *out = &s->base;
    return CM_OK;
}
