/* jwt.c - RS256 access tokens with a key set chosen by kid: the header, algorithm and claims
 * are checked here; keys are read, checked and exported as JWKs with OpenSSL; signatures are
 * made by libjwt and checked by OpenSSL with the key parsed once (libjwt 1.x would parse the
 * PEM again on every verification, which OpenSSL 3 makes slow and serialised: bench/); libjwt
 * then parses the verified token's claims. */
#include "common/jwt.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cJSON.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <stdatomic.h>

#include "common/config.h"
#include "common/json.h"
#include "common/log.h"
#include "common/uuid.h"

#define MAX_TOKEN 8192      /* bytes; a real access token is well under 2 KiB */
#define RSA_MIN_BITS 2048   /* RFC 7518 section 3.3 */
#define RSA_MAX_BYTES 1024  /* 8192-bit moduli at most: bounds the work a JWKS can ask for */
#define KEY_FILE_MAX (64 * 1024)

/* One key of the set. The public PEM is what libjwt verifies with; n and e are the JWK. */
typedef struct jwt_key {
    char *kid;          /* NULL: the key matches tokens without a kid */
    char *priv;         /* PEM private key as configured, NULL for a public-only key */
    size_t priv_len;
    char *pub;          /* PEM SubjectPublicKeyInfo, derived with OpenSSL */
    size_t pub_len;
    EVP_PKEY *pkey;     /* the public key, parsed once, shared read-only by verifying threads */
    char *n, *e;        /* base64url modulus and public exponent (RFC 7518 section 6.3.1) */
} jwt_key;

typedef struct key_set {
    int n;
    jwt_key keys[CM_JWT_KEYS_MAX]; /* oldest first; the last one signs */
} key_set;

struct cm_jwt {
    jwt_alg_t alg;
    char alg_name[8];
    char *iss, *aud;
    long leeway;
    pthread_rwlock_t lock; /* verifies and signs read `set`; key changes write it */
    key_set set;
    cm_jwt_refresh_fn refresh;
    void *refresh_ud;
    void (*refresh_free)(void *ud);
    atomic_ulong key_gen;        /* bumped by every key change: older cache entries are void */
    struct verify_cache *cache;  /* cm_jwt_cache_enable; NULL: every verify checks the signature */
};

/* --- the verification cache (cm_jwt_cache_enable) ----------------------------------------- */

#define CACHE_WAYS 4
#define CACHE_STRIPES 64

struct cache_entry {
    unsigned char digest[SHA256_DIGEST_LENGTH]; /* of the whole token */
    unsigned long gen;  /* key_gen when it was verified */
    unsigned long used; /* tick of the last hit: the least recent of a set is replaced */
    int valid;
    cm_jwt_claims claims;
};

struct verify_cache {
    size_t nsets;
    struct cache_entry *e; /* nsets * CACHE_WAYS */
    pthread_mutex_t locks[CACHE_STRIPES];
    atomic_ulong tick, hits, misses;
};

/* --- keys --------------------------------------------------------------------------------- */

static void key_cleanup(jwt_key *k)
{
    free(k->kid);
    if (k->priv)
        OPENSSL_cleanse(k->priv, k->priv_len);
    free(k->priv);
    free(k->pub);
    EVP_PKEY_free(k->pkey);
    free(k->n);
    free(k->e);
    memset(k, 0, sizeof(*k));
}

static void set_cleanup(key_set *s)
{
    for (int i = 0; i < s->n; i++)
        key_cleanup(&s->keys[i]);
    s->n = 0;
}

/* A kid is 1..64 bytes of printable ASCII without spaces (it travels in headers and logs). */
static int kid_valid(const char *kid)
{
    size_t n = strlen(kid);
    if (n == 0 || n > CM_JWT_KID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)kid[i] < 0x21 || (unsigned char)kid[i] > 0x7e)
            return 0;
    return 1;
}

static char *bn_b64url(const BIGNUM *bn)
{
    unsigned char bin[RSA_MAX_BYTES];
    char *out;
    int len = BN_num_bytes(bn);

    if (len <= 0 || len > RSA_MAX_BYTES)
        return NULL;
    BN_bn2bin(bn, bin);
    out = malloc((size_t)len * 4 / 3 + 4);
    if (out && cm_base64url_encode(bin, (size_t)len, out, (size_t)len * 4 / 3 + 4) < 0) {
        free(out);
        out = NULL;
    }
    return out;
}

/* Fills the public parts of `k` from an OpenSSL key: refuses anything but RSA of 2048 bits or
 * more, then derives the SubjectPublicKeyInfo PEM and the JWK members n and e. */
static cm_err key_fill(EVP_PKEY *pk, jwt_key *k)
{
    BIGNUM *n = NULL, *e = NULL;
    BIO *mem = NULL;
    char *data;
    long len;
    cm_err rc = CM_EINVAL;

    if (!EVP_PKEY_is_a(pk, "RSA") || EVP_PKEY_get_bits(pk) < RSA_MIN_BITS ||
        EVP_PKEY_get_bits(pk) > RSA_MAX_BYTES * 8)
        goto out;
    if (EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_N, &n) != 1 ||
        EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_E, &e) != 1)
        goto out;
    rc = CM_ENOMEM;
    mem = BIO_new(BIO_s_mem());
    if (mem == NULL || PEM_write_bio_PUBKEY(mem, pk) != 1)
        goto out;
    len = BIO_get_mem_data(mem, &data);
    k->pub = malloc((size_t)len + 1);
    k->n = bn_b64url(n);
    k->e = bn_b64url(e);
    if (len <= 0 || k->pub == NULL || k->n == NULL || k->e == NULL)
        goto out;
    memcpy(k->pub, data, (size_t)len);
    k->pub[len] = '\0';
    k->pub_len = (size_t)len;
    if (EVP_PKEY_up_ref(pk) != 1)
        goto out;
    k->pkey = pk;
    rc = CM_OK;
