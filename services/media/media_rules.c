/* media_rules.c - the media service's rules as plain functions: byte ranges (RFC 9110),
 * entity tags, type and size rules, Content-Disposition (RFC 6266/8187), signed URLs, tus
 * header parsing (tus 1.0), thumbnail geometry. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/jwt.h"
#include "common/utf8.h"
#include "media.h"

const int media_thumb_boxes[3] = {128, 512, 1024};

#define MAX_SAFE_INT 9007199254740992ULL /* 2^53: every size a JSON client can hold */

int media_parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (s == NULL || *s == '\0')
        return -1;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (uint64_t)(*p - '0');
        if (v > MAX_SAFE_INT)
            return -1;
    }
    *out = v;
    return 0;
}

/* Reads digits at *p into *v; returns the number of digits (0 when none, -1 on overflow). */
static int digits(const char **p, uint64_t *v)
{
    int n = 0;
    *v = 0;
    while (**p >= '0' && **p <= '9') {
        *v = *v * 10 + (uint64_t)(**p - '0');
        if (*v > MAX_SAFE_INT)
            return -1;
        (*p)++;
        n++;
    }
    return n;
}

media_range media_range_parse(const char *header, uint64_t size, uint64_t *first,
                              uint64_t *last)
{
    const char *p = header;
    uint64_t a = 0, b = 0;
    int na, nb;

    if (p == NULL)
        return MEDIA_RANGE_NONE;
    /* The range unit is case-insensitive (RFC 9110 section 14.1). */
    if (strncasecmp(p, "bytes", 5) != 0)
        return MEDIA_RANGE_NONE;
    p += 5;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p++ != '=')
        return MEDIA_RANGE_NONE;
    while (*p == ' ' || *p == '\t')
        p++;
    if (strchr(p, ',') != NULL)
        return MEDIA_RANGE_NONE; /* several ranges: served whole, which the RFC allows */
    if (*p == '-') {
        /* suffix-range: the last b bytes */
        p++;
        nb = digits(&p, &b);
        while (*p == ' ' || *p == '\t')
            p++;
        if (nb <= 0 || *p != '\0')
            return MEDIA_RANGE_NONE;
        if (b == 0 || size == 0)
            return MEDIA_RANGE_UNSATISFIABLE;
        *first = b >= size ? 0 : size - b;
        *last = size - 1;
        return MEDIA_RANGE_OK;
    }
    na = digits(&p, &a);
    if (na <= 0 || *p++ != '-')
        return MEDIA_RANGE_NONE;
    nb = digits(&p, &b);
    while (*p == ' ' || *p == '\t')
        p++;
    if (nb < 0 || *p != '\0')
        return MEDIA_RANGE_NONE;
    if (nb > 0 && b < a)
        return MEDIA_RANGE_NONE; /* invalid: last < first must be ignored (section 14.1.1) */
    if (a >= size)
        return MEDIA_RANGE_UNSATISFIABLE;
    *first = a;
    *last = (nb == 0 || b >= size) ? size - 1 : b;
    return MEDIA_RANGE_OK;
}

int media_etag_match(const char *header, const char *etag)
{
    const char *p = header;
    size_t el;

    if (header == NULL || etag == NULL)
        return 0;
    el = strlen(etag);
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '\0')
            break;
        if (*p == '*')
            return 1;
        if (p[0] == 'W' && p[1] == '/')
            p += 2; /* weak comparison: the W/ prefix does not matter */
        const char *start = p;
        if (*p != '"')
            return 0; /* malformed list: no match */
        p++;
        while (*p && *p != '"')
            p++;
        if (*p != '"')
            return 0;
        p++;
        if ((size_t)(p - start) == el && memcmp(start, etag, el) == 0)
            return 1;
    }
    return 0;
}

int media_type_allowed(const media_settings *s, const char *type)
{
    for (int i = 0; i < s->nallowed; i++)
        if (strcmp(s->allowed[i], type) == 0)
            return 1;
    return 0;
}

int media_type_is_image(const char *type)
{
    return strcmp(type, "image/jpeg") == 0 || strcmp(type, "image/png") == 0 ||
           strcmp(type, "image/gif") == 0 || strcmp(type, "image/webp") == 0;
}

int64_t media_size_limit(const media_settings *s, const char *type)
{
    return media_type_is_image(type) ? s->image_max_bytes : s->file_max_bytes;
}

int media_variant_valid(const char *variant)
{
    return variant && (strcmp(variant, "original") == 0 || strcmp(variant, "thumb_128") == 0 ||
                       strcmp(variant, "thumb_512") == 0 || strcmp(variant, "thumb_1024") == 0);
}

