/* utf8.h - UTF-8 validation (RFC 3629) and character counting for untrusted text. */
#ifndef COMMON_UTF8_H
#define COMMON_UTF8_H

#include <stddef.h>

/* Returns 1 when `s[0..len)` is well-formed UTF-8 per RFC 3629 (no overlongs, no surrogates,
 * nothing above U+10FFFF, no NUL byte), 0 otherwise. */
int cm_utf8_valid(const char *s, size_t len);

/* Returns the number of code points in valid UTF-8 `s[0..len)`. */
size_t cm_utf8_count(const char *s, size_t len);

/* Returns 1 when valid UTF-8 `s` holds a C0 control character other than tab and newline,
 * or DEL, or a C1 control (U+0080..U+009F); 0 otherwise. */
int cm_utf8_has_control(const char *s, size_t len);

#endif
