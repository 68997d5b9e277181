/* notification_devcache.c - the push devices of each user, cached in Redis so the consumer's
 * hot path reads them with one pipeline instead of a `user_id $in` query (FerretDB 1.x reads
 * the whole devices collection for any filter but `_id` equality: a third of the consumer's
 * time at 5,000 devices, bench/README.md).
 *
 * Layout: one hash per user, nf:dev:<db>:<tenant>:<user>, field = device id, value = the
 * fields a push needs as JSON ({"platform","token","app_id","p256dh","auth"}); and a marker
 * per tenant, nf:devt:<db>:<tenant>, set once every device of the tenant has been copied in
 * (one query by tenant). While the marker lives, a user without a hash has no device. The
 * device endpoints, the pruning of dead tokens and erasure write through (after MongoDB).
 * The marker lives an hour and every hash two hours from its last write or load, so each hour
 * a tenant is read again in full and a hash never expires before its marker. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "common/log.h"
#include "notification.h"

#define MARKER_TTL_MS "3600000" /* a tenant is copied in again after an hour */
#define HASH_TTL_MS "7200000"   /* longer than the marker: see above */
#define LOAD_CHUNK 256          /* devices written per pipeline while loading a tenant */

static void user_key(const nf_ctx *ctx, const char *tenant, const char *user, char *out,
                     size_t n)
{
    snprintf(out, n, "nf:dev:%s:%s:%s", ctx->db_name, tenant, user);
}

/* The cached value of device document `d` (caller frees); NULL when out of memory. */
static char *device_value(const bson_t *d)
{
    static const char *const fields[] = {"platform", "token", "app_id", "p256dh", "auth", NULL};
    cJSON *o = cJSON_CreateObject();
    char *s;

    if (o == NULL)
        return NULL;
    for (int i = 0; fields[i]; i++) {
        const char *v = cm_bson_str(d, fields[i], NULL);
        if (v)
            cJSON_AddStringToObject(o, fields[i], v);
    }
    s = cm_json_print(o);
    cJSON_Delete(o);
    return s;
}

/* Loading a tenant: its devices written in pipelines of LOAD_CHUNK. */
typedef struct loader {
    nf_ctx *ctx;
    cm_redis_cmd cmds[2 * LOAD_CHUNK];
    char keys[LOAD_CHUNK][400];
    char *values[LOAD_CHUNK];
    char ids[LOAD_CHUNK][64];
    size_t n;
    int failed;
} loader;

static void loader_flush(loader *l)
{
    int64_t out[2 * LOAD_CHUNK];
    if (l->n > 0 && cm_redis_pipeline(l->ctx->redis, l->cmds, 2 * l->n, out) != CM_OK)
        l->failed = 1;
    for (size_t i = 0; i < l->n; i++)
        free(l->values[i]);
    l->n = 0;
}

static int load_one(const bson_t *doc, void *ud)
{
    loader *l = ud;
    size_t i = l->n;
    if ((l->values[i] = device_value(doc)) == NULL) {
        l->failed = 1;
        return 1;
    }
    user_key(l->ctx, cm_bson_str(doc, "tenant", ""), cm_bson_str(doc, "user_id", ""),
             l->keys[i], sizeof(l->keys[i]));
    snprintf(l->ids[i], sizeof(l->ids[i]), "%s", cm_bson_str(doc, "_id", ""));
    l->cmds[2 * i] = (cm_redis_cmd){4, {"HSET", l->keys[i], l->ids[i], l->values[i]}};
    l->cmds[2 * i + 1] = (cm_redis_cmd){3, {"PEXPIRE", l->keys[i], HASH_TTL_MS}};
    if (++l->n == LOAD_CHUNK)
        loader_flush(l);
    return l->failed;
}

/* Copies every device of `tenant` into Redis, then sets the tenant's marker. */
static cm_err load_tenant(nf_ctx *ctx, const char *tenant, const char *marker)
{
    loader *l = calloc(1, sizeof(*l));
    bson_t f = BSON_INITIALIZER;
    cm_err rc;

    if (l == NULL)
        return CM_ENOMEM;
    l->ctx = ctx;
    BSON_APPEND_UTF8(&f, "tenant", tenant);
    rc = cm_mongo_find(ctx->db, NF_COLL_DEVICES, &f, NULL, load_one, l);
    loader_flush(l);
    if (rc == CM_OK && l->failed)
        rc = CM_EIO;
    if (rc == CM_OK)
        rc = cm_redis_set(ctx->redis, marker, "1", strtol(MARKER_TTL_MS, NULL, 10));
    bson_destroy(&f);
    free(l);
    return rc;
}

