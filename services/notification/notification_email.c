/* notification_email.c - the e-mail channel: which notifications are mailed (preferences,
 * address, mute, quiet hours; every decision recorded), the account e-mails of the users
 * topic (verification, password reset), and the sender thread that delivers queued e-mail
 * over SMTP (common/smtp.h): a Redis lease per delivery, the states queued -> sending -> sent,
 * failed (a 5xx refusal) or dead_lettered (after the retries at the push delays, 1 s, 5 s,
 * 30 s with jitter: notification.failed on notifications.dlq).
 *
 * One delivery per (event, user, channel), created with a unique key, so a replayed event
 * mails nothing twice; the Message-ID is the delivery's, the same on every attempt. The
 * rendered message is kept in the delivery until it is sent (a redrive needs it), then its
 * bodies are removed: a verification mail carries a secret token. */
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/event.h"
#include "common/log.h"
#include "common/smtp.h"
#include "common/uuid.h"
#include "notification_channels.h"

#define LEASE_MS 60000 /* a claimed delivery is this sender's for this long */
#define BATCH 32       /* deliveries taken per round */
/* Idle, the sender sleeps until the earliest queued delivery falls due or a kick (a delivery
 * queued or redriven by this process); it looks again at least every IDLE_MAX_MS for what
 * another instance queued or left, and every LEASED_MS while the due ones are leased by
 * another sender (a killed one's lease runs LEASE_MS). Before, it scanned every 100 ms:
 * a read of the whole deliveries collection on FerretDB. */
#define IDLE_MAX_MS 5000
#define LEASED_MS 1000

struct nf_mail {
    nf_ctx *ctx;
    nf_mail_config cfg;
    char instance[33];
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop, kick;
    int64_t next_digest_ms; /* the next pass over the digest windows (sender thread only) */
    int64_t next_scan_ms;   /* the next look at the deliveries without a kick (sender thread) */
    atomic_long sent, retried, dead_lettered, failed, scans;
};

void nf_push_only(bson_t *filter)
{
    bson_t nin, arr;
    BSON_APPEND_DOCUMENT_BEGIN(filter, "platform", &nin);
    BSON_APPEND_ARRAY_BEGIN(&nin, "$nin", &arr);
    BSON_APPEND_UTF8(&arr, "0", "email");
    BSON_APPEND_UTF8(&arr, "1", "sms");
    bson_append_array_end(&nin, &arr);
    bson_append_document_end(filter, &nin);
}

void nf_mail_kick(nf_mail *m)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->mu);
    m->kick = 1;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

cm_err nf_mail_queue(nf_ctx *ctx, const char *tenant, const char *event_id,
                          const char *user, const char *notification_id, const char *kind,
                          const char *conversation_id, const char *message_id, const char *to,
                          const nf_rendered *r, int64_t at)
{
    char id[CM_UUID_STRLEN], k[600];
    bson_t d = BSON_INITIALIZER;
    cm_err rc;

    if ((rc = nf_dedupe_key(tenant, event_id, user, "email", k, sizeof(k))) != CM_OK ||
        (rc = cm_uuid_v7(id)) != CM_OK)
        return rc;
    BSON_APPEND_UTF8(&d, "_id", id);
    BSON_APPEND_UTF8(&d, "k", k);
    BSON_APPEND_UTF8(&d, "tenant", tenant);
    BSON_APPEND_UTF8(&d, "user_id", user);
    BSON_APPEND_UTF8(&d, "event_id", event_id);
    BSON_APPEND_UTF8(&d, "notification_id", notification_id ? notification_id : "");
    BSON_APPEND_UTF8(&d, "type", kind);
    if (conversation_id)
        BSON_APPEND_UTF8(&d, "conversation_id", conversation_id);
    if (message_id)
        BSON_APPEND_UTF8(&d, "message_id", message_id);
    BSON_APPEND_UTF8(&d, "platform", "email");
    BSON_APPEND_UTF8(&d, "device_id", "");
    BSON_APPEND_UTF8(&d, "to", to);
    BSON_APPEND_UTF8(&d, "subject", r->subject);
    BSON_APPEND_UTF8(&d, "text", r->text);
    if (r->html)
        BSON_APPEND_UTF8(&d, "html", r->html);
    BSON_APPEND_UTF8(&d, "state", "queued");
    BSON_APPEND_INT32(&d, "attempts", 0);
    BSON_APPEND_INT64(&d, "next_at", at);
    BSON_APPEND_DATE_TIME(&d, "created_at", cm_clock_now_ms());
    rc = cm_mongo_insert(ctx->ddb, NF_COLL_DELIVERIES, &d);
    bson_destroy(&d);
    if (rc == CM_OK)
        nf_mail_kick(ctx->mail);
    return rc == CM_ECONFLICT ? CM_OK : rc;
}

