/* mongo.h - MongoDB access through a mongoc client pool with write concern majority.
 * Documents and filters are libbson values (bson_t), built by the caller with typed appends,
 * never from client JSON (STYLE.md). mongoc handles stay inside libcommon. Driver errors are
 * translated and logged once here: a duplicate key is CM_ECONFLICT, an unreachable server
 * CM_EIO. Every call is thread-safe. Updates and findAndModify are serialised per (collection,
 * _id) inside a process, because FerretDB 1.x applies them as an unlocked read-modify-replace
 * and would otherwise keep only one of two concurrent writes to a document (see mongo.c). */
#ifndef COMMON_MONGO_H
#define COMMON_MONGO_H

#include <stdint.h>

#include <bson/bson.h>
#include <cJSON.h>

#include "common/error.h"

typedef struct cm_mongo cm_mongo;

/* Connects a pool to `uri` (w=majority is forced) and selects database `db`.
 * CM_EINVAL for a malformed URI. Does not wait for the server. */
cm_err cm_mongo_create(const char *uri, const char *db, cm_mongo **out);
void cm_mongo_destroy(cm_mongo *m); /* accepts NULL */

/* Round trip to the server ("ping"). CM_OK or CM_EIO. */
cm_err cm_mongo_ping(cm_mongo *m);

/* Creates an index named `name` over `keys` ({field: 1|-1, ...}) if absent. */
cm_err cm_mongo_create_index(cm_mongo *m, const char *coll, const bson_t *keys, const char *name,
                             int unique);

/* Drops the index named `name` of `coll`; CM_OK also when there is no such index or
 * collection. CM_EIO when the server failed. */
cm_err cm_mongo_drop_index(cm_mongo *m, const char *coll, const char *name);

/* Sets `*out` to 1 when the server is FerretDB (its buildInfo carries `ferretdbVersion`), else
 * 0. FerretDB 1.x (SQLite backend) plans no query with an index other than `_id` (a filter on
 * an indexed field reads the whole collection all the same: bench/README.md, "Push fan-out"),
 * so an index kept only for queries there costs every insert and gives nothing. CM_EIO when
 * the server could not be asked. */
cm_err cm_mongo_is_ferretdb(cm_mongo *m, int *out);

/* Inserts `doc`. CM_ECONFLICT when a unique index refuses it. */
cm_err cm_mongo_insert(cm_mongo *m, const char *coll, const bson_t *doc);

/* Inserts `docs[0..n)` in one round trip, unordered: a document refused by a unique index
 * does not stop the others. With `dup` (n bytes, may be NULL) each refused document's byte is
 * set to 1 (the others to 0) and duplicates are not an error: CM_OK when every other document
 * was inserted. Without `dup`, any duplicate gives CM_ECONFLICT (the others are inserted all
 * the same). CM_EIO when the server failed or refused a document for another reason (which
 * documents were stored is then unknown: retry with the same documents). */
cm_err cm_mongo_insert_many(cm_mongo *m, const char *coll, const bson_t *const *docs, size_t n,
                            unsigned char *dup);

/* Finds the first document matching `filter` (with optional `opts`: projection, sort) and
 * copies it into `out`, which the caller then owns (bson_destroy). CM_ENOTFOUND if none;
 * `out` is then not initialised. */
cm_err cm_mongo_find_one(cm_mongo *m, const char *coll, const bson_t *filter, const bson_t *opts,
                         bson_t *out);

/* Calls `fn` for each document matching `filter` with `opts` (sort, limit, projection);
 * `fn` returns 0 to go on, non-zero to stop. The document is valid during the call only. */
cm_err cm_mongo_find(cm_mongo *m, const char *coll, const bson_t *filter, const bson_t *opts,
                     int (*fn)(const bson_t *doc, void *ud), void *ud);

/* The document of `coll` whose _id is the string `id` and whose "tenant" is `tenant`, copied
 * into `out` (caller destroys), with optional `opts` (projection). CM_ENOTFOUND when there is
 * none or it belongs to another tenant (never told apart: one tenant never learns of another's
 * ids). It looks up by `_id` alone and compares the tenant here, because released FerretDB 1.x
 * (SQLite backend) passes only a lone `{_id: <value>}` filter to SQLite: any other filter,
 * `{_id, tenant}` included, decodes every document of the collection in Go (about 30 us each,
 * measured 2026-11-22: 310 ms at 10,000 documents). MongoDB, and FerretDB as deploy/deps.sh
 * builds it (deploy/ferretdb/README.md), answer both from the _id index. */
