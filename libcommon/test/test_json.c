/* test_json.c - unit tests of depth-capped JSON parsing and typed field access (common/json.h). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"

static char detail[256];

/* Parses a string literal; returns the result code, the tree in *out. */
static cm_err parse(const char *text, int max_depth, cJSON **out)
{
    detail[0] = '\0';
    return cm_json_parse(text, strlen(text), max_depth, out, detail, sizeof(detail));
}

/* n nested arrays: "[[...]]". */
static char *nested(int n)
{
    char *s = malloc((size_t)n * 2 + 1);
    assert_non_null(s);
    memset(s, '[', (size_t)n);
    memset(s + n, ']', (size_t)n);
    s[2 * n] = '\0';
    return s;
}

static void test_depth_cap(void **state)
{
    cJSON *v = NULL;
    (void)state;
    char *ok = nested(32), *deep = nested(33);
    assert_int_equal(parse(ok, CM_JSON_DEPTH_DEFAULT, &v), CM_OK);
    cJSON_Delete(v);
    v = NULL;
    assert_int_equal(parse(deep, CM_JSON_DEPTH_DEFAULT, &v), CM_EINVAL);
    assert_null(v);
    assert_string_equal(detail, "JSON nests deeper than 32 levels (at byte 32)");
    free(ok);
    free(deep);
    /* Objects count too, mixed with arrays. */
    assert_int_equal(parse("{\"a\":[{\"b\":[1]}]}", 4, &v), CM_OK);
    cJSON_Delete(v);
    v = NULL;
    assert_int_equal(parse("{\"a\":[{\"b\":[1]}]}", 3, &v), CM_EINVAL);
    assert_null(v);
    /* A hostile body far deeper than any stack allows is refused, not recursed into. */
    char *bomb = nested(100000);
    assert_int_equal(parse(bomb, CM_JSON_DEPTH_DEFAULT, &v), CM_EINVAL);
    free(bomb);
}

static void test_brackets_in_strings_do_not_count(void **state)
{
    cJSON *v = NULL;
    char text[256];
    (void)state;
    /* 40 brackets inside a string at depth 1. */
    snprintf(text, sizeof(text), "[\"%s\"]", "[[[[[[[[[[{{{{{{{{{{[[[[[[[[[[{{{{{{{{{{");
    assert_int_equal(parse(text, 2, &v), CM_OK);
    cJSON_Delete(v);
    v = NULL;
    /* An escaped quote does not end the string: the brackets after it are still text. */
    assert_int_equal(parse("[\"a\\\"[[[[[[\"]", 1, &v), CM_OK);
    assert_string_equal(cJSON_GetArrayItem(v, 0)->valuestring, "a\"[[[[[[");
    cJSON_Delete(v);
    v = NULL;
    /* An escaped backslash before the closing quote does end it. */
    assert_int_equal(parse("[\"a\\\\\",[[1]]]", 2, &v), CM_EINVAL);
    assert_null(v);
    assert_int_equal(parse("[\"a\\\\\",[[1]]]", 3, &v), CM_OK);
    cJSON_Delete(v);
}

static void test_invalid_utf8_refused(void **state)
{
    cJSON *v = NULL;
    (void)state;
    assert_int_equal(parse("{\"a\":\"\xc0\x80\"}", 32, &v), CM_EINVAL);
    assert_string_equal(detail, "the body is not valid UTF-8 (RFC 8259 section 8.1)");
    assert_int_equal(parse("{\"a\":\"\xed\xa0\x80\"}", 32, &v), CM_EINVAL);
    assert_int_equal(parse("{\"a\":\"\xff\"}", 32, &v), CM_EINVAL);
    assert_int_equal(cm_json_parse("{\"a\":1}\0", 8, 32, &v, detail, sizeof(detail)), CM_EINVAL);
    assert_null(v);
    assert_int_equal(parse("{\"a\":\"caf\xc3\xa9\"}", 32, &v), CM_OK);
    assert_string_equal(cJSON_GetObjectItem(v, "a")->valuestring, "caf\xc3\xa9");
    cJSON_Delete(v);
}

