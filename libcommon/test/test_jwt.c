/* test_jwt.c - unit tests of access-token signing and verification (common/jwt.h), with attacks. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cJSON.h>
#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "common/jwt.h"
#include "common/log.h"
#include "common/uuid.h"
#include "testutil.h"

#define ISS "chat-platform"
#define AUD "chat-api"
#define KID "k1"
#define LEEWAY 30
#define TTL 900

static char *priv_pem, *pub_pem, *other_priv_pem;
static size_t priv_len, pub_len, other_priv_len;
static cm_jwt *signer, *verifier;
static time_t now;
static char detail[256];

static cm_err make(const char *alg, const char *key, size_t key_len, const char *kid,
                   const char *iss, const char *aud, cm_jwt **out)
{
    cm_jwt_config cfg = {.alg = alg, .key = key, .key_len = key_len, .kid = kid, .issuer = iss,
                         .audience = aud, .leeway_s = LEEWAY};
    return cm_jwt_create(&cfg, out);
}

/* A second RSA key pair, so a token can be perfectly formed but signed by the wrong key. */
static char *generate_other_key(size_t *len)
{
    EVP_PKEY *pk = EVP_RSA_gen(2048);
    BIO *bio = BIO_new(BIO_s_mem());
    char *data, *out = NULL;
    long n;

    if (pk && bio && PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL) == 1) {
        n = BIO_get_mem_data(bio, &data);
        out = malloc((size_t)n + 1);
        if (out) {
            memcpy(out, data, (size_t)n);
            out[n] = '\0';
            *len = (size_t)n;
        }
    }
    BIO_free(bio);
    EVP_PKEY_free(pk);
    return out;
}

static const char *env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && *v ? v : def;
}

static int setup(void **state)
{
    const char *priv = env_or("TEST_JWT_PRIVATE_KEY_FILE", ".local/keys/jwt-private.pem");
    const char *pub = env_or("TEST_JWT_PUBLIC_KEY_FILE", ".local/keys/jwt-public.pem");
    (void)state;
    cm_log_init("test_jwt", CM_LOG_ERROR + 1); /* refused configurations are logged */
    priv_pem = tu_read_file(priv, &priv_len);
    pub_pem = tu_read_file(pub, &pub_len);
    if (priv_pem == NULL || pub_pem == NULL) {
        fprintf(stderr, "test_jwt: cannot read %s or %s (run deploy/deps.sh)\n", priv, pub);
        return -1;
    }
    other_priv_pem = generate_other_key(&other_priv_len);
    if (other_priv_pem == NULL)
        return -1;
    if (make("RS256", priv_pem, priv_len, KID, ISS, AUD, &signer) != CM_OK ||
        make("RS256", pub_pem, pub_len, KID, ISS, AUD, &verifier) != CM_OK)
        return -1;
    now = time(NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cm_jwt_destroy(signer);
    cm_jwt_destroy(verifier);
    free(priv_pem);
    free(pub_pem);
    free(other_priv_pem);
    return 0;
}

static void fill(cm_jwt_claims *c, const char *sub, const char *tid, const char *sid,
                 const char *roles)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->sub, sizeof(c->sub), "%s", sub);
    snprintf(c->tid, sizeof(c->tid), "%s", tid);
    snprintf(c->sid, sizeof(c->sid), "%s", sid);
    snprintf(c->roles, sizeof(c->roles), "%s", roles);
}

/* Signs the standard claims with `j` at time `at`. */
static char *sign_with(const cm_jwt *j, time_t at, long ttl)
{
    cm_jwt_claims c;
    char *tok = NULL;
    fill(&c, "user-1", "tenant-1", "sess-1", "member moderator");
    assert_int_equal(cm_jwt_sign(j, &c, at, ttl, &tok), CM_OK);
    assert_non_null(tok);
    return tok;
}

/* Verifies with the normal verifier at `at`; expects CM_EUNAUTH and `want` in the detail
 * (NULL: any detail), and that the claims were left untouched. */
static void expect_refused_at(const char *token, time_t at, const char *want)
{
    cm_jwt_claims c;
    memset(&c, 0x5a, sizeof(c));
    detail[0] = '\0';
    cm_err rc = cm_jwt_verify(verifier, token, at, &c, detail, sizeof(detail));
    if (rc != CM_EUNAUTH)
        fail_msg("token accepted (%s): %.200s", cm_err_name(rc), token ? token : "(null)");
    assert_true(strlen(detail) > 0);
    if (want)
        assert_string_equal(detail, want);
    assert_int_equal((unsigned char)c.sub[0], 0x5a); /* *claims untouched on failure */
}

static void expect_refused(const char *token, const char *want)
{
    expect_refused_at(token, now, want);
}