/* 1 when e-mail is on (an SMTP server is configured). */
static int email_on(const nf_ctx *ctx)
{
    return ctx->mail != NULL && ctx->mail->cfg.smtp_url[0] != '\0';
}

/* The link of a conversation in the app, or "" without NOTIFY_APP_URL. */
static void conversation_link(const nf_mail *m, const char *cid, char *out, size_t n)
{
    out[0] = '\0';
    if (m && m->cfg.app_url[0] && cid)
        snprintf(out, n, "%s/conversations/%s", m->cfg.app_url, cid);
}

/* The e-mail part of nf_channels_plan. */
static cm_err email_plan(nf_ctx *ctx, const nf_push_item *it, const nf_prefs *p)
{
    nf_type t = nf_type_parse(it->type);
    nf_push_item e = *it;
    nf_contact c;
    nf_vars v = {{0}, {0}};
    nf_rendered r = {0};
    char link[512], detail[160];
    cm_err rc;

    e.channel = "email";
    if (t == NF_TYPE_COUNT)
        return CM_OK;
    if (!p->email[t]) {
        /* Not mailed one by one: into the digest when the user wants one and it is about a
         * message (e-mail is opt-in per type: off is the default, not worth a record). */
        if (p->email_digest && email_on(ctx) && ctx->mail->cfg.digest_after_ms > 0 &&
            it->message_id && it->muted_until <= cm_clock_now_ms())
            return nf_digest_note(ctx, it, ctx->mail->cfg.digest_after_ms);
        return CM_OK;
    }
    if (it->muted_until > cm_clock_now_ms()) {
        nf_decision(ctx, &e, "muted", NULL, "the conversation is muted: no e-mail");
        return CM_OK;
    }
    if (!email_on(ctx)) {
        nf_decision(ctx, &e, "email_unconfigured", NULL, "no SMTP server is configured (SMTP_URL)");
        return CM_OK;
    }
    if ((rc = nf_contact_load(ctx, it->tenant, it->user, &c)) != CM_OK)
        return rc;
    if (c.email[0] == '\0') {
        nf_decision(ctx, &e, "no_address", NULL, "the user has no e-mail address (contacts)");
        return CM_OK;
    }
    conversation_link(ctx->mail, it->conversation_id, link, sizeof(link));
    v.v[NF_VAR_SENDER_NAME] = it->actor;
    v.v[NF_VAR_TEXT] = it->text;
    v.v[NF_VAR_TITLE] = it->title;
    v.v[NF_VAR_CONVERSATION_TITLE] = t == NF_TYPE_ADDED ? it->text : NULL;
    v.v[NF_VAR_CONVERSATION_ID] = it->conversation_id;
    v.v[NF_VAR_MESSAGE_ID] = it->message_id;
    v.v[NF_VAR_LINK] = link;
    v.v[NF_VAR_USER_ID] = it->user;
    v.v[NF_VAR_EMAIL] = c.email;
    if ((rc = nf_template_email(ctx, it->tenant, it->type, c.locale, &v, &r)) != CM_OK)
        return rc == CM_EINVAL ? CM_OK : rc;
    rc = nf_mail_queue(ctx, it->tenant, it->event_id, it->user, it->notification_id, it->type,
                     it->conversation_id, it->message_id, c.email, &r,
                     it->quiet_until > 0 ? it->quiet_until : cm_clock_now_ms());
    nf_rendered_cleanup(&r);
    if (rc != CM_OK)
        return rc;
    if (it->quiet_until > 0) {
        char until[CM_RFC3339_LEN];
        cm_clock_rfc3339(it->quiet_until, until);
        snprintf(detail, sizeof(detail), "quiet hours: the e-mail waits until %s", until);
        nf_decision(ctx, &e, "quiet_hours", NULL, detail);
    } else {
        nf_decision(ctx, &e, "queued", NULL, "e-mail queued");
    }
    nf_mail_kick(ctx->mail);
    return CM_OK;
}

