/* session.c - the revoked-session denylist in Redis, and its hook into cm_auth_bearer. */
#include "common/session.h"

#include <stdio.h>
#include <string.h>

#include "common/auth.h"

#define KEY_MAX (sizeof(CM_SESSION_SUSPENDED_PREFIX) + CM_JWT_ID_MAX)

static int key_with(const char *prefix, const char *id, char *out, size_t n)
{
    size_t len = strlen(id);
    if (len == 0 || len > CM_JWT_ID_MAX)
        return -1;
    snprintf(out, n, "%s%s", prefix, id);
    return 0;
}

static int key_for(const char *sid, char *out, size_t n)
{
    return key_with(CM_SESSION_DENY_PREFIX, sid, out, n);
}

/* Tells the copies of the denylist (CM_SESSION_CHANNEL) about a change already made, then
 * waits one more round trip so that the message has been written to every subscriber before
 * the caller acknowledges the change. */
static cm_err announce(cm_redis *r, char sign, const char *key, int64_t ttl_ms)
{
    char msg[KEY_MAX + 32];

    if (sign == '+')
        snprintf(msg, sizeof(msg), "+%s %lld", key, (long long)ttl_ms);
    else
        snprintf(msg, sizeof(msg), "-%s", key);
    if (cm_redis_publish(r, CM_SESSION_CHANNEL, msg, NULL) != CM_OK || cm_redis_ping(r) != CM_OK)
        return CM_EIO;
    return CM_OK;
}

cm_err cm_session_deny(cm_redis *r, const char *sid, int64_t ttl_ms)
{
    char key[KEY_MAX];
    cm_err rc;

    if (ttl_ms <= 0 || key_for(sid, key, sizeof(key)) != 0)
        return CM_EINVAL;
    rc = cm_redis_set(r, key, "1", ttl_ms);
    return rc != CM_OK ? rc : announce(r, '+', key, ttl_ms);
}

cm_err cm_session_check(cm_redis *r, const char *sid)
{
    char key[KEY_MAX], v[8];
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

cm_err cm_session_tenant_suspend(cm_redis *r, const char *tid, int suspended)
{
    char key[KEY_MAX];

    cm_err rc;

    if (key_with(CM_SESSION_SUSPENDED_PREFIX, tid, key, sizeof(key)) != 0)
        return CM_EINVAL;
    rc = suspended ? cm_redis_set(r, key, "1", 0) : cm_redis_del(r, key);
    return rc != CM_OK ? rc : announce(r, suspended ? '+' : '-', key, 0);
}

cm_err cm_session_check_claims(cm_redis *r, const cm_jwt_claims *c, char *detail, size_t n)
{
    char sk[KEY_MAX], tk[KEY_MAX];
    const char *keys[2];
    size_t nk = 0;
    int64_t hits = 0;
    cm_err rc;

    if (key_with(CM_SESSION_SUSPENDED_PREFIX, c->tid, tk, sizeof(tk)) != 0) {
        snprintf(detail, n, "the token names no tenant");
        return CM_EUNAUTH;
    }
    keys[nk++] = tk;
    if (c->sid[0] && key_for(c->sid, sk, sizeof(sk)) == 0)
        keys[nk++] = sk;
    rc = cm_redis_exists(r, keys, nk, &hits);
    if (rc != CM_OK)
        return CM_EIO;
    if (hits == 0)
        return CM_OK;
    /* Rare: tell which one for the answer. */
    rc = cm_session_check(r, c->sid);
    if (rc == CM_EIO)
        return CM_EIO;
    snprintf(detail, n, rc == CM_EUNAUTH ? "the session was revoked" : "the tenant is suspended");
    return CM_EUNAUTH;
}

static cm_err check(void *ud, const cm_jwt_claims *claims, char *detail, size_t n)
{
    return cm_session_check_claims(ud, claims, detail, n);
}

void cm_session_enforce(cm_redis *r)
{
    cm_auth_set_check(r ? check : NULL, r);
}
