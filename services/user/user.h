/* user.h - the user service's shared context and the functions its files offer each other. */
#ifndef USER_H
#define USER_H

#include <stddef.h>

#include "common/http.h"
#include "common/jwt.h"
#include "common/kafka.h"
#include "common/mongo.h"
#include "common/outbox.h"
#include "common/redis.h"

/* Limits on trying credentials (user_limits.c), per minute unless said. */
typedef struct user_limits {
    long login_ip_per_min;   /* logins, password changes from one address (60) */
    long mail_ip_per_min;    /* forgot-password and verification mails asked from one address (30) */
    long mail_per_hour;      /* mails asked for one account (5) */
    long refresh_ip_per_min; /* refreshes from one address (600) */
    long token_ip_per_min;   /* server-side token mints from one address (6000) */
    long free_failures;      /* failures of one account before it backs off (5) */
    long backoff_max_s;      /* longest backoff (900) */
} user_limits;

typedef struct user_jobs user_jobs;

/* Everything a handler needs; created in main.c, read-only afterwards. */
typedef struct user_ctx {
    cm_mongo *db;
    cm_kafka_producer *kafka;
    cm_outbox *outbox; /* every event goes through it (user_publish) */
    cm_jwt *signer;   /* key set: the newest private key mints access tokens */
    cm_jwt *verifier; /* the same key set (public halves): checks them; not owned */
    cm_redis *redis;  /* the revoked-session denylist */
    const char *admin_key; /* PLATFORM_ADMIN_KEY */
    long token_ttl_s;   /* access token lifetime (ACCESS_TOKEN_TTL_S) */
    long refresh_ttl_s; /* refresh token lifetime, renewed at each rotation */
    long leeway_s;      /* JWT_LEEWAY_S: verifiers accept a token this long past exp */
    long verify_ttl_s;  /* e-mail verification token lifetime */
    long reset_ttl_s;   /* password reset token lifetime */
    const char *trusted_proxies; /* peers whose X-Forwarded-For names the client */
    const char *messaging_url;   /* the messaging service, read by exports */
    long janitor_every_s;        /* period of the expiry pass */
    user_limits limits;
    user_jobs *jobs; /* the background thread (exports, expiry) */
} user_ctx;

/* Collections. */
#define USER_COLL_TENANTS "tenants"
#define USER_COLL_USERS "users"
#define USER_COLL_CREDENTIALS "credentials"
#define USER_COLL_SESSIONS "sessions"
#define USER_COLL_REFRESH "refresh_tokens"
#define USER_COLL_SPENT "spent_tokens" /* hashes of used single-use tokens */
#define USER_COLL_API_KEYS "api_keys"
#define USER_COLL_ONETIME "onetime_tokens"
#define USER_COLL_BLOCKS "blocks"
#define USER_COLL_EXPORTS "exports"
#define USER_COLL_OUTBOX "outbox"

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

/* --- profile rules (user_rules.c) ----------------------------------------------------- */

#define USER_EMAIL_MAX 254      /* RFC 5321 section 4.5.3.1.3 path limit, less the brackets */
#define USER_METADATA_MAX 4096  /* bytes of a user's custom metadata, as compact JSON */
#define USER_METADATA_DEPTH 4   /* nesting of the metadata object */
#define USER_SEARCH_KEYS_MAX 8  /* prefixes a user can be found by */
#define USER_SEARCH_MAX 64      /* characters of a search query */

/* Lower-cases a plausible e-mail address into `out` (size n): one '@', a non-empty local part
 * of printable ASCII without spaces, quotes, '<', '>', ',' or ';' (no quoted forms), a domain
 * of dot-separated labels of [a-z0-9-] with at least one dot, at most 254 bytes in all.
 * Returns 1 when valid. Only a verification mail proves an address works. */
int user_email_normalize(const char *in, char *out, size_t n);

/* Checks custom metadata: a JSON object nesting at most USER_METADATA_DEPTH levels whose
 * compact form is at most USER_METADATA_MAX bytes; writes that form to a heap string `*out`
 * (caller frees). CM_EINVAL (reason in detail) or CM_ETOOBIG. Stored as a string, so its keys
 * never reach MongoDB as field names. */
cm_err user_metadata_check(const cJSON *v, char **out, char *detail, size_t n);

/* Writes the search keys of a user into `keys` (each at most 64 bytes + NUL): the whole name,
 * each of its words and the username, ASCII letters lower-cased, duplicates dropped. Returns
 * how many (at most USER_SEARCH_KEYS_MAX). */
int user_search_keys(const char *name, const char *username, char keys[][65]);

/* Lower-cases the ASCII letters of a search query into `out` (size n). Returns 1 when the
 * query is 1..64 characters of valid UTF-8 without control characters, 0 otherwise. */
int user_search_normalize(const char *q, char *out, size_t n);

/* Writes the anchored regular expression that matches strings starting with `prefix` (every
 * metacharacter escaped) into `out` (size n). Returns 0, or -1 when it does not fit. */
