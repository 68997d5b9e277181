/* notification_sms.c - the SMS channel: a Twilio-compatible REST API (POST
 * {SMS_BASE_URL}/2010-04-01/Accounts/{sid}/Messages.json, HTTP Basic auth with the account
 * sid and auth token, a form body To/From/Body and, when SMS_STATUS_CALLBACK_BASE_URL is set, a
 * StatusCallback URL of the tenant that Twilio reports delivery to: notification_callbacks.c),
 * to the phone number the tenant's backend set
 * (contacts), for the types the user turned SMS on for. Texts cost money and are the target
 * of SMS pumping (fraudsters making a service text premium numbers), so every SMS first
 * passes two fixed-window counters in Redis, per tenant and per recipient number (per hour),
 * and fails closed when Redis cannot count; each decision is recorded for the diagnostics.
 * Queued SMS deliveries are sent by the e-mail sender thread (notification_email.c) with the
 * same retries, DLQ and redrive. */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "common/clock.h"
#include "common/httpc.h"
#include "common/log.h"
#include "common/uuid.h"
#include "notification_channels.h"

#define SMS_BODY_MAX 1600 /* characters Twilio accepts in one Body */

/* Appends `s` percent-encoded for application/x-www-form-urlencoded (unreserved characters
 * of RFC 3986 kept, space as %20) to `out` at `*at` (size n); 0 when it does not fit. */
static int form_add(char *out, size_t n, size_t *at, const char *name, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    int w = snprintf(out + *at, n - *at, "%s%s=", *at ? "&" : "", name);
    if (w < 0 || (size_t)w >= n - *at)
        return 0;
    *at += (size_t)w;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (*at + 4 >= n)
            return 0;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            out[(*at)++] = (char)c;
        } else {
            out[(*at)++] = '%';
            out[(*at)++] = hex[c >> 4];
            out[(*at)++] = hex[c & 15];
        }
    }
    out[*at] = '\0';
    return 1;
}

/* Copies the message sid of Twilio's answer (JSON {"sid": "SM...", ...}) into `sid` (size
 * n); "" when there is none or it is not 2..64 letters and digits. */
static void answer_sid(const char *answer, char *sid, size_t n)
{
    cJSON *o = cJSON_Parse(answer);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "sid");
    size_t len = cJSON_IsString(v) ? strlen(v->valuestring) : 0;

    sid[0] = '\0';
    if (len >= 2 && len <= 64 && len < n) {
        for (size_t i = 0; i < len; i++)
            if (!isalnum((unsigned char)v->valuestring[i]))
                goto out;
        memcpy(sid, v->valuestring, len + 1);
    }
out:
    cJSON_Delete(o);
}

