/* mongo.c - mongoc pool wrapper; the one place driver errors become cm_err. */
#include "common/mongo.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mongoc/mongoc.h>

#include "common/log.h"

struct cm_mongo {
    mongoc_client_pool_t *pool;
    mongoc_uri_t *uri;
    char *db;
};

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/* Per-document write serialisation. FerretDB 1.x (our local and CI MongoDB) applies an update
 * or findAndModify as read, modify, replace the whole document, without a transaction: two
 * concurrent updates of one document keep only one of them (measured: 99 of 100 racing
 * pairs, e.g. the media worker's status flip undone by the outbox clearing its pending
 * event). MongoDB itself is atomic per document; serialising the writes of one process per
 * (collection, _id) makes both behave the same for every writer inside a process, at the cost
 * of one uncontended mutex per write. Filters without an `_id` share one lock per collection.
 * Writers in different processes must still use conditional updates on disjoint fields. */
#define WRITE_STRIPES 128
static pthread_mutex_t write_stripes[WRITE_STRIPES];

static void driver_init(void)
{
    mongoc_init();
    for (int i = 0; i < WRITE_STRIPES; i++)
        pthread_mutex_init(&write_stripes[i], NULL);
}

static uint32_t fnv1a(uint32_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    while (n--)
        h = (h ^ *b++) * 16777619u;
    return h;
}

/* The stripe guarding writes of the document(s) `filter` selects in `coll`. */
static pthread_mutex_t *write_lock(const char *coll, const bson_t *filter)
{
    uint32_t h = fnv1a(2166136261u, coll, strlen(coll));
    bson_iter_t it;

    if (filter && bson_iter_init_find(&it, filter, "_id")) {
        uint32_t len = 0;
        if (BSON_ITER_HOLDS_UTF8(&it)) {
            const char *s = bson_iter_utf8(&it, &len);
            h = fnv1a(h, s, len);
        } else if (BSON_ITER_HOLDS_OID(&it)) {
            h = fnv1a(h, bson_iter_oid(&it)->bytes, 12);
        } else if (BSON_ITER_HOLDS_INT(&it)) {
            int64_t v = bson_iter_as_int64(&it);
            h = fnv1a(h, &v, sizeof(v));
        }
        /* Other _id shapes ({$in: ...}, documents) fall back to the collection's stripe. */
    }
    return &write_stripes[h % WRITE_STRIPES];
}

static cm_err translate(const char *what, const char *coll, const bson_error_t *e)
{
    /* 11000/11001: duplicate key (a unique index refused the write). FerretDB answers an
     * update or findAndModify that hits a unique index with code 1 and SQLite's text. */
    if (e->code == 11000 || e->code == 11001 || strstr(e->message, "E11000") ||
        strstr(e->message, "duplicate key") || strstr(e->message, "UNIQUE constraint failed"))
        return CM_ECONFLICT;
    cm_error("mongo: %s %s: %s (domain %u code %u)", what, coll, e->message, e->domain, e->code);
    if (e->domain == MONGOC_ERROR_SERVER_SELECTION || e->domain == MONGOC_ERROR_STREAM)
        return CM_EIO;
    if (e->domain == MONGOC_ERROR_QUERY || e->domain == MONGOC_ERROR_SERVER ||
        e->domain == MONGOC_ERROR_WRITE_CONCERN)
        return CM_EIO;
    return CM_EIO;
}

