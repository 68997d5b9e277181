/* test_log.c - unit tests of JSON escaping and JSON-lines logging (common/log.h). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "common/log.h"
#include "common/utf8.h"

static void test_escape_specials(void **state)
{
    char out[128];
    (void)state;
    assert_int_equal(cm_json_escape("plain", out, sizeof(out)), 5);
    assert_string_equal(out, "plain");
    assert_int_equal(cm_json_escape("a\"b\\c", out, sizeof(out)), 7);
    assert_string_equal(out, "a\\\"b\\\\c");
    assert_int_equal(cm_json_escape("l1\nl2\r\tx", out, sizeof(out)), 11);
    assert_string_equal(out, "l1\\nl2\\r\\tx");
    assert_int_equal(cm_json_escape("\x01\x1f", out, sizeof(out)), 12);
    assert_string_equal(out, "\\u0001\\u001f");
    assert_int_equal(cm_json_escape("", out, sizeof(out)), 0);
    assert_string_equal(out, "");
}

static void test_escape_keeps_utf8(void **state)
{
    char out[64];
    (void)state;
    assert_int_equal(cm_json_escape("caf\xc3\xa9 \xf0\x9f\x98\x80", out, sizeof(out)), 10);
    assert_string_equal(out, "caf\xc3\xa9 \xf0\x9f\x98\x80");
}

static void test_escape_capacity(void **state)
{
    char out[8];
    (void)state;
    /* Exactly fits: 7 characters and the NUL. */
    assert_int_equal(cm_json_escape("1234567", out, 8), 7);
    assert_string_equal(out, "1234567");
    /* One too many: -1, output truncated but terminated. */
    assert_int_equal(cm_json_escape("12345678", out, 8), -1);
    assert_string_equal(out, "1234567");
    /* An escape pair is never cut in half. */
    assert_int_equal(cm_json_escape("123456\"", out, 8), -1);
    assert_string_equal(out, "123456");
    assert_int_equal(cm_json_escape("12\x01", out, 8), -1);
    assert_string_equal(out, "12");
    assert_int_equal(cm_json_escape("x", out, 0), -1);
}

static void test_level_parse(void **state)
{
    (void)state;
    assert_int_equal(cm_log_level_parse("debug", CM_LOG_INFO), CM_LOG_DEBUG);
    assert_int_equal(cm_log_level_parse("info", CM_LOG_ERROR), CM_LOG_INFO);
    assert_int_equal(cm_log_level_parse("warn", CM_LOG_INFO), CM_LOG_WARN);
    assert_int_equal(cm_log_level_parse("error", CM_LOG_INFO), CM_LOG_ERROR);
    assert_int_equal(cm_log_level_parse("ERROR", CM_LOG_WARN), CM_LOG_WARN);
    assert_int_equal(cm_log_level_parse("verbose", CM_LOG_INFO), CM_LOG_INFO);
    assert_int_equal(cm_log_level_parse("", CM_LOG_INFO), CM_LOG_INFO);
    assert_int_equal(cm_log_level_parse(NULL, CM_LOG_DEBUG), CM_LOG_DEBUG);
}

static void test_request_id_is_copied_and_capped(void **state)
{
    char rid[100];
    (void)state;
    assert_string_equal(cm_log_request_id(), "");
    snprintf(rid, sizeof(rid), "req-1");
    cm_log_set_request_id(rid);
    rid[0] = 'X'; /* the logger kept its own copy */
    assert_string_equal(cm_log_request_id(), "req-1");
    memset(rid, 'a', 99);
    rid[99] = '\0';
    cm_log_set_request_id(rid);
    assert_int_equal(strlen(cm_log_request_id()), 64);
    cm_log_set_request_id(NULL);
    assert_string_equal(cm_log_request_id(), "");
}

