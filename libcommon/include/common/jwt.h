/* jwt.h - issuing and verifying access tokens (RFC 7519 JWTs signed per RFC 7518).
 * The algorithm is pinned by configuration and compared with the token header before the
 * signature is checked (RFC 8725 section 3.1: never let the token pick its algorithm);
 * exp, nbf, iss, aud, sub and tid are checked here. Signatures are made by libjwt and checked
 * by OpenSSL (EVP_DigestVerify) with each key parsed once; libjwt parses verified tokens.
 *
 * A cm_jwt holds a key set: RSA keys (2048 bits or more, RFC 7518 section 3.3) each named by
 * a key id (`kid`, RFC 7515 section 4.1.4), oldest first. It signs with the newest key and
 * verifies with the key the token's `kid` names, so keys rotate without a flag day: a new key
 * signs while the old one still verifies the tokens it issued until they expire. The public
 * halves are published as a JWK Set (RFC 7517 section 5) and a verifier can be fed one. */
#ifndef COMMON_JWT_H
#define COMMON_JWT_H

#include <stddef.h>
#include <time.h>

#include "common/error.h"

#define CM_JWT_ID_MAX 128 /* bytes of sub, tid, sid (without the NUL) */
#define CM_JWT_KID_MAX 64 /* bytes of a key id: 1..64 of [A-Za-z0-9._-] */
#define CM_JWT_KEYS_MAX 16 /* keys in one set (published, rotating and retiring ones) */
#define CM_JWT_JWKS_MAX (64 * 1024) /* bytes of a JWK Set document accepted */

typedef struct cm_jwt cm_jwt;

typedef struct cm_jwt_config {
    const char *alg;        /* pinned algorithm: "RS256" (others refused at create) */
    const char *key;        /* PEM: private key to sign, public key to verify */
    size_t key_len;         /* bytes of key; 0 is refused */
    const char *kid;        /* key id written into and expected in headers (may be NULL) */
    const char *issuer;     /* iss written and required */
    const char *audience;   /* aud written and required */
    long leeway_s;          /* clock skew tolerated on exp and nbf, seconds */
} cm_jwt_config;

/* The claims the platform puts in an access token. */
typedef struct cm_jwt_claims {
    char sub[CM_JWT_ID_MAX + 1]; /* user id */
    char tid[CM_JWT_ID_MAX + 1]; /* tenant id */
    char sid[CM_JWT_ID_MAX + 1]; /* session id */
    char roles[256];             /* space-separated roles, e.g. "member" */
    char perms[1024];            /* space-separated permissions the roles grant (cm_auth_can) */
    time_t iat, nbf, exp;        /* Unix seconds */
} cm_jwt_claims;

/* Creates a signer or verifier from `cfg` (everything copied) holding one key, `cfg->key`:
 * a PEM RSA private key (PKCS#8 or PKCS#1; signs and verifies) or public key
 * (SubjectPublicKeyInfo; verifies only), named `cfg->kid` (NULL: tokens carry no kid).
 * CM_EINVAL for an empty or unreadable key, an RSA key under 2048 bits, another key type,
 * an algorithm other than RS256, missing issuer/audience, or a malformed kid. */
cm_err cm_jwt_create(const cm_jwt_config *cfg, cm_jwt **out);

/* Like cm_jwt_create with an empty key set (cfg->key is ignored): a verifier whose keys come
 * later from cm_jwt_add_key or cm_jwt_set_jwks. Until then every token is refused with
 * "the token key id (kid) is unknown". */
cm_err cm_jwt_create_keyless(const cm_jwt_config *cfg, cm_jwt **out);

/* Frees the signer or verifier, and the refresh hook's state (see cm_jwt_set_refresh).
 * Accepts NULL. */
void cm_jwt_destroy(cm_jwt *j);

/* Adds a PEM key (private or public, as for cm_jwt_create) named `kid` as the newest key of
 * the set, so the next cm_jwt_sign uses it. `pem` is copied. CM_EINVAL for a bad key or kid,
 * CM_ECONFLICT when the set already has that kid, CM_ETOOBIG past CM_JWT_KEYS_MAX keys,
 * CM_ENOMEM; the set is unchanged on failure. Thread-safe against concurrent verifies. */
cm_err cm_jwt_add_key(cm_jwt *j, const char *kid, const char *pem, size_t len);

/* Replaces the key set with the keys of the JWK Set `json[0..len)` (RFC 7517 section 5).
 * Keys with "kty":"RSA", a kid, base64url "n" and "e" (RFC 7518 section 6.3.1), "use" absent
 * or "sig" and "alg" absent or the pinned algorithm are taken; keys of other types, uses or
 * algorithms are skipped (RFC 7517 section 5: ignore what is not understood). CM_EINVAL with
 * the reason in `detail` (size n) when the document is not a JWK Set, is larger than
 * CM_JWT_JWKS_MAX, holds a malformed or short (< 2048 bits) RSA key, a duplicate kid, more than
 * CM_JWT_KEYS_MAX usable keys, or no usable key at all; the set is then unchanged.
 * Writes the number of keys taken to `*nkeys` (may be NULL). Thread-safe. */
cm_err cm_jwt_set_jwks(cm_jwt *j, const char *json, size_t len, int *nkeys, char *detail,
                       size_t n);