cm_err cm_mongo_create(const char *uri_str, const char *db, cm_mongo **out)
{
    bson_error_t e;
    cm_mongo *m;
    mongoc_write_concern_t *wc;

    pthread_once(&init_once, driver_init);
    m = calloc(1, sizeof(*m));
    if (m == NULL)
        return CM_ENOMEM;
    m->uri = mongoc_uri_new_with_error(uri_str, &e);
    if (m->uri == NULL) {
        cm_error("mongo: bad URI: %s", e.message);
        free(m);
        return CM_EINVAL;
    }
    /* Nothing acknowledged may be lost: every write waits for a majority. */
    wc = mongoc_write_concern_new();
    mongoc_write_concern_set_w(wc, MONGOC_WRITE_CONCERN_W_MAJORITY);
    mongoc_uri_set_write_concern(m->uri, wc);
    mongoc_write_concern_destroy(wc);
    if (!mongoc_uri_has_option(m->uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS))
        mongoc_uri_set_option_as_int32(m->uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 5000);
    m->pool = mongoc_client_pool_new(m->uri);
    m->db = strdup(db);
    if (m->pool == NULL || m->db == NULL) {
        cm_mongo_destroy(m);
        return CM_ENOMEM;
    }
    mongoc_client_pool_set_error_api(m->pool, MONGOC_ERROR_API_VERSION_2);
    mongoc_client_pool_max_size(m->pool, 64);
    *out = m;
    return CM_OK;
}

void cm_mongo_destroy(cm_mongo *m)
{
    if (m == NULL)
        return;
    if (m->pool)
        mongoc_client_pool_destroy(m->pool);
    mongoc_uri_destroy(m->uri);
    free(m->db);
    free(m);
}

/* Borrows a client and a collection handle; give_back returns both. */
static mongoc_collection_t *take(cm_mongo *m, const char *coll, mongoc_client_t **client)
{
    *client = mongoc_client_pool_pop(m->pool);
    return mongoc_client_get_collection(*client, m->db, coll);
}

static void give_back(cm_mongo *m, mongoc_client_t *client, mongoc_collection_t *c)
{
    mongoc_collection_destroy(c);
    mongoc_client_pool_push(m->pool, client);
}

cm_err cm_mongo_ping(cm_mongo *m)
{
    mongoc_client_t *client = mongoc_client_pool_pop(m->pool);
    bson_t cmd = BSON_INITIALIZER;
    bson_error_t e;
    cm_err rc = CM_OK;

    BSON_APPEND_INT32(&cmd, "ping", 1);
    if (!mongoc_client_command_simple(client, "admin", &cmd, NULL, NULL, &e)) {
        cm_warn("mongo: ping: %s", e.message);
        rc = CM_EIO;
    }
    bson_destroy(&cmd);
    mongoc_client_pool_push(m->pool, client);
    return rc;
}

cm_err cm_mongo_create_index(cm_mongo *m, const char *coll, const bson_t *keys, const char *name,
                             int unique)
{
    mongoc_client_t *client = mongoc_client_pool_pop(m->pool);
    mongoc_database_t *db = mongoc_client_get_database(client, m->db);
    bson_t cmd = BSON_INITIALIZER, idx, arr;
    bson_error_t e;
    cm_err rc = CM_OK;

    BSON_APPEND_UTF8(&cmd, "createIndexes", coll);
    BSON_APPEND_ARRAY_BEGIN(&cmd, "indexes", &arr);
    BSON_APPEND_DOCUMENT_BEGIN(&arr, "0", &idx);
    BSON_APPEND_DOCUMENT(&idx, "key", keys);
    BSON_APPEND_UTF8(&idx, "name", name);
    if (unique)
        BSON_APPEND_BOOL(&idx, "unique", true);
    bson_append_document_end(&arr, &idx);
    bson_append_array_end(&cmd, &arr);
    if (!mongoc_database_write_command_with_opts(db, &cmd, NULL, NULL, &e))
        rc = translate("createIndexes", coll, &e);
    bson_destroy(&cmd);
    mongoc_database_destroy(db);
    mongoc_client_pool_push(m->pool, client);
    return rc;
}

cm_err cm_mongo_drop_index(cm_mongo *m, const char *coll, const char *name)
{
    mongoc_client_t *client = mongoc_client_pool_pop(m->pool);
    mongoc_database_t *db = mongoc_client_get_database(client, m->db);
    bson_t cmd = BSON_INITIALIZER;
    bson_error_t e;
    cm_err rc = CM_OK;

    BSON_APPEND_UTF8(&cmd, "dropIndexes", coll);
    BSON_APPEND_UTF8(&cmd, "index", name);
    /* 26 NamespaceNotFound, 27 IndexNotFound: nothing to drop. */
    if (!mongoc_database_write_command_with_opts(db, &cmd, NULL, NULL, &e) && e.code != 26 &&
        e.code != 27 && strstr(e.message, "not found") == NULL &&
        strstr(e.message, "does not exist") == NULL)
        rc = translate("dropIndexes", coll, &e);
    bson_destroy(&cmd);
    mongoc_database_destroy(db);
    mongoc_client_pool_push(m->pool, client);
    return rc;
}

