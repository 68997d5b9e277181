/* user.h - the user service's shared context and the functions its files offer each other. */
#ifndef USER_H
#define USER_H

#include <stddef.h>

#include "common/http.h"
#include "common/jwt.h"
#include "common/kafka.h"
#include "common/mongo.h"

/* Everything a handler needs; created in main.c, read-only afterwards. */
typedef struct user_ctx {
    cm_mongo *db;
    cm_kafka_producer *kafka;
    cm_jwt *signer;   /* key set: the newest private key mints access tokens */
    cm_jwt *verifier; /* the same key set (public halves): checks them; not owned */
    const char *admin_key; /* PLATFORM_ADMIN_KEY */
    long token_ttl_s;
} user_ctx;

/* Collections. */
#define USER_COLL_TENANTS "tenants"
#define USER_COLL_USERS "users"
#define USER_COLL_CREDENTIALS "credentials"
#define USER_COLL_SESSIONS "sessions"

/* --- rules (user_rules.c), plain functions over plain data ---------------------------- */

#define USER_ID_MAX 64
#define USER_NAME_MAX 100
#define USER_USERNAME_MIN 3
#define USER_USERNAME_MAX 32
#define USER_PASSWORD_MIN 8   /* NIST SP 800-63B 5.1.1.2: at least 8 characters */
#define USER_PASSWORD_MAX 128 /* no upper limit below 128 (issue 5) */
#define USER_TENANT_NAME_MAX 100

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

/* --- handlers ------------------------------------------------------------------------- */

void user_tenants_create(cm_http_req *req, void *ud);        /* POST /v1/tenants */
void user_auth_token(cm_http_req *req, void *ud);            /* POST /v1/auth/token */
void user_auth_register(cm_http_req *req, void *ud);         /* POST /v1/auth/register */
void user_auth_login(cm_http_req *req, void *ud);            /* POST /v1/auth/login */
void user_users_me(cm_http_req *req, void *ud);              /* GET /v1/users/me */
void user_keys_jwks(cm_http_req *req, void *ud);             /* GET /.well-known/jwks.json */

/* Creates the indexes the service relies on. */
cm_err user_ensure_indexes(user_ctx *ctx);

/* Renders a stored user document as the API's User object. */
cJSON *user_to_json(const bson_t *doc);

#endif
