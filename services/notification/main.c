/* main.c - the notification service: wires configuration, MongoDB, Redis, the outbox and its
 * producer, the Kafka consumer that turns messaging events into notifications, housekeeping
 * and the routes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "common/config.h"
#include "common/health.h"
#include "common/jwks.h"
#include "common/log.h"
#include "common/process.h"
#include "common/session.h"
#include "notification.h"
#include "notification_callbacks.h"
#include "notification_channels.h"
#include "notification_webpush.h"

static const cm_config_var vars[] = {
    {"HTTP_HOST", "127.0.0.1", "address to listen on"},
    {"HTTP_PORT", "8086", "port to listen on"},
    {"INTERNAL_KEY_FILE", "",
     "file with the key of the /internal service-to-service routes, the same in every process; "
     "unset: they are open"},
    {"HTTP_THREADS", "4", "worker threads"},
    {"HTTP_MAX_BODY", "1048576", "largest request body in bytes"},
    {"MONGO_URI", "mongodb://127.0.0.1:27017", "MongoDB connection string"},
    {"MONGO_DB", "chat_notification", "database of this service"},
    {"STOP_DEADLINE_MS", "0", "longest shutdown after SIGTERM before the process exits "
                              "without its busy threads (exit code 1); 0: none (deployments "
                              "set it under their grace period)"},
    {"MONGO_DELIVERIES_DB", "", "database of the delivery attempts; unset: <MONGO_DB>_deliveries "
                                "(its own file on FerretDB's SQLite backend: its own writer)"},
    {"KAFKA_BROKERS", "127.0.0.1:9092", "Kafka bootstrap servers"},
    {"KAFKA_TOPIC_PREFIX", "", "prefix of every topic name"},
    {"NOTIFY_GROUP", "notification", "Kafka consumer group on messages and conversations"},
    {"NOTIFY_FROM_BEGINNING", "0", "where a group without offsets starts: 1 earliest, 0 latest "
                                   "(a new deployment does not notify of old messages)"},
    {"NOTIFY_MEMBERSHIP_WAIT_MS", "10000", "how long a message whose conversation is not yet "
                                           "known is retried before it is handled as is"},
    {"REDIS_HOST", "127.0.0.1", "Redis host (revoked sessions)"},
    {"REDIS_PORT", "6379", "Redis port"},
    {"JWT_JWKS_URL", "", "JWK Set URL of the signing keys; replaces JWT_PUBLIC_KEY_FILE"},
    {"JWT_PUBLIC_KEY_FILE", NULL, "PEM public key, or kid=path,..., when JWT_JWKS_URL is unset"},
    {"JWT_ALG", "RS256", "pinned signing algorithm"},
    {"JWT_ISSUER", "chat-platform", "required iss"},
    {"JWT_AUDIENCE", "chat-api", "required aud"},
    {"FCM_BASE_URL", "https://fcm.googleapis.com", "FCM HTTP v1 endpoint (tests: a local one)"},
    {"FCM_PROJECT_ID", "", "Firebase project id"},
    {"FCM_CREDENTIALS_FILE", "", "service-account JSON (client_email, private_key, token_uri); "
                                 "unset: FCM devices are not pushed"},
    {"APNS_BASE_URL", "https://api.push.apple.com", "APNs endpoint (HTTP/2)"},
    {"APNS_KEY_FILE", "", "APNs auth key (.p8, P-256 PEM); unset: APNs devices are not pushed"},
    {"APNS_KEY_ID", "", "kid of the APNs key"},
    {"APNS_TEAM_ID", "", "Apple team id (iss of the provider token)"},
    {"APNS_TOPIC", "", "bundle id for devices registered without app_id"},
    {"WEBPUSH_VAPID_KEY_FILE", "", "VAPID key (RFC 8292): P-256 private key PEM whose public key "
                                   "the web app subscribes with; unset: web push devices are "
                                   "not pushed"},
    {"WEBPUSH_VAPID_SUBJECT", "mailto:ops@localhost", "VAPID contact (sub claim): a mailto: or "
                                                      "https: URI the push service may reach"},
    {"WEBPUSH_TTL_S", "86400", "how long a push service keeps an undelivered web push (TTL)"},
    {"PUSH_RETRY_DELAYS_MS", "1000,5000,30000", "delays before each retry of a failed push or "
                                                "e-mail (+-20% jitter); then the DLQ"},
    {"PUSH_TIMEOUT_MS", "10000", "one provider request"},
    {"SMTP_URL", "", "SMTP server for e-mail: smtp://host:port (STARTTLS when offered) or "
                     "smtps://host:port; unset: nothing is mailed"},
    {"SMTP_FROM", "noreply@localhost", "sender address of the e-mails"},
    {"SMTP_FROM_NAME", "", "sender display name of the e-mails"},
    {"SMTP_USER", "", "SMTP AUTH user; unset: no authentication"},
    {"SMTP_PASSWORD", "", "SMTP AUTH password"},
    {"SMTP_REQUIRE_TLS", "0", "1: never send over a connection that STARTTLS did not protect"},
    {"SMTP_TIMEOUT_MS", "30000", "one SMTP exchange"},
    {"NOTIFY_APP_URL", "", "base of the links in e-mails (<url>/conversations/<id>, "
                           "<url>/verify-email?token=...); unset: no links"},
    {"NOTIFY_DIGEST_AFTER_S", "1800", "messages still unread this long are mailed in one digest "
                                      "per user per window (users who turn email_digest on); "
                                      "0: no digests"},
    {"SMS_BASE_URL", "https://api.twilio.com", "Twilio-compatible SMS API (tests: a local one)"},
    {"SMS_ACCOUNT_SID", "", "account sid (Basic auth user); unset: nothing is texted"},
    {"SMS_AUTH_TOKEN", "", "auth token (Basic auth password)"},
    {"SMS_FROM", "", "sender number (E.164) or messaging service sid"},
    {"SMS_STATUS_CALLBACK_BASE_URL", "", "public base URL of this API (the gateway's) that the SMS "
                                         "provider posts delivery reports to: each SMS asks for "
                                         "<url>/v1/callbacks/twilio/<tenant>; unset: none asked"},
    {"SNS_TOPIC_ARNS", "", "comma-separated Amazon SNS topics whose SES notifications (bounce, "
                           "complaint, delivery) POST /v1/callbacks/ses accepts; unset: none"},
    {"SNS_CERT_HOSTS", "https://sns.*.amazonaws.com", "comma-separated fnmatch patterns of the "
                                                     "scheme://host[:port] SNS signing "
                                                     "certificates and subscribe URLs may come from"},
    {"SMS_TENANT_PER_HOUR", "1000", "SMS one tenant may send per hour (SMS pumping protection)"},
    {"SMS_RECIPIENT_PER_HOUR", "5", "SMS one phone number may receive per hour"},
    {"NOTIFY_ESCALATE_AFTER_S", "300", "priority notifications still unread this long are "
                                       "e-mailed, and as long again later texted; 0: never"},
    {"WEBHOOK_RETRY_DELAYS_MS", "1000,5000,30000", "delays before each retry of a failed webhook "
                                                   "(+-20% jitter); then the DLQ"},
    {"WEBHOOK_TIMEOUT_MS", "10000", "one webhook request"},
    {"WEBHOOK_DISABLE_AFTER", "20", "consecutive failed webhook attempts that disable an endpoint"},
    {"WEBHOOK_ALLOW_PRIVATE_CIDRS", "", "comma-separated CIDRs a webhook may reach although not "
                                        "public (loopback, private, link-local); tests only"},
    {"OUTBOX_STALE_MS", "5000", "age after which an unpublished notification.created is produced again"},
    {"LOG_LEVEL", "info", "debug, info, warn or error"},
};

typedef struct ready_ctx {
    cm_health_deps deps;
    nf_ctx *ctx;
} ready_ctx;

/* /health/ready: MongoDB and Kafka answer, and the consumer has its partitions (a group that
 * starts at the latest offset would miss what is produced before that). */
