/* ticker.h - a background thread that runs one function periodically: the outboxes' markers
 * and sweepers, the services' housekeeping passes.
 *
 * `fn(ud, last)` runs `every_ms` after the previous run ended, at once when woken
 * (cm_ticker_wake, e.g. when there is work), and, if the ticker was started with `final` set,
 * one last time with `last` = 1 inside cm_ticker_stop, so that work handed over just before the
 * stop is not dropped. Runs never overlap. */
#ifndef COMMON_TICKER_H
#define COMMON_TICKER_H

#include <stdint.h>

#include "common/error.h"

typedef struct cm_ticker cm_ticker;

typedef void (*cm_tick_fn)(void *ud, int last);

/* Starts the thread; the first run comes after `every_ms` (> 0). CM_EINVAL, CM_ENOMEM. */
cm_err cm_ticker_start(int64_t every_ms, int final, cm_tick_fn fn, void *ud, cm_ticker **out);

/* Asks for a run now (or right after the current one). Thread-safe, cheap, never blocks on fn. */
void cm_ticker_wake(cm_ticker *t);

/* Stops: waits for a run in progress, makes the final run if asked for, joins and frees.
 * Accepts NULL. */
void cm_ticker_stop(cm_ticker *t);

#endif