int media_content_disposition(const char *type, const char *filename, char *out, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t len;
    int w;

    if (media_type_is_image(type)) {
        w = snprintf(out, n, "inline");
        return w < 0 || (size_t)w >= n ? -1 : 0;
    }
    if (filename == NULL || filename[0] == '\0') {
        w = snprintf(out, n, "attachment");
        return w < 0 || (size_t)w >= n ? -1 : 0;
    }
    /* filename=: an ASCII fallback; anything outside printable ASCII, quotes and
     * backslashes become '_' so the quoted-string needs no escaping. */
    w = snprintf(out, n, "attachment; filename=\"");
    if (w < 0 || (size_t)w >= n)
        return -1;
    len = (size_t)w;
    for (const unsigned char *p = (const unsigned char *)filename; *p; p++) {
        if ((*p & 0xc0) == 0x80)
            continue; /* one '_' per UTF-8 character, not per byte */
        if (len + 1 >= n)
            return -1;
        out[len++] = (*p < 0x20 || *p >= 0x7f || *p == '"' || *p == '\\') ? '_' : (char)*p;
    }
    /* filename*: the exact name, UTF-8 percent-encoded (RFC 8187 attr-char kept). */
    w = snprintf(out + len, n - len, "\"; filename*=UTF-8''");
    if (w < 0 || (size_t)w >= n - len)
        return -1;
    len += (size_t)w;
    for (const unsigned char *p = (const unsigned char *)filename; *p; p++) {
        int plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                    (*p >= '0' && *p <= '9') || strchr("!#$&+-.^_`|~", *p) != NULL;
        if (len + (plain ? 1 : 3) >= n)
            return -1;
        if (plain) {
            out[len++] = (char)*p;
        } else {
            out[len++] = '%';
            out[len++] = hex[*p >> 4];
            out[len++] = hex[*p & 15];
        }
    }
    out[len] = '\0';
    return 0;
}