int user_regex_prefix(const char *prefix, char *out, size_t n);

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
    int erase_delete;       /* erase_policy: a deleted user's messages are deleted (1) or
                               anonymised (0, "anonymize", the default) */
    int n_origins;          /* browser origins allowed to open WebSockets (none) */
    char origins[USER_ORIGINS_MAX][USER_ORIGIN_MAX + 1];
    int n_cors_origins;     /* browser origins allowed to call the HTTP API, answered with
                               CORS headers by the gateway (none) */
    char cors_origins[USER_ORIGINS_MAX][USER_ORIGIN_MAX + 1];
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

/* Returns 1 when `role` is a built-in role or a custom role of the tenant document. */
int user_role_exists(const bson_t *tenant, const char *role);

/* --- users (user_users.c, user_gdpr.c) ---------------------------------------------------- */

/* Fills a new user document (active, discoverable, no roles: a member). */
void user_doc_init(bson_t *doc, const char *tenant, const char *id, const char *name,
                   const char *username, const char *email, int64_t now);

/* Loads user `id` of `tenant` into `out` (caller destroys). CM_ENOTFOUND also for ids that
 * cannot be user ids. */
cm_err user_load(user_ctx *ctx, const char *tenant, const char *id, bson_t *out);

/* Applies `update` to the user whose _id is `key`, publishes user.updated and answers 200 with
 * the user; answers the error otherwise. */
cm_err user_update_reply(cm_http_req *req, user_ctx *ctx, const char *key, const bson_t *update);

/* Publishes `type` (user.created, user.updated) with the public view of the stored user. */
void user_publish_user(user_ctx *ctx, const char *type, const bson_t *doc);

/* Erases user `id` of `tenant` (GDPR Art. 17): ends and deletes its sessions and refresh
 * tokens, deletes its credentials, one-time tokens, blocks and exports and the user itself,
 * then publishes user.deleted with the tenant's erase policy so every service erases or
 * anonymises what it holds. Idempotent: a failed call can be repeated (the user document
 * goes last). CM_ENOTFOUND when there is no such user. */
cm_err user_erase(user_ctx *ctx, const char *tenant, const char *id);

/* Runs one claimed export job (an exports document) to "done" or "failed". */
cm_err user_export_run(user_ctx *ctx, const bson_t *job);

/* --- background jobs (user_jobs.c) ------------------------------------------------------- */

/* Starts the thread that runs queued exports (at once when woken, else every second) and,
 * every minute, expires old tokens, revoked sessions and exports. */
cm_err user_jobs_start(user_ctx *ctx, user_jobs **out);

/* Wakes the thread (a new export). Accepts NULL. */
void user_jobs_wake(user_jobs *j);

/* Stops the thread after the job at hand. Accepts NULL. */
void user_jobs_stop(user_jobs *j);

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

/* --- credential limits (user_limits.c) ------------------------------------------------- */

typedef enum user_limit {
    USER_LIMIT_LOGIN,   /* password tries: login, password change */
    USER_LIMIT_MAIL,    /* mails asked: forgot password, verification */
    USER_LIMIT_REFRESH, /* refresh token uses */
    USER_LIMIT_TOKEN,   /* server-side token mints (API key tries) */
} user_limit;

/* Counts the attempt against the client address's window and, when `account` is given, checks
 * the account's backoff (for mails: its hourly window). On a limit it has answered 429 with
 * Retry-After and returns CM_ELIMIT. */
cm_err user_limit_check(cm_http_req *req, user_ctx *ctx, user_limit kind, const char *tenant,
                        const char *account);

/* A failed try of `account`: after limits.free_failures of them it backs off, doubling. */
void user_limit_failed(user_ctx *ctx, user_limit kind, const char *tenant, const char *account);

/* A successful try: the account's failures are forgotten. */
void user_limit_succeeded(user_ctx *ctx, user_limit kind, const char *tenant, const char *account);

/* --- answers (user_http.c) ------------------------------------------------------------- */

/* Answers one page of `coll` matching `filter` (to which the `cursor` query parameter's
 * bound is appended), ordered by the UUIDv7 `_id` (newest first or oldest first), `limit`
 * clamped to 1..200, rendered with `render(doc, ud)`; a malformed cursor or limit is 400. */
void user_reply_id_page(cm_http_req *req, user_ctx *ctx, const char *coll, bson_t *filter,
                        int newest_first, cJSON *(*render)(const bson_t *doc, void *ud),
                        void *ud);

/* Answers one page of `coll` matching `filter`, ordered by `_id` = `key_prefix` + a user id,
 * where the cursor is that user id (read from the `id_field` of the last document): for lists
 * keyed by user within a tenant or a user. */
void user_reply_key_page(cm_http_req *req, user_ctx *ctx, const char *coll, bson_t *filter,
                         const char *key_prefix, const char *id_field, long def_limit,
                         long max_limit, cJSON *(*render)(const bson_t *doc, void *ud));