static cm_err ready(void *ud, char *detail, size_t n)
{
    ready_ctx *r = ud;
    cm_err rc = cm_health_ready(&r->deps, detail, n);
    if (rc == CM_OK && !nf_consumer_assigned(r->ctx->consumer)) {
        snprintf(detail, n, "kafka consumer has no partitions assigned yet");
        return CM_EAGAIN;
    }
    return rc;
}

/* Reads the push configuration; a credentials file that is set but unreadable is an error. */
static cm_err push_config(nf_push_config *pc)
{
    const char *delays = cm_config_str("PUSH_RETRY_DELAYS_MS", "1000,5000,30000"), *p = delays;
    size_t len;
    long timeout, ttl;

    memset(pc, 0, sizeof(*pc));
    if (cm_config_long("PUSH_TIMEOUT_MS", 10000, 100, 120000, &timeout) ||
        cm_config_long("WEBPUSH_TTL_S", 86400, 0, 28 * 86400, &ttl))
        return CM_EINVAL;
    pc->webpush_ttl_s = ttl;
    pc->vapid_subject = cm_config_str("WEBPUSH_VAPID_SUBJECT", "mailto:ops@localhost");
    if (strncmp(pc->vapid_subject, "mailto:", 7) != 0 &&
        strncmp(pc->vapid_subject, "https://", 8) != 0) {
        /* RFC 8292 section 2.1: the sub claim is a mailto: or https: URI. */
        cm_error("config: WEBPUSH_VAPID_SUBJECT must be a mailto: or https: URI");
        return CM_EINVAL;
    }
    pc->timeout_ms = timeout;
    pc->fcm_base = cm_config_str("FCM_BASE_URL", "https://fcm.googleapis.com");
    pc->fcm_project = cm_config_str("FCM_PROJECT_ID", "");
    pc->apns_base = cm_config_str("APNS_BASE_URL", "https://api.push.apple.com");
    pc->apns_key_id = cm_config_str("APNS_KEY_ID", "");
    pc->apns_team_id = cm_config_str("APNS_TEAM_ID", "");
    pc->apns_topic = cm_config_str("APNS_TOPIC", "");
    pc->dlq_topic = NF_TOPIC ".dlq";
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 3600000 || (*end != ',' && *end != '\0') ||
            pc->nretries == NF_RETRIES_MAX) {
            cm_error("config: PUSH_RETRY_DELAYS_MS must be up to %d comma-separated "
                     "millisecond delays (0..3600000)", NF_RETRIES_MAX);
            return CM_EINVAL;
        }
        pc->retry_ms[pc->nretries++] = v;
        p = *end ? end + 1 : end;
    }
    if (cm_config_file("FCM_CREDENTIALS_FILE", 65536, &pc->fcm_credentials, &len) ==
        CM_ENOTFOUND)
        pc->fcm_credentials = NULL;
    else if (pc->fcm_credentials == NULL)
        return CM_EINVAL;
    if (cm_config_file("APNS_KEY_FILE", 16384, &pc->apns_key, &len) == CM_ENOTFOUND)
        pc->apns_key = NULL;
    else if (pc->apns_key == NULL)
        return CM_EINVAL;
    if (cm_config_file("WEBPUSH_VAPID_KEY_FILE", 16384, &pc->vapid_key, &len) == CM_ENOTFOUND)
        pc->vapid_key = NULL;
    else if (pc->vapid_key == NULL)
        return CM_EINVAL;
    if (pc->vapid_key) {
        char probe[NF_WEBPUSH_VAPID_MAX];
        if (nf_webpush_vapid(pc->vapid_key, strlen(pc->vapid_key), "https://push.invalid/",
                             pc->vapid_subject, 0, probe, sizeof(probe)) != CM_OK) {
            cm_error("config: WEBPUSH_VAPID_KEY_FILE is not a P-256 private key (PEM)");
            return CM_EINVAL;
        }
    }
    if (pc->fcm_credentials && pc->fcm_project[0] == '\0') {
        cm_error("config: FCM_CREDENTIALS_FILE is set but FCM_PROJECT_ID is not");
        return CM_EINVAL;
    }
    return CM_OK;
}

