/* uuid.c - UUIDv7 generation with a per-process monotonic counter. */
#include "common/uuid.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static pthread_mutex_t uuid_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t uuid_last_ms;
static uint16_t uuid_counter;

static cm_err getrandom_all(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0)
            return CM_EIO;
        p += r;
        n -= (size_t)r;
    }
    return CM_OK;
}

/* Random bytes from the kernel's CSPRNG, read 256 at a time per thread: a request id and a
 * trace context cost three getrandom calls per request otherwise. Each byte is handed out
 * once and wiped from the buffer; a forked child starts with an empty buffer. */
static _Thread_local struct {
    unsigned char b[256];
    size_t left;
} rnd;
static pthread_once_t rnd_once = PTHREAD_ONCE_INIT;

static void rnd_forget(void)
{
    explicit_bzero(&rnd, sizeof(rnd));
}

static void rnd_init(void)
{
    pthread_atfork(NULL, NULL, rnd_forget);
}

static cm_err fill_random(void *buf, size_t n)
{
    if (n > sizeof(rnd.b) / 4)
        return getrandom_all(buf, n);
    pthread_once(&rnd_once, rnd_init);
    if (rnd.left < n) {
        if (getrandom_all(rnd.b, sizeof(rnd.b)) != CM_OK)
            return CM_EIO;
        rnd.left = sizeof(rnd.b);
    }
    memcpy(buf, rnd.b + sizeof(rnd.b) - rnd.left, n);
    explicit_bzero(rnd.b + sizeof(rnd.b) - rnd.left, n);
    rnd.left -= n;
    return CM_OK;
}

cm_err cm_uuid_v7(char out[CM_UUID_STRLEN])
{
    unsigned char b[16];
    struct timespec ts;
    uint64_t ms;
    uint16_t ctr;

    if (fill_random(b, sizeof(b)) != CM_OK)
        return CM_EIO;
    clock_gettime(CLOCK_REALTIME, &ts);
    ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;

    pthread_mutex_lock(&uuid_lock);
    if (ms > uuid_last_ms) {
        uuid_last_ms = ms;
        uuid_counter = (uint16_t)(b[6] & 0x03); /* random start, room to count up */
    } else {
        /* Same millisecond or the clock went back: keep order by counting; on overflow
         * borrow the next millisecond (RFC 9562 6.2, "increment the timestamp"). */
        ms = uuid_last_ms;
        if (++uuid_counter > 0x0fff) {
            uuid_last_ms = ++ms;
            uuid_counter = 0;
        }
    }
    ctr = uuid_counter;
    pthread_mutex_unlock(&uuid_lock);

    b[0] = (unsigned char)(ms >> 40);
    b[1] = (unsigned char)(ms >> 32);
    b[2] = (unsigned char)(ms >> 24);
    b[3] = (unsigned char)(ms >> 16);
    b[4] = (unsigned char)(ms >> 8);
    b[5] = (unsigned char)ms;
    b[6] = (unsigned char)(0x70 | ((ctr >> 8) & 0x0f));
    b[7] = (unsigned char)(ctr & 0xff);
    b[8] = (unsigned char)(0x80 | (b[8] & 0x3f));

    snprintf(out, CM_UUID_STRLEN,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
    return CM_OK;
}

int cm_uuid_valid(const char *s)
{
    if (s == NULL || strlen(s) != 36)
        return 0;
    for (int i = 0; i < 36; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return 0;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return 0;
        }
    }
    return 1;
}

int64_t cm_uuid_v7_time_ms(const char *uuid)
{
    int64_t ms = 0;
    if (!cm_uuid_valid(uuid) || uuid[14] != '7')
        return -1;
    for (int i = 0; i < 13; i++) {
        char c = uuid[i];
        if (c == '-')
            continue;
        ms = ms * 16 + ((c <= '9') ? c - '0' : c - 'a' + 10);
    }
    return ms;
}

cm_err cm_random_hex(char *out, size_t nbytes)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char buf[64];

    while (nbytes > 0) {
        size_t k = nbytes < sizeof(buf) ? nbytes : sizeof(buf);
        if (fill_random(buf, k) != CM_OK)
            return CM_EIO;
        for (size_t i = 0; i < k; i++) {
            *out++ = hex[buf[i] >> 4];
            *out++ = hex[buf[i] & 15];
        }
        nbytes -= k;
    }
    *out = '\0';
    return CM_OK;
}
