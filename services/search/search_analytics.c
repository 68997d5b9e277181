/* search_analytics.c - GET /v1/analytics/tenant and GET /v1/analytics/users/{id}: a tenant's
 * activity computed by SQL over the index its events built (messages, memberships, users),
 * for the tenant's admins only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/log.h"
#include "search.h"

#define DAY_MS 86400000LL
#define DEFAULT_RANGE_MS (30 * DAY_MS)
#define BUCKETS_MAX 1000 /* points of one series at most */
#define TOP_CONVERSATIONS 10
/* Messages counted: every one sent, deleted later or not, except those of users erased with
 * the policy delete (search_index.c). */
#define COUNTED "m.deleted <> " SEARCH_ERASED_STR

/* A bucket: its name, its start in ms of a created_ms named X (SQL), its nominal width. */
typedef struct bucket {
    const char *name, *start_sql;
    long long width_ms; /* for the bucket-count cap only (month: 31 days) */
} bucket;

static const bucket BUCKETS[] = {
    {"hour", "((X / 3600000) * 3600000)", 3600000LL},
    {"day", "((X / 86400000) * 86400000)", DAY_MS},
    /* ISO weeks start on Monday; 1970-01-01 was a Thursday, so day + 3 counts from a Monday */
    {"week", "((((X / 86400000) + 3) / 7 * 7 - 3) * 86400000)", 7 * DAY_MS},
    {"month", "(CAST(strftime('%s', X / 1000, 'unixepoch', 'start of month') AS INTEGER) * 1000)",
     31 * DAY_MS},
};

/* Replaces each X of `tmpl` by `col` into out (size n); 0 when it does not fit. */
static int expand(const char *tmpl, const char *col, char *out, size_t n)
{
    size_t at = 0, cl = strlen(col);
    for (const char *p = tmpl; *p; p++) {
        if (*p == 'X') {
            if (at + cl >= n)
                return 0;
            memcpy(out + at, col, cl);
            at += cl;
        } else {
            if (at + 1 >= n)
                return 0;
            out[at++] = *p;
        }
    }
    out[at] = '\0';
    return 1;
}

/* Runs `sql` (params ?1 from, ?2 to, ?3 `text` when not NULL) and adds its rows (start ms,
 * count) as [{"start", "count"}] under `name` of `obj`. */
static cm_err series(sqlite3 *db, const char *sql, int64_t from, int64_t to, const char *text,
                     cJSON *obj, const char *name)
{
    sqlite3_stmt *st;
    cJSON *arr = cJSON_AddArrayToObject(obj, name);
    int src;
    cm_err rc = CM_OK;

    if (arr == NULL)
        return CM_ENOMEM;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        cm_warn("analytics: %s", sqlite3_errmsg(db));
        return CM_EIO;
    }
    sqlite3_bind_int64(st, 1, from);
    sqlite3_bind_int64(st, 2, to);
    if (text)
        sqlite3_bind_text(st, 3, text, -1, SQLITE_STATIC);
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        char when[CM_RFC3339_LEN];
        cJSON *it = cJSON_CreateObject();
        if (it == NULL || !cJSON_AddItemToArray(arr, it)) {
            cJSON_Delete(it);
            rc = CM_ENOMEM;
            break;
        }
        cm_clock_rfc3339(sqlite3_column_int64(st, 0), when);
        cJSON_AddStringToObject(it, "start", when);
        cJSON_AddNumberToObject(it, "count", (double)sqlite3_column_int64(st, 1));
    }
    if (rc == CM_OK && src != SQLITE_DONE)
        rc = CM_EIO;
    sqlite3_finalize(st);
    return rc;
}

/* One number `sql` answers (params as in series, and ?4 `match` when not NULL), or JSON null
 * when it answers NULL. */
