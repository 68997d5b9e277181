/* process.c - signal mask set-up and a synchronous wait for shutdown signals. */
#include "common/process.h"

#include <pthread.h>
#include <signal.h>

static void shutdown_set(sigset_t *s)
{
    sigemptyset(s);
    sigaddset(s, SIGTERM);
    sigaddset(s, SIGINT);
    sigaddset(s, SIGHUP);
}

void cm_process_block_signals(void)
{
    sigset_t s;
    shutdown_set(&s);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int cm_process_wait_signal(void)
{
    sigset_t s;
    int sig = 0;
    shutdown_set(&s);
    while (sigwait(&s, &sig) != 0)
        ;
    return sig;
}
