/* json.c - cJSON behind a depth cap, UTF-8 check and typed accessors. */
#include "common/json.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/utf8.h"

/* Scans before cJSON recurses, so a hostile body cannot exhaust the stack: returns the byte
 * offset where nesting passes the cap (brackets inside strings do not count), or where a
 * string holds \u0000, which cJSON would silently cut the string at; -1 when neither. */
static long scan(const char *buf, size_t len, int max_depth, int *nul)
{
    int depth = 0, in_str = 0;
    *nul = 0;
    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        if (in_str) {
            if (c == '\\') {
                if (i + 5 < len && memcmp(buf + i + 1, "u0000", 5) == 0) {
                    *nul = 1;
                    return (long)i;
                }
                i++;
            } else if (c == '"') {
                in_str = 0;
            }
            continue;
        }
        if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            if (++depth > max_depth)
                return (long)i;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return -1;
}

cm_err cm_json_parse(const char *buf, size_t len, int max_depth, cJSON **out, char *detail,
                     size_t n)
{
    const char *end = NULL;
    cJSON *v;
    long at;
    int nul;

    if (len == 0) {
        snprintf(detail, n, "the request body is empty; a JSON value is expected");
        return CM_EINVAL;
    }
    if (!cm_utf8_valid(buf, len)) {
        snprintf(detail, n, "the body is not valid UTF-8 (RFC 8259 section 8.1)");
        return CM_EINVAL;
    }
    if ((at = scan(buf, len, max_depth, &nul)) >= 0) {
        if (nul)
            snprintf(detail, n, "strings must not contain U+0000 (at byte %ld)", at);
        else
            snprintf(detail, n, "JSON nests deeper than %d levels (at byte %ld)", max_depth, at);
        return CM_EINVAL;
    }
    v = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    if (v == NULL) {
        const char *err = cJSON_GetErrorPtr();
        long off = (err && err >= buf && err <= buf + len) ? (long)(err - buf) : -1;
        snprintf(detail, n, "invalid JSON near byte %ld", off);
        return CM_EINVAL;
    }
    while (end && end < buf + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
        end++;
    if (end && end < buf + len) {
        snprintf(detail, n, "unexpected data after the JSON value at byte %ld", (long)(end - buf));
        cJSON_Delete(v);
        return CM_EINVAL;
    }
    *out = v;
    return CM_OK;
}

static const char *type_name(const cJSON *v)
{
    if (cJSON_IsString(v))
        return "a string";
    if (cJSON_IsNumber(v))
        return "a number";
    if (cJSON_IsBool(v))
        return "a boolean";
    if (cJSON_IsNull(v))
        return "null";
    if (cJSON_IsArray(v))
        return "an array";
    if (cJSON_IsObject(v))
        return "an object";
    return "invalid";
}

static cm_err lookup(const cJSON *obj, const char *key, int required, const cJSON **v,
                     char *detail, size_t n)
{
    *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (*v == NULL && required) {
        snprintf(detail, n, "field '%s' is required", key);
        return CM_EINVAL;
    }
    return CM_OK;
}

cm_err cm_json_string(const cJSON *obj, const char *key, int required, size_t min_chars,
                      size_t max_chars, const char **out, char *detail, size_t n)
{
    const cJSON *v;
    size_t chars;

    if (lookup(obj, key, required, &v, detail, n) != CM_OK)
        return CM_EINVAL;
    if (v == NULL)
        return CM_OK;
    if (!cJSON_IsString(v)) {
        snprintf(detail, n, "field '%s' must be a string, not %s", key, type_name(v));
        return CM_EINVAL;
    }
    chars = cm_utf8_count(v->valuestring, strlen(v->valuestring));
    if (chars < min_chars) {
        snprintf(detail, n, "field '%s' must have at least %zu characters", key, min_chars);
        return CM_EINVAL;
    }
    if (chars > max_chars) {
        snprintf(detail, n, "field '%s' has %zu characters; at most %zu are allowed", key, chars,
                 max_chars);
        return CM_EINVAL;
    }
    *out = v->valuestring;
    return CM_OK;
}

cm_err cm_json_long(const cJSON *obj, const char *key, int required, long min, long max,
                    long *out, char *detail, size_t n)
{
    const cJSON *v;
    double d;

    if (lookup(obj, key, required, &v, detail, n) != CM_OK)
        return CM_EINVAL;
    if (v == NULL)
        return CM_OK;
    if (!cJSON_IsNumber(v)) {
        snprintf(detail, n, "field '%s' must be an integer, not %s", key, type_name(v));
        return CM_EINVAL;
    }
    d = v->valuedouble;
    /* (double)LONG_MAX rounds up to 2^63, which passes `d > max` but fits no long. */
    if (d != floor(d) || d < (double)min || d > (double)max || d >= -(double)LONG_MIN) {
        snprintf(detail, n, "field '%s' must be an integer in [%ld, %ld]", key, min, max);
        return CM_EINVAL;
    }
    *out = (long)d;
    return CM_OK;
}

cm_err cm_json_bool(const cJSON *obj, const char *key, int required, int *out, char *detail,
                    size_t n)
{
    const cJSON *v;

    if (lookup(obj, key, required, &v, detail, n) != CM_OK)
        return CM_EINVAL;
    if (v == NULL)
        return CM_OK;
    if (!cJSON_IsBool(v)) {
        snprintf(detail, n, "field '%s' must be a boolean, not %s", key, type_name(v));
        return CM_EINVAL;
    }
    *out = cJSON_IsTrue(v);
    return CM_OK;
}

cm_err cm_json_only_keys(const cJSON *obj, const char *const *allowed, char *detail, size_t n)
{
    const cJSON *it;

    if (!cJSON_IsObject(obj)) {
        snprintf(detail, n, "the body must be a JSON object, not %s", type_name(obj));
        return CM_EINVAL;
    }
    cJSON_ArrayForEach(it, obj)
    {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(*a, it->string) == 0)
                ok = 1;
        if (!ok) {
            snprintf(detail, n, "unknown field '%.64s'", it->string);
            return CM_EINVAL;
        }
    }
    return CM_OK;
}

char *cm_json_print(const cJSON *v)
{
    return cJSON_PrintUnformatted(v);
}