static void test_trailing_data_refused(void **state)
{
    cJSON *v = NULL;
    (void)state;
    assert_int_equal(parse("{} x", 32, &v), CM_EINVAL);
    assert_string_equal(detail, "unexpected data after the JSON value at byte 3");
    assert_int_equal(parse("{}{}", 32, &v), CM_EINVAL);
    assert_int_equal(parse("[1],", 32, &v), CM_EINVAL);
    assert_null(v);
    assert_int_equal(parse(" {\"a\":1} \r\n\t ", 32, &v), CM_OK);
    cJSON_Delete(v);
}

static void test_malformed_and_empty(void **state)
{
    cJSON *v = NULL;
    (void)state;
    assert_int_equal(cm_json_parse("", 0, 32, &v, detail, sizeof(detail)), CM_EINVAL);
    assert_string_equal(detail, "the request body is empty; a JSON value is expected");
    assert_int_equal(parse("{\"a\":}", 32, &v), CM_EINVAL);
    assert_string_equal(detail, "invalid JSON near byte 5");
    assert_int_equal(parse("{\"a\" 1}", 32, &v), CM_EINVAL);
    assert_true(strncmp(detail, "invalid JSON near byte ", 23) == 0);
    assert_int_equal(parse("[1,2", 32, &v), CM_EINVAL);
    assert_int_equal(parse("nul", 32, &v), CM_EINVAL);
    assert_int_equal(parse("{'a':1}", 32, &v), CM_EINVAL);
    assert_null(v);
}

static void test_nul_escape_refused(void **state)
{
    cJSON *v = NULL;
    (void)state;
    /* cJSON would cut the string at an escaped NUL; such text is refused instead. */
    assert_int_equal(parse("{\"a\":\"x\\u0000y\"}", 32, &v), CM_EINVAL);
    assert_string_equal(detail, "strings must not contain U+0000 (at byte 7)");
    assert_int_equal(parse("{\"a\\u0000\":1}", 32, &v), CM_EINVAL); /* in a key too */
    assert_null(v);
    /* An escaped backslash followed by the letters u0000 is plain text. */
    assert_int_equal(parse("{\"a\":\"x\\\\u0000\"}", 32, &v), CM_OK);
    assert_string_equal(cJSON_GetObjectItem(v, "a")->valuestring, "x\\u0000");
    cJSON_Delete(v);
    v = NULL;
    assert_int_equal(parse("{\"a\":\"\\u0001\"}", 32, &v), CM_OK);
    cJSON_Delete(v);
}

static void test_length_is_respected(void **state)
{
    cJSON *v = NULL;
    (void)state;
    /* The buffer need not be NUL-terminated: what follows len is not read. */
    const char buf[] = {'{', '"', 'a', '"', ':', '1', '}', 'x', 'y'};
    assert_int_equal(cm_json_parse(buf, 7, 32, &v, detail, sizeof(detail)), CM_OK);
    assert_int_equal(cJSON_GetObjectItem(v, "a")->valueint, 1);
    cJSON_Delete(v);
    v = NULL;
    assert_int_equal(cm_json_parse(buf, 6, 32, &v, detail, sizeof(detail)), CM_EINVAL);
    assert_null(v);
}

static cJSON *obj(const char *text)
{
    cJSON *v = NULL;
    assert_int_equal(parse(text, 32, &v), CM_OK);
    return v;
}

