/* notification_callbacks.c - delivery reports that providers send themselves (Twilio's
 * StatusCallback, Amazon SES through Amazon SNS), authenticated the provider's way, each
 * applied to its delivery by nf_delivery_report (notification_receipts.c). */
#include <ctype.h>
#include <fnmatch.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "common/httpc.h"
#include "common/log.h"
#include "common/auth.h"
#include "notification_callbacks.h"

#define FORM_MAX 16384    /* bytes of a Twilio callback form we read */
#define CERT_MAX 16384    /* bytes of an SNS signing certificate */
#define CERT_CACHE 8      /* certificates kept (SNS uses one per region, rotated rarely) */
#define DETAIL_MAX 300    /* characters of a report's detail kept */

struct nf_callbacks {
    nf_callbacks_config cfg;
    pthread_mutex_t mu;
    struct {
        char *url, *pem;
        size_t len;
    } certs[CERT_CACHE];
    size_t next; /* the cache slot replaced next */
};

/* --- forms -------------------------------------------------------------------------------- */

/* A decoded copy of `s` (n bytes, '+' as space, %XX escapes) or NULL (malformed, no memory). */
static char *form_decode(const char *s, size_t n)
{
    char *plus = malloc(n + 1), *out = NULL, *dec;
    int len = 0;

    if (plus == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        plus[i] = s[i] == '+' ? ' ' : s[i];
        if (s[i] == '%' && (i + 2 >= n || !isxdigit((unsigned char)s[i + 1]) ||
                            !isxdigit((unsigned char)s[i + 2])))
            goto out; /* curl would keep a stray '%': a malformed form here */
    }
    plus[n] = '\0';
    /* libcurl >= 7.82 takes a NULL handle. */
    dec = curl_easy_unescape(NULL, plus, (int)n, &len);
    if (dec && memchr(dec, '\0', (size_t)len) == NULL)
        out = strdup(dec);
    curl_free(dec);
out:
    free(plus);
    return out;
}

cm_err nf_form_parse(const char *body, size_t len, nf_form_param *out, size_t max, size_t *n,
                     char *why, size_t wn)
{
    size_t at = 0;

    *n = 0;
    while (at < len) {
        const char *pair = body + at, *amp = memchr(pair, '&', len - at), *eq;
        size_t plen = amp ? (size_t)(amp - pair) : len - at;
        at += plen + (amp ? 1 : 0);
        if (plen == 0)
            continue;
        eq = memchr(pair, '=', plen);
        if (*n == max) {
            snprintf(why, wn, "the form has more than %zu parameters", max);
            goto bad;
        }
        if (eq == NULL || eq == pair) {
            snprintf(why, wn, "the form's pair %zu is not name=value", *n + 1);
            goto bad;
        }
        out[*n].name = form_decode(pair, (size_t)(eq - pair));
        out[*n].value = form_decode(eq + 1, plen - (size_t)(eq - pair) - 1);
        (*n)++;
        if (out[*n - 1].name == NULL || out[*n - 1].value == NULL) {
            snprintf(why, wn, "the form's pair %zu has a malformed %%-escape", *n);
            goto bad;
        }
    }
    return CM_OK;
bad:
    nf_form_cleanup(out, *n);
    *n = 0;
    return CM_EINVAL;
}

void nf_form_cleanup(nf_form_param *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(p[i].name);
        free(p[i].value);
        p[i].name = p[i].value = NULL;
    }
}

const char *nf_form_get(const nf_form_param *p, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(p[i].name, name) == 0)
            return p[i].value;
    return NULL;
}

static int by_name(const void *a, const void *b)
{
    const nf_form_param *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

cm_err nf_twilio_signature(const char *token, const char *url, nf_form_param *p, size_t np,
                           char *out, size_t n)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    size_t len = strlen(url), at;
    char *data;
    cm_err rc = CM_ENOMEM;

    if (n < 29) /* base64 of SHA-1's 20 bytes, and the NUL */
        return CM_ETOOBIG;
    qsort(p, np, sizeof(*p), by_name);
    for (size_t i = 0; i < np; i++)
        len += strlen(p[i].name) + strlen(p[i].value);
    if ((data = malloc(len + 1)) == NULL)
        return CM_ENOMEM;
    at = strlen(url);
    memcpy(data, url, at);
    for (size_t i = 0; i < np; i++) {
        size_t a = strlen(p[i].name), b = strlen(p[i].value);
        memcpy(data + at, p[i].name, a);
        memcpy(data + at + a, p[i].value, b);
        at += a + b;
    }
    if (HMAC(EVP_sha1(), token, (int)strlen(token), (const unsigned char *)data, at, mac,
             &maclen) != NULL) {
        EVP_EncodeBlock((unsigned char *)out, mac, (int)maclen); /* 28 characters + NUL */
        rc = CM_OK;
    }
    free(data);
    return rc;
}

