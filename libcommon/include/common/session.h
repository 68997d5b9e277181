/* session.h - the denylist that every verifier consults: one Redis key "revoked:sid:<sid>"
 * per revoked session, living as long as that session's access tokens can (their lifetime
 * plus clock leeway), and one key "suspended:tid:<tid>" per suspended tenant, living until
 * the tenant is resumed. A revoked session's or suspended tenant's tokens are then refused at
 * once everywhere without asking the user service; both are checked in one round trip. */
#ifndef COMMON_SESSION_H
#define COMMON_SESSION_H

#include <stdint.h>

#include "common/error.h"
#include "common/jwt.h"
#include "common/redis.h"

#define CM_SESSION_DENY_PREFIX "revoked:sid:"
#define CM_SESSION_SUSPENDED_PREFIX "suspended:tid:"

/* Every change of the denylist is also published on this channel, for processes that keep a
 * copy of it (the gateway): "+<key> <ttl_ms>" when a key is set (ttl_ms 0: no expiry),
 * "-<key>" when one is deleted. The writer sets the key, publishes, then makes one more round
 * trip (PING) before it returns: Redis writes a published message to its subscribers in the
 * event-loop turn that ran PUBLISH, before any later command's reply, so once a change is
 * acknowledged its message is already in every subscriber's socket. */
#define CM_SESSION_CHANNEL "denylist"

/* Adds session `sid` to the denylist for `ttl_ms` milliseconds (> 0), and publishes it on
 * CM_SESSION_CHANNEL. CM_EINVAL for an empty or over-long sid (CM_JWT_ID_MAX), CM_EIO when Redis
 * cannot be reached. */
cm_err cm_session_deny(cm_redis *r, const char *sid, int64_t ttl_ms);

/* CM_OK when session `sid` may be used (not on the denylist), CM_EUNAUTH when it was revoked,
 * CM_EIO when Redis cannot tell. A token without a sid ("") is never on the list. */
cm_err cm_session_check(cm_redis *r, const char *sid);

/* Marks tenant `tid` suspended (no expiry) or, with `suspended` 0, resumed, and publishes it on
 * CM_SESSION_CHANNEL. CM_EINVAL for an empty or over-long id, CM_EIO when Redis cannot be
 * reached. */
cm_err cm_session_tenant_suspend(cm_redis *r, const char *tid, int suspended);

/* The check of a token's claims: CM_OK, or CM_EUNAUTH with the reason in `detail` (size n:
 * "the session was revoked", "the tenant is suspended"), or CM_EIO when Redis cannot tell.
 * One round trip. */
cm_err cm_session_check_claims(cm_redis *r, const cm_jwt_claims *c, char *detail, size_t n);

/* Makes cm_auth_bearer consult the denylist through `r` for every request of this process
 * (cm_auth_set_check) with cm_session_check_claims: a revoked session or suspended tenant
 * answers 401, an unreachable Redis 503. `r` must outlive the serving. */
void cm_session_enforce(cm_redis *r);

#endif
