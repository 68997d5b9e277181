/* json.h - parsing untrusted JSON with a depth cap, and typed field access with precise errors.
 * Values are cJSON trees; a parsed tree is freed with cJSON_Delete. */
#ifndef COMMON_JSON_H
#define COMMON_JSON_H

#include <stddef.h>

#include <cJSON.h>

#include "common/error.h"

#define CM_JSON_DEPTH_DEFAULT 32 /* nesting a chat API body ever needs, with room to spare */

/* Parses `len` bytes at `buf` (need not be NUL-terminated). The text must be valid UTF-8
 * (RFC 8259 section 8.1), nest at most `max_depth` arrays/objects, and hold one value with
 * only whitespace after it. On success `*out` is the tree (caller frees with cJSON_Delete).
 * On failure returns CM_EINVAL, writes a precise reason to `detail` (size `n`; "invalid JSON
 * near byte 17") and leaves `*out` unchanged. */
cm_err cm_json_parse(const char *buf, size_t len, int max_depth, cJSON **out, char *detail,
                     size_t n);

/* Field access on an object `obj`. Each returns CM_OK and writes `*out`, or CM_EINVAL with
 * `detail` naming the field ("field 'text' must be a string"). A missing optional field is
 * CM_OK with `*out` left unchanged (set your default first). Strings are borrowed from the
 * tree. String lengths are counted in UTF-8 characters, not bytes. */
cm_err cm_json_string(const cJSON *obj, const char *key, int required, size_t min_chars,
                      size_t max_chars, const char **out, char *detail, size_t n);
cm_err cm_json_long(const cJSON *obj, const char *key, int required, long min, long max,
                    long *out, char *detail, size_t n);
cm_err cm_json_bool(const cJSON *obj, const char *key, int required, int *out, char *detail,
                    size_t n);

/* Checks that `obj` is an object whose keys are all in the NULL-terminated list `allowed`;
 * CM_EINVAL with "unknown field 'x'" otherwise. */
cm_err cm_json_only_keys(const cJSON *obj, const char *const *allowed, char *detail, size_t n);

/* Serialises `v` without whitespace into a heap string (caller frees with free()).
 * Returns NULL when out of memory. */
char *cm_json_print(const cJSON *v);

#endif
