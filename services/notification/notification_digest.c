/* notification_digest.c - the e-mail digest: messages still unread some time after they
 * arrived (NOTIFY_DIGEST_AFTER_S) are mailed together, one e-mail per user per window, to
 * users who asked for it (preferences: email_digest) and were not mailed them one by one.
 * Reading the conversation first (conversation.read from the messaging service) takes them
 * out of it, and when nothing is left unread nothing is sent.
 *
 * A window is one document per user (`_id` tenant/user) created by a unique insert on the
 * first unread message; its pass is claimed by a Redis lease; the e-mail's delivery is unique
 * per (window, user), and the notifications it lists are marked digested, so a crash in the
 * middle sends the digest once and the next window lists only what is new. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/log.h"
#include "notification_channels.h"

#define DIGEST_ITEMS_MAX 50 /* messages listed in one digest (the count says how many in all) */
#define WINDOWS_PER_PASS 16

cm_err nf_digest_note(nf_ctx *ctx, const nf_push_item *it, int64_t after_ms)
{
    char id[200];
    bson_t d = BSON_INITIALIZER;
    int64_t now = cm_clock_now_ms();
    cm_err rc;

    snprintf(id, sizeof(id), "%s/%s", it->tenant, it->user);
    BSON_APPEND_UTF8(&d, "_id", id);
    BSON_APPEND_UTF8(&d, "tenant", it->tenant);
    BSON_APPEND_UTF8(&d, "user_id", it->user);
    BSON_APPEND_INT64(&d, "since", now);
    BSON_APPEND_INT64(&d, "due_at", now + after_ms);
    rc = cm_mongo_insert(ctx->db, NF_COLL_DIGESTS, &d);
    bson_destroy(&d);
    return rc == CM_ECONFLICT ? CM_OK : rc; /* a window is open: this one joins it */
}

typedef struct item {
    char id[40], cid[40], actor[CM_USER_ID_MAX + 1], type[16];
    char *text;
    int64_t seq;
} item;

typedef struct items {
    item v[DIGEST_ITEMS_MAX];
    size_t n, total;
} items;

static int collect(const bson_t *doc, void *ud)
{
    items *l = ud;
    l->total++;
    if (l->n < DIGEST_ITEMS_MAX) {
        item *it = &l->v[l->n++];
        snprintf(it->id, sizeof(it->id), "%s", cm_bson_str(doc, "_id", ""));
        snprintf(it->cid, sizeof(it->cid), "%s", cm_bson_str(doc, "conversation_id", ""));
        snprintf(it->actor, sizeof(it->actor), "%s", cm_bson_str(doc, "actor_id", ""));
        snprintf(it->type, sizeof(it->type), "%s", cm_bson_str(doc, "type", ""));
        it->text = strdup(cm_bson_str(doc, "text", ""));
        it->seq = cm_bson_int(doc, "seq", 0);
    }
    return 0;
}

static void add(nf_buf *b, const char *s)
{
    nf_buf_add(b, s, strlen(s));
}

/* The digest's list in text and HTML: per conversation (in the order of their first unread
 * message), its messages as "sender: text". */
static void list_of(const items *l, const char *app_url, nf_buf *text, nf_buf *html)
{
    add(html, "<ul>\n");
    for (size_t i = 0; i < l->n; i++) {
        int first = 1;
        char link[600];
        for (size_t k = 0; k < i; k++)
            if (strcmp(l->v[k].cid, l->v[i].cid) == 0)
                first = 0;
        if (!first)
            continue;
        snprintf(link, sizeof(link), "%s/conversations/%s", app_url, l->v[i].cid);
        add(text, "Conversation ");
        add(text, l->v[i].cid);
        if (app_url[0]) {
            add(text, " (");
            add(text, link);
            add(text, ")");
        }
        add(text, ":\n");
        add(html, "<li><p>");
        if (app_url[0]) {
            add(html, "<a href=\"");
            nf_buf_add_html(html, link);
            add(html, "\">Conversation ");
            nf_buf_add_html(html, l->v[i].cid);
            add(html, "</a>");
        } else {
            add(html, "Conversation ");
            nf_buf_add_html(html, l->v[i].cid);
        }
        add(html, "</p>\n<ul>\n");
        for (size_t k = i; k < l->n; k++) {
            if (strcmp(l->v[k].cid, l->v[i].cid) != 0)
                continue;
            add(text, "  ");
            add(text, l->v[k].actor);
            add(text, ": ");
            add(text, l->v[k].text);
            add(text, "\n");
            add(html, "<li><b>");
            nf_buf_add_html(html, l->v[k].actor);
            add(html, "</b>: ");
            nf_buf_add_html(html, l->v[k].text);
            add(html, "</li>\n");
        }
        add(html, "</ul></li>\n");
    }
    add(html, "</ul>");
}