static cm_err scalar_m(sqlite3 *db, const char *sql, int64_t from, int64_t to, const char *text,
                       const char *match, cJSON *obj, const char *name)
{
    sqlite3_stmt *st;
    cm_err rc = CM_EIO;

    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        cm_warn("analytics: %s", sqlite3_errmsg(db));
        return CM_EIO;
    }
    sqlite3_bind_int64(st, 1, from);
    sqlite3_bind_int64(st, 2, to);
    if (text)
        sqlite3_bind_text(st, 3, text, -1, SQLITE_STATIC);
    if (match)
        sqlite3_bind_text(st, 4, match, -1, SQLITE_STATIC);
    switch (sqlite3_step(st)) {
    case SQLITE_ROW:
        if (sqlite3_column_type(st, 0) == SQLITE_NULL)
            cJSON_AddNullToObject(obj, name);
        else
            cJSON_AddNumberToObject(obj, name, (double)sqlite3_column_int64(st, 0));
        rc = CM_OK;
        break;
    case SQLITE_DONE:
        cJSON_AddNullToObject(obj, name);
        rc = CM_OK;
        break;
    default:
        break;
    }
    sqlite3_finalize(st);
    return rc;
}

static cm_err scalar(sqlite3 *db, const char *sql, int64_t from, int64_t to, const char *text,
                     cJSON *obj, const char *name)
{
    return scalar_m(db, sql, from, to, text, NULL, obj, name);
}

/* The messages of sender ?3 (SQL, alias m): the rows msg_ids' sender_id column finds by
 * the MATCH ?4 (search_id_match), tested exactly; there is no b-tree index on the sender
 * (schema version 7, search_index.c). SENT_ALL: every row tested, for an id without a token. */
#define SENT_FTS "m.rid IN (SELECT rowid FROM msg_ids WHERE msg_ids MATCH ?4) AND m.sender_id = ?3"
#define SENT_ALL "m.sender_id = ?3"

/* A number about sender `uid`: `sql` holds SENT_FTS; with an id of no token, SENT_ALL in its
 * place. */
static cm_err sent_scalar(sqlite3 *db, const char *sql, int64_t from, int64_t to,
                          const char *uid, cJSON *obj, const char *name)
{
    char match[SEARCH_ID_MAX + 32], alt[1024];
    const char *at = strstr(sql, SENT_FTS);
    int w;

    if (at == NULL)
        return CM_EINVAL;
    if (search_id_match("sender_id", uid, match, sizeof(match)))
        return scalar_m(db, sql, from, to, uid, match, obj, name);
    w = snprintf(alt, sizeof(alt), "%.*s" SENT_ALL "%s", (int)(at - sql), sql,
                 at + strlen(SENT_FTS));
    if (w < 0 || (size_t)w >= sizeof(alt))
        return CM_EINVAL;
    return scalar(db, alt, from, to, uid, obj, name);
}

/* The conversations with the most messages in the range, with their titles. */
static cm_err top_conversations(sqlite3 *db, int64_t from, int64_t to, cJSON *obj)
{
    static const char SQL[] =
        "SELECT m.conversation_id, count(*) AS n, c.title, c.type FROM messages m"
        " LEFT JOIN conversations c ON c.id = m.conversation_id"
        " WHERE" SEARCH_RID_WINDOW "AND m.created_ms >= ?1 AND m.created_ms < ?2 AND " COUNTED
        " GROUP BY m.conversation_id ORDER BY n DESC, m.conversation_id LIMIT 10";
    sqlite3_stmt *st;
    cJSON *arr = cJSON_AddArrayToObject(obj, "top_conversations");
    int src;
    cm_err rc = CM_OK;

    if (arr == NULL)
        return CM_ENOMEM;
    if (sqlite3_prepare_v2(db, SQL, -1, &st, NULL) != SQLITE_OK)
        return CM_EIO;
    sqlite3_bind_int64(st, 1, from);
    sqlite3_bind_int64(st, 2, to);
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *it = cJSON_CreateObject();
        const char *title = (const char *)sqlite3_column_text(st, 2),
                   *type = (const char *)sqlite3_column_text(st, 3);
        if (it == NULL || !cJSON_AddItemToArray(arr, it)) {
            cJSON_Delete(it);
            rc = CM_ENOMEM;
            break;
        }
        cJSON_AddStringToObject(it, "conversation_id", (const char *)sqlite3_column_text(st, 0));
        if (title && title[0])
            cJSON_AddStringToObject(it, "title", title);
        else
            cJSON_AddNullToObject(it, "title");
        if (type)
            cJSON_AddStringToObject(it, "type", type);
        cJSON_AddNumberToObject(it, "messages", (double)sqlite3_column_int64(st, 1));
    }
    if (rc == CM_OK && src != SQLITE_DONE)
        rc = CM_EIO;
    sqlite3_finalize(st);
    return rc;
}