/* Writes the public halves of the key set as a JWK Set, oldest first:
 * {"keys":[{"kty":"RSA","use":"sig","alg":"RS256","kid":...,"n":...,"e":...}]}
 * into a heap string `*out` (caller frees with free()). Keys without a kid are left out.
 * CM_ENOMEM on failure. */
cm_err cm_jwt_jwks(const cm_jwt *j, char **out);

/* Number of keys in the set. */
int cm_jwt_key_count(const cm_jwt *j);

/* Called by cm_jwt_verify when a token names a kid the set does not hold, before refusing
 * it: the hook may replace the keys (cm_jwt_set_jwks) and returns CM_OK when it did, after
 * which the kid is looked up again once. The hook rate-limits itself; it runs on the
 * verifying thread, outside the key set's lock. */
typedef cm_err (*cm_jwt_refresh_fn)(cm_jwt *j, void *ud);

/* Installs the refresh hook; `free_ud` (may be NULL) is called with `ud` by cm_jwt_destroy,
 * so the verifier owns the hook's state. Call before the verifier is shared between threads. */
void cm_jwt_set_refresh(cm_jwt *j, cm_jwt_refresh_fn fn, void *ud, void (*free_ud)(void *ud));

/* Creates a keyless verifier (cm_jwt_create_keyless) from JWT_ALG (RS256), JWT_ISSUER
 * (chat-platform), JWT_AUDIENCE (chat-api) and JWT_LEEWAY_S (30). CM_EINVAL (logged) when
 * they are refused. */
cm_err cm_jwt_keyless_from_env(cm_jwt **out);

/* Creates a signer or verifier from the variable `key_var` (JWT_PRIVATE_KEY_FILE or
 * JWT_PUBLIC_KEY_FILE), with JWT_ALG (RS256), JWT_ISSUER (chat-platform), JWT_AUDIENCE
 * (chat-api), JWT_KID (k1) and JWT_LEEWAY_S (30). The variable holds either the path of one
 * PEM file, named JWT_KID, or a key list "kid=path,kid=path,..." from the oldest to the
 * newest key (the newest signs; retiring a key means taking it off the list). In the list
 * form paths must not contain ','. CM_ENOTFOUND when the variable is unset; other errors
 * are logged. */
cm_err cm_jwt_from_env(const char *key_var, cm_jwt **out);

/* Signs `claims` (iat = now, nbf = now, exp = now + ttl_s, plus iss, aud, jti and kid) with
 * the newest key of the set into a heap string `*token` that the caller frees with free().
 * CM_EINVAL for empty sub/tid, CM_EINTERNAL when the newest key is public only or signing
 * fails. */
cm_err cm_jwt_sign(const cm_jwt *j, const cm_jwt_claims *claims, time_t now, long ttl_s,
                   char **token);

/* Verifies `token` at time `now` with the key its header's kid names (a token without a kid
 * only matches a key configured without one). On success fills `*claims`. On failure returns
 * CM_EUNAUTH and a precise reason in `detail` (size `n`): malformed, wrong algorithm, unknown
 * kid, bad signature, expired, not yet valid, wrong issuer, wrong audience, missing claim.
 * Thread-safe, also while the key set is being replaced. */
cm_err cm_jwt_verify(const cm_jwt *j, const char *token, time_t now, cm_jwt_claims *claims,
                     char *detail, size_t n);

/* Makes cm_jwt_verify remember up to `entries` (4 or more; rounded down to a multiple of 4)
 * tokens it verified, keyed by the SHA-256 of the token, least recently used first out (per
 * set of 4): a token seen again is not decoded nor its signature checked again, only exp and
 * nbf against `now`. Any key change (cm_jwt_add_key, cm_jwt_set_jwks) voids every entry.
 * Refusals are never cached. For the gateway, which sees the same token on every request of a
 * client; revocation is checked by the caller (cm_session) on each use as before. Call before
 * the verifier is shared between threads. CM_EINVAL for a size out of [4, 2^24], CM_ENOMEM. */
cm_err cm_jwt_cache_enable(cm_jwt *j, size_t entries);

/* cm_jwt_verify answered from the cache only: CM_OK with `*claims` when `token` was verified
 * before and its times still hold, CM_EUNAUTH (reason in `detail`) when they no longer do,
 * CM_ENOTFOUND when it is not in the cache (or there is none), without checking a signature:
 * a caller can then do cheap work (a rate limit by address) before the full cm_jwt_verify.
 * Counts a hit like cm_jwt_verify; a miss is left to the cm_jwt_verify the caller makes next. */
cm_err cm_jwt_verify_cached(const cm_jwt *j, const char *token, time_t now,
                            cm_jwt_claims *claims, char *detail, size_t n);

/* The cache's hits and misses so far (0 and 0 without a cache). */
void cm_jwt_cache_stats(const cm_jwt *j, unsigned long *hits, unsigned long *misses);

/* Decodes base64url (RFC 4648 section 5, no padding) `in[0..len)` into `out` (size `cap`).
 * Returns the decoded length, or -1 when malformed or too big. */
long cm_base64url_decode(const char *in, size_t len, unsigned char *out, size_t cap);

/* Encodes `in[0..len)` as base64url without padding into `out` (size `cap`, NUL-terminated).
 * Returns the encoded length, or -1 when it (with the NUL) does not fit. */
long cm_base64url_encode(const unsigned char *in, size_t len, char *out, size_t cap);

#endif