cm_err nf_channels_plan(nf_ctx *ctx, const nf_push_item *it, const nf_prefs *p)
{
    nf_type t = nf_type_parse(it->type);
    nf_contact c;
    cm_err rc;

    if (t == NF_TYPE_COUNT)
        return CM_OK;
    if (it->priority && ctx->mail && ctx->mail->cfg.escalate_after_ms > 0 &&
        (rc = nf_escalation_note(ctx, it, ctx->mail->cfg.escalate_after_ms)) != CM_OK)
        return rc;
    if ((rc = email_plan(ctx, it, p)) != CM_OK || !p->sms[t])
        return rc;
    if ((rc = nf_contact_load(ctx, it->tenant, it->user, &c)) != CM_OK)
        return rc;
    return nf_sms_plan(ctx, ctx->mail ? &ctx->mail->cfg : NULL, it, &c);
}

static const char *str_of(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

cm_err nf_account_email(nf_ctx *ctx, const char *event_id, const char *type, const char *tenant,
                        const cJSON *data, char *why, size_t n)
{
    const char *user = str_of(data, "user_id"), *email = str_of(data, "email"),
               *token = str_of(data, "token"), *expires = str_of(data, "expires_at");
    const char *kind = strcmp(type, "user.verification_requested") == 0 ? NF_KIND_VERIFICATION
                                                                        : NF_KIND_PASSWORD_RESET;
    nf_push_item e = {0};
    nf_contact c;
    nf_vars v = {{0}, {0}};
    nf_rendered r = {0};
    char link[700] = "";
    cm_err rc;

    if (user == NULL || !cm_user_id_valid(user) || email == NULL || !nf_email_valid(email) ||
        token == NULL || expires == NULL) {
        snprintf(why, n, "%s without a valid user_id, email, token or expires_at", type);
        return CM_EINVAL;
    }
    e.tenant = tenant;
    e.user = user;
    e.event_id = event_id;
    e.notification_id = "";
    e.channel = "email";
    if (!email_on(ctx)) {
        nf_decision(ctx, &e, "email_unconfigured", NULL, "no SMTP server is configured (SMTP_URL)");
        return CM_OK;
    }
    if ((rc = nf_contact_load(ctx, tenant, user, &c)) != CM_OK)
        return rc;
    if (ctx->mail->cfg.app_url[0])
        snprintf(link, sizeof(link), "%s/%s?token=%s", ctx->mail->cfg.app_url,
                 strcmp(kind, NF_KIND_VERIFICATION) == 0 ? "verify-email" : "reset-password",
                 token);
    v.v[NF_VAR_TOKEN] = token;
    v.v[NF_VAR_EXPIRES_AT] = expires;
    v.v[NF_VAR_LINK] = link;
    v.v[NF_VAR_USER_ID] = user;
    v.v[NF_VAR_EMAIL] = email;
    if ((rc = nf_template_email(ctx, tenant, kind, c.locale, &v, &r)) != CM_OK)
        return rc == CM_EINVAL ? CM_OK : rc;
    /* To the address the event names: the one being verified, or the account's. */
    rc = nf_mail_queue(ctx, tenant, event_id, user, NULL, kind, NULL, NULL, email, &r,
                     cm_clock_now_ms());
    nf_rendered_cleanup(&r);
    if (rc == CM_OK) {
        nf_decision(ctx, &e, "queued", NULL, kind);
        nf_mail_kick(ctx->mail);
    }
    return rc;
}

const char *nf_channel_explain(const char *channel, const char *decision)
{
    static const struct {
        const char *d, *text;
    } words[] = {
        {"queued", "e-mail queued for the user's address"},
        {"sent", "mailed: the SMTP server accepted it"},
        {"muted", "not mailed: the user muted the conversation"},
        {"no_address", "not mailed: the user has no e-mail address (contacts)"},
        {"email_unconfigured", "not mailed: this deployment has no SMTP server (SMTP_URL)"},
        {"quiet_hours", "e-mail deferred to the end of the user's quiet hours (not dropped)"},
        {"provider_error", "not mailed: the SMTP server refused it or kept failing (see deliveries)"},
        {"delivered", "mailed and delivered: the provider reported it delivered"},
        {"bounced", "mailed but bounced: the provider reported it undeliverable"},
    }, sms[] = {
        {"queued", "SMS queued for the user's phone"},
        {"sent", "texted: the SMS provider accepted it"},
        {"muted", "no SMS: the user muted the conversation"},
        {"no_phone", "no SMS: the user has no phone number (contacts)"},
        {"sms_unconfigured", "no SMS: this deployment has no SMS provider (SMS_ACCOUNT_SID)"},
        {"rate_limited", "no SMS: the tenant's or the number's hourly SMS budget is spent (SMS pumping protection)"},
        {"quiet_hours", "SMS deferred to the end of the user's quiet hours (not dropped)"},
        {"provider_error", "no SMS: the provider refused it or kept failing (see deliveries)"},
        {"delivered", "texted and delivered: the provider reported it delivered"},
        {"bounced", "texted but undelivered: the provider reported it failed"},
    }, esc[] = {
        {"scheduled", "priority: escalated to e-mail, then SMS, unless read in time"},
        {"acknowledged", "escalation stopped: the user read it"},
        {"escalated_email", "escalated: still unread, e-mailed"},
        {"escalated_sms", "escalated: still unread after the e-mail, texted"},
        {"escalation_skipped", "escalation step skipped (no address or no server): the next one follows"},
    };
    if (strcmp(channel, "escalation") == 0) {
        for (size_t i = 0; i < sizeof(esc) / sizeof(esc[0]); i++)
            if (strcmp(esc[i].d, decision) == 0)
                return esc[i].text;
        return decision;
    }
    if (strcmp(channel, "sms") == 0) {
        for (size_t i = 0; i < sizeof(sms) / sizeof(sms[0]); i++)
            if (strcmp(sms[i].d, decision) == 0)
                return sms[i].text;
        return decision;
    }
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strcmp(words[i].d, decision) == 0)
            return words[i].text;
    return decision;
}