/* The three segments of a compact JWS as heap strings. */
static void split3(const char *tok, char **h, char **p, char **s)
{
    const char *d1 = strchr(tok, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    assert_non_null(d2);
    *h = strndup(tok, (size_t)(d1 - tok));
    *p = strndup(d1 + 1, (size_t)(d2 - d1 - 1));
    *s = strdup(d2 + 1);
}

static char *join3(const char *h, const char *p, const char *s)
{
    size_t n = strlen(h) + strlen(p) + strlen(s) + 3;
    char *t = malloc(n);
    assert_non_null(t);
    snprintf(t, n, "%s.%s.%s", h, p, s);
    return t;
}

static char *b64(const char *text)
{
    char *s = tu_b64url(text, strlen(text));
    assert_non_null(s);
    return s;
}

/* A JSON payload with valid claims for now. */
static char *good_payload_json(void)
{
    char *s = malloc(512);
    assert_non_null(s);
    snprintf(s, 512,
             "{\"sub\":\"user-1\",\"tid\":\"tenant-1\",\"iss\":\"" ISS "\",\"aud\":\"" AUD
             "\",\"iat\":%ld,\"nbf\":%ld,\"exp\":%ld}",
             (long)now, (long)now, (long)now + TTL);
    return s;
}

/* Signs `grants_json` with libjwt directly: alg and key chosen by the test, header kid `kid`. */
static char *libjwt_token(const char *grants_json, const char *kid, jwt_alg_t alg,
                          const char *key, size_t key_len)
{
    jwt_t *t = NULL;
    char *s;
    assert_int_equal(jwt_new(&t), 0);
    assert_int_equal(jwt_add_grants_json(t, grants_json), 0);
    if (kid)
        assert_int_equal(jwt_add_header(t, "kid", kid), 0);
    assert_int_equal(jwt_set_alg(t, alg, (const unsigned char *)key, (int)key_len), 0);
    s = jwt_encode_str(t);
    jwt_free(t);
    assert_non_null(s);
    return s;
}

/* --- create ----------------------------------------------------------------------------- */

static void test_create_refuses_bad_config(void **state)
{
    cm_jwt *j = NULL;
    (void)state;
    assert_int_equal(make("RS256", pub_pem, 0, KID, ISS, AUD, &j), CM_EINVAL);
    assert_int_equal(make("RS256", "", 0, KID, ISS, AUD, &j), CM_EINVAL);
    assert_int_equal(make("RS256", NULL, 10, KID, ISS, AUD, &j), CM_EINVAL);
    assert_int_equal(make("HS256", pub_pem, pub_len, KID, ISS, AUD, &j), CM_EINVAL);
    assert_int_equal(make("none", pub_pem, pub_len, KID, ISS, AUD, &j), CM_EINVAL);
    assert_int_equal(make("rs256", pub_pem, pub_len, KID, ISS, AUD, &j), CM_EINVAL);
    assert_int_equal(make("RS512", pub_pem, pub_len, KID, ISS, AUD, &j), CM_EINVAL);
    assert_int_equal(make(NULL, pub_pem, pub_len, KID, ISS, AUD, &j), CM_EINVAL);
    assert_int_equal(make("RS256", pub_pem, pub_len, KID, NULL, AUD, &j), CM_EINVAL);
    assert_int_equal(make("RS256", pub_pem, pub_len, KID, "", AUD, &j), CM_EINVAL);
    assert_int_equal(make("RS256", pub_pem, pub_len, KID, ISS, NULL, &j), CM_EINVAL);
    assert_int_equal(make("RS256", pub_pem, pub_len, KID, ISS, "", &j), CM_EINVAL);
    assert_null(j);
    cm_jwt_destroy(NULL);
}

static void test_create_copies_config(void **state)
{
    char key[8192], iss[32], aud[32], kid[8];
    cm_jwt *j = NULL;
    (void)state;
    assert_true(pub_len < sizeof(key));
    memcpy(key, pub_pem, pub_len);
    snprintf(iss, sizeof(iss), ISS);
    snprintf(aud, sizeof(aud), AUD);
    snprintf(kid, sizeof(kid), KID);
    assert_int_equal(make("RS256", key, pub_len, kid, iss, aud, &j), CM_OK);
    memset(key, 0, sizeof(key));
    memset(iss, 0, sizeof(iss));
    memset(aud, 0, sizeof(aud));
    memset(kid, 0, sizeof(kid));
    char *tok = sign_with(signer, now, TTL);
    cm_jwt_claims c;
    assert_int_equal(cm_jwt_verify(j, tok, now, &c, detail, sizeof(detail)), CM_OK);
    free(tok);
    cm_jwt_destroy(j);
}

/* --- the good path ----------------------------------------------------------------------- */

static void test_sign_verify_roundtrip(void **state)
{
    cm_jwt_claims c;
    (void)state;
    char *tok = sign_with(signer, now, TTL);
    memset(&c, 0, sizeof(c));
    cm_err rc = cm_jwt_verify(verifier, tok, now, &c, detail, sizeof(detail));
    if (rc != CM_OK)
        fail_msg("verify: %s: %s", cm_err_name(rc), detail);
    assert_string_equal(c.sub, "user-1");
    assert_string_equal(c.tid, "tenant-1");
    assert_string_equal(c.sid, "sess-1");
    assert_string_equal(c.roles, "member moderator");
    assert_int_equal(c.iat, now);
    assert_int_equal(c.nbf, now);
    assert_int_equal(c.exp, now + TTL);
    free(tok);
}

static void test_token_header_and_payload(void **state)
{
    char *h, *p, *s;
    unsigned char buf[2048];
    (void)state;
    char *tok = sign_with(signer, now, TTL);
    split3(tok, &h, &p, &s);
    long n = cm_base64url_decode(h, strlen(h), buf, sizeof(buf) - 1);
    assert_true(n > 0);
    buf[n] = '\0';
    cJSON *hj = cJSON_Parse((char *)buf);
    assert_non_null(hj);
    assert_string_equal(cJSON_GetObjectItem(hj, "alg")->valuestring, "RS256");
    assert_string_equal(cJSON_GetObjectItem(hj, "kid")->valuestring, KID);
    n = cm_base64url_decode(p, strlen(p), buf, sizeof(buf) - 1);
    assert_true(n > 0);
    buf[n] = '\0';
    cJSON *pj = cJSON_Parse((char *)buf);
    assert_non_null(pj);
    assert_string_equal(cJSON_GetObjectItem(pj, "iss")->valuestring, ISS);
    assert_string_equal(cJSON_GetObjectItem(pj, "aud")->valuestring, AUD);
    assert_int_equal(cm_uuid_valid(cJSON_GetObjectItem(pj, "jti")->valuestring), 1);
    assert_true(cJSON_IsArray(cJSON_GetObjectItem(pj, "roles")));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(pj, "roles")), 2);
    /* Two tokens minted in the same second still differ (jti). */
    char *tok2 = sign_with(signer, now, TTL);
    assert_string_not_equal(tok, tok2);
    cJSON_Delete(hj);
    cJSON_Delete(pj);
    free(h);
    free(p);
    free(s);
    free(tok);
    free(tok2);
}

