/* user.h - the user service's shared context and the functions its files offer each other. */
#ifndef USER_H
#define USER_H

#include <stddef.h>

#include "common/http.h"
#include "common/jwt.h"
#include "common/kafka.h"
#include "common/mongo.h"
#include "common/redis.h"

/* Everything a handler needs; created in main.c, read-only afterwards. */
typedef struct user_ctx {
    cm_mongo *db;
    cm_kafka_producer *kafka;
    cm_jwt *signer;   /* key set: the newest private key mints access tokens */
    cm_jwt *verifier; /* the same key set (public halves): checks them; not owned */
    cm_redis *redis;  /* the revoked-session denylist */
    const char *admin_key; /* PLATFORM_ADMIN_KEY */
    long token_ttl_s;   /* access token lifetime (ACCESS_TOKEN_TTL_S) */
    long refresh_ttl_s; /* refresh token lifetime, renewed at each rotation */
    long leeway_s;      /* JWT_LEEWAY_S: verifiers accept a token this long past exp */
} user_ctx;

/* Collections. */
#define USER_COLL_TENANTS "tenants"
#define USER_COLL_USERS "users"
#define USER_COLL_CREDENTIALS "credentials"
#define USER_COLL_SESSIONS "sessions"
#define USER_COLL_REFRESH "refresh_tokens"
#define USER_COLL_REFRESH_USES "refresh_uses"

/* --- rules (user_rules.c), plain functions over plain data ---------------------------- */

#define USER_ID_MAX 64
#define USER_NAME_MAX 100
#define USER_USERNAME_MIN 3
#define USER_USERNAME_MAX 32
#define USER_PASSWORD_MIN 8   /* NIST SP 800-63B 5.1.1.2: at least 8 characters */
#define USER_PASSWORD_MAX 128 /* no upper limit below 128 (issue 5) */
#define USER_TENANT_NAME_MAX 100
#define USER_DEVICE_NAME_MAX 100
#define USER_UA_MAX 256 /* bytes of User-Agent kept for the session list */
#define USER_KEY_MAX (2 * CM_JWT_ID_MAX + 2) /* "<tenant>/<user id>" */

/* Lower-cases a username into `out` (size n) when it is 3..32 of [a-z0-9_.-] after lowering.
 * Returns 1 when valid, 0 otherwise. */
int user_username_normalize(const char *in, char *out, size_t n);

/* Returns NULL when `password` is acceptable, else the reason (a static string). Length is
 * counted in characters (UTF-8 code points). */
const char *user_password_problem(const char *password);

/* Parses "Basic base64(key:secret)" into key and secret (sizes kn, sn). Returns 1 on success. */
int user_parse_basic(const char *header, char *key, size_t kn, char *secret, size_t sn);

/* Hex SHA-256 of `s` into out (65 bytes). */
void user_sha256_hex(const char *s, char out[65]);

/* The _id of a user document: "<tenant>/<user id>" into `out` (size n). */
void user_key(const char *tenant, const char *id, char *out, size_t n);

/* Copies `in` into `out` (size n, truncated), replacing every byte that is not printable
 * ASCII with '?': for header values kept and shown back (User-Agent). */
void user_printable(const char *in, char *out, size_t n);

/* Returns 1 when a stored user document may sign in (its status is absent or "active"). */
int user_is_active(const bson_t *user);

/* --- roles (user_rules.c) ------------------------------------------------------------ */

#define USER_ROLE_NAME_MAX 32
#define USER_PERMS_MAX 1000 /* bytes of a space-separated permission set (the perms claim) */
#define USER_ROLES_MAX 8    /* roles one user holds */

/* Writes the permissions of a built-in role (tenant_admin, moderator, member) into `out`
 * (size n) as a space-separated list and returns 1; returns 0 for any other name. */
int user_role_builtin_perms(const char *role, char *out, size_t n);

/* Returns 1 when `name` can name a role: 1..32 of [a-z0-9_-], starting with a letter. */
int user_role_name_valid(const char *name);

/* Returns 1 when `perm` is a permission of the platform's vocabulary
 * (user_permissions_all), 0 otherwise. */
int user_permission_known(const char *perm);

/* The platform's permissions, space-separated (static). */
const char *user_permissions_all(void);

/* Adds each word of the space-separated `list` to the set `perms` (size n) unless present;
 * words that no longer fit are dropped. */
void user_perms_add_list(char *perms, size_t n, const char *list);

/* --- sessions (user_sessions.c) ------------------------------------------------------- */

/* Opens a session of `kind` ("server", "password") for the stored `user` of `tenant` and
 * answers `status` with an access token, a refresh token and the user. */
void user_session_open(cm_http_req *req, user_ctx *ctx, int status, const char *tenant,
                       const bson_t *user, const char *kind, const char *device_name);

/* Revokes active session `sid` of the user: denylisted in Redis for the access token lifetime
 * plus leeway, marked revoked in MongoDB, session.revoked published. CM_ENOTFOUND when no such
 * active session exists (another user's included), CM_EIO when Redis or MongoDB failed. */
cm_err user_session_revoke(user_ctx *ctx, const char *tenant, const char *user_id,
                           const char *sid, const char *reason);

/* Revokes every active session of the user but `except_sid` (may be NULL); `*count` (may be
 * NULL) receives how many. */
cm_err user_sessions_revoke_all(user_ctx *ctx, const char *tenant, const char *user_id,
                                const char *except_sid, const char *reason, int *count);

/* Fills the access token claims of `user` in session `sid`: sub, tid, sid, its roles and the
 * permissions they grant in the tenant. CM_EFORBIDDEN when the tenant is suspended. */
cm_err user_claims_build(user_ctx *ctx, const char *tenant, const bson_t *user, const char *sid,
                         cm_jwt_claims *c);

/* --- events (user_events.c) ------------------------------------------------------------ */

/* Publishes a CloudEvent of `type` about `user_id` on the users topic, keyed by the user id;
 * `data` is taken over. Best effort: failures are logged. */
void user_publish(user_ctx *ctx, const char *type, const char *tenant, const char *user_id,
                  cJSON *data);

/* --- handlers ------------------------------------------------------------------------- */

void user_tenants_create(cm_http_req *req, void *ud);        /* POST /v1/tenants */
void user_auth_token(cm_http_req *req, void *ud);            /* POST /v1/auth/token */
void user_auth_register(cm_http_req *req, void *ud);         /* POST /v1/auth/register */
void user_auth_login(cm_http_req *req, void *ud);            /* POST /v1/auth/login */
void user_users_me(cm_http_req *req, void *ud);              /* GET /v1/users/me */
void user_keys_jwks(cm_http_req *req, void *ud);             /* GET /.well-known/jwks.json */
void user_auth_refresh(cm_http_req *req, void *ud);          /* POST /v1/auth/refresh */
void user_auth_logout(cm_http_req *req, void *ud);           /* POST /v1/auth/logout */
void user_sessions_list(cm_http_req *req, void *ud);         /* GET /v1/sessions */
void user_sessions_revoke(cm_http_req *req, void *ud);       /* DELETE /v1/sessions/{id} */
void user_sessions_revoke_others(cm_http_req *req, void *ud); /* POST /v1/sessions/revoke-others */

/* Creates the indexes the service relies on. */
cm_err user_ensure_indexes(user_ctx *ctx);

/* Renders a stored user document as the API's User object. */
cJSON *user_to_json(const bson_t *doc);

#endif