cm_err nf_sms_send(const nf_mail_config *cfg, const char *to, const char *body,
                   const char *callback, long *status, char *sid, size_t sid_n, char *why,
                   size_t n)
{
    char url[600], cred[300], auth[500], *form = NULL, *answer = NULL;
    unsigned char b64[420];
    size_t at = 0, len,
           cap = strlen(body) * 3 + strlen(to) * 3 + strlen(cfg->sms_from) * 3 +
                 (callback ? strlen(callback) * 3 : 0) + 80;
    cm_err rc;

    *status = 0;
    sid[0] = '\0';
    if ((form = malloc(cap)) == NULL)
        return CM_ENOMEM;
    form[0] = '\0';
    if (!form_add(form, cap, &at, "To", to) || !form_add(form, cap, &at, "From", cfg->sms_from) ||
        !form_add(form, cap, &at, "Body", body) ||
        (callback && !form_add(form, cap, &at, "StatusCallback", callback))) {
        free(form);
        snprintf(why, n, "the SMS does not fit its form");
        return CM_EINVAL;
    }
    snprintf(url, sizeof(url), "%s/2010-04-01/Accounts/%s/Messages.json", cfg->sms_base,
             cfg->sms_sid);
    snprintf(cred, sizeof(cred), "%s:%s", cfg->sms_sid, cfg->sms_token);
    EVP_EncodeBlock(b64, (const unsigned char *)cred, (int)strlen(cred));
    snprintf(auth, sizeof(auth), "Authorization: Basic %s", (const char *)b64);
    {
        const char *hdr[] = {auth, "Content-Type: application/x-www-form-urlencoded", NULL};
        cm_httpc_request r = {.method = "POST", .url = url, .headers = hdr, .body = form,
                              .body_len = at, .timeout_ms = cfg->timeout_ms, .max = 65536};
        rc = cm_httpc_request_do(&r, &answer, &len, status);
    }
    free(form);
    if (rc != CM_OK) {
        snprintf(why, n, "the SMS provider is unreachable (%s)", cm_strerror(rc));
        return CM_EAGAIN;
    }
    /* Twilio: 201 Created with the message; 429 and 5xx are worth a retry; other 4xx (21211
     * invalid To, 21610 unsubscribed recipient...) will not work later either. */
    if (*status >= 200 && *status < 300) {
        answer_sid(answer, sid, sid_n);
        snprintf(why, n, "accepted (%ld)%s%s", *status, sid[0] ? ": " : "", sid);
        rc = CM_OK;
    } else if (*status == 429 || *status >= 500) {
        snprintf(why, n, "the SMS provider answered %ld", *status);
        rc = CM_EAGAIN;
    } else {
        snprintf(why, n, "the SMS provider refused it (%ld): %.160s", *status, answer);
        rc = CM_EINVAL;
    }
    free(answer);
    return rc;
}

/* Counts one SMS against the recipient's and then the tenant's hourly budget. CM_OK when
 * both allow it; CM_ELIMIT with the reason in `why`; CM_EIO when Redis cannot count. */
static cm_err budget(nf_ctx *ctx, const nf_mail_config *cfg, const char *tenant,
                     const char *phone, char *why, size_t n)
{
    const struct {
        const char *what, *unit, *setting;
        long limit;
    } b[2] = {{"recipient", "to this number", "SMS_RECIPIENT_PER_HOUR", cfg->sms_per_recipient},
              {"tenant", "of this tenant", "SMS_TENANT_PER_HOUR", cfg->sms_per_tenant}};

    for (int i = 0; i < 2; i++) {
        char key[200];
        int64_t count = 0, left = 0;
        if (i == 0)
            snprintf(key, sizeof(key), "nf:sms:r:%s:%s", tenant, phone);
        else
            snprintf(key, sizeof(key), "nf:sms:t:%s", tenant);
        if (cm_redis_window_incr(ctx->redis, key, 3600000, &count, &left) != CM_OK) {
            snprintf(why, n, "the SMS budgets could not be counted (Redis): not sent");
            return CM_EIO;
        }
        if (count > b[i].limit) {
            snprintf(why, n, "%s limit: %" PRId64 " SMS %s this hour, at most %ld (%s); the "
                     "window ends in %" PRId64 " s", b[i].what, count, b[i].unit, b[i].limit,
                     b[i].setting, (left + 999) / 1000);
            return CM_ELIMIT;
        }
    }
    return CM_OK;
}

