/* user_rules_test.c - unit tests of the identity rules: ids, usernames, passwords, Basic auth. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "common/auth.h"
#include "user.h"

static char *repeat(const char *unit, size_t count)
{
    size_t n = strlen(unit);
    char *s = malloc(n * count + 1);
    assert_non_null(s);
    for (size_t i = 0; i < count; i++)
        memcpy(s + i * n, unit, n);
    s[n * count] = '\0';
    return s;
}

static void test_user_id(void **state)
{
    (void)state;
    /* The tenant-chosen user id rule lives in libcommon (cm_user_id_valid) for every service. */
    assert_int_equal(cm_user_id_valid("alice"), 1);
    assert_int_equal(cm_user_id_valid("A-1_b.c@d"), 1);
    assert_int_equal(cm_user_id_valid(""), 0);
    assert_int_equal(cm_user_id_valid("a b"), 0);
    assert_int_equal(cm_user_id_valid("a:b"), 0);
    assert_int_equal(cm_user_id_valid("\xc3\xa9"), 0);
    char *s = repeat("u", USER_ID_MAX);
    assert_int_equal(cm_user_id_valid(s), 1);
    free(s);
    s = repeat("u", USER_ID_MAX + 1);
    assert_int_equal(cm_user_id_valid(s), 0);
    free(s);
}

static void test_username_normalize(void **state)
{
    char out[64];
    (void)state;
    assert_int_equal(user_username_normalize("Alice", out, sizeof(out)), 1);
    assert_string_equal(out, "alice");
    assert_int_equal(user_username_normalize("a.b-C_9", out, sizeof(out)), 1);
    assert_string_equal(out, "a.b-c_9");
    assert_int_equal(user_username_normalize("abc", out, sizeof(out)), 1); /* 3: the minimum */
    assert_int_equal(user_username_normalize("ab", out, sizeof(out)), 0);
    assert_int_equal(user_username_normalize("", out, sizeof(out)), 0);
    char *s = repeat("z", USER_USERNAME_MAX);
    assert_int_equal(user_username_normalize(s, out, sizeof(out)), 1);
    assert_string_equal(out, s);
    free(s);
    s = repeat("z", USER_USERNAME_MAX + 1);
    assert_int_equal(user_username_normalize(s, out, sizeof(out)), 0);
    free(s);
    assert_int_equal(user_username_normalize("al ice", out, sizeof(out)), 0);
    assert_int_equal(user_username_normalize("al!ce", out, sizeof(out)), 0);
    assert_int_equal(user_username_normalize("al@ce", out, sizeof(out)), 0);
    assert_int_equal(user_username_normalize("\xc3\x84""bc", out, sizeof(out)), 0); /* Äbc */
    assert_int_equal(user_username_normalize("abc\n", out, sizeof(out)), 0);
    /* The output buffer must hold the name and its NUL. */
    assert_int_equal(user_username_normalize("alice", out, 5), 0);
    assert_int_equal(user_username_normalize("alice", out, 6), 1);
    assert_string_equal(out, "alice");
}

static void expect_password(const char *pw, const char *want)
{
    const char *why = user_password_problem(pw);
    if (want == NULL && why != NULL)
        fail_msg("password refused (%s): %.40s", why, pw);
    if (want != NULL && why == NULL)
        fail_msg("password accepted: %.40s", pw);
    if (want)
        assert_string_equal(why, want);
}

static void test_password_length(void **state)
{
    const char *short_ = "the password must have at least 8 characters";
    const char *long_ = "the password must have at most 128 characters";
    (void)state;
    expect_password("Kq3#vbn", short_); /* 7 */
    expect_password("Kq3#vbnm", NULL);  /* 8 */
    expect_password("", short_);
    char *s = repeat("k", USER_PASSWORD_MAX);
    expect_password(s, NULL);
    free(s);
    s = repeat("k", USER_PASSWORD_MAX + 1);
    expect_password(s, long_);
    free(s);
    expect_password("correct horse battery staple", NULL); /* spaces are fine */
}

