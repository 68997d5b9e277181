/* test_process.c - unit tests of the shutdown-signal handling (common/process.h). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/process.h"

static void *send_later(void *arg)
{
    int sig = *(int *)arg;
    usleep(20000);
    kill(getpid(), sig); /* process-directed: any thread with it unblocked could take it */
    return NULL;
}

static void test_waits_for_each_shutdown_signal(void **state)
{
    static int sigs[] = {SIGTERM, SIGINT, SIGHUP};
    (void)state;
    /* Blocked first, so the threads started after inherit the mask and the signal stays
     * pending for sigwait instead of killing the test. */
    cm_process_block_signals();
    for (int i = 0; i < 3; i++) {
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, send_later, &sigs[i]), 0);
        assert_int_equal(cm_process_wait_signal(), sigs[i]);
        pthread_join(th, NULL);
    }
}

static void test_sigpipe_ignored(void **state)
{
    int p[2];
    (void)state;
    cm_process_block_signals();
    assert_int_equal(pipe(p), 0);
    close(p[0]);
    /* Writing to a closed pipe fails with EPIPE instead of killing the process. */
    assert_int_equal(write(p[1], "x", 1), -1);
    close(p[1]);
}

static int last_ran;
static int last_fd = -1; /* the child's end of a pipe: `last` writes "L" to it */

static void last(void *ud)
{
    (void)ud;
    last_ran = 1;
    if (last_fd >= 0)
        (void)!write(last_fd, "L", 1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_a_disarmed_deadline_does_nothing(void **state)
{
    cm_stop_deadline *d = NULL;
    (void)state;
    last_ran = 0;
    assert_int_equal(cm_stop_deadline_arm(100, 7, last, NULL, &d), CM_OK);
    assert_non_null(d);
    cm_stop_deadline_disarm(d); /* in time */
    usleep(200000);
    assert_int_equal(last_ran, 0);
    assert_int_equal(cm_stop_deadline_arm(0, 7, last, NULL, &d), CM_OK); /* 0: none */
    assert_null(d);
    cm_stop_deadline_disarm(NULL);
}

/* A child whose "shutdown" hangs: the watchdog runs `last` and ends it with the code, at the
 * deadline (not before, not much after). */
static void test_a_passed_deadline_runs_last_and_exits_with_its_code(void **state)
{
    double t0 = now_s();
    int status = 0, p[2];
    char got = 0;
    pid_t pid;
    (void)state;
    assert_int_equal(pipe(p), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        cm_stop_deadline *d = NULL;
        close(p[0]);
        last_fd = p[1];
        last_ran = 0;
        if (cm_stop_deadline_arm(150, 7, last, NULL, &d) != CM_OK)
            _exit(99);
        sleep(10); /* stuck */
        _exit(last_ran ? 98 : 97);
    }
    close(p[1]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(read(p[0], &got, 1), 1);
    assert_int_equal(got, 'L');
    close(p[0]);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 7);
    assert_in_range((long)((now_s() - t0) * 1000), 150, 5000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_waits_for_each_shutdown_signal),
        cmocka_unit_test(test_sigpipe_ignored),
        cmocka_unit_test(test_a_disarmed_deadline_does_nothing),
        cmocka_unit_test(test_a_passed_deadline_runs_last_and_exits_with_its_code),
    };
    return cmocka_run_group_tests_name("process", tests, NULL, NULL);
}
