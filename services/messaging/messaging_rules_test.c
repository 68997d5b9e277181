/* messaging_rules_test.c - unit tests of the messaging rules: text, ids, keys, cursors. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "common/uuid.h"
#include "messaging.h"

/* `count` copies of `unit` as a heap string. */
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

static void expect_text_ok(const char *text)
{
    char why[160];
    if (messaging_text_problem(text, MSG_TEXT_MAX, why, sizeof(why)))
        fail_msg("refused (%s): %.60s", why, text);
}

static void expect_text_refused(const char *text, const char *want)
{
    char why[160];
    if (!messaging_text_problem(text, MSG_TEXT_MAX, why, sizeof(why)))
        fail_msg("accepted: %.60s", text);
    assert_string_equal(why, want);
}

static void test_text_ordinary(void **state)
{
    (void)state;
    expect_text_ok("hello");
    expect_text_ok("x");
    expect_text_ok("  padded  ");
    expect_text_ok("caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80");
    expect_text_ok("line one\nline two\n\tindented");
}

static void test_text_empty_and_whitespace(void **state)
{
    (void)state;
    expect_text_refused("", "field 'text' must not be empty");
    expect_text_refused(" ", "field 'text' must not be only whitespace");
    expect_text_refused("   \n\t  \n", "field 'text' must not be only whitespace");
    expect_text_refused("\n", "field 'text' must not be only whitespace");
}

static void test_text_length_in_code_points(void **state)
{
    (void)state;
    char *s = repeat("a", MSG_TEXT_MAX);
    expect_text_ok(s);
    free(s);
    s = repeat("a", MSG_TEXT_MAX + 1);
    expect_text_refused(s, "field 'text' has 5001 characters, more than the 5000 allowed");
    free(s);
    /* 5000 characters in 10000 bytes (2-byte), 15000 (3-byte) and 20000 (4-byte). */
    const char *units[] = {"\xc3\xa9", "\xe6\x97\xa5", "\xf0\x9f\x98\x80", NULL};
    for (int i = 0; units[i]; i++) {
        s = repeat(units[i], MSG_TEXT_MAX);
        expect_text_ok(s);
        free(s);
        s = repeat(units[i], MSG_TEXT_MAX + 1);
        expect_text_refused(s, "field 'text' has 5001 characters, more than the 5000 allowed");
        free(s);
    }
    /* Mixed widths: 4999 ASCII + one emoji is 5000 characters. */
    char *mixed = malloc(MSG_TEXT_MAX + 8);
    assert_non_null(mixed);
    memset(mixed, 'b', MSG_TEXT_MAX - 1);
    memcpy(mixed + MSG_TEXT_MAX - 1, "\xf0\x9f\x98\x80", 5);
    expect_text_ok(mixed);
    free(mixed);
}

static void test_text_control_characters(void **state)
{
    const char *want = "field 'text' must not hold control characters other than newline and tab";
    (void)state;
    expect_text_refused("a\x01z", want);
    expect_text_refused("bell\x07", want);
    expect_text_refused("\x1b[31mred", want); /* terminal escapes */
    expect_text_refused("a\rb", want);
    expect_text_refused("del\x7f", want);
    expect_text_refused("nel\xc2\x85", want); /* C1 */
    expect_text_refused("\xc2\x9f", want);
    expect_text_refused(" \x0b ", want);      /* vertical tab: a control, not allowed space */
    expect_text_ok("tab\there");
    expect_text_ok("nbsp\xc2\xa0here");       /* U+00A0 is not a control */
}

static void test_text_invalid_utf8(void **state)
{
    (void)state;
    expect_text_refused("\xff", "field 'text' must be valid UTF-8");
    expect_text_refused("ab\xc0\x80", "field 'text' must be valid UTF-8");
    expect_text_refused("\xed\xa0\x80", "field 'text' must be valid UTF-8");
}

