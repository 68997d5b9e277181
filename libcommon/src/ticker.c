/* ticker.c - one periodic thread (common/ticker.h). */
#include "common/ticker.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct cm_ticker {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int64_t every_ms;
    int final, stop, woken;
    cm_tick_fn fn;
    void *ud;
};

static void *ticker_main(void *arg)
{
    cm_ticker *t = arg;

    pthread_mutex_lock(&t->lock);
    for (;;) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until); /* the condition's clock: no wall-clock jumps */
        until.tv_sec += (time_t)(t->every_ms / 1000);
        until.tv_nsec += (long)(t->every_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!t->stop && !t->woken &&
               pthread_cond_timedwait(&t->wake, &t->lock, &until) == 0)
            ; /* a spurious wake-up waits on */
        if (t->stop)
            break;
        t->woken = 0;
        pthread_mutex_unlock(&t->lock);
        t->fn(t->ud, 0);
        pthread_mutex_lock(&t->lock);
    }
    pthread_mutex_unlock(&t->lock);
    if (t->final)
        t->fn(t->ud, 1);
    return NULL;
}

cm_err cm_ticker_start(int64_t every_ms, int final, cm_tick_fn fn, void *ud, cm_ticker **out)
{
    pthread_condattr_t ca;
    cm_ticker *t;

    if (every_ms <= 0 || fn == NULL)
        return CM_EINVAL;
    t = calloc(1, sizeof(*t));
    if (t == NULL)
        return CM_ENOMEM;
    t->every_ms = every_ms;
    t->final = final;
    t->fn = fn;
    t->ud = ud;
    pthread_mutex_init(&t->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->wake, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&t->thread, NULL, ticker_main, t) != 0) {
        pthread_mutex_destroy(&t->lock);
        pthread_cond_destroy(&t->wake);
        free(t);
        return CM_ENOMEM;
    }
    *out = t;
    return CM_OK;
}

void cm_ticker_wake(cm_ticker *t)
{
    pthread_mutex_lock(&t->lock);
    t->woken = 1;
    pthread_cond_signal(&t->wake);
    pthread_mutex_unlock(&t->lock);
}

void cm_ticker_stop(cm_ticker *t)
{
    if (t == NULL)
        return;
    pthread_mutex_lock(&t->lock);
    t->stop = 1;
    pthread_cond_signal(&t->wake);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->thread, NULL);
    pthread_mutex_destroy(&t->lock);
    pthread_cond_destroy(&t->wake);
    free(t);
}
