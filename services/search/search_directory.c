/* search_directory.c - conversation and user search, the global search grouped by kind, the
 * typeahead suggestions and a user's recent searches: GET /v1/search/conversations,
 * GET /v1/search/users, GET /v1/search, GET /v1/search/suggest, GET and DELETE
 * /v1/search/recent, over the caller's tenant's index file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/log.h"
#include "search.h"

#define SUGGEST_PER_KIND 5  /* suggestions of each kind */
#define GLOBAL_LIMIT_MAX 20 /* results of each kind in GET /v1/search */
#define STR_(x) #x
#define STR(x) STR_(x)

/* A searchable kind other than messages: its table (alias t), its two FTS5 indexes, the text
 * LIKE matches for CJK terms under three characters, and who may find a row (one ? bound to
 * the caller's user id). */
typedef struct kind {
    const char *table, *words, *tri, *select, *like_text, *visible;
    void (*row)(sqlite3_stmt *st, cJSON *it);
} kind;

static void conversation_row(sqlite3_stmt *st, cJSON *it)
{
    char when[CM_RFC3339_LEN];
    cJSON_AddStringToObject(it, "id", (const char *)sqlite3_column_text(st, 0));
    cJSON_AddStringToObject(it, "type", (const char *)sqlite3_column_text(st, 1));
    cJSON_AddStringToObject(it, "title", (const char *)sqlite3_column_text(st, 2));
    cJSON_AddStringToObject(it, "description", (const char *)sqlite3_column_text(st, 3));
    cm_clock_rfc3339(sqlite3_column_int64(st, 4), when);
    cJSON_AddStringToObject(it, "created_at", when);
    cJSON_AddBoolToObject(it, "deleted", sqlite3_column_int(st, 5));
}

static void user_row(sqlite3_stmt *st, cJSON *it)
{
    const char *username = (const char *)sqlite3_column_text(st, 2),
               *avatar = (const char *)sqlite3_column_text(st, 3);
    cJSON_AddStringToObject(it, "id", (const char *)sqlite3_column_text(st, 0));
    cJSON_AddStringToObject(it, "name", (const char *)sqlite3_column_text(st, 1));
    if (username && username[0])
        cJSON_AddStringToObject(it, "username", username);
    if (avatar)
        cJSON_AddStringToObject(it, "avatar_media_id", avatar);
    else
        cJSON_AddNullToObject(it, "avatar_media_id");
}

/* A user finds the conversations they are an active member of (README.md). */
static const kind CONVERSATIONS = {
    "conversations", "conv_words", "conv_tri",
    "t.id, t.type, t.title, t.description, t.created_ms, t.deleted",
    "(t.title || ' ' || t.description)",
    "EXISTS (SELECT 1 FROM members mb WHERE mb.conversation_id = t.id AND mb.user_id = ?"
    " AND mb.active = 1)",
    conversation_row};

/* Users of the tenant who are active and discoverable (as GET /v1/users?q= of the user
 * service); the ? is the caller, who finds themselves only when discoverable too. */
static const kind USERS = {
    "users", "user_words", "user_tri", "t.id, t.name, t.username, t.avatar_media_id",
    "(t.id || ' ' || t.name || ' ' || t.username)",
    "t.discoverable = 1 AND t.status = 'active' AND ? IS NOT NULL", user_row};

/* One page of `k` matching the text terms of `q` for `user`, ranked by BM25 of the word index
 * (or of the trigram index for CJK-only queries), then newest first. Appends to `items`; sets
 * *more when another page follows. A q without text terms matches nothing. */
