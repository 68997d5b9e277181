/* test_auth.c - unit tests of role and permission checks, user id rules, the bearer check
 * (common/auth.h) and the revoked-session denylist it consults (common/session.h, real Redis). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cJSON.h>

#include "common/auth.h"
#include "common/config.h"
#include "common/log.h"
#include "common/session.h"
#include "common/uuid.h"
#include "testutil.h"

static cm_jwt_claims with_roles(const char *roles)
{
    cm_jwt_claims c;
    memset(&c, 0, sizeof(c));
    snprintf(c.roles, sizeof(c.roles), "%s", roles);
    return c;
}

static void test_has_role_word_boundaries(void **state)
{
    (void)state;
    cm_jwt_claims c = with_roles("member moderator");
    assert_int_equal(cm_auth_has_role(&c, "member"), 1);
    assert_int_equal(cm_auth_has_role(&c, "moderator"), 1);
    assert_int_equal(cm_auth_has_role(&c, "mod"), 0);
    assert_int_equal(cm_auth_has_role(&c, "member moderator"), 1); /* the whole string */
    assert_int_equal(cm_auth_has_role(&c, "mem"), 0);
    assert_int_equal(cm_auth_has_role(&c, "ember"), 0);
    assert_int_equal(cm_auth_has_role(&c, "erator"), 0);
    assert_int_equal(cm_auth_has_role(&c, "admin"), 0);
    assert_int_equal(cm_auth_has_role(&c, "Member"), 0);
    c = with_roles("superadmin admin");
    assert_int_equal(cm_auth_has_role(&c, "admin"), 1); /* found after a partial match */
    c = with_roles("superadmin adminx");
    assert_int_equal(cm_auth_has_role(&c, "admin"), 0);
    c = with_roles("admin");
    assert_int_equal(cm_auth_has_role(&c, "admin"), 1);
    c = with_roles("");
    assert_int_equal(cm_auth_has_role(&c, "member"), 0);
}

static void test_has_role_empty_role(void **state)
{
    (void)state;
    /* An empty role is never held (and must not loop forever). */
    cm_jwt_claims c = with_roles("member moderator");
    assert_int_equal(cm_auth_has_role(&c, ""), 0);
    c = with_roles("");
    assert_int_equal(cm_auth_has_role(&c, ""), 0);
}

static void test_user_id_valid(void **state)
{
    char id[80];
    (void)state;
    assert_int_equal(cm_user_id_valid("alice"), 1);
    assert_int_equal(cm_user_id_valid("a"), 1);
    assert_int_equal(cm_user_id_valid("User_1.name@example-org"), 1);
    assert_int_equal(cm_user_id_valid(""), 0);
    assert_int_equal(cm_user_id_valid("a b"), 0);
    assert_int_equal(cm_user_id_valid("a/b"), 0);
    assert_int_equal(cm_user_id_valid("a$b"), 0);
    assert_int_equal(cm_user_id_valid("{\"$gt\":\"\"}"), 0);
    assert_int_equal(cm_user_id_valid("caf\xc3\xa9"), 0);
    memset(id, 'x', 64);
    id[64] = '\0';
    assert_int_equal(cm_user_id_valid(id), 1);
    id[64] = 'x';
    id[65] = '\0';
    assert_int_equal(cm_user_id_valid(id), 0);
}


static void test_can_permissions(void **state)
{
    cm_jwt_claims c;
    (void)state;
    memset(&c, 0, sizeof(c));
    snprintf(c.perms, sizeof(c.perms), "message.send message.delete.own");
    assert_int_equal(cm_auth_can(&c, "message.send"), 1);
    assert_int_equal(cm_auth_can(&c, "message.delete.own"), 1);
    assert_int_equal(cm_auth_can(&c, "message.delete"), 0); /* a prefix is not the permission */
    assert_int_equal(cm_auth_can(&c, "message.delete.any"), 0);
    assert_int_equal(cm_auth_can(&c, "send"), 0);
    assert_int_equal(cm_auth_can(&c, ""), 0);
    snprintf(c.perms, sizeof(c.perms), "*");
    assert_int_equal(cm_auth_can(&c, "tenant.manage"), 1); /* the wildcard grants everything */
    assert_int_equal(cm_auth_can(&c, ""), 0);
    snprintf(c.perms, sizeof(c.perms), "a.*");
    assert_int_equal(cm_auth_can(&c, "a.b"), 0); /* only a bare "*" is a wildcard */
    c.perms[0] = '\0';
    snprintf(c.roles, sizeof(c.roles), "tenant_admin");
    assert_int_equal(cm_auth_can(&c, "message.send"), 0); /* roles alone grant nothing here */
}

