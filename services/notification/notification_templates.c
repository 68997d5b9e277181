/* notification_templates.c - what a notification says on each channel: templates with
 * {{variables}} per tenant, kind (notification type or account e-mail), channel and locale,
 * rendered with HTML escaping where the channel is HTML, and the defaults shipped in code for
 * every kind. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "common/utf8.h"
#include "notification_channels.h"

static const char *const var_names[NF_VAR_COUNT] = {
    "sender_name", "text", "title", "conversation_title", "conversation_id", "message_id",
    "link", "token", "expires_at", "user_id", "email", "items"};

/* The defaults: one per kind, e-mail (subject, text, HTML) and SMS (text). */
static const struct {
    const char *kind, *subject, *text, *html, *sms;
} defaults[] = {
    {"mention", "{{sender_name}} mentioned you",
     "{{sender_name}} mentioned you:\n\n{{text}}\n\n{{link}}\n",
     "<p><b>{{sender_name}}</b> mentioned you:</p>\n<blockquote>{{text}}</blockquote>\n"
     "<p><a href=\"{{link}}\">Open the conversation</a></p>\n",
     "{{sender_name}} mentioned you: {{text}}"},
    {"reply", "{{sender_name}} replied to you",
     "{{sender_name}} replied to you:\n\n{{text}}\n\n{{link}}\n",
     "<p><b>{{sender_name}}</b> replied to you:</p>\n<blockquote>{{text}}</blockquote>\n"
     "<p><a href=\"{{link}}\">Open the conversation</a></p>\n",
     "{{sender_name}} replied: {{text}}"},
    {"message", "New message from {{sender_name}}",
     "{{sender_name}} wrote:\n\n{{text}}\n\n{{link}}\n",
     "<p><b>{{sender_name}}</b> wrote:</p>\n<blockquote>{{text}}</blockquote>\n"
     "<p><a href=\"{{link}}\">Open the conversation</a></p>\n",
     "{{sender_name}}: {{text}}"},
    {"added", "{{sender_name}} added you to {{conversation_title}}",
     "{{sender_name}} added you to the conversation {{conversation_title}}.\n\n{{link}}\n",
     "<p><b>{{sender_name}}</b> added you to the conversation "
     "<b>{{conversation_title}}</b>.</p>\n<p><a href=\"{{link}}\">Open it</a></p>\n",
     "{{sender_name}} added you to {{conversation_title}}"},
    {"custom", "{{title}}", "{{text}}\n", "<h3>{{title}}</h3>\n<p>{{text}}</p>\n",
     "{{title}}: {{text}}"},
    {NF_KIND_DIGEST, "{{text}}",
     "While you were away: {{text}}.\n\n{{items}}\n{{link}}\n",
     "<p>While you were away: {{text}}.</p>\n{{items}}\n<p><a href=\"{{link}}\">Open the app</a></p>\n",
     "{{text}}"},
    {NF_KIND_VERIFICATION, "Verify your e-mail address",
     "Confirm that {{email}} is your address with this code:\n\n{{token}}\n\n{{link}}\n\n"
     "It expires at {{expires_at}}. If you did not ask for it, ignore this e-mail.\n",
     "<p>Confirm that <b>{{email}}</b> is your address with this code:</p>\n"
     "<p><code>{{token}}</code></p>\n<p><a href=\"{{link}}\">Verify my address</a></p>\n"
     "<p>It expires at {{expires_at}}. If you did not ask for it, ignore this e-mail.</p>\n",
     "Your verification code: {{token}}"},
    {NF_KIND_PASSWORD_RESET, "Reset your password",
     "Someone asked to reset the password of the account of {{email}}. The code:\n\n"
     "{{token}}\n\n{{link}}\n\nIt expires at {{expires_at}}. If it was not you, ignore this "
     "e-mail: the password stays as it is.\n",
     "<p>Someone asked to reset the password of the account of <b>{{email}}</b>. The code:</p>\n"
     "<p><code>{{token}}</code></p>\n<p><a href=\"{{link}}\">Choose a new password</a></p>\n"
     "<p>It expires at {{expires_at}}. If it was not you, ignore this e-mail: the password "
     "stays as it is.</p>\n",
     "Your password reset code: {{token}}"},
};

void nf_rendered_cleanup(nf_rendered *r)
{
    free(r->subject);
    free(r->text);
    free(r->html);
    r->subject = r->text = r->html = NULL;
}

void nf_buf_add(nf_buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2 + 64;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void nf_buf_add_html(nf_buf *b, const char *s)
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
        if (e)
            nf_buf_add(b, e, strlen(e));
        else
            nf_buf_add(b, s, 1);
    }
}

