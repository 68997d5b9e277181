/* media_worker.c - asynchronous processing: a Kafka consumer thread inside the media process
 * takes media.uploaded (topic `media`) and user.deleted (topic `users`).
 *
 * Crash safety of processing: the new variant keys are first recorded in the document
 * (staging), then the blobs are written, then one conditional update (status pending ->
 * processed) publishes the variants with the status. A crash at any point leaves the status
 * pending and the offset unstored, so the event is redelivered and the job redone; the redo
 * removes the blobs an earlier attempt staged. No reader ever sees a half-written variant:
 * variants are looked up through the document only after the flip. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "media.h"

#define POISON_ATTEMPTS 5 /* a record failing this often in a row is skipped, with an error */

struct media_worker {
    media_ctx *ctx;
    cm_kafka_worker *kw;
    /* The record that failed last and how often in a row (worker thread only). */
    int32_t fail_partition;
    int64_t fail_offset;
    int fail_count;
};

/* Reads the whole object (parts in order) into a heap buffer; caller frees. */
static cm_err read_whole(media_ctx *ctx, const bson_t *doc, char **out, size_t *len)
{
    int64_t size = cm_bson_int(doc, "size", -1);
    size_t off = 0;
    bson_iter_t it, sub, k;
    char *buf;

    if (size <= 0)
        return CM_EINVAL;
    buf = malloc((size_t)size);
    if (buf == NULL)
        return CM_ENOMEM;
    if (bson_iter_init_find(&it, doc, "parts") && bson_iter_recurse(&it, &sub)) {
        while (bson_iter_next(&sub)) {
            const char *key = NULL;
            int64_t plen = 0;
            size_t got = 0;
            if (bson_iter_recurse(&sub, &k))
                while (bson_iter_next(&k)) {
                    if (strcmp(bson_iter_key(&k), "key") == 0 && BSON_ITER_HOLDS_UTF8(&k))
                        key = bson_iter_utf8(&k, NULL);
                    else if (strcmp(bson_iter_key(&k), "len") == 0)
                        plen = bson_iter_as_int64(&k);
                }
            if (key == NULL || plen < 0 || off + (size_t)plen > (size_t)size) {
                free(buf);
                return CM_EINVAL;
            }
            cm_err rc = ctx->store->read(ctx->store, key, 0, buf + off, (size_t)plen, &got);
            if (rc != CM_OK || got != (size_t)plen) {
                free(buf);
                return rc != CM_OK ? rc : CM_EIO;
            }
            off += got;
        }
    }
    if (off != (size_t)size) {
        free(buf);
        return CM_EINVAL;
    }
    *out = buf;
    *len = off;
    return CM_OK;
}

/* Flips a pending document to `status` with the extra $set fields in `extra`, and publishes
 * the event. CM_ENOTFOUND when it is no longer pending (deleted, or done by another worker). */
static cm_err flip(media_ctx *ctx, const char *id, const char *status, const char *event,
                   const bson_t *extra, int unset_staging)
{
    bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, set, unset, after;
    int64_t now = cm_clock_now_ms();
    cm_err rc;

    BSON_APPEND_UTF8(&f, "_id", id);
    BSON_APPEND_UTF8(&f, "status", "pending");
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_UTF8(&set, "status", status);
    BSON_APPEND_DATE_TIME(&set, "processed_at", now);
    if (extra)
        bson_concat(&set, extra);
    rc = media_pending_set(&set, event, now);
    bson_append_document_end(&u, &set);
    if (unset_staging) {
        BSON_APPEND_DOCUMENT_BEGIN(&u, "$unset", &unset);
        BSON_APPEND_UTF8(&unset, "staging", "");
        bson_append_document_end(&u, &unset);
    }
    if (rc == CM_OK)
        rc = cm_mongo_find_and_modify(ctx->db, MEDIA_COLL, &f, NULL, &u, 0, 1, &after);
    bson_destroy(&f);
    bson_destroy(&u);
    if (rc != CM_OK)
        return rc;
    media_publish(ctx, &after);
    bson_destroy(&after);
    return CM_OK;
}

static cm_err fail(media_ctx *ctx, const char *id, const char *reason)
{
    bson_t extra = BSON_INITIALIZER;
    cm_err rc;
    BSON_APPEND_UTF8(&extra, "failure_reason", reason);
    rc = flip(ctx, id, "failed", "media.failed", &extra, 0);
    bson_destroy(&extra);
    cm_info("media %s failed: %s", id, reason);
    return rc == CM_ENOTFOUND ? CM_OK : rc;
}

static void sha256_hex(const void *data, size_t len, char out[65])
{
    static const char h[] = "0123456789abcdef";
    unsigned char d[32];
    unsigned int n = 0;
    EVP_Digest(data, len, d, &n, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++) {
        out[2 * i] = h[d[i] >> 4];
        out[2 * i + 1] = h[d[i] & 15];
    }
    out[64] = '\0';
}

