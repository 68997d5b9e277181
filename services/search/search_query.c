/* search_query.c - the query language of GET /v1/search/messages, parsed into FTS5 MATCH
 * expressions in which every term is a quoted FTS5 string, and the rendering of highlighted
 * snippets. Plain functions over plain data: unit-tested in search_query_test.c. */
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/auth.h"
#include "common/utf8.h"
#include "search.h"

static cm_err fail(cm_err rc, char *why, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static cm_err fail(cm_err rc, char *why, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, n, fmt, ap);
    va_end(ap);
    return rc;
}

int search_is_unspaced(uint32_t cp)
{
    return (cp >= 0x0E00 && cp <= 0x0EFF) ||   /* Thai, Lao */
           (cp >= 0x1000 && cp <= 0x109F) ||   /* Myanmar */
           (cp >= 0x1780 && cp <= 0x17FF) ||   /* Khmer */
           (cp >= 0x2E80 && cp <= 0x2FDF) ||   /* CJK radicals */
           (cp >= 0x3000 && cp <= 0x30FF) ||   /* CJK punctuation, hiragana, katakana */
           (cp >= 0x3100 && cp <= 0x31FF) ||   /* bopomofo, kana extensions */
           (cp >= 0x3400 && cp <= 0x4DBF) ||   /* CJK extension A */
           (cp >= 0x4E00 && cp <= 0x9FFF) ||   /* CJK unified ideographs */
           (cp >= 0xAC00 && cp <= 0xD7AF) ||   /* Hangul syllables */
           (cp >= 0xF900 && cp <= 0xFAFF) ||   /* CJK compatibility ideographs */
           (cp >= 0xFF00 && cp <= 0xFFEF) ||   /* half- and full-width forms */
           (cp >= 0x20000 && cp <= 0x3FFFF);   /* CJK extensions B.. */
}

/* Decodes one code point of valid UTF-8 at s; returns its byte length. */
static size_t decode(const unsigned char *s, uint32_t *cp)
{
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    if ((s[0] & 0xE0) == 0xC0) {
        *cp = ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
        return 2;
    }
    if ((s[0] & 0xF0) == 0xE0) {
        *cp = ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        return 3;
    }
    *cp = ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
          ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    return 4;
}

/* Appends `term` (len bytes) to `expr` as one FTS5 string, doubling any '"' inside, with a
 * trailing '*' when `prefix`. CM_ETOOBIG when it does not fit. */
static cm_err append_string(char *expr, const char *term, size_t len, int prefix)
{
    size_t at = strlen(expr);
    if (at && at + 1 < SEARCH_EXPR_MAX)
        expr[at++] = ' '; /* FTS5: juxtaposed phrases are ANDed */
    if (at + 1 >= SEARCH_EXPR_MAX)
        return CM_ETOOBIG;
    expr[at++] = '"';
    for (size_t i = 0; i < len; i++) {
        if (at + 4 >= SEARCH_EXPR_MAX)
            return CM_ETOOBIG;
        if (term[i] == '"')
            expr[at++] = '"';
        expr[at++] = term[i];
    }
    expr[at++] = '"';
    if (prefix)
        expr[at++] = '*';
    expr[at] = '\0';
    return CM_OK;
}

/* Adds one text term (a word, a prefix or a phrase) to the right index. */
static cm_err add_term(search_query *q, const char *t, size_t len, int prefix, char *why,
                       size_t n)
{
    size_t cps = 0, i = 0;
    int unspaced = 0, wordy = 0;
    uint32_t cp;

    while (i < len) {
        size_t k = decode((const unsigned char *)t + i, &cp);
        unspaced |= search_is_unspaced(cp);
        /* Punctuation-only terms tokenize to nothing in either index: they are skipped. */
        wordy |= cp >= 0x80 || (cp >= '0' && cp <= '9') || ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z');
        i += k;
        cps++;
    }
    if (!wordy)
        return CM_OK;
    if (++q->nterms > SEARCH_TERMS_MAX)
        return fail(CM_ETOOBIG, why, n, "q holds more than %d search terms", SEARCH_TERMS_MAX);
    if (!unspaced)
        return append_string(q->words, t, len, prefix) == CM_OK
                   ? CM_OK
                   : fail(CM_ETOOBIG, why, n, "q is too long once quoted");
    /* CJK and other unspaced scripts: substrings (a prefix is a substring there anyway).
     * Messages have unigrams and bigrams too (search_tokenizer.c): every such term goes to
     * `subs`. The conversation and user indexes are plain trigram, which needs 3 characters:
     * a shorter term is matched there with LIKE. */
    if (append_string(q->subs, t, len, 0) != CM_OK)
        return fail(CM_ETOOBIG, why, n, "q is too long once quoted");
    if (cps >= 3)
        return append_string(q->tri, t, len, 0) == CM_OK
                   ? CM_OK
                   : fail(CM_ETOOBIG, why, n, "q is too long once quoted");
    if (len >= sizeof(q->likes[0]))
        return fail(CM_ETOOBIG, why, n, "a search term is too long");
    memcpy(q->likes[q->nlikes], t, len);
    q->likes[q->nlikes++][len] = '\0';
    return CM_OK;
}

