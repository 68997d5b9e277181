/* search_tokenizer.c - the FTS5 tokenizer "trigram_cjk" of the message substring index
 * (msg_tri): SQLite's own trigram tokenizer, plus the unigrams and bigrams of scripts written
 * without spaces (search_is_unspaced: CJK, kana, Hangul, Thai, ...), so that CJK terms of one or
 * two characters, too short for trigrams, are index lookups instead of a scan.
 *
 * Documents (FTS5_TOKENIZE_DOCUMENT, _AUX): every trigram exactly as the built-in tokenizer
 * emits it (one per character, at consecutive positions, so trigram phrases match as before);
 * with the trigram that starts at character i, colocated (FTS5_TOKEN_COLOCATED: same
 * position), the unigram of character i when it is unspaced and the bigram of characters i,i+1
 * when exactly one of them is; the last two characters, which start no trigram, get theirs at
 * positions of their own after the trigrams. So the unigram of character i is at position i,
 * and two unspaced characters in a row are two unigrams at consecutive positions: a phrase of
 * them finds the pair (no bigram token for it: a third fewer tokens in CJK text, which cost
 * indexing time, bench/README.md). And a trigram of three caseless unspaced characters
 * (unigram_window) is not emitted at all (schema version 8): the unigram of its first
 * character is the only token at its position, so a run of CJK text costs one token per
 * character, as plain trigram does, not two. Extra tokens are 1 or 2 characters long and
 * trigrams always 3, so they never collide.
 *
 * Queries (FTS5_TOKENIZE_QUERY): a string of 3 or more characters is the phrase of its
 * trigrams, where each trigram the documents lack (unigram_window) is the unigram of its first
 * character instead, and when the last one is, the unigrams of the last two characters
 * follow: every character of the term is in the phrase, each at its own position, so the
 * phrase matches exactly where the documents hold the term. One of 1 character is its unigram
 * when unspaced; one of 2 characters is
 * the phrase of their two unigrams when both are unspaced, their bigram when one is
 * (otherwise nothing: it matches no row, as with plain trigram).
 *
 * Folding: trigrams fold case as the built-in does (Unicode); extra tokens fold ASCII letters
 * only (as the LIKE they replace did). */
#include <string.h>

#include <sqlite3.h>

#include "search.h"

/* The wrapped trigram tokenizer: its module and the instance created for one FTS5 table. */
typedef struct tri_tok {
    fts5_tokenizer base;
    Fts5Tokenizer *inst;
} tri_tok;

/* The state of one xTokenize call. */
typedef struct tok_run {
    const unsigned char *text;
    int n;
    int next;     /* byte offset of the first character whose extra tokens are not out yet */
    int emitted;  /* a token was emitted (a colocated one needs a predecessor) */
    void *ctx;
    int (*xToken)(void *, int, const char *, int, int, int);
} tok_run;

