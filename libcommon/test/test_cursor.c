/* test_cursor.c - unit tests of the sync cursor codec (common/cursor.h). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cursor.h"
#include "common/jwt.h"

static void test_round_trip_sorted(void **state)
{
    cm_cursor_pos in[] = {{cm_cursor_key("c-3"), 0},
                          {cm_cursor_key("c-1"), 127},
                          {cm_cursor_key("c-2"), 128},
                          {cm_cursor_key("c-4"), INT64_MAX}};
    cm_cursor_pos out[8];
    size_t n = 0;
    char *text = NULL;
    (void)state;
    assert_int_equal(cm_cursor_encode(in, 4, &text), CM_OK);
    assert_non_null(text);
    assert_true(strspn(text, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") ==
                strlen(text)); /* URL-safe as is */
    assert_int_equal(cm_cursor_decode(text, out, 8, &n), CM_OK);
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(out[i].key, in[i].key); /* encode sorted `in` in place */
        assert_int_equal(out[i].seq, in[i].seq);
        if (i > 0)
            assert_true(out[i - 1].key < out[i].key);
    }
    cm_cursor_pos *p = cm_cursor_find(out, n, cm_cursor_key("c-2"));
    assert_non_null(p);
    assert_int_equal(p->seq, 128);
    assert_null(cm_cursor_find(out, n, cm_cursor_key("c-9")));
    free(text);
}

static void test_empty_cursor(void **state)
{
    cm_cursor_pos out[1];
    size_t n = 99;
    char *text = NULL;
    (void)state;
    assert_int_equal(cm_cursor_encode(NULL, 0, &text), CM_OK);
    assert_string_equal(text, "AQ"); /* the version byte alone */
    assert_int_equal(cm_cursor_decode(text, out, 1, &n), CM_OK);
    assert_int_equal(n, 0);
    free(text);
}

static void test_size_per_conversation(void **state)
{
    static cm_cursor_pos in[1000];
    char *text = NULL;
    (void)state;
    for (int i = 0; i < 1000; i++) {
        char id[32];
        snprintf(id, sizeof(id), "conv-%d", i);
        in[i] = (cm_cursor_pos){cm_cursor_key(id), 1000 + i}; /* two-byte varints */
    }
    assert_int_equal(cm_cursor_encode(in, 1000, &text), CM_OK);
    assert_int_equal(strlen(text), (1 + 1000 * 10) * 4 / 3 + 1); /* 10 bytes each */
    free(text);
}

static char *b64(const unsigned char *b, size_t n)
{
    char *s = malloc(n * 2 + 4);
    assert_true(cm_base64url_encode(b, n, s, n * 2 + 4) >= 0);
    return s;
}

static void test_malformed_cursors_are_refused(void **state)
{
    cm_cursor_pos out[4];
    size_t n = 0;
    const unsigned char wrong_version[] = {2};
    const unsigned char truncated_key[] = {1, 0, 0, 0, 0, 0, 0, 0};
    const unsigned char missing_seq[] = {1, 0, 0, 0, 0, 0, 0, 0, 1};
    const unsigned char open_varint[] = {1, 0, 0, 0, 0, 0, 0, 0, 1, 0x80};
    const unsigned char unsorted[] = {1, 0, 0, 0, 0, 0, 0, 0, 2, 5, 0, 0, 0, 0, 0, 0, 0, 1, 5};
    const unsigned char repeated[] = {1, 0, 0, 0, 0, 0, 0, 0, 2, 5, 0, 0, 0, 0, 0, 0, 0, 2, 6};
    const unsigned char too_long[] = {1, 0, 0, 0, 0, 0, 0, 0, 1, 0x80, 0x80, 0x80, 0x80, 0x80,
                                      0x80, 0x80, 0x80, 0x80, 0x01};
    const struct {
        const unsigned char *b;
        size_t n;
    } cases[] = {{wrong_version, sizeof(wrong_version)}, {truncated_key, sizeof(truncated_key)},
                 {missing_seq, sizeof(missing_seq) - 1}, {open_varint, sizeof(open_varint)},
                 {unsorted, sizeof(unsorted)},           {repeated, sizeof(repeated)},
                 {too_long, sizeof(too_long)}};
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *s = b64(cases[i].b, cases[i].n);
        if (cm_cursor_decode(s, out, 4, &n) != CM_EINVAL)
            fail_msg("case %zu (%s) was accepted", i, s);
        free(s);
    }
    assert_int_equal(cm_cursor_decode("", out, 4, &n), CM_EINVAL);
    assert_int_equal(cm_cursor_decode("not base64!", out, 4, &n), CM_EINVAL);
    assert_int_equal(cm_cursor_decode("AQ==", out, 4, &n), CM_EINVAL); /* padding */
}

