/* process.c - signal mask set-up, a synchronous wait for shutdown signals, and a deadline on
 * the shutdown that follows. */
#include "common/process.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

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

/* --- stop deadline ---------------------------------------------------------------------- */

struct cm_stop_deadline {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct timespec at; /* CLOCK_MONOTONIC */
    int disarmed;
    int code;
    void (*last)(void *ud);
    void *ud;
};

static void *watch(void *arg)
{
    cm_stop_deadline *d = arg;
    pthread_mutex_lock(&d->mu);
    while (!d->disarmed)
        if (pthread_cond_timedwait(&d->cv, &d->mu, &d->at) == ETIMEDOUT)
            break;
    if (!d->disarmed) {
        /* The mutex stays held: the main thread's disarm waits here and tears nothing down
         * under `last`, which runs alone until the process ends. */
        cm_error("stop deadline passed with work still running: exiting without it "
                 "(what it had not acknowledged is taken up again by the next instance)");
        if (d->last)
            d->last(d->ud);
        _exit(d->code);
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

cm_err cm_stop_deadline_arm(long ms, int code, void (*last)(void *ud), void *ud,
                            cm_stop_deadline **out)
{
    cm_stop_deadline *d;
    pthread_condattr_t ca;

    *out = NULL;
    if (ms <= 0)
        return CM_OK;
    if ((d = calloc(1, sizeof(*d))) == NULL)
        return CM_ENOMEM;
    d->code = code;
    d->last = last;
    d->ud = ud;
    clock_gettime(CLOCK_MONOTONIC, &d->at);
    d->at.tv_sec += ms / 1000;
    d->at.tv_nsec += (ms % 1000) * 1000000L;
    if (d->at.tv_nsec >= 1000000000L) {
        d->at.tv_sec++;
        d->at.tv_nsec -= 1000000000L;
    }
    pthread_mutex_init(&d->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&d->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&d->thread, NULL, watch, d) != 0) {
        pthread_mutex_destroy(&d->mu);
        pthread_cond_destroy(&d->cv);
        free(d);
        return CM_EIO;
    }
    *out = d;
    return CM_OK;
}

void cm_stop_deadline_disarm(cm_stop_deadline *d)
{
    if (d == NULL)
        return;
    pthread_mutex_lock(&d->mu);
    d->disarmed = 1;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
    pthread_join(d->thread, NULL);
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cv);
    free(d);
}
