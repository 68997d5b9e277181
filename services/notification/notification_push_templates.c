/* notification_push_templates.c - what a push says: a title and a body per notification type
 * (kind), rendered from the tenant's templates of channel "push" (the same store and
 * {{variables}} as e-mail and SMS, notification_templates.c) or the defaults in code, read
 * once per batch of recipients so a fan-out costs one query, not one per recipient. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "notification_channels.h"

#define PUSH_TEMPLATES_MAX 256 /* a tenant's push templates read (5 kinds x its locales) */

/* The defaults: the wording push had before templates (an empty title becomes "New
 * message"). */
static const struct {
    const char *kind, *title, *text;
} defaults[] = {
    {"mention", "{{sender_name}} mentioned you", "{{text}}"},
    {"reply", "{{sender_name}} replied to you", "{{text}}"},
    {"message", "{{sender_name}}", "{{text}}"},
    {"added", "{{sender_name}} added you to a conversation", "{{text}}"},
    {"custom", "{{title}}", "{{text}}"},
};

struct nf_push_templates {
    bson_t docs[PUSH_TEMPLATES_MAX];
    size_t n;
    int localized; /* 1: some template is for a locale other than "default" */
};

int nf_push_template_default(const char *kind, const char **title, const char **text)
{
    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++)
        if (strcmp(defaults[i].kind, kind) == 0) {
            *title = defaults[i].title;
            *text = defaults[i].text;
            return 1;
        }
    return 0;
}

static int collect(const bson_t *doc, void *ud)
{
    nf_push_templates *t = ud;
    if (t->n == PUSH_TEMPLATES_MAX)
        return 1;
    bson_copy_to(doc, &t->docs[t->n++]);
    if (cm_bson_str(doc, "locale", "")[0] != '\0')
        t->localized = 1;
    return 0;
}

cm_err nf_push_templates_load(nf_ctx *ctx, const char *tenant, nf_push_templates **out)
{
    nf_push_templates *t = calloc(1, sizeof(*t));
    bson_t f = BSON_INITIALIZER;
    cm_err rc;

    if (t == NULL)
        return CM_ENOMEM;
    BSON_APPEND_UTF8(&f, "tenant", tenant);
    BSON_APPEND_UTF8(&f, "channel", "push");
    rc = cm_mongo_find(ctx->db, NF_COLL_TEMPLATES, &f, NULL, collect, t);
    bson_destroy(&f);
    if (rc != CM_OK) {
        nf_push_templates_destroy(t);
        return rc;
    }
    if (t->n == PUSH_TEMPLATES_MAX)
        cm_warn("templates: tenant %s has more than %d push templates; the rest are not used",
                tenant, PUSH_TEMPLATES_MAX);
    *out = t;
    return CM_OK;
}

int nf_push_templates_localized(const nf_push_templates *t)
{
    return t != NULL && t->localized;
}

void nf_push_templates_destroy(nf_push_templates *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n; i++)
        bson_destroy(&t->docs[i]);
    free(t);
}

static const bson_t *find(const nf_push_templates *t, const char *kind, const char *locale)
{
    for (size_t i = 0; t && i < t->n; i++)
        if (strcmp(cm_bson_str(&t->docs[i], "kind", ""), kind) == 0 &&
            strcmp(cm_bson_str(&t->docs[i], "locale", ""), locale) == 0)
            return &t->docs[i];
    return NULL;
}

/* Renders `title_src` and `text_src` into `out` (a preview-length title on one line and
 * body, NF_PREVIEW_CHARS each, so any payload fits the providers' 4 KB); CM_EINVAL when one
 * does not render. */
static cm_err render(const char *title_src, const char *text_src, const nf_vars *vars,
                     nf_push_text *out)
{
    char why[200], *title = NULL, *text = NULL;
    cm_err rc;

    if ((rc = nf_template_render(title_src, vars, 0, &title, why, sizeof(why))) != CM_OK ||
        (rc = nf_template_render(text_src, vars, 0, &text, why, sizeof(why))) != CM_OK) {
        free(title);
        return rc;
    }
    for (char *s = title; *s; s++)
        if (*s == '\r' || *s == '\n')
            *s = ' ';
    nf_preview(title[0] ? title : "New message", out->title, sizeof(out->title));
    nf_preview(text, out->body, sizeof(out->body));
    free(title);
    free(text);
    return CM_OK;
}

cm_err nf_push_render(const nf_push_templates *t, const char *kind, const char *locale,
                      const nf_vars *vars, nf_push_text *out)
{
    char tries[3][40];
    size_t ntries = nf_locale_fallbacks(locale, tries);
    const char *title, *text;

    for (size_t i = 0; i < ntries; i++) {
        const bson_t *doc = find(t, kind, tries[i]);
        if (doc == NULL)
            continue;
        if (render(cm_bson_str(doc, "title", ""), cm_bson_str(doc, "text", ""), vars, out) ==
            CM_OK)
            return CM_OK;
        cm_warn("templates: %s/push/%s does not render; the default is used", kind, tries[i]);
    }
    if (!nf_push_template_default(kind, &title, &text))
        return CM_EINVAL;
    return render(title, text, vars, out);
}

typedef struct locales {
    const char *const *users;
    size_t n;
    char (*out)[36];
} locales;

static int collect_locale(const bson_t *doc, void *ud)
{
    locales *l = ud;
    const char *user = cm_bson_str(doc, "user_id", "");
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->users[i], user) == 0)
            snprintf(l->out[i], sizeof(l->out[i]), "%s", cm_bson_str(doc, "locale", ""));
    return 0;
}

cm_err nf_locales_load(nf_ctx *ctx, const char *tenant, const char *const *users, size_t n,
                       char (*out)[36])
{
    bson_t f = BSON_INITIALIZER, in, arr;
    locales l = {users, n, out};
    char idx[24];
    cm_err rc;

    for (size_t i = 0; i < n; i++)
        out[i][0] = '\0';
    if (n == 0)
        return CM_OK;
    BSON_APPEND_UTF8(&f, "tenant", tenant);
    BSON_APPEND_DOCUMENT_BEGIN(&f, "user_id", &in);
    BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
    for (size_t i = 0; i < n; i++) {
        snprintf(idx, sizeof(idx), "%zu", i);
        BSON_APPEND_UTF8(&arr, idx, users[i]);
    }
    bson_append_array_end(&in, &arr);
    bson_append_document_end(&f, &in);
    rc = cm_mongo_find(ctx->db, NF_COLL_CONTACTS, &f, NULL, collect_locale, &l);
    bson_destroy(&f);
    return rc;
}