static void b64url(const unsigned char *in, size_t len, char *out)
{
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = tbl[v >> 18 & 63];
        out[o++] = tbl[v >> 12 & 63];
        out[o++] = tbl[v >> 6 & 63];
        out[o++] = tbl[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = tbl[v >> 18 & 63];
        out[o++] = tbl[v >> 12 & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = tbl[v >> 18 & 63];
        out[o++] = tbl[v >> 12 & 63];
        out[o++] = tbl[v >> 6 & 63];
    }
    out[o] = '\0';
}

/* HMAC-SHA256 of the signed string into mac[32]. Returns 0, -1 on failure. */
static int url_mac(const media_url_key *key, const char *tenant, const char *id,
                   const char *variant, int64_t expires, unsigned char mac[32])
{
    char msg[640];
    unsigned int maclen = 0;
    int w = snprintf(msg, sizeof(msg), "GET\n%s\n%s\n%s\n%lld\n%s", tenant, id, variant,
                     (long long)expires, key->id);
    if (w < 0 || (size_t)w >= sizeof(msg))
        return -1;
    if (HMAC(EVP_sha256(), key->secret, (int)key->len, (const unsigned char *)msg, (size_t)w,
             mac, &maclen) == NULL ||
        maclen != 32)
        return -1;
    return 0;
}

int media_url_sign(const media_url_key *key, const char *tenant, const char *id,
                   const char *variant, int64_t expires, char *out, size_t n)
{
    unsigned char mac[32];
    if (n < 44 || url_mac(key, tenant, id, variant, expires, mac) != 0)
        return -1;
    b64url(mac, sizeof(mac), out);
    return 0;
}

const char *media_url_check(const media_url_key *keys, int nkeys, const char *tenant,
                            const char *id, const char *variant, const char *expires,
                            const char *kid, const char *sig, int64_t now)
{
    const media_url_key *key = NULL;
    unsigned char mac[32], given[40];
    uint64_t exp;
    long glen;

    if (expires == NULL || kid == NULL || sig == NULL)
        return "the URL lacks expires, kid or sig";
    if (media_parse_u64(expires, &exp) != 0)
        return "expires is not a number";
    for (int i = 0; i < nkeys; i++)
        if (strcmp(keys[i].id, kid) == 0)
            key = &keys[i];
    if (key == NULL)
        return "unknown key id";
    glen = cm_base64url_decode(sig, strlen(sig), given, sizeof(given));
    if (glen != 32 || url_mac(key, tenant, id, variant, (int64_t)exp, mac) != 0 ||
        CRYPTO_memcmp(mac, given, 32) != 0)
        return "bad signature";
    /* Checked after the MAC, so an attacker learns nothing about expiry rules from it. */
    if ((int64_t)exp < now)
        return "the URL has expired";
    if ((int64_t)exp > now + MEDIA_URL_TTL_MAX + 60)
        return "the expiry is further away than 15 minutes";
    return NULL;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int media_url_keys_parse(const char *spec, media_url_key *keys, int max, char *why, size_t n)
{
    int count = 0;
    const char *p = spec;

    if (spec == NULL || *spec == '\0') {
        snprintf(why, n, "no keys");
        return -1;
    }
    while (*p) {
        const char *colon = strchr(p, ':'), *end = strchr(p, ',');
        size_t idlen, hexlen;
        if (end == NULL)
            end = p + strlen(p);
        if (count == max) {
            snprintf(why, n, "more than %d keys", max);
            return -1;
        }
        if (colon == NULL || colon > end) {
            snprintf(why, n, "key %d is not kid:hexsecret", count + 1);
            return -1;
        }
        idlen = (size_t)(colon - p);
        hexlen = (size_t)(end - colon - 1);
        if (idlen == 0 || idlen >= sizeof(keys[count].id)) {
            snprintf(why, n, "key %d: the key id must be 1..31 characters", count + 1);
            return -1;
        }
        if (hexlen % 2 || hexlen / 2 < 16 || hexlen / 2 > sizeof(keys[count].secret)) {
            snprintf(why, n, "key %d: the secret must be 16..64 bytes in hex", count + 1);
            return -1;
        }
        memcpy(keys[count].id, p, idlen);
        keys[count].id[idlen] = '\0';
        for (size_t i = 0; i < hexlen / 2; i++) {
            int hi = hexval(colon[1 + 2 * i]), lo = hexval(colon[2 + 2 * i]);
            if (hi < 0 || lo < 0) {
                snprintf(why, n, "key %d: the secret is not hex", count + 1);
                return -1;
            }
            keys[count].secret[i] = (unsigned char)(hi << 4 | lo);
        }
        keys[count].len = hexlen / 2;
        for (int i = 0; i < count; i++)
            if (strcmp(keys[i].id, keys[count].id) == 0) {
                snprintf(why, n, "key id %s appears twice", keys[count].id);
                return -1;
            }
        count++;
        p = *end ? end + 1 : end;
    }
    return count;
}

/* Standard base64 (RFC 4648 section 4, with padding) into out (cap); returns the length or
 * -1. tus uses it for metadata values and checksums. */
static long b64std_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0, i = 0, pad = 0;

    if (len % 4 != 0)
        return -1;
    while (len > 0 && in[len - 1] == '=' && pad < 2) {
        len--;
        pad++;
    }
    for (; i < len; i++) {
        const char *q = in[i] ? strchr(tbl, in[i]) : NULL;
        if (q == NULL)
            return -1;
        acc = acc << 6 | (uint32_t)(q - tbl);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o == cap)
                return -1;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    if (acc & ((1u << bits) - 1))
        return -1; /* non-canonical trailing bits */
    return (long)o;
}

int media_tus_metadata(const char *header, const char *key, char *out, size_t n)
{
    const char *p = header;
    size_t kl = strlen(key);

    if (header == NULL)
        return 0;
    while (*p) {
        const char *end = strchr(p, ','), *sp;
        size_t pl, klen;
        while (*p == ' ')
            p++;
        if (end == NULL)
            end = p + strlen(p);
        pl = (size_t)(end - p);
        sp = memchr(p, ' ', pl);
        klen = sp ? (size_t)(sp - p) : pl;
        if (klen == 0)
            return -1;
        for (size_t i = 0; i < klen; i++)
            if (p[i] <= ' ' || p[i] >= 0x7f || p[i] == ',')
                return -1;
        if (klen == kl && memcmp(p, key, kl) == 0) {
            long dl = 0;
            if (sp) {
                size_t vl = pl - klen - 1;
                while (vl > 0 && sp[vl] == ' ')
                    vl--;
                dl = b64std_decode(sp + 1, vl, (unsigned char *)out, n - 1);
                if (dl < 0)
                    return -1;
            }
            out[dl] = '\0';
            if (!cm_utf8_valid(out, (size_t)dl) || cm_utf8_has_control(out, (size_t)dl))
                return -1;
            return 1;
        }
        p = *end ? end + 1 : end;
    }
    return 0;
}

int media_tus_checksum(const char *header, unsigned char digest[20])
{
    const char *sp;
    unsigned char buf[32];
    long n;

    if (header == NULL || (sp = strchr(header, ' ')) == NULL || sp == header)
        return -1;
    if ((size_t)(sp - header) != 4 || strncasecmp(header, "sha1", 4) != 0) {
        for (const char *p = header; p < sp; p++)
            if (*p <= ' ' || *p >= 0x7f)
                return -1;
        return 0;
    }
    n = b64std_decode(sp + 1, strlen(sp + 1), buf, sizeof(buf));
    if (n != 20)
        return -1;
    memcpy(digest, buf, 20);
    return 1;
}

void media_http_date(int64_t secs, char out[32])
{
    struct tm tm;
    time_t t = (time_t)secs;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

void media_thumb_fit(int w, int h, int box, int *tw, int *th)
{
    if (w <= box && h <= box) {
        *tw = w;
        *th = h;
    } else if (w >= h) {
        *tw = box;
        *th = (int)((double)h * box / w + 0.5);
        if (*th < 1)
            *th = 1;
    } else {
        *th = box;
        *tw = (int)((double)w * box / h + 0.5);
        if (*tw < 1)
            *tw = 1;
    }
}
