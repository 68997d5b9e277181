/* clock.h - wall-clock milliseconds and RFC 3339 timestamps. */
#ifndef COMMON_CLOCK_H
#define COMMON_CLOCK_H

#include <stdint.h>

#define CM_RFC3339_LEN 32

/* Unix time in milliseconds (CLOCK_REALTIME). */
int64_t cm_clock_now_ms(void);

/* Formats Unix milliseconds as RFC 3339 UTC with milliseconds: "2026-11-21T11:24:02.123Z". */
void cm_clock_rfc3339(int64_t ms, char out[CM_RFC3339_LEN]);

#endif
