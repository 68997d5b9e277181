/* uuid.h - UUIDv7 identifiers (RFC 9562 section 5.7) and random tokens. */
#ifndef COMMON_UUID_H
#define COMMON_UUID_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define CM_UUID_STRLEN 37 /* 36 characters and the NUL */

/* Writes a new UUIDv7 in canonical lowercase form into `out`: 48-bit Unix milliseconds, then
 * a 12-bit counter (rand_a, RFC 9562 method 1) so ids made in the same millisecond by one
 * process still sort in creation order, then 62 random bits. CM_EIO when the kernel's
 * random source fails. Thread-safe. */
cm_err cm_uuid_v7(char out[CM_UUID_STRLEN]);

/* Returns the Unix time in milliseconds encoded in a UUIDv7 string, or -1 if malformed. */
int64_t cm_uuid_v7_time_ms(const char *uuid);

/* Returns 1 when `s` is a canonical lowercase UUID string (any version), 0 otherwise. */
int cm_uuid_valid(const char *s);

/* Fills `out` with `nbytes` random bytes from the kernel (getrandom), hex-encoded and
 * NUL-terminated: `out` must hold 2 * nbytes + 1. CM_EIO on failure. */
cm_err cm_random_hex(char *out, size_t nbytes);

#endif