static cm_err find_kind(sqlite3 *db, const kind *k, const char *user, const search_query *q,
                        long offset, long limit, cJSON *items, int *more)
{
    const char *fts = q->words[0] ? k->words : q->tri[0] ? k->tri : NULL;
    char sql[2048], likes[SEARCH_TERMS_MAX][160];
    sqlite3_stmt *st = NULL;
    int w, b = 1, rows = 0, src;
    cm_err rc = CM_EIO;

    *more = 0;
    if (q->nterms == 0)
        return CM_OK;
    if (fts)
        w = snprintf(sql, sizeof(sql), "SELECT %s FROM %s JOIN %s t ON t.rid = %s.rowid"
                     " WHERE %s MATCH ?", k->select, fts, k->table, fts, fts);
    else
        w = snprintf(sql, sizeof(sql), "SELECT %s FROM %s t WHERE 1", k->select, k->table);
#define ADD(...)                                                                                \
    do {                                                                                        \
        int k_ = snprintf(sql + w, sizeof(sql) - (size_t)w, __VA_ARGS__);                       \
        if (k_ < 0 || (size_t)(w + k_) >= sizeof(sql))                                          \
            goto out;                                                                           \
        w += k_;                                                                                \
    } while (0)
    if (w <= 0 || (size_t)w >= sizeof(sql))
        goto out;
    if (q->words[0] && q->tri[0])
        ADD(" AND t.rid IN (SELECT rowid FROM %s WHERE %s MATCH ?)", k->tri, k->tri);
    for (int i = 0; i < q->nlikes; i++)
        ADD(" AND %s LIKE ? ESCAPE '\\'", k->like_text);
    ADD(" AND %s", k->visible);
    if (fts)
        ADD(" ORDER BY bm25(%s), t.created_ms DESC LIMIT ? OFFSET ?", fts);
    else
        ADD(" ORDER BY t.created_ms DESC LIMIT ? OFFSET ?");
#undef ADD
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        cm_warn("search %s: %s", k->table, sqlite3_errmsg(db));
        goto out;
    }
    if (fts)
        sqlite3_bind_text(st, b++, q->words[0] ? q->words : q->tri, -1, SQLITE_STATIC);
    if (q->words[0] && q->tri[0])
        sqlite3_bind_text(st, b++, q->tri, -1, SQLITE_STATIC);
    for (int i = 0; i < q->nlikes; i++) {
        search_like_pattern(q->likes[i], likes[i], sizeof(likes[i]));
        sqlite3_bind_text(st, b++, likes[i], -1, SQLITE_STATIC);
    }
    sqlite3_bind_text(st, b++, user, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, b++, limit + 1);
    sqlite3_bind_int64(st, b++, offset);
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *it;
        if (rows++ == limit) {
            *more = 1;
            break;
        }
        it = cJSON_CreateObject();
        if (it == NULL || !cJSON_AddItemToArray(items, it)) {
            cJSON_Delete(it);
            rc = CM_ENOMEM;
            goto out;
        }
        k->row(st, it);
    }
    if (src != SQLITE_ROW && src != SQLITE_DONE) {
        cm_warn("search %s: %s", k->table, sqlite3_errmsg(db));
        goto out;
    }
    rc = CM_OK;
out:
    sqlite3_finalize(st);
    return rc;
}

void search_remember(search_ctx *ctx, const char *tenant, const char *user, const char *q)
{
    static const char *const SQL[] = {
        "INSERT INTO recent(user_id, q, at_ms) VALUES (?1, ?2, ?3)"
        " ON CONFLICT DO UPDATE SET at_ms = excluded.at_ms",
        "DELETE FROM recent WHERE user_id = ?1 AND q NOT IN (SELECT q FROM recent"
        " WHERE user_id = ?1 ORDER BY at_ms DESC LIMIT " STR(SEARCH_RECENT_MAX) ")",
    };
    sqlite3 *db = NULL;
    sqlite3_stmt *st;

    if (search_index_open(ctx->index, tenant, 1, &db) != CM_OK)
        return;
    for (size_t i = 0; i < sizeof(SQL) / sizeof(SQL[0]); i++) {
        if (sqlite3_prepare_v2(db, SQL[i], -1, &st, NULL) != SQLITE_OK) {
            cm_warn("search recent: %s", sqlite3_errmsg(db));
            break;
        }
        sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC);
        if (sqlite3_bind_parameter_count(st) >= 2) {
            sqlite3_bind_text(st, 2, q, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 3, cm_clock_now_ms());
        }
        if (sqlite3_step(st) != SQLITE_DONE)
            cm_warn("search recent: %s", sqlite3_errmsg(db));
        sqlite3_finalize(st);
    }
    search_index_release(ctx->index, tenant, db);
}