/* --- SNS ---------------------------------------------------------------------------------- */

static const char *jstr(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

cm_err nf_sns_string_to_sign(const cJSON *m, char **out)
{
    static const char *const note[] = {"Message", "MessageId", "Subject", "Timestamp",
                                       "TopicArn", "Type", NULL};
    static const char *const conf[] = {"Message", "MessageId", "SubscribeURL", "Timestamp",
                                       "Token", "TopicArn", "Type", NULL};
    const char *type = jstr(m, "Type"), *const *keys;
    size_t len = 1, at = 0;
    char *s;

    if (type == NULL)
        return CM_EINVAL;
    if (strcmp(type, "Notification") == 0)
        keys = note;
    else if (strcmp(type, "SubscriptionConfirmation") == 0 ||
             strcmp(type, "UnsubscribeConfirmation") == 0)
        keys = conf;
    else
        return CM_EINVAL;
    for (size_t i = 0; keys[i]; i++) {
        const char *v = jstr(m, keys[i]);
        if (v == NULL && strcmp(keys[i], "Subject") != 0) /* Subject only when present */
            return CM_EINVAL;
        if (v)
            len += strlen(keys[i]) + strlen(v) + 2;
    }
    if ((s = malloc(len)) == NULL)
        return CM_ENOMEM;
    for (size_t i = 0; keys[i]; i++) {
        const char *v = jstr(m, keys[i]);
        size_t a, b;
        if (v == NULL)
            continue;
        a = strlen(keys[i]);
        b = strlen(v);
        memcpy(s + at, keys[i], a);
        s[at + a] = '\n';
        memcpy(s + at + a + 1, v, b);
        s[at + a + 1 + b] = '\n';
        at += a + b + 2;
    }
    s[at] = '\0';
    *out = s;
    return CM_OK;
}

cm_err nf_sns_verify(const char *cert_pem, size_t cert_len, const char *version,
                     const char *sig_b64, const char *text)
{
    const EVP_MD *md = strcmp(version, "1") == 0   ? EVP_sha1()
                       : strcmp(version, "2") == 0 ? EVP_sha256()
                                                   : NULL;
    size_t b64 = strlen(sig_b64);
    unsigned char *sig = NULL;
    int siglen, pad = 0;
    BIO *bio = NULL;
    X509 *x = NULL;
    EVP_PKEY *key = NULL;
    EVP_MD_CTX *vc = NULL;
    cm_err rc = CM_EINVAL;

    if (md == NULL || b64 == 0 || b64 % 4 != 0 || b64 > 4096)
        return CM_EINVAL;
    if ((sig = malloc(b64)) == NULL)
        return CM_ENOMEM;
    siglen = EVP_DecodeBlock(sig, (const unsigned char *)sig_b64, (int)b64);
    if (siglen < 0)
        goto out;
    pad = (sig_b64[b64 - 1] == '=') + (b64 > 1 && sig_b64[b64 - 2] == '=');
    siglen -= pad; /* EVP_DecodeBlock counts the padding as zero bytes */
    if ((bio = BIO_new_mem_buf(cert_pem, (int)cert_len)) == NULL ||
        (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) == NULL ||
        (key = X509_get_pubkey(x)) == NULL || EVP_PKEY_base_id(key) != EVP_PKEY_RSA ||
        (vc = EVP_MD_CTX_new()) == NULL || EVP_DigestVerifyInit(vc, NULL, md, NULL, key) != 1)
        goto out;
    rc = EVP_DigestVerify(vc, sig, (size_t)siglen, (const unsigned char *)text, strlen(text)) == 1
             ? CM_OK
             : CM_EUNAUTH;
out:
    EVP_MD_CTX_free(vc);
    EVP_PKEY_free(key);
    X509_free(x);
    BIO_free(bio);
    free(sig);
    return rc;
}

int nf_sns_url_allowed(const char *url, const char *allow)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *user = NULL, origin[600];
    int ok = 0, w;

    if (u == NULL || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
        goto out;
    if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK)
        goto out; /* https://sns.x.amazonaws.com@evil/ style confusions */
    (void)curl_url_get(u, CURLUPART_PORT, &port, 0);
    w = snprintf(origin, sizeof(origin), "%s://%s%s%s", scheme, host, port ? ":" : "",
                 port ? port : "");
    if (w < 0 || (size_t)w >= sizeof(origin))
        goto out;
    for (const char *p = allow; *p && !ok;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char pat[300];
        if (len > 0 && len < sizeof(pat)) {
            memcpy(pat, p, len);
            pat[len] = '\0';
            ok = fnmatch(pat, origin, 0) == 0;
        }
        p += len + (comma ? 1 : 0);
    }
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(user);
    curl_url_cleanup(u);
    return ok;
}

