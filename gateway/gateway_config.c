/* gateway_config.c - the pool and route table formats (GATEWAY_POOLS, GATEWAY_ROUTES) parsed
 * into plain structs, so unit tests need no server. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway.h"

#define ENTRY_MAX 2048

static const char *const lb_names[] = {"round_robin", "least_conn", "weighted", "random"};
static const char *const auth_names[] = {"none", "bearer", "tenant-key", "admin"};

const char *gateway_lb_name(gateway_lb lb)
{
    return lb_names[lb];
}

const char *gateway_auth_name(gateway_auth a)
{
    return auth_names[a];
}

gateway_pool *gateway_pool_find(gateway_ctx *ctx, const char *name)
{
    for (int i = 0; i < ctx->npools; i++)
        if (strcmp(ctx->pools[i].name, name) == 0)
            return &ctx->pools[i];
    return NULL;
}

static char *trim(char *s)
{
    char *e;
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
        s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
        *--e = '\0';
    return s;
}

/* Reads a whole decimal number in [min, max]. */
static int parse_num(const char *s, long min, long max, long *out)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || errno || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Checks "http(s)://host:port" with an optional path, nothing else (no userinfo, query). */
static int url_ok(const char *u)
{
    const char *p;
    if (strncmp(u, "http://", 7) == 0)
        p = u + 7;
    else if (strncmp(u, "https://", 8) == 0)
        p = u + 8;
    else
        return 0;
    if (*p == '\0' || *p == '/' || *p == ':')
        return 0;
    for (; *p; p++)
        if (*p == '@' || *p == '?' || *p == '#' || *p == ' ')
            return 0;
    return strlen(u) < GW_URL_MAX;
}

/* One pool entry: "name=url[*w],url... [lb=...]". */
static cm_err parse_pool(gateway_ctx *ctx, char *entry, char *err, size_t n)
{
    gateway_pool pool;
    gateway_pool *slot;
    char *eq = strchr(entry, '='), *urls, *opt, *save = NULL;

    memset(&pool, 0, sizeof(pool));
    if (eq == NULL) {
        snprintf(err, n, "pool entry '%s' has no '='", entry);
        return CM_EINVAL;
    }
    *eq = '\0';
    entry = trim(entry);
    if (*entry == '\0' || strlen(entry) >= sizeof(pool.name) ||
        strspn(entry, "abcdefghijklmnopqrstuvwxyz0123456789_-") != strlen(entry)) {
        snprintf(err, n, "pool name '%s' must be 1-31 of [a-z0-9_-]", entry);
        return CM_EINVAL;
    }
    snprintf(pool.name, sizeof(pool.name), "%s", entry);
    urls = strtok_r(eq + 1, " \t", &save);
    if (urls == NULL) {
        snprintf(err, n, "pool '%s' has no URL", pool.name);
        return CM_EINVAL;
    }
    while ((opt = strtok_r(NULL, " \t", &save)) != NULL) {
        int found = 0;
        if (strncmp(opt, "lb=", 3) != 0) {
            snprintf(err, n, "pool '%s': unknown option '%s' (only lb=)", pool.name, opt);
            return CM_EINVAL;
        }
        for (int i = 0; i < 4; i++)
            if (strcmp(opt + 3, lb_names[i]) == 0) {
                pool.lb = (gateway_lb)i;
                found = 1;
            }
        if (!found) {
            snprintf(err, n,
                     "pool '%s': lb '%s' is not round_robin, least_conn, weighted or random",
                     pool.name, opt + 3);
            return CM_EINVAL;
        }
    }
    for (char *u = strtok_r(urls, ",", &save); u; u = strtok_r(NULL, ",", &save)) {
        char *star = strchr(u, '*');
        long w = 1;
        if (pool.ntargets == GW_MAX_TARGETS) {
            snprintf(err, n, "pool '%s' has more than %d URLs", pool.name, GW_MAX_TARGETS);
            return CM_EINVAL;
        }
        if (star) {
            *star = '\0';
            if (parse_num(star + 1, 1, 1000, &w) != 0) {
                snprintf(err, n, "pool '%s': weight '%s' must be 1-1000", pool.name, star + 1);
                return CM_EINVAL;
            }
        }
        /* Without a trailing slash, the request path is appended as is. */
        while (strlen(u) > 8 && u[strlen(u) - 1] == '/')
            u[strlen(u) - 1] = '\0';
        if (!url_ok(u)) {
            snprintf(err, n, "pool '%s': '%s' is not an http(s)://host:port URL", pool.name, u);
            return CM_EINVAL;
        }
        snprintf(pool.targets[pool.ntargets].url, GW_URL_MAX, "%s", u);
        pool.targets[pool.ntargets++].weight = (int)w;
    }
    if (pool.ntargets == 0) {
        snprintf(err, n, "pool '%s' has no URL", pool.name);
        return CM_EINVAL;
    }
    slot = gateway_pool_find(ctx, pool.name);
    if (slot == NULL) {
        if (ctx->npools == GW_MAX_POOLS) {
            snprintf(err, n, "more than %d pools", GW_MAX_POOLS);
            return CM_EINVAL;
        }
        slot = &ctx->pools[ctx->npools++];
    }
    /* Only the configuration is copied: instances are built by gateway_upstreams_init. */
    memset(slot, 0, sizeof(*slot));
    memcpy(slot->name, pool.name, sizeof(pool.name));
    slot->lb = pool.lb;
    memcpy(slot->targets, pool.targets, sizeof(pool.targets));
    slot->ntargets = pool.ntargets;
    return CM_OK;
}