/* Answers one page of `items` (taken) when rc is CM_OK, else the error (items freed). */
static void reply_items(cm_http_req *req, cm_err rc, cJSON *items, const char *next)
{
    if (rc != CM_OK) {
        cJSON_Delete(items);
        cm_http_reply_error(req, rc == CM_ENOMEM ? rc : CM_EIO, "the index could not be read");
        return;
    }
    cm_http_add_header(req, "Cache-Control", "private, no-store");
    cm_http_reply_page(req, items, next);
}

int search_authenticate(cm_http_req *req, search_ctx *ctx, cm_jwt_claims *c, const char *perm,
                        const char *why)
{
    if (cm_auth_bearer(req, ctx->verifier, c) != CM_OK)
        return 0;
    if (!search_tenant_valid(c->tid)) {
        cm_http_reply_error(req, CM_EUNAUTH, "the token's tenant is malformed");
        return 0;
    }
    if (perm && !cm_auth_can(c, perm)) {
        cm_http_reply_error(req, CM_EFORBIDDEN, why);
        return 0;
    }
    return 1;
}

/* Authenticates and parses q; on failure the reply is sent and 0 returned. `text_only`
 * refuses the message filters (from:, in:, before:, after:, has:). */
static int begin(cm_http_req *req, search_ctx *ctx, cm_jwt_claims *c, search_query **q,
                 int text_only, int required)
{
    const char *qs = cm_http_query(req, "q");
    char why[256];

    if (!search_authenticate(req, ctx, c, NULL, NULL))
        return 0;
    *q = cm_http_alloc(req, sizeof(**q));
    if (*q == NULL) {
        cm_http_reply_error(req, CM_ENOMEM, NULL);
        return 0;
    }
    if (qs == NULL || qs[0] == '\0') {
        if (!required) {
            memset(*q, 0, sizeof(**q));
            return 1;
        }
        cm_http_problem(req, 400, "validation", "Invalid query",
                        "q is required: words, \"a phrase\" or a prefix*");
        return 0;
    }
    if (search_query_parse(qs, *q, why, sizeof(why)) != CM_OK) {
        cm_http_problem(req, 400, "invalid-query", "Invalid query", "%s", why);
        return 0;
    }
    if (text_only && ((*q)->sender[0] || (*q)->conversation[0] || (*q)->from_ms ||
                      (*q)->to_ms || (*q)->has_attachment)) {
        cm_http_problem(req, 400, "invalid-query", "Invalid query",
                        "from:, in:, before:, after: and has: filter messages only; this "
                        "search takes words, \"phrases\" and prefixes*");
        return 0;
    }
    return 1;
}

/* GET /v1/search/conversations and GET /v1/search/users: one kind, paged like messages. */
static void search_kind(cm_http_req *req, search_ctx *ctx, const kind *k)
{
    cm_jwt_claims c;
    search_query *q;
    sqlite3 *db = NULL;
    const char *cur = cm_http_query(req, "cursor");
    char next[32];
    long limit, offset = 0;
    int more = 0;
    cJSON *items;
    cm_err rc;

    if (!begin(req, ctx, &c, &q, 1, 1))
        return;
    if (!search_parse_cursor(cur, &offset)) {
        cm_http_problem(req, 400, "validation", "Invalid parameter",
                        "cursor is not one this endpoint returned (results go %d deep)",
                        SEARCH_OFFSET_MAX);
        return;
    }
    if (cm_http_query_long(req, "limit", 20, 1, SEARCH_LIMIT_MAX, &limit) != CM_OK)
        return;
    items = cJSON_CreateArray();
    if (items == NULL) {
        cm_http_reply_error(req, CM_ENOMEM, NULL);
        return;
    }
    rc = search_index_open(ctx->index, c.tid, 0, &db);
    if (rc == CM_OK)
        rc = find_kind(db, k, c.sub, q, offset, limit, items, &more);
    else if (rc == CM_ENOTFOUND)
        rc = CM_OK; /* nothing indexed for the tenant yet */
    search_index_release(ctx->index, c.tid, db);
    search_index_count_query(ctx->index, rc != CM_OK);
    more = more && offset + limit <= SEARCH_OFFSET_MAX;
    snprintf(next, sizeof(next), "o%ld", offset + limit);
    reply_items(req, rc, items, more ? next : NULL);
}

