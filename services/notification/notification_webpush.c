/* notification_webpush.c - web push message encryption (RFC 8291 over RFC 8188's aes128gcm)
 * and VAPID (RFC 8292) through OpenSSL's EVP interface; the sender (notification_push.c)
 * makes one request per subscription with them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "common/jws.h"
#include "common/jwt.h"
#include "notification_webpush.h"

#define HEADER_LEN (16 + 4 + 1 + NF_WEBPUSH_P256DH_LEN) /* salt, rs, idlen, keyid */
#define TAG_LEN 16                                       /* AES-GCM tag */
#define VAPID_EXP_S (12 * 3600) /* RFC 8292 section 2: exp no more than 24 h ahead */

/* A P-256 key from its raw public point (65 bytes) and, when `priv` is not NULL, its 32-byte
 * private scalar; NULL when they are not a valid P-256 key. The caller frees it. */
static EVP_PKEY *p256_key(const unsigned char *pub, const unsigned char *priv)
{
    OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *c = NULL, *chk = NULL;
    EVP_PKEY *k = NULL;
    BIGNUM *bn = NULL;
    int sel = EVP_PKEY_PUBLIC_KEY;

    if (b == NULL || pub[0] != 0x04 ||
        !OSSL_PARAM_BLD_push_utf8_string(b, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
        !OSSL_PARAM_BLD_push_octet_string(b, OSSL_PKEY_PARAM_PUB_KEY, pub,
                                          NF_WEBPUSH_P256DH_LEN))
        goto out;
    if (priv != NULL) {
        if ((bn = BN_bin2bn(priv, 32, NULL)) == NULL ||
            !OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_PRIV_KEY, bn))
            goto out;
        sel = EVP_PKEY_KEYPAIR;
    }
    if ((params = OSSL_PARAM_BLD_to_param(b)) == NULL ||
        (c = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) == NULL ||
        EVP_PKEY_fromdata_init(c) <= 0 || EVP_PKEY_fromdata(c, &k, sel, params) <= 0)
        goto out;
    /* The point must be on the curve (an invalid-curve point would leak the private key's
     * bits through ECDH). */
    if ((chk = EVP_PKEY_CTX_new_from_pkey(NULL, k, NULL)) == NULL ||
        EVP_PKEY_public_check(chk) != 1) {
        EVP_PKEY_free(k);
        k = NULL;
    }
out:
    EVP_PKEY_CTX_free(chk);
    EVP_PKEY_CTX_free(c);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(b);
    BN_clear_free(bn);
    return k;
}

/* The uncompressed public point of P-256 key `k` into `pub` (65 bytes); 0 on failure. */
static int p256_public(EVP_PKEY *k, unsigned char pub[NF_WEBPUSH_P256DH_LEN])
{
    char group[32];
    size_t len = 0;
    if (!EVP_PKEY_is_a(k, "EC") ||
        !EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                        NULL) ||
        (strcmp(group, "prime256v1") != 0 && strcmp(group, "P-256") != 0))
        return 0;
    return EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, pub,
                                           NF_WEBPUSH_P256DH_LEN, &len) == 1 &&
           len == NF_WEBPUSH_P256DH_LEN && pub[0] == 0x04;
}

/* HKDF-SHA256 (RFC 5869, extract then expand) of `ikm` with `salt` and `info` into
 * `out[0..outl)`; 0 on failure. */
static int hkdf(const unsigned char *salt, size_t saltl, const unsigned char *ikm, size_t ikml,
                const unsigned char *info, size_t infol, unsigned char *out, size_t outl)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
    int ok = c != NULL && EVP_PKEY_derive_init(c) > 0 &&
             EVP_PKEY_CTX_set_hkdf_md(c, EVP_sha256()) > 0 &&
             EVP_PKEY_CTX_set1_hkdf_salt(c, salt, (int)saltl) > 0 &&
             EVP_PKEY_CTX_set1_hkdf_key(c, ikm, (int)ikml) > 0 &&
             EVP_PKEY_CTX_add1_hkdf_info(c, info, (int)infol) > 0 &&
             EVP_PKEY_derive(c, out, &outl) > 0;
    EVP_PKEY_CTX_free(c);
    return ok;
}

static int b64_exact(const char *s, unsigned char *out, size_t want)
{
    return cm_base64url_decode(s, strlen(s), out, want) == (long)want;
}

int nf_webpush_keys_valid(const char *p256dh, const char *auth, char *why, size_t n)
{
    unsigned char pub[NF_WEBPUSH_P256DH_LEN + 1], secret[NF_WEBPUSH_AUTH_LEN + 1];
    EVP_PKEY *k;

    if (cm_base64url_decode(p256dh, strlen(p256dh), pub, sizeof(pub)) !=
            NF_WEBPUSH_P256DH_LEN ||
        (k = p256_key(pub, NULL)) == NULL) {
        snprintf(why, n, "field 'subscription.keys.p256dh' must be the base64url of an "
                         "uncompressed P-256 point (65 bytes)");
        return 0;
    }
    EVP_PKEY_free(k);
    if (cm_base64url_decode(auth, strlen(auth), secret, sizeof(secret)) != NF_WEBPUSH_AUTH_LEN) {
        snprintf(why, n, "field 'subscription.keys.auth' must be the base64url of 16 bytes");
        return 0;
    }
    return 1;
}