cm_err cm_mongo_find_owned(cm_mongo *m, const char *coll, const char *id, const char *tenant,
                           const bson_t *opts, bson_t *out);

/* Updates the first (or every, `many`) document matching `filter`. `*matched` (may be NULL)
 * receives the number matched. CM_ECONFLICT on a unique violation. */
cm_err cm_mongo_update(cm_mongo *m, const char *coll, const bson_t *filter, const bson_t *update,
                       int upsert, int many, int64_t *matched);

/* findAndModify: applies `update` to the first match (sorted by `sort`, may be NULL) and copies
 * the document after (`return_new`) or before the update into `out` (caller destroys).
 * CM_ENOTFOUND when nothing matched and `upsert` is 0. */
cm_err cm_mongo_find_and_modify(cm_mongo *m, const char *coll, const bson_t *filter,
                                const bson_t *sort, const bson_t *update, int upsert,
                                int return_new, bson_t *out);

/* One page of a keyset-paginated query: runs `filter` sorted by `sort`, fetching limit + 1
 * documents to learn whether more follow, renders the first `limit` with `render(doc, ud)`
 * into a new JSON array `*items` (caller owns it) and writes the string field `cursor_field`
 * of the last rendered document to `next` (size n) when more follow, "" otherwise. On failure
 * `*items` is not set. */
cm_err cm_mongo_find_page(cm_mongo *m, const char *coll, const bson_t *filter, const bson_t *sort,
                          long limit, const char *cursor_field,
                          cJSON *(*render)(const bson_t *doc, void *ud), void *ud, cJSON **items,
                          char *next, size_t n);

/* Calls `fn(value, ud)` for each distinct string value of `field` among the documents matching
 * `filter` (NULL: all); values of other types are skipped; `fn` returns non-zero to stop. The
 * server answers in one reply (MongoDB's 16 MiB cap): meant for small sets, such as tenants. */
cm_err cm_mongo_distinct(cm_mongo *m, const char *coll, const char *field, const bson_t *filter,
                         int (*fn)(const char *value, void *ud), void *ud);

/* Counts documents matching `filter`. */
cm_err cm_mongo_count(cm_mongo *m, const char *coll, const bson_t *filter, int64_t *count);

/* Deletes documents matching `filter` (every match when `many`). */
cm_err cm_mongo_delete(cm_mongo *m, const char *coll, const bson_t *filter, int many,
                       int64_t *deleted);

/* Typed readers over a document; each returns `def` when the field is absent or of another
 * type. Strings are borrowed from `doc`. Dotted paths ("last_message.seq") are followed. */
const char *cm_bson_str(const bson_t *doc, const char *path, const char *def);
int64_t cm_bson_int(const bson_t *doc, const char *path, int64_t def);
int cm_bson_bool(const bson_t *doc, const char *path, int def);

/* --- GridFS ------------------------------------------------------------------------------
 * Files stored per the GridFS spec (collections <bucket>.files and <bucket>.chunks, default
 * chunk size 255 KiB), written through mongoc_gridfs_bucket_t. Files are named by a string
 * `id` (their _id) chosen by the caller and are immutable once written. */

/* Stores `len` bytes at `data` as file `id` in `bucket`. CM_ECONFLICT when `id` exists (the
 * existing file is left as it was); CM_EIO when the server fails (a partly written file is
 * aborted and removed). Two concurrent puts of one new id are not supported: choose ids
 * that cannot collide (random). */
cm_err cm_mongo_gridfs_put(cm_mongo *m, const char *bucket, const char *id, const void *data,
                           size_t len);

/* Writes the length in bytes of file `id` to `*len`. CM_ENOTFOUND when absent. */
cm_err cm_mongo_gridfs_size(cm_mongo *m, const char *bucket, const char *id, int64_t *len);

/* Reads up to `n` bytes of file `id` starting at byte `offset` into `buf`; `*got` receives
 * how many were read (fewer than `n` only at the end of the file, 0 at or past it). Only the
 * chunks covering the range are fetched, so a range costs what it reads. CM_ENOTFOUND when
 * absent; CM_EIO when a chunk is missing or has the wrong size (a corrupt file). */
cm_err cm_mongo_gridfs_read(cm_mongo *m, const char *bucket, const char *id, int64_t offset,
                            void *buf, size_t n, size_t *got);

/* Deletes file `id` and its chunks. CM_ENOTFOUND when absent. */
cm_err cm_mongo_gridfs_delete(cm_mongo *m, const char *bucket, const char *id);

#endif
