/* auth.h - the one place a service turns a request's bearer token into verified claims. */
#ifndef COMMON_AUTH_H
#define COMMON_AUTH_H

#include "common/http.h"
#include "common/jwt.h"

/* Reads "Authorization: Bearer <token>", verifies it with `verifier` at the current time and
 * fills `*claims`. On failure it has already answered 401 problem+json with the precise reason
 * and returns CM_EUNAUTH; the handler then just returns. */
cm_err cm_auth_bearer(cm_http_req *req, const cm_jwt *verifier, cm_jwt_claims *claims);

#define CM_USER_ID_MAX 64

/* Returns 1 when `id` is a well-formed user id: 1..64 of [A-Za-z0-9_.@-] (the one rule every
 * service applies to ids chosen by tenants), 0 otherwise. */
int cm_user_id_valid(const char *id);

/* Returns 1 when the space-separated `roles` holds `role`, 0 otherwise. */
int cm_auth_has_role(const cm_jwt_claims *claims, const char *role);

#endif
