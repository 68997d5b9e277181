/* notification_escalation.c - escalation of what the tenant marks priority (POST
 * /v1/notifications with "priority": true): pushed (and in-app) first; still unread
 * NOTIFY_ESCALATE_AFTER_S later, it is mailed; still unread as long again, it is texted.
 * Reading it (POST /v1/notifications/{id}/read, read_all) stops the escalation. Providers do
 * not tell us a push was seen, so "read" is the acknowledgement.
 *
 * One escalation per (event, user), created by a unique insert, each stage claimed by a Redis
 * lease; the e-mail and the SMS are deliveries keyed by (event, user, channel) like any other,
 * so a replay or a crash between two stages sends nothing twice, and a user who also gets
 * e-mail for custom notifications is not mailed twice. Every step is a recorded decision
 * (channel "escalation"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "notification_channels.h"

#define PER_PASS 16

cm_err nf_escalation_note(nf_ctx *ctx, const nf_push_item *it, int64_t after_ms)
{
    char id[600];
    bson_t d = BSON_INITIALIZER;
    cm_err rc;

    if (nf_dedupe_key(it->tenant, it->event_id, it->user, "escalation", id, sizeof(id)) != CM_OK)
        return CM_EINVAL;
    BSON_APPEND_UTF8(&d, "_id", id);
    BSON_APPEND_UTF8(&d, "tenant", it->tenant);
    BSON_APPEND_UTF8(&d, "user_id", it->user);
    BSON_APPEND_UTF8(&d, "event_id", it->event_id);
    BSON_APPEND_UTF8(&d, "notification_id", it->notification_id);
    BSON_APPEND_UTF8(&d, "type", it->type);
    BSON_APPEND_UTF8(&d, "actor_id", it->actor ? it->actor : "");
    BSON_APPEND_UTF8(&d, "title", it->title ? it->title : "");
    BSON_APPEND_UTF8(&d, "text", it->text ? it->text : "");
    BSON_APPEND_INT32(&d, "stage", 0); /* 0: e-mail next, 1: SMS next */
    BSON_APPEND_INT64(&d, "due_at", cm_clock_now_ms() + after_ms);
    rc = cm_mongo_insert(ctx->db, NF_COLL_ESCALATIONS, &d);
    bson_destroy(&d);
    if (rc == CM_OK) {
        nf_push_item e = *it;
        char detail[120];
        e.channel = "escalation";
        snprintf(detail, sizeof(detail), "priority: e-mail, then SMS, unless read within %lld s",
                 (long long)(after_ms / 1000));
        nf_decision(ctx, &e, "scheduled", NULL, detail);
    }
    return rc == CM_ECONFLICT ? CM_OK : rc;
}

/* 1 when notification `id` of `tenant` was read (or is gone: nothing left to escalate). */
static int was_read(nf_ctx *ctx, const char *tenant, const char *id, cm_err *rc)
{
    bson_t doc;
    int read = 1;

    *rc = cm_mongo_find_owned(ctx->db, NF_COLL_NOTIFICATIONS, id, tenant, NULL, &doc);
    if (*rc == CM_OK) {
        read = cm_bson_bool(&doc, "read", 0);
        bson_destroy(&doc);
    } else if (*rc == CM_ENOTFOUND) {
        *rc = CM_OK;
    }
    return read;
}