static void test_sign_refuses_bad_claims(void **state)
{
    cm_jwt_claims c;
    char *tok = NULL;
    (void)state;
    fill(&c, "", "tenant-1", "", "");
    assert_int_equal(cm_jwt_sign(signer, &c, now, TTL, &tok), CM_EINVAL);
    fill(&c, "user-1", "", "", "");
    assert_int_equal(cm_jwt_sign(signer, &c, now, TTL, &tok), CM_EINVAL);
    fill(&c, "user-1", "tenant-1", "", "");
    assert_int_equal(cm_jwt_sign(signer, &c, now, 0, &tok), CM_EINVAL);
    assert_int_equal(cm_jwt_sign(signer, &c, now, -5, &tok), CM_EINVAL);
    assert_null(tok);
    /* A verifier holds only the public key and cannot mint. */
    assert_int_equal(cm_jwt_sign(verifier, &c, now, TTL, &tok), CM_EINTERNAL);
    assert_null(tok);
}

static void test_no_sid_no_roles(void **state)
{
    cm_jwt_claims c;
    char *tok = NULL;
    (void)state;
    fill(&c, "user-2", "tenant-2", "", "");
    assert_int_equal(cm_jwt_sign(signer, &c, now, TTL, &tok), CM_OK);
    memset(&c, 0x11, sizeof(c));
    assert_int_equal(cm_jwt_verify(verifier, tok, now, &c, detail, sizeof(detail)), CM_OK);
    assert_string_equal(c.sub, "user-2");
    assert_string_equal(c.sid, "");
    assert_string_equal(c.roles, "");
    free(tok);
}

/* --- time -------------------------------------------------------------------------------- */

static void test_expired(void **state)
{
    (void)state;
    char *tok = sign_with(signer, now - 2000, TTL);
    expect_refused(tok, "the token expired");
    free(tok);
}

static void test_expiry_leeway_boundary(void **state)
{
    cm_jwt_claims c;
    (void)state;
    char *tok = sign_with(signer, now, TTL);
    assert_int_equal(cm_jwt_verify(verifier, tok, now + TTL + LEEWAY, &c, detail, sizeof(detail)),
                     CM_OK);
    expect_refused_at(tok, now + TTL + LEEWAY + 1, "the token expired");
    free(tok);
}