/* How far `user` read conversation `cid` (the reads projection), 0 when unknown. */
static int64_t read_seq_of(nf_ctx *ctx, const char *tenant, const char *cid, const char *user)
{
    char id[300];
    bson_t f = BSON_INITIALIZER, doc;
    int64_t seq = 0;

    snprintf(id, sizeof(id), "%s/%s/%s", tenant, cid, user);
    BSON_APPEND_UTF8(&f, "_id", id);
    if (cm_mongo_find_one(ctx->db, NF_COLL_READS, &f, NULL, &doc) == CM_OK) {
        seq = cm_bson_int(&doc, "read_seq", 0);
        bson_destroy(&doc);
    }
    bson_destroy(&f);
    return seq;
}

/* Drops from `l` what the user read meanwhile: conversation.read and message.created come on
 * two topics, so a read may be handled before the notification it covers was stored. Those
 * are marked read here too. */
static void drop_read(nf_ctx *ctx, const char *tenant, const char *user, items *l)
{
    size_t keep = 0;
    for (size_t i = 0; i < l->n; i++) {
        int64_t upto = l->v[i].cid[0] ? read_seq_of(ctx, tenant, l->v[i].cid, user) : 0;
        if (l->v[i].seq > 0 && l->v[i].seq <= upto) {
            bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, set;
            BSON_APPEND_UTF8(&f, "_id", l->v[i].id);
            BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
            BSON_APPEND_BOOL(&set, "read", true);
            BSON_APPEND_DATE_TIME(&set, "read_at", cm_clock_now_ms());
            bson_append_document_end(&u, &set);
            (void)cm_mongo_update(ctx->db, NF_COLL_NOTIFICATIONS, &f, &u, 0, 0, NULL);
            bson_destroy(&f);
            bson_destroy(&u);
            free(l->v[i].text);
            l->total--;
            continue;
        }
        l->v[keep++] = l->v[i];
    }
    l->n = keep;
}

/* Marks the listed notifications digested (they are not listed again). */
static cm_err mark_digested(nf_ctx *ctx, const char *tenant, const items *l)
{
    bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, in, arr, set;
    char k[24];
    cm_err rc;

    BSON_APPEND_UTF8(&f, "tenant", tenant);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "_id", &in);
    BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
    for (size_t i = 0; i < l->n; i++) {
        snprintf(k, sizeof(k), "%zu", i);
        BSON_APPEND_UTF8(&arr, k, l->v[i].id);
    }
    bson_append_array_end(&in, &arr);
    bson_append_document_end(&f, &in);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_BOOL(&set, "digested", true);
    bson_append_document_end(&u, &set);
    rc = cm_mongo_update(ctx->db, NF_COLL_NOTIFICATIONS, &f, &u, 0, 1, NULL);
    bson_destroy(&f);
    bson_destroy(&u);
    return rc;
}

