/* process.h - process life cycle: shutdown signals handled synchronously by the main thread. */
#ifndef COMMON_PROCESS_H
#define COMMON_PROCESS_H

/* Blocks SIGTERM, SIGINT and SIGHUP (and ignores SIGPIPE) in the calling thread. Call first
 * in main, before any thread starts, so every thread inherits the mask. */
void cm_process_block_signals(void);

/* Waits until SIGTERM, SIGINT or SIGHUP arrives and returns its number. */
int cm_process_wait_signal(void);

#endif