cm_err nf_template_render(const char *src, const nf_vars *vars, int html, char **out,
                          char *why, size_t n)
{
    nf_buf b = {0};
    const char *p = src;

    nf_buf_add(&b, "", 0);
    while (*p && !b.oom) {
        const char *open = strstr(p, "{{"), *close, *a, *z;
        int v;
        if (open == NULL) {
            nf_buf_add(&b, p, strlen(p));
            break;
        }
        nf_buf_add(&b, p, (size_t)(open - p));
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
                     "conversation_id, message_id, link, token, expires_at, user_id, email, items)",
                     (int)((z - a) > 40 ? 40 : (z - a)), a);
            free(b.p);
            return CM_EINVAL;
        }
        if (html && vars && vars->html[v])
            nf_buf_add(&b, vars->html[v], strlen(vars->html[v]));
        else if (html && vars && vars->v[v])
            nf_buf_add_html(&b, vars->v[v]);
        else if (vars && vars->v[v])
            nf_buf_add(&b, vars->v[v], strlen(vars->v[v]));
        p = close + 2;
    }
    if (b.oom) {
        free(b.p);
        return CM_ENOMEM;
    }
    *out = b.p;
    return CM_OK;
}

size_t nf_locale_fallbacks(const char *locale, char tries[3][40])
{
    size_t n = 0;
    if (locale && locale[0]) {
        snprintf(tries[n++], 40, "%.39s", locale);
        size_t lang = strcspn(locale, "-");
        if (locale[lang] == '-') /* "fr-CA" falls back to "fr" */
            snprintf(tries[n++], 40, "%.*s", (int)(lang < 39 ? lang : 39), locale);
    }
    tries[n++][0] = '\0';
    return n;
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
    size_t ntries = nf_locale_fallbacks(locale, tries);
    int d = default_of(kind);
    cm_err rc;

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

/* --- HTTP: a tenant's own templates ------------------------------------------------------- */

static int kind_known(const char *k)
{
    return default_of(k) >= 0;
}

/* "default" (the fallback for every locale) or a BCP 47 tag; written to `out` ("" default). */
static int locale_of(const char *s, char *out, size_t n)
{
    size_t len = s ? strlen(s) : 0;
    if (s && strcmp(s, "default") == 0) {
        out[0] = '\0';
        return 1;
    }
    if (len < 2 || len > 35 || len >= n ||
        strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != len ||
        strcspn(s, "-") < 2 || strcspn(s, "-") > 3 || s[len - 1] == '-' || strstr(s, "--"))
        return 0;
    memcpy(out, s, len + 1);
    return 1;
}

/* Checks the route's {kind}, {channel}, {locale}; answers 404 and returns 0 when unknown. */
static int route_of(cm_http_req *req, const cm_jwt_claims *c, const char **kind, char *locale,
                    size_t n, char *id, size_t idn)
{
    const char *channel = cm_http_param(req, "channel"), *loc = cm_http_param(req, "locale");
    *kind = cm_http_param(req, "kind");
    if (*kind == NULL || !kind_known(*kind)) {
        cm_http_problem(req, 404, "not-found", "Not Found",
                        "no template kind '%.40s' (mention, reply, message, added, custom, "
                        "verification, password_reset, digest)", *kind ? *kind : "");
        return 0;
    }
    if (channel == NULL || (strcmp(channel, "email") != 0 && strcmp(channel, "sms") != 0 &&
                            strcmp(channel, "push") != 0)) {
        cm_http_problem(req, 404, "not-found", "Not Found",
                        "no template channel '%.20s' (email, sms, push)", channel ? channel : "");
        return 0;
    }
    if (strcmp(channel, "push") == 0) {
        const char *t, *x;
        if (!nf_push_template_default(*kind, &t, &x)) {
            cm_http_problem(req, 404, "not-found", "Not Found",
                            "'%.40s' is not pushed: push templates are for mention, reply, "
                            "message, added and custom", *kind);
            return 0;
        }
    }
    if (!locale_of(loc, locale, n)) {
        cm_http_problem(req, 404, "not-found", "Not Found",
                        "the locale must be 'default' or a BCP 47 tag such as fr or pt-BR");
        return 0;
    }
    snprintf(id, idn, "%s|%s|%s|%s", c->tid, *kind, channel, locale);
    return 1;
}

static cJSON *template_json(const char *kind, const char *channel, const char *locale,
                            const char *subject, const char *text, const char *html,
                            const char *source)
{
    cJSON *o = cJSON_CreateObject();
    int email = strcmp(channel, "email") == 0;
    cJSON_AddStringToObject(o, "kind", kind);
    cJSON_AddStringToObject(o, "channel", channel);
    cJSON_AddStringToObject(o, "locale", locale[0] ? locale : "default");
    if (strcmp(channel, "push") == 0)
        cJSON_AddStringToObject(o, "title", subject); /* a push's title is its subject */
    if (email)
        cJSON_AddStringToObject(o, "subject", subject);
    cJSON_AddStringToObject(o, "text", text);
    if (email && html)
        cJSON_AddStringToObject(o, "html", html);
    else if (email)
        cJSON_AddNullToObject(o, "html");
    cJSON_AddStringToObject(o, "source", source);
    return o;
}

static int may_manage(cm_http_req *req, const cm_jwt_claims *c)
{
    if (cm_auth_can(c, "tenant.manage"))
        return 1;
    cm_http_problem(req, 403, "forbidden", "Forbidden",
                    "templates are the tenant's: the permission tenant.manage is needed");
    return 0;
}

/* Checks one template field: a string of 1..max bytes of UTF-8 that renders. */
static cm_err check_field(const cJSON *body, const char *key, int required, size_t max,
                          int one_line, const char **out, char *why, size_t n)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, key);
    char detail[200], *r = NULL;

    *out = NULL;
    if (v == NULL || (!required && cJSON_IsNull(v))) {
        if (!required)
            return CM_OK;
        snprintf(why, n, "field '%s' is required", key);
        return CM_EINVAL;
    }
    if (!cJSON_IsString(v) || v->valuestring[0] == '\0' || strlen(v->valuestring) > max ||
        !cm_utf8_valid(v->valuestring, strlen(v->valuestring))) {
        snprintf(why, n, "field '%s' must be a string of 1..%zu bytes of UTF-8", key, max);
        return CM_EINVAL;
    }
    if (one_line && strpbrk(v->valuestring, "\r\n")) {
        snprintf(why, n, "field '%s' must be one line", key);
        return CM_EINVAL;
    }
    if (nf_template_render(v->valuestring, NULL, 0, &r, detail, sizeof(detail)) != CM_OK) {
        snprintf(why, n, "field '%s': %s", key, detail);
        return CM_EINVAL;
    }
    free(r);
    *out = v->valuestring;
    return CM_OK;
}