static void test_client_msg_id(void **state)
{
    char id[80];
    (void)state;
    assert_int_equal(messaging_client_msg_id_valid("c1"), 1);
    assert_int_equal(messaging_client_msg_id_valid("018bcfe5-6800-7abc-8def-0123456789ab"), 1);
    assert_int_equal(messaging_client_msg_id_valid("a!#$%&'()*+,-./:;<=>?@[]^_`{|}~"), 1);
    assert_int_equal(messaging_client_msg_id_valid(""), 0);
    assert_int_equal(messaging_client_msg_id_valid("a b"), 0);
    assert_int_equal(messaging_client_msg_id_valid("tab\t"), 0);
    assert_int_equal(messaging_client_msg_id_valid("del\x7f"), 0);
    assert_int_equal(messaging_client_msg_id_valid("caf\xc3\xa9"), 0);
    memset(id, 'x', 64);
    id[64] = '\0';
    assert_int_equal(messaging_client_msg_id_valid(id), 1);
    id[64] = 'x';
    id[65] = '\0';
    assert_int_equal(messaging_client_msg_id_valid(id), 0);
}

static void test_direct_key_is_order_independent(void **state)
{
    char k1[128], k2[128];
    (void)state;
    assert_int_equal(messaging_direct_key("t1", "bob", "alice", k1, sizeof(k1)), 0);
    assert_int_equal(messaging_direct_key("t1", "alice", "bob", k2, sizeof(k2)), 0);
    assert_string_equal(k1, "t1/alice/bob");
    assert_string_equal(k1, k2);
    /* Prefixes of each other sort the shorter first. */
    assert_int_equal(messaging_direct_key("t", "ab", "a", k1, sizeof(k1)), 0);
    assert_int_equal(messaging_direct_key("t", "a", "ab", k2, sizeof(k2)), 0);
    assert_string_equal(k1, "t/a/ab");
    assert_string_equal(k1, k2);
    /* Another tenant, another key. */
    assert_int_equal(messaging_direct_key("t2", "alice", "bob", k2, sizeof(k2)), 0);
    assert_string_not_equal(k1, k2);
    /* The same user twice (a note to self). */
    assert_int_equal(messaging_direct_key("t", "x", "x", k1, sizeof(k1)), 0);
    assert_string_equal(k1, "t/x/x");
}

static void test_direct_key_capacity(void **state)
{
    char k[12];
    (void)state;
    assert_int_equal(messaging_direct_key("t1", "alice", "bob", k, sizeof(k)), -1); /* 12+NUL */
    char k13[13];
    assert_int_equal(messaging_direct_key("t1", "alice", "bob", k13, sizeof(k13)), 0);
    assert_string_equal(k13, "t1/alice/bob");
}

static void test_seq_cursor(void **state)
{
    int64_t seq = -7;
    (void)state;
    assert_int_equal(messaging_seq_cursor_parse("0", &seq), 1);
    assert_int_equal(seq, 0);
    assert_int_equal(messaging_seq_cursor_parse("42", &seq), 1);
    assert_int_equal(seq, 42);
    assert_int_equal(messaging_seq_cursor_parse("999999999999999999", &seq), 1); /* 18 digits */
    assert_int_equal(seq, 999999999999999999LL);
    seq = -7;
    const char *bad[] = {"",   "-1",  "+1",   " 1",   "1 ",  "1a",  "a1", "0x10", "1.5",
                         "1e3", "--1", "9223372036854775808", "99999999999999999999999",
                         "１", NULL};
    for (int i = 0; bad[i]; i++) {
        if (messaging_seq_cursor_parse(bad[i], &seq))
            fail_msg("seq cursor \"%s\" accepted as %lld", bad[i], (long long)seq);
        assert_int_equal(seq, -7); /* unchanged */
    }
    assert_int_equal(messaging_seq_cursor_parse(NULL, &seq), 0);
}

