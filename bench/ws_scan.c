/* ws_scan.c - the socket benchmark's frame counter in C (bench/socket_bench.py loads it with
 * ctypes as build/rel/bench/libws_scan.so).
 *
 * Counting the delivered frames frame by frame in Python cost the load generator about 1.3-2.2
 * us a frame, so the rooms-of-5 fan-out ended at the generator's pace (about 430-450k
 * frames/s, the same for ours and uWebSockets.js: 2026-11-22, a timeline of frames received)
 * rather than the servers'. This counts the common frames at C speed and leaves every other
 * frame (control frames, other text, a frame not yet complete) to the Python loop. In the
 * latency runs it also reads each frame's publish time, the same work for every server. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

size_t ws_scan(const uint8_t *buf, size_t pos, size_t end, const uint8_t *marker, size_t mlen,
               long *count, double *ts, long ts_cap, long *ts_n);

/* The publish time a frame's payload p[0..n) carries, in ms since the epoch: the number after
 * its first `"ts":` (a string or a number) or `ts=` (an end-to-end message's text), as
 * bench/socket_bench.py's Load.TS reads it. -1 when there is none. */
static double frame_ts(const uint8_t *p, size_t n)
{
    static const char key1[] = "\"ts\":", key2[] = "ts=";
    const uint8_t *a = memmem(p, n, key1, sizeof(key1) - 1), *b = memmem(p, n, key2, sizeof(key2) - 1);
    const uint8_t *at, *e = p + n;
    char num[32];
    size_t k = 0;

    if (a && (!b || a < b)) {
        at = a + sizeof(key1) - 1;
        if (at < e && *at == '"') /* "ts":"<number>" */
            at++;
    } else if (b) {
        at = b + sizeof(key2) - 1;
    } else {
        return -1;
    }
    while (at < e && k < sizeof(num) - 1 && ((*at >= '0' && *at <= '9') || *at == '.'))
        num[k++] = (char)*at++;
    num[k] = '\0';
    return k ? strtod(num, NULL) : -1;
}

/* Walks buf[pos..end) as a server's WebSocket frames (RFC 6455 section 5.2: unmasked) and
 * counts the complete, unfragmented text frames (FIN set, opcode 1) whose payload begins with
 * marker[0..mlen). Stops before the first frame that is not one of those or is not complete
 * in the buffer, and, when ts is not NULL, before a frame whose publish time would not fit in
 * ts[0..ts_cap). Returns the offset it stopped at; *count receives the frames counted and,
 * when ts is not NULL, *ts_n how many publish times it stored (frames without one store none). */
size_t ws_scan(const uint8_t *buf, size_t pos, size_t end, const uint8_t *marker, size_t mlen,
               long *count, double *ts, long ts_cap, long *ts_n)
{
    long n = 0, t = 0;

    while (end - pos >= 2) {
        size_t hl = 2, pl = buf[pos + 1] & 0x7f;

        if (buf[pos] != 0x81 || (buf[pos + 1] & 0x80) || (ts && t == ts_cap))
            break;
        if (pl == 126) {
            if (end - pos < 4)
                break;
            hl = 4;
            pl = (size_t)buf[pos + 2] << 8 | buf[pos + 3];
        } else if (pl == 127) {
            if (end - pos < 10)
                break;
            hl = 10;
            pl = 0;
            for (int i = 0; i < 8; i++)
                pl = pl << 8 | buf[pos + 2 + i];
        }
        if (pl > end - pos - hl || pl < mlen || memcmp(buf + pos + hl, marker, mlen) != 0)
            break;
        if (ts) {
            double v = frame_ts(buf + pos + hl, pl);
            if (v >= 0)
                ts[t++] = v;
        }
        n++;
        pos += hl + pl;
    }
    *count = n;
    if (ts)
        *ts_n = t;
    return pos;
}
