/* test_process.c - unit tests of the shutdown-signal handling (common/process.h). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_waits_for_each_shutdown_signal),
        cmocka_unit_test(test_sigpipe_ignored),
    };
    return cmocka_run_group_tests_name("process", tests, NULL, NULL);
}