static void test_password_counts_characters_not_bytes(void **state)
{
    (void)state;
    /* 7 two-byte characters are 14 bytes but still too short. */
    char *s = repeat("\xc3\xa9", 7);
    expect_password(s, "the password must have at least 8 characters");
    free(s);
    s = repeat("\xc3\xa9", 8);
    expect_password(s, NULL);
    free(s);
    /* 128 three-byte and four-byte characters (384 and 512 bytes) are allowed. */
    s = repeat("\xe6\x97\xa5", 128);
    expect_password(s, NULL);
    free(s);
    s = repeat("\xf0\x9f\x94\x91", 128);
    expect_password(s, NULL);
    free(s);
    s = repeat("\xe6\x97\xa5", 129);
    expect_password(s, "the password must have at most 128 characters");
    free(s);
}

static void test_password_common_and_invalid(void **state)
{
    const char *common = "the password is one of the most common passwords";
    (void)state;
    expect_password("password", common);
    expect_password("PASSWORD", common);
    expect_password("Password1", common);
    expect_password("12345678", common);
    expect_password("qwertyuiop", common);
    expect_password("password12", NULL); /* not on the list */
    expect_password("\xff\xff\xff\xff\xff\xff\xff\xff", "the password must be valid UTF-8");
    expect_password("abcdefg\xc0\x80", "the password must be valid UTF-8");
}

static void expect_basic(const char *header, const char *key, const char *secret)
{
    char k[64] = "unchanged", s[64] = "unchanged";
    int ok = user_parse_basic(header, k, sizeof(k), s, sizeof(s));
    if (key == NULL) {
        if (ok)
            fail_msg("accepted \"%s\" as %s / %s", header ? header : "(null)", k, s);
        return;
    }
    if (!ok)
        fail_msg("refused \"%s\"", header);
    assert_string_equal(k, key);
    assert_string_equal(s, secret);
}

static void test_parse_basic_good(void **state)
{
    (void)state;
    expect_basic("Basic a2V5MTIzOnMzY3I6ZXQ=", "key123", "s3cr:et"); /* colon in the secret */
    expect_basic("Basic azpz", "k", "s");                            /* no padding */
    expect_basic("basic azpz", "k", "s");                            /* scheme: any case */
    expect_basic("BASIC azpz", "k", "s");
    expect_basic("Basic a2V5OnM+Pw==", "key", "s>?"); /* '+' of the standard alphabet */
    expect_basic("Basic dGVuYW50X2FiMTI6MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
                 "tenant_ab12", "0123456789abcdef0123456789abcdef");
}

static void test_parse_basic_malformed(void **state)
{
    (void)state;
    expect_basic(NULL, NULL, NULL);
    expect_basic("", NULL, NULL);
    expect_basic("Basic", NULL, NULL);
    expect_basic("Basic ", NULL, NULL);
    expect_basic("Bearer azpz", NULL, NULL);
    expect_basic("Basicazpz", NULL, NULL);
    expect_basic("Basic !!!!", NULL, NULL);
    expect_basic("Basic a2V5:czM=", NULL, NULL);      /* not base64 */
    expect_basic("Basic bm9jb2xvbg==", NULL, NULL);   /* "nocolon" */
    expect_basic("Basic a2V5Og==", NULL, NULL);       /* "key:" - empty secret */
    expect_basic("Basic OnNlY3JldA==", NULL, NULL);   /* ":secret" - empty key */
    expect_basic("Basic Og==", NULL, NULL);           /* ":" */
    expect_basic("Basic YQBiOmM=", NULL, NULL);       /* NUL inside */
    expect_basic("Basic  azpz", NULL, NULL);          /* two spaces */
    char *huge = malloc(2000);
    assert_non_null(huge);
    memcpy(huge, "Basic ", 6);
    memset(huge + 6, 'Q', 1993);
    huge[1999] = '\0';
    expect_basic(huge, NULL, NULL);
    free(huge);
}