out:
    BN_free(n);
    BN_free(e);
    BIO_free(mem);
    ERR_clear_error(); /* failures are reported by rc; leave no stale errors for libjwt */
    return rc;
}

/* Encrypted keys are refused rather than prompting on a terminal for a passphrase. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/* Reads a PEM private key (kept to sign) or public key into `k`. */
static cm_err key_from_pem(const char *pem, size_t len, const char *kid, jwt_key *k)
{
    BIO *b = NULL;
    EVP_PKEY *pk = NULL;
    int priv = 1;
    cm_err rc = CM_EINVAL;

    memset(k, 0, sizeof(*k));
    if (pem == NULL || len == 0 || len > INT_MAX || (kid && !kid_valid(kid)))
        return CM_EINVAL;
    b = BIO_new_mem_buf(pem, (int)len);
    if (b == NULL)
        return CM_ENOMEM;
    pk = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL);
    if (pk == NULL) {
        priv = 0;
        ERR_clear_error();
        BIO_free(b);
        b = BIO_new_mem_buf(pem, (int)len);
        if (b == NULL) {
            rc = CM_ENOMEM;
            goto out;
        }
        pk = PEM_read_bio_PUBKEY(b, NULL, no_passphrase, NULL);
    }
    if (pk == NULL)
        goto out;
    rc = key_fill(pk, k);
    if (rc != CM_OK)
        goto out;
    rc = CM_ENOMEM;
    if (kid && (k->kid = strdup(kid)) == NULL)
        goto out;
    if (priv) {
        k->priv = malloc(len + 1);
        if (k->priv == NULL)
            goto out;
        memcpy(k->priv, pem, len);
        k->priv[len] = '\0';
        k->priv_len = len;
    }
    rc = CM_OK;
out:
    if (rc != CM_OK)
        key_cleanup(k);
    EVP_PKEY_free(pk);
    BIO_free(b);
    ERR_clear_error();
    return rc;
}

/* Builds an RSA public key from the JWK members n and e (big-endian unsigned integers). */
static cm_err key_from_ne(const unsigned char *n, size_t nlen, const unsigned char *e,
                          size_t elen, const char *kid, jwt_key *k)
{
    BIGNUM *bn = BN_bin2bn(n, (int)nlen, NULL), *be = BN_bin2bn(e, (int)elen, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    EVP_PKEY *pk = NULL;
    cm_err rc = CM_ENOMEM;

    memset(k, 0, sizeof(*k));
    if (bn == NULL || be == NULL || bld == NULL || ctx == NULL)
        goto out;
    /* An even or tiny exponent is no RSA public key (RFC 8017 section 3.1). */
    rc = CM_EINVAL;
    if (!BN_is_odd(be) || BN_is_one(be) || !BN_is_odd(bn))
        goto out;
    if (OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) != 1 ||
        (params = OSSL_PARAM_BLD_to_param(bld)) == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1)
        goto out;
    rc = key_fill(pk, k);
    if (rc == CM_OK && (k->kid = strdup(kid)) == NULL)
        rc = CM_ENOMEM;
out:
    if (rc != CM_OK)
        key_cleanup(k);
    EVP_PKEY_free(pk);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    ERR_clear_error();
    return rc;
}

/* Index of the key named `kid` (NULL: the key without a kid), or -1. Caller holds the lock. */
static int set_find(const key_set *s, const char *kid)
{
    for (int i = 0; i < s->n; i++) {
        const char *k = s->keys[i].kid;
        if ((kid == NULL && k == NULL) || (kid && k && strcmp(kid, k) == 0))
            return i;
    }
    return -1;
}

/* --- life cycle ---------------------------------------------------------------------------- */

void cm_jwt_destroy(cm_jwt *j)
{
    if (j == NULL)
        return;
    if (j->refresh_free)
        j->refresh_free(j->refresh_ud);
    set_cleanup(&j->set);
    pthread_rwlock_destroy(&j->lock);
    if (j->cache) {
        for (int i = 0; i < CACHE_STRIPES; i++)
            pthread_mutex_destroy(&j->cache->locks[i]);
        free(j->cache->e);
        free(j->cache);
    }
    free(j->iss);
    free(j->aud);
    free(j);
}

cm_err cm_jwt_create_keyless(const cm_jwt_config *cfg, cm_jwt **out)
{
    pthread_rwlockattr_t attr;
    cm_jwt *j;

    if (cfg->alg == NULL || cfg->issuer == NULL || cfg->audience == NULL || !*cfg->issuer ||
        !*cfg->audience || cfg->leeway_s < 0)
        return CM_EINVAL;
    /* Only asymmetric RS256 for now: services verify with the public key and cannot mint. */
    if (strcmp(cfg->alg, "RS256") != 0)
        return CM_EINVAL;
    j = calloc(1, sizeof(*j));
    if (j == NULL)
        return CM_ENOMEM;
    /* Writers first: a key refresh must not wait behind an endless stream of verifies. */
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&j->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    j->alg = JWT_ALG_RS256;
    snprintf(j->alg_name, sizeof(j->alg_name), "%s", cfg->alg);
    j->iss = strdup(cfg->issuer);
    j->aud = strdup(cfg->audience);
    if (j->iss == NULL || j->aud == NULL) {
        cm_jwt_destroy(j);
        return CM_ENOMEM;
    }
    j->leeway = cfg->leeway_s;
    *out = j;
    return CM_OK;
}