cm_err cm_mongo_is_ferretdb(cm_mongo *m, int *out)
{
    mongoc_client_t *client = mongoc_client_pool_pop(m->pool);
    bson_t cmd = BSON_INITIALIZER, reply;
    bson_iter_t it;
    bson_error_t e;
    cm_err rc = CM_OK;

    BSON_APPEND_INT32(&cmd, "buildInfo", 1);
    if (!mongoc_client_command_simple(client, "admin", &cmd, NULL, &reply, &e)) {
        cm_warn("mongo: buildInfo: %s", e.message);
        rc = CM_EIO;
    } else {
        *out = bson_iter_init_find(&it, &reply, "ferretdbVersion") ? 1 : 0;
    }
    bson_destroy(&reply); /* initialised by the driver on failure too */
    bson_destroy(&cmd);
    mongoc_client_pool_push(m->pool, client);
    return rc;
}

cm_err cm_mongo_insert(cm_mongo *m, const char *coll, const bson_t *doc)
{
    mongoc_client_t *client;
    mongoc_collection_t *c = take(m, coll, &client);
    bson_error_t e;
    cm_err rc = CM_OK;

    if (!mongoc_collection_insert_one(c, doc, NULL, NULL, &e))
        rc = translate("insert", coll, &e);
    give_back(m, client, c);
    return rc;
}

cm_err cm_mongo_insert_many(cm_mongo *m, const char *coll, const bson_t *const *docs, size_t n,
                            unsigned char *dup)
{
    mongoc_client_t *client;
    mongoc_collection_t *c;
    bson_t opts = BSON_INITIALIZER, reply = BSON_INITIALIZER;
    bson_iter_t it, errs;
    bson_error_t e;
    cm_err rc = CM_OK;
    size_t ndup = 0, nerr = 0;

    if (dup)
        memset(dup, 0, n);
    if (n == 0)
        return CM_OK;
    c = take(m, coll, &client);
    /* Unordered: one refused document (a replay's duplicate) does not stop the others. */
    BSON_APPEND_BOOL(&opts, "ordered", false);
    bson_destroy(&reply);
    if (!mongoc_collection_insert_many(c, (const bson_t **)docs, n, &opts, &reply, &e)) {
        /* The reply lists each refused document by its index: duplicates are outcomes, any
         * other write error (or none listed: a transport failure) fails the call. */
        if (bson_iter_init_find(&it, &reply, "writeErrors") && BSON_ITER_HOLDS_ARRAY(&it) &&
            bson_iter_recurse(&it, &errs)) {
            while (bson_iter_next(&errs)) {
                bson_t one;
                const uint8_t *data;
                uint32_t len;
                int64_t idx, code;
                if (!BSON_ITER_HOLDS_DOCUMENT(&errs))
                    continue;
                bson_iter_document(&errs, &len, &data);
                if (!bson_init_static(&one, data, len))
                    continue;
                idx = cm_bson_int(&one, "index", -1);
                code = cm_bson_int(&one, "code", 0);
                if (idx >= 0 && (size_t)idx < n &&
                    (code == 11000 || code == 11001 ||
                     strstr(cm_bson_str(&one, "errmsg", ""), "UNIQUE constraint failed"))) {
                    if (dup)
                        dup[idx] = 1;
                    ndup++;
                } else {
                    nerr++;
                }
            }
        }
        if (nerr == 0 && ndup > 0) {
            rc = dup ? CM_OK : CM_ECONFLICT;
        } else {
            rc = translate("insert_many", coll, &e);
            if (rc == CM_ECONFLICT && (dup || nerr > 0))
                rc = CM_EIO; /* refused, but which documents is unknown */
        }
    }
    bson_destroy(&reply);
    bson_destroy(&opts);
    give_back(m, client, c);
    return rc;
}