static void test_string_getter(void **state)
{
    cJSON *o = obj("{\"name\":\"al\",\"n\":5,\"t\":\"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e"
                   "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\",\"nul\":null}");
    const char *s = "default";
    (void)state;
    assert_int_equal(cm_json_string(o, "missing", 0, 0, 10, &s, detail, sizeof(detail)), CM_OK);
    assert_string_equal(s, "default");
    assert_int_equal(cm_json_string(o, "missing", 1, 0, 10, &s, detail, sizeof(detail)),
                     CM_EINVAL);
    assert_string_equal(detail, "field 'missing' is required");
    assert_int_equal(cm_json_string(o, "n", 1, 0, 10, &s, detail, sizeof(detail)), CM_EINVAL);
    assert_string_equal(detail, "field 'n' must be a string, not a number");
    assert_int_equal(cm_json_string(o, "nul", 0, 0, 10, &s, detail, sizeof(detail)), CM_EINVAL);
    assert_string_equal(detail, "field 'nul' must be a string, not null");
    assert_int_equal(cm_json_string(o, "name", 1, 3, 10, &s, detail, sizeof(detail)), CM_EINVAL);
    assert_string_equal(detail, "field 'name' must have at least 3 characters");
    assert_string_equal(s, "default"); /* unchanged on failure */
    assert_int_equal(cm_json_string(o, "name", 1, 2, 2, &s, detail, sizeof(detail)), CM_OK);
    assert_string_equal(s, "al");
    /* Six characters in 18 bytes: counted in characters. */
    assert_int_equal(cm_json_string(o, "t", 1, 1, 6, &s, detail, sizeof(detail)), CM_OK);
    assert_int_equal(cm_json_string(o, "t", 1, 1, 5, &s, detail, sizeof(detail)), CM_EINVAL);
    assert_string_equal(detail, "field 't' has 6 characters; at most 5 are allowed");
    assert_int_equal(cm_json_string(o, "t", 1, 7, 100, &s, detail, sizeof(detail)), CM_EINVAL);
    cJSON_Delete(o);
}

static void test_long_getter(void **state)
{
    cJSON *o = obj("{\"n\":7,\"neg\":-3,\"f\":1.5,\"s\":\"7\",\"big\":1e300,\"b\":true,"
                   "\"max\":9223372036854775807,\"huge\":9223372036854775808}");
    long v = 99;
    (void)state;
    assert_int_equal(cm_json_long(o, "missing", 0, 0, 10, &v, detail, sizeof(detail)), CM_OK);
    assert_int_equal(v, 99);
    assert_int_equal(cm_json_long(o, "missing", 1, 0, 10, &v, detail, sizeof(detail)), CM_EINVAL);
    assert_string_equal(detail, "field 'missing' is required");
    assert_int_equal(cm_json_long(o, "n", 1, 0, 10, &v, detail, sizeof(detail)), CM_OK);
    assert_int_equal(v, 7);
    assert_int_equal(cm_json_long(o, "neg", 1, -10, 10, &v, detail, sizeof(detail)), CM_OK);
    assert_int_equal(v, -3);
    v = 99;
    assert_int_equal(cm_json_long(o, "neg", 1, 0, 10, &v, detail, sizeof(detail)), CM_EINVAL);
    assert_string_equal(detail, "field 'neg' must be an integer in [0, 10]");
    assert_int_equal(cm_json_long(o, "n", 1, 0, 6, &v, detail, sizeof(detail)), CM_EINVAL);
    assert_string_equal(detail, "field 'n' must be an integer in [0, 6]");
    assert_int_equal(cm_json_long(o, "f", 1, 0, 10, &v, detail, sizeof(detail)), CM_EINVAL);
    assert_string_equal(detail, "field 'f' must be an integer in [0, 10]");
    assert_int_equal(cm_json_long(o, "s", 1, 0, 10, &v, detail, sizeof(detail)), CM_EINVAL);
    assert_string_equal(detail, "field 's' must be an integer, not a string");
    assert_int_equal(cm_json_long(o, "b", 1, 0, 10, &v, detail, sizeof(detail)), CM_EINVAL);
    assert_string_equal(detail, "field 'b' must be an integer, not a boolean");
    assert_int_equal(v, 99);
    /* Values beyond what a long holds are refused even with the widest bounds. */
    assert_int_equal(cm_json_long(o, "big", 1, LONG_MIN, LONG_MAX, &v, detail, sizeof(detail)),
                     CM_EINVAL);
    assert_int_equal(cm_json_long(o, "huge", 1, LONG_MIN, LONG_MAX, &v, detail, sizeof(detail)),
                     CM_EINVAL);
    /* 9223372036854775807 is 2^63 as a double: no long can hold it exactly. */
    assert_int_equal(cm_json_long(o, "max", 1, LONG_MIN, LONG_MAX, &v, detail, sizeof(detail)),
                     CM_EINVAL);
    assert_int_equal(v, 99);
    cJSON_Delete(o);
}