/* Mails the digest of window `w` (if anything is still unread) and closes the window. */
static void one_window(nf_ctx *ctx, const bson_t *w, const char *app_url)
{
    const char *tenant = cm_bson_str(w, "tenant", ""), *user = cm_bson_str(w, "user_id", ""),
               *wid = cm_bson_str(w, "_id", "");
    int64_t since = cm_bson_int(w, "since", 0);
    bson_t f = BSON_INITIALIZER, opts = BSON_INITIALIZER, ne, sort, in, arr;
    items *l = calloc(1, sizeof(*l));
    nf_contact c;
    nf_prefs p;
    nf_buf text = {0}, html = {0};
    char summary[120], event_id[80], link[512];
    nf_vars v = {{0}, {0}};
    nf_rendered r = {0};
    cm_err rc = CM_ENOMEM;
    size_t types = 0;

    if (l == NULL)
        goto out;
    if ((rc = nf_prefs_load(ctx, tenant, user, &p)) != CM_OK ||
        (rc = nf_contact_load(ctx, tenant, user, &c)) != CM_OK)
        goto out;
    /* Unread, not digested yet, about a message, of a type not mailed one by one. */
    BSON_APPEND_UTF8(&f, "tenant", tenant);
    BSON_APPEND_UTF8(&f, "user_id", user);
    BSON_APPEND_UTF8(&f, "channel", "in_app");
    BSON_APPEND_BOOL(&f, "read", false);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "digested", &ne);
    BSON_APPEND_BOOL(&ne, "$ne", true);
    bson_append_document_end(&f, &ne);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "hidden", &ne);
    BSON_APPEND_BOOL(&ne, "$ne", true);
    bson_append_document_end(&f, &ne);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "type", &in);
    BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
    for (nf_type t = NF_TYPE_MENTION; t <= NF_TYPE_MESSAGE; t++)
        if (!p.email[t]) {
            char k[8];
            snprintf(k, sizeof(k), "%zu", types++);
            BSON_APPEND_UTF8(&arr, k, nf_type_name(t));
        }
    bson_append_array_end(&in, &arr);
    bson_append_document_end(&f, &in);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "_id", 1);
    bson_append_document_end(&opts, &sort);
    if (types > 0 && p.email_digest && c.email[0] &&
        (rc = cm_mongo_find(ctx->db, NF_COLL_NOTIFICATIONS, &f, &opts, collect, l)) != CM_OK)
        goto out;
    drop_read(ctx, tenant, user, l);
    if (l->n > 0) {
        size_t convs = 0;
        for (size_t i = 0; i < l->n; i++) {
            int seen = 0;
            for (size_t k = 0; k < i; k++)
                seen |= strcmp(l->v[k].cid, l->v[i].cid) == 0;
            convs += !seen;
        }
        snprintf(summary, sizeof(summary), "%zu unread message%s in %zu conversation%s",
                 l->total, l->total == 1 ? "" : "s", convs, convs == 1 ? "" : "s");
        list_of(l, app_url, &text, &html);
        if (text.oom || html.oom) {
            rc = CM_ENOMEM;
            goto out;
        }
        snprintf(link, sizeof(link), "%s", app_url);
        v.v[NF_VAR_TEXT] = summary;
        v.v[NF_VAR_ITEMS] = text.p;
        v.html[NF_VAR_ITEMS] = html.p;
        v.v[NF_VAR_LINK] = link;
        v.v[NF_VAR_USER_ID] = user;
        v.v[NF_VAR_EMAIL] = c.email;
        if ((rc = nf_template_email(ctx, tenant, NF_KIND_DIGEST, c.locale, &v, &r)) != CM_OK)
            goto out;
        /* One digest per window: the window's start names its delivery. */
        snprintf(event_id, sizeof(event_id), "digest.%" PRId64, since);
        if ((rc = nf_mail_queue(ctx, tenant, event_id, user, NULL, NF_KIND_DIGEST, NULL, NULL,
                                c.email, &r, cm_clock_now_ms())) != CM_OK ||
            (rc = mark_digested(ctx, tenant, l)) != CM_OK)
            goto out;
    }
    bson_reinit(&f);
    BSON_APPEND_UTF8(&f, "_id", wid);
    rc = cm_mongo_delete(ctx->db, NF_COLL_DIGESTS, &f, 0, NULL);
out:
    if (rc != CM_OK)
        cm_warn("digest: window %s not handled (%s): tried again", wid, cm_strerror(rc));
    for (size_t i = 0; l && i < l->n; i++)
        free(l->v[i].text);
    free(l);
    free(text.p);
    free(html.p);
    nf_rendered_cleanup(&r);
    bson_destroy(&f);
    bson_destroy(&opts);
}

typedef struct windows {
    bson_t docs[WINDOWS_PER_PASS];
    size_t n;
} windows;

static int collect_window(const bson_t *doc, void *ud)
{
    windows *w = ud;
    if (w->n == WINDOWS_PER_PASS)
        return 1;
    bson_copy_to(doc, &w->docs[w->n++]);
    return 0;
}