/* GET /v1/search/conversations */
void search_conversations(cm_http_req *req, void *ud)
{
    search_kind(req, ud, &CONVERSATIONS);
}

/* GET /v1/search/users */
void search_users(cm_http_req *req, void *ud)
{
    search_kind(req, ud, &USERS);
}

/* Adds {"items": [...], "more": bool} under `name` of `body`, filled by find_kind. */
static cm_err add_group(cJSON *body, const char *name, sqlite3 *db, const kind *k,
                        const char *user, const search_query *q, long limit)
{
    cJSON *g = cJSON_AddObjectToObject(body, name), *items;
    int more = 0;
    cm_err rc;

    if (g == NULL || (items = cJSON_AddArrayToObject(g, "items")) == NULL)
        return CM_ENOMEM;
    rc = db ? find_kind(db, k, user, q, 0, limit, items, &more) : CM_OK;
    cJSON_AddBoolToObject(g, "more", more);
    return rc;
}

/* GET /v1/search: the first results of each kind. Messages take the whole query language;
 * conversations and users its text terms only (the filters are about messages). */
void search_global(cm_http_req *req, void *ud)
{
    search_ctx *ctx = ud;
    cm_jwt_claims c;
    search_query *q;
    sqlite3 *db = NULL;
    long limit;
    int more = 0;
    cJSON *body = NULL, *msgs, *items;
    cm_err rc;

    if (!begin(req, ctx, &c, &q, 0, 1))
        return;
    if (cm_http_query_long(req, "limit", 5, 1, GLOBAL_LIMIT_MAX, &limit) != CM_OK)
        return;
    body = cJSON_CreateObject();
    msgs = cJSON_AddObjectToObject(body, "messages");
    items = msgs ? cJSON_AddArrayToObject(msgs, "items") : NULL;
    if (items == NULL) {
        cJSON_Delete(body);
        cm_http_reply_error(req, CM_ENOMEM, NULL);
        return;
    }
    rc = search_index_messages(ctx->index, c.tid, c.sub, q, 0, 0, limit, items, &more);
    cJSON_AddBoolToObject(msgs, "more", more);
    if (rc == CM_OK) {
        rc = search_index_open(ctx->index, c.tid, 0, &db);
        if (rc == CM_ENOTFOUND)
            rc = CM_OK;
    }
    if (rc == CM_OK)
        rc = add_group(body, "conversations", db, &CONVERSATIONS, c.sub, q, limit);
    if (rc == CM_OK)
        rc = add_group(body, "users", db, &USERS, c.sub, q, limit);
    search_index_release(ctx->index, c.tid, db);
    if (rc != CM_OK) {
        cJSON_Delete(body);
        cm_http_reply_error(req, rc == CM_ENOMEM ? rc : CM_EIO, "the index could not be read");
        return;
    }
    search_remember(ctx, c.tid, c.sub, cm_http_query(req, "q"));
    cm_http_add_header(req, "Cache-Control", "private, no-store");
    cm_http_reply_json(req, 200, body);
}

/* The typeahead query of `typed`: the last term becomes a prefix unless it already ends a
 * phrase, a prefix or the text. 0 when it does not fit. */
static int as_prefix(const char *typed, char *out, size_t n)
{
    size_t len = strlen(typed);
    int w;
    char last = len ? typed[len - 1] : ' ';
    int add = last != ' ' && last != '"' && last != '*' && last != ':';
    w = snprintf(out, n, "%s%s", typed, add ? "*" : "");
    return w > 0 && (size_t)w < n;
}

static cm_err add_suggestion(cJSON *items, const char *kind_name, const char *id,
                             const char *text)
{
    cJSON *it = cJSON_CreateObject();
    if (it == NULL || !cJSON_AddItemToArray(items, it)) {
        cJSON_Delete(it);
        return CM_ENOMEM;
    }
    cJSON_AddStringToObject(it, "kind", kind_name);
    if (id)
        cJSON_AddStringToObject(it, "id", id);
    cJSON_AddStringToObject(it, "text", text);
    return CM_OK;
}

