/* notification_callbacks.h - providers' delivery reports in their own formats, at public
 * endpoints that carry no bearer token but the provider's own signature: Twilio's
 * StatusCallback (form POST signed with X-Twilio-Signature) and Amazon SES notifications
 * delivered by Amazon SNS over HTTP(S) (JSON signed with the SNS certificate). Each report
 * moves its delivery through nf_delivery_report, the rule the status endpoint uses too. The
 * signature checks are plain functions, tested without a server
 * (notification_callbacks_test.c). */
#ifndef NOTIFICATION_CALLBACKS_H
#define NOTIFICATION_CALLBACKS_H

#include <stddef.h>

#include "notification.h"

#define NF_FORM_PARAMS_MAX 64 /* parameters of one callback form (Twilio sends about 12) */

/* One name=value pair of an application/x-www-form-urlencoded body, decoded. */
typedef struct nf_form_param {
    char *name, *value; /* heap strings (nf_form_cleanup frees them) */
} nf_form_param;

/* Decodes form body `body` (len bytes: name=value pairs joined by '&', '+' for space,
 * %XX escapes) into `out[0..*n)` (at most `max`). CM_EINVAL (with `why`, size wn) for a
 * malformed body or more than `max` pairs; CM_ENOMEM. Nothing is left to free on error. */
cm_err nf_form_parse(const char *body, size_t len, nf_form_param *out, size_t max, size_t *n,
                     char *why, size_t wn);

/* Frees the strings of `p[0..n)`. */
void nf_form_cleanup(nf_form_param *p, size_t n);

/* The value of `name` in `p[0..n)`, or NULL. */
const char *nf_form_get(const nf_form_param *p, size_t n, const char *name);

/* Twilio's request signature (https://www.twilio.com/docs/usage/security#validating-requests):
 * base64(HMAC-SHA1(`token`, `url` followed by each POST parameter's name and value, sorted by
 * name, without separators)) into `out` (size n >= 29). Sorts `p` in place. CM_ENOMEM,
 * CM_ETOOBIG. */
cm_err nf_twilio_signature(const char *token, const char *url, nf_form_param *p, size_t np,
                           char *out, size_t n);

/* The string Amazon SNS signs for message `m` (its HTTP POST body parsed): for a
 * Notification "Message\n<v>\nMessageId\n<v>\n[Subject\n<v>\n]Timestamp\n<v>\nTopicArn\n<v>\n
 * Type\n<v>\n"; for a SubscriptionConfirmation or UnsubscribeConfirmation the keys Message,
 * MessageId, SubscribeURL, Timestamp, Token, TopicArn, Type in that order
 * (https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html). A heap
 * string into `*out` (caller frees). CM_EINVAL when a field is missing or not a string, or
 * the type is another; CM_ENOMEM. */
cm_err nf_sns_string_to_sign(const cJSON *m, char **out);

/* Verifies SNS signature `sig_b64` (base64) over `text` with the public key of PEM
 * certificate `cert_pem`: SignatureVersion `version` "1" is SHA1withRSA, "2" SHA256withRSA.
 * CM_OK when it verifies; CM_EUNAUTH when not; CM_EINVAL for a bad certificate, encoding or
 * version. */
cm_err nf_sns_verify(const char *cert_pem, size_t cert_len, const char *version,
                     const char *sig_b64, const char *text);

/* 1 when `url` (a SigningCertURL or SubscribeURL) has no user info and its
 * "scheme://host[:port]" matches one of the comma-separated fnmatch(3) patterns `allow`
 * (e.g. "https://sns.*.amazonaws.com"); 0 otherwise. */
int nf_sns_url_allowed(const char *url, const char *allow);

/* Callback configuration (environment: main.c). */
typedef struct nf_callbacks_config {
    const char *public_base;  /* the public base URL Twilio calls (SMS_STATUS_CALLBACK_BASE_URL) */
    const char *twilio_token; /* the auth token that signs Twilio's callbacks ("" SMS off) */
    const char *sns_topics;   /* comma-separated TopicArns accepted ("" SES reports off) */
    const char *sns_hosts;    /* allowed "scheme://host" patterns of SNS certificates */
    long timeout_ms;          /* fetching a certificate or confirming a subscription */
} nf_callbacks_config;

typedef struct nf_callbacks nf_callbacks;

/* Creates the callbacks' state (`cfg` copied; its strings must outlive it). CM_ENOMEM. */
cm_err nf_callbacks_create(const nf_callbacks_config *cfg, nf_callbacks **out);
void nf_callbacks_destroy(nf_callbacks *cb); /* accepts NULL */

/* POST /v1/callbacks/twilio/{tenant} (no bearer token: X-Twilio-Signature) */
void nf_callback_twilio(cm_http_req *req, void *ud);
/* POST /v1/callbacks/ses (no bearer token: the SNS signature) */
void nf_callback_ses(cm_http_req *req, void *ud);

#endif