cm_err cm_mongo_find(cm_mongo *m, const char *coll, const bson_t *filter, const bson_t *opts,
                     int (*fn)(const bson_t *doc, void *ud), void *ud)
{
    mongoc_client_t *client;
    mongoc_collection_t *c = take(m, coll, &client);
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, filter, opts, NULL);
    const bson_t *doc;
    bson_error_t e;
    cm_err rc = CM_OK;

    while (mongoc_cursor_next(cur, &doc))
        if (fn(doc, ud) != 0)
            break;
    if (mongoc_cursor_error(cur, &e))
        rc = translate("find", coll, &e);
    mongoc_cursor_destroy(cur);
    give_back(m, client, c);
    return rc;
}

struct first {
    bson_t *out;
    int found;
};

static int copy_first(const bson_t *doc, void *ud)
{
    struct first *f = ud;
    bson_copy_to(doc, f->out);
    f->found = 1;
    return 1;
}

cm_err cm_mongo_find_one(cm_mongo *m, const char *coll, const bson_t *filter, const bson_t *opts,
                         bson_t *out)
{
    bson_t o = BSON_INITIALIZER;
    struct first f = {out, 0};
    cm_err rc;

    if (opts)
        bson_copy_to_excluding_noinit(opts, &o, "limit", NULL);
    BSON_APPEND_INT64(&o, "limit", 1);
    rc = cm_mongo_find(m, coll, filter, &o, copy_first, &f);
    bson_destroy(&o);
    if (rc != CM_OK) {
        if (f.found)
            bson_destroy(out);
        return rc;
    }
    return f.found ? CM_OK : CM_ENOTFOUND;
}

cm_err cm_mongo_find_owned(cm_mongo *m, const char *coll, const char *id, const char *tenant,
                           const bson_t *opts, bson_t *out)
{
    bson_t f = BSON_INITIALIZER;
    cm_err rc;

    BSON_APPEND_UTF8(&f, "_id", id);
    rc = cm_mongo_find_one(m, coll, &f, opts, out);
    bson_destroy(&f);
    if (rc == CM_OK && strcmp(cm_bson_str(out, "tenant", ""), tenant) != 0) {
        bson_destroy(out); /* another tenant's document: as if there were none */
        rc = CM_ENOTFOUND;
    }
    return rc;
}

cm_err cm_mongo_update(cm_mongo *m, const char *coll, const bson_t *filter, const bson_t *update,
                       int upsert, int many, int64_t *matched)
{
    mongoc_client_t *client;
    mongoc_collection_t *c = take(m, coll, &client);
    bson_t opts = BSON_INITIALIZER, reply;
    bson_error_t e;
    cm_err rc = CM_OK;
    bool ok;

    pthread_mutex_t *lock = write_lock(coll, filter);

    if (upsert)
        BSON_APPEND_BOOL(&opts, "upsert", true);
    pthread_mutex_lock(lock);
    ok = many ? mongoc_collection_update_many(c, filter, update, &opts, &reply, &e)
              : mongoc_collection_update_one(c, filter, update, &opts, &reply, &e);
    pthread_mutex_unlock(lock);
    if (!ok)
        rc = translate("update", coll, &e);
    else if (matched)
        *matched = cm_bson_int(&reply, "matchedCount", 0) + cm_bson_int(&reply, "upsertedCount", 0);
    bson_destroy(&reply);
    bson_destroy(&opts);
    give_back(m, client, c);
    return rc;
}

