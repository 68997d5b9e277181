/* notification_webpush.h - web push (issue 10): the subscription keys a browser gives
 * (PushSubscription: endpoint, keys.p256dh, keys.auth), the message encryption of RFC 8291
 * (aes128gcm content coding of RFC 8188 with an ECDH P-256 + HKDF-SHA256 key, AES-128-GCM),
 * and the VAPID authorization of RFC 8292 (an ES256 JWT and the application server's public
 * key). All cryptography is OpenSSL's EVP (and libjwt's ES256 through common/jws.h). */
#ifndef NOTIFICATION_WEBPUSH_H
#define NOTIFICATION_WEBPUSH_H

#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "common/error.h"

#define NF_WEBPUSH_RS 4096         /* record size: one record of RFC 8188 section 2 */
#define NF_WEBPUSH_PLAIN_MAX 3993  /* RFC 8291 section 4: 4096 - 86 header - 16 tag - 1 */
#define NF_WEBPUSH_ENDPOINT_MAX 1024 /* characters of a subscription's endpoint URL */
#define NF_WEBPUSH_P256DH_LEN 65   /* uncompressed P-256 point (X9.62, 0x04 || X || Y) */
#define NF_WEBPUSH_AUTH_LEN 16     /* the authentication secret (RFC 8291 section 3.2) */
#define NF_WEBPUSH_VAPID_MAX 1024  /* bytes of an Authorization header value */

/* 1 when `p256dh` (base64url, unpadded) is an uncompressed point on P-256 and `auth`
 * (base64url) 16 bytes, as a browser's PushSubscription gives them; otherwise 0 with the
 * reason in `why` (size n), naming the field ("keys.p256dh", "keys.auth"). */
int nf_webpush_keys_valid(const char *p256dh, const char *auth, char *why, size_t n);

/* 1 when `url` may be a push service endpoint: http:// or https://, a host, 1..1024
 * printable ASCII characters without spaces. The address it resolves to is checked at
 * connect time (nf_webhook_open_checked). */
int nf_webpush_endpoint_valid(const char *url);

/* Encrypts `plain[0..n)` (n <= NF_WEBPUSH_PLAIN_MAX) for the subscription whose keys are
 * `p256dh` and `auth` (base64url): RFC 8291 section 3.4 with a fresh ephemeral P-256 key and
 * a random 16-byte salt, as one aes128gcm record (RFC 8188, rs 4096, the key id being the
 * ephemeral public key). The message is a heap buffer `*out` of `*out_len` bytes (caller
 * frees). CM_EINVAL for malformed keys or a too long `plain`; CM_EIO when OpenSSL failed;
 * CM_ENOMEM. */
cm_err nf_webpush_encrypt(const char *p256dh, const char *auth, const unsigned char *plain,
                          size_t n, unsigned char **out, size_t *out_len);

/* nf_webpush_encrypt with the ephemeral key pair `as_private` (32-byte scalar) and
 * `as_public` (65-byte uncompressed point) and `salt` (16 bytes) given: the known-answer test
 * of RFC 8291 appendix A. `ua_public` and `auth` are the raw subscription keys. */
cm_err nf_webpush_encrypt_with(const unsigned char ua_public[NF_WEBPUSH_P256DH_LEN],
                               const unsigned char auth[NF_WEBPUSH_AUTH_LEN],
                               const unsigned char as_private[32],
                               const unsigned char as_public[NF_WEBPUSH_P256DH_LEN],
                               const unsigned char salt[16], const unsigned char *plain,
                               size_t n, unsigned char **out, size_t *out_len);

/* The VAPID Authorization header value "vapid t=<JWT>, k=<public key>" (RFC 8292 section 3)
 * for a request to `endpoint`: an ES256 JWT signed with the P-256 private key `pem[0..len)`
 * (PEM, PKCS#8 or SEC 1) whose claims are aud (the endpoint's origin), exp (`now_s` + 12 h:
 * at most 24 h, section 2) and sub (`subject`, a mailto: or https: contact), and the key's
 * public point in base64url. Into `out` (size n). CM_EINVAL for a key that is not a P-256
 * private key or an endpoint without an origin; CM_ETOOBIG; CM_ENOMEM. */
cm_err nf_webpush_vapid(const char *pem, size_t len, const char *endpoint, const char *subject,
                        int64_t now_s, char *out, size_t n);

/* libcurl's CURLOPT_OPENSOCKETFUNCTION of the webhook sender (notification_webhooks.c), with
 * `webhooks` (an nf_webhooks) as its user data: refuses a resolved address that is not
 * public unless WEBHOOK_ALLOW_PRIVATE_CIDRS allows it, so web push endpoints (given by end
 * users) are held to the same rule as tenants' webhook URLs. */
curl_socket_t nf_webhook_open_checked(void *webhooks, curlsocktype purpose,
                                      struct curl_sockaddr *addr);

#endif
