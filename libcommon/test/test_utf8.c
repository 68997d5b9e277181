/* test_utf8.c - unit tests of UTF-8 validation, counting and control detection (common/utf8.h). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/utf8.h"

#define VALID(lit) cm_utf8_valid(lit, sizeof(lit) - 1)

static void test_valid_text(void **state)
{
    (void)state;
    assert_int_equal(cm_utf8_valid("", 0), 1);
    assert_int_equal(VALID("hello, world"), 1);
    assert_int_equal(VALID("caf\xc3\xa9"), 1);                 /* U+00E9 */
    assert_int_equal(VALID("\xc2\x80"), 1);                    /* U+0080, smallest 2-byte */
    assert_int_equal(VALID("\xdf\xbf"), 1);                    /* U+07FF */
    assert_int_equal(VALID("\xe0\xa0\x80"), 1);                /* U+0800, smallest 3-byte */
    assert_int_equal(VALID("\xe6\x97\xa5\xe6\x9c\xac"), 1);    /* 日本 */
    assert_int_equal(VALID("\xed\x9f\xbf"), 1);                /* U+D7FF, just below surrogates */
    assert_int_equal(VALID("\xee\x80\x80"), 1);                /* U+E000, just above them */
    assert_int_equal(VALID("\xef\xbf\xbf"), 1);                /* U+FFFF */
    assert_int_equal(VALID("\xf0\x90\x80\x80"), 1);            /* U+10000, smallest 4-byte */
    assert_int_equal(VALID("\xf0\x9f\x98\x80"), 1);            /* emoji */
    assert_int_equal(VALID("\xf4\x8f\xbf\xbf"), 1);            /* U+10FFFF, the last one */
}

static void test_overlongs_refused(void **state)
{
    (void)state;
    assert_int_equal(VALID("\xc0\x80"), 0);         /* overlong NUL */
    assert_int_equal(VALID("\xc1\xbf"), 0);         /* overlong U+007F */
    assert_int_equal(VALID("\xe0\x80\x80"), 0);     /* overlong 3-byte */
    assert_int_equal(VALID("\xe0\x9f\xbf"), 0);     /* overlong U+07FF */
    assert_int_equal(VALID("\xf0\x80\x80\x80"), 0); /* overlong 4-byte */
    assert_int_equal(VALID("\xf0\x8f\xbf\xbf"), 0); /* overlong U+FFFF */
    assert_int_equal(VALID("a\xc0\xaf" "b"), 0);       /* overlong '/' inside text */
}

static void test_surrogates_and_out_of_range_refused(void **state)
{
    (void)state;
    assert_int_equal(VALID("\xed\xa0\x80"), 0);             /* U+D800 */
    assert_int_equal(VALID("\xed\xbf\xbf"), 0);             /* U+DFFF */
    assert_int_equal(VALID("\xed\xa0\xbd\xed\xb8\x80"), 0); /* CESU-8 surrogate pair */
    assert_int_equal(VALID("\xf4\x90\x80\x80"), 0);         /* U+110000 */
    assert_int_equal(VALID("\xf5\x80\x80\x80"), 0);
    assert_int_equal(VALID("\xf7\xbf\xbf\xbf"), 0);
    assert_int_equal(VALID("\xf8\x88\x80\x80\x80"), 0); /* old 5-byte form */
    assert_int_equal(VALID("\xfe"), 0);
    assert_int_equal(VALID("\xff"), 0);
}

static void test_truncated_and_stray_bytes_refused(void **state)
{
    (void)state;
    assert_int_equal(VALID("\xc3"), 0);
    assert_int_equal(VALID("abc\xc3"), 0);
    assert_int_equal(VALID("\xe6\x97"), 0);
    assert_int_equal(VALID("\xf0\x9f\x98"), 0);
    assert_int_equal(VALID("\xf0\x9f"), 0);
    assert_int_equal(VALID("\x80"), 0);             /* lone continuation */
    assert_int_equal(VALID("a\xbf"), 0);
    assert_int_equal(VALID("\xc3\x28"), 0);         /* lead byte then ASCII */
    assert_int_equal(VALID("\xe6\x97\x28"), 0);
    assert_int_equal(VALID("\xf0\x9f\x98\x28"), 0);
    assert_int_equal(VALID("\xe6\xc3\xa9"), 0);     /* lead byte then another lead */
    /* A sequence cut by the length, not by a NUL: the bytes beyond len must not be read. */
    const char emoji[] = "\xf0\x9f\x98\x80";
    assert_int_equal(cm_utf8_valid(emoji, 3), 0);
    assert_int_equal(cm_utf8_valid(emoji, 4), 1);
}

static void test_nul_refused(void **state)
{
    (void)state;
    assert_int_equal(cm_utf8_valid("a\0b", 3), 0);
    assert_int_equal(cm_utf8_valid("\0", 1), 0);
    assert_int_equal(cm_utf8_valid("ab\0", 2), 1); /* NUL beyond len is not part of the text */
}

static void test_count_code_points(void **state)
{
    (void)state;
    assert_int_equal(cm_utf8_count("", 0), 0);
    assert_int_equal(cm_utf8_count("hello", 5), 5);
    assert_int_equal(cm_utf8_count("caf\xc3\xa9", 5), 4);
    assert_int_equal(cm_utf8_count("\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", 9), 3); /* 日本語 */
    assert_int_equal(cm_utf8_count("\xf0\x9f\x98\x80\xf0\x9f\x98\x80", 8), 2);
    assert_int_equal(cm_utf8_count("a\xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80", 10), 4);
}

#define CTRL(lit) cm_utf8_has_control(lit, sizeof(lit) - 1)

static void test_control_characters(void **state)
{
    (void)state;
    assert_int_equal(CTRL("plain text"), 0);
    assert_int_equal(CTRL("tab\tand\nnewline"), 0);
    assert_int_equal(CTRL(""), 0);
    assert_int_equal(CTRL("\x01"), 1);
    assert_int_equal(CTRL("a\x1b[31m"), 1); /* ESC: terminal escape sequences */
    assert_int_equal(CTRL("a\rb"), 1);      /* CR is a C0 control other than tab/newline */
    assert_int_equal(CTRL("\x0b"), 1);
    assert_int_equal(CTRL("\x1f"), 1);
    assert_int_equal(CTRL("\x7f"), 1);       /* DEL */
    assert_int_equal(CTRL("\xc2\x80"), 1);   /* U+0080, first C1 */
    assert_int_equal(CTRL("x\xc2\x85y"), 1); /* NEL */
    assert_int_equal(CTRL("\xc2\x9f"), 1);   /* U+009F, last C1 */
    assert_int_equal(CTRL("\xc2\xa0"), 0);   /* NBSP is not a control */
    assert_int_equal(CTRL("\xc2\xbf"), 0);
    assert_int_equal(CTRL("caf\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x98\x80"), 0);
    /* Continuation bytes 0x80..0x9F of other characters are not C1 controls. */
    assert_int_equal(CTRL("\xe2\x80\x8b"), 0); /* U+200B */
    assert_int_equal(CTRL("\xf0\x9f\x98\x80"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_text),
        cmocka_unit_test(test_overlongs_refused),
        cmocka_unit_test(test_surrogates_and_out_of_range_refused),
        cmocka_unit_test(test_truncated_and_stray_bytes_refused),
        cmocka_unit_test(test_nul_refused),
        cmocka_unit_test(test_count_code_points),
        cmocka_unit_test(test_control_characters),
    };
    return cmocka_run_group_tests_name("utf8", tests, NULL, NULL);
}
