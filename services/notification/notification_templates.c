/* notification_templates.c - what a notification says on each channel: templates with
 * {{variables}} per tenant, kind (notification type or account e-mail), channel and locale,
 * rendered with HTML escaping where the channel is HTML, and the defaults shipped in code for
 * every kind. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "notification_channels.h"

static const char *const var_names[NF_VAR_COUNT] = {
    "sender_name", "text", "title", "conversation_title", "conversation_id", "message_id",
    "link", "token", "expires_at", "user_id", "email"};

/* The defaults: one per kind, e-mail (subject, text, HTML). */
static const struct {
    const char *kind, *subject, *text, *html;
} defaults[] = {
    {"mention", "{{sender_name}} mentioned you",
     "{{sender_name}} mentioned you:\n\n{{text}}\n\n{{link}}\n",
     "<p><b>{{sender_name}}</b> mentioned you:</p>\n<blockquote>{{text}}</blockquote>\n"
     "<p><a href=\"{{link}}\">Open the conversation</a></p>\n"},
    {"reply", "{{sender_name}} replied to you",
     "{{sender_name}} replied to you:\n\n{{text}}\n\n{{link}}\n",
     "<p><b>{{sender_name}}</b> replied to you:</p>\n<blockquote>{{text}}</blockquote>\n"
     "<p><a href=\"{{link}}\">Open the conversation</a></p>\n"},
    {"message", "New message from {{sender_name}}",
     "{{sender_name}} wrote:\n\n{{text}}\n\n{{link}}\n",
     "<p><b>{{sender_name}}</b> wrote:</p>\n<blockquote>{{text}}</blockquote>\n"
     "<p><a href=\"{{link}}\">Open the conversation</a></p>\n"},
    {"added", "{{sender_name}} added you to {{conversation_title}}",
     "{{sender_name}} added you to the conversation {{conversation_title}}.\n\n{{link}}\n",
     "<p><b>{{sender_name}}</b> added you to the conversation "
     "<b>{{conversation_title}}</b>.</p>\n<p><a href=\"{{link}}\">Open it</a></p>\n"},
    {"custom", "{{title}}", "{{text}}\n", "<h3>{{title}}</h3>\n<p>{{text}}</p>\n"},
    {NF_KIND_VERIFICATION, "Verify your e-mail address",
     "Confirm that {{email}} is your address with this code:\n\n{{token}}\n\n{{link}}\n\n"
     "It expires at {{expires_at}}. If you did not ask for it, ignore this e-mail.\n",
     "<p>Confirm that <b>{{email}}</b> is your address with this code:</p>\n"
     "<p><code>{{token}}</code></p>\n<p><a href=\"{{link}}\">Verify my address</a></p>\n"
     "<p>It expires at {{expires_at}}. If you did not ask for it, ignore this e-mail.</p>\n"},
    {NF_KIND_PASSWORD_RESET, "Reset your password",
     "Someone asked to reset the password of the account of {{email}}. The code:\n\n"
     "{{token}}\n\n{{link}}\n\nIt expires at {{expires_at}}. If it was not you, ignore this "
     "e-mail: the password stays as it is.\n",
     "<p>Someone asked to reset the password of the account of <b>{{email}}</b>. The code:</p>\n"
     "<p><code>{{token}}</code></p>\n<p><a href=\"{{link}}\">Choose a new password</a></p>\n"
     "<p>It expires at {{expires_at}}. If it was not you, ignore this e-mail: the password "
     "stays as it is.</p>\n"},
};

void nf_rendered_cleanup(nf_rendered *r)
{
    free(r->subject);
    free(r->text);
    free(r->html);
    r->subject = r->text = r->html = NULL;
}

typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static int put(buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (p == NULL)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

/* Appends `s`, escaped for HTML text and attribute values (OWASP's five characters). */
static int put_escaped(buf *b, const char *s)
{
    for (; *s; s++) {
        const char *e = NULL;
        switch (*s) {
        case '&': e = "&amp;"; break;
        case '<': e = "&lt;"; break;
        case '>': e = "&gt;"; break;
        case '"': e = "&quot;"; break;
        case '\'': e = "&#39;"; break;
        default: break;
        }
        if (e ? put(b, e, strlen(e)) : put(b, s, 1))
            return -1;
    }
    return 0;
}

cm_err nf_template_render(const char *src, const nf_vars *vars, int html, char **out,
                          char *why, size_t n)
{
    buf b = {0};
    const char *p = src;

    if (put(&b, "", 0))
        return CM_ENOMEM;
    while (*p) {
        const char *open = strstr(p, "{{"), *close, *a, *z;
        int v;
        if (open == NULL) {
            if (put(&b, p, strlen(p)))
                goto oom;
            break;
        }
        if (put(&b, p, (size_t)(open - p)))
            goto oom;
        if ((close = strstr(open + 2, "}}")) == NULL) {
            snprintf(why, n, "unclosed '{{' at character %zu", (size_t)(open - src));
            free(b.p);
            return CM_EINVAL;
        }
        for (a = open + 2; a < close && *a == ' '; a++)
            ;
        for (z = close; z > a && z[-1] == ' '; z--)
            ;
        for (v = 0; v < NF_VAR_COUNT; v++)
            if (strlen(var_names[v]) == (size_t)(z - a) && memcmp(var_names[v], a, (size_t)(z - a)) == 0)
                break;
        if (v == NF_VAR_COUNT) {
            snprintf(why, n,
                     "unknown variable '{{%.*s}}' (sender_name, text, title, conversation_title, "
                     "conversation_id, message_id, link, token, expires_at, user_id, email)",
                     (int)((z - a) > 40 ? 40 : (z - a)), a);
            free(b.p);
            return CM_EINVAL;
        }
        if (vars && vars->v[v] &&
            (html ? put_escaped(&b, vars->v[v]) : put(&b, vars->v[v], strlen(vars->v[v]))))
            goto oom;
        p = close + 2;
    }
    *out = b.p;
    return CM_OK;
oom:
    free(b.p);
    return CM_ENOMEM;
}

static int default_of(const char *kind)
{
    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++)
        if (strcmp(defaults[i].kind, kind) == 0)
            return (int)i;
    return -1;
}

/* Renders subject, text and html sources into `out`; CM_EINVAL when one does not render. */
static cm_err render3(const char *subject, const char *text, const char *html,
                      const nf_vars *vars, nf_rendered *out)
{
    char why[200];
    cm_err rc;

    memset(out, 0, sizeof(*out));
    if ((rc = nf_template_render(subject, vars, 0, &out->subject, why, sizeof(why))) != CM_OK ||
        (rc = nf_template_render(text, vars, 0, &out->text, why, sizeof(why))) != CM_OK ||
        (html && (rc = nf_template_render(html, vars, 1, &out->html, why, sizeof(why))) != CM_OK))
        nf_rendered_cleanup(out);
    /* A subject is one header line: line breaks a variable brought in become spaces. */
    for (char *s = out->subject; rc == CM_OK && s && *s; s++)
        if (*s == '\r' || *s == '\n')
            *s = ' ';
    return rc;
}

/* The stored template of (tenant, kind, channel, locale) into `doc`; CM_ENOTFOUND when none. */
static cm_err stored(nf_ctx *ctx, const char *tenant, const char *kind, const char *channel,
                     const char *locale, bson_t *doc)
{
    char id[300];
    bson_t f = BSON_INITIALIZER;
    cm_err rc;

    snprintf(id, sizeof(id), "%s|%s|%s|%s", tenant, kind, channel, locale);
    BSON_APPEND_UTF8(&f, "_id", id);
    rc = cm_mongo_find_one(ctx->db, NF_COLL_TEMPLATES, &f, NULL, doc);
    bson_destroy(&f);
    return rc;
}

cm_err nf_template_email(nf_ctx *ctx, const char *tenant, const char *kind, const char *locale,
                         const nf_vars *vars, nf_rendered *out)
{
    char tries[3][40];
    size_t ntries = 0;
    int d = default_of(kind);
    cm_err rc;

    if (locale && locale[0]) {
        snprintf(tries[ntries++], sizeof(tries[0]), "%s", locale);
        if (strchr(locale, '-')) /* "fr-CA" falls back to "fr" */
            snprintf(tries[ntries++], sizeof(tries[0]), "%.*s", (int)strcspn(locale, "-"), locale);
    }
    tries[ntries++][0] = '\0';
    for (size_t i = 0; i < ntries; i++) {
        bson_t doc;
        rc = stored(ctx, tenant, kind, "email", tries[i], &doc);
        if (rc == CM_ENOTFOUND)
            continue;
        if (rc != CM_OK)
            return rc;
        rc = render3(cm_bson_str(&doc, "subject", ""), cm_bson_str(&doc, "text", ""),
                     cm_bson_str(&doc, "html", NULL), vars, out);
        bson_destroy(&doc);
        if (rc == CM_OK)
            return CM_OK;
        cm_warn("templates: %s/%s/email/%s does not render; the default is used", tenant, kind,
                tries[i]);
    }
    if (d < 0)
        return CM_EINVAL;
    return render3(defaults[d].subject, defaults[d].text, defaults[d].html, vars, out);
}