/* --- cm_auth_bearer through a real server ---------------------------------------------------- */

static cm_http_server *srv;
static cm_jwt *signer, *verifier;
static int port;
static cm_redis *redis, *dead_redis;

/* GET /me: the bearer check, then the claims. */
static void h_me(cm_http_req *req, void *ud)
{
    cm_jwt_claims c;
    (void)ud;
    if (cm_auth_bearer(req, verifier, &c) != CM_OK)
        return;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "sub", c.sub);
    cJSON_AddStringToObject(o, "tid", c.tid);
    cJSON_AddBoolToObject(o, "member", cm_auth_has_role(&c, "member"));
    cm_http_reply_json(req, 200, o);
}

static const char *env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && *v ? v : def;
}

static cm_jwt *key_from(const char *path)
{
    size_t len;
    char *pem = tu_read_file(path, &len);
    cm_jwt *j = NULL;
    if (pem == NULL)
        return NULL;
    cm_jwt_config cfg = {.alg = "RS256", .key = pem, .key_len = len, .kid = "k1",
                         .issuer = "chat-platform", .audience = "chat-api", .leeway_s = 30};
    if (cm_jwt_create(&cfg, &j) != CM_OK)
        j = NULL;
    free(pem);
    return j;
}

static int setup(void **state)
{
    (void)state;
    cm_log_init("test_auth", CM_LOG_ERROR);
    signer = key_from(env_or("TEST_JWT_PRIVATE_KEY_FILE", ".local/keys/jwt-private.pem"));
    verifier = key_from(env_or("TEST_JWT_PUBLIC_KEY_FILE", ".local/keys/jwt-public.pem"));
    if (signer == NULL || verifier == NULL)
        return -1;
    long rport = 6379;
    if (cm_config_long("REDIS_PORT", 6379, 1, 65535, &rport) != CM_OK ||
        cm_redis_create(cm_config_str("REDIS_HOST", "127.0.0.1"), (int)rport, 2, 2000,
                        &redis) != CM_OK ||
        cm_redis_create("127.0.0.1", tu_free_port(), 1, 200, &dead_redis) != CM_OK)
        return -1;
    port = tu_free_port();
    cm_http_config cfg = {.host = "127.0.0.1", .port = port, .threads = 2, .max_body = 1024,
                          .idle_timeout_s = 5, .drain_s = 1};
    if (cm_http_server_create(&cfg, &srv) != CM_OK ||
        cm_http_route(srv, "GET", "/me", h_me, NULL) != CM_OK)
        return -1;
    return cm_http_server_start(srv) == CM_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    cm_http_server_destroy(srv);
    cm_jwt_destroy(signer);
    cm_jwt_destroy(verifier);
    cm_redis_destroy(redis);
    cm_redis_destroy(dead_redis);
    return 0;
}

static cJSON *get_me(const char *headers, int want, tu_resp *r)
{
    char h[64];
    assert_int_equal(tu_http(port, "GET", "/me", headers, NULL, 0, r), 0);
    if (r->status != want)
        fail_msg("want %d, got %d:\n%s", want, r->status, r->raw);
    cJSON *j = cJSON_ParseWithLength(r->body, r->body_len);
    assert_non_null(j);
    if (want == 401) {
        /* RFC 6750 section 3: the challenge, exactly once. */
        assert_non_null(tu_resp_header(r, "WWW-Authenticate", h, sizeof(h)));
        assert_string_equal(h, "Bearer");
        const char *first = strcasestr(r->raw, "\r\nWWW-Authenticate:");
        assert_non_null(first);
        assert_null(strcasestr(first + 2, "\r\nWWW-Authenticate:"));
        assert_string_equal(cJSON_GetObjectItem(j, "type")->valuestring,
                            "urn:chat:problem:unauthenticated");
    }
    return j;
}