static void test_not_yet_valid(void **state)
{
    cm_jwt_claims c;
    (void)state;
    char *tok = sign_with(signer, now + 1000, TTL);
    expect_refused(tok, "the token is not valid yet (nbf)");
    free(tok);
    /* Clock skew within the leeway is tolerated, one second more is not. */
    tok = sign_with(signer, now + LEEWAY, TTL);
    assert_int_equal(cm_jwt_verify(verifier, tok, now, &c, detail, sizeof(detail)), CM_OK);
    free(tok);
    tok = sign_with(signer, now + LEEWAY + 1, TTL);
    expect_refused(tok, "the token is not valid yet (nbf)");
    free(tok);
}

/* --- who issued it ----------------------------------------------------------------------- */

static void test_wrong_issuer(void **state)
{
    cm_jwt *evil = NULL;
    (void)state;
    assert_int_equal(make("RS256", priv_pem, priv_len, KID, "someone-else", AUD, &evil), CM_OK);
    char *tok = sign_with(evil, now, TTL);
    expect_refused(tok, "the token issuer is not accepted");
    free(tok);
    cm_jwt_destroy(evil);
}

static void test_wrong_audience(void **state)
{
    cm_jwt *other = NULL;
    (void)state;
    assert_int_equal(make("RS256", priv_pem, priv_len, KID, ISS, "other-api", &other), CM_OK);
    char *tok = sign_with(other, now, TTL);
    expect_refused(tok, "the token audience is not accepted");
    free(tok);
    cm_jwt_destroy(other);
}

static void test_audience_array(void **state)
{
    char grants[512];
    cm_jwt_claims c;
    (void)state;
    /* RFC 7519 4.1.3: aud may be an array; ours must be in it. */
    snprintf(grants, sizeof(grants),
             "{\"sub\":\"u\",\"tid\":\"t\",\"iss\":\"" ISS "\",\"aud\":[\"x\",\"" AUD "\"],"
             "\"exp\":%ld}",
             (long)now + TTL);
    char *tok = libjwt_token(grants, KID, JWT_ALG_RS256, priv_pem, priv_len);
    assert_int_equal(cm_jwt_verify(verifier, tok, now, &c, detail, sizeof(detail)), CM_OK);
    free(tok);
    snprintf(grants, sizeof(grants),
             "{\"sub\":\"u\",\"tid\":\"t\",\"iss\":\"" ISS "\",\"aud\":[\"x\",\"y\"],\"exp\":%ld}",
             (long)now + TTL);
    tok = libjwt_token(grants, KID, JWT_ALG_RS256, priv_pem, priv_len);
    expect_refused(tok, "the token audience is not accepted");
    free(tok);
}

static void test_wrong_kid(void **state)
{
    cm_jwt *k2 = NULL, *nokid = NULL;
    (void)state;
    assert_int_equal(make("RS256", priv_pem, priv_len, "k2", ISS, AUD, &k2), CM_OK);
    char *tok = sign_with(k2, now, TTL);
    expect_refused(tok, "the token key id (kid) is unknown");
    free(tok);
    assert_int_equal(make("RS256", priv_pem, priv_len, NULL, ISS, AUD, &nokid), CM_OK);
    tok = sign_with(nokid, now, TTL);
    expect_refused(tok, "the token key id (kid) is unknown");
    free(tok);
    cm_jwt_destroy(k2);
    cm_jwt_destroy(nokid);
}

static void test_signed_by_another_key(void **state)
{
    cm_jwt *other = NULL;
    (void)state;
    assert_int_equal(make("RS256", other_priv_pem, other_priv_len, KID, ISS, AUD, &other), CM_OK);
    char *tok = sign_with(other, now, TTL);
    expect_refused(tok, "the token signature does not verify");
    free(tok);
    cm_jwt_destroy(other);
}