static void test_key_cursor(void **state)
{
    char id[65], in[128];
    int64_t ms = -7;
    const char *uuid = "018bcfe5-6800-7abc-8def-0123456789ab";
    (void)state;
    snprintf(in, sizeof(in), "1700000000000_%s", uuid);
    assert_int_equal(messaging_key_cursor_parse(in, 1, &ms, id), 1);
    assert_int_equal(ms, 1700000000000LL);
    assert_string_equal(id, uuid);
    snprintf(in, sizeof(in), "0_%s", uuid);
    assert_int_equal(messaging_key_cursor_parse(in, 1, &ms, id), 1);
    assert_int_equal(ms, 0);

    ms = -7;
    /* Around a valid id: what goes before it and after it. */
    static const char *const around[][2] = {
        {"", ""},        {"_", ""},      {"-5_", ""},   {"abc_", ""}, {"12x_", ""},
        {"12__", ""},    {"12_", "x"},   {"12_", "_"},  {"+12_", ""}, {" 12_", ""},
        {"99999999999999999999_", ""},   {"12-", ""},   {"12", ""},
    };
    for (size_t i = 0; i < sizeof(around) / sizeof(around[0]); i++) {
        snprintf(in, sizeof(in), "%s%s%s", around[i][0], uuid, around[i][1]);
        if (messaging_key_cursor_parse(in, 1, &ms, id))
            fail_msg("conversation cursor \"%s\" accepted", in);
        assert_int_equal(ms, -7);
    }
    const char *bad[] = {"",
                         "12_",
                         "12_not-a-uuid",
                         "12_018BCFE5-6800-7ABC-8DEF-0123456789AB",
                         "12_018bcfe5-6800-7abc-8def-0123456789a",
                         "12_018bcfe5-6800-7abc-8def-0123456789abc",
                         NULL};
    for (int i = 0; bad[i]; i++)
        if (messaging_key_cursor_parse(bad[i], 1, &ms, id))
            fail_msg("conversation cursor \"%s\" accepted", bad[i]);
    assert_int_equal(messaging_key_cursor_parse(NULL, 1, &ms, id), 0);
}

static bson_t *stored_message(void)
{
    bson_t *d = bson_new();
    BSON_APPEND_UTF8(d, "_id", "018bcfe5-6800-7abc-8def-0123456789ab");
    BSON_APPEND_UTF8(d, "tenant", "tenant-1");
    BSON_APPEND_UTF8(d, "conversation_id", "018bcfe5-6800-7abc-8def-000000000001");
    BSON_APPEND_INT64(d, "seq", 12);
    BSON_APPEND_UTF8(d, "sender_id", "alice");
    BSON_APPEND_UTF8(d, "text", "hi \"there\"\n\xe6\x97\xa5");
    BSON_APPEND_UTF8(d, "client_msg_id", "c-1");
    BSON_APPEND_INT64(d, "created_at", 1700000000123LL);
    return d;
}

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "(missing)";
}

static void test_message_json(void **state)
{
    (void)state;
    bson_t *d = stored_message();
    cJSON *m = messaging_message_json(d);
    assert_non_null(m);
    assert_string_equal(jstr(m, "id"), "018bcfe5-6800-7abc-8def-0123456789ab");
    assert_string_equal(jstr(m, "conversation_id"), "018bcfe5-6800-7abc-8def-000000000001");
    assert_int_equal(cJSON_GetObjectItem(m, "seq")->valueint, 12);
    assert_string_equal(jstr(m, "sender_id"), "alice");
    assert_string_equal(jstr(m, "type"), "text");
    assert_string_equal(jstr(m, "text"), "hi \"there\"\n\xe6\x97\xa5");
    assert_string_equal(jstr(m, "client_msg_id"), "c-1");
    assert_string_equal(jstr(m, "created_at"), "2023-11-14T22:13:20.123Z");
    assert_null(cJSON_GetObjectItem(m, "tenant")); /* internal, not part of the API object */
    cJSON_Delete(m);
    bson_destroy(d);
}

