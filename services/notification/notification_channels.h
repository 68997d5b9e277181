/* notification_channels.h - the e-mail and SMS channels of the notification service and the
 * wording of every channel: users' contact addresses (notification_contacts.c), the templates
 * a message is rendered from (notification_templates.c: defaults in code, a tenant's own over
 * HTTP; notification_push_templates.c: push titles and bodies), and the sender
 * thread that delivers queued e-mail over SMTP with retries and the DLQ
 * (notification_email.c). Deliveries share the push collection (NF_COLL_DELIVERIES) with
 * `platform` "email", so GET /v1/notifications/{id}/deliveries lists them beside the pushes. */
#ifndef NOTIFICATION_CHANNELS_H
#define NOTIFICATION_CHANNELS_H

#include "notification.h"

#define NF_COLL_CONTACTS "contacts"   /* per user: email, phone, locale (the tenant's backend) */
#define NF_COLL_TEMPLATES "templates" /* per tenant, type, channel, locale */
#define NF_EMAIL_MAX 254              /* RFC 5321 section 4.5.3.1.3 (path) less the brackets */
#define NF_TEMPLATE_MAX 16384         /* bytes of one template field */

/* --- contacts (notification_contacts.c) -------------------------------------------------- */

/* A user's contact addresses, as the tenant's backend set them. */
typedef struct nf_contact {
    char email[NF_EMAIL_MAX + 1]; /* "" when none */
    char phone[20];               /* E.164 (+ and 8..15 digits), "" when none */
    char locale[36];              /* BCP 47 tag, e.g. "fr-FR"; "" when none */
} nf_contact;

/* Reads the contact of `user` of `tenant` into `c` (all "" when none stored). CM_EIO when
 * MongoDB failed. */
cm_err nf_contact_load(nf_ctx *ctx, const char *tenant, const char *user, nf_contact *c);

/* 1 when `s` looks like a deliverable address: local@domain, 3..254 printable ASCII, one '@',
 * a dot in the domain, no spaces, quotes, angle brackets, commas or CR/LF. */
int nf_email_valid(const char *s);

/* 1 when `s` is an E.164 number: '+' then 8..15 digits, the first not 0. */
int nf_phone_valid(const char *s);

/* PUT /v1/notifications/contacts/{user_id} (tenant_admin) */
void nf_contacts_put(cm_http_req *req, void *ud);
/* GET /v1/notifications/contacts/{user_id} (tenant_admin or the user) */
void nf_contacts_get(cm_http_req *req, void *ud);
/* DELETE /v1/notifications/contacts/{user_id} (tenant_admin) */
void nf_contacts_delete(cm_http_req *req, void *ud);

/* --- templates (notification_templates.c) ------------------------------------------------ */

/* A growing string: `p` is NUL-terminated (or NULL while empty), `oom` set once an
 * allocation failed (everything after is dropped). The owner frees `p`. */
typedef struct nf_buf {
    char *p;
    size_t len, cap;
    int oom;
} nf_buf;

/* Appends `n` bytes of `s`. */
void nf_buf_add(nf_buf *b, const char *s, size_t n);

/* Appends `s` escaped for HTML text and attribute values (& < > " ', as OWASP advises). */
void nf_buf_add_html(nf_buf *b, const char *s);

/* The variables a template may use, by name ({{name}}). A NULL value renders as "". */
typedef enum nf_var {
    NF_VAR_SENDER_NAME,        /* who caused it (the sender's user id) */
    NF_VAR_TEXT,               /* the message's text (preview) or the custom notification's body */
    NF_VAR_TITLE,              /* the custom notification's title */
    NF_VAR_CONVERSATION_TITLE, /* the conversation's title when known */
    NF_VAR_CONVERSATION_ID,
    NF_VAR_MESSAGE_ID,
    NF_VAR_LINK,               /* where the app shows it (NOTIFY_APP_URL based), or "" */
    NF_VAR_TOKEN,              /* verification / password reset token */
    NF_VAR_EXPIRES_AT,         /* when the token expires (RFC 3339) */
    NF_VAR_USER_ID,            /* the recipient */
    NF_VAR_EMAIL,              /* the recipient's address */
    NF_VAR_ITEMS,              /* the digest's list of conversations and messages */
    NF_VAR_COUNT
} nf_var;