/* The caller's recent searches starting with `typed` (newest first) as suggestions. */
static cm_err suggest_recent(sqlite3 *db, const char *user, const char *typed, cJSON *out)
{
    char pat[SEARCH_Q_MAX_BYTES * 2 + 4];
    size_t at = 0;
    sqlite3_stmt *st;
    int src;
    cm_err rc = CM_OK;

    for (const char *p = typed; *p && at + 4 < sizeof(pat); p++) {
        if (*p == '%' || *p == '_' || *p == '\\')
            pat[at++] = '\\';
        pat[at++] = *p;
    }
    pat[at++] = '%';
    pat[at] = '\0';
    if (sqlite3_prepare_v2(db, "SELECT q FROM recent WHERE user_id = ? AND q LIKE ? ESCAPE '\\'"
                               " ORDER BY at_ms DESC LIMIT " STR(SUGGEST_PER_KIND), -1, &st,
                           NULL) != SQLITE_OK)
        return CM_EIO;
    sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, pat, -1, SQLITE_STATIC);
    while ((src = sqlite3_step(st)) == SQLITE_ROW && rc == CM_OK)
        rc = add_suggestion(out, "recent", NULL, (const char *)sqlite3_column_text(st, 0));
    if (rc == CM_OK && src != SQLITE_ROW && src != SQLITE_DONE)
        rc = CM_EIO;
    sqlite3_finalize(st);
    return rc;
}

/* GET /v1/search/suggest?q=: completions of what the caller is typing, from their recent
 * searches, the discoverable users' names and the titles of their conversations. Never from
 * message words: the tenant-wide vocabulary would leak words of conversations the caller
 * cannot read. */
void search_suggest(cm_http_req *req, void *ud)
{
    search_ctx *ctx = ud;
    const char *typed = cm_http_query(req, "q");
    cm_jwt_claims c;
    search_query *q;
    sqlite3 *db = NULL;
    char prefixed[SEARCH_Q_MAX_BYTES + 2], why[256];
    cJSON *items = NULL, *found = NULL, *it;
    int more;
    cm_err rc;

    if (!search_authenticate(req, ctx, &c, NULL, NULL))
        return;
    if (typed == NULL || typed[0] == '\0') {
        cm_http_problem(req, 400, "validation", "Invalid query",
                        "q is required: the start of what the user is typing");
        return;
    }
    q = cm_http_alloc(req, sizeof(*q));
    if (q == NULL) {
        cm_http_reply_error(req, CM_ENOMEM, NULL);
        return;
    }
    if (strlen(typed) > SEARCH_Q_MAX_BYTES || !as_prefix(typed, prefixed, sizeof(prefixed)) ||
        search_query_parse(prefixed, q, why, sizeof(why)) != CM_OK) {
        if (strlen(typed) > SEARCH_Q_MAX_BYTES)
            snprintf(why, sizeof(why), "q is longer than %d bytes", SEARCH_Q_MAX_BYTES);
        cm_http_problem(req, 400, "invalid-query", "Invalid query", "%s", why);
        return;
    }
    items = cJSON_CreateArray();
    found = cJSON_CreateArray();
    if (items == NULL || found == NULL) {
        rc = CM_ENOMEM;
        goto out;
    }
    rc = search_index_open(ctx->index, c.tid, 0, &db);
    if (rc == CM_ENOTFOUND) {
        rc = CM_OK;
        goto out;
    }
    if (rc != CM_OK || (rc = suggest_recent(db, c.sub, typed, items)) != CM_OK)
        goto out;
    if ((rc = find_kind(db, &USERS, c.sub, q, 0, SUGGEST_PER_KIND, found, &more)) != CM_OK)
        goto out;
    cJSON_ArrayForEach(it, found)
    {
        if ((rc = add_suggestion(items, "user", cJSON_GetStringValue(cJSON_GetObjectItem(it, "id")),
                                 cJSON_GetStringValue(cJSON_GetObjectItem(it, "name")))) != CM_OK)
            goto out;
    }
    cJSON_Delete(found);
    found = cJSON_CreateArray();
    if (found == NULL) {
        rc = CM_ENOMEM;
        goto out;
    }
    if ((rc = find_kind(db, &CONVERSATIONS, c.sub, q, 0, SUGGEST_PER_KIND, found, &more)) !=
        CM_OK)
        goto out;
    cJSON_ArrayForEach(it, found)
    {
        const char *title = cJSON_GetStringValue(cJSON_GetObjectItem(it, "title"));
        if (title && title[0] &&
            (rc = add_suggestion(items, "conversation",
                                 cJSON_GetStringValue(cJSON_GetObjectItem(it, "id")), title)) !=
                CM_OK)
            goto out;
    }
out:
    search_index_release(ctx->index, c.tid, db);
    cJSON_Delete(found);
    search_index_count_query(ctx->index, rc != CM_OK);
    reply_items(req, rc, items, NULL);
}

