/* smtp.h - sending one e-mail over SMTP (smtp://, STARTTLS, or smtps://) through libcurl:
 * a MIME multipart/alternative message (text/plain and text/html, UTF-8, quoted-printable),
 * bounded in time. */
#ifndef COMMON_SMTP_H
#define COMMON_SMTP_H

#include <stddef.h>

#include "common/error.h"

/* Where and as whom mail is sent. */
typedef struct cm_smtp_server {
    const char *url;      /* smtp://host:port (STARTTLS when the server offers it) or
                             smtps://host:port (TLS from the start) */
    const char *from;     /* envelope sender and From: address, e.g. noreply@example.com */
    const char *from_name; /* display name of From: (may be NULL or "") */
    const char *user;     /* SMTP AUTH user (NULL or "": no authentication) */
    const char *password; /* SMTP AUTH password */
    long timeout_ms;      /* the whole exchange, connection included */
    int require_tls;      /* 1: refuse to send over a connection STARTTLS did not protect */
} cm_smtp_server;

/* One message. Every string is UTF-8; header values must not contain CR or LF. */
typedef struct cm_smtp_message {
    const char *to;         /* one recipient address */
    const char *subject;    /* encoded as an RFC 2047 word when not plain ASCII */
    const char *text;       /* text/plain body */
    const char *html;       /* text/html body (NULL: text only) */
    const char *message_id; /* Message-ID without the angle brackets (e.g. uuid@host); the
                               same id on every attempt lets receivers drop a duplicate */
} cm_smtp_message;

/* Sends `msg` through `srv`. `*reply` receives the server's last reply code (250 when
 * accepted; 0 when no reply was read) and `why` (size n) a one-line explanation. Returns
 * CM_OK when the server accepted the message; CM_EAGAIN for what may work later (a 4xx reply,
 * the server unreachable, a timeout: RFC 5321 section 4.2.1 transient failures); CM_EINVAL
 * for a permanent refusal (5xx: unknown mailbox, policy) or a header value holding CR/LF;
 * CM_ENOMEM. Thread-safe (one curl handle per call). */
cm_err cm_smtp_send(const cm_smtp_server *srv, const cm_smtp_message *msg, long *reply,
                    char *why, size_t n);

/* Writes `s` as an RFC 2047 "encoded-word" header value (=?UTF-8?B?...?=) into `out` (size
 * n) when it holds any byte outside printable ASCII, else copies it. CM_ETOOBIG when `out`
 * is too small. */
cm_err cm_smtp_header_encode(const char *s, char *out, size_t n);

#endif