/* --- the sender -------------------------------------------------------------------------- */

static int64_t retry_delay(const nf_mail *m, int n)
{
    long base = m->cfg.retry_ms[n - 1];
    char hex[3];
    if (cm_random_hex(hex, 1) != CM_OK)
        return base;
    return base + (long)((double)base * 0.4 * ((double)strtol(hex, NULL, 16) / 255.0 - 0.5));
}

static void dead_letter(nf_mail *m, const bson_t *d, int attempts, const char *why)
{
    const char *user = cm_bson_str(d, "user_id", ""), *did = cm_bson_str(d, "_id", "");
    cJSON *data = cJSON_CreateObject();
    cm_kafka_header h[1] = {{"error", why}};
    char id[CM_UUID_STRLEN + 16], *ev = NULL;

    if (data == NULL)
        return;
    snprintf(id, sizeof(id), "%s.%d", did, attempts);
    cJSON_AddStringToObject(data, "delivery_id", did);
    if (cm_bson_str(d, "notification_id", "")[0])
        cJSON_AddStringToObject(data, "notification_id", cm_bson_str(d, "notification_id", ""));
    cJSON_AddStringToObject(data, "user_id", user);
    cJSON_AddStringToObject(data, "platform", cm_bson_str(d, "platform", ""));
    if (cm_bson_str(d, "message_id", NULL))
        cJSON_AddStringToObject(data, "message_id", cm_bson_str(d, "message_id", ""));
    cJSON_AddNumberToObject(data, "attempts", attempts);
    cJSON_AddStringToObject(data, "error", why);
    if (cm_event_build(id, "notification.failed", "/notification", user,
                       cm_bson_str(d, "tenant", ""), cm_clock_now_ms(), data, &ev) != CM_OK)
        return;
    if (cm_kafka_produce(m->ctx->kafka, m->cfg.dlq_topic, user, strlen(user), ev, strlen(ev), h,
                         1, NULL) != CM_OK)
        cm_error("email: delivery %s not dead-lettered", did);
    free(ev);
}

static void set_state(nf_mail *m, const char *id, const char *state)
{
    bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, set;
    BSON_APPEND_UTF8(&f, "_id", id);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_UTF8(&set, "state", state);
    bson_append_document_end(&u, &set);
    (void)cm_mongo_update(m->ctx->ddb, NF_COLL_DELIVERIES, &f, &u, 0, 0, NULL);
    bson_destroy(&f);
    bson_destroy(&u);
}

