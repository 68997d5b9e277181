/* jwks.h - verifiers whose keys come from a JWK Set URL (RFC 7517 section 5), fetched with
 * libcurl: once at start, again when a token names a kid the set lacks (at most once per
 * min_interval_s, so forged kids cannot turn the verifier into a request amplifier), and every
 * max_age_s in the background so retired keys go away. Kept apart from jwt.h so that only the
 * processes that fetch keys link libcurl. */
#ifndef COMMON_JWKS_H
#define COMMON_JWKS_H

#include "common/error.h"
#include "common/jwt.h"

typedef struct cm_jwks cm_jwks; /* a fetcher, owned by the verifier it feeds */

typedef struct cm_jwks_config {
    const char *url;     /* http or https URL of the JWK Set (no redirects followed) */
    long min_interval_s; /* fewest seconds between two fetches caused by unknown kids (>= 1);
                            1 s while the set is still empty */
    long max_age_s;      /* background refresh period in seconds; 0: none */
    long timeout_ms;     /* time allowed to one fetch, connection included */
} cm_jwks_config;

/* Makes `j` (usually from cm_jwt_create_keyless) take its keys from `cfg->url` (copied):
 * fetches the set now, installs the unknown-kid refresh (cm_jwt_set_refresh; `j` then owns the
 * fetcher and cm_jwt_destroy stops it) and starts the background refresh. A failed first
 * fetch is logged, not fatal: tokens are refused as "kid unknown" until a fetch succeeds.
 * `*fetcher` (may be NULL) receives the fetcher, borrowed: valid until cm_jwt_destroy(j).
 * CM_EINVAL for a URL that is not http(s) or bounds out of range, CM_ENOMEM; `j` is unchanged
 * on failure. Call before `j` is shared between threads. */
cm_err cm_jwks_attach(cm_jwt *j, const cm_jwks_config *cfg, cm_jwks **fetcher);

/* Fetches the set now, whatever the interval: CM_OK when it was fetched and taken, CM_EIO when
 * the server did not answer 200, CM_ETOOBIG over CM_JWT_JWKS_MAX, CM_EINVAL when the document
 * was refused (the keys are then unchanged). For tests and operators' reload signals. */
cm_err cm_jwks_refresh_now(cm_jwks *k);

/* Fetches made so far (successful or not), for tests and /metrics. */
long cm_jwks_fetch_count(cm_jwks *k);

/* The verifier every service builds from its environment: with JWT_JWKS_URL set, a keyless
 * verifier fed from that URL (JWT_JWKS_MIN_REFRESH_S, default 30; JWT_JWKS_MAX_AGE_S, 300;
 * JWT_JWKS_TIMEOUT_MS, 2000); otherwise cm_jwt_from_env("JWT_PUBLIC_KEY_FILE"), a path or a
 * kid=path list. JWT_ALG, JWT_ISSUER, JWT_AUDIENCE and JWT_LEEWAY_S apply to both. Errors are
 * logged. Caller frees with cm_jwt_destroy. */
cm_err cm_jwt_verifier_from_env(cm_jwt **out);

#endif