/* 1 when `arn` is one of the comma-separated `list`. */
static int listed(const char *list, const char *arn)
{
    size_t n = strlen(arn);
    for (const char *p = list; *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == n && strncmp(p, arn, n) == 0)
            return 1;
        p += len + (comma ? 1 : 0);
    }
    return 0;
}

/* The certificate at `url` (allowed already) into a heap copy `*pem` (caller frees), from the
 * cache or fetched. CM_EIO when it cannot be fetched; CM_ENOMEM. */
static cm_err cert_get(nf_callbacks *cb, const char *url, char **pem, size_t *len)
{
    char *body = NULL;
    size_t blen = 0;
    long status = 0;
    cm_err rc;

    pthread_mutex_lock(&cb->mu);
    for (size_t i = 0; i < CERT_CACHE; i++) {
        if (cb->certs[i].url && strcmp(cb->certs[i].url, url) == 0) {
            *pem = malloc(cb->certs[i].len + 1);
            if (*pem) {
                memcpy(*pem, cb->certs[i].pem, cb->certs[i].len + 1);
                *len = cb->certs[i].len;
            }
            pthread_mutex_unlock(&cb->mu);
            return *pem ? CM_OK : CM_ENOMEM;
        }
    }
    pthread_mutex_unlock(&cb->mu);
    rc = cm_httpc_get(url, NULL, cb->cfg.timeout_ms, CERT_MAX, &body, &blen, &status);
    if (rc != CM_OK || status != 200) {
        if (rc == CM_OK)
            free(body);
        return CM_EIO;
    }
    pthread_mutex_lock(&cb->mu);
    {
        size_t i = cb->next++ % CERT_CACHE;
        char *u = strdup(url), *p = malloc(blen + 1);
        if (u && p) {
            free(cb->certs[i].url);
            free(cb->certs[i].pem);
            memcpy(p, body, blen + 1);
            cb->certs[i].url = u;
            cb->certs[i].pem = p;
            cb->certs[i].len = blen;
        } else {
            free(u);
            free(p);
        }
    }
    pthread_mutex_unlock(&cb->mu);
    *pem = body;
    *len = blen;
    return CM_OK;
}

cm_err nf_callbacks_create(const nf_callbacks_config *cfg, nf_callbacks **out)
{
    nf_callbacks *cb = calloc(1, sizeof(*cb));
    if (cb == NULL)
        return CM_ENOMEM;
    cb->cfg = *cfg;
    pthread_mutex_init(&cb->mu, NULL);
    *out = cb;
    return CM_OK;
}

void nf_callbacks_destroy(nf_callbacks *cb)
{
    if (cb == NULL)
        return;
    for (size_t i = 0; i < CERT_CACHE; i++) {
        free(cb->certs[i].url);
        free(cb->certs[i].pem);
    }
    pthread_mutex_destroy(&cb->mu);
    free(cb);
}

/* --- applying a report --------------------------------------------------------------------- */

/* Applies `state` with `detail` to the delivery found by `f` (a filter naming one delivery),
 * answering 204 when applied or repeated, 404 when there is none, 409 when its state does not
 * allow it. */
static void apply(nf_ctx *ctx, cm_http_req *req, const bson_t *f, const char *ref,
                  const char *state, const char *detail)
{
    bson_t d;
    char why[300];
    cm_err rc = cm_mongo_find_one(ctx->ddb, NF_COLL_DELIVERIES, f, NULL, &d);

    if (rc == CM_ENOTFOUND) {
        cm_http_problem(req, 404, "not-found", "Not Found", "no delivery was sent as %s", ref);
        return;
    }
    if (rc != CM_OK) {
        cm_http_reply_error(req, rc, "the delivery could not be read");
        return;
    }
    rc = nf_delivery_report(ctx, &d, state, detail, NULL, why, sizeof(why));
    bson_destroy(&d);
    if (rc != CM_OK)
        cm_http_reply_error(req, rc, why);
    else
        cm_http_reply_raw(req, 204, NULL, NULL, 0);
}