static void test_missing_claims(void **state)
{
    char grants[512];
    (void)state;
    snprintf(grants, sizeof(grants),
             "{\"sub\":\"u\",\"tid\":\"t\",\"iss\":\"" ISS "\",\"aud\":\"" AUD "\"}");
    char *tok = libjwt_token(grants, KID, JWT_ALG_RS256, priv_pem, priv_len);
    expect_refused(tok, "the token has no exp claim");
    free(tok);
    snprintf(grants, sizeof(grants),
             "{\"tid\":\"t\",\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"exp\":%ld}",
             (long)now + TTL);
    tok = libjwt_token(grants, KID, JWT_ALG_RS256, priv_pem, priv_len);
    expect_refused(tok, "the token lacks a sub or tid claim");
    free(tok);
    snprintf(grants, sizeof(grants),
             "{\"sub\":\"u\",\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"exp\":%ld}",
             (long)now + TTL);
    tok = libjwt_token(grants, KID, JWT_ALG_RS256, priv_pem, priv_len);
    expect_refused(tok, "the token lacks a sub or tid claim");
    free(tok);
    snprintf(grants, sizeof(grants),
             "{\"sub\":\"u\",\"tid\":\"t\",\"aud\":\"" AUD "\",\"exp\":%ld}", (long)now + TTL);
    tok = libjwt_token(grants, KID, JWT_ALG_RS256, priv_pem, priv_len);
    expect_refused(tok, "the token issuer is not accepted");
    free(tok);
    snprintf(grants, sizeof(grants),
             "{\"sub\":\"u\",\"tid\":\"t\",\"iss\":\"" ISS "\",\"exp\":%ld}", (long)now + TTL);
    tok = libjwt_token(grants, KID, JWT_ALG_RS256, priv_pem, priv_len);
    expect_refused(tok, "the token audience is not accepted");
    free(tok);
    /* An id longer than the claims can hold is refused, not truncated. */
    char sub[200];
    memset(sub, 'u', 129);
    sub[129] = '\0';
    snprintf(grants, sizeof(grants),
             "{\"sub\":\"%s\",\"tid\":\"t\",\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"exp\":%ld}",
             sub, (long)now + TTL);
    tok = libjwt_token(grants, KID, JWT_ALG_RS256, priv_pem, priv_len);
    expect_refused(tok, "the token lacks a sub or tid claim");
    free(tok);
}

/* --- forged algorithms -------------------------------------------------------------------- */

static void test_alg_none(void **state)
{
    (void)state;
    char *pl = good_payload_json();
    char *p = b64(pl);
    const char *headers[] = {"{\"alg\":\"none\",\"typ\":\"JWT\"}",
                             "{\"alg\":\"none\",\"typ\":\"JWT\",\"kid\":\"" KID "\"}",
                             "{\"alg\":\"None\",\"kid\":\"" KID "\"}",
                             "{\"alg\":\"NONE\",\"kid\":\"" KID "\"}",
                             "{\"typ\":\"JWT\",\"kid\":\"" KID "\"}",
                             "{\"alg\":null,\"kid\":\"" KID "\"}", NULL};
    for (int i = 0; headers[i]; i++) {
        char *h = b64(headers[i]);
        char *tok = join3(h, p, ""); /* empty signature */
        expect_refused(tok, "the token algorithm must be RS256");
        free(tok);
        /* ... and with a leftover signature from a real token. */
        tok = join3(h, p, "c2lnbmF0dXJl");
        expect_refused(tok, "the token algorithm must be RS256");
        free(tok);
        free(h);
    }
    free(p);
    free(pl);
}

static void test_hs256_signed_with_public_key(void **state)
{
    char grants[512];
    (void)state;
    /* The classic key confusion: HMAC keyed with the verifier's public key PEM. */
    snprintf(grants, sizeof(grants),
             "{\"sub\":\"admin\",\"tid\":\"tenant-1\",\"iss\":\"" ISS "\",\"aud\":\"" AUD
             "\",\"iat\":%ld,\"nbf\":%ld,\"exp\":%ld,\"roles\":[\"admin\"]}",
             (long)now, (long)now, (long)now + TTL);
    char *tok = libjwt_token(grants, KID, JWT_ALG_HS256, pub_pem, pub_len);
    expect_refused(tok, "the token algorithm must be RS256");
    free(tok);
    /* Same without the trailing newline of the PEM file, a common variant of the attack. */
    tok = libjwt_token(grants, KID, JWT_ALG_HS256, pub_pem, pub_len - 1);
    expect_refused(tok, "the token algorithm must be RS256");
    free(tok);
    tok = libjwt_token(grants, KID, JWT_ALG_HS512, pub_pem, pub_len);
    expect_refused(tok, "the token algorithm must be RS256");
    free(tok);
}

/* The HS256 HMAC of "h.p" keyed with the public key PEM, base64url. */
static char *hmac_sig(const char *h, const char *p)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    char *input = join3(h, p, "");
    input[strlen(input) - 1] = '\0'; /* "h.p" */
    assert_non_null(HMAC(EVP_sha256(), pub_pem, (int)pub_len, (unsigned char *)input,
                         strlen(input), mac, &maclen));
    free(input);
    return tu_b64url(mac, maclen);
}

static void test_header_claims_rs256_but_signature_is_hmac(void **state)
{
    (void)state;
    char *pl = good_payload_json();
    char *p = b64(pl);
    /* The header says RS256, the signature is an HMAC with the public key. */
    char *h = b64("{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"" KID "\"}");
    char *sig = hmac_sig(h, p);
    char *tok = join3(h, p, sig);
    expect_refused(tok, "the token signature does not verify");
    free(tok);
    free(sig);
    free(h);
    /* A duplicated "alg": a JSON parser that keeps the first sees RS256, one that keeps the
     * last sees HS256. Whatever the JWT library reads, the token must not pass. */
    h = b64("{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"" KID "\",\"alg\":\"HS256\"}");
    sig = hmac_sig(h, p);
    tok = join3(h, p, sig);
    expect_refused(tok, "the token algorithm must be RS256");
    free(tok);
    free(sig);
    free(h);
    h = b64("{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"" KID "\",\"alg\":\"none\"}");
    tok = join3(h, p, "");
    expect_refused(tok, NULL);
    free(tok);
    free(h);
    free(p);
    free(pl);
}