/* One attempt of e-mail delivery `d`: "sending", the SMTP exchange, then one update that
 * records the attempt and the state it leads to. */
static void attempt(nf_mail *m, const bson_t *d)
{
    const char *id = cm_bson_str(d, "_id", "");
    int n = (int)cm_bson_int(d, "attempts", 0) + 1;
    char why[300] = "", msgid[CM_UUID_STRLEN + 32], sid[80] = "", callback[600];
    long reply = 0;
    const char *state, *outcome, *decision = NULL;
    int64_t next = 0, now;
    bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, set, push, h, un;
    cm_smtp_server srv = {m->cfg.smtp_url, m->cfg.from,     m->cfg.from_name,
                          m->cfg.user,     m->cfg.password, m->cfg.timeout_ms,
                          m->cfg.require_tls};
    cm_smtp_message msg;
    cm_err rc;

    set_state(m, id, "sending");
    snprintf(msgid, sizeof(msgid), "%s@notification.chat", id);
    msg.to = cm_bson_str(d, "to", "");
    msg.subject = cm_bson_str(d, "subject", "");
    msg.text = cm_bson_str(d, "text", "");
    msg.html = cm_bson_str(d, "html", NULL);
    msg.message_id = msgid;
    if (strcmp(cm_bson_str(d, "platform", ""), "sms") == 0) {
        const char *cb = NULL;
        if (m->cfg.sms_callback_base[0] &&
            nf_sms_callback_url(m->cfg.sms_callback_base, cm_bson_str(d, "tenant", ""), callback,
                                sizeof(callback)) == CM_OK)
            cb = callback;
        rc = m->cfg.sms_sid[0]
                 ? nf_sms_send(&m->cfg, msg.to, msg.text, cb, &reply, sid, sizeof(sid), why,
                               sizeof(why))
                 : (snprintf(why, sizeof(why), "no SMS provider is configured"), CM_EINVAL);
    }
    else if (m->cfg.smtp_url[0])
        rc = cm_smtp_send(&srv, &msg, &reply, why, sizeof(why));
    else
        rc = (snprintf(why, sizeof(why), "no SMTP server is configured"), CM_EINVAL);
    now = cm_clock_now_ms();
    if (rc == CM_OK) {
        state = outcome = decision = "sent";
        atomic_fetch_add(&m->sent, 1);
    } else if (rc == CM_EAGAIN && n <= m->cfg.nretries) {
        state = "queued";
        outcome = "provider_error";
        next = now + retry_delay(m, n);
        atomic_fetch_add(&m->retried, 1);
    } else if (rc == CM_EAGAIN) {
        state = "dead_lettered";
        outcome = decision = "provider_error";
        atomic_fetch_add(&m->dead_lettered, 1);
        dead_letter(m, d, n, why);
    } else {
        state = "failed";
        outcome = decision = "provider_error";
        atomic_fetch_add(&m->failed, 1);
    }
    BSON_APPEND_UTF8(&f, "_id", id);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_UTF8(&set, "state", state);
    BSON_APPEND_INT32(&set, "attempts", n);
    BSON_APPEND_INT64(&set, "next_at", next);
    if (rc == CM_OK) {
        /* What the provider's later reports name it by (notification_callbacks.c): the SMS
         * provider's message sid, or the Message-ID this e-mail was sent with. */
        if (strcmp(cm_bson_str(d, "platform", ""), "sms") == 0) {
            if (sid[0])
                BSON_APPEND_UTF8(&set, "provider_id", sid);
        } else {
            BSON_APPEND_UTF8(&set, "provider_id", msgid);
        }
    }
    bson_append_document_end(&u, &set);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$push", &push);
    BSON_APPEND_DOCUMENT_BEGIN(&push, "history", &h);
    BSON_APPEND_INT32(&h, "attempt", n);
    BSON_APPEND_DATE_TIME(&h, "at", now);
    BSON_APPEND_UTF8(&h, "outcome", outcome);
    BSON_APPEND_INT32(&h, "status", (int32_t)reply);
    BSON_APPEND_UTF8(&h, "detail", why);
    bson_append_document_end(&push, &h);
    bson_append_document_end(&u, &push);
    if (rc == CM_OK) {
        /* Sent: the bodies (a token, a message's text) are no longer needed here. */
        BSON_APPEND_DOCUMENT_BEGIN(&u, "$unset", &un);
        BSON_APPEND_UTF8(&un, "text", "");
        BSON_APPEND_UTF8(&un, "html", "");
        bson_append_document_end(&u, &un);
    }
    if (cm_mongo_update(m->ctx->ddb, NF_COLL_DELIVERIES, &f, &u, 0, 0, NULL) != CM_OK)
        cm_warn("email: attempt %d of delivery %s (%s) not recorded", n, id, state);
    bson_destroy(&f);
    bson_destroy(&u);
    if (decision)
        nf_delivery_decision(m->ctx, d, decision, why);
    if (strcmp(state, "failed") == 0)
        nf_delivery_event(m->ctx, d, "failed", why);
}

