/* config.h - configuration from environment variables, with defaults, bounds and --help. */
#ifndef COMMON_CONFIG_H
#define COMMON_CONFIG_H

#include <stdio.h>

#include "common/error.h"

/* One documented variable of a process; a process keeps a static table of them. */
typedef struct cm_config_var {
    const char *name; /* environment variable, e.g. "HTTP_PORT" */
    const char *def;  /* default as text, or NULL when the variable is required */
    const char *help; /* one line for --help */
} cm_config_var;

/* Returns the variable's value, or `def` when unset or empty. Never copies. */
const char *cm_config_str(const char *name, const char *def);

/* Reads an integer variable (decimal, whole string) into `*out`, `def` when unset.
 * Returns CM_EINVAL (and logs which variable and why) when it is not a number or outside
 * [min, max]; `*out` is then unchanged. */
cm_err cm_config_long(const char *name, long def, long min, long max, long *out);

/* Reads a file whose path is in the variable `name` into a NUL-terminated heap buffer
 * (at most `max_bytes`), written to `*out` (caller frees) with its length in `*len`.
 * CM_ENOTFOUND when the variable is unset, CM_EIO when unreadable, CM_ETOOBIG over the cap. */
cm_err cm_config_file(const char *name, size_t max_bytes, char **out, size_t *len);

/* Reads the file at `path` like cm_config_file (NUL-terminated heap buffer, at most
 * `max_bytes`; caller frees). CM_EIO when unreadable, CM_ETOOBIG over the cap (logged). */
cm_err cm_config_read_path(const char *path, size_t max_bytes, char **out, size_t *len);

/* Prints usage and the variables (with defaults) to `f`. */
void cm_config_usage(FILE *f, const char *prog, const char *about, const cm_config_var *vars,
                     size_t nvars);

/* Returns 1 when argv holds --help or -h (after printing usage to stdout), 0 otherwise. */
int cm_config_help_requested(int argc, char **argv, const char *about, const cm_config_var *vars,
                             size_t nvars);

#endif
