/* jwt.h - issuing and verifying access tokens (RFC 7519 JWTs signed per RFC 7518).
 * The algorithm is pinned by configuration and compared with the token header before the
 * signature is checked (RFC 8725 section 3.1: never let the token pick its algorithm);
 * exp, nbf, iss, aud, sub and tid are checked here, libjwt checks signatures only. */
#ifndef COMMON_JWT_H
#define COMMON_JWT_H

#include <stddef.h>
#include <time.h>

#include "common/error.h"

#define CM_JWT_ID_MAX 128 /* bytes of sub, tid, sid (without the NUL) */

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
    time_t iat, nbf, exp;        /* Unix seconds */
} cm_jwt_claims;

/* Creates a signer or verifier from `cfg` (everything copied). CM_EINVAL for an empty key,
 * an algorithm other than RS256, or missing issuer/audience. */
cm_err cm_jwt_create(const cm_jwt_config *cfg, cm_jwt **out);
void cm_jwt_destroy(cm_jwt *j); /* accepts NULL */

/* Creates a signer or verifier whose key is the PEM file named by the variable `key_var`
 * (JWT_PRIVATE_KEY_FILE or JWT_PUBLIC_KEY_FILE), with JWT_ALG (RS256), JWT_ISSUER
 * (chat-platform), JWT_AUDIENCE (chat-api), JWT_KID (k1) and JWT_LEEWAY_S (30).
 * CM_ENOTFOUND when the variable is unset; other errors are logged. */
cm_err cm_jwt_from_env(const char *key_var, cm_jwt **out);

/* Signs `claims` (iat = now, nbf = now, exp = now + ttl_s, plus iss, aud, jti and kid) into a
 * heap string `*token` that the caller frees with free(). `j` must hold a private key.
 * CM_EINVAL for empty sub/tid, CM_EINTERNAL when signing fails. */
cm_err cm_jwt_sign(const cm_jwt *j, const cm_jwt_claims *claims, time_t now, long ttl_s,
                   char **token);

/* Verifies `token` at time `now`. On success fills `*claims`. On failure returns CM_EUNAUTH
 * and a precise reason in `detail` (size `n`): malformed, wrong algorithm, bad signature,
 * expired, not yet valid, wrong issuer, wrong audience, missing claim. Thread-safe. */
cm_err cm_jwt_verify(const cm_jwt *j, const char *token, time_t now, cm_jwt_claims *claims,
                     char *detail, size_t n);

/* Decodes base64url (RFC 4648 section 5, no padding) `in[0..len)` into `out` (size `cap`).
 * Returns the decoded length, or -1 when malformed or too big. */
long cm_base64url_decode(const char *in, size_t len, unsigned char *out, size_t cap);

/* Encodes `in[0..len)` as base64url without padding into `out` (size `cap`, NUL-terminated).
 * Returns the encoded length, or -1 when it (with the NUL) does not fit. */
long cm_base64url_encode(const unsigned char *in, size_t len, char *out, size_t cap);

#endif