/* Authenticates a tenant admin and reads from/to (default: the last 30 days); on failure the
 * reply is sent and 0 returned. */
static int begin(cm_http_req *req, search_ctx *ctx, cm_jwt_claims *c, int64_t *from, int64_t *to)
{
    const char *f = cm_http_query(req, "from"), *t = cm_http_query(req, "to");

    /* tenant_admin holds every permission; tenant.manage is the one analytics require */
    if (!search_authenticate(req, ctx, c, "tenant.manage",
                             "analytics are for the tenant's admins (permission tenant.manage)"))
        return 0;
    *to = cm_clock_now_ms() + 1;
    if (t && t[0] && search_parse_time(t, to) != CM_OK) {
        cm_http_problem(req, 400, "validation", "Invalid parameter",
                        "to takes a date YYYY-MM-DD or an RFC 3339 UTC time");
        return 0;
    }
    *from = *to - DEFAULT_RANGE_MS;
    if (f && f[0] && search_parse_time(f, from) != CM_OK) {
        cm_http_problem(req, 400, "validation", "Invalid parameter",
                        "from takes a date YYYY-MM-DD or an RFC 3339 UTC time");
        return 0;
    }
    if (*from >= *to) {
        cm_http_problem(req, 400, "validation", "Invalid parameter", "from must be before to");
        return 0;
    }
    return 1;
}

static void add_range(cJSON *body, int64_t from, int64_t to)
{
    char a[CM_RFC3339_LEN], b[CM_RFC3339_LEN];
    cm_clock_rfc3339(from, a);
    cm_clock_rfc3339(to, b);
    cJSON_AddStringToObject(body, "from", a);
    cJSON_AddStringToObject(body, "to", b);
}