static void test_bool_getter(void **state)
{
    cJSON *o = obj("{\"t\":true,\"f\":false,\"n\":1,\"s\":\"true\"}");
    int b = 7;
    (void)state;
    assert_int_equal(cm_json_bool(o, "missing", 0, &b, detail, sizeof(detail)), CM_OK);
    assert_int_equal(b, 7);
    assert_int_equal(cm_json_bool(o, "missing", 1, &b, detail, sizeof(detail)), CM_EINVAL);
    assert_string_equal(detail, "field 'missing' is required");
    assert_int_equal(cm_json_bool(o, "t", 1, &b, detail, sizeof(detail)), CM_OK);
    assert_int_equal(b, 1);
    assert_int_equal(cm_json_bool(o, "f", 1, &b, detail, sizeof(detail)), CM_OK);
    assert_int_equal(b, 0);
    assert_int_equal(cm_json_bool(o, "n", 1, &b, detail, sizeof(detail)), CM_EINVAL);
    assert_string_equal(detail, "field 'n' must be a boolean, not a number");
    assert_int_equal(cm_json_bool(o, "s", 1, &b, detail, sizeof(detail)), CM_EINVAL);
    assert_string_equal(detail, "field 's' must be a boolean, not a string");
    cJSON_Delete(o);
}

static void test_only_keys(void **state)
{
    static const char *const allowed[] = {"text", "client_msg_id", NULL};
    (void)state;
    cJSON *o = obj("{\"text\":\"hi\",\"client_msg_id\":\"c1\"}");
    assert_int_equal(cm_json_only_keys(o, allowed, detail, sizeof(detail)), CM_OK);
    cJSON_Delete(o);
    o = obj("{}");
    assert_int_equal(cm_json_only_keys(o, allowed, detail, sizeof(detail)), CM_OK);
    cJSON_Delete(o);
    o = obj("{\"text\":\"hi\",\"admin\":true}");
    assert_int_equal(cm_json_only_keys(o, allowed, detail, sizeof(detail)), CM_EINVAL);
    assert_string_equal(detail, "unknown field 'admin'");
    cJSON_Delete(o);
    o = obj("{\"Text\":\"case matters\"}");
    assert_int_equal(cm_json_only_keys(o, allowed, detail, sizeof(detail)), CM_EINVAL);
    assert_string_equal(detail, "unknown field 'Text'");
    cJSON_Delete(o);
    o = obj("[1]");
    assert_int_equal(cm_json_only_keys(o, allowed, detail, sizeof(detail)), CM_EINVAL);
    assert_string_equal(detail, "the body must be a JSON object, not an array");
    cJSON_Delete(o);
}

static void test_detail_truncated_safely(void **state)
{
    cJSON *o = obj("{\"text\":1}");
    const char *s;
    char small[8];
    (void)state;
    assert_int_equal(cm_json_string(o, "text", 1, 0, 10, &s, small, sizeof(small)), CM_EINVAL);
    assert_string_equal(small, "field '");
    cJSON_Delete(o);
}

static void test_print_compact(void **state)
{
    cJSON *o = obj("{ \"a\" : [ 1 , 2 ] , \"b\" : \"x y\" }");
    (void)state;
    char *s = cm_json_print(o);
    assert_string_equal(s, "{\"a\":[1,2],\"b\":\"x y\"}");
    free(s);
    cJSON_Delete(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_depth_cap),
        cmocka_unit_test(test_brackets_in_strings_do_not_count),
        cmocka_unit_test(test_invalid_utf8_refused),
        cmocka_unit_test(test_trailing_data_refused),
        cmocka_unit_test(test_malformed_and_empty),
        cmocka_unit_test(test_nul_escape_refused),
        cmocka_unit_test(test_length_is_respected),
        cmocka_unit_test(test_string_getter),
        cmocka_unit_test(test_long_getter),
        cmocka_unit_test(test_bool_getter),
        cmocka_unit_test(test_only_keys),
        cmocka_unit_test(test_detail_truncated_safely),
        cmocka_unit_test(test_print_compact),
    };
    return cmocka_run_group_tests_name("json", tests, NULL, NULL);
}