cm_err nf_sms_plan(nf_ctx *ctx, const nf_mail_config *cfg, const nf_push_item *it,
                   const nf_contact *c)
{
    nf_push_item e = *it;
    nf_vars v = {{0}, {0}};
    char id[CM_UUID_STRLEN], k[600], why[300], *text = NULL;
    bson_t d = BSON_INITIALIZER;
    cm_err rc;

    e.channel = "sms";
    if (it->muted_until > cm_clock_now_ms()) {
        nf_decision(ctx, &e, "muted", NULL, "the conversation is muted: no SMS");
        return CM_OK;
    }
    if (cfg == NULL || cfg->sms_sid[0] == '\0') {
        nf_decision(ctx, &e, "sms_unconfigured", NULL, "no SMS provider is configured (SMS_ACCOUNT_SID)");
        return CM_OK;
    }
    if (c->phone[0] == '\0') {
        nf_decision(ctx, &e, "no_phone", NULL, "the user has no phone number (contacts)");
        return CM_OK;
    }
    /* A replay finds its delivery queued: the budgets are not charged twice. */
    if ((rc = nf_dedupe_key(it->tenant, it->event_id, it->user, "sms", k, sizeof(k))) != CM_OK)
        return rc;
    {
        bson_t f = BSON_INITIALIZER, old;
        BSON_APPEND_UTF8(&f, "k", k);
        rc = cm_mongo_find_one(ctx->ddb, NF_COLL_DELIVERIES, &f, NULL, &old);
        bson_destroy(&f);
        if (rc == CM_OK) {
            bson_destroy(&old);
            return CM_OK;
        }
        if (rc != CM_ENOTFOUND)
            return rc;
    }
    rc = budget(ctx, cfg, it->tenant, c->phone, why, sizeof(why));
    if (rc == CM_ELIMIT || rc == CM_EIO) {
        nf_decision(ctx, &e, "rate_limited", NULL, why);
        return CM_OK;
    }
    v.v[NF_VAR_SENDER_NAME] = it->actor;
    v.v[NF_VAR_TEXT] = it->text;
    v.v[NF_VAR_TITLE] = it->title;
    v.v[NF_VAR_CONVERSATION_TITLE] = strcmp(it->type, "added") == 0 ? it->text : NULL;
    v.v[NF_VAR_CONVERSATION_ID] = it->conversation_id;
    v.v[NF_VAR_MESSAGE_ID] = it->message_id;
    v.v[NF_VAR_USER_ID] = it->user;
    if ((rc = nf_template_sms(ctx, it->tenant, it->type, c->locale, &v, &text)) != CM_OK)
        return rc == CM_EINVAL ? CM_OK : rc;
    if (strlen(text) > SMS_BODY_MAX)
        text[SMS_BODY_MAX] = '\0'; /* may cut a character: Twilio counts characters, we bytes */
    if ((rc = cm_uuid_v7(id)) != CM_OK)
        goto out;
    BSON_APPEND_UTF8(&d, "_id", id);
    BSON_APPEND_UTF8(&d, "k", k);
    BSON_APPEND_UTF8(&d, "tenant", it->tenant);
    BSON_APPEND_UTF8(&d, "user_id", it->user);
    BSON_APPEND_UTF8(&d, "event_id", it->event_id);
    BSON_APPEND_UTF8(&d, "notification_id", it->notification_id);
    BSON_APPEND_UTF8(&d, "type", it->type);
    if (it->message_id)
        BSON_APPEND_UTF8(&d, "message_id", it->message_id);
    BSON_APPEND_UTF8(&d, "platform", "sms");
    BSON_APPEND_UTF8(&d, "device_id", "");
    BSON_APPEND_UTF8(&d, "to", c->phone);
    BSON_APPEND_UTF8(&d, "text", text);
    BSON_APPEND_UTF8(&d, "state", "queued");
    BSON_APPEND_INT32(&d, "attempts", 0);
    BSON_APPEND_INT64(&d, "next_at", it->quiet_until > 0 ? it->quiet_until : cm_clock_now_ms());
    BSON_APPEND_DATE_TIME(&d, "created_at", cm_clock_now_ms());
    rc = cm_mongo_insert(ctx->ddb, NF_COLL_DELIVERIES, &d);
    if (rc == CM_ECONFLICT)
        rc = CM_OK;
    if (rc == CM_OK) {
        nf_decision(ctx, &e, it->quiet_until > 0 ? "quiet_hours" : "queued", NULL,
                    it->quiet_until > 0 ? "quiet hours: the SMS waits for their end"
                                        : "SMS queued (within the tenant's and the number's budgets)");
        nf_mail_kick(ctx->mail);
    }
out:
    free(text);
    bson_destroy(&d);
    return rc;
}

cm_err nf_sms_callback_url(const char *base, const char *tenant, char *out, size_t n)
{
    int w = snprintf(out, n, "%s/v1/callbacks/twilio/%s", base, tenant);
    return w < 0 || (size_t)w >= n ? CM_ETOOBIG : CM_OK;
}