/* Records the keys about to be written, removing what an earlier attempt staged. */
static cm_err stage(media_ctx *ctx, const bson_t *doc, char keys[4][MEDIA_KEY_LEN])
{
    bson_iter_t it, sub;
    bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, set, arr;
    int64_t matched = 0;
    cm_err rc;

    if (bson_iter_init_find(&it, doc, "staging") && bson_iter_recurse(&it, &sub))
        while (bson_iter_next(&sub))
            if (BSON_ITER_HOLDS_UTF8(&sub))
                ctx->store->remove(ctx->store, bson_iter_utf8(&sub, NULL));
    for (int i = 0; i < 4; i++)
        if (media_new_key(keys[i]) != CM_OK)
            return CM_EIO;
    BSON_APPEND_UTF8(&f, "_id", cm_bson_str(doc, "_id", ""));
    BSON_APPEND_UTF8(&f, "status", "pending");
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_ARRAY_BEGIN(&set, "staging", &arr);
    for (int i = 0; i < 4; i++) {
        char k[16];
        snprintf(k, sizeof(k), "%d", i);
        BSON_APPEND_UTF8(&arr, k, keys[i]);
    }
    bson_append_array_end(&set, &arr);
    bson_append_document_end(&u, &set);
    rc = cm_mongo_update(ctx->db, MEDIA_COLL, &f, &u, 0, 0, &matched);
    bson_destroy(&f);
    bson_destroy(&u);
    if (rc == CM_OK && matched == 0)
        rc = CM_ENOTFOUND;
    return rc;
}

static cm_err process_image(media_ctx *ctx, const bson_t *doc)
{
    const char *id = cm_bson_str(doc, "_id", ""), *type = cm_bson_str(doc, "content_type", "");
    media_settings s;
    media_image_variant v[4];
    char keys[4][MEDIA_KEY_LEN], why[256], sha[65];
    char *data = NULL;
    size_t len = 0;
    int w, h, rendered = 0;
    bson_t extra = BSON_INITIALIZER, vars, one;
    cm_err rc;

    rc = media_settings_load(ctx, cm_bson_str(doc, "tenant", ""), &s);
    if (rc != CM_OK)
        goto out;
    rc = read_whole(ctx, doc, &data, &len);
    if (rc == CM_EINVAL) {
        rc = fail(ctx, id, "the stored object is incomplete");
        goto out;
    }
    if (rc != CM_OK)
        goto out;
    /* The header check again: settings may have changed, and tus uploads reach here too. */
    rc = media_image_probe(data, len, type, s.pixel_max, &w, &h, why, sizeof(why));
    if (rc != CM_OK) {
        rc = fail(ctx, id, why);
        goto out;
    }
    if (media_image_render(data, len, type, v, why, sizeof(why)) != CM_OK) {
        rc = fail(ctx, id, why);
        goto out;
    }
    rendered = 1;
    rc = stage(ctx, doc, keys);
    if (rc != CM_OK)
        goto out;
    BSON_APPEND_DOCUMENT_BEGIN(&extra, "variants", &vars);
    for (int i = 0; i < 4; i++) {
        rc = ctx->store->put(ctx->store, keys[i], v[i].data, v[i].len);
        if (rc != CM_OK)
            goto out;
        sha256_hex(v[i].data, v[i].len, sha);
        BSON_APPEND_DOCUMENT_BEGIN(&vars, v[i].name, &one);
        BSON_APPEND_UTF8(&one, "key", keys[i]);
        BSON_APPEND_INT64(&one, "size", (int64_t)v[i].len);
        BSON_APPEND_INT32(&one, "width", v[i].width);
        BSON_APPEND_INT32(&one, "height", v[i].height);
        BSON_APPEND_UTF8(&one, "content_type", v[i].type);
        BSON_APPEND_UTF8(&one, "sha256", sha);
        bson_append_document_end(&vars, &one);
    }
    bson_append_document_end(&extra, &vars);
    BSON_APPEND_INT32(&extra, "width", v[0].width);
    BSON_APPEND_INT32(&extra, "height", v[0].height);
    rc = flip(ctx, id, "processed", "media.processed", &extra, 1);
    if (rc == CM_ENOTFOUND) {
        /* Deleted while we worked: the variants must not outlive it. */
        for (int i = 0; i < 4; i++)
            ctx->store->remove(ctx->store, keys[i]);
        rc = CM_OK;
    }
out:
    if (rendered)
        media_image_variant_free(v, 4);
    bson_destroy(&extra);
    free(data);
    return rc;
}