/* PUT /v1/notifications/templates/{kind}/{channel}/{locale} {"subject", "text", "html"}
 * (email), {"text"} (sms) or {"title", "text"} (push) (tenant_admin): the tenant's template
 * for that kind, channel and locale ("default": every locale without its own). 200 with it as
 * stored; a template that does not render is 400. */
void nf_templates_put(cm_http_req *req, void *ud)
{
    static const char *const allowed[] = {"subject", "text", "html", NULL};
    static const char *const allowed_sms[] = {"text", NULL}; /* 1600: Twilio's Body limit */
    static const char *const allowed_push[] = {"title", "text", NULL};
    nf_ctx *ctx = ud;
    cm_jwt_claims c;
    cJSON *body;
    const char *kind, *subject, *text, *html, *channel;
    int sms, push;
    char locale[40], id[300], why[300];
    bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, set, un;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK || !may_manage(req, &c) ||
        !route_of(req, &c, &kind, locale, sizeof(locale), id, sizeof(id)) ||
        cm_http_json_body(req, &body) != CM_OK)
        goto out;
    channel = cm_http_param(req, "channel");
    sms = strcmp(channel, "sms") == 0;
    push = strcmp(channel, "push") == 0;
    subject = html = NULL;
    /* A push shows NF_PREVIEW_CHARS characters of title and body at most (the rendered
     * ones are cut there); its sources are kept short for the same reason. */
    if (cm_json_only_keys(body, sms ? allowed_sms : push ? allowed_push : allowed, why,
                          sizeof(why)) ||
        (push && check_field(body, "title", 1, 400, 1, &subject, why, sizeof(why))) ||
        (!sms && !push && check_field(body, "subject", 1, 998, 1, &subject, why, sizeof(why))) ||
        check_field(body, "text", 1, sms ? 1600 : push ? 2000 : NF_TEMPLATE_MAX, 0, &text, why,
                    sizeof(why)) ||
        (!sms && !push && check_field(body, "html", 0, NF_TEMPLATE_MAX, 0, &html, why,
                                      sizeof(why)))) {
        cm_http_reply_error(req, CM_EINVAL, why);
        goto out;
    }
    BSON_APPEND_UTF8(&f, "_id", id);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_UTF8(&set, "tenant", c.tid);
    BSON_APPEND_UTF8(&set, "kind", kind);
    BSON_APPEND_UTF8(&set, "channel", channel);
    BSON_APPEND_UTF8(&set, "locale", locale);
    if (subject)
        BSON_APPEND_UTF8(&set, push ? "title" : "subject", subject);
    BSON_APPEND_UTF8(&set, "text", text);
    if (html)
        BSON_APPEND_UTF8(&set, "html", html);
    BSON_APPEND_DATE_TIME(&set, "updated_at", cm_clock_now_ms());
    bson_append_document_end(&u, &set);
    if (html == NULL) {
        BSON_APPEND_DOCUMENT_BEGIN(&u, "$unset", &un);
        BSON_APPEND_UTF8(&un, "html", "");
        bson_append_document_end(&u, &un);
    }
    if ((rc = cm_mongo_update(ctx->db, NF_COLL_TEMPLATES, &f, &u, 1, 0, NULL)) != CM_OK) {
        cm_http_reply_error(req, rc, "the template could not be stored");
        goto out;
    }
    cm_http_reply_json(req, 200,
                       template_json(kind, channel, locale, subject, text, html, "tenant"));
