/* process.h - process life cycle: shutdown signals handled synchronously by the main thread. */
#ifndef COMMON_PROCESS_H
#define COMMON_PROCESS_H

#include "common/error.h"

/* Blocks SIGTERM, SIGINT and SIGHUP (and ignores SIGPIPE) in the calling thread. Call first
 * in main, before any thread starts, so every thread inherits the mask. */
void cm_process_block_signals(void);

/* Waits until SIGTERM, SIGINT or SIGHUP arrives and returns its number. */
int cm_process_wait_signal(void);

/* A bound on a service's shutdown: a process stopping its threads after the signal may be
 * held by one of them (a consumer in a slow database call, a sender waiting on a provider)
 * past its orchestrator's grace period (Kubernetes' terminationGracePeriodSeconds, 30 s by
 * default; the e2e harness waits 20 s), and then be killed at an arbitrary point. Armed right
 * after the signal with a budget under that period: unless disarmed within `ms`
 * milliseconds, a watchdog thread logs, runs `last(ud)` (bounded work that must not wait on
 * the stuck threads, e.g. flushing Kafka producers; NULL: none) and ends the process with
 * _exit(`code`). It is safe only for a service whose acknowledgements all come after a
 * commit (Kafka offsets stored after the batch's writes, HTTP answers after the database's):
 * what is cut short was not acknowledged and is done again by the next instance. Disarm it
 * before tearing down what `last` uses. `ms` <= 0: no deadline (*out = NULL). CM_ENOMEM
 * (no memory or no thread). The watchdog is a cm_ticker (common/ticker.h) whose first run is
 * the deadline. */
typedef struct cm_stop_deadline cm_stop_deadline;
cm_err cm_stop_deadline_arm(long ms, int code, void (*last)(void *ud), void *ud,
                            cm_stop_deadline **out);

/* Cancels the deadline and frees it (accepts NULL). If the watchdog has fired, this waits
 * while it ends the process, so nothing is torn down under its `last`. */
void cm_stop_deadline_disarm(cm_stop_deadline *d);

#endif