int nf_webpush_endpoint_valid(const char *url)
{
    size_t len = strlen(url), scheme;
    if (len == 0 || len > NF_WEBPUSH_ENDPOINT_MAX)
        return 0;
    if (strncasecmp(url, "https://", 8) == 0)
        scheme = 8;
    else if (strncasecmp(url, "http://", 7) == 0)
        scheme = 7;
    else
        return 0;
    if (url[scheme] == '\0' || url[scheme] == '/')
        return 0; /* no host */
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)url[i] < 0x21 || (unsigned char)url[i] > 0x7e)
            return 0;
    return 1;
}

cm_err nf_webpush_encrypt_with(const unsigned char ua_public[NF_WEBPUSH_P256DH_LEN],
                               const unsigned char auth[NF_WEBPUSH_AUTH_LEN],
                               const unsigned char as_private[32],
                               const unsigned char as_public[NF_WEBPUSH_P256DH_LEN],
                               const unsigned char salt[16], const unsigned char *plain,
                               size_t n, unsigned char **out, size_t *out_len)
{
    static const char KEY_INFO[] = "WebPush: info";            /* RFC 8291 section 3.4 */
    static const char CEK_INFO[] = "Content-Encoding: aes128gcm"; /* RFC 8188 section 2.2 */
    static const char NONCE_INFO[] = "Content-Encoding: nonce";   /* RFC 8188 section 2.3 */
    unsigned char key_info[sizeof(KEY_INFO) + 2 * NF_WEBPUSH_P256DH_LEN], secret[32], ikm[32],
        cek[16], nonce[12], *msg = NULL, *rec = NULL;
    EVP_PKEY *ua = NULL, *as = NULL;
    EVP_PKEY_CTX *dc = NULL;
    EVP_CIPHER_CTX *cc = NULL;
    size_t slen = sizeof(secret), total;
    int outl = 0, finl = 0;
    cm_err rc = CM_EINVAL;

    if (n > NF_WEBPUSH_PLAIN_MAX)
        return CM_EINVAL;
    if ((ua = p256_key(ua_public, NULL)) == NULL || (as = p256_key(as_public, as_private)) == NULL)
        goto out;
    rc = CM_EIO;
    /* ecdh_secret = ECDH(as_private, ua_public) */
    if ((dc = EVP_PKEY_CTX_new_from_pkey(NULL, as, NULL)) == NULL ||
        EVP_PKEY_derive_init(dc) <= 0 || EVP_PKEY_derive_set_peer(dc, ua) <= 0 ||
        EVP_PKEY_derive(dc, secret, &slen) <= 0 || slen != sizeof(secret))
        goto out;
    /* IKM = HKDF(salt = auth_secret, ecdh_secret, "WebPush: info" 0x00 ua_public as_public) */
    memcpy(key_info, KEY_INFO, sizeof(KEY_INFO)); /* with its NUL: the 0x00 separator */
    memcpy(key_info + sizeof(KEY_INFO), ua_public, NF_WEBPUSH_P256DH_LEN);
    memcpy(key_info + sizeof(KEY_INFO) + NF_WEBPUSH_P256DH_LEN, as_public,
           NF_WEBPUSH_P256DH_LEN);
    if (!hkdf(auth, NF_WEBPUSH_AUTH_LEN, secret, slen, key_info, sizeof(key_info), ikm,
              sizeof(ikm)) ||
        !hkdf(salt, 16, ikm, sizeof(ikm), (const unsigned char *)CEK_INFO, sizeof(CEK_INFO), cek,
              sizeof(cek)) ||
        !hkdf(salt, 16, ikm, sizeof(ikm), (const unsigned char *)NONCE_INFO, sizeof(NONCE_INFO),
              nonce, sizeof(nonce)))
        goto out;
    /* One record: the plaintext and the last-record delimiter 0x02 (no padding). */
    total = HEADER_LEN + n + 1 + TAG_LEN;
    rc = CM_ENOMEM;
    if ((msg = malloc(total)) == NULL || (rec = malloc(n + 1)) == NULL)
        goto out;
    memcpy(rec, plain, n);
    rec[n] = 0x02;
    memcpy(msg, salt, 16);
    msg[16] = (unsigned char)(NF_WEBPUSH_RS >> 24);
    msg[17] = (unsigned char)(NF_WEBPUSH_RS >> 16);
    msg[18] = (unsigned char)(NF_WEBPUSH_RS >> 8);
    msg[19] = (unsigned char)NF_WEBPUSH_RS;
    msg[20] = NF_WEBPUSH_P256DH_LEN;
    memcpy(msg + 21, as_public, NF_WEBPUSH_P256DH_LEN);
    rc = CM_EIO;
    if ((cc = EVP_CIPHER_CTX_new()) == NULL ||
        EVP_EncryptInit_ex(cc, EVP_aes_128_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(cc, EVP_CTRL_GCM_SET_IVLEN, (int)sizeof(nonce), NULL) != 1 ||
        EVP_EncryptInit_ex(cc, NULL, NULL, cek, nonce) != 1 ||
        EVP_EncryptUpdate(cc, msg + HEADER_LEN, &outl, rec, (int)(n + 1)) != 1 ||
        EVP_EncryptFinal_ex(cc, msg + HEADER_LEN + outl, &finl) != 1 ||
        (size_t)(outl + finl) != n + 1 ||
        EVP_CIPHER_CTX_ctrl(cc, EVP_CTRL_GCM_GET_TAG, TAG_LEN, msg + HEADER_LEN + n + 1) != 1)
        goto out;
    *out = msg;
    *out_len = total;
    msg = NULL;
    rc = CM_OK;
out:
    OPENSSL_cleanse(secret, sizeof(secret));
    OPENSSL_cleanse(ikm, sizeof(ikm));
    OPENSSL_cleanse(cek, sizeof(cek));
    EVP_CIPHER_CTX_free(cc);
    EVP_PKEY_CTX_free(dc);
    EVP_PKEY_free(ua);
    EVP_PKEY_free(as);
    free(msg);
    if (rec)
        OPENSSL_cleanse(rec, n + 1);
    free(rec);
    return rc;
}

cm_err nf_webpush_encrypt(const char *p256dh, const char *auth, const unsigned char *plain,
                          size_t n, unsigned char **out, size_t *out_len)
{
    unsigned char ua_public[NF_WEBPUSH_P256DH_LEN], secret[NF_WEBPUSH_AUTH_LEN],
        as_public[NF_WEBPUSH_P256DH_LEN], as_private[32], salt[16];
    EVP_PKEY *as = NULL;
    BIGNUM *priv = NULL;
    cm_err rc = CM_EINVAL;

    if (!b64_exact(p256dh, ua_public, sizeof(ua_public)) ||
        !b64_exact(auth, secret, sizeof(secret)))
        return CM_EINVAL;
    rc = CM_EIO;
    /* A fresh ephemeral key and salt per message (RFC 8291 section 3.1; RFC 8188 section
     * 2.1: a salt must not be reused with the same key). */
    if ((as = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256")) == NULL || !p256_public(as, as_public) ||
        !EVP_PKEY_get_bn_param(as, OSSL_PKEY_PARAM_PRIV_KEY, &priv) ||
        BN_bn2binpad(priv, as_private, sizeof(as_private)) != (int)sizeof(as_private) ||
        RAND_bytes(salt, sizeof(salt)) != 1)
        goto out;
    rc = nf_webpush_encrypt_with(ua_public, secret, as_private, as_public, salt, plain, n, out,
                                 out_len);
out:
    OPENSSL_cleanse(as_private, sizeof(as_private));
    BN_clear_free(priv);
    EVP_PKEY_free(as);
    return rc;
}

cm_err nf_webpush_vapid(const char *pem, size_t len, const char *endpoint, const char *subject,
                        int64_t now_s, char *out, size_t n)
{
    unsigned char pub[NF_WEBPUSH_P256DH_LEN];
    char k[100], aud[NF_WEBPUSH_ENDPOINT_MAX + 1], *jwt = NULL;
    const char *host, *slash;
    BIO *bio = NULL;
    EVP_PKEY *key = NULL;
    cJSON *claims = NULL;
    int w;
    cm_err rc = CM_EINVAL;

    /* aud is the origin of the push resource: scheme "://" host [":" port]. */
    if ((host = strstr(endpoint, "://")) == NULL || host[3] == '\0')
        return CM_EINVAL;
    slash = strchr(host + 3, '/');
    w = snprintf(aud, sizeof(aud), "%.*s",
                 (int)(slash ? (size_t)(slash - endpoint) : strlen(endpoint)), endpoint);
    if (w < 0 || (size_t)w >= sizeof(aud))
        return CM_EINVAL;
    if ((bio = BIO_new_mem_buf(pem, (int)len)) == NULL ||
        (key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)) == NULL || !p256_public(key, pub) ||
        cm_base64url_encode(pub, sizeof(pub), k, sizeof(k)) < 0)
        goto out;
    rc = CM_ENOMEM;
    if ((claims = cJSON_CreateObject()) == NULL ||
        cJSON_AddStringToObject(claims, "aud", aud) == NULL ||
        cJSON_AddNumberToObject(claims, "exp", (double)(now_s + VAPID_EXP_S)) == NULL ||
        cJSON_AddStringToObject(claims, "sub", subject) == NULL)
        goto out;
    if ((rc = cm_jws_sign("ES256", pem, len, NULL, claims, &jwt)) != CM_OK)
        goto out;
    w = snprintf(out, n, "vapid t=%s, k=%s", jwt, k);
    rc = w < 0 || (size_t)w >= n ? CM_ETOOBIG : CM_OK;
out:
    cJSON_Delete(claims);
    free(jwt);
    EVP_PKEY_free(key);
    BIO_free(bio);
    return rc;
}
