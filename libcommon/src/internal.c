/* internal.c - the shared key of the service-to-service routes (see internal.h). */
#include "common/internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "common/config.h"
#include "common/log.h"

#define KEY_MIN 16
#define FILE_MAX 4096
#define KEYS_MAX 4

static pthread_once_t once = PTHREAD_ONCE_INIT;
static cm_err load_rc;
static char *header;                                       /* sends the first key; NULL: unset */
static unsigned char digests[KEYS_MAX][SHA256_DIGEST_LENGTH]; /* SHA-256 of each key accepted */
static int nkeys;

/* 1 when s[0..n) is visible ASCII: a header value needs nothing escaped (RFC 9110 5.5). */
static int visible(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return 0;
    return 1;
}

/* Takes the non-empty lines of text[0..len) as keys; the first is the one sent. */
static cm_err parse(const char *text, size_t len)
{
    const char *p = text, *end = text + len;

    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p)), *s = p, *e;
        e = eol ? eol : end;
        p = eol ? eol + 1 : end;
        while (s < e && strchr(" \t\r", *s))
            s++;
        while (e > s && strchr(" \t\r", e[-1]))
            e--;
        if (e == s)
            continue;
        if ((size_t)(e - s) < KEY_MIN || !visible(s, (size_t)(e - s)) || nkeys == KEYS_MAX) {
            cm_error("config: INTERNAL_KEY_FILE holds one key per line, at most %d, each at "
                     "least %d visible ASCII characters",
                     KEYS_MAX, KEY_MIN);
            return CM_EINVAL;
        }
        if (header == NULL) {
            size_t cap = sizeof(CM_INTERNAL_KEY_HEADER ": ") + (size_t)(e - s);
            if ((header = malloc(cap)) == NULL)
                return CM_ENOMEM;
            snprintf(header, cap, "%s: %.*s", CM_INTERNAL_KEY_HEADER, (int)(e - s), s);
        }
        SHA256((const unsigned char *)s, (size_t)(e - s), digests[nkeys++]);
    }
    if (nkeys == 0) {
        cm_error("config: INTERNAL_KEY_FILE holds no key");
        return CM_EINVAL;
    }
    return CM_OK;
}

static void load(void)
{
    char *text = NULL;
    size_t len = 0;

    load_rc = cm_config_file("INTERNAL_KEY_FILE", FILE_MAX, &text, &len);
    if (load_rc == CM_ENOTFOUND) {
        load_rc = CM_OK;
        cm_warn("config: INTERNAL_KEY_FILE is unset: the /internal routes accept any caller");
        return;
    }
    if (load_rc != CM_OK)
        return;
    load_rc = parse(text, len);
    if (load_rc != CM_OK) {
        free(header);
        header = NULL;
        nkeys = 0;
    }
    OPENSSL_cleanse(text, len);
    free(text);
}

cm_err cm_internal_key_load(void)
{
    pthread_once(&once, load);
    return load_rc;
}

const char *cm_internal_key_header(void)
{
    pthread_once(&once, load);
    return header;
}

int cm_internal_key_accepts(const char *presented)
{
    unsigned char got[SHA256_DIGEST_LENGTH];
    int ok = 0;

    pthread_once(&once, load);
    if (load_rc != CM_OK)
        return 0; /* a broken key file closes the routes (the process should not be serving) */
    if (nkeys == 0)
        return 1;
    if (presented == NULL)
        return 0;
    /* Digests of equal length compare in constant time whatever the presented length. */
    SHA256((const unsigned char *)presented, strlen(presented), got);
    for (int i = 0; i < nkeys; i++)
        ok |= CRYPTO_memcmp(got, digests[i], sizeof(got)) == 0;
    return ok;
}