static void test_parse_basic_capacity(void **state)
{
    char k[4], s[4];
    (void)state;
    /* "key123:s3cr:et": the key does not fit in 4 bytes; refused, not truncated. */
    assert_int_equal(user_parse_basic("Basic a2V5MTIzOnMzY3I6ZXQ=", k, sizeof(k), s, 64), 0);
    /* "key:s>?": the key fits exactly (3 + NUL), the secret too. */
    char s64[64];
    assert_int_equal(user_parse_basic("Basic a2V5OnM+Pw==", k, sizeof(k), s64, sizeof(s64)), 1);
    assert_string_equal(k, "key");
    assert_int_equal(user_parse_basic("Basic a2V5OnM+Pw==", k, sizeof(k), s, sizeof(s)), 1);
    assert_string_equal(s, "s>?");
    assert_int_equal(user_parse_basic("Basic a2V5OnM+Pw==", k, sizeof(k), s, 3), 0);
}

static void test_sha256_hex(void **state)
{
    char out[65];
    (void)state;
    user_sha256_hex("abc", out);
    assert_string_equal(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    user_sha256_hex("", out);
    assert_string_equal(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_printable(void **state)
{
    char out[8];
    (void)state;
    user_printable("Mozilla", out, sizeof(out));
    assert_string_equal(out, "Mozilla");
    user_printable("a\tb\x01\xc3\xa9", out, sizeof(out));
    assert_string_equal(out, "a?b???");
    user_printable("abcdefghij", out, sizeof(out)); /* truncated to the buffer */
    assert_string_equal(out, "abcdefg");
    user_printable("", out, sizeof(out));
    assert_string_equal(out, "");
}

static void test_builtin_roles(void **state)
{
    char p[USER_PERMS_MAX + 1];
    (void)state;
    assert_int_equal(user_role_builtin_perms("member", p, sizeof(p)), 1);
    assert_non_null(strstr(p, "message.send"));
    assert_null(strstr(p, "message.delete.any"));
    assert_int_equal(user_role_builtin_perms("moderator", p, sizeof(p)), 1);
    assert_non_null(strstr(p, "message.send")); /* a moderator is also a member */
    assert_non_null(strstr(p, "message.delete.any"));
    assert_null(strstr(p, "role.manage"));
    assert_int_equal(user_role_builtin_perms("tenant_admin", p, sizeof(p)), 1);
    assert_string_equal(p, "*");
    assert_int_equal(user_role_builtin_perms("admin", p, sizeof(p)), 0);
    assert_int_equal(user_role_builtin_perms("Member", p, sizeof(p)), 0);
    /* Every built-in permission is in the vocabulary. */
    assert_int_equal(user_role_builtin_perms("moderator", p, sizeof(p)), 1);
    for (char *save = NULL, *w = strtok_r(p, " ", &save); w; w = strtok_r(NULL, " ", &save))
        assert_int_equal(user_permission_known(w), 1);
}

static void test_role_names_and_permissions(void **state)
{
    (void)state;
    assert_int_equal(user_role_name_valid("support"), 1);
    assert_int_equal(user_role_name_valid("level-2_agent"), 1);
    assert_int_equal(user_role_name_valid("a"), 1);
    assert_int_equal(user_role_name_valid(""), 0);
    assert_int_equal(user_role_name_valid("2nd"), 0);
    assert_int_equal(user_role_name_valid("Support"), 0);
    assert_int_equal(user_role_name_valid("a.b"), 0); /* a dot would be a path in BSON */
    assert_int_equal(user_role_name_valid("a$b"), 0);
    assert_int_equal(user_role_name_valid("abcdefghijabcdefghijabcdefghijab"), 1); /* 32 */
    assert_int_equal(user_role_name_valid("abcdefghijabcdefghijabcdefghijabc"), 0);
    assert_int_equal(user_permission_known("message.send"), 1);
    assert_int_equal(user_permission_known("tenant.manage"), 1);
    assert_int_equal(user_permission_known("message"), 0);
    assert_int_equal(user_permission_known("message.sen"), 0);
    assert_int_equal(user_permission_known("*"), 0);
    assert_int_equal(user_permission_known(""), 0);
    assert_int_equal(user_permission_known("message.send user.read"), 0);
}

static void test_perms_add_list(void **state)
{
    char p[32] = "";
    (void)state;
    user_perms_add_list(p, sizeof(p), "a.b c.d");
    assert_string_equal(p, "a.b c.d");
    user_perms_add_list(p, sizeof(p), "c.d  e.f a.b");
    assert_string_equal(p, "a.b c.d e.f"); /* no duplicates, extra spaces ignored */
    user_perms_add_list(p, sizeof(p), "a");
    assert_string_equal(p, "a.b c.d e.f a"); /* "a" is not "a.b" */
    user_perms_add_list(p, sizeof(p), "waytoolongforwhatisleft.x g");
    assert_string_equal(p, "a.b c.d e.f a g"); /* what does not fit is dropped whole */
}

static void test_origins(void **state)
{
    (void)state;
    const char *good[] = {"https://app.example.com", "http://localhost:3000", "https://a.b-c.io",
                          "http://127.0.0.1:8080", "https://[::1]:8443", "https://x", NULL};
    const char *bad[] = {"", "*", "app.example.com", "ftp://x.com", "https://", "https://x.com/",
                         "https://x.com/path", "https://X.com", "https://x.com:0",
                         "https://x.com:65536", "https://x.com:08", "https://x.com:",
                         "https://-x.com", "https://x.com.", "https://x.com?q", "https://[]",
                         "https://x com", "javascript:alert(1)", NULL};
    for (const char *const *g = good; *g; g++)
        if (!user_origin_valid(*g))
            fail_msg("refused %s", *g);
    for (const char *const *b = bad; *b; b++)
        if (user_origin_valid(*b))
            fail_msg("accepted %s", *b);
}

static cJSON *js(const char *text)
{
    cJSON *j = cJSON_Parse(text);
    assert_non_null(j);
    return j;
}

static void test_settings_defaults_and_apply(void **state)
{
    user_settings s, before;
    char d[256];
    (void)state;
    user_settings_defaults(&s);
    assert_int_equal(s.self_registration, 0);
    assert_int_equal(s.send_rate_per_min, 60);
    assert_int_equal(s.api_rate_per_min, 1200);
    assert_int_equal(s.message_max_chars, 5000);
    assert_int_equal(s.group_member_max, 1000);
    assert_int_equal(s.edit_window_s, 900);
    assert_int_equal(s.retention_days, 0);
    assert_int_equal(s.n_origins, 0);
    assert_string_equal(s.webhook_secret, "");
    cJSON *p = js("{\"self_registration\":true,\"message_max_chars\":200,"
                  "\"ws_allowed_origins\":[\"https://a.io\",\"http://localhost:3000\"],"
                  "\"webhook_secret\":\"0123456789abcdef0123456789abcdef\"}");
    assert_int_equal(user_settings_apply(p, &s, d, sizeof(d)), CM_OK);
    cJSON_Delete(p);
    assert_int_equal(s.self_registration, 1);
    assert_int_equal(s.message_max_chars, 200);
    assert_int_equal(s.send_rate_per_min, 60); /* untouched */
    assert_int_equal(s.n_origins, 2);
    assert_string_equal(s.origins[1], "http://localhost:3000");
    /* A later patch replaces the whole origin list. */
    p = js("{\"ws_allowed_origins\":[]}");
    assert_int_equal(user_settings_apply(p, &s, d, sizeof(d)), CM_OK);
    cJSON_Delete(p);
    assert_int_equal(s.n_origins, 0);
    /* The CORS list is its own: setting it leaves the WebSocket list alone, and the reverse. */
    p = js("{\"cors_allowed_origins\":[\"https://app.io\",\"http://[::1]:8080\"]}");
    assert_int_equal(user_settings_apply(p, &s, d, sizeof(d)), CM_OK);
    cJSON_Delete(p);
    assert_int_equal(s.n_cors_origins, 2);
    assert_string_equal(s.cors_origins[1], "http://[::1]:8080");
    assert_int_equal(s.n_origins, 0);
    p = js("{\"cors_allowed_origins\":[\"https://app.io\",\"https://app.io\"]}");
    assert_int_equal(user_settings_apply(p, &s, d, sizeof(d)), CM_EINVAL);
    cJSON_Delete(p);
    assert_non_null(strstr(d, "'cors_allowed_origins' repeats https://app.io"));
    assert_int_equal(s.n_cors_origins, 2); /* a refused patch changes nothing */
    assert_string_equal(s.cors_origins[0], "https://app.io");

    const struct {
        const char *patch, *want;
    } bad[] = {
        {"[]", "must be an object"},
        {"{\"status\":\"active\"}", "unknown field 'status'"},
        {"{\"self_registration\":\"yes\"}", "must be a boolean"},
        {"{\"send_rate_per_min\":0}", "in [1, 100000]"},
        {"{\"send_rate_per_min\":1.5}", "in [1, 100000]"},
        {"{\"message_max_chars\":20001}", "in [1, 20000]"},
        {"{\"group_member_max\":1}", "in [2, 100000]"},
        {"{\"edit_window_s\":-1}", "in [0, 604800]"},
        {"{\"retention_days\":{\"$gt\":0}}", "must be an integer"},
        {"{\"ws_allowed_origins\":\"https://a.io\"}", "array of at most 20"},
        {"{\"ws_allowed_origins\":[\"https://a.io/x\"]}", "item 0 must be an origin"},
        {"{\"ws_allowed_origins\":[\"https://a.io\",\"https://a.io\"]}", "repeats"},
        {"{\"ws_allowed_origins\":[1]}", "item 0 must be an origin"},
        {"{\"webhook_secret\":\"short\"}", "32..128 printable"},
        {"{\"webhook_secret\":\"0123456789abcdef 0123456789abcdef\"}", "32..128 printable"},
        {"{\"webhook_secret\":null}", "must be a string"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        p = js(bad[i].patch);
        before = s;
        d[0] = '\0';
        if (user_settings_apply(p, &s, d, sizeof(d)) != CM_EINVAL)
            fail_msg("accepted %s", bad[i].patch);
        if (strstr(d, bad[i].want) == NULL)
            fail_msg("%s: detail '%s' lacks '%s'", bad[i].patch, d, bad[i].want);
        assert_memory_equal(&s, &before, sizeof(s)); /* unchanged */
        cJSON_Delete(p);
    }
    /* 21 origins: one too many. */
    char big[4096] = "{\"ws_allowed_origins\":[";
    for (int i = 0; i < 21; i++)
        snprintf(big + strlen(big), sizeof(big) - strlen(big), "%s\"https://h%d.io\"", i ? "," : "", i);
    snprintf(big + strlen(big), sizeof(big) - strlen(big), "]}");
    p = js(big);
    assert_int_equal(user_settings_apply(p, &s, d, sizeof(d)), CM_EINVAL);
    cJSON_Delete(p);
}

static void test_regex_prefix(void **state)
{
    char re[64];
    (void)state;
    assert_int_equal(user_regex_prefix("ali", re, sizeof(re)), 0);
    assert_string_equal(re, "^ali");
    assert_int_equal(user_regex_prefix("a.b*c", re, sizeof(re)), 0);
    assert_string_equal(re, "^a\\.b\\*c");
    assert_int_equal(user_regex_prefix("^$|?+()[]{}\\", re, sizeof(re)), 0);
    assert_string_equal(re, "^\\^\\$\\|\\?\\+\\(\\)\\[\\]\\{\\}\\\\");
    assert_int_equal(user_regex_prefix("\xc3\xa9l", re, sizeof(re)), 0); /* UTF-8 passes */
    assert_string_equal(re, "^\xc3\xa9l");
    assert_int_equal(user_regex_prefix("abc", re, 4), -1); /* "^abc" and the NUL need 5 */
    assert_int_equal(user_regex_prefix("abc", re, 5), 0);
    assert_int_equal(user_regex_prefix(".", re, 3), -1);
}

static void test_email_and_search_rules(void **state)
{
    char out[300], keys[USER_SEARCH_KEYS_MAX][65];
    (void)state;
    assert_int_equal(user_email_normalize("Ada@Example.COM", out, sizeof(out)), 1);
    assert_string_equal(out, "ada@example.com");
    assert_int_equal(user_email_normalize("a.b+tag@sub.example.co", out, sizeof(out)), 1);
    const char *bad[] = {"", "plain", "@x.com", "a@", "a@b", "a@@b.com", "a b@c.com", "a@b..com",
                         "a@-b.com", "a@b.com.", "a@b_c.com", "<a>@b.com", "a@b.com\n", NULL};
    for (const char *const *b = bad; *b; b++)
        if (user_email_normalize(*b, out, sizeof(out)))
            fail_msg("accepted %s", *b);
    int n = user_search_keys("Alice  van Dijk", "alice.v", keys);
    assert_int_equal(n, 5);
    assert_string_equal(keys[0], "alice  van dijk");
    assert_string_equal(keys[1], "alice");
    assert_string_equal(keys[2], "van");
    assert_string_equal(keys[3], "dijk");
    assert_string_equal(keys[4], "alice.v");
    assert_int_equal(user_search_keys("Bob", "bob", keys), 1); /* duplicates dropped */
    /* A long name is cut at a character boundary, never inside one. */
    char name[101];
    memset(name, 'a', 63);
    memcpy(name + 63, "\xc3\xa9\xc3\xa9", 5);
    assert_int_equal(user_search_keys(name, NULL, keys), 1);
    assert_int_equal(strlen(keys[0]), 63);
    assert_int_equal(user_search_normalize("AbC", out, sizeof(out)), 1);
    assert_string_equal(out, "abc");
    assert_int_equal(user_search_normalize("", out, sizeof(out)), 0);
    assert_int_equal(user_search_normalize("a\x01", out, sizeof(out)), 0);
    assert_int_equal(user_search_normalize("\xff", out, sizeof(out)), 0);
}

static void test_metadata(void **state)
{
    char d[256], *out = NULL;
    (void)state;
    cJSON *m = js("{\"a\":{\"b\":[1,2,{\"c\":true}]}}");
    assert_int_equal(user_metadata_check(m, &out, d, sizeof(d)), CM_OK);
    assert_string_equal(out, "{\"a\":{\"b\":[1,2,{\"c\":true}]}}");
    free(out);
    cJSON_Delete(m);
    m = js("{\"a\":{\"b\":{\"c\":{\"d\":1}}}}"); /* depth 4: the limit */
    assert_int_equal(user_metadata_check(m, &out, d, sizeof(d)), CM_OK);
    free(out);
    cJSON_Delete(m);
    m = js("{\"a\":{\"b\":{\"c\":{\"d\":{}}}}}");
    assert_int_equal(user_metadata_check(m, &out, d, sizeof(d)), CM_EINVAL);
    cJSON_Delete(m);
    m = js("[]");
    assert_int_equal(user_metadata_check(m, &out, d, sizeof(d)), CM_EINVAL);
    cJSON_Delete(m);
    char *big = malloc(USER_METADATA_MAX + 16);
    snprintf(big, USER_METADATA_MAX + 16, "{\"x\":\"%0*d\"}", USER_METADATA_MAX - 8, 0);
    m = js(big); /* exactly 4096 bytes */
    assert_int_equal(strlen(big), USER_METADATA_MAX);
    assert_int_equal(user_metadata_check(m, &out, d, sizeof(d)), CM_OK);
    free(out);
    cJSON_Delete(m);
    snprintf(big, USER_METADATA_MAX + 16, "{\"x\":\"%0*d\"}", USER_METADATA_MAX - 7, 0);
    m = js(big);
    assert_int_equal(user_metadata_check(m, &out, d, sizeof(d)), CM_ETOOBIG);
    cJSON_Delete(m);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_user_id),
        cmocka_unit_test(test_username_normalize),
        cmocka_unit_test(test_password_length),
        cmocka_unit_test(test_password_counts_characters_not_bytes),
        cmocka_unit_test(test_password_common_and_invalid),
        cmocka_unit_test(test_parse_basic_good),
        cmocka_unit_test(test_parse_basic_malformed),
        cmocka_unit_test(test_parse_basic_capacity),
        cmocka_unit_test(test_sha256_hex),
        cmocka_unit_test(test_printable),
        cmocka_unit_test(test_builtin_roles),
        cmocka_unit_test(test_role_names_and_permissions),
        cmocka_unit_test(test_perms_add_list),
        cmocka_unit_test(test_origins),
        cmocka_unit_test(test_settings_defaults_and_apply),
        cmocka_unit_test(test_regex_prefix),
        cmocka_unit_test(test_email_and_search_rules),
        cmocka_unit_test(test_metadata),
    };
    return cmocka_run_group_tests_name("user_rules", tests, NULL, NULL);
}
