/* notification_jobs.c - the housekeeping thread: the outbox tick (marks delivered
 * notification.created events, produces again those left unpublished). */
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "notification.h"

struct nf_jobs {
    nf_ctx *ctx;
    long every_ms;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
};

static void *run(void *arg)
{
    nf_jobs *j = arg;
    pthread_mutex_lock(&j->mu);
    while (!j->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += j->every_ms / 1000;
        ts.tv_nsec += (j->every_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&j->cv, &j->mu, &ts);
        if (j->stop)
            break;
        pthread_mutex_unlock(&j->mu);
        cm_outbox_tick(j->ctx->outbox);
        pthread_mutex_lock(&j->mu);
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

cm_err nf_jobs_start(nf_ctx *ctx, long every_ms, nf_jobs **out)
{
    nf_jobs *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return CM_ENOMEM;
    j->ctx = ctx;
    j->every_ms = every_ms;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    if (pthread_create(&j->thread, NULL, run, j) != 0) {
        pthread_mutex_destroy(&j->mu);
        pthread_cond_destroy(&j->cv);
        free(j);
        return CM_EIO;
    }
    *out = j;
    return CM_OK;
}

void nf_jobs_stop(nf_jobs *j)
{
    if (j == NULL)
        return;
    pthread_mutex_lock(&j->mu);
    j->stop = 1;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    pthread_join(j->thread, NULL);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}