static int two(const char *s, int *v)
{
    if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9')
        return 0;
    *v = (s[0] - '0') * 10 + (s[1] - '0');
    return 1;
}

/* Days from 1970-01-01 to year y, month m (1-12), day d of the proleptic Gregorian calendar
 * (H. Hinnant's days_from_civil, http://howardhinnant.github.io/date_algorithms.html): plain
 * arithmetic instead of glibc's timegm, on the indexer's path (one created_at per message). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;
    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

cm_err search_parse_time(const char *s, int64_t *ms)
{
    static const int MDAYS[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int c, y, mo, d, h = 0, mi = 0, se = 0, milli = 0, year;
    size_t len = strlen(s);

    if (len < 10 || !two(s, &c) || !two(s + 2, &y) || s[4] != '-' || !two(s + 5, &mo) ||
        s[7] != '-' || !two(s + 8, &d))
        return CM_EINVAL;
    if (len > 10) {
        if ((s[10] != 'T' && s[10] != 't') || len < 20 || !two(s + 11, &h) || s[13] != ':' ||
            !two(s + 14, &mi) || s[16] != ':' || !two(s + 17, &se))
            return CM_EINVAL;
        if (s[19] == '.') {
            size_t i = 20;
            int digits = 0;
            for (; s[i] >= '0' && s[i] <= '9'; i++, digits++)
                if (digits < 3)
                    milli = milli * 10 + (s[i] - '0');
            if (digits == 0)
                return CM_EINVAL;
            for (; digits < 3; digits++)
                milli *= 10;
            if (strcmp(s + i, "Z") != 0 && strcmp(s + i, "z") != 0)
                return CM_EINVAL;
        } else if (strcmp(s + 19, "Z") != 0 && strcmp(s + 19, "z") != 0) {
            return CM_EINVAL;
        }
    }
    year = c * 100 + y;
    if (mo < 1 || mo > 12 || d < 1 || d > MDAYS[mo - 1] || h > 23 || mi > 59 || se > 60)
        return CM_EINVAL;
    /* an impossible date such as 02-30, or 02-29 of a common year */
    if (mo == 2 && d == 29 && !(year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)))
        return CM_EINVAL;
    *ms = ((days_from_civil(year, mo, d) * 24 + h) * 60 + mi) * 60000LL + se * 1000LL + milli;
    return CM_OK;
}

/* One operator "name:value" of q; `op` points at the token, `len` its length. Returns
 * CM_ENOTFOUND when the token is not an operator (then it is a word). */
static cm_err operator(search_query *q, const char *tok, size_t len, char *why, size_t n)
{
    static const char *const ops[] = {"from", "in", "before", "after", "has"};
    char val[SEARCH_ID_MAX + 32];
    const char *colon = memchr(tok, ':', len);
    size_t nl, vl;
    int which = -1;

    if (colon == NULL)
        return CM_ENOTFOUND;
    nl = (size_t)(colon - tok);
    for (int i = 0; i < 5; i++)
        if (strlen(ops[i]) == nl && strncasecmp(tok, ops[i], nl) == 0)
            which = i;
    if (which < 0)
        return CM_ENOTFOUND; /* "http://x" or "12:30" are words */
    vl = len - nl - 1;
    if (vl == 0)
        return fail(CM_EINVAL, why, n, "%s: needs a value, e.g. %s", ops[which],
                    which == 0   ? "from:alice"
                    : which == 1 ? "in:<conversation id>"
                    : which == 4 ? "has:attachment"
                                 : "after:2024-05-01");
    if (vl >= sizeof(val))
        return fail(CM_EINVAL, why, n, "the value of %s: is too long", ops[which]);
    memcpy(val, colon + 1, vl);
    val[vl] = '\0';
    switch (which) {
    case 0:
    case 1: {
        char *dst = which == 0 ? q->sender : q->conversation;
        if (!cm_user_id_valid(val))
            return fail(CM_EINVAL, why, n, "%s: takes an id of 1..64 of A-Z a-z 0-9 _ . @ -",
                        ops[which]);
        if (dst[0] && strcmp(dst, val) != 0)
            return fail(CM_EINVAL, why, n, "%s: names two different ids", ops[which]);
        memcpy(dst, val, vl + 1);
        return CM_OK;
    }
    case 2:
    case 3: {
        int64_t ms;
        if (search_parse_time(val, &ms) != CM_OK)
            return fail(CM_EINVAL, why, n, "%s: takes a date YYYY-MM-DD or an RFC 3339 UTC time",
                        ops[which]);
        if (which == 2) {
            if (q->to_ms == 0 || ms < q->to_ms)
                q->to_ms = ms;
        } else {
            /* after:2024-05-01 means from the next day on; after:<time> is exclusive. */
            ms += vl == 10 ? 86400000 : 1;
            if (ms > q->from_ms)
                q->from_ms = ms;
        }
        return CM_OK;
    }
    default:
        if (strcasecmp(val, "attachment") != 0 && strcasecmp(val, "attachments") != 0 &&
            strcasecmp(val, "file") != 0)
            return fail(CM_EINVAL, why, n, "has: knows only has:attachment");
        q->has_attachment = 1;
        return CM_OK;
    }
}

