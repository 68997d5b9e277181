/* messaging_filters_test.c - unit tests of the tenant's text filters: blocklist, links, hook
 * signature. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "messaging.h"

static void expect_masked(const char *text, const messaging_block_rule *rules, size_t n,
                          const char *want)
{
    char *out = NULL;
    size_t which = 99;
    assert_int_equal(messaging_blocklist_apply(text, rules, n, &out, &which), 0);
    assert_string_equal(out, want);
    free(out);
}

static void test_words_are_whole_and_case_insensitive(void **state)
{
    const messaging_block_rule mask[] = {{"darn", 0, 1}};
    (void)state;
    expect_masked("darn it", mask, 1, "**** it");
    expect_masked("DaRn, darn!", mask, 1, "****, ****!");
    expect_masked("darning and undarned stay", mask, 1, "darning and undarned stay");
    expect_masked("", mask, 1, "");
}

static void test_reject_names_the_rule(void **state)
{
    const messaging_block_rule rules[] = {{"meh", 0, 1}, {"spam", 0, 0}};
    char *out = (char *)"untouched";
    size_t which = 99;
    (void)state;
    assert_int_equal(messaging_blocklist_apply("buy SPAM now", rules, 2, &out, &which), 1);
    assert_int_equal(which, 1);
    assert_string_equal(out, "untouched");
    expect_masked("meh spammer", rules, 2, "*** spammer");
}

static void test_patterns_and_multibyte_masks(void **state)
{
    const messaging_block_rule rules[] = {{"[0-9]{3}-[0-9]{4}", 1, 1}, {"caf\xc3\xa9", 0, 1}};
    (void)state;
    expect_masked("call 555-1234 or 555-9876", rules, 2, "call ******** or ********");
    expect_masked("un caf\xc3\xa9 s'il vous pla\xc3\xaet", rules, 2, "un **** s'il vous pla\xc3\xaet");
    assert_int_equal(messaging_pattern_valid("[0-9]{3}"), 1);
    assert_int_equal(messaging_pattern_valid("(unclosed"), 0);
}

static void test_links(void **state)
{
    const char *allowed[] = {"example.com"};
    char host[128];
    (void)state;
    assert_int_equal(messaging_link_check("see https://evil.test/x", MSG_LINKS_ALLOW, NULL, 0, host, sizeof(host)), 0);
    assert_int_equal(messaging_link_check("see https://evil.test/x", MSG_LINKS_BLOCK, NULL, 0, host, sizeof(host)), 1);
    assert_string_equal(host, "evil.test");
    assert_int_equal(messaging_link_check("no links here. www is fine", MSG_LINKS_BLOCK, NULL, 0, host, sizeof(host)), 0);
    assert_int_equal(messaging_link_check("www.Example.com and http://docs.example.com/a.", MSG_LINKS_ALLOWLIST, allowed, 1, host, sizeof(host)), 0);
    assert_int_equal(messaging_link_check("http://notexample.com", MSG_LINKS_ALLOWLIST, allowed, 1, host, sizeof(host)), 1);
    assert_string_equal(host, "notexample.com");
    assert_int_equal(messaging_link_check("HTTPS://EXAMPLE.COM.evil.io", MSG_LINKS_ALLOWLIST, allowed, 1, host, sizeof(host)), 1);
}

static void test_hook_signature(void **state)
{
    char sig[65];
    const char *body = "{\"text\":\"hi\"}";
    (void)state;
    assert_int_equal(messaging_hook_signature("shh", "1700000000", body, strlen(body), sig), 0);
    /* python3: hmac.new(b"shh", b"1700000000." + body, hashlib.sha256).hexdigest() */
    assert_string_equal(sig, "25d6ef2af29dbf6b04f3c501ae151a0e41c34410e8c65687c74e4599f597561b");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_words_are_whole_and_case_insensitive),
        cmocka_unit_test(test_reject_names_the_rule),
        cmocka_unit_test(test_patterns_and_multibyte_masks),
        cmocka_unit_test(test_links),
        cmocka_unit_test(test_hook_signature),
    };
    return cmocka_run_group_tests_name("messaging_filters", tests, NULL, NULL);
}
