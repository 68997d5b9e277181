/* notification_templates_test.c - unit tests of template rendering, the contact checks and
 * the e-mail header encoding (cmocka). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/smtp.h"
#include "notification_channels.h"

static void test_render(void **state)
{
    nf_vars v = {{0}, {0}};
    char why[200], *out = NULL;
    (void)state;
    v.v[NF_VAR_SENDER_NAME] = "ann";
    v.v[NF_VAR_TEXT] = "<b>\"hi\" & 'bye'</b>";
    assert_int_equal(nf_template_render("{{sender_name}}: {{ text }}", &v, 0, &out, why,
                                        sizeof(why)), CM_OK);
    assert_string_equal(out, "ann: <b>\"hi\" & 'bye'</b>");
    free(out);
    assert_int_equal(nf_template_render("<p>{{text}}</p>{{link}}", &v, 1, &out, why,
                                        sizeof(why)), CM_OK);
    assert_string_equal(out, "<p>&lt;b&gt;&quot;hi&quot; &amp; &#39;bye&#39;&lt;/b&gt;</p>");
    free(out);
    out = NULL;
    assert_int_equal(nf_template_render("hello {{nope}}", &v, 0, &out, why, sizeof(why)),
                     CM_EINVAL);
    assert_non_null(strstr(why, "nope"));
    assert_null(out);
    assert_int_equal(nf_template_render("hello {{text", &v, 0, &out, why, sizeof(why)),
                     CM_EINVAL);
    assert_non_null(strstr(why, "unclosed"));
    /* HTML the service built (the digest's list) goes in as is; in text the plain value. */
    v.v[NF_VAR_ITEMS] = "ann: <hi>";
    v.html[NF_VAR_ITEMS] = "<li>ann: &lt;hi&gt;</li>";
    assert_int_equal(nf_template_render("<ul>{{items}}</ul>", &v, 1, &out, why, sizeof(why)),
                     CM_OK);
    assert_string_equal(out, "<ul><li>ann: &lt;hi&gt;</li></ul>");
    free(out);
    assert_int_equal(nf_template_render("{{items}}", &v, 0, &out, why, sizeof(why)), CM_OK);
    assert_string_equal(out, "ann: <hi>");
    free(out);
    assert_int_equal(nf_template_render("", &v, 0, &out, why, sizeof(why)), CM_OK);
    assert_string_equal(out, "");
    free(out);
}

static void test_addresses(void **state)
{
    (void)state;
    assert_true(nf_email_valid("bob@example.com"));
    assert_false(nf_email_valid("bob@example"));
    assert_false(nf_email_valid("bob@@example.com"));
    assert_false(nf_email_valid("bob@example.com\r\nBcc: x@y.z"));
    assert_false(nf_email_valid("<bob@example.com>"));
    assert_false(nf_email_valid("@example.com"));
    assert_true(nf_phone_valid("+33612345678"));
    assert_false(nf_phone_valid("0612345678"));
    assert_false(nf_phone_valid("+0612345678"));
    assert_false(nf_phone_valid("+1234567"));
    assert_false(nf_phone_valid("+1234567890123456"));
}

static void test_header_encode(void **state)
{
    char out[512];
    (void)state;
    assert_int_equal(cm_smtp_header_encode("Plain subject", out, sizeof(out)), CM_OK);
    assert_string_equal(out, "Plain subject");
    assert_int_equal(cm_smtp_header_encode("Chat \xC3\x89" "cho", out, sizeof(out)), CM_OK);
    assert_string_equal(out, "=?UTF-8?B?Q2hhdCDDiWNobw==?=");
    /* Long values fold into several words, none over 75 characters, none splitting é. */
    {
        char in[200];
        for (int i = 0; i < 60; i++)
            memcpy(in + 2 * i, "\xC3\xA9", 2);
        in[120] = '\0';
        assert_int_equal(cm_smtp_header_encode(in, out, sizeof(out)), CM_OK);
        for (char *w = out, *e; w; w = e ? e + 3 : NULL) {
            e = strstr(w, "\r\n ");
            assert_true((e ? (size_t)(e - w) : strlen(w)) <= 75);
        }
        assert_int_equal(cm_smtp_header_encode(in, out, 40), CM_ETOOBIG);
    }
}

static void test_push_defaults(void **state)
{
    nf_vars v = {{0}, {0}};
    nf_push_text t;
    char big[2000];
    (void)state;
    v.v[NF_VAR_SENDER_NAME] = "ann";
    v.v[NF_VAR_TEXT] = "lunch?";
    assert_int_equal(nf_push_render(NULL, "mention", "fr", &v, &t), CM_OK);
    assert_string_equal(t.title, "ann mentioned you");
    assert_string_equal(t.body, "lunch?");
    assert_int_equal(nf_push_render(NULL, "message", NULL, &v, &t), CM_OK);
    assert_string_equal(t.title, "ann");
    /* No sender, no title: still a title. */
    v.v[NF_VAR_SENDER_NAME] = NULL;
    assert_int_equal(nf_push_render(NULL, "custom", "", &v, &t), CM_OK);
    assert_string_equal(t.title, "New message");
    /* A long body is cut to a preview. */
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    v.v[NF_VAR_TEXT] = big;
    assert_int_equal(nf_push_render(NULL, "message", "", &v, &t), CM_OK);
    assert_true(strlen(t.body) < 210);
    assert_int_equal(nf_push_render(NULL, "verification", "", &v, &t), CM_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_push_defaults),
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_header_encode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
