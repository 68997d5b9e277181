/* test_uuid.c - unit tests of UUIDv7 generation and parsing and random hex (common/uuid.h). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/uuid.h"

static int hexval(char c)
{
    return c <= '9' ? c - '0' : c - 'a' + 10;
}

static void test_format_version_and_variant(void **state)
{
    char id[CM_UUID_STRLEN];
    (void)state;
    for (int i = 0; i < 200; i++) {
        assert_int_equal(cm_uuid_v7(id), CM_OK);
        assert_int_equal(strlen(id), 36);
        assert_int_equal(cm_uuid_valid(id), 1);
        assert_int_equal(id[8], '-');
        assert_int_equal(id[13], '-');
        assert_int_equal(id[18], '-');
        assert_int_equal(id[23], '-');
        assert_int_equal(id[14], '7'); /* version 7 */
        /* Variant 10xx (RFC 9562 section 4.1): the 17th hex digit is 8, 9, a or b. */
        assert_int_equal(hexval(id[19]) >> 2, 2);
    }
}

static void test_thousand_in_a_row_are_ordered(void **state)
{
    char prev[CM_UUID_STRLEN], id[CM_UUID_STRLEN];
    (void)state;
    assert_int_equal(cm_uuid_v7(prev), CM_OK);
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(cm_uuid_v7(id), CM_OK);
        if (strcmp(prev, id) >= 0)
            fail_msg("id %d is not after the previous one: %s then %s", i, prev, id);
        memcpy(prev, id, sizeof(id));
    }
}

static void test_time_is_now(void **state)
{
    char id[CM_UUID_STRLEN];
    (void)state;
    int64_t before = cm_clock_now_ms();
    assert_int_equal(cm_uuid_v7(id), CM_OK);
    int64_t after = cm_clock_now_ms();
    int64_t t = cm_uuid_v7_time_ms(id);
    /* The counter may borrow a few milliseconds when many ids were made just before. */
    assert_in_range(t, before - 1, after + 50);
}

static void test_time_of_known_and_malformed(void **state)
{
    (void)state;
    /* 0x018bcfe56800 = 1700000000000 ms. */
    assert_int_equal(cm_uuid_v7_time_ms("018bcfe5-6800-7abc-8def-0123456789ab"), 1700000000000LL);
    assert_int_equal(cm_uuid_v7_time_ms("00000000-0000-7000-8000-000000000000"), 0);
    assert_int_equal(cm_uuid_v7_time_ms("018bcfe5-6800-4abc-8def-0123456789ab"), -1); /* v4 */
    assert_int_equal(cm_uuid_v7_time_ms("018BCFE5-6800-7ABC-8DEF-0123456789AB"), -1);
    assert_int_equal(cm_uuid_v7_time_ms("018bcfe5-6800-7abc-8def-0123456789a"), -1);
    assert_int_equal(cm_uuid_v7_time_ms(""), -1);
    assert_int_equal(cm_uuid_v7_time_ms(NULL), -1);
}

static void test_valid(void **state)
{
    (void)state;
    assert_int_equal(cm_uuid_valid("018bcfe5-6800-7abc-8def-0123456789ab"), 1);
    assert_int_equal(cm_uuid_valid("6ba7b810-9dad-11d1-80b4-00c04fd430c8"), 1); /* any version */
    assert_int_equal(cm_uuid_valid("6BA7B810-9DAD-11D1-80B4-00C04FD430C8"), 0); /* not lowercase */
    assert_int_equal(cm_uuid_valid("6ba7b8109dad11d180b400c04fd430c8"), 0);     /* no dashes */
    assert_int_equal(cm_uuid_valid("6ba7b810-9dad-11d1-80b4-00c04fd430c8a"), 0);
    assert_int_equal(cm_uuid_valid("6ba7b810-9dad-11d1-80b4-00c04fd430c"), 0);
    assert_int_equal(cm_uuid_valid("6ba7b810a9dad-11d1-80b4-00c04fd430c8"), 0);
    assert_int_equal(cm_uuid_valid("6ba7b810-9dad-11d1-80b4-00c04fd430cg"), 0);
    assert_int_equal(cm_uuid_valid("{ba7b810-9dad-11d1-80b4-00c04fd430c}"), 0);
    assert_int_equal(cm_uuid_valid(""), 0);
    assert_int_equal(cm_uuid_valid(NULL), 0);
}

#define THREADS 4
#define PER_THREAD 500

static void *make_ids(void *arg)
{
    char *out = arg;
    for (int i = 0; i < PER_THREAD; i++)
        if (cm_uuid_v7(out + (size_t)i * CM_UUID_STRLEN) != CM_OK)
            return arg;
    return NULL;
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_unique_across_threads(void **state)
{
    pthread_t th[THREADS];
    char *ids = calloc(THREADS * PER_THREAD, CM_UUID_STRLEN);
    (void)state;
    assert_non_null(ids);
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, make_ids,
                                        ids + (size_t)t * PER_THREAD * CM_UUID_STRLEN), 0);
    for (int t = 0; t < THREADS; t++) {
        void *res;
        pthread_join(th[t], &res);
        assert_null(res);
    }
    qsort(ids, THREADS * PER_THREAD, CM_UUID_STRLEN, cmp_id);
    for (int i = 1; i < THREADS * PER_THREAD; i++)
        assert_string_not_equal(ids + (size_t)(i - 1) * CM_UUID_STRLEN,
                                ids + (size_t)i * CM_UUID_STRLEN);
    free(ids);
}

static void test_random_hex(void **state)
{
    char a[2 * 100 + 1], b[2 * 100 + 1];
    (void)state;
    memset(a, 'X', sizeof(a));
    assert_int_equal(cm_random_hex(a, 16), CM_OK);
    assert_int_equal(strlen(a), 32);
    assert_int_equal(strspn(a, "0123456789abcdef"), 32);
    assert_int_equal(cm_random_hex(b, 16), CM_OK);
    assert_string_not_equal(a, b);
    /* More than the internal 64-byte chunk. */
    assert_int_equal(cm_random_hex(a, 100), CM_OK);
    assert_int_equal(strlen(a), 200);
    assert_int_equal(strspn(a, "0123456789abcdef"), 200);
    assert_int_equal(cm_random_hex(a, 0), CM_OK);
    assert_string_equal(a, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_version_and_variant),
        cmocka_unit_test(test_thousand_in_a_row_are_ordered),
        cmocka_unit_test(test_time_is_now),
        cmocka_unit_test(test_time_of_known_and_malformed),
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_unique_across_threads),
        cmocka_unit_test(test_random_hex),
    };
    return cmocka_run_group_tests_name("uuid", tests, NULL, NULL);
}