static void test_other_algorithms_in_header(void **state)
{
    (void)state;
    char *tok = sign_with(signer, now, TTL), *h, *p, *s;
    split3(tok, &h, &p, &s);
    const char *headers[] = {"{\"alg\":\"RS512\",\"typ\":\"JWT\",\"kid\":\"" KID "\"}",
                             "{\"alg\":\"PS256\",\"typ\":\"JWT\",\"kid\":\"" KID "\"}",
                             "{\"alg\":\"rs256\",\"typ\":\"JWT\",\"kid\":\"" KID "\"}",
                             "{\"alg\":\"RS256 \",\"typ\":\"JWT\",\"kid\":\"" KID "\"}",
                             "{\"alg\":[\"RS256\"],\"typ\":\"JWT\",\"kid\":\"" KID "\"}", NULL};
    for (int i = 0; headers[i]; i++) {
        char *fh = b64(headers[i]);
        char *forged = join3(fh, p, s);
        expect_refused(forged, "the token algorithm must be RS256");
        free(forged);
        free(fh);
    }
    /* A header that is fine except for typ. */
    char *fh = b64("{\"alg\":\"RS256\",\"typ\":\"JOSE+JSON\",\"kid\":\"" KID "\"}");
    char *forged = join3(fh, p, s);
    expect_refused(forged, "the token type must be JWT");
    free(forged);
    free(fh);
    free(h);
    free(p);
    free(s);
    free(tok);
}

/* --- tampering and garbage ---------------------------------------------------------------- */

static void test_payload_tampered(void **state)
{
    (void)state;
    char *tok = sign_with(signer, now, TTL), *h, *p, *s;
    split3(tok, &h, &p, &s);

    /* Flip one character in the middle of the payload segment. */
    char *flipped = strdup(tok);
    size_t mid = strlen(h) + 1 + strlen(p) / 2;
    flipped[mid] = flipped[mid] == 'A' ? 'B' : 'A';
    expect_refused(flipped, NULL);
    free(flipped);

    /* Re-encode a payload that names another user, keep the signature. */
    unsigned char buf[2048];
    long n = cm_base64url_decode(p, strlen(p), buf, sizeof(buf) - 1);
    assert_true(n > 0);
    buf[n] = '\0';
    cJSON *pj = cJSON_Parse((char *)buf);
    assert_non_null(pj);
    cJSON_ReplaceItemInObject(pj, "sub", cJSON_CreateString("admin"));
    char *text = cJSON_PrintUnformatted(pj);
    char *np = b64(text);
    char *forged = join3(h, np, s);
    expect_refused(forged, "the token signature does not verify");
    free(forged);

    /* Tamper with the signature instead. */
    char *sig = strdup(s);
    sig[strlen(sig) / 2] = sig[strlen(sig) / 2] == 'A' ? 'B' : 'A';
    forged = join3(h, p, sig);
    expect_refused(forged, "the token signature does not verify");
    free(forged);
    sig[strlen(sig) / 2] = '\0'; /* truncated signature */
    forged = join3(h, p, sig);
    expect_refused(forged, NULL);
    free(forged);
    forged = join3(h, p, ""); /* no signature at all */
    expect_refused(forged, NULL);
    free(forged);

    free(sig);
    free(np);
    free(text);
    cJSON_Delete(pj);
    free(h);
    free(p);
    free(s);
    free(tok);
}

static void test_part_count(void **state)
{
    const char *three = "the token is not a JWS compact serialisation (three parts)";
    char buf[8192];
    (void)state;
    char *tok = sign_with(signer, now, TTL);
    snprintf(buf, sizeof(buf), "%s.x", tok); /* four parts */
    expect_refused(buf, three);
    snprintf(buf, sizeof(buf), "%s.", tok); /* four parts, the last empty */
    expect_refused(buf, three);
    *strrchr(tok, '.') = '\0'; /* two parts */
    expect_refused(tok, three);
    *strrchr(tok, '.') = '\0'; /* one part */
    expect_refused(tok, three);
    free(tok);
    expect_refused("a.b.c.d.e", three);
}

