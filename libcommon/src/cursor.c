/* cursor.c - the sync cursor codec: sorted (key, seq) positions in base64url. */
#include "common/cursor.h"

#include <stdlib.h>
#include <string.h>

#include "common/jwt.h"

#define ENTRY_MAX (8 + 10) /* key and the longest varint of a 63-bit seq */

uint64_t cm_cursor_key(const char *conversation_id)
{
    uint64_t h = 14695981039346656037ULL;
    for (const unsigned char *p = (const unsigned char *)conversation_id; *p; p++) {
        h ^= *p;
        h *= 1099511628211ULL;
    }
    return h;
}

static int by_key(const void *a, const void *b)
{
    const cm_cursor_pos *x = a, *y = b;
    return x->key < y->key ? -1 : x->key > y->key;
}

cm_err cm_cursor_decode(const char *text, cm_cursor_pos *out, size_t cap, size_t *n)
{
    size_t len = strlen(text), i = 1, count = 0;
    unsigned char *buf;
    long blen;
    cm_err rc = CM_EINVAL;

    if (len == 0 || len > (CM_CURSOR_MAX * ENTRY_MAX + 1) * 4 / 3 + 4)
        return len == 0 ? CM_EINVAL : CM_ETOOBIG;
    buf = malloc(len);
    if (buf == NULL)
        return CM_ENOMEM;
    blen = cm_base64url_decode(text, len, buf, len);
    if (blen < 1 || buf[0] != CM_CURSOR_VERSION)
        goto out;
    while (i < (size_t)blen) {
        uint64_t key = 0, seq = 0;
        int shift = 0, done = 0;
        if ((size_t)blen - i < 9)
            goto out;
        for (int b = 0; b < 8; b++)
            key = key << 8 | buf[i++];
        while (i < (size_t)blen && shift <= 56) {
            unsigned char c = buf[i++];
            seq |= (uint64_t)(c & 0x7f) << shift;
            shift += 7;
            if (!(c & 0x80)) {
                done = 1;
                break;
            }
        }
        if (!done || seq > (uint64_t)INT64_MAX || (count > 0 && key <= out[count - 1].key))
            goto out;
        if (count == cap) {
            rc = CM_ETOOBIG;
            goto out;
        }
        out[count].key = key;
        out[count].seq = (int64_t)seq;
        count++;
    }
    *n = count;
    rc = CM_OK;
out:
    free(buf);
    return rc;
}

cm_err cm_cursor_encode_to(const cm_cursor_pos *pos, size_t n, char *out, size_t cap,
                           size_t *len)
{
    unsigned char stack[1 + 16 * ENTRY_MAX], *buf = stack;
    size_t o = 0;
    long w;
    cm_err rc = CM_EINVAL;

    if (n > CM_CURSOR_MAX)
        return CM_ETOOBIG;
    for (size_t i = 0; i < n; i++)
        if (pos[i].seq < 0 || (i > 0 && pos[i].key <= pos[i - 1].key))
            return CM_EINVAL;
    /* The common case (a connection in a few conversations) needs no allocation. */
    if (n > 16 && (buf = malloc(1 + n * ENTRY_MAX)) == NULL)
        return CM_ENOMEM;
    buf[o++] = CM_CURSOR_VERSION;
    for (size_t i = 0; i < n; i++) {
        uint64_t seq = (uint64_t)pos[i].seq;
        for (int b = 7; b >= 0; b--)
            buf[o++] = (unsigned char)(pos[i].key >> (8 * b));
        do {
            unsigned char c = seq & 0x7f;
            seq >>= 7;
            buf[o++] = seq ? (c | 0x80) : c;
        } while (seq);
    }
    if ((w = cm_base64url_encode(buf, o, out, cap)) < 0) {
        rc = CM_ETOOBIG;
        goto out;
    }
    *len = (size_t)w;
    rc = CM_OK;
out:
    if (buf != stack)
        free(buf);
    return rc;
}

cm_err cm_cursor_encode(cm_cursor_pos *pos, size_t n, char **out)
{
    size_t cap = CM_CURSOR_TEXT_MAX(n), len = 0;
    char *text;
    cm_err rc;

    if (n > CM_CURSOR_MAX)
        return CM_ETOOBIG;
    if (n > 0)
        qsort(pos, n, sizeof(*pos), by_key);
    if ((text = malloc(cap)) == NULL)
        return CM_ENOMEM;
    if ((rc = cm_cursor_encode_to(pos, n, text, cap, &len)) != CM_OK) {
        free(text);
        return rc == CM_ETOOBIG ? CM_EINTERNAL : rc;
    }
    *out = text;
    return CM_OK;
}

cm_cursor_pos *cm_cursor_find(cm_cursor_pos *pos, size_t n, uint64_t key)
{
    cm_cursor_pos k = {key, 0};
    if (n == 0)
        return NULL;
    return bsearch(&k, pos, n, sizeof(*pos), by_key);
}
