/* notification_webpush_test.c - unit tests of web push encryption (the known answer of RFC
 * 8291 appendix A), the subscription checks and the VAPID header (cmocka). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/jwt.h"
#include "notification_webpush.h"

/* RFC 8291 appendix A. */
#define PLAIN "When I grow up, I want to be a watermelon"
#define AS_PUBLIC "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8"
#define AS_PRIVATE "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"
#define UA_PUBLIC "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
#define SALT "DGv6ra1nlYgDCS1FRnbzlw"
#define AUTH "BTBZMqHH6r4Tts7J_aSIgg"
#define MESSAGE                                                                                    \
    "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAm" \
    "S6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_" \
    "Qulcy4a-fN"

/* A P-256 private key (PKCS#8 PEM) made for these tests. */
static const char VAPID_PEM[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg/lqRbCFFCw2VD3iW\n"
    "vV+nYvV+ThlJ7vtO8sbEOdIK8H2hRANCAATERynwxn5YaVJF/9fifVQ682cGVMzO\n"
    "gPH8LPhjfv9ckgnxhYctzUZryC5AUXzSmZC1+3VfUyhJjPMKJzuFlvt9\n"
    "-----END PRIVATE KEY-----\n";

static void decode(const char *s, unsigned char *out, size_t want)
{
    assert_int_equal(cm_base64url_decode(s, strlen(s), out, want), (long)want);
}

static void test_rfc8291_known_answer(void **state)
{
    unsigned char ua[65], as_pub[65], as_priv[32], salt[16], auth[16], *out = NULL;
    char b64[512];
    size_t len = 0;
    (void)state;
    decode(UA_PUBLIC, ua, sizeof(ua));
    decode(AS_PUBLIC, as_pub, sizeof(as_pub));
    decode(AS_PRIVATE, as_priv, sizeof(as_priv));
    decode(SALT, salt, sizeof(salt));
    decode(AUTH, auth, sizeof(auth));
    assert_int_equal(nf_webpush_encrypt_with(ua, auth, as_priv, as_pub, salt,
                                             (const unsigned char *)PLAIN, strlen(PLAIN), &out,
                                             &len),
                     CM_OK);
    assert_true(cm_base64url_encode(out, len, b64, sizeof(b64)) > 0);
    assert_string_equal(b64, MESSAGE);
    free(out);
}

static void test_encrypt_fresh(void **state)
{
    unsigned char *a = NULL, *b = NULL, big[NF_WEBPUSH_PLAIN_MAX + 1] = {0};
    size_t la = 0, lb = 0;
    (void)state;
    assert_int_equal(nf_webpush_encrypt(UA_PUBLIC, AUTH, (const unsigned char *)"hi", 2, &a, &la),
                     CM_OK);
    assert_int_equal(nf_webpush_encrypt(UA_PUBLIC, AUTH, (const unsigned char *)"hi", 2, &b, &lb),
                     CM_OK);
    /* Header 86, the text and its delimiter, the tag. */
    assert_int_equal(la, 86 + 3 + 16);
    assert_int_equal(la, lb);
    /* A fresh salt and key each time. */
    assert_memory_not_equal(a, b, 16);
    assert_memory_not_equal(a + 21, b + 21, 65);
    assert_int_equal(a[20], 65);
    free(a);
    free(b);
    a = NULL;
    assert_int_equal(nf_webpush_encrypt(UA_PUBLIC, AUTH, big, sizeof(big), &a, &la), CM_EINVAL);
    assert_int_equal(nf_webpush_encrypt("AAAA", AUTH, (const unsigned char *)"x", 1, &a, &la),
                     CM_EINVAL);
    assert_null(a);
}

static void test_keys_valid(void **state)
{
    char why[200];
    unsigned char off[65];
    char b64[100];
    (void)state;
    assert_true(nf_webpush_keys_valid(UA_PUBLIC, AUTH, why, sizeof(why)));
    assert_false(nf_webpush_keys_valid(AUTH, AUTH, why, sizeof(why)));
    assert_non_null(strstr(why, "p256dh"));
    assert_false(nf_webpush_keys_valid(UA_PUBLIC, UA_PUBLIC, why, sizeof(why)));
    assert_non_null(strstr(why, "auth"));
    /* A point off the curve (last byte changed) is refused. */
    decode(UA_PUBLIC, off, sizeof(off));
    off[64] ^= 1;
    assert_true(cm_base64url_encode(off, sizeof(off), b64, sizeof(b64)) > 0);
    assert_false(nf_webpush_keys_valid(b64, AUTH, why, sizeof(why)));
    assert_true(nf_webpush_endpoint_valid("https://push.example.net/wpush/v2/abc"));
    assert_true(nf_webpush_endpoint_valid("http://127.0.0.1:9/x"));
    assert_false(nf_webpush_endpoint_valid("ftp://push.example.net/x"));
    assert_false(nf_webpush_endpoint_valid("https:///x"));
    assert_false(nf_webpush_endpoint_valid("https://a b/x"));
    assert_false(nf_webpush_endpoint_valid(""));
}

static void test_vapid(void **state)
{
    char hdr[NF_WEBPUSH_VAPID_MAX], payload[512];
    const char *t, *dot1, *dot2;
    unsigned char claims[400];
    long n;
    (void)state;
    assert_int_equal(nf_webpush_vapid(VAPID_PEM, strlen(VAPID_PEM),
                                      "https://push.example.net:8443/wpush/v2/abc",
                                      "mailto:ops@example.com", 1700000000, hdr, sizeof(hdr)),
                     CM_OK);
    assert_int_equal(strncmp(hdr, "vapid t=", 8), 0);
    /* k= the public point of the key (uncompressed, base64url: 87 characters). */
    assert_non_null(strstr(hdr, ", k=BMRHKfDGflhpUkX_1-J9VDrzZwZUzM6A8fws-GN-_1ySCfGFhy3NRmvILkBRfNKZkLX7dV9TKEmM8wonO4WW-30"));
    t = hdr + 8;
    dot1 = strchr(t, '.');
    dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
    assert_non_null(dot2);
    n = cm_base64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), claims, sizeof(claims) - 1);
    assert_true(n > 0);
    claims[n] = '\0';
    snprintf(payload, sizeof(payload), "%s", (const char *)claims);
    assert_non_null(strstr(payload, "\"aud\":\"https://push.example.net:8443\""));
    assert_non_null(strstr(payload, "\"exp\":1700043200"));
    assert_non_null(strstr(payload, "\"sub\":\"mailto:ops@example.com\""));
    assert_int_equal(nf_webpush_vapid("nope", 4, "https://x/y", "mailto:a@b", 0, hdr, sizeof(hdr)),
                     CM_EINVAL);
    assert_int_equal(nf_webpush_vapid(VAPID_PEM, strlen(VAPID_PEM), "no-origin", "mailto:a@b", 0,
                                      hdr, sizeof(hdr)),
                     CM_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc8291_known_answer),
        cmocka_unit_test(test_encrypt_fresh),
        cmocka_unit_test(test_keys_valid),
        cmocka_unit_test(test_vapid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
