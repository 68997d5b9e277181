/* notification_rules_test.c - unit tests of the notification rules (cmocka). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "common/uuid.h"
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

static int64_t utc(int y, int mo, int d, int h, int mi)
{
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    return (int64_t)timegm(&tm) * 1000;
}

static void test_quiet_hours(void **state)
{
    nf_prefs p;
    (void)state;
    nf_prefs_default(&p);
    assert_int_equal(nf_quiet_until(&p, utc(2026, 1, 15, 23, 0)), 0); /* none set */
    assert_int_equal(nf_parse_hhmm("22:00"), 1320);
    assert_int_equal(nf_parse_hhmm("24:00"), -1);
    assert_int_equal(nf_parse_hhmm("7:00"), -1);
    assert_true(nf_time_zone_valid("Europe/Paris"));
    assert_false(nf_time_zone_valid("../etc/passwd"));
    assert_false(nf_time_zone_valid("Mars/Olympus"));
    p.quiet = 1;
    p.quiet_start = 22 * 60;
    p.quiet_end = 7 * 60;
    snprintf(p.time_zone, sizeof(p.time_zone), "Europe/Paris");
    /* Winter (UTC+1): 23:30 Paris is 22:30Z, quiet until 07:00 Paris = 06:00Z next day. */
    assert_int_equal(nf_quiet_until(&p, utc(2026, 1, 15, 22, 30)), utc(2026, 1, 16, 6, 0));
    /* 02:00 Paris (01:00Z) is inside too, until 06:00Z the same day. */
    assert_int_equal(nf_quiet_until(&p, utc(2026, 1, 16, 1, 0)), utc(2026, 1, 16, 6, 0));
    /* 12:00 Paris is outside. */
    assert_int_equal(nf_quiet_until(&p, utc(2026, 1, 16, 11, 0)), 0);
    /* Summer (UTC+2): 23:00 Paris on 1 July is 21:00Z; the end is 05:00Z. */
    assert_int_equal(nf_quiet_until(&p, utc(2026, 7, 1, 21, 0)), utc(2026, 7, 2, 5, 0));
    /* The night DST starts (29 March 2026, 02:00 -> 03:00): 23:00Z on the 28th is
     * midnight in Paris; quiet ends 07:00 CEST = 05:00Z. */
    assert_int_equal(nf_quiet_until(&p, utc(2026, 3, 28, 23, 0)), utc(2026, 3, 29, 5, 0));
    /* A window that does not wrap: 13:00-14:00 Tokyo (UTC+9). */
    p.quiet_start = 13 * 60;
    p.quiet_end = 14 * 60;
    snprintf(p.time_zone, sizeof(p.time_zone), "Asia/Tokyo");
    assert_int_equal(nf_quiet_until(&p, utc(2026, 5, 1, 4, 30)), utc(2026, 5, 1, 5, 0));
    assert_int_equal(nf_quiet_until(&p, utc(2026, 5, 1, 5, 0)), 0);
}

/* A delivery's id is a function of its key (a replay finds it by _id), a canonical UUIDv8
 * whose first 48 bits are the notification's time (ids sort by creation), and differs per
 * device. */
static void test_delivery_id(void **state)
{
    const char *nid = "01a2006b-9a6c-7002-84c8-4602984a3052";
    char a[37], b[37], c[37];
    (void)state;
    nf_delivery_id(nid, "01a2006b-9a6c-7002-84c8-4602984a3052|dev-1", a);
    nf_delivery_id(nid, "01a2006b-9a6c-7002-84c8-4602984a3052|dev-1", b);
    nf_delivery_id(nid, "01a2006b-9a6c-7002-84c8-4602984a3052|dev-2", c);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    assert_int_equal(strlen(a), 36);
    assert_true(cm_uuid_valid(a));
    assert_memory_equal(a, "01a2006b-9a6c-8", 15); /* the notification's ms, version 8 */
    assert_true(strchr("89ab", a[19]) != NULL);     /* variant 10 */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_preview),
        cmocka_unit_test(test_dedupe_key),
        cmocka_unit_test(test_quiet_hours),
        cmocka_unit_test(test_delivery_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