/* POST /v1/callbacks/twilio/{tenant}: Twilio's StatusCallback of an SMS this service sent
 * (form: MessageSid, MessageStatus, ErrorCode, ...), signed with X-Twilio-Signature over the
 * URL Twilio was given (SMS_STATUS_CALLBACK_BASE_URL + this path). delivered -> delivered;
 * undelivered and failed -> bounced (with the error code); queued, sending, sent and the
 * others change nothing (204). A bad signature is 403 and changes nothing. */
void nf_callback_twilio(cm_http_req *req, void *ud)
{
    nf_ctx *ctx = ud;
    nf_callbacks *cb = ctx->callbacks;
    const char *tenant = cm_http_param(req, "tenant"), *ct = cm_http_header(req, "Content-Type");
    const char *given = cm_http_header(req, "X-Twilio-Signature"), *body, *sid, *status, *err;
    nf_form_param p[NF_FORM_PARAMS_MAX];
    size_t np = 0, len = 0;
    char why[200], url[700], want[64], detail[DETAIL_MAX + 1];
    bson_t f = BSON_INITIALIZER;
    int w;

    if (cb == NULL || cb->cfg.twilio_token[0] == '\0' || cb->cfg.public_base[0] == '\0') {
        cm_http_problem(req, 404, "not-found", "Not Found",
                        "SMS delivery reports are off (SMS_AUTH_TOKEN, "
                        "SMS_STATUS_CALLBACK_BASE_URL)");
        goto out;
    }
    if (tenant == NULL || !cm_user_id_valid(tenant)) { /* tenant ids have the user ids' shape */
        cm_http_problem(req, 404, "not-found", "Not Found", "no such tenant");
        goto out;
    }
    if (ct == NULL || strncmp(ct, "application/x-www-form-urlencoded", 33) != 0 ||
        (ct[33] != '\0' && ct[33] != ';')) {
        cm_http_problem(req, 415, "unsupported-media-type", "Unsupported Media Type",
                        "a status callback is application/x-www-form-urlencoded");
        goto out;
    }
    body = cm_http_body(req, &len);
    if (len > FORM_MAX) {
        cm_http_problem(req, 413, "too-big", "Content Too Large",
                        "a status callback form is at most %d bytes", FORM_MAX);
        goto out;
    }
    if (nf_form_parse(body ? body : "", len, p, NF_FORM_PARAMS_MAX, &np, why, sizeof(why)) !=
        CM_OK) {
        cm_http_reply_error(req, CM_EINVAL, why);
        goto out;
    }
    w = snprintf(url, sizeof(url), "%s%s", cb->cfg.public_base, cm_http_path(req));
    if (given == NULL || w < 0 || (size_t)w >= sizeof(url) ||
        nf_twilio_signature(cb->cfg.twilio_token, url, p, np, want, sizeof(want)) != CM_OK ||
        strlen(given) != strlen(want) || CRYPTO_memcmp(given, want, strlen(want)) != 0) {
        cm_http_problem(req, 403, "forbidden", "Forbidden",
                        "X-Twilio-Signature is missing or does not match this request");
        goto out;
    }
    sid = nf_form_get(p, np, "MessageSid");
    status = nf_form_get(p, np, "MessageStatus");
    err = nf_form_get(p, np, "ErrorCode");
    if (sid == NULL || sid[0] == '\0' || strlen(sid) > 64 || status == NULL) {
        cm_http_reply_error(req, CM_EINVAL, "a status callback has MessageSid and MessageStatus");
        goto out;
    }
    BSON_APPEND_UTF8(&f, "tenant", tenant);
    BSON_APPEND_UTF8(&f, "provider_id", sid);
    BSON_APPEND_UTF8(&f, "platform", "sms");
    if (strcmp(status, "delivered") == 0) {
        snprintf(detail, sizeof(detail), "delivered (Twilio status callback)");
        apply(ctx, req, &f, sid, "delivered", detail);
    } else if (strcmp(status, "undelivered") == 0 || strcmp(status, "failed") == 0) {
        snprintf(detail, sizeof(detail), "%s (Twilio status callback), error %.20s", status,
                 err && err[0] ? err : "none given");
        apply(ctx, req, &f, sid, "bounced", detail);
    } else {
        cm_http_reply_raw(req, 204, NULL, NULL, 0); /* on its way: nothing to record */
    }
out:
    nf_form_cleanup(p, np);
    bson_destroy(&f);
}