static void test_event_envelope(void **state)
{
    char *ev = NULL;
    bson_t *d = bson_new();
    (void)state;
    BSON_APPEND_UTF8(d, "_id", "018bcfe5-6800-7abc-8def-0123456789ab");
    BSON_APPEND_UTF8(d, "tenant", "tenant-1");
    BSON_APPEND_UTF8(d, "conversation_id", "018bcfe5-6800-7abc-8def-000000000001");
    BSON_APPEND_INT64(d, "eseq", 7);
    BSON_APPEND_UTF8(d, "type", "message.created");
    BSON_APPEND_UTF8(d, "data", "{\"text\":\"hi \\\"there\\\"\",\"seq\":12}");
    BSON_APPEND_DATE_TIME(d, "created_at", 1700000000123LL);
    assert_int_equal(messaging_event_envelope(d, &ev), CM_OK);
    cJSON *e = cJSON_Parse(ev);
    assert_non_null(e);
    assert_string_equal(jstr(e, "specversion"), "1.0");
    assert_string_equal(jstr(e, "type"), "message.created");
    /* The event id is the log entry's id (for message.created, the message id), so a
     * republished event is deduplicated downstream. */
    assert_string_equal(jstr(e, "id"), "018bcfe5-6800-7abc-8def-0123456789ab");
    assert_string_equal(jstr(e, "subject"), "018bcfe5-6800-7abc-8def-000000000001");
    assert_string_equal(jstr(e, "tenant"), "tenant-1");
    assert_string_equal(jstr(e, "time"), "2023-11-14T22:13:20.123Z");
    assert_int_equal(cJSON_GetObjectItem(e, "eseq")->valueint, 7);
    assert_null(cJSON_GetObjectItem(e, "audience"));
    const cJSON *data = cJSON_GetObjectItem(e, "data");
    assert_string_equal(jstr(data, "text"), "hi \"there\"");
    assert_int_equal(cJSON_GetObjectItem(data, "seq")->valueint, 12);
    assert_string_equal(messaging_event_topic("message.created"), "messages");
    assert_string_equal(messaging_event_topic("reaction.added"), "messages");
    assert_string_equal(messaging_event_topic("message.delivered"), "conversations");
    assert_string_equal(messaging_event_topic("member.added"), "conversations");
    cJSON_Delete(e);
    free(ev);
    bson_destroy(d);
}

static messaging_rule_input facts(const char *type, messaging_role role)
{
    messaging_rule_input in = {0};
    in.type = type;
    in.role = role;
    in.owners = 1;
    in.members = 3;
    return in;
}

/* Expects `act` allowed (want NULL) or refused with `want` (and `conflict` when it is state). */
static void expect_rule(messaging_action act, messaging_rule_input in, const char *want, int conflict)
{
    int got_conflict = -1;
    const char *why = messaging_rule(act, &in, &got_conflict);
    if (want == NULL) {
        if (why != NULL)
            fail_msg("action %d by role %d in %s refused: %s", act, in.role, in.type, why);
        return;
    }
    if (why == NULL)
        fail_msg("action %d by role %d in %s allowed; wanted \"%s\"", act, in.role, in.type, want);
    assert_string_equal(why, want);
    assert_int_equal(got_conflict, conflict);
}

static void test_rules_direct(void **state)
{
    messaging_rule_input m = facts("direct", MSG_ROLE_MEMBER);
    (void)state;
    expect_rule(MSG_ACT_SEND, m, NULL, 0);
    expect_rule(MSG_ACT_PIN, m, NULL, 0);
    expect_rule(MSG_ACT_UPDATE, m, "a direct conversation cannot be changed", 0);
    expect_rule(MSG_ACT_DELETE, m, "a direct conversation cannot be deleted; archive it instead", 0);
    expect_rule(MSG_ACT_ADD_MEMBERS, m, "a direct conversation has exactly two members", 0);
    expect_rule(MSG_ACT_REMOVE_MEMBER, m, "a direct conversation has exactly two members", 0);
    expect_rule(MSG_ACT_SET_ROLE, m, "a direct conversation has no roles", 0);
    expect_rule(MSG_ACT_LEAVE, m, "a direct conversation cannot be left; archive it instead", 0);
    expect_rule(MSG_ACT_MODERATE, m, "only the sender deletes a message for everyone", 0);
    m.tenant_moderator = 1;
    expect_rule(MSG_ACT_MODERATE, m, NULL, 0);
}

