/* media_rules_test.c - unit tests of the media rules: ranges, entity tags, types,
 * Content-Disposition, signed URLs, tus headers, thumbnail geometry. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "media.h"

static void range_ok(const char *h, uint64_t size, uint64_t first, uint64_t last)
{
    uint64_t f = 99, l = 99;
    media_range r = media_range_parse(h, size, &f, &l);
    if (r != MEDIA_RANGE_OK || f != first || l != last)
        fail_msg("%s of %llu: got %d %llu-%llu, want ok %llu-%llu", h, (unsigned long long)size,
                 r, (unsigned long long)f, (unsigned long long)l, (unsigned long long)first,
                 (unsigned long long)last);
}

static void range_is(const char *h, uint64_t size, media_range want)
{
    uint64_t f, l;
    media_range r = media_range_parse(h, size, &f, &l);
    if (r != want)
        fail_msg("%s of %llu: got %d, want %d", h ? h : "(null)", (unsigned long long)size, r,
                 want);
}

static void test_ranges(void **state)
{
    (void)state;
    range_ok("bytes=0-0", 10, 0, 0);
    range_ok("bytes=0-9", 10, 0, 9);
    range_ok("bytes=2-5", 10, 2, 5);
    range_ok("bytes=3-", 10, 3, 9);
    range_ok("bytes=3-100", 10, 3, 9);   /* last clamped to the size */
    range_ok("bytes=-3", 10, 7, 9);
    range_ok("bytes=-30", 10, 0, 9);     /* suffix longer than the file: all of it */
    range_ok("BYTES=1-2", 10, 1, 2);     /* the unit is case-insensitive */
    range_ok("bytes = 1-2", 10, 1, 2);
    range_is("bytes=10-", 10, MEDIA_RANGE_UNSATISFIABLE);
    range_is("bytes=10-20", 10, MEDIA_RANGE_UNSATISFIABLE);
    range_is("bytes=-0", 10, MEDIA_RANGE_UNSATISFIABLE);
    range_is("bytes=0-", 0, MEDIA_RANGE_UNSATISFIABLE);
    range_is(NULL, 10, MEDIA_RANGE_NONE);
    range_is("", 10, MEDIA_RANGE_NONE);
    range_is("bytes=0-1,3-4", 10, MEDIA_RANGE_NONE); /* several: whole */
    range_is("items=0-1", 10, MEDIA_RANGE_NONE);
    range_is("bytes=5-2", 10, MEDIA_RANGE_NONE);      /* last < first: invalid, ignored */
    range_is("bytes=a-b", 10, MEDIA_RANGE_NONE);
    range_is("bytes=-", 10, MEDIA_RANGE_NONE);
    range_is("bytes=1-2x", 10, MEDIA_RANGE_NONE);
    range_is("bytes=+1-2", 10, MEDIA_RANGE_NONE);
    range_is("bytes=99999999999999999999-", 10, MEDIA_RANGE_NONE); /* overflow */
}

static void test_etags(void **state)
{
    (void)state;
    assert_true(media_etag_match("\"abc\"", "\"abc\""));
    assert_true(media_etag_match("W/\"abc\"", "\"abc\""));
    assert_true(media_etag_match("\"x\", \"abc\"", "\"abc\""));
    assert_true(media_etag_match("*", "\"abc\""));
    assert_false(media_etag_match("\"abcd\"", "\"abc\""));
    assert_false(media_etag_match("\"ab\"", "\"abc\""));
    assert_false(media_etag_match("abc", "\"abc\""));
    assert_false(media_etag_match("\"abc", "\"abc\""));
    assert_false(media_etag_match(NULL, "\"abc\""));
    assert_false(media_etag_match("", "\"abc\""));
}

static void test_types_and_limits(void **state)
{
    media_settings s = {.image_max_bytes = 5, .file_max_bytes = 100, .nallowed = 2};
    (void)state;
    snprintf(s.allowed[0], MEDIA_TYPE_MAX, "image/png");
    snprintf(s.allowed[1], MEDIA_TYPE_MAX, "application/pdf");
    assert_true(media_type_allowed(&s, "image/png"));
    assert_true(media_type_allowed(&s, "application/pdf"));
    assert_false(media_type_allowed(&s, "image/jpeg"));
    assert_false(media_type_allowed(&s, "image/pn"));
    assert_false(media_type_allowed(&s, "application/x-executable"));
    assert_true(media_type_is_image("image/jpeg"));
    assert_true(media_type_is_image("image/webp"));
    assert_false(media_type_is_image("image/svg+xml")); /* scripts: never inline */
    assert_false(media_type_is_image("text/html"));
    assert_int_equal(media_size_limit(&s, "image/png"), 5);
    assert_int_equal(media_size_limit(&s, "application/pdf"), 100);
    assert_int_equal(media_size_limit(&s, "image/svg+xml"), 100);
    assert_true(media_variant_valid("original"));
    assert_true(media_variant_valid("thumb_1024"));
    assert_false(media_variant_valid("thumb_64"));
    assert_false(media_variant_valid(NULL));
}