/* Reads the e-mail configuration; the retry delays are the push ones (`pc`). */
static cm_err mail_config(const nf_push_config *pc, nf_mail_config *mc)
{
    long tls, timeout, digest_s, per_tenant, per_recipient, escalate_s;

    memset(mc, 0, sizeof(*mc));
    if (cm_config_long("SMTP_REQUIRE_TLS", 0, 0, 1, &tls) ||
        cm_config_long("SMTP_TIMEOUT_MS", 30000, 100, 600000, &timeout) ||
        cm_config_long("NOTIFY_DIGEST_AFTER_S", 1800, 0, 7 * 86400, &digest_s) ||
        cm_config_long("SMS_TENANT_PER_HOUR", 1000, 0, 100000000, &per_tenant) ||
        cm_config_long("SMS_RECIPIENT_PER_HOUR", 5, 0, 100000, &per_recipient) ||
        cm_config_long("NOTIFY_ESCALATE_AFTER_S", 300, 0, 7 * 86400, &escalate_s))
        return CM_EINVAL;
    mc->smtp_url = cm_config_str("SMTP_URL", "");
    mc->from = cm_config_str("SMTP_FROM", "noreply@localhost");
    mc->from_name = cm_config_str("SMTP_FROM_NAME", "");
    mc->user = cm_config_str("SMTP_USER", "");
    mc->password = cm_config_str("SMTP_PASSWORD", "");
    mc->app_url = cm_config_str("NOTIFY_APP_URL", "");
    mc->require_tls = (int)tls;
    mc->timeout_ms = timeout;
    mc->digest_after_ms = (int64_t)digest_s * 1000;
    mc->sms_base = cm_config_str("SMS_BASE_URL", "https://api.twilio.com");
    mc->sms_sid = cm_config_str("SMS_ACCOUNT_SID", "");
    mc->sms_token = cm_config_str("SMS_AUTH_TOKEN", "");
    mc->sms_from = cm_config_str("SMS_FROM", "");
    mc->sms_callback_base = cm_config_str("SMS_STATUS_CALLBACK_BASE_URL", "");
    if (mc->sms_callback_base[0] &&
        ((strncmp(mc->sms_callback_base, "https://", 8) != 0 &&
          strncmp(mc->sms_callback_base, "http://", 7) != 0) ||
         mc->sms_callback_base[strlen(mc->sms_callback_base) - 1] == '/')) {
        /* The provider signs the URL it was given: base + path must be that URL exactly. */
        cm_error("config: SMS_STATUS_CALLBACK_BASE_URL must be an http(s) URL without a "
                 "trailing '/'");
        return CM_EINVAL;
    }
    mc->sms_per_tenant = per_tenant;
    mc->sms_per_recipient = per_recipient;
    mc->escalate_after_ms = (int64_t)escalate_s * 1000;
    if (mc->sms_sid[0] && (mc->sms_token[0] == '\0' || mc->sms_from[0] == '\0')) {
        cm_error("config: SMS_ACCOUNT_SID is set but SMS_AUTH_TOKEN or SMS_FROM is not");
        return CM_EINVAL;
    }
    memcpy(mc->retry_ms, pc->retry_ms, sizeof(mc->retry_ms));
    mc->nretries = pc->nretries;
    mc->dlq_topic = pc->dlq_topic;
    if (mc->smtp_url[0] && strncmp(mc->smtp_url, "smtp://", 7) != 0 &&
        strncmp(mc->smtp_url, "smtps://", 8) != 0) {
        cm_error("config: SMTP_URL must start with smtp:// or smtps://");
        return CM_EINVAL;
    }
    if (mc->smtp_url[0] && !nf_email_valid(mc->from)) {
        cm_error("config: SMTP_FROM must be an e-mail address");
        return CM_EINVAL;
    }
    return CM_OK;
}