typedef struct nf_vars {
    const char *v[NF_VAR_COUNT];
    const char *html[NF_VAR_COUNT]; /* HTML made by the service from escaped values, used as
                                       is in HTML instead of v[] (NULL: escape v[]) */
} nf_vars;

/* The templated kinds: the notification types, then the account e-mails. */
#define NF_KIND_VERIFICATION "verification"
#define NF_KIND_PASSWORD_RESET "password_reset"
#define NF_KIND_DIGEST "digest"

/* A rendered message (heap strings, nf_rendered_cleanup frees them). */
typedef struct nf_rendered {
    char *subject; /* e-mail subject */
    char *text;    /* e-mail text/plain body */
    char *html;    /* e-mail text/html body, variables HTML-escaped */
} nf_rendered;

void nf_rendered_cleanup(nf_rendered *r); /* accepts a zeroed struct */

/* The locales a template is looked up for, most specific first, into `tries`: `locale`
 * (NULL or "" none), its language ("fr-CA" -> "fr"), then "" (the tenant's default).
 * Returns how many (1..3). */
size_t nf_locale_fallbacks(const char *locale, char tries[3][40]);

/* Renders template source `src` with `vars` into a new heap string `*out`: each {{name}}
 * (spaces allowed inside the braces) is replaced by the variable's value, HTML-escaped (& < > "
 * ') when `html`. CM_EINVAL with the reason in `why` (size n) when `src` has an unclosed
 * "{{" or names an unknown variable; CM_ENOMEM. */
cm_err nf_template_render(const char *src, const nf_vars *vars, int html, char **out,
                          char *why, size_t n);

/* Renders the e-mail of `kind` (a type name or NF_KIND_*) for `tenant` in `locale` (may be
 * "" or NULL): the tenant's template for (kind, email, locale), else its template for (kind,
 * email, language of locale), else for (kind, email, ""), else the default in code. CM_EIO
 * when MongoDB failed; a stored template that no longer renders falls back to the default. */
cm_err nf_template_email(nf_ctx *ctx, const char *tenant, const char *kind, const char *locale,
                         const nf_vars *vars, nf_rendered *out);

/* Renders the SMS text of `kind` for `tenant` in `locale` into a new heap string `*out`, with
 * the same fallbacks as nf_template_email (channel "sms"). CM_EIO when MongoDB failed. */
cm_err nf_template_sms(nf_ctx *ctx, const char *tenant, const char *kind, const char *locale,
                       const nf_vars *vars, char **out);

/* --- push wording (notification_push_templates.c) ----------------------------------------- */

/* A tenant's push templates (channel "push": title and text per kind and locale), read in
 * one query so a batch of pushes renders without a query per recipient. */
typedef struct nf_push_templates nf_push_templates;

/* A rendered push: title (one line) and body, each at most NF_PREVIEW_CHARS characters. */
typedef struct nf_push_text {
    char title[NF_PREVIEW_CHARS * 4 + 4];
    char body[NF_PREVIEW_CHARS * 4 + 4];
} nf_push_text;

/* The default push template of `kind` (a notification type) into `*title` and `*text`
 * (static strings); 0 when `kind` is not pushed (the account e-mails, the digest). */
int nf_push_template_default(const char *kind, const char **title, const char **text);

/* Reads the push templates of `tenant` into `*out` (nf_push_templates_destroy frees it).
 * CM_EIO when MongoDB failed; CM_ENOMEM. */
cm_err nf_push_templates_load(nf_ctx *ctx, const char *tenant, nf_push_templates **out);

/* 1 when some template of `t` is for a locale other than "default" (the recipients' locales
 * are then worth reading). */
int nf_push_templates_localized(const nf_push_templates *t);

void nf_push_templates_destroy(nf_push_templates *t); /* accepts NULL */

/* Renders the push of `kind` in `locale` (may be "" or NULL) from `t` (may be NULL: the
 * defaults): the template for (kind, locale), else for the language of locale, else for
 * "default", else the default in code; a stored template that no longer renders falls back
 * to the next. An empty title becomes "New message". CM_EINVAL for a kind without a push
 * default. */