static void test_content_disposition(void **state)
{
    char out[256], tiny[12];
    (void)state;
    assert_int_equal(media_content_disposition("image/png", "a.png", out, sizeof(out)), 0);
    assert_string_equal(out, "inline");
    assert_int_equal(media_content_disposition("image/svg+xml", NULL, out, sizeof(out)), 0);
    assert_string_equal(out, "attachment");
    assert_int_equal(media_content_disposition("application/pdf", "r\"e\\p\xc3\xa9 1.pdf", out,
                                               sizeof(out)),
                     0);
    assert_string_equal(out, "attachment; filename=\"r_e_p_ 1.pdf\"; "
                             "filename*=UTF-8''r%22e%5Cp%C3%A9%201.pdf");
    assert_int_equal(media_content_disposition("text/plain", "\r\nSet-Cookie: x", out,
                                               sizeof(out)),
                     0);
    assert_null(strchr(out, '\r')); /* no header injection */
    assert_null(strchr(out, '\n'));
    assert_int_equal(media_content_disposition("text/plain", "long-name.txt", tiny,
                                               sizeof(tiny)),
                     -1);
}

static media_url_key key(const char *id, unsigned char fill)
{
    media_url_key k;
    memset(&k, 0, sizeof(k));
    snprintf(k.id, sizeof(k.id), "%s", id);
    memset(k.secret, fill, 32);
    k.len = 32;
    return k;
}

static void test_signed_urls(void **state)
{
    media_url_key keys[2] = {key("k2", 0x22), key("k1", 0x11)};
    const char *t = "tenant-a", *id = "0190c0de-0000-7000-8000-000000000001";
    char sig[48], sig1[48], bad[48];
    int64_t now = 1700000000, exp = now + 300;
    char es[24];
    (void)state;
    snprintf(es, sizeof(es), "%lld", (long long)exp);
    assert_int_equal(media_url_sign(&keys[0], t, id, "thumb_128", exp, sig, sizeof(sig)), 0);
    assert_int_equal(strlen(sig), 43); /* 32 bytes, base64url without padding */
    assert_null(media_url_check(keys, 2, t, id, "thumb_128", es, "k2", sig, now));
    /* Rotation: a URL signed by the older key still verifies. */
    assert_int_equal(media_url_sign(&keys[1], t, id, "thumb_128", exp, sig1, sizeof(sig1)), 0);
    assert_null(media_url_check(keys, 2, t, id, "thumb_128", es, "k1", sig1, now));
    assert_string_equal(media_url_check(keys, 2, t, id, "thumb_128", es, "k2", sig1, now),
                        "bad signature"); /* the kid is part of what is signed */
    /* Every signed field matters. */
    assert_non_null(media_url_check(keys, 2, "tenant-b", id, "thumb_128", es, "k2", sig, now));
    assert_non_null(media_url_check(keys, 2, t, "0190c0de-0000-7000-8000-000000000002",
                                    "thumb_128", es, "k2", sig, now));
    assert_non_null(media_url_check(keys, 2, t, id, "original", es, "k2", sig, now));
    assert_non_null(media_url_check(keys, 2, t, id, "thumb_128", "1700000301", "k2", sig, now));
    snprintf(bad, sizeof(bad), "%s", sig);
    bad[5] = bad[5] == 'A' ? 'B' : 'A';
    assert_string_equal(media_url_check(keys, 2, t, id, "thumb_128", es, "k2", bad, now),
                        "bad signature");
    assert_string_equal(media_url_check(keys, 2, t, id, "thumb_128", es, "k9", sig, now),
                        "unknown key id");
    assert_non_null(media_url_check(keys, 2, t, id, "thumb_128", es, "k2", NULL, now));
    assert_non_null(media_url_check(keys, 2, t, id, "thumb_128", "x", "k2", sig, now));
    /* Expired, and too far in the future even when correctly signed. */
    assert_string_equal(media_url_check(keys, 2, t, id, "thumb_128", es, "k2", sig, exp + 1),
                        "the URL has expired");
    assert_non_null(media_url_check(keys, 2, t, id, "thumb_128", es, "k2", sig, exp - 2000));
}