cm_err cm_jwt_create(const cm_jwt_config *cfg, cm_jwt **out)
{
    cm_jwt *j = NULL;
    cm_err rc;

    if (cfg->key == NULL || cfg->key_len == 0)
        return CM_EINVAL;
    rc = cm_jwt_create_keyless(cfg, &j);
    if (rc != CM_OK)
        return rc;
    rc = cm_jwt_add_key(j, cfg->kid, cfg->key, cfg->key_len);
    if (rc != CM_OK) {
        cm_jwt_destroy(j);
        return rc == CM_ENOMEM ? rc : CM_EINVAL;
    }
    *out = j;
    return CM_OK;
}

cm_err cm_jwt_add_key(cm_jwt *j, const char *kid, const char *pem, size_t len)
{
    jwt_key k;
    cm_err rc = key_from_pem(pem, len, kid, &k);

    if (rc != CM_OK)
        return rc;
    pthread_rwlock_wrlock(&j->lock);
    if (set_find(&j->set, kid) >= 0)
        rc = CM_ECONFLICT;
    else if (j->set.n == CM_JWT_KEYS_MAX)
        rc = CM_ETOOBIG;
    else
        j->set.keys[j->set.n++] = k;
    atomic_fetch_add(&j->key_gen, 1);
    pthread_rwlock_unlock(&j->lock);
    if (rc != CM_OK)
        key_cleanup(&k);
    return rc;
}

int cm_jwt_key_count(const cm_jwt *j)
{
    int n;
    pthread_rwlock_rdlock((pthread_rwlock_t *)&j->lock);
    n = j->set.n;
    pthread_rwlock_unlock((pthread_rwlock_t *)&j->lock);
    return n;
}

void cm_jwt_set_refresh(cm_jwt *j, cm_jwt_refresh_fn fn, void *ud, void (*free_ud)(void *ud))
{
    if (j->refresh_free)
        j->refresh_free(j->refresh_ud);
    j->refresh = fn;
    j->refresh_ud = ud;
    j->refresh_free = free_ud;
}

/* --- JWK Sets ------------------------------------------------------------------------------ */

/* Decodes the base64url member `name` of `jwk` into `out` (size cap). -1 when absent/bad. */
static long jwk_bytes(const cJSON *jwk, const char *name, unsigned char *out, size_t cap)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(jwk, name);
    if (!cJSON_IsString(v) || v->valuestring[0] == '\0')
        return -1;
    return cm_base64url_decode(v->valuestring, strlen(v->valuestring), out, cap);
}

static int member_is(const cJSON *obj, const char *name, const char *want, int absent_ok)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (v == NULL)
        return absent_ok;
    return cJSON_IsString(v) && strcmp(v->valuestring, want) == 0;
}

cm_err cm_jwt_set_jwks(cm_jwt *j, const char *json, size_t len, int *nkeys, char *detail,
                       size_t n)
{
    unsigned char nb[RSA_MAX_BYTES + 1], eb[16];
    cJSON *doc = NULL, *keys, *jwk;
    key_set fresh, old;
    char why[128];
    cm_err rc = CM_EINVAL;
    int i = -1;

    memset(&fresh, 0, sizeof(fresh));
    if (len > CM_JWT_JWKS_MAX) {
        snprintf(detail, n, "the JWK Set is larger than %d bytes", CM_JWT_JWKS_MAX);
        return CM_EINVAL;
    }
    if (cm_json_parse(json, len, 8, &doc, why, sizeof(why)) != CM_OK) {
        snprintf(detail, n, "the JWK Set is not JSON: %s", why);
        return CM_EINVAL;
    }
    keys = cJSON_GetObjectItemCaseSensitive(doc, "keys");
    if (!cJSON_IsObject(doc) || !cJSON_IsArray(keys)) {
        snprintf(detail, n, "the JWK Set has no \"keys\" array (RFC 7517 section 5)");
        goto out;
    }
    cJSON_ArrayForEach(jwk, keys)
    {
        const cJSON *kid = cJSON_GetObjectItemCaseSensitive(jwk, "kid");
        long nl, el;
        i++;
        if (!cJSON_IsObject(jwk)) {
            snprintf(detail, n, "keys[%d] is not an object", i);
            goto out;
        }
        /* What is not an RSA signing key for our algorithm is somebody else's: skip it. */
        if (!member_is(jwk, "kty", "RSA", 0) || !member_is(jwk, "use", "sig", 1) ||
            !member_is(jwk, "alg", j->alg_name, 1))
            continue;
        if (!cJSON_IsString(kid) || !kid_valid(kid->valuestring)) {
            snprintf(detail, n, "keys[%d] has no kid of 1..%d printable characters", i,
                     CM_JWT_KID_MAX);
            goto out;
        }
        if (set_find(&fresh, kid->valuestring) >= 0) {
            snprintf(detail, n, "keys[%d] repeats kid '%s'", i, kid->valuestring);
            goto out;
        }
        if (fresh.n == CM_JWT_KEYS_MAX) {
            snprintf(detail, n, "the JWK Set has more than %d usable keys", CM_JWT_KEYS_MAX);
            goto out;
        }
        nl = jwk_bytes(jwk, "n", nb, sizeof(nb));
        el = jwk_bytes(jwk, "e", eb, sizeof(eb));
        if (nl <= 0 || el <= 0) {
            snprintf(detail, n, "keys[%d] ('%s') lacks base64url members n and e", i,
                     kid->valuestring);
            goto out;
        }
        rc = key_from_ne(nb, (size_t)nl, eb, (size_t)el, kid->valuestring,
                         &fresh.keys[fresh.n]);
        if (rc != CM_OK) {
            if (rc == CM_EINVAL)
                snprintf(detail, n, "keys[%d] ('%s') is not an RSA public key of %d bits or more",
                         i, kid->valuestring, RSA_MIN_BITS);
            goto out;
        }
        fresh.n++;
        rc = CM_EINVAL;
    }
    if (fresh.n == 0) {
        snprintf(detail, n, "the JWK Set holds no RSA signing key for %s", j->alg_name);
        goto out;
    }
    pthread_rwlock_wrlock(&j->lock);
    old = j->set;
    j->set = fresh;
    atomic_fetch_add(&j->key_gen, 1); /* a key taken away must stop verifying cached tokens */
    pthread_rwlock_unlock(&j->lock);
    if (nkeys)
        *nkeys = fresh.n;
    fresh = old; /* freed below, outside the lock */
    rc = CM_OK;
out:
    set_cleanup(&fresh);
    cJSON_Delete(doc);
    return rc;
}