out:
    bson_destroy(&f);
    bson_destroy(&u);
}

/* GET /v1/notifications/templates/{kind}/{channel}/{locale} (tenant_admin): the tenant's
 * template, or the default shipped in code ("source": "default") when it has none. */
void nf_templates_get(cm_http_req *req, void *ud)
{
    nf_ctx *ctx = ud;
    cm_jwt_claims c;
    const char *kind, *channel;
    char locale[40], id[300];
    bson_t f = BSON_INITIALIZER, doc;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK || !may_manage(req, &c) ||
        !route_of(req, &c, &kind, locale, sizeof(locale), id, sizeof(id)))
        goto out;
    BSON_APPEND_UTF8(&f, "_id", id);
    channel = cm_http_param(req, "channel");
    rc = cm_mongo_find_one(ctx->db, NF_COLL_TEMPLATES, &f, NULL, &doc);
    if (rc == CM_OK) {
        const char *subj = strcmp(channel, "push") == 0 ? "title" : "subject";
        cm_http_reply_json(req, 200,
                           template_json(kind, channel, locale, cm_bson_str(&doc, subj, ""),
                                         cm_bson_str(&doc, "text", ""),
                                         cm_bson_str(&doc, "html", NULL), "tenant"));
        bson_destroy(&doc);
    } else if (rc == CM_ENOTFOUND && strcmp(channel, "push") == 0) {
        const char *title = "", *text = "";
        (void)nf_push_template_default(kind, &title, &text); /* route_of checked the kind */
        cm_http_reply_json(req, 200, template_json(kind, channel, locale, title, text, NULL,
                                                   "default"));
    } else if (rc == CM_ENOTFOUND) {
        int d = default_of(kind);
        int sms = strcmp(channel, "sms") == 0;
        cm_http_reply_json(req, 200,
                           template_json(kind, channel, locale, defaults[d].subject,
                                         sms ? defaults[d].sms : defaults[d].text,
                                         defaults[d].html, "default"));
    } else {
        cm_http_reply_error(req, rc, "the template could not be read");
    }
out:
    bson_destroy(&f);
}

/* DELETE /v1/notifications/templates/{kind}/{channel}/{locale} (tenant_admin): back to the
 * default. 204; 404 when the tenant had no such template. */
void nf_templates_delete(cm_http_req *req, void *ud)
{
    nf_ctx *ctx = ud;
    cm_jwt_claims c;
    const char *kind;
    char locale[40], id[300];
    bson_t f = BSON_INITIALIZER;
    int64_t n = 0;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK || !may_manage(req, &c) ||
        !route_of(req, &c, &kind, locale, sizeof(locale), id, sizeof(id)))
        goto out;
    BSON_APPEND_UTF8(&f, "_id", id);
    if ((rc = cm_mongo_delete(ctx->db, NF_COLL_TEMPLATES, &f, 0, &n)) != CM_OK) {
        cm_http_reply_error(req, rc, "the template could not be deleted");
        goto out;
    }
    if (n == 0) {
        cm_http_problem(req, 404, "not-found", "Not Found",
                        "the tenant has no %s template for this channel and locale", kind);
        goto out;
    }
    cm_http_reply_json(req, 204, NULL);
out:
    bson_destroy(&f);
}

cm_err nf_template_sms(nf_ctx *ctx, const char *tenant, const char *kind, const char *locale,
                       const nf_vars *vars, char **out)
{
    char tries[3][40], why[200];
    size_t ntries = nf_locale_fallbacks(locale, tries);
    int d = default_of(kind);
    cm_err rc;

    for (size_t i = 0; i < ntries; i++) {
        bson_t doc;
        rc = stored(ctx, tenant, kind, "sms", tries[i], &doc);
        if (rc == CM_ENOTFOUND)
            continue;
        if (rc != CM_OK)
            return rc;
        rc = nf_template_render(cm_bson_str(&doc, "text", ""), vars, 0, out, why, sizeof(why));
        bson_destroy(&doc);
        if (rc == CM_OK)
            return CM_OK;
    }
    if (d < 0)
        return CM_EINVAL;
    return nf_template_render(defaults[d].sms, vars, 0, out, why, sizeof(why));
}