/* GET /v1/analytics/tenant?from=&to=&bucket=hour|day|week|month */
void search_analytics_tenant(cm_http_req *req, void *ud)
{
    search_ctx *ctx = ud;
    const char *bname = cm_http_query(req, "bucket");
    const bucket *bk = NULL;
    cm_jwt_claims c;
    int64_t from, to;
    sqlite3 *db = NULL;
    char start[256], mstart[256], sql[1024];
    cJSON *body = NULL, *active, *media;
    cm_err rc;

    if (!begin(req, ctx, &c, &from, &to))
        return;
    if (bname == NULL || bname[0] == '\0')
        bname = "day";
    for (size_t i = 0; i < sizeof(BUCKETS) / sizeof(BUCKETS[0]); i++)
        if (strcmp(BUCKETS[i].name, bname) == 0)
            bk = &BUCKETS[i];
    if (bk == NULL) {
        cm_http_problem(req, 400, "validation", "Invalid parameter",
                        "bucket is hour, day (default), week or month");
        return;
    }
    if ((to - from) / bk->width_ms > BUCKETS_MAX) {
        cm_http_problem(req, 400, "validation", "Invalid parameter",
                        "from..to spans more than %d buckets of a %s: take a wider bucket or a "
                        "shorter range", BUCKETS_MAX, bk->name);
        return;
    }
    if (!expand(bk->start_sql, "m.created_ms", start, sizeof(start)) ||
        !expand(BUCKETS[3].start_sql, "m.created_ms", mstart, sizeof(mstart))) {
        cm_http_reply_error(req, CM_EINVAL, NULL);
        return;
    }
    body = cJSON_CreateObject();
    if (body == NULL) {
        cm_http_reply_error(req, CM_ENOMEM, NULL);
        return;
    }
    add_range(body, from, to);
    cJSON_AddStringToObject(body, "bucket", bk->name);
    rc = search_index_open(ctx->index, c.tid, 0, &db);
    if (rc == CM_ENOTFOUND) {
        /* nothing indexed yet: answer the same shape, empty */
        rc = search_index_open(ctx->index, c.tid, 1, &db);
    }
    if (rc != CM_OK)
        goto out;
#define Q(...)                                                                                  \
    do {                                                                                        \
        int w_ = snprintf(sql, sizeof(sql), __VA_ARGS__);                                      \
        if (w_ < 0 || (size_t)w_ >= sizeof(sql)) {                                              \
            rc = CM_EINVAL;                                                                     \
            goto out;                                                                           \
        }                                                                                       \
    } while (0)
    Q("SELECT %s AS b, count(*) FROM messages m WHERE" SEARCH_RID_WINDOW "AND m.created_ms >= ?1"
      " AND m.created_ms < ?2 AND " COUNTED " GROUP BY b ORDER BY b", start);
    if ((rc = series(db, sql, from, to, NULL, body, "messages")) != CM_OK)
        goto out;
    active = cJSON_AddObjectToObject(body, "active_users");
    if (active == NULL) {
        rc = CM_ENOMEM;
        goto out;
    }
    /* Active: sent at least one message; deleted users' anonymised messages are nobody's. */
    Q("SELECT ((m.created_ms / 86400000) * 86400000) AS b, count(DISTINCT m.sender_id)"
      " FROM messages m WHERE" SEARCH_RID_WINDOW "AND m.created_ms >= ?1"
      " AND m.created_ms < ?2 AND " COUNTED " AND m.sender_id <> '" SEARCH_DELETED_USER "'"
      " GROUP BY b ORDER BY b");
    if ((rc = series(db, sql, from, to, NULL, active, "daily")) != CM_OK)
        goto out;
    Q("SELECT %s AS b, count(DISTINCT m.sender_id) FROM messages m WHERE" SEARCH_RID_WINDOW
      "AND m.created_ms >= ?1 AND m.created_ms < ?2 AND " COUNTED
      " AND m.sender_id <> '" SEARCH_DELETED_USER "'"
      " GROUP BY b ORDER BY b", mstart);
    if ((rc = series(db, sql, from, to, NULL, active, "monthly")) != CM_OK)
        goto out;
    if (!expand(bk->start_sql, "u.created_ms", start, sizeof(start))) {
        rc = CM_EINVAL;
        goto out;
    }
    Q("SELECT %s AS b, count(*) FROM users u WHERE u.created_ms >= ?1 AND u.created_ms < ?2"
      " GROUP BY b ORDER BY b", start);
    if ((rc = series(db, sql, from, to, NULL, body, "new_users")) != CM_OK ||
        (rc = top_conversations(db, from, to, body)) != CM_OK)
        goto out;
    /* Response time: from a message to the next one in its conversation when that one is
     * from someone else; the median over the replies sent in the range. */
    if ((rc = scalar(db,
                     "WITH r AS (SELECT m.created_ms - lag(m.created_ms) OVER w AS d,"
                     " m.sender_id <> lag(m.sender_id) OVER w AS other, m.created_ms AS at"
                     " FROM messages m WHERE" SEARCH_RID_BEFORE "AND " COUNTED
                     " AND m.created_ms < ?2"
                     " WINDOW w AS (PARTITION BY m.conversation_id ORDER BY m.seq)),"
                     " s AS (SELECT d FROM r WHERE other AND at >= ?1 AND d IS NOT NULL)"
                     " SELECT d FROM s ORDER BY d LIMIT 1 OFFSET (SELECT count(*) FROM s) / 2",
                     from, to, NULL, body, "median_response_time_ms")) != CM_OK)
        goto out;
    media = cJSON_AddObjectToObject(body, "media");
    if (media == NULL) {
        rc = CM_ENOMEM;
        goto out;
    }
    if ((rc = scalar(db, "SELECT count(*) FROM messages m WHERE" SEARCH_RID_WINDOW
                         "AND m.created_ms >= ?1 AND m.created_ms < ?2 AND " COUNTED
                         " AND m.attachments > 0",
                     from, to, NULL, media, "messages_with_attachments")) != CM_OK ||
        (rc = scalar(db, "SELECT coalesce(sum(m.attachments), 0) FROM messages m WHERE"
                         SEARCH_RID_WINDOW "AND m.created_ms >= ?1 AND m.created_ms < ?2"
                         " AND " COUNTED,
                     from, to, NULL, media, "attachments")) != CM_OK)
        goto out;
#undef Q
out:
    search_index_release(ctx->index, c.tid, db);
    search_index_count_query(ctx->index, rc != CM_OK);
    if (rc != CM_OK) {
        cJSON_Delete(body);
        cm_http_reply_error(req, rc == CM_ENOMEM ? rc : CM_EIO, "the index could not be read");
        return;
    }
    cm_http_add_header(req, "Cache-Control", "private, no-store");
    cm_http_reply_json(req, 200, body);
}