/* Parses a comma-separated list of millisecond delays (0..3600000) into `out`. */
static cm_err delays(const char *name, const char *def, long *out, int *n)
{
    const char *p = cm_config_str(name, def);
    *n = 0;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 3600000 || (*end != ',' && *end != '\0') ||
            *n == NF_RETRIES_MAX) {
            cm_error("config: %s must be up to %d comma-separated millisecond delays "
                     "(0..3600000)", name, NF_RETRIES_MAX);
            return CM_EINVAL;
        }
        out[(*n)++] = v;
        p = *end ? end + 1 : end;
    }
    return CM_OK;
}

static cm_err webhooks_config(nf_webhooks_config *wc)
{
    memset(wc, 0, sizeof(*wc));
    wc->allow_private = cm_config_str("WEBHOOK_ALLOW_PRIVATE_CIDRS", "");
    if (cm_config_long("WEBHOOK_TIMEOUT_MS", 10000, 100, 120000, &wc->timeout_ms) ||
        cm_config_long("WEBHOOK_DISABLE_AFTER", 20, 1, 1000000, &wc->disable_after))
        return CM_EINVAL;
    return delays("WEBHOOK_RETRY_DELAYS_MS", "1000,5000,30000", wc->retry_ms, &wc->nretries);
}

/* ctx->ddb: the deliveries' database, MONGO_DELIVERIES_DB or <MONGO_DB>_deliveries (the same
 * handle as ctx->db when that names MONGO_DB). CM_EINVAL when the name is too long. */
