/* notification_callbacks_test.c - unit tests of the providers' callback checks: Twilio's
 * request signature (the example of its documentation), form decoding, the SNS string to
 * sign and the certificate host allowlist (cmocka). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "notification_callbacks.h"

/* https://www.twilio.com/docs/usage/security#validating-requests: this URL and these
 * parameters with auth token 12345 sign to 0/KCTR6DLpKmkAf8muzZqo1nDgQ=. */
static void twilio_documented_example(void **state)
{
    static const char form[] = "CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=1234"
                               "&From=%2B12349013030&To=%2B18005551212";
    nf_form_param p[NF_FORM_PARAMS_MAX];
    size_t n = 0;
    char why[100], sig[64];
    (void)state;
    assert_int_equal(nf_form_parse(form, strlen(form), p, NF_FORM_PARAMS_MAX, &n, why,
                                   sizeof(why)), CM_OK);
    assert_int_equal(n, 5);
    assert_string_equal(nf_form_get(p, n, "From"), "+12349013030");
    /* Order of the body does not matter: the parameters are sorted by name. */
    {
        nf_form_param t = p[0];
        p[0] = p[4];
        p[4] = t;
    }
    assert_int_equal(nf_twilio_signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2",
                                         p, n, sig, sizeof(sig)), CM_OK);
    assert_string_equal(sig, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
    assert_int_equal(nf_twilio_signature("12346", "https://mycompany.com/myapp.php?foo=1&bar=2",
                                         p, n, sig, sizeof(sig)), CM_OK);
    assert_string_not_equal(sig, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
    nf_form_cleanup(p, n);
}

static void forms_decode_and_refuse(void **state)
{
    nf_form_param p[2];
    size_t n = 0;
    char why[100];
    (void)state;
    assert_int_equal(nf_form_parse("A=x+y%26z&&B=", 13, p, 2, &n, why, sizeof(why)), CM_OK);
    assert_int_equal(n, 2);
    assert_string_equal(p[0].value, "x y&z");
    assert_string_equal(p[1].value, "");
    nf_form_cleanup(p, n);
    assert_int_equal(nf_form_parse("A=1&B=2&C=3", 11, p, 2, &n, why, sizeof(why)), CM_EINVAL);
    assert_non_null(strstr(why, "more than 2"));
    assert_int_equal(nf_form_parse("A=%zz", 5, p, 2, &n, why, sizeof(why)), CM_EINVAL);
    assert_int_equal(nf_form_parse("A=%4", 4, p, 2, &n, why, sizeof(why)), CM_EINVAL);
    assert_int_equal(nf_form_parse("A=%00", 5, p, 2, &n, why, sizeof(why)), CM_EINVAL);
    assert_int_equal(nf_form_parse("novalue", 7, p, 2, &n, why, sizeof(why)), CM_EINVAL);
    assert_int_equal(n, 0);
}

static void sns_string_to_sign(void **state)
{
    cJSON *m = cJSON_Parse("{\"Type\":\"Notification\",\"MessageId\":\"m1\",\"TopicArn\":\"arn:t\","
                           "\"Message\":\"hello\\nworld\",\"Timestamp\":\"2026-01-01T00:00:00Z\","
                           "\"SignatureVersion\":\"1\"}");
    char *s = NULL;
    (void)state;
    assert_int_equal(nf_sns_string_to_sign(m, &s), CM_OK);
    assert_string_equal(s, "Message\nhello\nworld\nMessageId\nm1\nTimestamp\n2026-01-01T00:00:00Z\n"
                           "TopicArn\narn:t\nType\nNotification\n");
    free(s);
    cJSON_AddStringToObject(m, "Subject", "S");
    assert_int_equal(nf_sns_string_to_sign(m, &s), CM_OK);
    assert_non_null(strstr(s, "MessageId\nm1\nSubject\nS\nTimestamp\n"));
    free(s);
    cJSON_ReplaceItemInObject(m, "Type", cJSON_CreateString("SubscriptionConfirmation"));
    assert_int_equal(nf_sns_string_to_sign(m, &s), CM_EINVAL); /* no SubscribeURL, Token */
    cJSON_AddStringToObject(m, "SubscribeURL", "https://sns/x");
    cJSON_AddStringToObject(m, "Token", "tk");
    assert_int_equal(nf_sns_string_to_sign(m, &s), CM_OK);
    assert_string_equal(s, "Message\nhello\nworld\nMessageId\nm1\nSubscribeURL\nhttps://sns/x\n"
                           "Timestamp\n2026-01-01T00:00:00Z\nToken\ntk\nTopicArn\narn:t\n"
                           "Type\nSubscriptionConfirmation\n");
    free(s);
    cJSON_Delete(m);
}

static void sns_certificate_hosts(void **state)
{
    const char *allow = "https://sns.*.amazonaws.com,http://127.0.0.1:24099";
    (void)state;
    assert_true(nf_sns_url_allowed("https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem", allow));
    assert_true(nf_sns_url_allowed("http://127.0.0.1:24099/cert.pem", allow));
    assert_false(nf_sns_url_allowed("http://127.0.0.1:24098/cert.pem", allow));
    assert_false(nf_sns_url_allowed("http://sns.eu-west-1.amazonaws.com/c.pem", allow));
    assert_false(nf_sns_url_allowed("https://sns.eu-west-1.amazonaws.com.evil.io/c.pem", allow));
    assert_false(nf_sns_url_allowed("https://sns.x.amazonaws.com@evil.io/c.pem", allow));
    assert_false(nf_sns_url_allowed("https://evil.io/sns.x.amazonaws.com", allow));
    assert_false(nf_sns_url_allowed("not a url", allow));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(twilio_documented_example),
        cmocka_unit_test(forms_decode_and_refuse),
        cmocka_unit_test(sns_string_to_sign),
        cmocka_unit_test(sns_certificate_hosts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
