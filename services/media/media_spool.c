/* media_spool.c - an upload body written to the blob store while it arrives, in parts of at
 * most MEDIA_PART_BYTES, so a 100 MiB upload holds one part in memory, not 100 MiB (a media
 * object is already a list of parts: media_create, media_content.c). Digests (SHA-256, and
 * SHA-1 for tus checksums) and the first MEDIA_HEAD_BYTES (for libmagic) are taken on the
 * way. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "common/log.h"
#include "media.h"

struct media_spool {
    media_ctx *ctx;
    char *buf; /* the part being filled; after media_spool_finish the last part */
    size_t len;
    uint64_t limit;
    media_spool_parts parts;
    EVP_MD_CTX *sha256, *sha1;
    int kept;
};

cm_err media_spool_create(media_ctx *ctx, uint64_t limit, int want_sha1, media_spool **out)
{
    media_spool *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return CM_ENOMEM;
    s->ctx = ctx;
    s->limit = limit;
    s->buf = malloc(MEDIA_PART_BYTES);
    s->sha256 = EVP_MD_CTX_new();
    if (want_sha1)
        s->sha1 = EVP_MD_CTX_new();
    if (s->buf == NULL || s->sha256 == NULL || (want_sha1 && s->sha1 == NULL) ||
        EVP_DigestInit_ex(s->sha256, EVP_sha256(), NULL) != 1 ||
        (want_sha1 && EVP_DigestInit_ex(s->sha1, EVP_sha1(), NULL) != 1)) {
        media_spool_destroy(s);
        return CM_ENOMEM;
    }
    *out = s;
    return CM_OK;
}

/* Stores the bytes in buf as the next part. */
static cm_err flush(media_spool *s)
{
    media_spool_parts *p = &s->parts;
    cm_err rc;

    if (s->len == 0)
        return CM_OK;
    if (p->n == MEDIA_PARTS_MAX)
        return CM_ETOOBIG;
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 8;
        void *k = realloc(p->keys, (size_t)cap * MEDIA_KEY_LEN);
        if (k == NULL)
            return CM_ENOMEM;
        p->keys = k;
        void *l = realloc(p->lens, (size_t)cap * sizeof(uint64_t));
        if (l == NULL)
            return CM_ENOMEM;
        p->lens = l;
        p->cap = cap;
    }
    if (media_new_key(p->keys[p->n]) != CM_OK)
        return CM_EINTERNAL;
    rc = s->ctx->store->put(s->ctx->store, p->keys[p->n], s->buf, s->len);
    if (rc != CM_OK)
        return rc;
    p->lens[p->n++] = s->len;
    return CM_OK;
}

cm_err media_spool_write(media_spool *s, const char *data, size_t len)
{
    media_spool_parts *p = &s->parts;
    cm_err rc;

    if (len > s->limit - p->size)
        return CM_ETOOBIG;
    if (EVP_DigestUpdate(s->sha256, data, len) != 1 ||
        (s->sha1 && EVP_DigestUpdate(s->sha1, data, len) != 1))
        return CM_EINTERNAL;
    if (p->head_len < MEDIA_HEAD_BYTES) {
        size_t take = MEDIA_HEAD_BYTES - p->head_len < len ? MEDIA_HEAD_BYTES - p->head_len : len;
        memcpy(p->head + p->head_len, data, take);
        p->head_len += take;
    }
    p->size += len;
    while (len > 0) {
        size_t take = MEDIA_PART_BYTES - s->len < len ? MEDIA_PART_BYTES - s->len : len;
        memcpy(s->buf + s->len, data, take);
        s->len += take;
        data += take;
        len -= take;
        if (s->len == MEDIA_PART_BYTES) {
            if ((rc = flush(s)) != CM_OK)
                return rc;
            s->len = 0;
        }
    }
    return CM_OK;
}

cm_err media_spool_finish(media_spool *s)
{
    media_spool_parts *p = &s->parts;
    unsigned int n = 0;
    cm_err rc = flush(s);

    if (rc != CM_OK)
        return rc;
    if (EVP_DigestFinal_ex(s->sha256, p->sha256, &n) != 1 || n != 32 ||
        (s->sha1 && (EVP_DigestFinal_ex(s->sha1, p->sha1, &n) != 1 || n != 20)))
        return CM_EINTERNAL;
    return CM_OK;
}

const media_spool_parts *media_spool_parts_of(const media_spool *s)
{
    return &s->parts;
}

cm_err media_spool_whole(media_spool *s, char **out)
{
    const media_spool_parts *p = &s->parts;
    uint64_t off = 0;
    char *w;

    *out = NULL;
    if (p->n == 1 && s->len == p->size) {
        *out = s->buf; /* the only part is still in memory */
        return CM_OK;
    }
    w = malloc(p->size ? p->size : 1);
    if (w == NULL)
        return CM_ENOMEM;
    for (int i = 0; i < p->n; i++) {
        size_t got = 0;
        cm_err rc = s->ctx->store->read(s->ctx->store, p->keys[i], 0, w + off, p->lens[i], &got);
        if (rc != CM_OK || got != p->lens[i]) {
            free(w);
            return rc != CM_OK ? rc : CM_EIO;
        }
        off += got;
    }
    *out = w;
    return CM_OK;
}

void media_spool_free_whole(media_spool *s, char *whole)
{
    if (whole != s->buf)
        free(whole);
}

void media_spool_keep(media_spool *s)
{
    s->kept = 1;
}

void media_spool_discard(media_spool *s)
{
    if (s == NULL || s->kept)
        return;
    for (int i = 0; i < s->parts.n; i++)
        if (s->ctx->store->remove(s->ctx->store, s->parts.keys[i]) != CM_OK)
            cm_warn("blob %s of an unfinished upload not removed", s->parts.keys[i]);
    s->parts.n = 0;
}

void media_spool_destroy(media_spool *s)
{
    if (s == NULL)
        return;
    media_spool_discard(s);
    EVP_MD_CTX_free(s->sha256);
    EVP_MD_CTX_free(s->sha1);
    free(s->parts.keys);
    free(s->parts.lens);
    free(s->buf);
    free(s);
}