static cm_err deliveries_db(nf_ctx *ctx)
{
    const char *main_db = cm_config_str("MONGO_DB", "chat_notification");
    const char *name = cm_config_str("MONGO_DELIVERIES_DB", "");
    char derived[128];

    if (name[0] == '\0') {
        if (snprintf(derived, sizeof(derived), "%s_deliveries", main_db) >= (int)sizeof(derived)) {
            cm_error("MONGO_DB is too long to derive the deliveries' database from");
            return CM_EINVAL;
        }
        name = derived;
    }
    if (strcmp(name, main_db) == 0) {
        ctx->ddb = ctx->db;
        return CM_OK;
    }
    return cm_mongo_create(cm_config_str("MONGO_URI", "mongodb://127.0.0.1:27017"), name,
                           &ctx->ddb);
}

/* The stop deadline's last work (cm_stop_deadline_arm): what the producers hold goes to Kafka
 * (dead letters, outbox events; notification.created a batch still waits for is produced
 * again with the batch, whose offsets were not stored). */
static void flush_producers(void *ud)
{
    nf_ctx *ctx = ud;
    (void)cm_kafka_flush(ctx->kafka, 1000);
    (void)cm_kafka_flush(ctx->created_producer, 1000);
}

int main(int argc, char **argv)
{
    nf_ctx ctx = {0};
    ready_ctx rd = {0};
    cm_http_config hc;
    cm_http_server *srv = NULL;
    nf_jobs *jobs = NULL;
    cm_stop_deadline *deadline = NULL;
    nf_push_config pc = {0};
    nf_mail_config mc;
    nf_webhooks_config wc;
    nf_callbacks_config cc;
    long redis_port, stale_ms, from_beginning, wait_ms, stop_deadline_ms;
    const char *brokers, *prefix;
    int rc = 1;

    if (cm_config_help_requested(argc, argv,
                                 "Notifications: in-app inbox from the messaging events "
                                 "(published as notification.created), push to FCM, APNs and web push, e-mail over SMTP, SMS "
                                 "and signed webhooks to tenant URLs.",
                                 vars, sizeof(vars) / sizeof(vars[0])))
        return 0;
    cm_process_block_signals();
    cm_log_init("notification",
                cm_log_level_parse(cm_config_str("LOG_LEVEL", NULL), CM_LOG_INFO));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    brokers = cm_config_str("KAFKA_BROKERS", "127.0.0.1:9092");
    prefix = cm_config_str("KAFKA_TOPIC_PREFIX", "");
    if (cm_http_config_from_env(8086, &hc) ||
        cm_config_long("REDIS_PORT", 6379, 1, 65535, &redis_port) ||
        cm_config_long("OUTBOX_STALE_MS", 5000, 100, 3600000, &stale_ms) ||
        cm_config_long("NOTIFY_FROM_BEGINNING", 0, 0, 1, &from_beginning) ||
        cm_config_long("NOTIFY_MEMBERSHIP_WAIT_MS", 10000, 0, 600000, &wait_ms) ||
        cm_config_long("STOP_DEADLINE_MS", 0, 0, 3600000, &stop_deadline_ms) ||
        push_config(&pc) || mail_config(&pc, &mc) || webhooks_config(&wc) ||
        cm_jwt_verifier_from_env(&ctx.verifier) ||
        cm_mongo_create(cm_config_str("MONGO_URI", "mongodb://127.0.0.1:27017"),
                        cm_config_str("MONGO_DB", "chat_notification"), &ctx.db) ||
        deliveries_db(&ctx) ||
        cm_redis_create(cm_config_str("REDIS_HOST", "127.0.0.1"), (int)redis_port, 8, 500,
                        &ctx.redis) ||
        cm_outbox_create(ctx.db, NF_COLL_OUTBOX, stale_ms, &ctx.outbox) ||
        cm_kafka_producer_create(brokers, prefix, cm_outbox_delivered, ctx.outbox, &ctx.kafka) ||
        cm_kafka_producer_create(brokers, prefix, nf_created_delivered, NULL, &ctx.created_producer))
        goto out;
    ctx.db_name = cm_config_str("MONGO_DB", "chat_notification");
    ctx.retry_max_age_ms = wait_ms;
    cc.public_base = mc.sms_callback_base;
    cc.twilio_token = mc.sms_token;
    cc.sns_topics = cm_config_str("SNS_TOPIC_ARNS", "");
    cc.sns_hosts = cm_config_str("SNS_CERT_HOSTS", "https://sns.*.amazonaws.com");
    cc.timeout_ms = pc.timeout_ms;
    if (nf_callbacks_create(&cc, &ctx.callbacks) != CM_OK)
        goto out;
    cm_outbox_set_producer(ctx.outbox, ctx.kafka);
    cm_session_enforce(ctx.redis); /* revoked sessions' tokens are refused (session.h) */
    if (nf_ensure_indexes(&ctx) != CM_OK || nf_projection_since(&ctx) != CM_OK) {
        cm_error("indexes could not be created or the projection's start not read");
        goto out;
    }
    if ((mc.smtp_url[0] || mc.sms_sid[0]) && nf_mail_start(&ctx, &mc, &ctx.mail) != CM_OK)
        goto out;
    /* Webhooks first: the push sender checks web push endpoints' addresses with their rule. */
    if (nf_webhooks_start(&ctx, &wc, &ctx.webhooks))
        goto out;
    pc.guard = ctx.webhooks;
    if (nf_push_start(&ctx, &pc, &ctx.push) ||
        nf_consumer_start(&ctx, brokers, prefix, cm_config_str("NOTIFY_GROUP", "notification"),
                          (int)from_beginning, &ctx.consumer) ||
        nf_jobs_start(&ctx, 1000, &jobs))
        goto out;
    /* Literal segments before {id}: routes match in order. */
    if (cm_http_server_create(&hc, &srv) ||
        cm_http_route(srv, "GET", "/v1/notifications", nf_list, &ctx) ||
        cm_http_route(srv, "POST", "/v1/notifications", nf_request, &ctx) ||
        cm_http_route(srv, "GET", "/v1/notifications/unread_count", nf_unread_count, &ctx) ||
        cm_http_route(srv, "POST", "/v1/notifications/read_all", nf_read_all, &ctx) ||
        cm_http_route(srv, "GET", "/v1/notifications/diagnostics", nf_diagnostics, &ctx) ||
        cm_http_route(srv, "GET", "/v1/notifications/preferences", nf_prefs_get, &ctx) ||
        cm_http_route(srv, "PUT", "/v1/notifications/preferences", nf_prefs_put, &ctx) ||
        cm_http_route(srv, "PUT", "/v1/notifications/templates/{kind}/{channel}/{locale}",
                      nf_templates_put, &ctx) ||
        cm_http_route(srv, "GET", "/v1/notifications/templates/{kind}/{channel}/{locale}",
                      nf_templates_get, &ctx) ||
        cm_http_route(srv, "DELETE", "/v1/notifications/templates/{kind}/{channel}/{locale}",
                      nf_templates_delete, &ctx) ||
        cm_http_route(srv, "PUT", "/v1/notifications/contacts/{user_id}", nf_contacts_put,
                      &ctx) ||
        cm_http_route(srv, "GET", "/v1/notifications/contacts/{user_id}", nf_contacts_get,
                      &ctx) ||
        cm_http_route(srv, "DELETE", "/v1/notifications/contacts/{user_id}",
                      nf_contacts_delete, &ctx) ||
        cm_http_route(srv, "POST", "/v1/notifications/{id}/read", nf_read_one, &ctx) ||
        cm_http_route(srv, "GET", "/v1/notifications/{id}/deliveries", nf_deliveries, &ctx) ||
        cm_http_route(srv, "POST", "/v1/notifications/deliveries/{id}/redrive", nf_redrive,
                      &ctx) ||
        cm_http_route(srv, "POST", "/v1/notifications/deliveries/{id}/status",
                      nf_delivery_status, &ctx) ||
        cm_http_route(srv, "POST", "/v1/callbacks/twilio/{tenant}", nf_callback_twilio, &ctx) ||
        cm_http_route(srv, "POST", "/v1/callbacks/ses", nf_callback_ses, &ctx) ||
        cm_http_route(srv, "POST", "/v1/devices", nf_devices_create, &ctx) ||
        cm_http_route(srv, "GET", "/v1/devices", nf_devices_list, &ctx) ||
        cm_http_route(srv, "DELETE", "/v1/devices/{id}", nf_devices_delete, &ctx) ||
        cm_http_route(srv, "POST", "/v1/webhooks", nf_webhooks_create, &ctx) ||
        cm_http_route(srv, "GET", "/v1/webhooks", nf_webhooks_list, &ctx) ||
        cm_http_route(srv, "DELETE", "/v1/webhooks/{id}", nf_webhooks_delete, &ctx))
        goto out;
    rd.deps.mongo = ctx.db;
    rd.deps.kafka = ctx.kafka;
    rd.ctx = &ctx;
    cm_http_set_ready(srv, ready, &rd);
    cm_http_set_metrics(srv, nf_metrics, &ctx);
    if (cm_http_server_start(srv) != CM_OK)
        goto out;
    cm_info("notification service ready");
    cm_info("stopping on signal %d", cm_process_wait_signal());
    /* A consumer held in a slow store call, or the sender waiting on a provider, must not
     * keep the process past its grace period: offsets are stored only after a batch is
     * stored and sent, so what is cut short is consumed again (tests/e2e: a stalled
     * provider). */
    if (cm_stop_deadline_arm(stop_deadline_ms, 1, flush_producers, &ctx, &deadline) != CM_OK)
        cm_warn("no stop deadline: the shutdown is unbounded");
    rc = 0;
out:
    /* Stop taking requests, stop consuming (commits stored offsets), stop housekeeping, flush
     * Kafka (delivery reports reach the outbox), then let the outbox mark what was delivered. */
    cm_http_server_destroy(srv);
    nf_consumer_stop(ctx.consumer);
    nf_push_stop(ctx.push);
    nf_mail_stop(ctx.mail);
    nf_webhooks_stop(ctx.webhooks);
    nf_jobs_stop(jobs);
    cm_stop_deadline_disarm(deadline);
    cm_kafka_producer_destroy(ctx.kafka);
    cm_kafka_producer_destroy(ctx.created_producer);
    if (ctx.outbox && ctx.db) {
        /* Marks only: the producer is gone, so the sweep must not produce (the next instance's
         * does; a bounded tick may leave stale events behind). */
        cm_outbox_set_producer(ctx.outbox, NULL);
        cm_outbox_tick(ctx.outbox);
    }
    cm_outbox_destroy(ctx.outbox);
    nf_callbacks_destroy(ctx.callbacks);
    cm_redis_destroy(ctx.redis);
    if (ctx.ddb != ctx.db)
        cm_mongo_destroy(ctx.ddb);
    cm_mongo_destroy(ctx.db);
    cm_jwt_destroy(ctx.verifier);
    free(pc.fcm_credentials);
    free(pc.apns_key);
    free(pc.vapid_key);
    curl_global_cleanup();
    return rc;
}