cm_err cm_jwt_jwks(const cm_jwt *j, char **out)
{
    cJSON *doc = cJSON_CreateObject(), *keys = cJSON_AddArrayToObject(doc, "keys");
    cm_err rc = CM_ENOMEM;
    char *s;

    if (keys == NULL)
        goto out;
    pthread_rwlock_rdlock((pthread_rwlock_t *)&j->lock);
    for (int i = 0; i < j->set.n; i++) {
        const jwt_key *k = &j->set.keys[i];
        cJSON *jwk;
        if (k->kid == NULL)
            continue;
        jwk = cJSON_CreateObject();
        if (jwk == NULL || !cJSON_AddStringToObject(jwk, "kty", "RSA") ||
            !cJSON_AddStringToObject(jwk, "use", "sig") ||
            !cJSON_AddStringToObject(jwk, "alg", j->alg_name) ||
            !cJSON_AddStringToObject(jwk, "kid", k->kid) ||
            !cJSON_AddStringToObject(jwk, "n", k->n) || !cJSON_AddStringToObject(jwk, "e", k->e) ||
            !cJSON_AddItemToArray(keys, jwk)) {
            cJSON_Delete(jwk);
            pthread_rwlock_unlock((pthread_rwlock_t *)&j->lock);
            goto out;
        }
    }
    pthread_rwlock_unlock((pthread_rwlock_t *)&j->lock);
    s = cJSON_PrintUnformatted(doc);
    if (s == NULL)
        goto out;
    *out = s;
    rc = CM_OK;
out:
    cJSON_Delete(doc);
    return rc;
}

/* --- configuration ------------------------------------------------------------------------- */

static cm_err add_key_file(cm_jwt *j, const char *var, const char *kid, const char *path)
{
    char *pem = NULL;
    size_t len = 0;
    cm_err rc = cm_config_read_path(path, KEY_FILE_MAX, &pem, &len);

    if (rc != CM_OK) {
        cm_error("config: %s: the key file of kid '%s' cannot be read", var, kid);
        return rc;
    }
    rc = cm_jwt_add_key(j, kid, pem, len);
    if (rc == CM_ECONFLICT)
        cm_error("config: %s names kid '%s' twice", var, kid);
    else if (rc == CM_ETOOBIG)
        cm_error("config: %s lists more than %d keys", var, CM_JWT_KEYS_MAX);
    else if (rc != CM_OK)
        cm_error("config: %s: %s is not an RSA key of %d bits or more in PEM, or kid '%s' is "
                 "malformed",
                 var, path, RSA_MIN_BITS, kid);
    OPENSSL_cleanse(pem, len);
    free(pem);
    return rc == CM_OK ? CM_OK : CM_EINVAL;
}

/* "kid=path,kid=path": the list form starts with a kid (no '/') followed by '='. */
static int is_key_list(const char *v)
{
    const char *eq = strchr(v, '='), *slash = strchr(v, '/');
    return eq != NULL && eq != v && (slash == NULL || slash > eq);
}

static cm_err add_key_list(cm_jwt *j, const char *var, const char *list)
{
    char *copy = strdup(list), *save = NULL;
    cm_err rc = CM_OK;

    if (copy == NULL)
        return CM_ENOMEM;
    for (char *item = strtok_r(copy, ",", &save); item && rc == CM_OK;
         item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        while (*item == ' ')
            item++;
        if (eq == NULL || eq == item || eq[1] == '\0') {
            cm_error("config: %s: '%s' is not kid=path", var, item);
            rc = CM_EINVAL;
            break;
        }
        *eq = '\0';
        rc = add_key_file(j, var, item, eq + 1);
    }
    free(copy);
    return rc;
}

cm_err cm_jwt_keyless_from_env(cm_jwt **out)
{
    long leeway;
    cm_err rc;

    if (cm_config_long("JWT_LEEWAY_S", 30, 0, 600, &leeway) != CM_OK)
        return CM_EINVAL;
    cm_jwt_config cfg = {
        .alg = cm_config_str("JWT_ALG", "RS256"),
        .issuer = cm_config_str("JWT_ISSUER", "chat-platform"),
        .audience = cm_config_str("JWT_AUDIENCE", "chat-api"),
        .leeway_s = leeway,
    };
    rc = cm_jwt_create_keyless(&cfg, out);
    if (rc == CM_EINVAL)
        cm_error("config: JWT settings refused (JWT_ALG must be RS256; JWT_ISSUER and "
                 "JWT_AUDIENCE must not be empty)");
    return rc;
}