static void test_bearer_accepts_valid_token(void **state)
{
    cm_jwt_claims c;
    char *tok = NULL, hdr[4096];
    tu_resp r;
    (void)state;
    memset(&c, 0, sizeof(c));
    snprintf(c.sub, sizeof(c.sub), "user-7");
    snprintf(c.tid, sizeof(c.tid), "tenant-7");
    snprintf(c.roles, sizeof(c.roles), "member");
    assert_int_equal(cm_jwt_sign(signer, &c, time(NULL), 900, &tok), CM_OK);
    snprintf(hdr, sizeof(hdr), "Authorization: Bearer %s\r\n", tok);
    cJSON *j = get_me(hdr, 200, &r);
    assert_string_equal(cJSON_GetObjectItem(j, "sub")->valuestring, "user-7");
    assert_string_equal(cJSON_GetObjectItem(j, "tid")->valuestring, "tenant-7");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "member")));
    cJSON_Delete(j);
    tu_resp_free(&r);
    /* The scheme name is case-insensitive (RFC 9110 section 11.1). */
    snprintf(hdr, sizeof(hdr), "Authorization: bearer %s\r\n", tok);
    j = get_me(hdr, 200, &r);
    cJSON_Delete(j);
    tu_resp_free(&r);
    free(tok);
}

static void test_bearer_refusals(void **state)
{
    cm_jwt_claims c;
    char *tok = NULL, hdr[4096];
    tu_resp r;
    (void)state;
    cJSON *j = get_me(NULL, 401, &r);
    assert_string_equal(cJSON_GetObjectItem(j, "detail")->valuestring,
                        "an access token is required (Authorization: Bearer)");
    cJSON_Delete(j);
    tu_resp_free(&r);

    j = get_me("Authorization: Basic dXNlcjpwYXNz\r\n", 401, &r);
    assert_string_equal(cJSON_GetObjectItem(j, "detail")->valuestring,
                        "the Authorization header must use the Bearer scheme");
    cJSON_Delete(j);
    tu_resp_free(&r);

    j = get_me("Authorization: Bearer not.a.token\r\n", 401, &r);
    cJSON_Delete(j);
    tu_resp_free(&r);

    /* Expired: the reason from the verifier reaches the client. */
    memset(&c, 0, sizeof(c));
    snprintf(c.sub, sizeof(c.sub), "user-7");
    snprintf(c.tid, sizeof(c.tid), "tenant-7");
    assert_int_equal(cm_jwt_sign(signer, &c, time(NULL) - 5000, 900, &tok), CM_OK);
    snprintf(hdr, sizeof(hdr), "Authorization: Bearer %s\r\n", tok);
    j = get_me(hdr, 401, &r);
    assert_string_equal(cJSON_GetObjectItem(j, "detail")->valuestring, "the token expired");
    cJSON_Delete(j);
    tu_resp_free(&r);
    free(tok);
}

/* A signed token for session `sid`, as an Authorization header line. */
static void bearer_for_session(const char *sid, char *hdr, size_t n)
{
    cm_jwt_claims c;
    char *tok = NULL;
    memset(&c, 0, sizeof(c));
    snprintf(c.sub, sizeof(c.sub), "user-7");
    snprintf(c.tid, sizeof(c.tid), "tenant-7");
    snprintf(c.sid, sizeof(c.sid), "%s", sid);
    assert_int_equal(cm_jwt_sign(signer, &c, time(NULL), 900, &tok), CM_OK);
    snprintf(hdr, n, "Authorization: Bearer %s\r\n", tok);
    free(tok);
}

static void test_denylist_in_redis(void **state)
{
    char sid[CM_UUID_STRLEN], long_sid[CM_JWT_ID_MAX + 2];
    (void)state;
    assert_int_equal(cm_uuid_v7(sid), CM_OK);
    assert_int_equal(cm_session_check(redis, sid), CM_OK);
    assert_int_equal(cm_session_check(redis, ""), CM_OK);
    assert_int_equal(cm_session_deny(redis, sid, 400), CM_OK);
    assert_int_equal(cm_session_check(redis, sid), CM_EUNAUTH);
    tu_sleep_ms(600); /* the entry lives as long as the session's tokens could, then goes */
    assert_int_equal(cm_session_check(redis, sid), CM_OK);
    assert_int_equal(cm_session_deny(redis, "", 1000), CM_EINVAL);
    assert_int_equal(cm_session_deny(redis, sid, 0), CM_EINVAL);
    memset(long_sid, 'x', sizeof(long_sid) - 1);
    long_sid[sizeof(long_sid) - 1] = '\0';
    assert_int_equal(cm_session_deny(redis, long_sid, 1000), CM_EINVAL);
    assert_int_equal(cm_session_check(dead_redis, sid), CM_EIO);
    assert_int_equal(cm_session_deny(dead_redis, sid, 1000), CM_EIO);
}