static void test_garbage(void **state)
{
    (void)state;
    expect_refused("", "no token");
    expect_refused(NULL, "no token");
    expect_refused("abc", NULL);
    expect_refused(".", NULL);
    expect_refused("..", NULL);
    expect_refused("...", NULL);
    expect_refused("a.b.c", NULL);
    expect_refused("!!!.###.$$$", "the token header is not base64url");
    expect_refused("eyJhbGciOiJSUzI1NiJ9..", NULL);
    expect_refused("Zm9v.e30.e30", "the token header is not a JSON object"); /* "foo" */
    expect_refused("W10.e30.e30", "the token header is not a JSON object");  /* "[]" */
    expect_refused("Bearer eyJhbGciOiJSUzI1NiJ9.e30.e30", NULL);
    expect_refused("\xff\xfe.\x01.\x02", NULL);
    /* A valid header, a payload that is not JSON. */
    char *h = b64("{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"" KID "\"}");
    char *tok = join3(h, "bm90IGpzb24", "c2ln");
    expect_refused(tok, NULL);
    free(tok);
    free(h);
    /* Longer than any real token. */
    char *huge = malloc(9000);
    assert_non_null(huge);
    memset(huge, 'a', 8999);
    huge[8999] = '\0';
    huge[10] = '.';
    huge[20] = '.';
    expect_refused(huge, "the token is longer than 8192 bytes");
    free(huge);
    /* Random bytes. */
    char rnd[257];
    assert_int_equal(cm_random_hex(rnd, 128), CM_OK);
    expect_refused(rnd, NULL);
}

/* --- helpers and configuration ------------------------------------------------------------ */

static void test_base64url_decode(void **state)
{
    unsigned char out[16];
    (void)state;
    assert_int_equal(cm_base64url_decode("", 0, out, sizeof(out)), 0);
    assert_int_equal(cm_base64url_decode("Zm9v", 4, out, sizeof(out)), 3);
    assert_memory_equal(out, "foo", 3);
    assert_int_equal(cm_base64url_decode("Zm8", 3, out, sizeof(out)), 2);
    assert_memory_equal(out, "fo", 2);
    assert_int_equal(cm_base64url_decode("Zg", 2, out, sizeof(out)), 1);
    assert_memory_equal(out, "f", 1);
    assert_int_equal(cm_base64url_decode("-_8", 3, out, sizeof(out)), 2); /* url alphabet */
    assert_int_equal(out[0], 0xfb);
    assert_int_equal(out[1], 0xff);
    assert_int_equal(cm_base64url_decode("Z", 1, out, sizeof(out)), -1);     /* impossible */
    assert_int_equal(cm_base64url_decode("Zm9vY", 5, out, sizeof(out)), -1); /* impossible */
    assert_int_equal(cm_base64url_decode("+/8", 3, out, sizeof(out)), -1);   /* std alphabet */
    assert_int_equal(cm_base64url_decode("Zg==", 4, out, sizeof(out)), -1);  /* padding */
    assert_int_equal(cm_base64url_decode("Zm 9", 4, out, sizeof(out)), -1);
    assert_int_equal(cm_base64url_decode("Zm9vYmFy", 8, out, 5), -1); /* 6 bytes into 5 */
    assert_int_equal(cm_base64url_decode("Zm9vYmFy", 8, out, 6), 6);
}

static void test_base64url_encode_round_trips(void **state)
{
    char out[64];
    unsigned char bytes[40], back[40];
    (void)state;
    assert_int_equal(cm_base64url_encode((const unsigned char *)"", 0, out, sizeof(out)), 0);
    assert_string_equal(out, "");
    assert_int_equal(cm_base64url_encode((const unsigned char *)"foo", 3, out, sizeof(out)), 4);
    assert_string_equal(out, "Zm9v");
    assert_int_equal(cm_base64url_encode((const unsigned char *)"fo", 2, out, sizeof(out)), 3);
    assert_string_equal(out, "Zm8");
    assert_int_equal(cm_base64url_encode((const unsigned char *)"\xfb\xff", 2, out, sizeof(out)), 3);
    assert_string_equal(out, "-_8");
    assert_int_equal(cm_base64url_encode((const unsigned char *)"foo", 3, out, 4), -1); /* NUL */
    assert_int_equal(cm_base64url_encode((const unsigned char *)"foo", 3, out, 5), 4);
    for (size_t len = 0; len < sizeof(bytes); len++) {
        for (size_t i = 0; i < len; i++)
            bytes[i] = (unsigned char)(i * 37 + len);
        long n = cm_base64url_encode(bytes, len, out, sizeof(out));
        assert_true(n >= 0);
        assert_int_equal(cm_base64url_decode(out, (size_t)n, back, sizeof(back)), (long)len);
        assert_memory_equal(back, bytes, len);
    }
}