cm_err cm_mongo_find_and_modify(cm_mongo *m, const char *coll, const bson_t *filter,
                                const bson_t *sort, const bson_t *update, int upsert,
                                int return_new, bson_t *out)
{
    mongoc_client_t *client;
    mongoc_collection_t *c = take(m, coll, &client);
    mongoc_find_and_modify_opts_t *opts = mongoc_find_and_modify_opts_new();
    bson_t reply;
    bson_iter_t it;
    bson_error_t e;
    cm_err rc = CM_OK;
    int flags = MONGOC_FIND_AND_MODIFY_NONE;
    pthread_mutex_t *lock = write_lock(coll, filter);
    bool ok;

    if (upsert)
        flags |= MONGOC_FIND_AND_MODIFY_UPSERT;
    if (return_new)
        flags |= MONGOC_FIND_AND_MODIFY_RETURN_NEW;
    mongoc_find_and_modify_opts_set_flags(opts, (mongoc_find_and_modify_flags_t)flags);
    mongoc_find_and_modify_opts_set_update(opts, update);
    if (sort)
        mongoc_find_and_modify_opts_set_sort(opts, sort);
    pthread_mutex_lock(lock);
    ok = mongoc_collection_find_and_modify_with_opts(c, filter, opts, &reply, &e);
    pthread_mutex_unlock(lock);
    if (!ok) {
        rc = translate("findAndModify", coll, &e);
    } else if (bson_iter_init_find(&it, &reply, "value") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        uint32_t len;
        const uint8_t *data;
        bson_iter_document(&it, &len, &data);
        bson_t tmp;
        bson_init_static(&tmp, data, len);
        bson_copy_to(&tmp, out);
    } else {
        rc = CM_ENOTFOUND;
    }
    bson_destroy(&reply);
    mongoc_find_and_modify_opts_destroy(opts);
    give_back(m, client, c);
    return rc;
}

cm_err cm_mongo_distinct(cm_mongo *m, const char *coll, const char *field, const bson_t *filter,
                         int (*fn)(const char *value, void *ud), void *ud)
{
    mongoc_client_t *client;
    mongoc_collection_t *c = take(m, coll, &client);
    bson_t cmd = BSON_INITIALIZER, reply, empty = BSON_INITIALIZER;
    bson_iter_t it, arr;
    bson_error_t e;
    cm_err rc = CM_OK;

    BSON_APPEND_UTF8(&cmd, "distinct", coll);
    BSON_APPEND_UTF8(&cmd, "key", field);
    BSON_APPEND_DOCUMENT(&cmd, "query", filter ? filter : &empty);
    if (!mongoc_collection_read_command_with_opts(c, &cmd, NULL, NULL, &reply, &e)) {
        rc = translate("distinct", coll, &e);
    } else if (bson_iter_init_find(&it, &reply, "values") && BSON_ITER_HOLDS_ARRAY(&it) &&
               bson_iter_recurse(&it, &arr)) {
        while (bson_iter_next(&arr))
            if (BSON_ITER_HOLDS_UTF8(&arr) && fn(bson_iter_utf8(&arr, NULL), ud) != 0)
                break;
    }
    bson_destroy(&reply);
    bson_destroy(&cmd);
    bson_destroy(&empty);
    give_back(m, client, c);
    return rc;
}

cm_err cm_mongo_count(cm_mongo *m, const char *coll, const bson_t *filter, int64_t *count)
{
    mongoc_client_t *client;
    mongoc_collection_t *c = take(m, coll, &client);
    bson_error_t e;
    cm_err rc = CM_OK;
    int64_t n = mongoc_collection_count_documents(c, filter, NULL, NULL, NULL, &e);

    if (n < 0)
        rc = translate("count", coll, &e);
    else
        *count = n;
    give_back(m, client, c);
    return rc;
}

cm_err cm_mongo_delete(cm_mongo *m, const char *coll, const bson_t *filter, int many,
                       int64_t *deleted)
{
    mongoc_client_t *client;
    mongoc_collection_t *c = take(m, coll, &client);
    bson_t reply;
    bson_error_t e;
    cm_err rc = CM_OK;
    bool ok = many ? mongoc_collection_delete_many(c, filter, NULL, &reply, &e)
                   : mongoc_collection_delete_one(c, filter, NULL, &reply, &e);

    if (!ok)
        rc = translate("delete", coll, &e);
    else if (deleted)
        *deleted = cm_bson_int(&reply, "deletedCount", 0);
    bson_destroy(&reply);
    give_back(m, client, c);
    return rc;
}