static void test_capacity_and_bad_input_to_encode(void **state)
{
    cm_cursor_pos in[3] = {{1, 1}, {2, 2}, {3, 3}}, out[2];
    cm_cursor_pos neg[1] = {{1, -1}}, dup[2] = {{7, 1}, {7, 2}};
    size_t n = 0;
    char *text = NULL;
    (void)state;
    assert_int_equal(cm_cursor_encode(in, 3, &text), CM_OK);
    assert_int_equal(cm_cursor_decode(text, out, 2, &n), CM_ETOOBIG);
    free(text);
    text = NULL;
    assert_int_equal(cm_cursor_encode(neg, 1, &text), CM_EINVAL);
    assert_int_equal(cm_cursor_encode(dup, 2, &text), CM_EINVAL);
    assert_null(text);
}

/* The no-allocation encoder (the socket's per-frame cursor) writes what cm_cursor_encode
 * does, into the caller's buffer, and refuses a short buffer and unsorted input. */
static void test_encode_into_a_buffer(void **state)
{
    cm_cursor_pos pos[40];
    char *heap = NULL, buf[CM_CURSOR_TEXT_MAX(40)];
    size_t len = 0;
    (void)state;
    for (size_t n = 0; n <= 40; n += 20) { /* 0, 20 (past the 16 on the stack), 40 */
        for (size_t i = 0; i < n; i++) {
            pos[i].key = 1000 + i * 7;
            pos[i].seq = (int64_t)(i * i * 1000);
        }
        assert_int_equal(cm_cursor_encode(pos, n, &heap), CM_OK);
        assert_int_equal(cm_cursor_encode_to(pos, n, buf, sizeof(buf), &len), CM_OK);
        assert_int_equal(len, strlen(heap));
        assert_string_equal(buf, heap);
        assert_true(len < CM_CURSOR_TEXT_MAX(n));
        if (n > 0)
            assert_int_equal(cm_cursor_encode_to(pos, n, buf, len, &len), CM_ETOOBIG); /* no room for the NUL */
        free(heap);
    }
    pos[0].key = 5;
    pos[1].key = 4;
    assert_int_equal(cm_cursor_encode_to(pos, 2, buf, sizeof(buf), &len), CM_EINVAL);
}

static void test_keys_differ_per_id(void **state)
{
    (void)state;
    assert_int_equal(cm_cursor_key("0190a3b4-1d2e-7b20-9a4f-3c8e5d6f7a81"),
                     cm_cursor_key("0190a3b4-1d2e-7b20-9a4f-3c8e5d6f7a81"));
    assert_true(cm_cursor_key("0190a3b4-1d2e-7b20-9a4f-3c8e5d6f7a81") !=
                cm_cursor_key("0190a3b4-1d2e-7b20-9a4f-3c8e5d6f7a82"));
    assert_int_equal(cm_cursor_key(""), 14695981039346656037ULL); /* FNV-1a offset basis */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_sorted),
        cmocka_unit_test(test_empty_cursor),
        cmocka_unit_test(test_size_per_conversation),
        cmocka_unit_test(test_malformed_cursors_are_refused),
        cmocka_unit_test(test_capacity_and_bad_input_to_encode),
        cmocka_unit_test(test_keys_differ_per_id),
        cmocka_unit_test(test_encode_into_a_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
