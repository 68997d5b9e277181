/* notification_receipts.c - what happened to a delivery after the provider accepted it:
 * `delivered` and `bounced` as a provider reports them later (an e-mail bounce, an SMS
 * delivery report, a device that confirms it displayed the push), recorded on the delivery
 * with the report as one more entry of its attempts, and as a decision the diagnostics
 * explain, and published as notification.delivered. Reports come two ways, both through
 * nf_delivery_report here: the tenant's backend relays its provider's report with the
 * delivery id (the status endpoint below; an e-mail's Message-ID is <delivery id>@..., and GET
 * /v1/notifications/{id}/deliveries lists every delivery id of a notification), or the
 * provider calls this service itself in its own format (notification_callbacks.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/event.h"
#include "common/json.h"
#include "common/log.h"
#include "common/uuid.h"
#include "notification.h"

#define DETAIL_MAX 300 /* characters of a report's detail kept */

/* 1 when a delivery in state `from` may become `to`: only what the provider accepted
 * (sent) can be delivered or bounced, and a delivered e-mail can still bounce later (an
 * asynchronous bounce, RFC 3464 DSN, after the receiving server accepted it). */
static int transition_ok(const char *from, const char *to)
{
    if (strcmp(from, "sent") == 0)
        return 1;
    return strcmp(from, "delivered") == 0 && strcmp(to, "bounced") == 0;
}

/* The channel a delivery's decisions are recorded under. */
static const char *channel_of(const char *platform)
{
    if (strcmp(platform, "email") == 0 || strcmp(platform, "sms") == 0)
        return platform;
    return "push";
}

void nf_delivery_decision(nf_ctx *ctx, const bson_t *d, const char *decision,
                          const char *detail)
{
    nf_push_item it = {0};
    it.tenant = cm_bson_str(d, "tenant", "");
    it.user = cm_bson_str(d, "user_id", "");
    it.event_id = cm_bson_str(d, "event_id", "");
    it.notification_id = cm_bson_str(d, "notification_id", "");
    it.message_id = cm_bson_str(d, "message_id", NULL);
    it.channel = channel_of(cm_bson_str(d, "platform", ""));
    nf_decision(ctx, &it, decision,
                strcmp(it.channel, "push") == 0 ? cm_bson_str(d, "device_id", NULL) : NULL,
                detail);
}

cm_err nf_delivery_find(nf_ctx *ctx, cm_http_req *req, const char *tenant, const char *id,
                        bson_t *out)
{
    cm_err rc = cm_mongo_find_owned(ctx->ddb, NF_COLL_DELIVERIES, id, tenant, NULL, out);

    if (rc == CM_ENOTFOUND)
        cm_http_problem(req, 404, "not-found", "Not Found", "no delivery %s", id);
    else if (rc != CM_OK)
        cm_http_reply_error(req, rc, "the delivery could not be read");
    return rc;
}

void nf_delivery_event(nf_ctx *ctx, const bson_t *d, const char *state, const char *detail)
{
    const char *did = cm_bson_str(d, "_id", ""), *user = cm_bson_str(d, "user_id", "");
    cJSON *data = cJSON_CreateObject();
    cm_kafka_header h[1] = {{"x-request-id", cm_log_request_id()}};
    cm_err rc;
    char id[CM_UUID_STRLEN + 24], *ev = NULL;

    if (data == NULL)
        return;
    /* One event per (delivery, state): a repeated report or a replayed transition produces
     * the same id, which consumers deduplicate. */
    snprintf(id, sizeof(id), "%s.%s", did, state);
    cJSON_AddStringToObject(data, "delivery_id", did);
    if (cm_bson_str(d, "notification_id", "")[0]) /* account e-mails have none */
        cJSON_AddStringToObject(data, "notification_id", cm_bson_str(d, "notification_id", ""));
    cJSON_AddStringToObject(data, "user_id", user);
    cJSON_AddStringToObject(data, "channel", channel_of(cm_bson_str(d, "platform", "")));
    cJSON_AddStringToObject(data, "platform", cm_bson_str(d, "platform", ""));
    cJSON_AddStringToObject(data, "state", state);
    if (cm_bson_str(d, "message_id", NULL))
        cJSON_AddStringToObject(data, "message_id", cm_bson_str(d, "message_id", ""));
    if (cm_bson_str(d, "device_id", "")[0])
        cJSON_AddStringToObject(data, "device_id", cm_bson_str(d, "device_id", ""));
    cJSON_AddStringToObject(data, "detail", detail ? detail : "");
    if (cm_event_build(id, "notification.delivered", "/notification", user,
                       cm_bson_str(d, "tenant", ""), cm_clock_now_ms(), data, &ev) != CM_OK)
        return;
    rc = cm_outbox_publish(ctx->outbox, NF_TOPIC, user, id, ev, h, 1);
    if (rc != CM_OK && rc != CM_ECONFLICT) /* ECONFLICT: in the outbox already */
        cm_warn("delivery %s: notification.delivered (%s) not stored in the outbox", did, state);
    free(ev);
}