cm_err cm_jwt_from_env(const char *key_var, cm_jwt **out)
{
    const char *value = cm_config_str(key_var, NULL);
    cm_jwt *j = NULL;
    cm_err rc;

    if (value == NULL) {
        cm_error("config: %s is required (path to a PEM key, or kid=path,...)", key_var);
        return CM_ENOTFOUND;
    }
    rc = cm_jwt_keyless_from_env(&j);
    if (rc != CM_OK)
        return rc;
    if (is_key_list(value))
        rc = add_key_list(j, key_var, value);
    else
        rc = add_key_file(j, key_var, cm_config_str("JWT_KID", "k1"), value);
    if (rc == CM_OK && j->set.n == 0) {
        cm_error("config: %s names no key", key_var);
        rc = CM_EINVAL;
    }
    if (rc != CM_OK) {
        cm_jwt_destroy(j);
        return rc;
    }
    *out = j;
    return CM_OK;
}

/* --- signing --------------------------------------------------------------------------------- */

/* Adds a space-separated list as a JSON array claim, so verifiers in any language read it. */
static int add_list_claim(jwt_t *t, const char *name, const char *list)
{
    cJSON *obj = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(obj, name);
    char *copy = strdup(list), *json = NULL, *save = NULL;
    int rc = -1;

    if (arr == NULL || copy == NULL)
        goto out;
    for (char *r = strtok_r(copy, " ", &save); r; r = strtok_r(NULL, " ", &save))
        if (!cJSON_AddItemToArray(arr, cJSON_CreateString(r)))
            goto out;
    json = cJSON_PrintUnformatted(obj);
    if (json == NULL)
        goto out;
    rc = jwt_add_grants_json(t, json);
out:
    free(json);
    free(copy);
    cJSON_Delete(obj);
    return rc;
}

cm_err cm_jwt_sign(const cm_jwt *j, const cm_jwt_claims *c, time_t now, long ttl_s, char **token)
{
    pthread_rwlock_t *lock = (pthread_rwlock_t *)&j->lock;
    const jwt_key *k;
    jwt_t *t = NULL;
    char jti[CM_UUID_STRLEN];
    cm_err rc;
    char *s;

    if (c->sub[0] == '\0' || c->tid[0] == '\0' || ttl_s <= 0)
        return CM_EINVAL;
    rc = CM_EINTERNAL;
    pthread_rwlock_rdlock(lock);
    if (j->set.n == 0 || j->set.keys[j->set.n - 1].priv == NULL)
        goto out; /* a verifier holds public keys only and cannot mint */
    k = &j->set.keys[j->set.n - 1];
    if (jwt_new(&t) != 0 || cm_uuid_v7(jti) != CM_OK)
        goto out;
    if (jwt_add_grant(t, "sub", c->sub) || jwt_add_grant(t, "tid", c->tid) ||
        (c->sid[0] && jwt_add_grant(t, "sid", c->sid)) || jwt_add_grant(t, "iss", j->iss) ||
        jwt_add_grant(t, "aud", j->aud) || jwt_add_grant(t, "jti", jti) ||
        jwt_add_grant_int(t, "iat", (long)now) || jwt_add_grant_int(t, "nbf", (long)now) ||
        jwt_add_grant_int(t, "exp", (long)now + ttl_s) || add_list_claim(t, "roles", c->roles) ||
        (c->perms[0] && add_list_claim(t, "perms", c->perms)))
        goto out;
    if (k->kid && jwt_add_header(t, "kid", k->kid))
        goto out;
    if (jwt_set_alg(t, j->alg, (const unsigned char *)k->priv, (int)k->priv_len) != 0)
        goto out;
    s = jwt_encode_str(t);
    if (s == NULL)
        goto out;
    *token = s;
    rc = CM_OK;
out:
    pthread_rwlock_unlock(lock);
    jwt_free(t);
    return rc;
}

/* --- base64url ------------------------------------------------------------------------------- */

long cm_base64url_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    unsigned acc = 0;
    int bits = 0;
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        char ch = in[i];
        int v;
        if (ch >= 'A' && ch <= 'Z')
            v = ch - 'A';
        else if (ch >= 'a' && ch <= 'z')
            v = ch - 'a' + 26;
        else if (ch >= '0' && ch <= '9')
            v = ch - '0' + 52;
        else if (ch == '-')
            v = 62;
        else if (ch == '_')
            v = 63;
        else
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o == cap)
                return -1;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (len % 4 == 1)
        return -1;
    return (long)o;
}