static int find_path(const bson_t *doc, const char *path, bson_iter_t *out)
{
    bson_iter_t it;
    if (!bson_iter_init(&it, doc))
        return 0;
    return bson_iter_find_descendant(&it, path, out);
}

const char *cm_bson_str(const bson_t *doc, const char *path, const char *def)
{
    bson_iter_t v;
    if (find_path(doc, path, &v) && BSON_ITER_HOLDS_UTF8(&v))
        return bson_iter_utf8(&v, NULL);
    return def;
}

int64_t cm_bson_int(const bson_t *doc, const char *path, int64_t def)
{
    bson_iter_t v;
    if (!find_path(doc, path, &v))
        return def;
    if (BSON_ITER_HOLDS_INT32(&v) || BSON_ITER_HOLDS_INT64(&v) || BSON_ITER_HOLDS_DOUBLE(&v))
        return bson_iter_as_int64(&v);
    if (BSON_ITER_HOLDS_DATE_TIME(&v))
        return bson_iter_date_time(&v);
    return def;
}

int cm_bson_bool(const bson_t *doc, const char *path, int def)
{
    bson_iter_t v;
    if (find_path(doc, path, &v) && BSON_ITER_HOLDS_BOOL(&v))
        return bson_iter_bool(&v);
    return def;
}

/* --- GridFS ------------------------------------------------------------------------------ */

/* Opens bucket `name` on a pooled client; the caller destroys the bucket, then pushes the
 * client back. */
static mongoc_gridfs_bucket_t *bucket_open(cm_mongo *m, const char *name,
                                           mongoc_client_t **client, mongoc_database_t **db)
{
    bson_t opts = BSON_INITIALIZER;
    bson_error_t e;
    mongoc_gridfs_bucket_t *b;

    *client = mongoc_client_pool_pop(m->pool);
    *db = mongoc_client_get_database(*client, m->db);
    BSON_APPEND_UTF8(&opts, "bucketName", name);
    b = mongoc_gridfs_bucket_new(*db, &opts, NULL, &e);
    bson_destroy(&opts);
    if (b == NULL)
        cm_error("mongo: gridfs bucket %s: %s", name, e.message);
    return b;
}

static void bucket_close(cm_mongo *m, mongoc_gridfs_bucket_t *b, mongoc_client_t *client,
                         mongoc_database_t *db)
{
    mongoc_gridfs_bucket_destroy(b);
    mongoc_database_destroy(db);
    mongoc_client_pool_push(m->pool, client);
}

static cm_err gridfs_stat(cm_mongo *m, const char *bucket, const char *id, int64_t *len,
                          int64_t *chunk);

cm_err cm_mongo_gridfs_put(cm_mongo *m, const char *bucket, const char *id, const void *data,
                           size_t len)
{
    mongoc_client_t *client;
    mongoc_database_t *db;
    mongoc_gridfs_bucket_t *b = bucket_open(m, bucket, &client, &db);
    mongoc_stream_t *st = NULL;
    bson_value_t idv;
    bson_error_t e;
    cm_err rc = CM_EIO;
    size_t off = 0;
    int64_t have, chunk;

    if (b == NULL)
        goto out;
    /* A failed upload is aborted by deleting every chunk with its files_id, which would wipe
     * an existing file of the same id: refuse a taken id before writing anything. */
    if (gridfs_stat(m, bucket, id, &have, &chunk) != CM_ENOTFOUND) {
        rc = CM_ECONFLICT;
        goto out;
    }
    idv.value_type = BSON_TYPE_UTF8;
    idv.value.v_utf8.str = (char *)id;
    idv.value.v_utf8.len = (uint32_t)strlen(id);
    st = mongoc_gridfs_bucket_open_upload_stream_with_id(b, &idv, id, NULL, &e);
    if (st == NULL) {
        rc = translate("gridfs upload", bucket, &e);
        goto out;
    }
    while (off < len) {
        size_t n = len - off > (1u << 20) ? (1u << 20) : len - off;
        ssize_t w = mongoc_stream_write(st, (void *)((const char *)data + off), n, 0);
        if (w < 0 || (size_t)w != n) {
            if (mongoc_gridfs_bucket_stream_error(st, &e))
                rc = translate("gridfs write", bucket, &e);
            mongoc_gridfs_bucket_abort_upload(st);
            goto out;
        }
        off += n;
    }
    /* Closing writes the last chunk and the files document that makes the file visible. */
    if (mongoc_stream_close(st) != 0) {
        if (mongoc_gridfs_bucket_stream_error(st, &e))
            rc = translate("gridfs close", bucket, &e);
        mongoc_gridfs_bucket_abort_upload(st);
        goto out;
    }
    rc = CM_OK;
out:
    mongoc_stream_destroy(st);
    if (b)
        bucket_close(m, b, client, db);
    else {
        mongoc_database_destroy(db);
        mongoc_client_pool_push(m->pool, client);
    }
    return rc;
}

