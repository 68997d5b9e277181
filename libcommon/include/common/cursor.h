/* cursor.h - the sync cursor: a client's position in the event log of each of its
 * conversations, as one opaque URL-safe string. The messaging service answers GET /v1/sync
 * with it and the WebSocket resumes from it; both sides decode, advance and re-encode it, and
 * no server keeps anything per client.
 *
 * A position is (key, seq): `key` is cm_cursor_key() of the conversation id and `seq` the
 * highest log seq of that conversation the client has applied. Version 1 format: base64url
 * without padding of the byte 0x01, then for each position in strictly increasing key order
 * the key as 8 bytes big-endian and the seq as an unsigned LEB128 varint (about 10 bytes, 14
 * characters, per conversation). */
#ifndef COMMON_CURSOR_H
#define COMMON_CURSOR_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define CM_CURSOR_VERSION 1
#define CM_CURSOR_MAX 20000 /* positions a cursor may hold */

typedef struct cm_cursor_pos {
    uint64_t key; /* cm_cursor_key(conversation id) */
    int64_t seq;  /* log seq applied, >= 0 */
} cm_cursor_pos;

/* The 64-bit key of a conversation id (FNV-1a over its bytes). */
uint64_t cm_cursor_key(const char *conversation_id);

/* Decodes `text` into `out` (room for `cap` positions), sorted by key; `*n` receives the
 * count. CM_EINVAL when it is not a version 1 cursor (bad base64url, truncated varint, keys
 * not strictly increasing, seq out of range), CM_ETOOBIG when it holds more than `cap`. */
cm_err cm_cursor_decode(const char *text, cm_cursor_pos *out, size_t cap, size_t *n);

/* Sorts `pos` (n of them) by key and encodes them into a heap string `*out` (caller frees).
 * CM_EINVAL for a negative seq or a key given twice, CM_ETOOBIG past CM_CURSOR_MAX,
 * CM_ENOMEM. */
cm_err cm_cursor_encode(cm_cursor_pos *pos, size_t n, char **out);

/* Bytes of the text of a cursor of `n` positions at most, with its NUL (18 bytes each before
 * base64url, which makes 4 characters of every 3 bytes). */
#define CM_CURSOR_TEXT_MAX(n) ((1 + (size_t)(n) * 18) * 4 / 3 + 4)

/* Encodes `pos` (n of them, already sorted by strictly increasing key) into `out` (room for
 * `cap` bytes, NUL included; CM_CURSOR_TEXT_MAX(n) always suffices) without allocating for up
 * to 16 positions; `*len` receives the length without the NUL. CM_EINVAL for a negative seq
 * or keys not strictly increasing, CM_ETOOBIG past CM_CURSOR_MAX or when `cap` is too small,
 * CM_ENOMEM. On failure `out` may have been written. */
cm_err cm_cursor_encode_to(const cm_cursor_pos *pos, size_t n, char *out, size_t cap,
                           size_t *len);

/* Returns the position of `key` in sorted `pos` (n of them), or NULL (binary search). */
cm_cursor_pos *cm_cursor_find(cm_cursor_pos *pos, size_t n, uint64_t key);

#endif