/* Calls fn on each ';'-separated, non-empty entry of spec (copied). */
static cm_err each_entry(gateway_ctx *ctx, const char *spec, char *err, size_t n,
                         cm_err (*fn)(gateway_ctx *, char *, char *, size_t))
{
    char buf[ENTRY_MAX];
    const char *p = spec;

    while (p && *p) {
        const char *semi = strchr(p, ';');
        size_t len = semi ? (size_t)(semi - p) : strlen(p);
        char *e;
        cm_err rc;
        if (len >= sizeof(buf)) {
            snprintf(err, n, "an entry is longer than %d bytes", ENTRY_MAX - 1);
            return CM_EINVAL;
        }
        memcpy(buf, p, len);
        buf[len] = '\0';
        e = trim(buf);
        if (*e) {
            rc = fn(ctx, e, err, n);
            if (rc != CM_OK)
                return rc;
        }
        p = semi ? semi + 1 : NULL;
    }
    return CM_OK;
}

cm_err gateway_pools_parse(gateway_ctx *ctx, const char *spec, char *err, size_t n)
{
    return each_entry(ctx, spec, err, n, parse_pool);
}

/* One route entry: "prefix pool [auth=..] [timeout_ms=N] [max_body=N]". */
static cm_err parse_route(gateway_ctx *ctx, char *entry, char *err, size_t n)
{
    gateway_route r;
    gateway_route *slot = NULL;
    char *save = NULL, *prefix, *pool, *opt;

    memset(&r, 0, sizeof(r));
    prefix = strtok_r(entry, " \t", &save);
    pool = strtok_r(NULL, " \t", &save);
    if (prefix == NULL || pool == NULL) {
        snprintf(err, n, "route entry '%s' needs a prefix and a pool", entry);
        return CM_EINVAL;
    }
    if (prefix[0] != '/' || strlen(prefix) >= sizeof(r.prefix) ||
        strspn(prefix, "/abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~") !=
            strlen(prefix)) {
        snprintf(err, n, "route prefix '%s' must be an absolute path of at most 127 bytes",
                 prefix);
        return CM_EINVAL;
    }
    /* "/v1/users/" and "/v1/users" are the same prefix. */
    while (strlen(prefix) > 1 && prefix[strlen(prefix) - 1] == '/')
        prefix[strlen(prefix) - 1] = '\0';
    snprintf(r.prefix, sizeof(r.prefix), "%s", prefix);
    r.pool = gateway_pool_find(ctx, pool);
    if (r.pool == NULL) {
        snprintf(err, n, "route '%s': no pool named '%s'", prefix, pool);
        return CM_EINVAL;
    }
    snprintf(r.pool_name, sizeof(r.pool_name), "%s", pool);
    r.auth = GW_AUTH_BEARER; /* closed unless said otherwise */
    while ((opt = strtok_r(NULL, " \t", &save)) != NULL) {
        long v;
        if (strncmp(opt, "auth=", 5) == 0) {
            int found = 0;
            for (int i = 0; i < 4; i++)
                if (strcmp(opt + 5, auth_names[i]) == 0) {
                    r.auth = (gateway_auth)i;
                    found = 1;
                }
            if (!found) {
                snprintf(err, n, "route '%s': auth '%s' is not none, bearer, tenant-key or admin",
                         prefix, opt + 5);
                return CM_EINVAL;
            }
        } else if (strncmp(opt, "timeout_ms=", 11) == 0) {
            if (parse_num(opt + 11, 100, 600000, &v) != 0) {
                snprintf(err, n, "route '%s': timeout_ms must be 100-600000", prefix);
                return CM_EINVAL;
            }
            r.timeout_ms = v;
        } else if (strncmp(opt, "max_body=", 9) == 0) {
            if (parse_num(opt + 9, 1, 1L << 30, &v) != 0) {
                snprintf(err, n, "route '%s': max_body must be 1-1073741824 bytes", prefix);
                return CM_EINVAL;
            }
            r.max_body = (size_t)v;
        } else {
            snprintf(err, n, "route '%s': unknown option '%s'", prefix, opt);
            return CM_EINVAL;
        }
    }
    for (int i = 0; i < ctx->nroutes; i++)
        if (strcmp(ctx->routes[i].prefix, r.prefix) == 0)
            slot = &ctx->routes[i];
    if (slot == NULL) {
        if (ctx->nroutes == GW_MAX_ROUTES) {
            snprintf(err, n, "more than %d routes", GW_MAX_ROUTES);
            return CM_EINVAL;
        }
        slot = &ctx->routes[ctx->nroutes++];
    }
    *slot = r;
    return CM_OK;
}

cm_err gateway_routes_parse(gateway_ctx *ctx, const char *spec, char *err, size_t n)
{
    return each_entry(ctx, spec, err, n, parse_route);
}