/* Reads the files document of `id`: its length and chunk size. */
static cm_err gridfs_stat(cm_mongo *m, const char *bucket, const char *id, int64_t *len,
                          int64_t *chunk)
{
    char coll[160];
    bson_t f = BSON_INITIALIZER, doc;
    cm_err rc;

    if (snprintf(coll, sizeof(coll), "%s.files", bucket) >= (int)sizeof(coll))
        return CM_EINVAL;
    BSON_APPEND_UTF8(&f, "_id", id);
    rc = cm_mongo_find_one(m, coll, &f, NULL, &doc);
    bson_destroy(&f);
    if (rc != CM_OK)
        return rc;
    *len = cm_bson_int(&doc, "length", -1);
    *chunk = cm_bson_int(&doc, "chunkSize", -1);
    bson_destroy(&doc);
    if (*len < 0 || *chunk <= 0) {
        cm_error("mongo: gridfs %s file %s has no valid length/chunkSize", bucket, id);
        return CM_EIO;
    }
    return CM_OK;
}

cm_err cm_mongo_gridfs_size(cm_mongo *m, const char *bucket, const char *id, int64_t *len)
{
    int64_t chunk;
    return gridfs_stat(m, bucket, id, len, &chunk);
}

struct chunk_copy {
    char *buf;
    int64_t offset, end; /* wanted byte range [offset, end) of the file */
    int64_t chunk, length, next_n;
    size_t got;
    int corrupt;
};

static int copy_chunk(const bson_t *doc, void *ud)
{
    struct chunk_copy *c = ud;
    bson_iter_t it;
    const uint8_t *data = NULL;
    uint32_t dlen = 0;
    bson_subtype_t st;
    int64_t n = cm_bson_int(doc, "n", -1), start, want, from, to;

    if (bson_iter_init_find(&it, doc, "data") && BSON_ITER_HOLDS_BINARY(&it))
        bson_iter_binary(&it, &st, &dlen, &data);
    start = n * c->chunk;
    want = c->length - start < c->chunk ? c->length - start : c->chunk;
    /* Chunks must come in order, each full but the last (GridFS spec). */
    if (n != c->next_n || data == NULL || (int64_t)dlen != want) {
        c->corrupt = 1;
        return 1;
    }
    c->next_n++;
    from = c->offset > start ? c->offset - start : 0;
    to = c->end - start < (int64_t)dlen ? c->end - start : (int64_t)dlen;
    if (to > from) {
        memcpy(c->buf + c->got, data + from, (size_t)(to - from));
        c->got += (size_t)(to - from);
    }
    return 0;
}