/* Byte length of the UTF-8 sequence starting with lead byte c (1 for stray bytes). */
static int seq_len(unsigned char c)
{
    return c < 0xC0 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

/* The code point at byte offset `at` of the run's text and its byte length in *len; 0 at the
 * end (or at a NUL, where SQLite's tokenizers stop too). */
static uint32_t cp_at(const tok_run *r, int at, int *len)
{
    const unsigned char *s = r->text + at;
    int k;
    uint32_t cp;

    *len = 0;
    if (at >= r->n || s[0] == 0)
        return 0;
    k = seq_len(s[0]);
    if (at + k > r->n)
        k = r->n - at;
    cp = k == 1 ? s[0] : (uint32_t)(s[0] & (0x7F >> k));
    for (int i = 1; i < k; i++)
        cp = (cp << 6) | (s[i] & 0x3F);
    *len = k;
    return cp;
}

/* 1 when text[0..n) holds the lead byte of a 3- or 4-byte UTF-8 sequence (a code point of
 * U+0800 or above), which every unspaced script of search_is_unspaced (U+0E00..) needs. */
static int has_lead3(const unsigned char *text, int n)
{
    for (int i = 0; i < n; i++)
        if (text[i] >= 0xE0)
            return 1;
    return 0;
}

/* ASCII letters next to a CJK character fold as the LIKE this index replaces folded them. */
static void fold_ascii(char *s, int n)
{
    for (int i = 0; i < n; i++)
        if (s[i] >= 'A' && s[i] <= 'Z')
            s[i] = (char)(s[i] + 32);
}

/* Emits the extra tokens of the character at byte offset `at` (unigram when unspaced; bigram
 * with the next character when exactly one of the two is unspaced). `coloc` 1: at the previous token's
 * position. Returns an SQLite code. */
static int extras(tok_run *r, int at, int coloc)
{
    char buf[8];
    int l1, l2, rc;
    uint32_t c1 = cp_at(r, at, &l1), c2 = c1 ? cp_at(r, at + l1, &l2) : 0;
    int u1 = c1 && search_is_unspaced(c1), u2 = c2 && search_is_unspaced(c2);

    if (c1 == 0)
        return SQLITE_OK;
    if (u1) {
        rc = r->xToken(r->ctx, coloc && r->emitted ? FTS5_TOKEN_COLOCATED : 0,
                       (const char *)r->text + at, l1, at, at + l1);
        if (rc != SQLITE_OK)
            return rc;
        r->emitted = coloc = 1;
    }
    if (c2 && u1 != u2) {
        memcpy(buf, r->text + at, (size_t)(l1 + l2));
        fold_ascii(buf, l1 + l2);
        rc = r->xToken(r->ctx, coloc && r->emitted ? FTS5_TOKEN_COLOCATED : 0, buf, l1 + l2,
                       at, at + l1 + l2);
        if (rc != SQLITE_OK)
            return rc;
        r->emitted = 1;
    }
    return SQLITE_OK;
}

/* 1 when code point `c` is unspaced and has no case (the fullwidth Latin letters of
 * U+FF21..FF5A are unspaced but fold, which trigrams do and unigrams do not). */
static int caseless_unspaced(uint32_t c)
{
    return c && search_is_unspaced(c) && !(c >= 0xFF21 && c <= 0xFF3A) &&
           !(c >= 0xFF41 && c <= 0xFF5A);
}

/* 1 when the trigram starting at byte `at` is three caseless unspaced characters: such a
 * trigram is not indexed (nor asked for), the unigram of its first character at its position
 * standing for it; a phrase of unigrams at consecutive positions is the same substring. */
static int unigram_window(const tok_run *r, int at)
{
    int l1, l2, l3;
    uint32_t c1 = cp_at(r, at, &l1), c2, c3;
    if (!caseless_unspaced(c1))
        return 0;
    c2 = cp_at(r, at + l1, &l2);
    if (!caseless_unspaced(c2))
        return 0;
    c3 = cp_at(r, at + l1 + l2, &l3);
    return caseless_unspaced(c3);
}

/* The trigram tokenizer's callback: passes the trigram on, then the extra tokens of the
 * character it starts with, at its position; or only the unigram when the trigram is three
 * caseless unspaced characters (unigram_window). */
static int on_trigram(void *ctx, int tflags, const char *tok, int ntok, int start, int end)
{
    tok_run *r = ctx;
    int rc, l;

    if (start < r->n && unigram_window(r, start)) {
        cp_at(r, start, &l);
        rc = r->xToken(r->ctx, tflags, (const char *)r->text + start, l, start, start + l);
        r->emitted = 1;
        r->next = start + l;
        return rc;
    }
    rc = r->xToken(r->ctx, tflags, tok, ntok, start, end);
    if (rc != SQLITE_OK)
        return rc;
    r->emitted = 1;
    if (start >= r->n)
        return SQLITE_OK;
    rc = extras(r, start, 1);
    cp_at(r, start, &l);
    r->next = start + (l ? l : 1);
    return rc;
}

/* The trigram tokenizer's callback for a query of 3 or more characters: its trigrams as a
 * phrase, each replaced by the unigram of its first character where the document has only
 * that (unigram_window); `next` is left after the last trigram's first character and
 * `emitted` says whether that trigram was such a window. */
static int on_query_trigram(void *ctx, int tflags, const char *tok, int ntok, int start, int end)
{
    tok_run *r = ctx;
    int l, uni = unigram_window(r, start);

    cp_at(r, start, &l);
    r->next = start + l;
    r->emitted = uni;
    if (uni)
        return r->xToken(r->ctx, tflags, (const char *)r->text + start, l, start, start + l);
    return r->xToken(r->ctx, tflags, tok, ntok, start, end);
}

static int tri_create(void *ud, const char **argv, int argc, Fts5Tokenizer **out)
{
    fts5_api *api = ud;
    tri_tok *t = sqlite3_malloc(sizeof(*t));
    void *tctx = NULL;
    int rc;

    if (t == NULL)
        return SQLITE_NOMEM;
    memset(t, 0, sizeof(*t));
    rc = api->xFindTokenizer(api, "trigram", &tctx, &t->base);
    if (rc == SQLITE_OK)
        rc = t->base.xCreate(tctx, argv, argc, &t->inst);
    if (rc != SQLITE_OK) {
        sqlite3_free(t);
        return rc;
    }
    *out = (Fts5Tokenizer *)t;
    return SQLITE_OK;
}

static void tri_delete(Fts5Tokenizer *p)
{
    tri_tok *t = (tri_tok *)p;
    if (t == NULL)
        return;
    t->base.xDelete(t->inst);
    sqlite3_free(t);
}

static int tri_tokenize(Fts5Tokenizer *p, void *ctx, int flags, const char *text, int n,
                        int (*xToken)(void *, int, const char *, int, int, int))
{
    tri_tok *t = (tri_tok *)p;
    tok_run r = {(const unsigned char *)text, n, 0, 0, ctx, xToken};
    int rc, chars = 0, l;

    if (flags & FTS5_TOKENIZE_QUERY) {
        for (int at = 0; chars < 3 && cp_at(&r, at, &l); at += l)
            chars++;
        if (chars >= 3 && !has_lead3(r.text, n))
            return t->base.xTokenize(t->inst, ctx, flags, text, n, xToken);
        if (chars >= 3) {
            /* the last trigram a unigram: its other two characters follow as unigrams (both
             * caseless unspaced), so every character of the term is in the phrase */
            rc = t->base.xTokenize(t->inst, &r, flags, text, n, on_query_trigram);
            for (int at = r.next, k = 0; rc == SQLITE_OK && r.emitted && k < 2; k++, at += l)
                if (cp_at(&r, at, &l))
                    rc = xToken(ctx, 0, text + at, l, at, at + l);
            return rc;
        }
        /* 1 or 2 characters: the one extra token spelling all of them, or nothing */
        if (chars == 1) {
            uint32_t c = cp_at(&r, 0, &l);
            return search_is_unspaced(c) ? xToken(ctx, 0, text, l, 0, l) : SQLITE_OK;
        }
        if (chars == 2) {
            int l2;
            uint32_t c1 = cp_at(&r, 0, &l), c2 = cp_at(&r, l, &l2);
            char buf[8];
            int u1 = search_is_unspaced(c1), u2 = search_is_unspaced(c2), rc2;
            if (!u1 && !u2)
                return SQLITE_OK;
            if (u1 && u2) { /* a phrase of the two unigrams */
                rc2 = xToken(ctx, 0, text, l, 0, l);
                return rc2 == SQLITE_OK ? xToken(ctx, 0, text + l, l2, l, l + l2) : rc2;
            }
            memcpy(buf, text, (size_t)(l + l2));
            fold_ascii(buf, l + l2);
            return xToken(ctx, 0, buf, l + l2, 0, l + l2);
        }
        return SQLITE_OK;
    }
    /* Every unspaced character (U+0E00 and above) is 3 or 4 bytes long in UTF-8: a text
     * without such a lead byte has no extra token, and the trigram tokenizer's tokens go
     * straight to FTS5 (most texts: no callback of ours, no decoding per character). */
    if (!has_lead3(r.text, n))
        return t->base.xTokenize(t->inst, ctx, flags, text, n, xToken);
    rc = t->base.xTokenize(t->inst, &r, flags, text, n, on_trigram);
    for (int at = r.next; rc == SQLITE_OK && cp_at(&r, at, &l); at += l)
        rc = extras(&r, at, 0);
    return rc;
}

static fts5_tokenizer TRIGRAM_CJK = {tri_create, tri_delete, tri_tokenize};

/* The sqlite3_auto_extension entry point: registers "trigram_cjk" on connection `db`. */
static int register_on(sqlite3 *db, const char **err, const struct sqlite3_api_routines *api)
{
    fts5_api *fts = NULL;
    sqlite3_stmt *st = NULL;
    int rc;

    (void)err;
    (void)api;
    if (sqlite3_prepare_v2(db, "SELECT fts5(?1)", -1, &st, NULL) != SQLITE_OK)
        return SQLITE_ERROR;
    sqlite3_bind_pointer(st, 1, &fts, "fts5_api_ptr", NULL);
    sqlite3_step(st);
    sqlite3_finalize(st);
    if (fts == NULL || fts->iVersion < 2)
        return SQLITE_ERROR;
    rc = fts->xCreateTokenizer(fts, "trigram_cjk", fts, &TRIGRAM_CJK, NULL);
    return rc;
}

cm_err search_tokenizer_register(void)
{
    return sqlite3_auto_extension((void (*)(void))register_on) == SQLITE_OK ? CM_OK : CM_EIO;
}
