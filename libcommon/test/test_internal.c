/* test_internal.c - unit tests of the /internal routes' shared key (common/internal.h).
 * The key loads once per process, so each case runs in a child process of its own. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/internal.h"

#define K1 "0123456789abcdef0123"
#define K2 "fedcba9876543210-old"

/* Runs fn in a child with INTERNAL_KEY_FILE holding `content` (NULL: unset; "-": a path that
 * does not exist); returns the child's exit status (fn's result). */
static int in_child(const char *content, int (*fn)(void))
{
    char path[] = "/tmp/test_internal_XXXXXX";
    pid_t pid;
    int st = -1, fd = -1;

    if (content && strcmp(content, "-") != 0) {
        fd = mkstemp(path);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
        close(fd);
    }
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (content == NULL)
            unsetenv("INTERNAL_KEY_FILE");
        else
            setenv("INTERNAL_KEY_FILE", strcmp(content, "-") ? path : "/nonexistent/key", 1);
        _exit(fn());
    }
    waitpid(pid, &st, 0);
    if (fd >= 0)
        unlink(path);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 99;
}

static int unset_is_open(void)
{
    return cm_internal_key_load() == CM_OK && cm_internal_key_header() == NULL &&
                   cm_internal_key_accepts(NULL) && cm_internal_key_accepts("anything")
               ? 0
               : 1;
}

static int two_keys(void)
{
    const char *h = cm_internal_key_header();
    if (cm_internal_key_load() != CM_OK || h == NULL || strcmp(h, "X-Internal-Key: " K1) != 0)
        return 1;
    if (!cm_internal_key_accepts(K1) || !cm_internal_key_accepts(K2))
        return 2;
    if (cm_internal_key_accepts(NULL) || cm_internal_key_accepts("") ||
        cm_internal_key_accepts(K1 "x") || cm_internal_key_accepts("0123456789abcdef012"))
        return 3;
    return 0;
}

static int refused(void)
{
    cm_err rc = cm_internal_key_load();
    if (rc == CM_OK || cm_internal_key_header() != NULL)
        return 1;
    /* A broken key file opens nothing, not even to the right key. */
    return cm_internal_key_accepts(K1) || cm_internal_key_accepts(NULL) ? 2 : 0;
}

static void test_unset_leaves_the_routes_open(void **state)
{
    (void)state;
    assert_int_equal(in_child(NULL, unset_is_open), 0);
}

static void test_the_first_key_is_sent_and_every_key_accepted(void **state)
{
    (void)state;
    assert_int_equal(in_child(K1 "\n" K2 "\n", two_keys), 0);
    /* Blank lines, surrounding blanks and CRLF are not part of a key. */
    assert_int_equal(in_child("\n  " K1 " \r\n\n\t" K2, two_keys), 0);
}

static void test_an_unusable_file_refuses_to_load(void **state)
{
    (void)state;
    assert_int_equal(in_child("-", refused), 0);                           /* unreadable */
    assert_int_equal(in_child("", refused), 0);                            /* no key */
    assert_int_equal(in_child(" \n\n", refused), 0);                       /* no key */
    assert_int_equal(in_child("short-key\n", refused), 0);                 /* < 16 */
    assert_int_equal(in_child(K1 "\n" "has a space inside it\n", refused), 0); /* not a token */
    assert_int_equal(in_child(K1 "\n" K1 "\n" K1 "\n" K1 "\n" K2 "\n", refused), 0); /* > 4 */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unset_leaves_the_routes_open),
        cmocka_unit_test(test_the_first_key_is_sent_and_every_key_accepted),
        cmocka_unit_test(test_an_unusable_file_refuses_to_load),
    };
    return cmocka_run_group_tests_name("internal", tests, NULL, NULL);
}