/* The client's address: the last X-Forwarded-For entry when the peer is a trusted proxy (the
 * gateway), the peer otherwise. Valid for the request's life. */
const char *user_client_ip(cm_http_req *req, const user_ctx *ctx);

/* --- credentials (user_passwords.c, user_auth.c) ------------------------------------------ */

#define USER_HASH_MAX 128 /* crypto_pwhash_STRBYTES */

/* Hashes a password with argon2id (libsodium, interactive limits: t=2, 64 MiB; NIST SP
 * 800-63B 5.1.1.2 asks for a memory-hard KDF, OWASP's minimum is 19 MiB) into `out`.
 * CM_EAGAIN when the memory cannot be had. */
cm_err user_password_hash(const char *password, char out[USER_HASH_MAX]);

/* Issues a verification token for `email` and publishes user.verification_requested. */
cm_err user_verification_send(user_ctx *ctx, const char *tenant, const char *user_id,
                              const char *email);

/* Reads the body's tenant_id and loads that active tenant into `out` (caller destroys);
 * answers 400, 404 or 403 (suspended) itself. */
cm_err user_body_tenant(cm_http_req *req, user_ctx *ctx, const cJSON *body, bson_t *out);

/* --- events (user_events.c) ------------------------------------------------------------ */

/* Publishes a CloudEvent of `type` about `user_id` on the users topic, keyed by the user id,
 * through the outbox (stored, produced, produced again until acknowledged); `data` is taken
 * over. Failures are logged. */
void user_publish(user_ctx *ctx, const char *type, const char *tenant, const char *user_id,
                  cJSON *data);

/* --- handlers ------------------------------------------------------------------------- */

void user_tenants_create(cm_http_req *req, void *ud);        /* POST /v1/tenants */
void user_tenants_list(cm_http_req *req, void *ud);          /* GET /v1/tenants */
void user_tenants_cors(cm_http_req *req, void *ud); /* GET /internal/v1/tenants/cors-origins */
void user_tenants_get(cm_http_req *req, void *ud);           /* GET /v1/tenants/{id} */
void user_tenants_settings_internal(cm_http_req *req, void *ud); /* GET /internal/v1/tenants/{id}/settings */
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
void user_users_update_me(cm_http_req *req, void *ud);       /* PATCH /v1/users/me */
void user_users_get(cm_http_req *req, void *ud);             /* GET /v1/users/{id} */
void user_users_search(cm_http_req *req, void *ud);          /* GET /v1/users?q= */
void user_server_put(cm_http_req *req, void *ud);            /* PUT /v1/server/users/{id} */
void user_server_get(cm_http_req *req, void *ud);            /* GET /v1/server/users/{id} */
void user_server_delete(cm_http_req *req, void *ud);         /* DELETE /v1/server/users/{id} */
void user_server_deactivate(cm_http_req *req, void *ud); /* POST .../{id}/deactivate */
void user_server_reactivate(cm_http_req *req, void *ud); /* POST .../{id}/reactivate */
void user_users_delete_me(cm_http_req *req, void *ud);       /* DELETE /v1/users/me */
void user_blocks_put(cm_http_req *req, void *ud);     /* PUT /v1/users/me/blocks/{id} */
void user_blocks_delete(cm_http_req *req, void *ud);  /* DELETE /v1/users/me/blocks/{id} */
void user_blocks_list(cm_http_req *req, void *ud);    /* GET /v1/users/me/blocks */
void user_exports_create(cm_http_req *req, void *ud);     /* POST /v1/users/me/exports */
void user_exports_get(cm_http_req *req, void *ud);        /* GET /v1/users/me/exports/{id} */
void user_exports_download(cm_http_req *req, void *ud);   /* GET .../exports/{id}/download */
void user_roles_list(cm_http_req *req, void *ud);         /* GET /v1/roles */
void user_roles_put(cm_http_req *req, void *ud);          /* PUT /v1/roles/{name} */
void user_roles_delete(cm_http_req *req, void *ud);       /* DELETE /v1/roles/{name} */
void user_server_roles_put(cm_http_req *req, void *ud);   /* PUT /v1/server/roles/{name} */
void user_server_roles_delete(cm_http_req *req, void *ud); /* DELETE /v1/server/roles/{name} */
void user_roles_assign(cm_http_req *req, void *ud);       /* PUT /v1/users/{id}/roles */
void user_verify_request(cm_http_req *req, void *ud);   /* POST /v1/auth/verify-email/request */
void user_verify_confirm(cm_http_req *req, void *ud);   /* POST /v1/auth/verify-email */
void user_password_change(cm_http_req *req, void *ud);  /* POST /v1/auth/password/change */
void user_password_forgot(cm_http_req *req, void *ud);  /* POST /v1/auth/password/forgot */
void user_password_reset(cm_http_req *req, void *ud);   /* POST /v1/auth/password/reset */
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