cm_err nf_push_render(const nf_push_templates *t, const char *kind, const char *locale,
                      const nf_vars *vars, nf_push_text *out);

/* The contact locale of each of `users[0..n)` of `tenant` ("" when none) into `out[i]`, in
 * one query. CM_EIO when MongoDB failed. */
cm_err nf_locales_load(nf_ctx *ctx, const char *tenant, const char *const *users, size_t n,
                       char (*out)[36]);

/* PUT /v1/notifications/templates/{kind}/{channel}/{locale} (tenant_admin) */
void nf_templates_put(cm_http_req *req, void *ud);
/* GET /v1/notifications/templates/{kind}/{channel}/{locale} (tenant_admin) */
void nf_templates_get(cm_http_req *req, void *ud);
/* DELETE /v1/notifications/templates/{kind}/{channel}/{locale} (tenant_admin) */
void nf_templates_delete(cm_http_req *req, void *ud);

/* --- the e-mail sender (notification_email.c) -------------------------------------------- */

/* nf_mail: declared in notification.h */

/* E-mail configuration (environment: main.c). An empty `smtp_url` turns e-mail off: what
 * would be mailed gets the decision "email_unconfigured". */
typedef struct nf_mail_config {
    const char *smtp_url;      /* smtp://host:port or smtps://host:port */
    const char *from;          /* sender address */
    const char *from_name;     /* sender display name */
    const char *user, *password; /* SMTP AUTH, "" for none */
    int require_tls;           /* refuse a connection STARTTLS did not protect */
    const char *app_url;       /* base of the links in messages ("" none) */
    long retry_ms[NF_RETRIES_MAX]; /* as push: 1 s, 5 s, 30 s, +-20 % jitter, then the DLQ */
    int nretries;
    long timeout_ms;           /* one SMTP exchange */
    const char *dlq_topic;     /* notifications.dlq */
    int64_t digest_after_ms;   /* unread this long -> in the digest (0: no digests) */
    /* SMS through a Twilio-compatible API; an empty sms_sid turns SMS off. */
    const char *sms_base;      /* e.g. https://api.twilio.com */
    const char *sms_sid;       /* account sid (Basic auth user, in the path) */
    const char *sms_token;     /* auth token (Basic auth password) */
    const char *sms_from;      /* sender number (E.164) or messaging service */
    const char *sms_callback_base; /* public base URL the provider reports delivery to ("" none) */
    long sms_per_tenant;       /* SMS per tenant per hour */
    long sms_per_recipient;    /* SMS per recipient number per hour */
    int64_t escalate_after_ms; /* priority: unread this long -> e-mail, as long again -> SMS */
} nf_mail_config;

/* Starts the e-mail sender thread; `cfg` is copied (its strings must outlive it). */
cm_err nf_mail_start(nf_ctx *ctx, const nf_mail_config *cfg, nf_mail **out);
void nf_mail_stop(nf_mail *m); /* accepts NULL */

/* The channel decisions for notification `it`, whose recipient has preferences `p`: when the
 * user wants e-mail for its type, has an address and has not muted the conversation, one
 * e-mail delivery is queued (deferred to the end of quiet hours), unique per (event, user,
 * channel) so a replay queues nothing twice. Every decision is recorded (channel "email").
 * CM_EIO when MongoDB failed. */
cm_err nf_channels_plan(nf_ctx *ctx, const nf_push_item *it, const nf_prefs *p);

/* user.verification_requested and user.password_reset_requested (topic `users`): the token
 * mailed to data.email, once per event. CM_EINVAL (with `why`) for an event without its
 * fields; CM_EIO when MongoDB failed. */
cm_err nf_account_email(nf_ctx *ctx, const char *event_id, const char *type, const char *tenant,
                        const cJSON *data, char *why, size_t n);

/* Queues one e-mail delivery of rendered `r` to `to`, unique per (tenant, event_id, user,
 * "email") so a replay queues nothing twice, due at `at` (Unix ms), and wakes the sender.
 * `notification_id`, `conversation_id`, `message_id` may be NULL. CM_EIO when MongoDB failed. */
