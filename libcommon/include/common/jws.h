/* jws.h - signing JSON Web Tokens for third parties (RFC 7515 compact serialisation), with
 * any claims: the OAuth 2.0 service-account assertion Google's token endpoint exchanges for an
 * access token (RFC 7523, RS256) and Apple's APNs provider token (ES256 over P-256). Access
 * tokens of the platform itself are made by jwt.h, which pins their claims. libjwt signs. */
#ifndef COMMON_JWS_H
#define COMMON_JWS_H

#include <stddef.h>

#include <cJSON.h>

#include "common/error.h"

/* Signs `claims` (a JSON object; copied as given) with `alg` ("RS256": a PEM RSA private key;
 * "ES256": a PEM P-256 private key, PKCS#8 as Apple issues it) from `pem[0..pem_len)`, with
 * header {"alg", "typ":"JWT"} and, when `kid` is not NULL, "kid". The token is a heap string
 * `*out` (caller frees with free()). CM_EINVAL for another algorithm, an empty or unreadable
 * key, or claims that are not an object; CM_ENOMEM. */
cm_err cm_jws_sign(const char *alg, const char *pem, size_t pem_len, const char *kid,
                   const cJSON *claims, char **out);

#endif