/* One due escalation: its next stage, then the escalation moves on or ends. */
static void one(nf_ctx *ctx, const nf_mail_config *cfg, const bson_t *x)
{
    nf_push_item it = {0};
    nf_contact c;
    int stage = (int)cm_bson_int(x, "stage", 0), read;
    bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, set;
    cm_err rc;

    it.tenant = cm_bson_str(x, "tenant", "");
    it.user = cm_bson_str(x, "user_id", "");
    it.event_id = cm_bson_str(x, "event_id", "");
    it.notification_id = cm_bson_str(x, "notification_id", "");
    it.type = cm_bson_str(x, "type", "custom");
    it.actor = cm_bson_str(x, "actor_id", "");
    it.title = cm_bson_str(x, "title", "");
    it.text = cm_bson_str(x, "text", "");
    it.channel = "escalation";
    BSON_APPEND_UTF8(&f, "_id", cm_bson_str(x, "_id", ""));
    read = was_read(ctx, it.tenant, it.notification_id, &rc);
    if (rc != CM_OK || (rc = nf_contact_load(ctx, it.tenant, it.user, &c)) != CM_OK)
        goto out;
    if (read) {
        nf_decision(ctx, &it, "acknowledged", NULL,
                    stage == 0 ? "read before the e-mail was due" : "read before the SMS was due");
        rc = cm_mongo_delete(ctx->db, NF_COLL_ESCALATIONS, &f, 0, NULL);
        goto out;
    }
    if (stage == 0) {
        nf_vars v = {{0}, {0}};
        nf_rendered r = {0};
        if (cfg->smtp_url[0] == '\0' || c.email[0] == '\0') {
            nf_decision(ctx, &it, "escalation_skipped", NULL,
                        c.email[0] ? "no SMTP server: straight to SMS" : "no e-mail address: straight to SMS");
        } else {
            v.v[NF_VAR_SENDER_NAME] = it.actor;
            v.v[NF_VAR_TEXT] = it.text;
            v.v[NF_VAR_TITLE] = it.title;
            v.v[NF_VAR_USER_ID] = it.user;
            v.v[NF_VAR_EMAIL] = c.email;
            if ((rc = nf_template_email(ctx, it.tenant, it.type, c.locale, &v, &r)) != CM_OK ||
                (rc = nf_mail_queue(ctx, it.tenant, it.event_id, it.user, it.notification_id,
                                    it.type, NULL, NULL, c.email, &r, cm_clock_now_ms())) !=
                    CM_OK) {
                nf_rendered_cleanup(&r);
                goto out;
            }
            nf_rendered_cleanup(&r);
            nf_decision(ctx, &it, "escalated_email", NULL, "unread: e-mailed");
        }
        BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
        BSON_APPEND_INT32(&set, "stage", 1);
        BSON_APPEND_INT64(&set, "due_at", cm_clock_now_ms() + cfg->escalate_after_ms);
        bson_append_document_end(&u, &set);
        rc = cm_mongo_update(ctx->db, NF_COLL_ESCALATIONS, &f, &u, 0, 0, NULL);
        goto out;
    }
    /* The SMS stage: budgets, phone and provider as for any SMS (decisions channel "sms"). */
    nf_decision(ctx, &it, "escalated_sms", NULL, "still unread: texted (see the sms decisions)");
    {
        nf_push_item s = it;
        s.channel = NULL;
        if ((rc = nf_sms_plan(ctx, cfg, &s, &c)) != CM_OK)
            goto out;
    }
    rc = cm_mongo_delete(ctx->db, NF_COLL_ESCALATIONS, &f, 0, NULL);
out:
    if (rc != CM_OK)
        cm_warn("escalation %s: stage %d not done (%s): tried again", cm_bson_str(x, "_id", ""),
                stage, cm_strerror(rc));
    bson_destroy(&f);
    bson_destroy(&u);
}

typedef struct due {
    bson_t docs[PER_PASS];
    size_t n;
} due;

static int collect(const bson_t *doc, void *ud)
{
    due *q = ud;
    if (q->n == PER_PASS)
        return 1;
    bson_copy_to(doc, &q->docs[q->n++]);
    return 0;
}

void nf_escalation_round(nf_ctx *ctx, const nf_mail_config *cfg, const char *instance)
{
    bson_t f = BSON_INITIALIZER, opts = BSON_INITIALIZER, lte;
    due q = {.n = 0};

    BSON_APPEND_DOCUMENT_BEGIN(&f, "due_at", &lte);
    BSON_APPEND_INT64(&lte, "$lte", cm_clock_now_ms());
    bson_append_document_end(&f, &lte);
    BSON_APPEND_INT64(&opts, "limit", PER_PASS);
    if (cm_mongo_find(ctx->db, NF_COLL_ESCALATIONS, &f, &opts, collect, &q) == CM_OK) {
        for (size_t i = 0; i < q.n; i++) {
            char key[700];
            snprintf(key, sizeof(key), "nf:escalation:%s", cm_bson_str(&q.docs[i], "_id", ""));
            if (cm_redis_lock(ctx->redis, key, instance, 60000) == CM_OK) {
                one(ctx, cfg, &q.docs[i]);
                cm_redis_unlock(ctx->redis, key, instance);
            }
        }
    }
    for (size_t i = 0; i < q.n; i++)
        bson_destroy(&q.docs[i]);
    bson_destroy(&f);
    bson_destroy(&opts);
}