static void test_rules_group_roles(void **state)
{
    const messaging_action managed[] = {MSG_ACT_UPDATE, MSG_ACT_ADD_MEMBERS, MSG_ACT_PIN,
                                        MSG_ACT_MODERATE};
    (void)state;
    for (size_t i = 0; i < sizeof(managed) / sizeof(managed[0]); i++) {
        expect_rule(managed[i], facts("group", MSG_ROLE_OWNER), NULL, 0);
        expect_rule(managed[i], facts("channel", MSG_ROLE_ADMIN), NULL, 0);
        int c;
        messaging_rule_input in = facts("group", MSG_ROLE_MEMBER);
        assert_non_null(messaging_rule(managed[i], &in, &c));
        assert_int_equal(c, 0);
    }
    expect_rule(MSG_ACT_UPDATE, facts("group", MSG_ROLE_MEMBER), "only owners and admins change the conversation", 0);
    expect_rule(MSG_ACT_DELETE, facts("group", MSG_ROLE_ADMIN), "only an owner deletes the conversation", 0);
    expect_rule(MSG_ACT_DELETE, facts("channel", MSG_ROLE_OWNER), NULL, 0);
    expect_rule(MSG_ACT_SEND, facts("group", MSG_ROLE_MEMBER), NULL, 0);
    expect_rule(MSG_ACT_LEAVE, facts("group", MSG_ROLE_MEMBER), NULL, 0);
}

static void test_rules_channel_posting(void **state)
{
    messaging_rule_input in = facts("channel", MSG_ROLE_MEMBER);
    (void)state;
    expect_rule(MSG_ACT_SEND, in, "only owners and admins post in this channel", 0);
    in.members_can_post = 1;
    expect_rule(MSG_ACT_SEND, in, NULL, 0);
    expect_rule(MSG_ACT_SEND, facts("channel", MSG_ROLE_ADMIN), NULL, 0);
}

static void test_rules_removing_and_roles(void **state)
{
    messaging_rule_input in = facts("group", MSG_ROLE_ADMIN);
    (void)state;
    in.target = MSG_ROLE_MEMBER;
    expect_rule(MSG_ACT_REMOVE_MEMBER, in, NULL, 0);
    in.target = MSG_ROLE_ADMIN;
    expect_rule(MSG_ACT_REMOVE_MEMBER, in, "admins remove members, not other admins", 0);
    in.target = MSG_ROLE_OWNER;
    expect_rule(MSG_ACT_REMOVE_MEMBER, in, "an owner cannot be removed; owners leave by themselves", 0);
    in.role = MSG_ROLE_OWNER;
    in.target = MSG_ROLE_ADMIN;
    expect_rule(MSG_ACT_REMOVE_MEMBER, in, NULL, 0);
    in.role = MSG_ROLE_MEMBER;
    expect_rule(MSG_ACT_REMOVE_MEMBER, in, "only owners and admins remove members", 0);
    /* Roles: owners only; the last owner cannot step down. */
    in = facts("group", MSG_ROLE_ADMIN);
    in.target = MSG_ROLE_MEMBER;
    in.new_role = MSG_ROLE_ADMIN;
    expect_rule(MSG_ACT_SET_ROLE, in, "only an owner changes roles", 0);
    in.role = MSG_ROLE_OWNER;
    expect_rule(MSG_ACT_SET_ROLE, in, NULL, 0);
    in.target = MSG_ROLE_OWNER;
    in.new_role = MSG_ROLE_MEMBER;
    expect_rule(MSG_ACT_SET_ROLE, in, "the last owner cannot step down; make another member owner first", 1);
    in.owners = 2;
    expect_rule(MSG_ACT_SET_ROLE, in, NULL, 0);
    /* Leaving: the last owner first hands over, unless they are the last member. */
    in = facts("group", MSG_ROLE_OWNER);
    expect_rule(MSG_ACT_LEAVE, in, "the last owner must make another member owner before leaving", 1);
    in.members = 1;
    expect_rule(MSG_ACT_LEAVE, in, NULL, 0);
}

static void test_roles_parse(void **state)
{
    (void)state;
    assert_int_equal(messaging_role_parse("owner"), MSG_ROLE_OWNER);
    assert_int_equal(messaging_role_parse("admin"), MSG_ROLE_ADMIN);
    assert_int_equal(messaging_role_parse("member"), MSG_ROLE_MEMBER);
    assert_int_equal(messaging_role_parse("Owner"), MSG_ROLE_NONE);
    assert_int_equal(messaging_role_parse(NULL), MSG_ROLE_NONE);
    assert_string_equal(messaging_role_name(MSG_ROLE_ADMIN), "admin");
}