/* The delivery an SES notification `n` is about: its Message-ID as this service set it
 * (mail.commonHeaders.messageId, "<delivery id@...>", which SES keeps), else SES's
 * mail.messageId, matched against the recorded provider_id; into `f` and `ref`. 0 when it
 * names none. */
static int ses_delivery(const cJSON *n, bson_t *f, char *ref, size_t rn)
{
    const cJSON *mail = cJSON_GetObjectItemCaseSensitive(n, "mail");
    const cJSON *common = cJSON_GetObjectItemCaseSensitive(mail, "commonHeaders");
    const char *mid = jstr(common, "messageId"), *ses = jstr(mail, "messageId");
    const char *use = mid ? mid : ses;
    size_t len;

    if (use == NULL)
        return 0;
    if (use[0] == '<')
        use++;
    len = strlen(use);
    if (len > 0 && use[len - 1] == '>')
        len--;
    if (len == 0 || len >= rn)
        return 0;
    memcpy(ref, use, len);
    ref[len] = '\0';
    BSON_APPEND_UTF8(f, "provider_id", ref);
    BSON_APPEND_UTF8(f, "platform", "email");
    return 1;
}

/* The state and detail an SES notification `n` (notificationType Bounce, Complaint or
 * Delivery) reports; NULL for another type. */
static const char *ses_state(const cJSON *n, char *detail, size_t dn)
{
    const char *type = jstr(n, "notificationType");
    const cJSON *o;

    if (type == NULL)
        return NULL;
    if (strcmp(type, "Bounce") == 0) {
        const cJSON *r;
        o = cJSON_GetObjectItemCaseSensitive(n, "bounce");
        r = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(o, "bouncedRecipients"), 0);
        snprintf(detail, dn, "bounce %.20s/%.40s (Amazon SES)%s%.200s",
                 jstr(o, "bounceType") ? jstr(o, "bounceType") : "Undetermined",
                 jstr(o, "bounceSubType") ? jstr(o, "bounceSubType") : "General",
                 jstr(r, "diagnosticCode") ? ": " : "",
                 jstr(r, "diagnosticCode") ? jstr(r, "diagnosticCode") : "");
        return "bounced";
    }
    if (strcmp(type, "Complaint") == 0) {
        /* It reached the mailbox, and its owner marked it as spam. */
        o = cJSON_GetObjectItemCaseSensitive(n, "complaint");
        snprintf(detail, dn, "delivered, then a complaint (Amazon SES): %.60s",
                 jstr(o, "complaintFeedbackType") ? jstr(o, "complaintFeedbackType")
                                                  : "marked as spam");
        return "delivered";
    }
    if (strcmp(type, "Delivery") == 0) {
        o = cJSON_GetObjectItemCaseSensitive(n, "delivery");
        snprintf(detail, dn, "delivered (Amazon SES)%s%.200s", jstr(o, "smtpResponse") ? ": " : "",
                 jstr(o, "smtpResponse") ? jstr(o, "smtpResponse") : "");
        return "delivered";
    }
    return NULL;
}

/* POST /v1/callbacks/ses: an Amazon SNS HTTP(S) message from a topic of SNS_TOPIC_ARNS,
 * verified with the certificate at its SigningCertURL (only from SNS_CERT_HOSTS). A
 * SubscriptionConfirmation is confirmed by fetching its SubscribeURL (allowed the same way);
 * a Notification carries an SES event (Bounce -> bounced, Delivery and Complaint ->
 * delivered) applied to the e-mail delivery it names. 204 when done; 403 for a bad signature
 * or topic, changing nothing. */