static void test_url_keys_parse(void **state)
{
    media_url_key k[4];
    char why[128];
    (void)state;
    assert_int_equal(media_url_keys_parse("a:00112233445566778899aabbccddeeff,b:"
                                          "ffeeddccbbaa99887766554433221100ff",
                                          k, 4, why, sizeof(why)),
                     2);
    assert_string_equal(k[0].id, "a");
    assert_int_equal(k[0].len, 16);
    assert_int_equal(k[0].secret[15], 0xff);
    assert_int_equal(k[1].len, 17);
    assert_int_equal(media_url_keys_parse("", k, 4, why, sizeof(why)), -1);
    assert_int_equal(media_url_keys_parse("a:0011", k, 4, why, sizeof(why)), -1); /* too short */
    assert_int_equal(media_url_keys_parse("a:zz112233445566778899aabbccddeeff", k, 4, why,
                                          sizeof(why)),
                     -1);
    assert_int_equal(media_url_keys_parse("nokey", k, 4, why, sizeof(why)), -1);
    assert_int_equal(media_url_keys_parse("a:00112233445566778899aabbccddeeff,a:"
                                          "00112233445566778899aabbccddeeff",
                                          k, 4, why, sizeof(why)),
                     -1); /* duplicate kid */
}

static void test_tus_headers(void **state)
{
    char v[64];
    unsigned char d[20];
    uint64_t n;
    (void)state;
    /* "filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential" from the tus spec. */
    const char *h = "filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential";
    assert_int_equal(media_tus_metadata(h, "filename", v, sizeof(v)), 1);
    assert_string_equal(v, "world_domination_plan.pdf");
    assert_int_equal(media_tus_metadata(h, "is_confidential", v, sizeof(v)), 1);
    assert_string_equal(v, "");
    assert_int_equal(media_tus_metadata(h, "filetype", v, sizeof(v)), 0);
    assert_int_equal(media_tus_metadata(NULL, "filename", v, sizeof(v)), 0);
    assert_int_equal(media_tus_metadata("filename !!!", "filename", v, sizeof(v)), -1);
    assert_int_equal(media_tus_metadata("filename AA==", "filename", v, sizeof(v)), -1); /* NUL */
    assert_int_equal(media_tus_metadata("filename d29ybGQ=", "filename", v, 4), -1); /* too long */
    /* sha1("hello") = aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d */
    assert_int_equal(media_tus_checksum("sha1 qvTGHdzF6KLavt4PO0gs2a6pQ00=", d), 1);
    assert_int_equal(d[0], 0xaa);
    assert_int_equal(d[19], 0x4d);
    assert_int_equal(media_tus_checksum("md5 XUFAKrxLKna5cZ2REBfFkg==", d), 0);
    assert_int_equal(media_tus_checksum("sha1 qvTG", d), -1);
    assert_int_equal(media_tus_checksum("sha1", d), -1);
    assert_int_equal(media_tus_checksum(NULL, d), -1);
    assert_int_equal(media_parse_u64("0", &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(media_parse_u64("12345", &n), 0);
    assert_int_equal(n, 12345);
    assert_int_equal(media_parse_u64("-1", &n), -1);
    assert_int_equal(media_parse_u64("1a", &n), -1);
    assert_int_equal(media_parse_u64("", &n), -1);
    assert_int_equal(media_parse_u64(NULL, &n), -1);
    assert_int_equal(media_parse_u64("99999999999999999999", &n), -1);
}

static void test_http_date_and_thumb_fit(void **state)
{
    char d[32];
    int w, h;
    (void)state;
    media_http_date(784111777, d);
    assert_string_equal(d, "Sun, 06 Nov 1994 08:49:37 GMT"); /* RFC 9110's example */
    media_thumb_fit(1600, 1000, 128, &w, &h);
    assert_int_equal(w, 128);
    assert_int_equal(h, 80);
    media_thumb_fit(600, 1200, 512, &w, &h);
    assert_int_equal(w, 256);
    assert_int_equal(h, 512);
    media_thumb_fit(100, 50, 1024, &w, &h); /* never enlarged */
    assert_int_equal(w, 100);
    assert_int_equal(h, 50);
    media_thumb_fit(10000, 1, 128, &w, &h);
    assert_int_equal(w, 128);
    assert_int_equal(h, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_etags),
        cmocka_unit_test(test_types_and_limits),
        cmocka_unit_test(test_content_disposition),
        cmocka_unit_test(test_signed_urls),
        cmocka_unit_test(test_url_keys_parse),
        cmocka_unit_test(test_tus_headers),
        cmocka_unit_test(test_http_date_and_thumb_fit),
    };
    return cmocka_run_group_tests_name("media_rules", tests, NULL, NULL);
}
