/* config.c - environment configuration with checked numbers. */
#include "common/config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

const char *cm_config_str(const char *name, const char *def)
{
    const char *v = getenv(name);
    return (v && *v) ? v : def;
}

cm_err cm_config_long(const char *name, long def, long min, long max, long *out)
{
    const char *v = getenv(name);
    char *end;
    long n;

    if (v == NULL || *v == '\0') {
        *out = def;
        return CM_OK;
    }
    errno = 0;
    n = strtol(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0') {
        cm_error("config: %s=%s is not a whole number", name, v);
        return CM_EINVAL;
    }
    if (n < min || n > max) {
        cm_error("config: %s=%ld is outside [%ld, %ld]", name, n, min, max);
        return CM_EINVAL;
    }
    *out = n;
    return CM_OK;
}

cm_err cm_config_read_path(const char *path, size_t max_bytes, char **out, size_t *len)
{
    cm_err rc = CM_EIO;
    FILE *f = NULL;
    char *buf = NULL;
    size_t n;

    f = fopen(path, "rb");
    if (f == NULL) {
        cm_error("config: cannot open %s", path);
        goto out;
    }
    buf = malloc(max_bytes + 1);
    if (buf == NULL) {
        rc = CM_ENOMEM;
        goto out;
    }
    n = fread(buf, 1, max_bytes + 1, f);
    if (ferror(f)) {
        cm_error("config: cannot read %s", path);
        goto out;
    }
    if (n > max_bytes) {
        cm_error("config: %s is larger than %zu bytes", path, max_bytes);
        rc = CM_ETOOBIG;
        goto out;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    buf = NULL;
    rc = CM_OK;
out:
    free(buf);
    if (f)
        fclose(f);
    return rc;
}

cm_err cm_config_file(const char *name, size_t max_bytes, char **out, size_t *len)
{
    const char *path = cm_config_str(name, NULL);
    cm_err rc;

    if (path == NULL)
        return CM_ENOTFOUND;
    rc = cm_config_read_path(path, max_bytes, out, len);
    if (rc != CM_OK)
        cm_error("config: %s could not be read", name);
    return rc;
}

void cm_config_usage(FILE *f, const char *prog, const char *about, const cm_config_var *vars,
                     size_t nvars)
{
    fprintf(f, "usage: %s [--help]\n\n%s\n\nConfiguration (environment variables):\n", prog,
            about);
    for (size_t i = 0; i < nvars; i++)
        fprintf(f, "  %-28s %s (default: %s)\n", vars[i].name, vars[i].help,
                vars[i].def ? vars[i].def : "required");
}

int cm_config_help_requested(int argc, char **argv, const char *about, const cm_config_var *vars,
                             size_t nvars)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            cm_config_usage(stdout, argv[0], about, vars, nvars);
            return 1;
        }
    }
    return 0;
}