static void test_from_env(void **state)
{
    cm_jwt *s = NULL, *v = NULL;
    cm_jwt_claims c;
    char *tok = NULL;
    (void)state;
    const char *priv = env_or("TEST_JWT_PRIVATE_KEY_FILE", ".local/keys/jwt-private.pem");
    const char *pub = env_or("TEST_JWT_PUBLIC_KEY_FILE", ".local/keys/jwt-public.pem");
    unsetenv("JWT_ALG");
    unsetenv("JWT_ISSUER");
    unsetenv("JWT_AUDIENCE");
    unsetenv("JWT_KID");
    unsetenv("JWT_LEEWAY_S");
    unsetenv("CM_UNIT_NO_SUCH_VAR");
    assert_int_equal(cm_jwt_from_env("CM_UNIT_NO_SUCH_VAR", &s), CM_ENOTFOUND);
    setenv("CM_UNIT_PRIV", priv, 1);
    setenv("CM_UNIT_PUB", pub, 1);
    assert_int_equal(cm_jwt_from_env("CM_UNIT_PRIV", &s), CM_OK);
    assert_int_equal(cm_jwt_from_env("CM_UNIT_PUB", &v), CM_OK);
    fill(&c, "u", "t", "", "");
    assert_int_equal(cm_jwt_sign(s, &c, now, TTL, &tok), CM_OK);
    /* The defaults are the ones the fixed verifier of this test uses. */
    assert_int_equal(cm_jwt_verify(v, tok, now, &c, detail, sizeof(detail)), CM_OK);
    assert_int_equal(cm_jwt_verify(verifier, tok, now, &c, detail, sizeof(detail)), CM_OK);
    free(tok);
    cm_jwt_destroy(s);
    cm_jwt_destroy(v);
    v = NULL;
    setenv("JWT_ALG", "HS256", 1);
    assert_int_equal(cm_jwt_from_env("CM_UNIT_PUB", &v), CM_EINVAL);
    unsetenv("JWT_ALG");
    setenv("JWT_LEEWAY_S", "100000", 1);
    assert_int_equal(cm_jwt_from_env("CM_UNIT_PUB", &v), CM_EINVAL);
    unsetenv("JWT_LEEWAY_S");
    setenv("CM_UNIT_EMPTY", "/dev/null", 1);
    assert_int_equal(cm_jwt_from_env("CM_UNIT_EMPTY", &v), CM_EINVAL); /* empty key */
    assert_null(v);
    unsetenv("CM_UNIT_PRIV");
    unsetenv("CM_UNIT_PUB");
    unsetenv("CM_UNIT_EMPTY");
}

#define VERIFY_THREADS 4
#define VERIFY_EACH 25

static void *verify_many(void *arg)
{
    const char *tok = arg;
    char d[128];
    cm_jwt_claims c;
    for (int i = 0; i < VERIFY_EACH; i++)
        if (cm_jwt_verify(verifier, tok, now, &c, d, sizeof(d)) != CM_OK ||
            strcmp(c.sub, "user-1") != 0)
            return arg;
    return NULL;
}

static void test_verify_is_thread_safe(void **state)
{
    pthread_t th[VERIFY_THREADS];
    (void)state;
    char *tok = sign_with(signer, now, TTL);
    for (int i = 0; i < VERIFY_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, verify_many, tok), 0);
    for (int i = 0; i < VERIFY_THREADS; i++) {
        void *res;
        pthread_join(th[i], &res);
        assert_null(res);
    }
    free(tok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_refuses_bad_config),
        cmocka_unit_test(test_create_copies_config),
        cmocka_unit_test(test_sign_verify_roundtrip),
        cmocka_unit_test(test_token_header_and_payload),
        cmocka_unit_test(test_sign_refuses_bad_claims),
        cmocka_unit_test(test_no_sid_no_roles),
        cmocka_unit_test(test_expired),
        cmocka_unit_test(test_expiry_leeway_boundary),
        cmocka_unit_test(test_not_yet_valid),
        cmocka_unit_test(test_wrong_issuer),
        cmocka_unit_test(test_wrong_audience),
        cmocka_unit_test(test_audience_array),
        cmocka_unit_test(test_wrong_kid),
        cmocka_unit_test(test_signed_by_another_key),
        cmocka_unit_test(test_missing_claims),
        cmocka_unit_test(test_alg_none),
        cmocka_unit_test(test_hs256_signed_with_public_key),
        cmocka_unit_test(test_header_claims_rs256_but_signature_is_hmac),
        cmocka_unit_test(test_other_algorithms_in_header),
        cmocka_unit_test(test_payload_tampered),
        cmocka_unit_test(test_part_count),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_base64url_decode),
        cmocka_unit_test(test_base64url_encode_round_trips),
        cmocka_unit_test(test_from_env),
        cmocka_unit_test(test_verify_is_thread_safe),
    };
    return cmocka_run_group_tests_name("jwt", tests, setup, teardown);
}