/* GET /v1/analytics/users/{id}?from=&to= */
void search_analytics_user(cm_http_req *req, void *ud)
{
    search_ctx *ctx = ud;
    const char *uid = cm_http_param(req, "id");
    cm_jwt_claims c;
    int64_t from, to;
    sqlite3 *db = NULL;
    cJSON *body = NULL, *known;
    cm_err rc;

    if (!begin(req, ctx, &c, &from, &to))
        return;
    if (uid == NULL || !cm_user_id_valid(uid)) {
        cm_http_problem(req, 400, "validation", "Invalid parameter",
                        "the user id is 1..64 of A-Z a-z 0-9 _ . @ -");
        return;
    }
    body = cJSON_CreateObject();
    if (body == NULL) {
        cm_http_reply_error(req, CM_ENOMEM, NULL);
        return;
    }
    rc = search_index_open(ctx->index, c.tid, 0, &db);
    if (rc != CM_OK)
        goto out;
    if ((rc = sent_scalar(db, "SELECT (SELECT count(*) FROM users WHERE id = ?3) +"
                              " (SELECT count(*) FROM members WHERE user_id = ?3) +"
                              " EXISTS (SELECT 1 FROM messages m WHERE " SENT_FTS ")"
                              " + 0 * ?1 * ?2",
                          from, to, uid, body, "known")) != CM_OK)
        goto out;
    known = cJSON_GetObjectItemCaseSensitive(body, "known");
    if (!cJSON_IsNumber(known) || known->valuedouble == 0) {
        rc = CM_ENOTFOUND;
        goto out;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(body, "known");
    cJSON_AddStringToObject(body, "user_id", uid);
    add_range(body, from, to);
    if ((rc = sent_scalar(db, "SELECT count(*) FROM messages m WHERE " SENT_FTS " AND"
                              SEARCH_RID_WINDOW "AND m.created_ms >= ?1 AND m.created_ms < ?2"
                              " AND " COUNTED,
                          from, to, uid, body, "messages_sent")) != CM_OK ||
        /* received: others' messages of the conversations the user could read (the search's
         * rule: members, and before they left) */
        (rc = scalar(db, "SELECT count(*) FROM messages m JOIN members mb ON"
                         " mb.conversation_id = m.conversation_id AND mb.user_id = ?3"
                         " WHERE" SEARCH_RID_WINDOW "AND m.sender_id <> ?3 AND m.created_ms >= ?1"
                         " AND m.created_ms < ?2"
                         " AND " COUNTED " AND (mb.active = 1 OR m.created_eseq < mb.left_eseq)",
                     from, to, uid, body, "messages_received")) != CM_OK ||
        (rc = scalar(db, "SELECT count(*) + 0 * ?1 * ?2 FROM members WHERE user_id = ?3 AND"
                         " active = 1",
                     from, to, uid, body, "conversations")) != CM_OK ||
        (rc = sent_scalar(db, "SELECT count(DISTINCT m.conversation_id) FROM messages m WHERE "
                              SENT_FTS " AND" SEARCH_RID_WINDOW "AND m.created_ms >= ?1"
                              " AND m.created_ms < ?2 AND " COUNTED,
                          from, to, uid, body, "conversations_posted_in")) != CM_OK ||
        (rc = sent_scalar(db, "SELECT count(DISTINCT m.created_ms / 86400000) FROM messages m"
                              " WHERE " SENT_FTS " AND" SEARCH_RID_WINDOW "AND m.created_ms >= ?1"
                              " AND m.created_ms < ?2 AND " COUNTED,
                          from, to, uid, body, "active_days")) != CM_OK)
        goto out;
out:
    search_index_release(ctx->index, c.tid, db);
    search_index_count_query(ctx->index, rc != CM_OK && rc != CM_ENOTFOUND);
    if (rc != CM_OK) {
        cJSON_Delete(body);
        if (rc == CM_ENOTFOUND)
            cm_http_reply_error(req, rc, "no such user in this tenant");
        else
            cm_http_reply_error(req, rc == CM_ENOMEM ? rc : CM_EIO, "the index could not be read");
        return;
    }
    cm_http_add_header(req, "Cache-Control", "private, no-store");
    cm_http_reply_json(req, 200, body);
}