cm_err nf_delivery_report(nf_ctx *ctx, const bson_t *d, const char *state, const char *detail,
                          bson_t *after, char *why, size_t n)
{
    const char *id = cm_bson_str(d, "_id", "");
    char from[32];
    bson_t f = BSON_INITIALIZER, u = BSON_INITIALIZER, set, push, h;
    int64_t matched = 0;
    cm_err rc;

    snprintf(from, sizeof(from), "%s", cm_bson_str(d, "state", ""));
    if (strcmp(from, state) == 0) {
        rc = CM_OK; /* a repeated report */
        if (after)
            bson_copy_to(d, after);
        goto out;
    }
    if (!transition_ok(from, state)) {
        snprintf(why, n, "delivery %s is %s: only a sent delivery becomes delivered or bounced "
                 "(and a delivered one bounced)", id, from);
        rc = CM_ECONFLICT;
        goto out;
    }
    BSON_APPEND_UTF8(&f, "_id", id);
    BSON_APPEND_UTF8(&f, "state", from); /* unchanged since read */
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
    BSON_APPEND_UTF8(&set, "state", state);
    bson_append_document_end(&u, &set);
    BSON_APPEND_DOCUMENT_BEGIN(&u, "$push", &push);
    BSON_APPEND_DOCUMENT_BEGIN(&push, "history", &h);
    BSON_APPEND_INT32(&h, "attempt", (int32_t)cm_bson_int(d, "attempts", 0));
    BSON_APPEND_DATE_TIME(&h, "at", cm_clock_now_ms());
    BSON_APPEND_UTF8(&h, "outcome", state);
    BSON_APPEND_UTF8(&h, "detail", detail);
    bson_append_document_end(&push, &h);
    bson_append_document_end(&u, &push);
    if ((rc = cm_mongo_update(ctx->ddb, NF_COLL_DELIVERIES, &f, &u, 0, 0, &matched)) != CM_OK) {
        snprintf(why, n, "the delivery could not be updated");
        goto out;
    }
    if (matched == 0) {
        snprintf(why, n, "delivery %s changed meanwhile: read it and report again", id);
        rc = CM_ECONFLICT;
        goto out;
    }
    nf_delivery_decision(ctx, d, state, detail);
    nf_delivery_event(ctx, d, state, detail);
    if (after) {
        bson_reinit(&f);
        BSON_APPEND_UTF8(&f, "_id", id);
        if ((rc = cm_mongo_find_one(ctx->ddb, NF_COLL_DELIVERIES, &f, NULL, after)) != CM_OK) {
            snprintf(why, n, "the delivery could not be read back");
            rc = CM_EIO;
        }
    }
out:
    bson_destroy(&f);
    bson_destroy(&u);
    return rc;
}

/* POST /v1/notifications/deliveries/{id}/status {"state": "delivered"|"bounced", "detail"}:
 * a tenant_admin (the tenant's backend relaying its provider's report) records either; the
 * recipient may confirm "delivered" of their own delivery (their app displayed the push).
 * 200 with the delivery; the same state again changes nothing (reports are retried); a
 * delivery not sent yet, failed, or bounced already is 409; another tenant's is 404. */
void nf_delivery_status(cm_http_req *req, void *ud)
{
    static const char *const allowed[] = {"state", "detail", NULL};
    nf_ctx *ctx = ud;
    cm_jwt_claims c;
    const char *id = cm_http_param(req, "id"), *state = NULL, *detail = NULL;
    char why[300];
    cJSON *body;
    bson_t d, after;
    int have = 0, admin;
    cm_err rc;

    if (cm_auth_bearer(req, ctx->verifier, &c) != CM_OK || cm_http_json_body(req, &body) != CM_OK)
        goto out;
    if (cm_json_only_keys(body, allowed, why, sizeof(why)) ||
        cm_json_string(body, "state", 1, 1, 16, &state, why, sizeof(why)) ||
        cm_json_string(body, "detail", 0, 0, DETAIL_MAX, &detail, why, sizeof(why))) {
        cm_http_reply_error(req, CM_EINVAL, why);
        goto out;
    }
    if (strcmp(state, "delivered") != 0 && strcmp(state, "bounced") != 0) {
        cm_http_reply_error(req, CM_EINVAL, "field 'state' must be 'delivered' or 'bounced'");
        goto out;
    }
    if (nf_delivery_find(ctx, req, c.tid, id, &d) != CM_OK)
        goto out;
    have = 1;
    admin = cm_auth_can(&c, "tenant.manage");
    if (!admin && strcmp(cm_bson_str(&d, "user_id", ""), c.sub) != 0) {
        /* Not theirs: as if it did not exist. */
        cm_http_problem(req, 404, "not-found", "Not Found", "no delivery %s", id);
        goto out;
    }
    if (!admin && strcmp(state, "delivered") != 0) {
        cm_http_problem(req, 403, "forbidden", "Forbidden",
                        "a recipient may confirm 'delivered' only; bounces are reported by the "
                        "tenant's backend (tenant.manage)");
        goto out;
    }
    rc = nf_delivery_report(ctx, &d, state,
                            detail && detail[0] ? detail
                            : admin             ? "reported by the tenant's backend"
                                                : "confirmed by the recipient",
                            &after, why, sizeof(why));
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, why);
        goto out;
    }
    cm_http_reply_json(req, 200, nf_delivery_json(&after, NULL));
    bson_destroy(&after);
out:
    if (have)
        bson_destroy(&d);
}