typedef struct due {
    bson_t docs[BATCH];
    size_t n;
    int64_t now, next; /* next: the first next_at after now (INT64_MAX: none read) */
} due;

/* The documents come by next_at: those due are kept, the first one not due ends the read. */
static int collect_due(const bson_t *doc, void *ud)
{
    due *q = ud;
    int64_t at = cm_bson_int(doc, "next_at", 0);
    if (at > q->now) {
        q->next = at;
        return 1;
    }
    if (q->n == BATCH)
        return 1;
    bson_copy_to(doc, &q->docs[q->n++]);
    return 0;
}

/* Under the lease, whether delivery `d` is still as the scan read it (not attempted since by
 * a sender whose lease ended between that read and ours): never sent twice from a stale copy. */
static int still_due(nf_mail *m, const bson_t *d)
{
    bson_t f = BSON_INITIALIZER;
    int64_t n = 0;
    BSON_APPEND_UTF8(&f, "_id", cm_bson_str(d, "_id", ""));
    BSON_APPEND_INT32(&f, "attempts", (int32_t)cm_bson_int(d, "attempts", 0));
    BSON_APPEND_UTF8(&f, "state", cm_bson_str(d, "state", ""));
    if (cm_mongo_count(m->ctx->ddb, NF_COLL_DELIVERIES, &f, &n) != CM_OK)
        n = 0;
    bson_destroy(&f);
    return n == 1;
}

/* One round: the due e-mail and SMS deliveries, each claimed by a Redis lease. "sending" ones
 * are taken too: one left so by a sender that died mid-attempt is sent again once its lease
 * runs out (at least once); a live sender still holds the lease of its own. One query, by
 * next_at: it also tells when the next one falls due. Returns how many were attempted and
 * sets m->next_scan_ms to when to look again without a kick. */
static size_t round_once(nf_mail *m)
{
    bson_t f = BSON_INITIALIZER, opts = BSON_INITIALIZER, sort;
    int64_t now = cm_clock_now_ms();
    due q = {.n = 0, .now = now, .next = INT64_MAX};
    size_t done = 0;

    {
        bson_t in, arr;
        BSON_APPEND_DOCUMENT_BEGIN(&f, "state", &in);
        BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
        BSON_APPEND_UTF8(&arr, "0", "queued");
        BSON_APPEND_UTF8(&arr, "1", "sending");
        bson_append_array_end(&in, &arr);
        bson_append_document_end(&f, &in);
    }
    {
        bson_t in, arr;
        BSON_APPEND_DOCUMENT_BEGIN(&f, "platform", &in);
        BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
        BSON_APPEND_UTF8(&arr, "0", "email");
        BSON_APPEND_UTF8(&arr, "1", "sms");
        bson_append_array_end(&in, &arr);
        bson_append_document_end(&f, &in);
    }
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "next_at", 1);
    bson_append_document_end(&opts, &sort);
    BSON_APPEND_INT64(&opts, "limit", BATCH + 1); /* + the first not due */
    atomic_fetch_add(&m->scans, 1);
    m->next_scan_ms = now + IDLE_MAX_MS;
    if (cm_mongo_find(m->ctx->ddb, NF_COLL_DELIVERIES, &f, &opts, collect_due, &q) != CM_OK) {
        m->next_scan_ms = now + LEASED_MS; /* the store is unwell: not in a tight loop */
    } else {
        if (q.next != INT64_MAX && q.next < m->next_scan_ms)
            m->next_scan_ms = q.next;
        if (q.n > 0 && now + LEASED_MS < m->next_scan_ms)
            m->next_scan_ms = now + LEASED_MS; /* due but leased by another sender */
        for (size_t i = 0; i < q.n; i++) {
            char key[80];
            snprintf(key, sizeof(key), "nf:delivery:%s", cm_bson_str(&q.docs[i], "_id", ""));
            if (cm_redis_lock(m->ctx->redis, key, m->instance, LEASE_MS) == CM_OK) {
                if (still_due(m, &q.docs[i])) {
                    attempt(m, &q.docs[i]);
                    done++;
                }
                cm_redis_unlock(m->ctx->redis, key, m->instance);
            }
        }
    }
    for (size_t i = 0; i < q.n; i++)
        bson_destroy(&q.docs[i]);
    bson_destroy(&f);
    bson_destroy(&opts);
    return done;
}

