/* process.c - signal mask set-up, a synchronous wait for shutdown signals, and a deadline on
 * the shutdown that follows. */
#include "common/process.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/log.h"
#include "common/ticker.h"

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

/* A ticker whose first run, `ms` after the arming, is the deadline: it never returns. */
struct cm_stop_deadline {
    cm_ticker *ticker;
    int code;
    void (*last)(void *ud);
    void *ud;
};

static void fire(void *arg, int final)
{
    cm_stop_deadline *d = arg;

    (void)final;
    cm_error("stop deadline passed with work still running: exiting without it "
             "(what it had not acknowledged is taken up again by the next instance)");
    if (d->last)
        d->last(d->ud);
    _exit(d->code);
}

cm_err cm_stop_deadline_arm(long ms, int code, void (*last)(void *ud), void *ud,
                            cm_stop_deadline **out)
{
    cm_stop_deadline *d;
    cm_err rc;

    *out = NULL;
    if (ms <= 0)
        return CM_OK;
    if ((d = calloc(1, sizeof(*d))) == NULL)
        return CM_ENOMEM;
    d->code = code;
    d->last = last;
    d->ud = ud;
    if ((rc = cm_ticker_start(ms, 0, fire, d, &d->ticker)) != CM_OK) {
        free(d);
        return rc;
    }
    *out = d;
    return CM_OK;
}

void cm_stop_deadline_disarm(cm_stop_deadline *d)
{
    if (d == NULL)
        return;
    /* Waits for a run in progress: one that started ends the process (fire), so nothing is
     * torn down under its `last`. */
    cm_ticker_stop(d->ticker);
    free(d);
}
