/* session.c - the revoked-session denylist in Redis, and its hook into cm_auth_bearer. */
#include "common/session.h"

#include <stdio.h>
#include <string.h>

#include "common/auth.h"

static int key_for(const char *sid, char *out, size_t n)
{
    size_t len = strlen(sid);
    if (len == 0 || len > CM_JWT_ID_MAX)
        return -1;
    snprintf(out, n, "%s%s", CM_SESSION_DENY_PREFIX, sid);
    return 0;
}

cm_err cm_session_deny(cm_redis *r, const char *sid, int64_t ttl_ms)
{
    char key[sizeof(CM_SESSION_DENY_PREFIX) + CM_JWT_ID_MAX];

    if (ttl_ms <= 0 || key_for(sid, key, sizeof(key)) != 0)
        return CM_EINVAL;
    return cm_redis_set(r, key, "1", ttl_ms);
}

cm_err cm_session_check(cm_redis *r, const char *sid)
{
    char key[sizeof(CM_SESSION_DENY_PREFIX) + CM_JWT_ID_MAX], v[8];
    cm_err rc;

    if (sid[0] == '\0')
        return CM_OK;
    if (key_for(sid, key, sizeof(key)) != 0)
        return CM_EUNAUTH; /* a verified token never carries such a sid */
    rc = cm_redis_get(r, key, v, sizeof(v));
    if (rc == CM_ENOTFOUND)
        return CM_OK;
    if (rc == CM_OK || rc == CM_ETOOBIG)
        return CM_EUNAUTH;
    return CM_EIO;
}

static cm_err check(void *ud, const cm_jwt_claims *claims, char *detail, size_t n)
{
    cm_err rc = cm_session_check(ud, claims->sid);
    if (rc == CM_EUNAUTH)
        snprintf(detail, n, "the session was revoked");
    return rc;
}

void cm_session_enforce(cm_redis *r)
{
    cm_auth_set_check(r ? check : NULL, r);
}
