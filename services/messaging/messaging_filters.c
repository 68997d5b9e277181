/* messaging_filters.c - the tenant's text filters as plain functions: the blocklist (words and
 * patterns, reject or mask), the link policy and the pre-send hook's signature. */
#include <ctype.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/hmac.h>

#include "common/utf8.h"
#include "messaging.h"

/* A match [start, end) in bytes. */
struct span {
    size_t start, end;
};

static int is_word_byte(unsigned char c)
{
    return isalnum(c) || c >= 0x80 || c == '_';
}

/* Finds `word` in `text` from `from` on, case-insensitively (ASCII), as a whole word. */
static int find_word(const char *text, size_t from, const char *word, struct span *m)
{
    size_t n = strlen(word), len = strlen(text);
    if (n == 0)
        return 0;
    for (size_t i = from; i + n <= len; i++) {
        if (strncasecmp(text + i, word, n) != 0)
            continue;
        if ((i > 0 && is_word_byte((unsigned char)text[i - 1])) ||
            (i + n < len && is_word_byte((unsigned char)text[i + n])))
            continue;
        m->start = i;
        m->end = i + n;
        return 1;
    }
    return 0;
}

int messaging_pattern_valid(const char *pattern)
{
    regex_t re;
    if (regcomp(&re, pattern, REG_EXTENDED | REG_ICASE) != 0)
        return 0;
    regfree(&re);
    return 1;
}

/* Replaces each character of text[m) with '*' in `out` (same byte positions: a masked
 * multi-byte character becomes one '*' followed by the removal of its other bytes). */
static size_t mask_into(const char *text, struct span m, char *out, size_t o)
{
    for (size_t i = m.start; i < m.end; i++)
        if (((unsigned char)text[i] & 0xc0) != 0x80)
            out[o++] = '*';
    return o;
}

int messaging_blocklist_apply(const char *text, const messaging_block_rule *rules, size_t n,
                              char **out, size_t *which)
{
    char *cur = strdup(text);
    if (cur == NULL)
        return -1;
    for (size_t r = 0; r < n; r++) {
        regex_t re;
        int compiled = 0;
        size_t from = 0;
        if (rules[r].is_pattern) {
            if (regcomp(&re, rules[r].text, REG_EXTENDED | REG_ICASE) != 0)
                continue; /* validated when saved; a bad one matches nothing */
            compiled = 1;
        }
        for (;;) {
            struct span m;
            int found;
            if (compiled) {
                regmatch_t rm;
                found = from <= strlen(cur) &&
                        regexec(&re, cur + from, 1, &rm, from ? REG_NOTBOL : 0) == 0 &&
                        rm.rm_eo > rm.rm_so;
                if (found) {
                    m.start = from + (size_t)rm.rm_so;
                    m.end = from + (size_t)rm.rm_eo;
                }
            } else {
                found = find_word(cur, from, rules[r].text, &m);
            }
            if (!found)
                break;
            if (!rules[r].mask) {
                if (compiled)
                    regfree(&re);
                free(cur);
                *which = r;
                return 1;
            }
            {
                size_t len = strlen(cur), o;
                char *next = malloc(len + 1);
                if (next == NULL) {
                    if (compiled)
                        regfree(&re);
                    free(cur);
                    return -1;
                }
                memcpy(next, cur, m.start);
                o = mask_into(cur, m, next, m.start);
                memcpy(next + o, cur + m.end, len - m.end + 1);
                from = o;
                free(cur);
                cur = next;
            }
        }
        if (compiled)
            regfree(&re);
    }
    *out = cur;
    return 0;
}

/* Whether `host` is `domain` or one of its subdomains (case-insensitive). */
static int host_in(const char *host, const char *domain)
{
    size_t h = strlen(host), d = strlen(domain);
    if (h == d)
        return strcasecmp(host, domain) == 0;
    return h > d && host[h - d - 1] == '.' && strcasecmp(host + h - d, domain) == 0;
}

int messaging_link_check(const char *text, messaging_link_policy policy,
                         const char *const *allowed, size_t n, char *host, size_t hn)
{
    static const char *const starts[] = {"http://", "https://", "www.", NULL};
    if (policy == MSG_LINKS_ALLOW)
        return 0;
    for (const char *p = text; *p; p++) {
        for (int s = 0; starts[s]; s++) {
            size_t sl = strlen(starts[s]), len = 0;
            const char *h;
            int ok = 0;
            if (strncasecmp(p, starts[s], sl) != 0 || (p > text && is_word_byte((unsigned char)p[-1])))
                continue;
            h = s == 2 ? p : p + sl;
            while (h[len] && (isalnum((unsigned char)h[len]) || h[len] == '.' || h[len] == '-'))
                len++;
            while (len > 0 && h[len - 1] == '.')
                len--;
            if (len == 0)
                continue;
            snprintf(host, hn, "%.*s", (int)len, h);
            if (policy == MSG_LINKS_ALLOWLIST)
                for (size_t i = 0; i < n && !ok; i++)
                    ok = host_in(host, allowed[i]);
            if (!ok)
                return 1;
        }
    }
    return 0;
}

int messaging_hook_signature(const char *secret, const char *timestamp, const char *body,
                             size_t body_len, char out[65])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    size_t tl = strlen(timestamp);
    unsigned char *msg = malloc(tl + 1 + body_len);

    if (msg == NULL)
        return -1;
    /* Signed: "<timestamp>.<body>", so a captured body cannot be replayed under a new time. */
    memcpy(msg, timestamp, tl);
    msg[tl] = '.';
    memcpy(msg + tl + 1, body, body_len);
    if (HMAC(EVP_sha256(), secret, (int)strlen(secret), msg, tl + 1 + body_len, mac, &maclen) == NULL ||
        maclen != 32) {
        free(msg);
        return -1;
    }
    free(msg);
    for (unsigned i = 0; i < maclen; i++) {
        out[2 * i] = hex[mac[i] >> 4];
        out[2 * i + 1] = hex[mac[i] & 15];
    }
    out[64] = '\0';
    return 0;
}
