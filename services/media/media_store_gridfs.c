/* media_store_gridfs.c - the default blob store: MongoDB GridFS through libcommon, so a
 * deployment needs nothing beyond the database it already has. */
#include <stdio.h>
#include <stdlib.h>

#include "media.h"

typedef struct gridfs_store {
    media_store base;
    cm_mongo *db;
    char bucket[64];
} gridfs_store;

static cm_err g_put(media_store *s, const char *key, const void *data, size_t len)
{
    gridfs_store *g = (gridfs_store *)s;
    cm_err rc = cm_mongo_gridfs_put(g->db, g->bucket, key, data, len);
    /* A retried put of a blob that a previous attempt stored is not an error: keys are
     * random per attempt, so the bytes are the same ones. */
    return rc == CM_ECONFLICT ? CM_OK : rc;
}

static cm_err g_read(media_store *s, const char *key, uint64_t offset, void *buf, size_t n,
                     size_t *got)
{
    gridfs_store *g = (gridfs_store *)s;
    return cm_mongo_gridfs_read(g->db, g->bucket, key, (int64_t)offset, buf, n, got);
}

static cm_err g_remove(media_store *s, const char *key)
{
    gridfs_store *g = (gridfs_store *)s;
    cm_err rc = cm_mongo_gridfs_delete(g->db, g->bucket, key);
    return rc == CM_ENOTFOUND ? CM_OK : rc;
}

static void g_destroy(media_store *s)
{
    free(s);
}

cm_err media_store_gridfs_create(cm_mongo *db, const char *bucket, media_store **out)
{
    gridfs_store *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return CM_ENOMEM;
    if (snprintf(g->bucket, sizeof(g->bucket), "%s", bucket) >= (int)sizeof(g->bucket)) {
        free(g);
        return CM_EINVAL;
    }
    g->db = db;
    g->base = (media_store){"gridfs", g_put, g_read, g_remove, g_destroy};
    *out = &g->base;
    return CM_OK;
}
