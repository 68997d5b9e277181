/* session.h - the revoked-session denylist that every verifier consults: one Redis key
 * "revoked:sid:<sid>" per revoked session, living as long as that session's access tokens
 * can (their lifetime plus clock leeway), so a revoked session's tokens are refused at once
 * everywhere without asking the user service. */
#ifndef COMMON_SESSION_H
#define COMMON_SESSION_H

#include <stdint.h>

#include "common/error.h"
#include "common/jwt.h"
#include "common/redis.h"

#define CM_SESSION_DENY_PREFIX "revoked:sid:"

/* Adds session `sid` to the denylist for `ttl_ms` milliseconds (> 0). CM_EINVAL for an empty
 * or over-long sid (CM_JWT_ID_MAX), CM_EIO when Redis cannot be reached. */
cm_err cm_session_deny(cm_redis *r, const char *sid, int64_t ttl_ms);

/* CM_OK when session `sid` may be used (not on the denylist), CM_EUNAUTH when it was revoked,
 * CM_EIO when Redis cannot tell. A token without a sid ("") is never on the list. */
cm_err cm_session_check(cm_redis *r, const char *sid);

/* Makes cm_auth_bearer consult the denylist through `r` for every request of this process
 * (cm_auth_set_check): a revoked session answers 401 "the session was revoked", an unreachable
 * Redis 503. `r` must outlive the serving. */
void cm_session_enforce(cm_redis *r);

#endif