cm_err media_process(media_ctx *ctx, const char *tenant, const char *id)
{
    bson_t doc;
    cm_err rc = media_find(ctx, tenant, id, &doc);

    if (rc == CM_ENOTFOUND)
        return CM_OK; /* deleted, or never ours */
    if (rc != CM_OK)
        return rc;
    if (strcmp(cm_bson_str(&doc, "status", ""), "pending") != 0) {
        rc = CM_OK; /* a redelivery of work already done */
    } else if (strcmp(cm_bson_str(&doc, "kind", ""), "image") == 0) {
        rc = process_image(ctx, &doc);
    } else {
        rc = flip(ctx, id, "processed", "media.processed", NULL, 0);
        if (rc == CM_ENOTFOUND)
            rc = CM_OK;
    }
    bson_destroy(&doc);
    return rc;
}

static int delete_one(const bson_t *doc, void *ud)
{
    media_ctx *ctx = ud;
    media_delete_doc(ctx, doc);
    return 0;
}

cm_err media_user_deleted(media_ctx *ctx, const char *tenant, const char *user)
{
    media_settings s;
    bson_t f = BSON_INITIALIZER, ne;
    cm_err rc = media_settings_load(ctx, tenant, &s);

    if (rc != CM_OK || !s.delete_on_user_deleted)
        return rc;
    BSON_APPEND_UTF8(&f, "tenant", tenant);
    BSON_APPEND_UTF8(&f, "uploader", user);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "status", &ne);
    BSON_APPEND_UTF8(&ne, "$ne", "deleted");
    bson_append_document_end(&f, &ne);
    rc = cm_mongo_find(ctx->db, MEDIA_COLL, &f, NULL, delete_one, ctx);
    bson_destroy(&f);
    return rc;
}

static cm_err handle(const cm_kafka_record *rec, void *ud)
{
    media_worker *w = ud;
    char detail[128];
    cJSON *ev = NULL;
    const char *type = NULL, *tenant = NULL, *subject = NULL;
    cm_err rc = CM_OK;

    /* Records that are not our CloudEvents are skipped (their offset is stored): a shared
     * topic may carry what we cannot read, and retrying it forever would stall the rest. */
    if (cm_json_parse(rec->value, rec->value_len, 8, &ev, detail, sizeof(detail)) != CM_OK)
        return CM_OK;
    cm_json_string(ev, "type", 1, 1, 64, &type, detail, sizeof(detail));
    cm_json_string(ev, "tenant", 1, 1, 128, &tenant, detail, sizeof(detail));
    cm_json_string(ev, "subject", 1, 1, 128, &subject, detail, sizeof(detail));
    if (type && tenant && subject) {
        if (strcmp(type, "media.uploaded") == 0)
            rc = media_process(w->ctx, tenant, subject);
        else if (strcmp(type, "user.deleted") == 0)
            rc = media_user_deleted(w->ctx, tenant, subject);
    }
    if (rc != CM_OK) {
        /* A failure is retried (the consumer rewinds), but never forever: one record that
         * keeps failing would stall every later record of its partition, silently. */
        if (rec->partition == w->fail_partition && rec->offset == w->fail_offset) {
            w->fail_count++;
        } else {
            w->fail_partition = rec->partition;
            w->fail_offset = rec->offset;
            w->fail_count = 1;
        }
        if (w->fail_count >= POISON_ATTEMPTS) {
            cm_error("media worker: %s %s of tenant %s failed %d times (%s); skipped",
                     type ? type : "?", subject ? subject : "?", tenant ? tenant : "?",
                     w->fail_count, cm_strerror(rc));
            rc = CM_OK;
        } else {
            cm_warn("media worker: %s %s failed (%s); retrying", type ? type : "?",
                    subject ? subject : "?", cm_strerror(rc));
        }
    }
    cJSON_Delete(ev);
    return rc;
}

cm_err media_worker_start(media_ctx *ctx, const char *brokers, const char *prefix,
                          const char *group, media_worker **out)
{
    static const char *const topics[] = {"media", "users"};
    media_worker *w = calloc(1, sizeof(*w));
    cm_kafka_worker_config kc = {.one = handle, .backoff_ms = 500, .ud = w};
    cm_kafka_consumer *c;
    cm_err rc;

    if (w == NULL)
        return CM_ENOMEM;
    w->ctx = ctx;
    rc = cm_kafka_consumer_create(brokers, prefix, group, topics, 2, 1, &c);
    if (rc == CM_OK)
        rc = cm_kafka_worker_start(c, &kc, &w->kw); /* a failing record waits 500 ms */
    if (rc != CM_OK) {
        free(w);
        return rc;
    }
    *out = w;
    return CM_OK;
}

void media_worker_stop(media_worker *w)
{
    if (w == NULL)
        return;
    cm_kafka_worker_stop(w->kw);
    free(w);
}