void nf_callback_ses(cm_http_req *req, void *ud)
{
    nf_ctx *ctx = ud;
    nf_callbacks *cb = ctx->callbacks;
    const char *body, *type, *arn, *cert_url, *version, *sig;
    size_t len = 0, cert_len = 0;
    cJSON *m = NULL, *n = NULL;
    char *text = NULL, *pem = NULL, ref[300], detail[DETAIL_MAX + 1];
    bson_t f = BSON_INITIALIZER;
    cm_err rc;

    if (cb == NULL || cb->cfg.sns_topics[0] == '\0') {
        cm_http_problem(req, 404, "not-found", "Not Found",
                        "e-mail delivery reports are off (SNS_TOPIC_ARNS)");
        goto out;
    }
    body = cm_http_body(req, &len);
    if (body == NULL || len == 0 || len > 256 * 1024 ||
        (m = cJSON_ParseWithLength(body, len)) == NULL || !cJSON_IsObject(m)) {
        cm_http_reply_error(req, CM_EINVAL, "an SNS message is a JSON object of at most 256 KiB");
        goto out;
    }
    type = jstr(m, "Type");
    arn = jstr(m, "TopicArn");
    cert_url = jstr(m, "SigningCertURL");
    version = jstr(m, "SignatureVersion");
    sig = jstr(m, "Signature");
    if (type == NULL || arn == NULL || cert_url == NULL || version == NULL || sig == NULL) {
        cm_http_reply_error(req, CM_EINVAL, "an SNS message has Type, TopicArn, SigningCertURL, "
                                            "SignatureVersion and Signature");
        goto out;
    }
    if (!listed(cb->cfg.sns_topics, arn)) {
        cm_http_problem(req, 403, "forbidden", "Forbidden", "topic %.200s is not accepted "
                        "(SNS_TOPIC_ARNS)", arn);
        goto out;
    }
    if ((rc = nf_sns_string_to_sign(m, &text)) != CM_OK) {
        cm_http_reply_error(req, rc, "the SNS message lacks a field its signature covers, or its "
                                     "Type is unknown");
        goto out;
    }
    if (!nf_sns_url_allowed(cert_url, cb->cfg.sns_hosts)) {
        cm_http_problem(req, 403, "forbidden", "Forbidden", "SigningCertURL is not on an "
                        "allowed host (SNS_CERT_HOSTS)");
        goto out;
    }
    if ((rc = cert_get(cb, cert_url, &pem, &cert_len)) != CM_OK) {
        cm_http_reply_error(req, rc == CM_ENOMEM ? rc : CM_EAGAIN,
                            "the SNS signing certificate could not be fetched");
        goto out;
    }
    if ((rc = nf_sns_verify(pem, cert_len, version, sig, text)) != CM_OK) {
        cm_http_problem(req, 403, "forbidden", "Forbidden",
                        "the SNS signature does not verify (%s)",
                        rc == CM_EUNAUTH ? "wrong signature" : "bad certificate, encoding or "
                                                               "SignatureVersion");
        goto out;
    }
    if (strcmp(type, "SubscriptionConfirmation") == 0) {
        const char *sub = jstr(m, "SubscribeURL");
        char *answer = NULL;
        size_t alen;
        long status = 0;
        if (!nf_sns_url_allowed(sub, cb->cfg.sns_hosts)) {
            cm_http_problem(req, 403, "forbidden", "Forbidden", "SubscribeURL is not on an "
                            "allowed host (SNS_CERT_HOSTS)");
            goto out;
        }
        rc = cm_httpc_get(sub, NULL, cb->cfg.timeout_ms, 65536, &answer, &alen, &status);
        if (rc == CM_OK)
            free(answer);
        if (rc != CM_OK || status != 200) {
            cm_http_reply_error(req, CM_EAGAIN, "the subscription could not be confirmed");
            goto out;
        }
        cm_info("ses: subscribed to %s", arn);
        cm_http_reply_raw(req, 204, NULL, NULL, 0);
        goto out;
    }
    if (strcmp(type, "UnsubscribeConfirmation") == 0) {
        cm_info("ses: unsubscribed from %s", arn);
        cm_http_reply_raw(req, 204, NULL, NULL, 0);
        goto out;
    }
    {
        const char *state;
        n = cJSON_Parse(jstr(m, "Message"));
        if (n == NULL || (state = ses_state(n, detail, sizeof(detail))) == NULL ||
            !ses_delivery(n, &f, ref, sizeof(ref))) {
            cm_http_reply_error(req, CM_EINVAL, "the SNS Message is not an SES Bounce, Complaint "
                                                "or Delivery notification with mail.messageId");
            goto out;
        }
        apply(ctx, req, &f, ref, state, detail);
    }
out:
    cJSON_Delete(m);
    cJSON_Delete(n);
    free(text);
    free(pem);
    bson_destroy(&f);
}