typedef struct reader {
    const char *const *users;
    bson_t (*docs)[NF_DEVICES_PER_USER];
    size_t *count;
    int bad;
} reader;

/* One HGETALL reply: field (device id), value (JSON), ... */
static void read_user(void *ud, size_t i, int err, const char *const *v, const size_t *len,
                      size_t n)
{
    reader *r = ud;
    if (err) {
        r->bad = 1;
        return;
    }
    for (size_t j = 0; j + 1 < n && r->count[i] < NF_DEVICES_PER_USER; j += 2) {
        static const char *const fields[] = {"platform", "token", "app_id", "p256dh", "auth",
                                             NULL};
        cJSON *o = NULL;
        char detail[64], id[64];
        bson_t *d = &r->docs[i][r->count[i]];
        if (len[j] >= sizeof(id) ||
            cm_json_parse(v[j + 1], len[j + 1], 2, &o, detail, sizeof(detail)) != CM_OK) {
            r->bad = 1;
            continue;
        }
        memcpy(id, v[j], len[j]);
        id[len[j]] = '\0';
        bson_init(d);
        BSON_APPEND_UTF8(d, "_id", id);
        BSON_APPEND_UTF8(d, "user_id", r->users[i]);
        for (int k = 0; fields[k]; k++) {
            const cJSON *s = cJSON_GetObjectItemCaseSensitive(o, fields[k]);
            if (cJSON_IsString(s))
                BSON_APPEND_UTF8(d, fields[k], s->valuestring);
        }
        cJSON_Delete(o);
        r->count[i]++;
    }
}

cm_err nf_devcache_devices(nf_ctx *ctx, const char *tenant, const char *const *users, size_t n,
                           bson_t (*docs)[NF_DEVICES_PER_USER], size_t *count)
{
    char marker[300], flag[8];
    cm_redis_cmd *cmds = NULL;
    char (*keys)[400] = NULL;
    reader r = {users, docs, count, 0};
    cm_err rc;

    for (size_t i = 0; i < n; i++)
        count[i] = 0;
    if (n == 0)
        return CM_OK;
    snprintf(marker, sizeof(marker), "nf:devt:%s:%s", ctx->db_name, tenant);
    rc = cm_redis_get(ctx->redis, marker, flag, sizeof(flag));
    if (rc == CM_ENOTFOUND)
        rc = load_tenant(ctx, tenant, marker);
    if (rc != CM_OK)
        return rc;
    cmds = calloc(n, sizeof(*cmds));
    keys = calloc(n, sizeof(*keys));
    if (cmds == NULL || keys == NULL) {
        rc = CM_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        user_key(ctx, tenant, users[i], keys[i], sizeof(keys[i]));
        cmds[i] = (cm_redis_cmd){2, {"HGETALL", keys[i]}};
    }
    rc = cm_redis_pipeline_strings(ctx->redis, cmds, n, read_user, &r);
    if (rc == CM_OK && r.bad)
        rc = CM_EIO;
out:
    if (rc != CM_OK) {
        for (size_t i = 0; i < n; i++) {
            for (size_t j = 0; j < count[i]; j++)
                bson_destroy(&docs[i][j]);
            count[i] = 0;
        }
    }
    free(cmds);
    free(keys);
    return rc;
}

void nf_devcache_put(nf_ctx *ctx, const bson_t *dev)
{
    char key[400], *value = device_value(dev);
    const char *id = cm_bson_str(dev, "_id", "");
    int64_t out[2];

    if (value == NULL)
        return;
    user_key(ctx, cm_bson_str(dev, "tenant", ""), cm_bson_str(dev, "user_id", ""), key,
             sizeof(key));
    cm_redis_cmd cmds[] = {{4, {"HSET", key, id, value}}, {3, {"PEXPIRE", key, HASH_TTL_MS}}};
    if (cm_redis_pipeline(ctx->redis, cmds, 2, out) != CM_OK)
        cm_warn("devices: device %s not cached (Redis): pushes may miss it for up to an hour",
                id);
    free(value);
}

void nf_devcache_forget(nf_ctx *ctx, const char *tenant, const char *user, const char *device_id)
{
    char key[400];
    int64_t out[1];

    user_key(ctx, tenant, user, key, sizeof(key));
    cm_redis_cmd cmd = device_id ? (cm_redis_cmd){3, {"HDEL", key, device_id}}
                                 : (cm_redis_cmd){2, {"DEL", key}};
    if (cm_redis_pipeline(ctx->redis, &cmd, 1, out) != CM_OK)
        cm_warn("devices: %s of %s not uncached (Redis): pushed until the cache is reloaded",
                device_id ? device_id : "the devices", user);
}
