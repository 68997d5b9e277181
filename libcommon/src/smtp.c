/* smtp.c - one e-mail over SMTP with libcurl's SMTP and MIME support. */
#include "common/smtp.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <openssl/evp.h>

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int has_crlf(const char *s)
{
    return s != NULL && strpbrk(s, "\r\n") != NULL;
}

cm_err cm_smtp_header_encode(const char *s, char *out, size_t n)
{
    size_t len = strlen(s), at = 0, used = 0;
    int plain = 1;

    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            plain = 0;
    if (plain) {
        if (len + 1 > n)
            return CM_ETOOBIG;
        memcpy(out, s, len + 1);
        return CM_OK;
    }
    /* RFC 2047 section 2: an encoded-word is at most 75 characters; 45 bytes of input make 60
     * of base64, plus the 12 of "=?UTF-8?B?" and "?=". Words are cut between UTF-8 characters
     * (section 5: each word must hold whole characters) and folded with CRLF SP. */
    while (at < len) {
        size_t take = len - at > 45 ? 45 : len - at;
        unsigned char b64[64];
        int w;
        while (take < len - at && take > 0 && ((unsigned char)s[at + take] & 0xC0) == 0x80)
            take--;
        if (take == 0)
            return CM_EINVAL;
        w = EVP_EncodeBlock(b64, (const unsigned char *)s + at, (int)take);
        if (used + (size_t)w + 16 > n)
            return CM_ETOOBIG;
        used += (size_t)snprintf(out + used, n - used, "%s=?UTF-8?B?%s?=", at ? "\r\n " : "",
                                 (const char *)b64);
        at += take;
    }
    return CM_OK;
}

cm_err cm_smtp_send(const cm_smtp_server *srv, const cm_smtp_message *msg, long *reply,
                    char *why, size_t n)
{
    CURL *curl = NULL;
    curl_mime *mime = NULL, *alt = NULL;
    curl_mimepart *part;
    struct curl_slist *rcpt = NULL, *hdrs = NULL, *inline_hdr = NULL;
    char line[1200], subject[1024], name[400], from[300];
    CURLcode cc;
    cm_err rc = CM_ENOMEM;

    *reply = 0;
    if (has_crlf(msg->to) || has_crlf(msg->subject) || has_crlf(srv->from) ||
        has_crlf(srv->from_name) || has_crlf(msg->message_id)) {
        snprintf(why, n, "a header value holds CR or LF");
        return CM_EINVAL;
    }
    if (strncasecmp(srv->url, "smtp://", 7) != 0 && strncasecmp(srv->url, "smtps://", 8) != 0) {
        snprintf(why, n, "the SMTP URL must be smtp:// or smtps://");
        return CM_EINVAL;
    }
    if (cm_smtp_header_encode(msg->subject, subject, sizeof(subject)) != CM_OK ||
        cm_smtp_header_encode(srv->from_name ? srv->from_name : "", name, sizeof(name)) !=
            CM_OK) {
        snprintf(why, n, "the subject or sender name is too long");
        return CM_EINVAL;
    }
    pthread_once(&curl_once, curl_init_once);
    if ((curl = curl_easy_init()) == NULL)
        goto out;
    snprintf(from, sizeof(from), "<%s>", srv->from);
    snprintf(line, sizeof(line), "<%s>", msg->to);
    if ((rcpt = curl_slist_append(NULL, line)) == NULL)
        goto out;
    /* The message's own header lines: libcurl writes the MIME ones (RFC 2045) itself. */
    {
        char h[5][1200];
        snprintf(h[0], sizeof(h[0]), "From: %s%s%s", name, name[0] ? " " : "", from);
        snprintf(h[1], sizeof(h[1]), "To: <%s>", msg->to);
        snprintf(h[2], sizeof(h[2]), "Subject: %s", subject);
        snprintf(h[3], sizeof(h[3]), "Message-ID: <%s>", msg->message_id ? msg->message_id : "");
        snprintf(h[4], sizeof(h[4]), "Auto-Submitted: auto-generated"); /* RFC 3834 */
        for (int i = 0; i < 5; i++) {
            struct curl_slist *next;
            if (i == 3 && msg->message_id == NULL)
                continue;
            if ((next = curl_slist_append(hdrs, h[i])) == NULL)
                goto out;
            hdrs = next;
        }
    }
    if ((mime = curl_mime_init(curl)) == NULL || (alt = curl_mime_init(curl)) == NULL)
        goto out;
    /* multipart/alternative: the plain text first, the preferred HTML last (RFC 2046 5.1.4). */
    if ((part = curl_mime_addpart(alt)) == NULL ||
        curl_mime_data(part, msg->text, CURL_ZERO_TERMINATED) != CURLE_OK ||
        curl_mime_type(part, "text/plain; charset=UTF-8") != CURLE_OK ||
        curl_mime_encoder(part, "quoted-printable") != CURLE_OK)
        goto out;
    if (msg->html &&
        ((part = curl_mime_addpart(alt)) == NULL ||
         curl_mime_data(part, msg->html, CURL_ZERO_TERMINATED) != CURLE_OK ||
         curl_mime_type(part, "text/html; charset=UTF-8") != CURLE_OK ||
         curl_mime_encoder(part, "quoted-printable") != CURLE_OK))
        goto out;
    if ((part = curl_mime_addpart(mime)) == NULL ||
        (inline_hdr = curl_slist_append(NULL, "Content-Disposition: inline")) == NULL)
        goto out;
    if (curl_mime_subparts(part, alt) != CURLE_OK) /* alt is owned by mime from here */
        goto out;
    alt = NULL;
    curl_mime_type(part, "multipart/alternative");
    curl_mime_headers(part, inline_hdr, 1);
    inline_hdr = NULL;
    curl_easy_setopt(curl, CURLOPT_URL, srv->url);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, srv->timeout_ms);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, srv->timeout_ms);
    curl_easy_setopt(curl, CURLOPT_MAIL_FROM, from);
    curl_easy_setopt(curl, CURLOPT_MAIL_RCPT, rcpt);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs); /* the mail's headers, for SMTP */
    curl_easy_setopt(curl, CURLOPT_MIMEPOST, mime);
    curl_easy_setopt(curl, CURLOPT_USE_SSL, srv->require_tls ? (long)CURLUSESSL_ALL
                                                             : (long)CURLUSESSL_TRY);
    if (srv->user && srv->user[0]) {
        curl_easy_setopt(curl, CURLOPT_USERNAME, srv->user);
        curl_easy_setopt(curl, CURLOPT_PASSWORD, srv->password ? srv->password : "");
    }
    cc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, reply);
    if (cc == CURLE_OK) {
        snprintf(why, n, "accepted (%ld)", *reply);
        rc = CM_OK;
    } else if (*reply >= 500 && *reply < 600) {
        snprintf(why, n, "refused for good (%ld): %s", *reply, curl_easy_strerror(cc));
        rc = CM_EINVAL;
    } else {
        /* 4xx replies, an unreachable server or a timeout: RFC 5321 says try again later. */
        snprintf(why, n, "%s%s (%ld)", *reply >= 400 ? "deferred: " : "",
                 curl_easy_strerror(cc), *reply);
        rc = CM_EAGAIN;
    }
out:
    if (rc == CM_ENOMEM)
        snprintf(why, n, "out of memory");
    curl_slist_free_all(inline_hdr);
    curl_mime_free(alt);
    curl_mime_free(mime);
    curl_slist_free_all(rcpt);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(curl);
    return rc;
}