/* Runs fn with stderr redirected into a pipe; returns what was written (heap). */
static char *capture_stderr(void (*fn)(void *), void *arg)
{
    int p[2], saved;
    char *buf = calloc(1, 65536);
    size_t n = 0;

    assert_non_null(buf);
    assert_int_equal(pipe(p), 0);
    fflush(stderr);
    saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    dup2(p[1], STDERR_FILENO);
    fn(arg);
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(p[1]);
    for (;;) {
        ssize_t r = read(p[0], buf + n, 65535 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(p[0]);
    return buf;
}

static void log_tricky(void *arg)
{
    (void)arg;
    cm_log_init("unit", CM_LOG_INFO);
    cm_log_set_request_id("rid-42");
    cm_info("said \"hi\"\nthen\\left %d", 7);
    cm_debug("below the level, not written");
    cm_log_set_request_id(NULL);
}

static void test_log_line_is_valid_json(void **state)
{
    char *out = capture_stderr(log_tricky, NULL);
    (void)state;
    /* One line only: the debug line was filtered. */
    char *nl = strchr(out, '\n');
    assert_non_null(nl);
    assert_string_equal(nl + 1, "");
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "level")->valuestring, "info");
    assert_string_equal(cJSON_GetObjectItem(j, "request_id")->valuestring, "rid-42");
    assert_string_equal(cJSON_GetObjectItem(j, "msg")->valuestring, "said \"hi\"\nthen\\left 7");
    assert_non_null(cJSON_GetObjectItem(j, "ts"));
    assert_non_null(cJSON_GetObjectItem(j, "service"));
    cJSON_Delete(j);
    free(out);
}

static void log_fields(void *arg)
{
    (void)arg;
    cm_log_init("unit", CM_LOG_INFO);
    cm_log_fields(CM_LOG_WARN, "request", "\"status\":200,\"route\":\"/x\"");
}

static void test_log_fields_appended(void **state)
{
    char *out = capture_stderr(log_fields, NULL);
    (void)state;
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "level")->valuestring, "warn");
    assert_string_equal(cJSON_GetObjectItem(j, "service")->valuestring, "unit");
    assert_int_equal(cJSON_GetObjectItem(j, "status")->valueint, 200);
    assert_string_equal(cJSON_GetObjectItem(j, "route")->valuestring, "/x");
    cJSON_Delete(j);
    free(out);
}

/* A line over 8 KiB drops its fields and cuts the message; it must stay valid JSON even
 * when the cut falls inside an escape sequence. */
static void log_oversized(void *arg)
{
    const char *msg = arg;
    char *fields = malloc(9000);
    assert_non_null(fields);
    memset(fields, 0, 9000);
    memcpy(fields, "\"big\":\"", 7);
    memset(fields + 7, 'f', 8000);
    fields[8007] = '"';
    cm_log_init("unit", CM_LOG_INFO);
    cm_log_fields(CM_LOG_INFO, msg, fields);
    free(fields);
}

static void test_log_truncated_line_stays_json(void **state)
{
    (void)state;
    /* Offsets 0..2: the escaped text reaches byte 2000 at every phase of the "\"" pairs. */
    for (int shift = 0; shift < 3; shift++) {
        char msg[2048];
        memset(msg, 'm', (size_t)shift);
        memset(msg + shift, '"', 1500);
        msg[shift + 1500] = '\0';
        char *out = capture_stderr(log_oversized, msg);
        cJSON *j = cJSON_Parse(out);
        if (j == NULL)
            fail_msg("shift %d: not JSON: %.120s...", shift, out);
        assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "truncated")));
        assert_null(cJSON_GetObjectItem(j, "big"));
        cJSON_Delete(j);
        free(out);
    }
    /* Multibyte text is cut on a character boundary, so the line stays valid UTF-8. */
    for (int shift = 0; shift < 2; shift++) {
        char msg[4000];
        size_t k = (size_t)shift;
        memset(msg, 'm', k);
        for (int i = 0; i < 1500; i++, k += 2)
            memcpy(msg + k, "\xc3\xa9", 2);
        msg[k] = '\0';
        char *out = capture_stderr(log_oversized, msg);
        cJSON *j = cJSON_Parse(out);
        if (j == NULL)
            fail_msg("utf8 shift %d: not JSON: %.120s...", shift, out);
        const char *m = cJSON_GetObjectItem(j, "msg")->valuestring;
        assert_int_equal(cm_utf8_valid(m, strlen(m)), 1);
        assert_true(strlen(m) <= 2000 && strlen(m) >= 1998);
        cJSON_Delete(j);
        free(out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape_specials),
        cmocka_unit_test(test_escape_keeps_utf8),
        cmocka_unit_test(test_escape_capacity),
        cmocka_unit_test(test_level_parse),
        cmocka_unit_test(test_request_id_is_copied_and_capped),
        cmocka_unit_test(test_log_line_is_valid_json),
        cmocka_unit_test(test_log_fields_appended),
        cmocka_unit_test(test_log_truncated_line_stays_json),
    };
    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
