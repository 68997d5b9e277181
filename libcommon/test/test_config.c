/* test_config.c - unit tests of configuration from the environment: numbers, files, --help. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"
#include "common/log.h"

#define VAR "CM_UNIT_TEST_VAR"

static char tmp_path[64];

static void write_tmp(const char *text, size_t len)
{
    FILE *f = fopen(tmp_path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    fclose(f);
}

static int setup(void **state)
{
    (void)state;
    /* The error paths log; keep the test output to what matters. */
    cm_log_init("unit", CM_LOG_ERROR + 1);
    snprintf(tmp_path, sizeof(tmp_path), "/tmp/cm_unit_config_%ld", (long)getpid());
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(tmp_path);
    unsetenv(VAR);
    return 0;
}

static void test_str_default_when_unset_or_empty(void **state)
{
    (void)state;
    unsetenv(VAR);
    assert_string_equal(cm_config_str(VAR, "dflt"), "dflt");
    assert_null(cm_config_str(VAR, NULL));
    setenv(VAR, "", 1);
    assert_string_equal(cm_config_str(VAR, "dflt"), "dflt");
    setenv(VAR, "value", 1);
    assert_string_equal(cm_config_str(VAR, "dflt"), "value");
}

static void test_long_parsing_and_bounds(void **state)
{
    long v = -7;
    (void)state;
    unsetenv(VAR);
    assert_int_equal(cm_config_long(VAR, 42, 0, 100, &v), CM_OK);
    assert_int_equal(v, 42);
    setenv(VAR, "", 1);
    assert_int_equal(cm_config_long(VAR, 43, 0, 100, &v), CM_OK);
    assert_int_equal(v, 43);
    setenv(VAR, "100", 1);
    assert_int_equal(cm_config_long(VAR, 1, 0, 100, &v), CM_OK);
    assert_int_equal(v, 100);
    setenv(VAR, "-5", 1);
    assert_int_equal(cm_config_long(VAR, 1, -10, 10, &v), CM_OK);
    assert_int_equal(v, -5);

    /* Refusals leave *out unchanged. */
    v = 77;
    const char *bad[] = {"101", "-1", "12x", "x12", "1.5", "0x10", "99999999999999999999999", " "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        setenv(VAR, bad[i], 1);
        if (cm_config_long(VAR, 1, 0, 100, &v) != CM_EINVAL)
            fail_msg("%s=\"%s\" was accepted", VAR, bad[i]);
        assert_int_equal(v, 77);
    }
}

static void test_file_read(void **state)
{
    char *buf = NULL;
    size_t len = 0;
    (void)state;
    write_tmp("hello\nworld", 11);
    setenv(VAR, tmp_path, 1);
    assert_int_equal(cm_config_file(VAR, 1024, &buf, &len), CM_OK);
    assert_int_equal(len, 11);
    assert_string_equal(buf, "hello\nworld");
    free(buf);
    /* Exactly at the cap is fine, one byte over is CM_ETOOBIG. */
    buf = NULL;
    assert_int_equal(cm_config_file(VAR, 11, &buf, &len), CM_OK);
    free(buf);
    buf = NULL;
    assert_int_equal(cm_config_file(VAR, 10, &buf, &len), CM_ETOOBIG);
    assert_null(buf);
}

static void test_file_missing(void **state)
{
    char *buf = NULL;
    size_t len = 0;
    (void)state;
    unsetenv(VAR);
    assert_int_equal(cm_config_file(VAR, 1024, &buf, &len), CM_ENOTFOUND);
    setenv(VAR, "/nonexistent/cm-unit/file.pem", 1);
    assert_int_equal(cm_config_file(VAR, 1024, &buf, &len), CM_EIO);
    assert_null(buf);
}

static void test_usage_lists_variables(void **state)
{
    static const cm_config_var vars[] = {
        {"HTTP_PORT", "8080", "port to listen on"},
        {"SECRET_FILE", NULL, "path of the secret"},
    };
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    (void)state;
    assert_non_null(f);
    cm_config_usage(f, "svc", "Does things.", vars, 2);
    fclose(f);
    assert_non_null(strstr(text, "usage: svc"));
    assert_non_null(strstr(text, "Does things."));
    assert_non_null(strstr(text, "HTTP_PORT"));
    assert_non_null(strstr(text, "port to listen on (default: 8080)"));
    assert_non_null(strstr(text, "path of the secret (default: required)"));
    free(text);
}

static void test_help_requested(void **state)
{
    static const cm_config_var vars[] = {{"X", "1", "x"}};
    char prog[] = "svc", help[] = "--help", h[] = "-h", other[] = "--verbose";
    char *with_help[] = {prog, other, help, NULL};
    char *with_h[] = {prog, h, NULL};
    char *without[] = {prog, other, NULL};
    char *help_as_prog[] = {help, NULL};
    (void)state;
    /* Usage goes to stdout; silence it for the test. */
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    FILE *null = freopen("/dev/null", "w", stdout);
    assert_non_null(null);
    int a = cm_config_help_requested(3, with_help, "about", vars, 1);
    int b = cm_config_help_requested(2, with_h, "about", vars, 1);
    int c = cm_config_help_requested(2, without, "about", vars, 1);
    int d = cm_config_help_requested(1, help_as_prog, "about", vars, 1);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    assert_int_equal(a, 1);
    assert_int_equal(b, 1);
    assert_int_equal(c, 0);
    assert_int_equal(d, 0); /* argv[0] is the program, not an option */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_str_default_when_unset_or_empty),
        cmocka_unit_test(test_long_parsing_and_bounds),
        cmocka_unit_test(test_file_read),
        cmocka_unit_test(test_file_missing),
        cmocka_unit_test(test_usage_lists_variables),
        cmocka_unit_test(test_help_requested),
    };
    return cmocka_run_group_tests_name("config", tests, setup, teardown);
}
