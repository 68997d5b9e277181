/* notification_rules_test.c - unit tests of the notification rules (cmocka). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "notification.h"

static cJSON *msg(const char *json)
{
    cJSON *o = cJSON_Parse(json);
    assert_non_null(o);
    return o;
}

static void test_classify(void **state)
{
    nf_type t = NF_TYPE_COUNT;
    cJSON *m = msg("{\"sender_id\":\"ann\",\"type\":\"text\",\"text\":\"hi\","
                   "\"mentions\":[\"bob\"]}");
    (void)state;
    assert_int_equal(nf_classify_message(m, "ann", NULL, &t), 0); /* own message */
    assert_int_equal(nf_classify_message(m, "bob", "bob", &t), 1);
    assert_string_equal(nf_type_name(t), "mention"); /* mention beats reply */
    assert_int_equal(nf_classify_message(m, "cat", "cat", &t), 1);
    assert_string_equal(nf_type_name(t), "reply");
    assert_int_equal(nf_classify_message(m, "dan", "cat", &t), 1);
    assert_string_equal(nf_type_name(t), "message");
    cJSON_Delete(m);
    m = msg("{\"sender_id\":\"ann\",\"type\":\"system\",\"text\":\"bob joined\"}");
    assert_int_equal(nf_classify_message(m, "bob", NULL, &t), 0);
    cJSON_Delete(m);
}

static void test_preview(void **state)
{
    char out[1024], big[1200];
    size_t i;
    (void)state;
    nf_preview("hello", out, sizeof(out));
    assert_string_equal(out, "hello");
    /* 300 two-byte characters: cut to 200 whole characters plus the ellipsis. */
    for (i = 0; i < 300; i++)
        memcpy(big + 2 * i, "\xC3\xA9", 2);
    big[600] = '\0';
    nf_preview(big, out, sizeof(out));
    assert_int_equal(strlen(out), 400 + 3);
    assert_memory_equal(out + 400, "\xE2\x80\xA6", 3);
    /* A small buffer never splits a character. */
    nf_preview(big, out, 8);
    assert_int_equal(strlen(out), 4 + 3);
    nf_preview(NULL, out, sizeof(out));
    assert_string_equal(out, "");
}

static void test_dedupe_key(void **state)
{
    char k[64];
    (void)state;
    assert_int_equal(nf_dedupe_key("t", "e", "u", "in_app", k, sizeof(k)), CM_OK);
    assert_string_equal(k, "t|e|u|in_app");
    assert_int_equal(nf_dedupe_key("t", "e", "u", "in_app", k, 5), CM_ETOOBIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_preview),
        cmocka_unit_test(test_dedupe_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
