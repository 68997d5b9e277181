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
#define USER_COLL_API_KEYS "api_keys"

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

/* --- tenant settings (user_rules.c) ---------------------------------------------------- */

#define USER_ORIGINS_MAX 20
#define USER_ORIGIN_MAX 255
#define USER_WEBHOOK_SECRET_MIN 32
#define USER_WEBHOOK_SECRET_MAX 128

/* A tenant's settings, each with its default and bounds (user_settings_defaults). */
typedef struct user_settings {
    int self_registration;  /* end users may register with a password (false) */
    long send_rate_per_min; /* messages one user may send per minute, 1..100000 (60) */
    long api_rate_per_min;  /* API requests one user may make per minute, 1..1000000 (1200) */
    long message_max_chars; /* characters of a message text, 1..20000 (5000) */
    long group_member_max;  /* members of a group conversation, 2..100000 (1000) */
    long edit_window_s;     /* seconds a message stays editable, 0 (never)..604800 (900) */
    long retention_days;    /* days messages are kept, 0 (forever)..3650 (0) */
    int n_origins;          /* browser origins allowed to open WebSockets (none) */
    char origins[USER_ORIGINS_MAX][USER_ORIGIN_MAX + 1];
    char webhook_secret[USER_WEBHOOK_SECRET_MAX + 1]; /* HMAC key of outgoing webhooks */
} user_settings;

/* Fills `s` with the defaults above and an empty webhook secret. */
void user_settings_defaults(user_settings *s);

/* Applies the JSON object `patch` (any subset of the settings' names) to `s`, checking each
 * type and bound; unknown names, wrong types and out-of-range values are CM_EINVAL with the
 * reason in `detail` (size n), and `s` is then unchanged. */
cm_err user_settings_apply(const cJSON *patch, user_settings *s, char *detail, size_t n);

/* Returns 1 when `origin` is a serialised web origin (RFC 6454 section 6.2):
 * "http://" or "https://", a lower-case host name or [IPv6] literal, an optional port
 * 1..65535, nothing after; at most 255 bytes. */
int user_origin_valid(const char *origin);

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

/* --- tenants and their API keys (user_tenants.c, user_apikeys.c) ------------------------ */

#define USER_API_KEYS_MAX 20 /* active keys per tenant */

/* A new API key: the id is public, the secret is shown once and stored as its SHA-256. */
typedef struct user_api_key {
    char id[3 + 24 + 1];     /* "ck_" + 96 random bits in hex */
    char secret[3 + 64 + 1]; /* "cs_" + 256 random bits in hex */
    int64_t created_at;      /* Unix ms */
} user_api_key;

/* Creates and stores an active API key named `name` for `tenant`. CM_ECONFLICT when the tenant
 * already has USER_API_KEYS_MAX active keys. */
cm_err user_api_key_create(user_ctx *ctx, const char *tenant, const char *name, user_api_key *k);

/* Authenticates a tenant's backend by HTTP Basic api_key:api_secret (an active key, or one
 * still in its rotation overlap) and loads its tenant into `tenant_out` (caller destroys).
 * On failure it has answered: 401 for missing, unknown, wrong, revoked and expired
 * credentials alike, 403 when the tenant is suspended. */
cm_err user_tenant_auth(cm_http_req *req, user_ctx *ctx, bson_t *tenant_out);

/* Returns 1 when the request carries the platform admin key; otherwise answers 401, returns 0. */
int user_admin_check(cm_http_req *req, const user_ctx *ctx);

/* Reads a tenant document's settings, defaults filling what is absent. */
void user_settings_from_doc(const bson_t *tenant, user_settings *s);

/* Sets the Redis suspension key of every suspended tenant (at start: Redis may have lost it). */
cm_err user_tenants_sync_suspended(user_ctx *ctx);

/* --- answers (user_http.c) ------------------------------------------------------------- */

/* Answers one page of `coll` matching `filter` (to which the `cursor` query parameter's
 * bound is appended), ordered by the UUIDv7 `_id` (newest first or oldest first), `limit`
 * clamped to 1..200, rendered with `render(doc, ud)`; a malformed cursor or limit is 400. */
void user_reply_id_page(cm_http_req *req, user_ctx *ctx, const char *coll, bson_t *filter,
                        int newest_first, cJSON *(*render)(const bson_t *doc, void *ud),
                        void *ud);

/* --- events (user_events.c) ------------------------------------------------------------ */

/* Publishes a CloudEvent of `type` about `user_id` on the users topic, keyed by the user id;
 * `data` is taken over. Best effort: failures are logged. */
void user_publish(user_ctx *ctx, const char *type, const char *tenant, const char *user_id,
                  cJSON *data);

/* --- handlers ------------------------------------------------------------------------- */

void user_tenants_create(cm_http_req *req, void *ud);        /* POST /v1/tenants */
void user_tenants_list(cm_http_req *req, void *ud);          /* GET /v1/tenants */
void user_tenants_get(cm_http_req *req, void *ud);           /* GET /v1/tenants/{id} */
void user_tenants_update(cm_http_req *req, void *ud);        /* PATCH /v1/tenants/{id} */
void user_tenants_suspend(cm_http_req *req, void *ud);       /* POST /v1/tenants/{id}/suspend */
void user_tenants_resume(cm_http_req *req, void *ud);        /* POST /v1/tenants/{id}/resume */
void user_api_keys_create(cm_http_req *req, void *ud);       /* POST /v1/tenants/{id}/api-keys */
void user_api_keys_list(cm_http_req *req, void *ud);         /* GET /v1/tenants/{id}/api-keys */
void user_api_keys_rotate(cm_http_req *req, void *ud); /* POST .../api-keys/{key}/rotate */
void user_api_keys_revoke(cm_http_req *req, void *ud); /* DELETE .../api-keys/{key} */
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
