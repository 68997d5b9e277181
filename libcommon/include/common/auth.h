/* auth.h - the one place a service turns a request's bearer token into verified claims. */
#ifndef COMMON_AUTH_H
#define COMMON_AUTH_H

#include "common/http.h"
#include "common/jwt.h"

/* Reads "Authorization: Bearer <token>", verifies it with `verifier` at the current time,
 * runs the process's check (cm_auth_set_check; the revoked-session denylist of session.h)
 * and fills `*claims`. On failure it has already answered (401 problem+json with the precise
 * reason, or 503 when the check's store is unreachable: a revocation that cannot be ruled
 * out is not waved through) and returns CM_EUNAUTH or CM_EIO; the handler then just returns. */
cm_err cm_auth_bearer(cm_http_req *req, const cm_jwt *verifier, cm_jwt_claims *claims);

/* A check cm_auth_bearer runs after the signature and claims verified: CM_OK lets the request
 * through, CM_EUNAUTH refuses it with the reason written to `detail` (size n), CM_EIO (or any
 * other error) answers 503. */
typedef cm_err (*cm_auth_check_fn)(void *ud, const cm_jwt_claims *claims, char *detail,
                                   size_t n);

/* Installs the process-wide check (NULL removes it). Call at start-up, before serving. */
void cm_auth_set_check(cm_auth_check_fn fn, void *ud);

#define CM_USER_ID_MAX 64

/* Returns 1 when `id` is a well-formed user id: 1..64 of [A-Za-z0-9_.@-] (the one rule every
 * service applies to ids chosen by tenants), 0 otherwise. */
int cm_user_id_valid(const char *id);

/* Returns 1 when the space-separated `roles` holds `role`, 0 otherwise. */
int cm_auth_has_role(const cm_jwt_claims *claims, const char *role);

/* Returns 1 when the token's permissions (the `perms` claim, granted by its roles when it was
 * minted) include `perm` or the wildcard "*", 0 otherwise. The one permission check of the
 * platform: services call it with the permission an action needs ("message.delete.any"). */
int cm_auth_can(const cm_jwt_claims *claims, const char *perm);

#endif