long cm_base64url_encode(const unsigned char *in, size_t len, char *out, size_t cap)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t need = len / 3 * 4 + (len % 3 ? len % 3 + 1 : 0), o = 0, i = 0;

    if (need + 1 > cap)
        return -1;
    for (; i + 2 < len; i += 3) {
        out[o++] = tbl[in[i] >> 2];
        out[o++] = tbl[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
        out[o++] = tbl[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
        out[o++] = tbl[in[i + 2] & 63];
    }
    if (len - i == 1) {
        out[o++] = tbl[in[i] >> 2];
        out[o++] = tbl[(in[i] & 3) << 4];
    } else if (len - i == 2) {
        out[o++] = tbl[in[i] >> 2];
        out[o++] = tbl[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
        out[o++] = tbl[(in[i + 1] & 15) << 2];
    }
    out[o] = '\0';
    return (long)o;
}

/* --- verifying ------------------------------------------------------------------------------- */

/* Reads the header before libjwt does, so the token never chooses the algorithm; copies the
 * kid (empty when absent) into `kid` (size CM_JWT_KID_MAX + 1). */
static cm_err check_header(const cm_jwt *j, const char *token, char *kid, int *has_kid,
                           char *detail, size_t n)
{
    const char *dot = strchr(token, '.');
    unsigned char hdr[1024];
    cJSON *h = NULL, *alg, *k, *typ;
    cm_err rc = CM_EUNAUTH;
    long len;

    if (dot == NULL || strchr(dot + 1, '.') == NULL || strchr(strchr(dot + 1, '.') + 1, '.')) {
        snprintf(detail, n, "the token is not a JWS compact serialisation (three parts)");
        return CM_EUNAUTH;
    }
    len = cm_base64url_decode(token, (size_t)(dot - token), hdr, sizeof(hdr) - 1);
    if (len <= 0) {
        snprintf(detail, n, "the token header is not base64url");
        return CM_EUNAUTH;
    }
    hdr[len] = '\0';
    h = cJSON_ParseWithLength((const char *)hdr, (size_t)len);
    if (!cJSON_IsObject(h)) {
        snprintf(detail, n, "the token header is not a JSON object");
        goto out;
    }
    /* RFC 7515 section 4: a header must not repeat a parameter; parsers disagree on which
     * copy counts, so a repeated one is refused outright. */
    for (const cJSON *a = h->child; a; a = a->next)
        for (const cJSON *b = a->next; b; b = b->next)
            if (strcmp(a->string, b->string) == 0) {
                snprintf(detail, n, "the token header repeats the parameter '%.32s'", a->string);
                goto out;
            }
    alg = cJSON_GetObjectItemCaseSensitive(h, "alg");
    if (!cJSON_IsString(alg) || strcmp(alg->valuestring, j->alg_name) != 0) {
        snprintf(detail, n, "the token algorithm must be %s", j->alg_name);
        goto out;
    }
    typ = cJSON_GetObjectItemCaseSensitive(h, "typ");
    if (typ && (!cJSON_IsString(typ) || strcasecmp(typ->valuestring, "JWT") != 0)) {
        snprintf(detail, n, "the token type must be JWT");
        goto out;
    }
    k = cJSON_GetObjectItemCaseSensitive(h, "kid");
    *has_kid = k != NULL;
    kid[0] = '\0';
    if (k && (!cJSON_IsString(k) || !kid_valid(k->valuestring))) {
        snprintf(detail, n, "the token key id (kid) is unknown");
        goto out;
    }
    if (k)
        snprintf(kid, CM_JWT_KID_MAX + 1, "%s", k->valuestring);
    rc = CM_OK;
out:
    cJSON_Delete(h);
    return rc;
}

static int copy_claim(jwt_t *t, const char *name, char *dst, size_t cap)
{
    const char *v = jwt_get_grant(t, name);
    if (v == NULL || *v == '\0' || strlen(v) >= cap)
        return -1;
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

static int audience_matches(jwt_t *t, const char *want)
{
    const char *s = jwt_get_grant(t, "aud");
    char *arr;
    int ok = 0;

    if (s)
        return strcmp(s, want) == 0;
    /* RFC 7519 4.1.3: aud may be an array of strings. */
    arr = jwt_get_grants_json(t, "aud");
    if (arr == NULL)
        return 0;
    cJSON *a = cJSON_Parse(arr), *it;
    cJSON_ArrayForEach(it, a) if (cJSON_IsString(it) && strcmp(it->valuestring, want) == 0) ok = 1;
    cJSON_Delete(a);
    free(arr);
    return ok;
}

/* Copies a JSON array of strings claim into a space-separated list (truncated at a whole
 * item when it does not fit). */
static void copy_list_claim(jwt_t *t, const char *name, char *dst, size_t cap)
{
    char *json = jwt_get_grants_json(t, name);
    size_t off = 0;
    cJSON *a, *it;

    dst[0] = '\0';
    if (json == NULL)
        return;
    a = cJSON_Parse(json);
    cJSON_ArrayForEach(it, a)
    {
        if (!cJSON_IsString(it) || strchr(it->valuestring, ' '))
            continue;
        int w = snprintf(dst + off, cap - off, "%s%s", off ? " " : "", it->valuestring);
        if (w < 0 || (size_t)w >= cap - off) {
            dst[off] = '\0';
            break;
        }
        off += (size_t)w;
    }
    cJSON_Delete(a);
    free(json);
}

static EVP_MD *sha256;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

/* Fetched once: an implicit fetch on every verification takes OpenSSL 3's global locks. */
static void fetch_sha256(void)
{
    sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
}

/* RS256 (RFC 7518 section 3.3): RSASSA-PKCS1-v1_5 with SHA-256 over "header.payload". */
static int rs256_valid(EVP_PKEY *pkey, const char *token)
{
    const char *dot = strrchr(token, '.');
    unsigned char sig[RSA_MAX_BYTES];
    EVP_MD_CTX *md;
    long n;
    int ok;

    pthread_once(&sha256_once, fetch_sha256);
    n = cm_base64url_decode(dot + 1, strlen(dot + 1), sig, sizeof(sig));
    if (sha256 == NULL || n <= 0 || (md = EVP_MD_CTX_new()) == NULL)
        return 0;
    ok = EVP_DigestVerifyInit(md, NULL, sha256, NULL, pkey) == 1 &&
         EVP_DigestVerify(md, sig, (size_t)n, (const unsigned char *)token,
                          (size_t)(dot - token)) == 1;
    EVP_MD_CTX_free(md);
    ERR_clear_error();
    return ok;
}

/* Checks the signature with the key the kid names, asking the refresh hook once when the kid
 * is unknown; then has libjwt parse the (now verified) token into `*out`. */
static cm_err check_signature(cm_jwt *j, const char *token, const char *kid, jwt_t **out,
                              char *detail, size_t n)
{
    cm_err rc = CM_EUNAUTH;
    int i;

    pthread_rwlock_rdlock(&j->lock);
    i = set_find(&j->set, kid);
    if (i < 0 && kid && j->refresh) {
        pthread_rwlock_unlock(&j->lock);
        if (j->refresh(j, j->refresh_ud) != CM_OK) {
            snprintf(detail, n, "the token key id (kid) is unknown");
            return CM_EUNAUTH;
        }
        pthread_rwlock_rdlock(&j->lock);
        i = set_find(&j->set, kid);
    }
    if (i < 0) {
        snprintf(detail, n, "the token key id (kid) is unknown");
        goto out;
    }
    if (!rs256_valid(j->set.keys[i].pkey, token)) {
        snprintf(detail, n, "the token signature does not verify");
        goto out;
    }
    /* No key: libjwt parses without checking the signature, which was just checked. */
    if (jwt_decode(out, token, NULL, 0) != 0 || *out == NULL) {
        snprintf(detail, n, "the token is malformed");
        goto out;
    }
    rc = CM_OK;
out:
    pthread_rwlock_unlock(&j->lock);
    return rc;
}

cm_err cm_jwt_cache_enable(cm_jwt *j, size_t entries)
{
    struct verify_cache *c;

    if (entries < CACHE_WAYS || entries > (1u << 24))
        return CM_EINVAL;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return CM_ENOMEM;
    c->nsets = entries / CACHE_WAYS;
    c->e = calloc(c->nsets * CACHE_WAYS, sizeof(*c->e));
    if (c->e == NULL) {
        free(c);
        return CM_ENOMEM;
    }
    for (int i = 0; i < CACHE_STRIPES; i++)
        pthread_mutex_init(&c->locks[i], NULL);
    j->cache = c;
    return CM_OK;
}

void cm_jwt_cache_stats(const cm_jwt *j, unsigned long *hits, unsigned long *misses)
{
    *hits = j->cache ? atomic_load(&j->cache->hits) : 0;
    *misses = j->cache ? atomic_load(&j->cache->misses) : 0;
}

/* The set of a digest and the lock guarding it. */
static struct cache_entry *cache_set(struct verify_cache *c, const unsigned char *d,
                                     pthread_mutex_t **lock)
{
    size_t h;
    memcpy(&h, d, sizeof(h));
    *lock = &c->locks[(h / c->nsets) % CACHE_STRIPES];
    return &c->e[(h % c->nsets) * CACHE_WAYS];
}

/* 1 and the claims when the token was verified under the current keys. A miss is counted only
 * when count_miss (cm_jwt_verify_cached leaves it to the cm_jwt_verify that follows). */
static int cache_get(cm_jwt *j, const unsigned char *d, cm_jwt_claims *out, int count_miss)
{
    struct verify_cache *c = j->cache;
    pthread_mutex_t *lock;
    struct cache_entry *set = cache_set(c, d, &lock);
    unsigned long gen = atomic_load(&j->key_gen);
    int hit = 0;

    pthread_mutex_lock(lock);
    for (int w = 0; w < CACHE_WAYS; w++) {
        if (set[w].valid && set[w].gen == gen && memcmp(set[w].digest, d, sizeof(set[w].digest)) == 0) {
            set[w].used = atomic_fetch_add(&c->tick, 1);
            *out = set[w].claims;
            hit = 1;
            break;
        }
    }
    pthread_mutex_unlock(lock);
    if (hit || count_miss)
        atomic_fetch_add(hit ? &c->hits : &c->misses, 1);
    return hit;
}

static void cache_put(cm_jwt *j, const unsigned char *d, unsigned long gen,
                      const cm_jwt_claims *claims)
{
    struct verify_cache *c = j->cache;
    pthread_mutex_t *lock;
    struct cache_entry *set = cache_set(c, d, &lock), *victim = &set[0];

    pthread_mutex_lock(lock);
    for (int w = 0; w < CACHE_WAYS; w++) {
        if (!set[w].valid) {
            victim = &set[w];
            break;
        }
        if (set[w].used < victim->used)
            victim = &set[w];
    }
    memcpy(victim->digest, d, sizeof(victim->digest));
    victim->gen = gen;
    victim->used = atomic_fetch_add(&c->tick, 1);
    victim->claims = *claims;
    victim->valid = 1;
    pthread_mutex_unlock(lock);
}

/* The time rules, checked again on every use of a cached verification. */
static cm_err check_times(const cm_jwt *j, const cm_jwt_claims *c, time_t now, char *detail,
                          size_t n)
{
    if (now > c->exp + j->leeway) {
        snprintf(detail, n, "the token expired");
        return CM_EUNAUTH;
    }
    if (c->nbf > 0 && now + j->leeway < c->nbf) {
        snprintf(detail, n, "the token is not valid yet (nbf)");
        return CM_EUNAUTH;
    }
    return CM_OK;
}

static cm_err verify_uncached(cm_jwt *j, const char *token, time_t now, cm_jwt_claims *claims,
                              char *detail, size_t n);

/* SHA-256 of a token, the cache's key. OpenSSL 3's one-shot SHA256() looks the algorithm up
 * (EVP_MD_fetch, with its locks) and allocates a context on every call, which cost more than
 * the hashing itself per request: the algorithm is fetched once and each thread keeps one
 * context (freed when the thread ends). Falls back to SHA256() when either cannot be had. */
static EVP_MD *digest_md;
static pthread_key_t digest_key;
static int digest_key_ok;
static pthread_once_t digest_once = PTHREAD_ONCE_INIT;

static void digest_ctx_free(void *ctx)
{
    EVP_MD_CTX_free(ctx);
}

static void digest_init(void)
{
    digest_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    digest_key_ok = pthread_key_create(&digest_key, digest_ctx_free) == 0;
}

static void token_digest(const char *token, size_t len, unsigned char d[SHA256_DIGEST_LENGTH])
{
    EVP_MD_CTX *digest_ctx = NULL;

    pthread_once(&digest_once, digest_init);
    if (digest_key_ok && digest_md != NULL &&
        (digest_ctx = pthread_getspecific(digest_key)) == NULL &&
        (digest_ctx = EVP_MD_CTX_new()) != NULL && pthread_setspecific(digest_key, digest_ctx) != 0) {
        EVP_MD_CTX_free(digest_ctx);
        digest_ctx = NULL;
    }
    if (digest_ctx == NULL || EVP_DigestInit_ex2(digest_ctx, digest_md, NULL) != 1 ||
        EVP_DigestUpdate(digest_ctx, token, len) != 1 ||
        EVP_DigestFinal_ex(digest_ctx, d, NULL) != 1)
        SHA256((const unsigned char *)token, len, d);
}

cm_err cm_jwt_verify(const cm_jwt *cj, const char *token, time_t now, cm_jwt_claims *claims,
                     char *detail, size_t n)
{
    cm_jwt *j = (cm_jwt *)cj;
    unsigned char d[SHA256_DIGEST_LENGTH];
    unsigned long gen;
    cm_jwt_claims c;

    if (j->cache == NULL || token == NULL || *token == '\0' || strlen(token) > MAX_TOKEN)
        return verify_uncached(j, token, now, claims, detail, n);
    token_digest(token, strlen(token), d);
    if (cache_get(j, d, &c, 1)) {
        if (check_times(j, &c, now, detail, n) != CM_OK)
            return CM_EUNAUTH;
        *claims = c;
        return CM_OK;
    }
    gen = atomic_load(&j->key_gen); /* before: a key change meanwhile voids the entry */
    if (verify_uncached(j, token, now, &c, detail, n) != CM_OK)
        return CM_EUNAUTH;
    cache_put(j, d, gen, &c);
    *claims = c;
    return CM_OK;
}

cm_err cm_jwt_verify_cached(const cm_jwt *cj, const char *token, time_t now,
                            cm_jwt_claims *claims, char *detail, size_t n)
{
    cm_jwt *j = (cm_jwt *)cj;
    unsigned char d[SHA256_DIGEST_LENGTH];
    cm_jwt_claims c;

    if (j->cache == NULL || token == NULL || *token == '\0' || strlen(token) > MAX_TOKEN)
        return CM_ENOTFOUND;
    token_digest(token, strlen(token), d);
    if (!cache_get(j, d, &c, 0))
        return CM_ENOTFOUND;
    if (check_times(j, &c, now, detail, n) != CM_OK)
        return CM_EUNAUTH;
    *claims = c;
    return CM_OK;
}

static cm_err verify_uncached(cm_jwt *j, const char *token, time_t now, cm_jwt_claims *claims,
                              char *detail, size_t n)
{
    jwt_t *t = NULL;
    cm_err rc = CM_EUNAUTH;
    cm_jwt_claims c;
    char kid[CM_JWT_KID_MAX + 1];
    int has_kid = 0;
    const char *iss;

    memset(&c, 0, sizeof(c));
    if (token == NULL || *token == '\0') {
        snprintf(detail, n, "no token");
        return CM_EUNAUTH;
    }
    if (strlen(token) > MAX_TOKEN) {
        snprintf(detail, n, "the token is longer than %d bytes", MAX_TOKEN);
        return CM_EUNAUTH;
    }
    if (check_header(j, token, kid, &has_kid, detail, n) != CM_OK)
        return CM_EUNAUTH;
    if (check_signature(j, token, has_kid ? kid : NULL, &t, detail, n) != CM_OK)
        return CM_EUNAUTH;
    /* Belt and braces: libjwt read the same header (without a key it reports no algorithm). */
    if (jwt_get_header(t, "alg") == NULL || strcmp(jwt_get_header(t, "alg"), j->alg_name) != 0) {
        snprintf(detail, n, "the token algorithm must be %s", j->alg_name);
        goto out;
    }
    c.exp = (time_t)jwt_get_grant_int(t, "exp");
    if (c.exp <= 0) {
        snprintf(detail, n, "the token has no exp claim");
        goto out;
    }
    if (now > c.exp + j->leeway) {
        snprintf(detail, n, "the token expired");
        goto out;
    }
    c.nbf = (time_t)jwt_get_grant_int(t, "nbf");
    if (c.nbf > 0 && now + j->leeway < c.nbf) {
        snprintf(detail, n, "the token is not valid yet (nbf)");
        goto out;
    }
    c.iat = (time_t)jwt_get_grant_int(t, "iat");
    iss = jwt_get_grant(t, "iss");
    if (iss == NULL || strcmp(iss, j->iss) != 0) {
        snprintf(detail, n, "the token issuer is not accepted");
        goto out;
    }
    if (!audience_matches(t, j->aud)) {
        snprintf(detail, n, "the token audience is not accepted");
        goto out;
    }
    if (copy_claim(t, "sub", c.sub, sizeof(c.sub)) || copy_claim(t, "tid", c.tid, sizeof(c.tid))) {
        snprintf(detail, n, "the token lacks a sub or tid claim");
        goto out;
    }
    copy_claim(t, "sid", c.sid, sizeof(c.sid));
    copy_list_claim(t, "roles", c.roles, sizeof(c.roles));
    copy_list_claim(t, "perms", c.perms, sizeof(c.perms));
    *claims = c;
    rc = CM_OK;
out:
    jwt_free(t);
    return rc;
}