cm_err nf_mail_queue(nf_ctx *ctx, const char *tenant, const char *event_id, const char *user,
                     const char *notification_id, const char *kind, const char *conversation_id,
                     const char *message_id, const char *to, const nf_rendered *r, int64_t at);

/* Wakes the sender thread (queued work); accepts NULL. */
void nf_mail_kick(nf_mail *m);

/* --- SMS (notification_sms.c) ------------------------------------------------------------- */

/* The SMS decision for notification `it` to contact `c` (the user turned SMS on for its
 * type): muted, no phone, over the tenant's or the number's hourly budget (Redis; fails
 * closed), or one SMS delivery queued, unique per (event, user, channel). Every decision is
 * recorded (channel "sms"). `cfg` NULL or without sid: "sms_unconfigured". */
cm_err nf_sms_plan(nf_ctx *ctx, const nf_mail_config *cfg, const nf_push_item *it,
                   const nf_contact *c);

/* Sends `body` to `to` through the Twilio-compatible API of `cfg`, asking for delivery
 * reports at `callback` (a full URL; NULL: none). `*status` the HTTP status (0 when
 * unreachable), `sid` (size sid_n) the provider's message sid when accepted ("" when its
 * answer had none), `why` (size n) a one-line explanation. CM_OK when accepted; CM_EAGAIN
 * for 429, 5xx or an unreachable provider; CM_EINVAL for a refusal. */
cm_err nf_sms_send(const nf_mail_config *cfg, const char *to, const char *body,
                   const char *callback, long *status, char *sid, size_t sid_n, char *why,
                   size_t n);

/* The StatusCallback URL of `tenant`: `base` + "/v1/callbacks/twilio/" + tenant, into `out`
 * (size n). CM_ETOOBIG when it does not fit. */
cm_err nf_sms_callback_url(const char *base, const char *tenant, char *out, size_t n);

/* --- escalation (notification_escalation.c) ---------------------------------------------- */

#define NF_COLL_ESCALATIONS "escalations" /* per (event, user): the next stage and when */

/* Schedules the escalation of priority notification `it`: unless read within `after_ms`, it
 * is mailed, then as long again later texted. Unique per (event, user). CM_EIO when MongoDB
 * failed. */
cm_err nf_escalation_note(nf_ctx *ctx, const nf_push_item *it, int64_t after_ms);

/* One pass over the due escalations (the sender thread calls it), each claimed by a Redis
 * lease. */
void nf_escalation_round(nf_ctx *ctx, const nf_mail_config *cfg, const char *instance);

/* --- digests (notification_digest.c) ------------------------------------------------------ */

#define NF_COLL_DIGESTS "digests" /* per user: an open digest window (since, due_at) */
#define NF_COLL_READS "reads"     /* per (conversation, user): read_seq, from conversation.read */

/* Opens the user's digest window for notification `it` unless one is open: it is mailed
 * `digest_after_ms` later with whatever is still unread then. CM_EIO when MongoDB failed. */
cm_err nf_digest_note(nf_ctx *ctx, const nf_push_item *it, int64_t after_ms);

/* One pass over the due windows (the sender thread calls it): each is claimed by a Redis
 * lease; the user's unread, not yet digested message notifications are mailed in one
 * e-mail (template kind "digest") and marked digested; none left (all read): nothing is
 * sent. The window closes either way. */
void nf_digest_round(nf_ctx *ctx, const char *instance, const char *app_url);

/* conversation.read (topic `conversations`): the reader's notifications of that conversation
 * up to read_seq are read (inbox, unread count, digests). CM_EINVAL (with `why`) for an event
 * without conversation_id, user_id or read_seq. */
cm_err nf_conversation_read(nf_ctx *ctx, const char *tenant, const cJSON *data, char *why,
                            size_t n);

/* Adds to a deliveries filter what keeps the push sender to push deliveries (platform not
 * "email" nor "sms"). */
void nf_push_only(bson_t *filter);

/* The sentence the diagnostics show for `decision` on `channel` (email, sms); never NULL. */
const char *nf_channel_explain(const char *channel, const char *decision);

/* Prometheus lines of the sender. */
void nf_mail_metrics(nf_mail *m, void (*emit)(void *ctx, const char *text), void *ctx);

#endif
