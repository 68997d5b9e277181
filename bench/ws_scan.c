/* ws_scan.c - the socket benchmark's frame counter in C (bench/socket_bench.py loads it with
 * ctypes as build/rel/bench/libws_scan.so).
 *
 * Counting the delivered frames frame by frame in Python cost the load generator about 1.3-2.2
 * us a frame, so the rooms-of-5 fan-out ended at the generator's pace (about 430-450k
 * frames/s, the same for ours and uWebSockets.js: 2026-11-22, a timeline of frames received)
 * rather than the servers'. This counts the common frames at C speed and leaves every other
 * frame (control frames, other text, a frame not yet complete) to the Python loop. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

size_t ws_scan(const uint8_t *buf, size_t pos, size_t end, const uint8_t *marker, size_t mlen,
               long *count);

/* Walks buf[pos..end) as a server's WebSocket frames (RFC 6455 section 5.2: unmasked) and
 * counts the complete, unfragmented text frames (FIN set, opcode 1) whose payload begins with
 * marker[0..mlen). Stops before the first frame that is not one of those or is not complete
 * in the buffer. Returns the offset it stopped at; *count receives the frames counted. */
size_t ws_scan(const uint8_t *buf, size_t pos, size_t end, const uint8_t *marker, size_t mlen,
               long *count)
{
    long n = 0;

    while (end - pos >= 2) {
        size_t hl = 2, pl = buf[pos + 1] & 0x7f;

        if (buf[pos] != 0x81 || (buf[pos + 1] & 0x80))
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
        n++;
        pos += hl + pl;
    }
    *count = n;
    return pos;
}
