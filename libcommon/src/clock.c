/* clock.c - time helpers. */
#include "common/clock.h"

#include <stdio.h>
#include <time.h>

int64_t cm_clock_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cm_clock_rfc3339(int64_t ms, char out[CM_RFC3339_LEN])
{
    time_t s = (time_t)(ms / 1000 - (ms % 1000 < 0)); /* floor: -1 ms is 1969-12-31T23:59:59.999 */
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(out, CM_RFC3339_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, CM_RFC3339_LEN - n, ".%03uZ", (unsigned)((ms % 1000 + 1000) % 1000));
}