static void test_time_parse(void **state)
{
    int64_t ms = -1;
    (void)state;
    assert_int_equal(messaging_time_parse("1970-01-01T00:00:00Z", &ms), 1);
    assert_int_equal(ms, 0);
    assert_int_equal(messaging_time_parse("2023-11-14T22:13:20.123Z", &ms), 1);
    assert_int_equal(ms, 1700000000123LL);
    assert_int_equal(messaging_time_parse("2024-02-29T12:00:00.5Z", &ms), 1);
    assert_int_equal(ms, 1709208000500LL);
    assert_int_equal(messaging_time_parse("2099-12-31T23:59:59.123456z", &ms), 1);
    ms = -1;
    const char *bad[] = {"", "2024-02-30T00:00:00Z", "2023-02-29T00:00:00Z", "2024-13-01T00:00:00Z",
                         "2024-01-01T24:00:00Z", "2024-01-01T00:60:00Z", "2024-01-01 00:00:00Z",
                         "2024-01-01T00:00:00", "2024-01-01T00:00:00+01:00", "2024-01-01T00:00:00.Z",
                         "2024-01-01T00:00:00Zx", "tomorrow", NULL};
    for (int i = 0; bad[i]; i++)
        if (messaging_time_parse(bad[i], &ms))
            fail_msg("time \"%s\" accepted", bad[i]);
    assert_int_equal(ms, -1);
}

static void test_emoji(void **state)
{
    (void)state;
    assert_null(messaging_emoji_problem("\xf0\x9f\x91\x8d"));
    assert_null(messaging_emoji_problem("\xe2\x9d\xa4\xef\xb8\x8f"));
    assert_null(messaging_emoji_problem(":party:"));
    assert_string_equal(messaging_emoji_problem(""), "the emoji must be 1..32 bytes");
    assert_string_equal(messaging_emoji_problem("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), "the emoji must be 1..32 bytes");
    assert_string_equal(messaging_emoji_problem("a b"), "the emoji must not hold whitespace");
    assert_string_equal(messaging_emoji_problem("\x07"), "the emoji must be valid UTF-8 without control characters");
    assert_string_equal(messaging_emoji_problem("\xff"), "the emoji must be valid UTF-8 without control characters");
}

static void test_member_sees(void **state)
{
    (void)state;
    assert_int_equal(messaging_member_sees("active", -1, 0, 99, 99), 1);
    assert_int_equal(messaging_member_sees("left", 5, 1000, 5, 5000), 1);  /* seq decides */
    assert_int_equal(messaging_member_sees("left", 5, 1000, 6, 10), 0);
    assert_int_equal(messaging_member_sees("left", -1, 1000, 6, 999), 1);  /* older record */
    assert_int_equal(messaging_member_sees("left", -1, 1000, 6, 1000), 0);
    assert_int_equal(messaging_member_sees("banned", -1, 0, 1, 1), 0);
    assert_int_equal(messaging_member_sees(NULL, 9, 9999, 1, 1), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_ordinary),
        cmocka_unit_test(test_text_empty_and_whitespace),
        cmocka_unit_test(test_text_length_in_code_points),
        cmocka_unit_test(test_text_control_characters),
        cmocka_unit_test(test_text_invalid_utf8),
        cmocka_unit_test(test_client_msg_id),
        cmocka_unit_test(test_direct_key_is_order_independent),
        cmocka_unit_test(test_direct_key_capacity),
        cmocka_unit_test(test_seq_cursor),
        cmocka_unit_test(test_key_cursor),
        cmocka_unit_test(test_message_json),
        cmocka_unit_test(test_event_envelope),
        cmocka_unit_test(test_rules_direct),
        cmocka_unit_test(test_rules_group_roles),
        cmocka_unit_test(test_rules_channel_posting),
        cmocka_unit_test(test_rules_removing_and_roles),
        cmocka_unit_test(test_roles_parse),
        cmocka_unit_test(test_time_parse),
        cmocka_unit_test(test_emoji),
        cmocka_unit_test(test_member_sees),
    };
    return cmocka_run_group_tests_name("messaging_rules", tests, NULL, NULL);
}