static void *run(void *arg)
{
    nf_mail *m = arg;
    int scan = 1; /* at start: what a crash left */
    pthread_mutex_lock(&m->mu);
    while (!m->stop) {
        size_t done = 0;
        int64_t now, wake;
        m->kick = 0;
        pthread_mutex_unlock(&m->mu);
        if (scan)
            done = round_once(m);
        if (cm_clock_now_ms() >= m->next_digest_ms) {
            if (m->cfg.digest_after_ms > 0)
                nf_digest_round(m->ctx, m->instance, m->cfg.app_url);
            if (m->cfg.escalate_after_ms > 0)
                nf_escalation_round(m->ctx, &m->cfg, m->instance);
            m->next_digest_ms = cm_clock_now_ms() + 500;
        }
        pthread_mutex_lock(&m->mu);
        if (done > 0) {
            scan = 1; /* maybe more due: at once */
            continue;
        }
        /* Retries and quiet hours fall due by the clock, new deliveries kick. */
        wake = m->next_scan_ms;
        if ((m->cfg.digest_after_ms > 0 || m->cfg.escalate_after_ms > 0) &&
            m->next_digest_ms < wake)
            wake = m->next_digest_ms;
        now = cm_clock_now_ms();
        if (!m->kick && !m->stop && wake > now) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += (time_t)((wake - now) / 1000);
            ts.tv_nsec += (long)((wake - now) % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&m->cv, &m->mu, &ts);
        }
        scan = m->kick || cm_clock_now_ms() >= m->next_scan_ms;
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

cm_err nf_mail_start(nf_ctx *ctx, const nf_mail_config *cfg, nf_mail **out)
{
    nf_mail *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return CM_ENOMEM;
    m->ctx = ctx;
    m->cfg = *cfg;
    if (cm_random_hex(m->instance, 16) != CM_OK) {
        free(m);
        return CM_EIO;
    }
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    if (pthread_create(&m->thread, NULL, run, m) != 0) {
        pthread_mutex_destroy(&m->mu);
        pthread_cond_destroy(&m->cv);
        free(m);
        return CM_EIO;
    }
    *out = m;
    return CM_OK;
}

void nf_mail_stop(nf_mail *m)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->mu);
    m->stop = 1;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
    pthread_join(m->thread, NULL);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    free(m);
}

void nf_mail_metrics(nf_mail *m, void (*emit)(void *ctx, const char *text), void *ctx)
{
    char buf[640];
    if (m == NULL)
        return;
    snprintf(buf, sizeof(buf),
             "# HELP notification_email_total E-mail attempts by outcome.\n"
             "# TYPE notification_email_total counter\n"
             "notification_email_total{outcome=\"sent\"} %ld\n"
             "notification_email_total{outcome=\"retried\"} %ld\n"
             "notification_email_total{outcome=\"dead_lettered\"} %ld\n"
             "notification_email_total{outcome=\"failed\"} %ld\n",
             atomic_load(&m->sent), atomic_load(&m->retried), atomic_load(&m->dead_lettered),
             atomic_load(&m->failed));
    emit(ctx, buf);
    snprintf(buf, sizeof(buf),
             "# HELP notification_email_scans_total Reads of the due e-mail and SMS deliveries.\n"
             "# TYPE notification_email_scans_total counter\n"
             "notification_email_scans_total %ld\n",
             atomic_load(&m->scans));
    emit(ctx, buf);
}