static void test_bearer_consults_the_denylist(void **state)
{
    char sid[CM_UUID_STRLEN], other[CM_UUID_STRLEN], hdr[4096], ohdr[4096];
    tu_resp r;
    cJSON *j;
    (void)state;
    assert_int_equal(cm_uuid_v7(sid), CM_OK);
    assert_int_equal(cm_uuid_v7(other), CM_OK);
    bearer_for_session(sid, hdr, sizeof(hdr));
    bearer_for_session(other, ohdr, sizeof(ohdr));
    assert_int_equal(cm_session_deny(redis, sid, 60000), CM_OK);
    /* Without enforcement the process does not look. */
    j = get_me(hdr, 200, &r);
    cJSON_Delete(j);
    tu_resp_free(&r);
    cm_session_enforce(redis);
    j = get_me(hdr, 401, &r);
    assert_string_equal(cJSON_GetObjectItem(j, "detail")->valuestring, "the session was revoked");
    cJSON_Delete(j);
    tu_resp_free(&r);
    j = get_me(ohdr, 200, &r); /* another session of the same user is unaffected */
    cJSON_Delete(j);
    tu_resp_free(&r);
    /* Redis unreachable: 503 with Retry-After, never a token waved through. */
    cm_session_enforce(dead_redis);
    char ra[16];
    assert_int_equal(tu_http(port, "GET", "/me", ohdr, NULL, 0, &r), 0);
    assert_int_equal(r.status, 503);
    assert_non_null(tu_resp_header(&r, "Retry-After", ra, sizeof(ra)));
    tu_resp_free(&r);
    cm_session_enforce(NULL);
    j = get_me(hdr, 200, &r);
    cJSON_Delete(j);
    tu_resp_free(&r);
}

static void test_bearer_refuses_a_suspended_tenant(void **state)
{
    char sid[CM_UUID_STRLEN], hdr[4096];
    tu_resp r;
    cJSON *j;
    (void)state;
    assert_int_equal(cm_uuid_v7(sid), CM_OK);
    bearer_for_session(sid, hdr, sizeof(hdr)); /* tenant "tenant-7" */
    cm_session_enforce(redis);
    assert_int_equal(cm_session_tenant_suspend(redis, "tenant-7", 1), CM_OK);
    j = get_me(hdr, 401, &r);
    assert_string_equal(cJSON_GetObjectItem(j, "detail")->valuestring, "the tenant is suspended");
    cJSON_Delete(j);
    tu_resp_free(&r);
    /* A revoked session of a suspended tenant names the session. */
    assert_int_equal(cm_session_deny(redis, sid, 60000), CM_OK);
    j = get_me(hdr, 401, &r);
    assert_string_equal(cJSON_GetObjectItem(j, "detail")->valuestring, "the session was revoked");
    cJSON_Delete(j);
    tu_resp_free(&r);
    assert_int_equal(cm_session_tenant_suspend(redis, "tenant-7", 0), CM_OK);
    char other[CM_UUID_STRLEN];
    assert_int_equal(cm_uuid_v7(other), CM_OK);
    bearer_for_session(other, hdr, sizeof(hdr));
    j = get_me(hdr, 200, &r); /* resumed */
    cJSON_Delete(j);
    tu_resp_free(&r);
    assert_int_equal(cm_session_tenant_suspend(redis, "", 1), CM_EINVAL);
    assert_int_equal(cm_session_tenant_suspend(dead_redis, "tenant-7", 1), CM_EIO);
    cm_session_enforce(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_has_role_word_boundaries),
        cmocka_unit_test(test_has_role_empty_role),
        cmocka_unit_test(test_user_id_valid),
        cmocka_unit_test(test_bearer_accepts_valid_token),
        cmocka_unit_test(test_bearer_refusals),
        cmocka_unit_test(test_can_permissions),
        cmocka_unit_test(test_denylist_in_redis),
        cmocka_unit_test(test_bearer_consults_the_denylist),
        cmocka_unit_test(test_bearer_refuses_a_suspended_tenant),
    };
    return cmocka_run_group_tests_name("auth", tests, setup, teardown);
}