cm_err cm_mongo_gridfs_read(cm_mongo *m, const char *bucket, const char *id, int64_t offset,
                            void *buf, size_t n, size_t *got)
{
    char coll[160];
    bson_t f = BSON_INITIALIZER, range, opts = BSON_INITIALIZER, sort;
    struct chunk_copy c = {.buf = buf, .offset = offset};
    int64_t len, chunk, first, last;
    cm_err rc;

    *got = 0;
    if (offset < 0)
        return CM_EINVAL;
    rc = gridfs_stat(m, bucket, id, &len, &chunk);
    if (rc != CM_OK)
        return rc;
    if (offset >= len || n == 0)
        return CM_OK;
    c.end = len - offset < (int64_t)n ? len : offset + (int64_t)n;
    c.chunk = chunk;
    c.length = len;
    first = offset / chunk;
    last = (c.end - 1) / chunk;
    c.next_n = first;
    snprintf(coll, sizeof(coll), "%s.chunks", bucket);
    BSON_APPEND_UTF8(&f, "files_id", id);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "n", &range);
    BSON_APPEND_INT64(&range, "$gte", first);
    BSON_APPEND_INT64(&range, "$lte", last);
    bson_append_document_end(&f, &range);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "n", 1);
    bson_append_document_end(&opts, &sort);
    rc = cm_mongo_find(m, coll, &f, &opts, copy_chunk, &c);
    bson_destroy(&f);
    bson_destroy(&opts);
    if (rc != CM_OK)
        return rc;
    if (c.corrupt || c.next_n != last + 1) {
        cm_error("mongo: gridfs %s file %s: chunks missing or of the wrong size", bucket, id);
        return CM_EIO;
    }
    *got = c.got;
    return CM_OK;
}

cm_err cm_mongo_gridfs_delete(cm_mongo *m, const char *bucket, const char *id)
{
    mongoc_client_t *client;
    mongoc_database_t *db;
    mongoc_gridfs_bucket_t *b = bucket_open(m, bucket, &client, &db);
    bson_value_t idv;
    bson_error_t e;
    cm_err rc = CM_OK;

    if (b == NULL) {
        mongoc_database_destroy(db);
        mongoc_client_pool_push(m->pool, client);
        return CM_EIO;
    }
    idv.value_type = BSON_TYPE_UTF8;
    idv.value.v_utf8.str = (char *)id;
    idv.value.v_utf8.len = (uint32_t)strlen(id);
    if (!mongoc_gridfs_bucket_delete_by_id(b, &idv, &e)) {
        if (e.domain == MONGOC_ERROR_GRIDFS && e.code == MONGOC_ERROR_GRIDFS_BUCKET_FILE_NOT_FOUND)
            rc = CM_ENOTFOUND;
        else
            rc = translate("gridfs delete", bucket, &e);
    }
    bucket_close(m, b, client, db);
    return rc;
}

struct page {
    cJSON *items;
    long n, limit;
    int more;
    const char *cursor_field;
    char *next;
    size_t next_n;
    cJSON *(*render)(const bson_t *doc, void *ud);
    void *ud;
};

static int page_collect(const bson_t *doc, void *ud)
{
    struct page *p = ud;
    if (p->n == p->limit) {
        p->more = 1;
        return 1;
    }
    cJSON_AddItemToArray(p->items, p->render(doc, p->ud));
    snprintf(p->next, p->next_n, "%s", cm_bson_str(doc, p->cursor_field, ""));
    p->n++;
    return 0;
}

cm_err cm_mongo_find_page(cm_mongo *m, const char *coll, const bson_t *filter, const bson_t *sort,
                          long limit, const char *cursor_field,
                          cJSON *(*render)(const bson_t *doc, void *ud), void *ud, cJSON **items,
                          char *next, size_t n)
{
    struct page p = {.limit = limit, .cursor_field = cursor_field, .next = next, .next_n = n,
                     .render = render, .ud = ud};
    bson_t opts = BSON_INITIALIZER;
    cm_err rc = CM_ENOMEM;

    p.items = cJSON_CreateArray();
    if (p.items == NULL || limit < 1)
        goto out;
    BSON_APPEND_DOCUMENT(&opts, "sort", sort);
    BSON_APPEND_INT64(&opts, "limit", limit + 1);
    rc = cm_mongo_find(m, coll, filter, &opts, page_collect, &p);
    if (rc != CM_OK)
        goto out;
    if (!p.more)
        next[0] = '\0';
    *items = p.items;
    p.items = NULL;
out:
    cJSON_Delete(p.items);
    bson_destroy(&opts);
    return rc;
}