cm_err search_query_parse(const char *s, search_query *q, char *why, size_t n)
{
    size_t len = strlen(s), i = 0;
    cm_err rc;

    memset(q, 0, sizeof(*q));
    if (len > SEARCH_Q_MAX_BYTES)
        return fail(CM_ETOOBIG, why, n, "q is longer than %d bytes", SEARCH_Q_MAX_BYTES);
    if (!cm_utf8_valid(s, len) || cm_utf8_has_control(s, len))
        return fail(CM_EINVAL, why, n, "q must be UTF-8 text without control characters");
    while (i < len) {
        size_t start, end;
        if (s[i] == ' ' || s[i] == '\t' || s[i] == '\n') {
            i++;
            continue;
        }
        if (s[i] == '"') {
            const char *close = memchr(s + i + 1, '"', len - i - 1);
            if (close == NULL)
                return fail(CM_EINVAL, why, n,
                            "unterminated phrase: the \" at byte %zu has no closing \"", i);
            start = i + 1;
            end = (size_t)(close - s);
            rc = add_term(q, s + start, end - start, 0, why, n);
            if (rc != CM_OK)
                return rc;
            i = end + 1;
            continue;
        }
        start = i;
        while (i < len && s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '"')
            i++;
        end = i;
        rc = operator(q, s + start, end - start, why, n);
        if (rc == CM_OK)
            continue;
        if (rc != CM_ENOTFOUND)
            return rc;
        if (s[end - 1] == '*') {
            while (end > start && s[end - 1] == '*')
                end--;
            if (end == start)
                return fail(CM_EINVAL, why, n,
                            "a prefix needs at least one character before the *");
            rc = add_term(q, s + start, end - start, 1, why, n);
        } else {
            rc = add_term(q, s + start, end - start, 0, why, n);
        }
        if (rc != CM_OK)
            return rc;
    }
    if (q->nterms == 0 && !q->sender[0] && !q->conversation[0] && !q->from_ms && !q->to_ms &&
        !q->has_attachment)
        return fail(CM_EINVAL, why, n,
                    "q has nothing to search for: give words, \"a phrase\", a prefix* or a "
                    "filter such as from:alice");
    return CM_OK;
}

int search_id_match(const char *column, const char *id, char *out, size_t n)
{
    size_t at = 0;
    int tokens = 0, w = snprintf(out, n, "%s : (", column);

    if (w < 0 || (size_t)w >= n)
        goto none;
    at = (size_t)w;
    /* each run of letters, digits and - _ . @ is a token of msg_ids' tokenizer (unicode61
     * tokenchars '-_.@', search_index.c): a valid id is one; the runs hold no '"' */
    for (const char *p = id; *p;) {
        size_t len = 0;
        while (p[len] && ((p[len] >= '0' && p[len] <= '9') ||
                          ((p[len] | 0x20) >= 'a' && (p[len] | 0x20) <= 'z') ||
                          p[len] == '-' || p[len] == '_' || p[len] == '.' || p[len] == '@'))
            len++;
        if (len == 0) {
            p++;
            continue;
        }
        w = snprintf(out + at, n - at, "%s\"%.*s\"", tokens ? " " : "", (int)len, p);
        if (w < 0 || (size_t)w >= n - at)
            goto none;
        at += (size_t)w;
        tokens++;
        p += len;
    }
    if (tokens == 0 || at + 2 > n)
        goto none;
    out[at++] = ')';
    out[at] = '\0';
    return 1;
none:
    if (n)
        out[0] = '\0';
    return 0;
}

cJSON *search_snippet_json(const char *marked)
{
    cJSON *o = cJSON_CreateObject(), *hl = cJSON_CreateArray(), *one = NULL;
    size_t len = strlen(marked), at = 0, cps = 0;
    char *text = malloc(len + 1);

    if (o == NULL || hl == NULL || text == NULL)
        goto oom;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)marked[i];
        if (c == 0x01) {
            one = cJSON_CreateObject();
            if (one == NULL || !cJSON_AddItemToArray(hl, one))
                goto oom;
            cJSON_AddNumberToObject(one, "start", (double)cps);
        } else if (c == 0x02) {
            if (one)
                cJSON_AddNumberToObject(one, "end", (double)cps);
            one = NULL;
        } else {
            if ((c & 0xC0) != 0x80)
                cps++;
            text[at++] = (char)c;
        }
    }
    if (one)
        cJSON_AddNumberToObject(one, "end", (double)cps);
    text[at] = '\0';
    cJSON_AddStringToObject(o, "text", text);
    cJSON_AddItemToObject(o, "highlights", hl);
    free(text);
    return o;
oom:
    free(text);
    cJSON_Delete(hl);
    cJSON_Delete(o);
    return NULL;
}