/* GET /v1/search/recent: the caller's recent searches, newest first. */
void search_recent_list(cm_http_req *req, void *ud)
{
    search_ctx *ctx = ud;
    cm_jwt_claims c;
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    cJSON *items;
    int src = SQLITE_DONE;
    cm_err rc;

    if (!search_authenticate(req, ctx, &c, NULL, NULL))
        return;
    items = cJSON_CreateArray();
    if (items == NULL) {
        cm_http_reply_error(req, CM_ENOMEM, NULL);
        return;
    }
    rc = search_index_open(ctx->index, c.tid, 0, &db);
    if (rc == CM_OK) {
        if (sqlite3_prepare_v2(db, "SELECT q, at_ms FROM recent WHERE user_id = ?"
                                   " ORDER BY at_ms DESC", -1, &st, NULL) != SQLITE_OK) {
            rc = CM_EIO;
        } else {
            sqlite3_bind_text(st, 1, c.sub, -1, SQLITE_STATIC);
            while ((src = sqlite3_step(st)) == SQLITE_ROW) {
                char when[CM_RFC3339_LEN];
                cJSON *it = cJSON_CreateObject();
                if (it == NULL || !cJSON_AddItemToArray(items, it)) {
                    cJSON_Delete(it);
                    rc = CM_ENOMEM;
                    break;
                }
                cJSON_AddStringToObject(it, "q", (const char *)sqlite3_column_text(st, 0));
                cm_clock_rfc3339(sqlite3_column_int64(st, 1), when);
                cJSON_AddStringToObject(it, "searched_at", when);
            }
            if (rc == CM_OK && src != SQLITE_DONE)
                rc = CM_EIO;
        }
    } else if (rc == CM_ENOTFOUND) {
        rc = CM_OK;
    }
    sqlite3_finalize(st);
    search_index_release(ctx->index, c.tid, db);
    reply_items(req, rc, items, NULL);
}

/* DELETE /v1/search/recent[?q=]: forgets one recent search (q given) or all of the caller's. */
void search_recent_delete(cm_http_req *req, void *ud)
{
    search_ctx *ctx = ud;
    const char *q = cm_http_query(req, "q");
    cm_jwt_claims c;
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    cm_err rc;

    if (!search_authenticate(req, ctx, &c, NULL, NULL))
        return;
    rc = search_index_open(ctx->index, c.tid, 1, &db);
    if (rc == CM_OK) {
        if (sqlite3_prepare_v2(db, q ? "DELETE FROM recent WHERE user_id = ? AND q = ?"
                                     : "DELETE FROM recent WHERE user_id = ?",
                               -1, &st, NULL) != SQLITE_OK) {
            rc = CM_EIO;
        } else {
            sqlite3_bind_text(st, 1, c.sub, -1, SQLITE_STATIC);
            if (q)
                sqlite3_bind_text(st, 2, q, -1, SQLITE_STATIC);
            if (sqlite3_step(st) != SQLITE_DONE)
                rc = CM_EIO;
        }
    } else if (rc == CM_ENOTFOUND) {
        rc = CM_OK;
    }
    sqlite3_finalize(st);
    search_index_release(ctx->index, c.tid, db);
    if (rc != CM_OK) {
        cm_http_reply_error(req, CM_EIO, "the index could not be written");
        return;
    }
    cm_http_reply_json(req, 204, NULL);
}