void nf_digest_round(nf_ctx *ctx, const char *instance, const char *app_url)
{
    bson_t f = BSON_INITIALIZER, opts = BSON_INITIALIZER, lte;
    windows w = {.n = 0};

    BSON_APPEND_DOCUMENT_BEGIN(&f, "due_at", &lte);
    BSON_APPEND_INT64(&lte, "$lte", cm_clock_now_ms());
    bson_append_document_end(&f, &lte);
    BSON_APPEND_INT64(&opts, "limit", WINDOWS_PER_PASS);
    if (cm_mongo_find(ctx->db, NF_COLL_DIGESTS, &f, &opts, collect_window, &w) == CM_OK) {
        for (size_t i = 0; i < w.n; i++) {
            char key[260];
            snprintf(key, sizeof(key), "nf:digest:%s", cm_bson_str(&w.docs[i], "_id", ""));
            if (cm_redis_lock(ctx->redis, key, instance, 60000) == CM_OK) {
                one_window(ctx, &w.docs[i], app_url);
                cm_redis_unlock(ctx->redis, key, instance);
            }
        }
    }
    for (size_t i = 0; i < w.n; i++)
        bson_destroy(&w.docs[i]);
    bson_destroy(&f);
    bson_destroy(&opts);
}

/* Raises the reads projection of (tenant, cid, user) to `seq`: an update guarded by
 * read_seq < seq, else a unique insert (FerretDB updates are not atomic, its unique inserts
 * are); a conflict means a concurrent or higher record exists. */
static cm_err reads_apply(nf_ctx *ctx, const char *tenant, const char *cid, const char *user,
                          int64_t seq)
{
    char id[300];
    bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, lt, set, doc = BSON_INITIALIZER;
    int64_t matched = 0;
    cm_err rc;

    snprintf(id, sizeof(id), "%s/%s/%s", tenant, cid, user);
    BSON_APPEND_UTF8(&f, "_id", id);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "read_seq", &lt);
    BSON_APPEND_INT64(&lt, "$lt", seq);
    bson_append_document_end(&f, &lt);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_INT64(&set, "read_seq", seq);
    bson_append_document_end(&u, &set);
    rc = cm_mongo_update(ctx->db, NF_COLL_READS, &f, &u, 0, 0, &matched);
    if (rc == CM_OK && matched == 0) {
        BSON_APPEND_UTF8(&doc, "_id", id);
        BSON_APPEND_UTF8(&doc, "tenant", tenant);
        BSON_APPEND_UTF8(&doc, "user_id", user);
        BSON_APPEND_INT64(&doc, "read_seq", seq);
        rc = cm_mongo_insert(ctx->db, NF_COLL_READS, &doc);
        if (rc == CM_ECONFLICT)
            rc = CM_OK;
    }
    bson_destroy(&f);
    bson_destroy(&u);
    bson_destroy(&doc);
    return rc;
}

cm_err nf_conversation_read(nf_ctx *ctx, const char *tenant, const cJSON *data, char *why,
                            size_t n)
{
    const cJSON *cid = cJSON_GetObjectItemCaseSensitive(data, "conversation_id"),
                *user = cJSON_GetObjectItemCaseSensitive(data, "user_id"),
                *seq = cJSON_GetObjectItemCaseSensitive(data, "read_seq");
    bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, lte, set;
    cm_err rc;

    if (!cJSON_IsString(cid) || !cJSON_IsString(user) || !cm_user_id_valid(user->valuestring) ||
        !cJSON_IsNumber(seq)) {
        snprintf(why, n, "conversation.read without conversation_id, user_id or read_seq");
        return CM_EINVAL;
    }
    if ((rc = reads_apply(ctx, tenant, cid->valuestring, user->valuestring,
                          (int64_t)seq->valuedouble)) != CM_OK)
        return rc;
    BSON_APPEND_UTF8(&f, "tenant", tenant);
    BSON_APPEND_UTF8(&f, "user_id", user->valuestring);
    BSON_APPEND_UTF8(&f, "conversation_id", cid->valuestring);
    BSON_APPEND_BOOL(&f, "read", false);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "seq", &lte);
    BSON_APPEND_INT64(&lte, "$lte", (int64_t)seq->valuedouble);
    bson_append_document_end(&f, &lte);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_BOOL(&set, "read", true);
    BSON_APPEND_DATE_TIME(&set, "read_at", cm_clock_now_ms());
    bson_append_document_end(&u, &set);
    rc = cm_mongo_update(ctx->db, NF_COLL_NOTIFICATIONS, &f, &u, 0, 1, NULL);
    bson_destroy(&f);
    bson_destroy(&u);
    return rc;
}
