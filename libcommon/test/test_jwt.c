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
#include <unistd.h>

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

/* --- key sets, rotation and JWK Sets ---------------------------------------------------- */

/* A PEM key generated here: RSA of `bits` or, with bits 0, an EC P-256 key. */
static char *gen_pem(int bits, int private_part, size_t *len)
{
    EVP_PKEY *pk = bits ? EVP_RSA_gen((unsigned)bits) : EVP_EC_gen("P-256");
    BIO *bio = BIO_new(BIO_s_mem());
    char *data, *out = NULL;
    int ok;
    assert_non_null(pk);
    ok = private_part ? PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL)
                      : PEM_write_bio_PUBKEY(bio, pk);
    assert_int_equal(ok, 1);
    long n = BIO_get_mem_data(bio, &data);
    out = strndup(data, (size_t)n);
    *len = (size_t)n;
    BIO_free(bio);
    EVP_PKEY_free(pk);
    return out;
}

static cm_jwt *keyless(void)
{
    cm_jwt *j = NULL;
    cm_jwt_config cfg = {.alg = "RS256", .issuer = ISS, .audience = AUD, .leeway_s = LEEWAY};
    assert_int_equal(cm_jwt_create_keyless(&cfg, &j), CM_OK);
    return j;
}

static void expect_verified(const cm_jwt *v, const char *tok)
{
    cm_jwt_claims c;
    cm_err rc = cm_jwt_verify(v, tok, now, &c, detail, sizeof(detail));
    if (rc != CM_OK)
        fail_msg("refused: %s: %s", cm_err_name(rc), detail);
    assert_string_equal(c.sub, "user-1");
}

static void expect_refused_by(const cm_jwt *v, const char *tok, const char *want)
{
    cm_jwt_claims c;
    detail[0] = '\0';
    assert_int_equal(cm_jwt_verify(v, tok, now, &c, detail, sizeof(detail)), CM_EUNAUTH);
    assert_string_equal(detail, want);
}

/* The kid of a token's header (static buffer). */
static const char *token_kid(const char *tok)
{
    static char kid[80];
    unsigned char buf[1024];
    long n = cm_base64url_decode(tok, (size_t)(strchr(tok, '.') - tok), buf, sizeof(buf) - 1);
    assert_true(n > 0);
    buf[n] = '\0';
    cJSON *h = cJSON_Parse((char *)buf);
    cJSON *k = cJSON_GetObjectItem(h, "kid");
    snprintf(kid, sizeof(kid), "%s", cJSON_IsString(k) ? k->valuestring : "");
    cJSON_Delete(h);
    return kid;
}

static void test_rotation_newest_key_signs_old_keys_verify(void **state)
{
    size_t k2_len;
    char *k2 = gen_pem(2048, 1, &k2_len);
    cm_jwt *s = NULL, *v = NULL;
    char *jwks = NULL;
    (void)state;
    assert_int_equal(make("RS256", priv_pem, priv_len, "k1", ISS, AUD, &s), CM_OK);
    char *old = sign_with(s, now, TTL);
    assert_string_equal(token_kid(old), "k1");
    assert_int_equal(cm_jwt_add_key(s, "k2", k2, k2_len), CM_OK);
    assert_int_equal(cm_jwt_key_count(s), 2);
    char *fresh = sign_with(s, now, TTL);
    assert_string_equal(token_kid(fresh), "k2"); /* the newest key signs */
    /* A verifier fed the signer's JWK Set accepts both: old tokens live until they expire. */
    assert_int_equal(cm_jwt_jwks(s, &jwks), CM_OK);
    v = keyless();
    int nk = 0;
    assert_int_equal(cm_jwt_set_jwks(v, jwks, strlen(jwks), &nk, detail, sizeof(detail)), CM_OK);
    assert_int_equal(nk, 2);
    expect_verified(v, old);
    expect_verified(v, fresh);
    expect_verified(s, old); /* the signer verifies with the public halves too */
    expect_verified(s, fresh);
    /* The original single-key verifier knows k1 only. */
    expect_verified(verifier, old);
    expect_refused_by(verifier, fresh, "the token key id (kid) is unknown");
    /* A token whose kid names k1 but which k2 signed does not verify. */
    char *h, *p, *sig, *fh, *fp, *fsig;
    split3(old, &h, &p, &sig);
    split3(fresh, &fh, &fp, &fsig);
    char *mixed = join3(h, fp, fsig);
    expect_refused_by(v, mixed, "the token signature does not verify");
    free(h), free(p), free(sig), free(fh), free(fp), free(fsig), free(mixed);
    free(old);
    free(fresh);
    free(jwks);
    free(k2);
    cm_jwt_destroy(s);
    cm_jwt_destroy(v);
}

static void test_add_key_refusals(void **state)
{
    size_t l1024, lec, lpub;
    char *k1024 = gen_pem(1024, 1, &l1024), *ec = gen_pem(0, 1, &lec);
    char *pub2 = gen_pem(2048, 0, &lpub);
    cm_jwt *j = keyless();
    char kid[16];
    (void)state;
    assert_int_equal(cm_jwt_add_key(j, "short", k1024, l1024), CM_EINVAL); /* RFC 7518 3.3 */
    assert_int_equal(cm_jwt_add_key(j, "ec", ec, lec), CM_EINVAL);
    assert_int_equal(cm_jwt_add_key(j, "junk", "-----BEGIN PRIVATE KEY-----\nAAAA\n", 34), CM_EINVAL);
    assert_int_equal(cm_jwt_add_key(j, "has space", pub_pem, pub_len), CM_EINVAL);
    assert_int_equal(cm_jwt_add_key(j, "", pub_pem, pub_len), CM_EINVAL);
    assert_int_equal(cm_jwt_add_key(j, "k1", pub_pem, 0), CM_EINVAL);
    assert_int_equal(cm_jwt_key_count(j), 0);
    assert_int_equal(cm_jwt_add_key(j, "k1", pub_pem, pub_len), CM_OK);
    assert_int_equal(cm_jwt_add_key(j, "k1", priv_pem, priv_len), CM_ECONFLICT);
    for (int i = 1; i < CM_JWT_KEYS_MAX; i++) {
        snprintf(kid, sizeof(kid), "x%d", i);
        assert_int_equal(cm_jwt_add_key(j, kid, pub2, lpub), CM_OK);
    }
    assert_int_equal(cm_jwt_add_key(j, "one-too-many", pub2, lpub), CM_ETOOBIG);
    assert_int_equal(cm_jwt_key_count(j), CM_JWT_KEYS_MAX);
    /* The newest key is public only: this verifier cannot mint. */
    cm_jwt_claims c;
    char *tok = NULL;
    fill(&c, "u", "t", "", "");
    assert_int_equal(cm_jwt_sign(j, &c, now, TTL, &tok), CM_EINTERNAL);
    assert_null(tok);
    free(k1024);
    free(ec);
    free(pub2);
    cm_jwt_destroy(j);
}

/* n and e in the JWK Set are the key's own modulus and exponent, read back with OpenSSL. */
static void test_jwks_document_matches_the_key(void **state)
{
    char *jwks = NULL;
    unsigned char nb[1024], eb[8];
    (void)state;
    assert_int_equal(cm_jwt_jwks(signer, &jwks), CM_OK);
    cJSON *doc = cJSON_Parse(jwks);
    cJSON *keys = cJSON_GetObjectItem(doc, "keys");
    assert_int_equal(cJSON_GetArraySize(keys), 1);
    cJSON *k = cJSON_GetArrayItem(keys, 0);
    assert_string_equal(cJSON_GetObjectItem(k, "kty")->valuestring, "RSA");
    assert_string_equal(cJSON_GetObjectItem(k, "use")->valuestring, "sig");
    assert_string_equal(cJSON_GetObjectItem(k, "alg")->valuestring, "RS256");
    assert_string_equal(cJSON_GetObjectItem(k, "kid")->valuestring, KID);
    assert_string_equal(cJSON_GetObjectItem(k, "e")->valuestring, "AQAB"); /* 65537 */
    assert_null(cJSON_GetObjectItem(k, "d")); /* never a private member */
    const char *n64 = cJSON_GetObjectItem(k, "n")->valuestring;
    assert_null(strchr(n64, '='));
    long nl = cm_base64url_decode(n64, strlen(n64), nb, sizeof(nb));
    assert_int_equal(nl, 256);
    BIO *b = BIO_new_mem_buf(pub_pem, (int)pub_len);
    EVP_PKEY *pk = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
    BIGNUM *n = NULL;
    assert_int_equal(EVP_PKEY_get_bn_param(pk, "n", &n), 1);
    unsigned char want[256];
    assert_int_equal(BN_bn2bin(n, want), 256);
    assert_memory_equal(nb, want, 256);
    assert_int_equal(cm_base64url_decode("AQAB", 4, eb, sizeof(eb)), 3);
    BN_free(n);
    EVP_PKEY_free(pk);
    BIO_free(b);
    cJSON_Delete(doc);
    free(jwks);
    /* A key configured without a kid is not published: nobody could name it. */
    cm_jwt *nokid = NULL;
    assert_int_equal(make("RS256", pub_pem, pub_len, NULL, ISS, AUD, &nokid), CM_OK);
    assert_int_equal(cm_jwt_jwks(nokid, &jwks), CM_OK);
    assert_string_equal(jwks, "{\"keys\":[]}");
    free(jwks);
    cm_jwt_destroy(nokid);
}

/* The one public JWK of the test key, for hand-made JWK Sets. */
static void our_jwk(char *n, size_t nn)
{
    char *jwks = NULL;
    assert_int_equal(cm_jwt_jwks(verifier, &jwks), CM_OK);
    cJSON *doc = cJSON_Parse(jwks);
    snprintf(n, nn, "%s",
             cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(doc, "keys"), 0), "n")
                 ->valuestring);
    cJSON_Delete(doc);
    free(jwks);
}

static void jwks_refused(cm_jwt *v, const char *doc, const char *want)
{
    int before = cm_jwt_key_count(v), nk = -7;
    detail[0] = '\0';
    assert_int_equal(cm_jwt_set_jwks(v, doc, strlen(doc), &nk, detail, sizeof(detail)), CM_EINVAL);
    if (strstr(detail, want) == NULL)
        fail_msg("detail '%s' lacks '%s'", detail, want);
    assert_int_equal(nk, -7);
    assert_int_equal(cm_jwt_key_count(v), before); /* unchanged */
}

static void test_jwks_parsing(void **state)
{
    char n[700], doc[4096];
    cm_jwt *v = keyless();
    char *tok = sign_with(signer, now, TTL);
    int nk;
    (void)state;
    our_jwk(n, sizeof(n));
    expect_refused_by(v, tok, "the token key id (kid) is unknown"); /* empty set */
    jwks_refused(v, "not json", "not JSON");
    jwks_refused(v, "[]", "\"keys\" array");
    jwks_refused(v, "{\"keys\":{}}", "\"keys\" array");
    jwks_refused(v, "{\"keys\":[1]}", "keys[0] is not an object");
    jwks_refused(v, "{\"keys\":[]}", "no RSA signing key");
    snprintf(doc, sizeof(doc), "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"AQAB\"}]}", n);
    jwks_refused(v, doc, "keys[0] has no kid");
    snprintf(doc, sizeof(doc),
             "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"a b\",\"n\":\"%s\",\"e\":\"AQAB\"}]}", n);
    jwks_refused(v, doc, "keys[0] has no kid");
    jwks_refused(v, "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"k1\",\"e\":\"AQAB\"}]}", "lacks base64url");
    jwks_refused(v, "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"k1\",\"n\":\"a+b/\",\"e\":\"AQAB\"}]}",
                 "lacks base64url");
    /* 1024 bits: too short (RFC 7518 3.3). */
    snprintf(doc, sizeof(doc), "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"k1\",\"n\":\"%.171s\",\"e\":\"AQAB\"}]}", n);
    jwks_refused(v, doc, "2048 bits or more");
    snprintf(doc, sizeof(doc), "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"k1\",\"n\":\"%s\",\"e\":\"AQAA\"}]}", n);
    jwks_refused(v, doc, "2048 bits or more"); /* even exponent */
    snprintf(doc, sizeof(doc),
             "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"k1\",\"n\":\"%s\",\"e\":\"AQAB\"},"
             "{\"kty\":\"RSA\",\"kid\":\"k1\",\"n\":\"%s\",\"e\":\"AQAB\"}]}", n, n);
    jwks_refused(v, doc, "repeats kid 'k1'");
    /* Other key types, uses and algorithms are skipped, not errors (RFC 7517 section 5). */
    snprintf(doc, sizeof(doc),
             "{\"keys\":[{\"kty\":\"EC\",\"kid\":\"ec\",\"crv\":\"P-256\"},"
             "{\"kty\":\"RSA\",\"kid\":\"enc\",\"use\":\"enc\",\"n\":\"%s\",\"e\":\"AQAB\"},"
             "{\"kty\":\"RSA\",\"kid\":\"ps\",\"alg\":\"PS256\",\"n\":\"%s\",\"e\":\"AQAB\"}]}", n, n);
    jwks_refused(v, doc, "no RSA signing key");
    size_t off = (size_t)snprintf(doc, sizeof(doc),
             "{\"keys\":[{\"kty\":\"EC\",\"kid\":\"ec\",\"crv\":\"P-256\"},"
             "{\"kty\":\"RSA\",\"kid\":\"" KID "\",\"use\":\"sig\",\"alg\":\"RS256\",\"n\":\"%s\",\"e\":\"AQAB\"}]}", n);
    assert_int_equal(cm_jwt_set_jwks(v, doc, off, &nk, detail, sizeof(detail)), CM_OK);
    assert_int_equal(nk, 1);
    expect_verified(v, tok);
    /* A set with one key too many is refused whole. */
    off = (size_t)snprintf(doc, sizeof(doc), "{\"keys\":[");
    char *big = malloc(CM_JWT_JWKS_MAX + 100);
    assert_non_null(big);
    off = (size_t)snprintf(big, CM_JWT_JWKS_MAX, "{\"keys\":[");
    for (int i = 0; i <= CM_JWT_KEYS_MAX; i++)
        off += (size_t)snprintf(big + off, CM_JWT_JWKS_MAX - off,
                                "%s{\"kty\":\"RSA\",\"kid\":\"k%d\",\"n\":\"%s\",\"e\":\"AQAB\"}",
                                i ? "," : "", i, n);
    snprintf(big + off, CM_JWT_JWKS_MAX - off, "]}");
    jwks_refused(v, big, "more than 16 usable keys");
    memset(big, ' ', CM_JWT_JWKS_MAX + 1);
    big[CM_JWT_JWKS_MAX + 1] = '\0';
    jwks_refused(v, big, "larger than");
    free(big);
    expect_verified(v, tok); /* still the last good set */
    free(tok);
    cm_jwt_destroy(v);
}

struct refresh_state {
    int calls;
    int freed;
    const char *jwks; /* what the "fetch" returns, NULL: the fetch fails */
};

static cm_err test_refresh(cm_jwt *j, void *ud)
{
    struct refresh_state *st = ud;
    st->calls++;
    if (st->jwks == NULL)
        return CM_EIO;
    return cm_jwt_set_jwks(j, st->jwks, strlen(st->jwks), NULL, detail, sizeof(detail));
}

static void refresh_free(void *ud)
{
    ((struct refresh_state *)ud)->freed++;
}

static void test_unknown_kid_asks_the_refresh_hook_once(void **state)
{
    struct refresh_state st = {0};
    char *jwks = NULL;
    cm_jwt *v = keyless();
    (void)state;
    assert_int_equal(cm_jwt_jwks(signer, &jwks), CM_OK);
    cm_jwt_set_refresh(v, test_refresh, &st, refresh_free);
    char *tok = sign_with(signer, now, TTL);
    expect_refused_by(v, tok, "the token key id (kid) is unknown"); /* the fetch failed */
    assert_int_equal(st.calls, 1);
    st.jwks = jwks;
    expect_verified(v, tok);
    assert_int_equal(st.calls, 2);
    expect_verified(v, tok); /* known now: no more refreshes */
    assert_int_equal(st.calls, 2);
    /* A kid still unknown after the refresh is refused after exactly one more call. */
    cm_jwt *k9 = NULL;
    assert_int_equal(make("RS256", priv_pem, priv_len, "k9", ISS, AUD, &k9), CM_OK);
    char *t9 = sign_with(k9, now, TTL);
    expect_refused_by(v, t9, "the token key id (kid) is unknown");
    assert_int_equal(st.calls, 3);
    /* A token without a kid and a malformed kid never trigger a fetch. */
    cm_jwt *nokid = NULL;
    assert_int_equal(make("RS256", priv_pem, priv_len, NULL, ISS, AUD, &nokid), CM_OK);
    char *t0 = sign_with(nokid, now, TTL);
    expect_refused_by(v, t0, "the token key id (kid) is unknown");
    assert_int_equal(st.calls, 3);
    cm_jwt_destroy(v);
    assert_int_equal(st.freed, 1); /* the verifier owns the hook's state */
    cm_jwt_destroy(k9);
    cm_jwt_destroy(nokid);
    free(t9);
    free(t0);
    free(tok);
    free(jwks);
}

static void write_file(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    fclose(f);
}

static void test_from_env_key_list(void **state)
{
    size_t l2;
    char *k2 = gen_pem(2048, 1, &l2);
    char dir[] = "/tmp/cm-jwt-XXXXXX", p2[64], list[512];
    cm_jwt *s = NULL, *v = NULL;
    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(p2, sizeof(p2), "%s/k2.pem", dir);
    write_file(p2, k2, l2);
    const char *priv = env_or("TEST_JWT_PRIVATE_KEY_FILE", ".local/keys/jwt-private.pem");
    const char *pub = env_or("TEST_JWT_PUBLIC_KEY_FILE", ".local/keys/jwt-public.pem");
    unsetenv("JWT_KID");
    snprintf(list, sizeof(list), "old=%s, new=%s", priv, p2);
    setenv("CM_UNIT_KEYS", list, 1);
    assert_int_equal(cm_jwt_from_env("CM_UNIT_KEYS", &s), CM_OK);
    assert_int_equal(cm_jwt_key_count(s), 2);
    char *tok = sign_with(s, now, TTL);
    assert_string_equal(token_kid(tok), "new");
    /* A verifier configured with public keys only, one of them under its old name. */
    snprintf(list, sizeof(list), "old=%s,new=%s", pub, p2);
    setenv("CM_UNIT_KEYS", list, 1);
    assert_int_equal(cm_jwt_from_env("CM_UNIT_KEYS", &v), CM_OK);
    expect_verified(v, tok);
    cm_jwt_destroy(v);
    v = NULL;
    const char *bad[] = {"old=", "=x", "old=/no/such/file", "a=/dev/null", NULL};
    for (const char *const *b = bad; *b; b++) {
        setenv("CM_UNIT_KEYS", *b, 1);
        if (cm_jwt_from_env("CM_UNIT_KEYS", &v) == CM_OK)
            fail_msg("accepted %s", *b);
    }
    snprintf(list, sizeof(list), "same=%s,same=%s", pub, p2);
    setenv("CM_UNIT_KEYS", list, 1);
    assert_int_equal(cm_jwt_from_env("CM_UNIT_KEYS", &v), CM_EINVAL);
    assert_null(v);
    unlink(p2);
    rmdir(dir);
    unsetenv("CM_UNIT_KEYS");
    free(tok);
    free(k2);
    cm_jwt_destroy(s);
}

static void test_perms_claim_roundtrip(void **state)
{
    cm_jwt_claims c;
    char *tok = NULL, *h, *p, *sig;
    unsigned char buf[2048];
    (void)state;
    fill(&c, "u", "t", "s", "moderator");
    snprintf(c.perms, sizeof(c.perms), "message.delete.any member.remove");
    assert_int_equal(cm_jwt_sign(signer, &c, now, TTL, &tok), CM_OK);
    split3(tok, &h, &p, &sig);
    long n = cm_base64url_decode(p, strlen(p), buf, sizeof(buf) - 1);
    buf[n] = '\0';
    cJSON *pj = cJSON_Parse((char *)buf);
    cJSON *perms = cJSON_GetObjectItem(pj, "perms");
    assert_true(cJSON_IsArray(perms)); /* an array, like roles */
    assert_int_equal(cJSON_GetArraySize(perms), 2);
    memset(&c, 0, sizeof(c));
    assert_int_equal(cm_jwt_verify(verifier, tok, now, &c, detail, sizeof(detail)), CM_OK);
    assert_string_equal(c.perms, "message.delete.any member.remove");
    assert_string_equal(c.roles, "moderator");
    cJSON_Delete(pj);
    free(h), free(p), free(sig), free(tok);
}

static void test_base64url_encode(void **state)
{
    char out[16];
    (void)state;
    assert_int_equal(cm_base64url_encode((const unsigned char *)"", 0, out, sizeof(out)), 0);
    assert_string_equal(out, "");
    assert_int_equal(cm_base64url_encode((const unsigned char *)"f", 1, out, sizeof(out)), 2);
    assert_string_equal(out, "Zg");
    assert_int_equal(cm_base64url_encode((const unsigned char *)"foobar", 6, out, sizeof(out)), 8);
    assert_string_equal(out, "Zm9vYmFy");
    assert_int_equal(cm_base64url_encode((const unsigned char *)"\xfb\xff", 2, out, sizeof(out)), 3);
    assert_string_equal(out, "-_8"); /* not "+/8=" */
    assert_int_equal(cm_base64url_encode((const unsigned char *)"foobar", 6, out, 8), -1);
}

struct swap_arg {
    cm_jwt *v;
    const char *tok;
    int failures;
};

static void *verify_during_swaps(void *p)
{
    struct swap_arg *a = p;
    char d[128];
    cm_jwt_claims c;
    for (int i = 0; i < 40; i++)
        if (cm_jwt_verify(a->v, a->tok, now, &c, d, sizeof(d)) != CM_OK)
            a->failures++;
    return NULL;
}

static void test_verify_while_the_set_is_replaced(void **state)
{
    char *jwks = NULL, d[256];
    cm_jwt *v = keyless();
    struct swap_arg args[3];
    pthread_t th[3];
    (void)state;
    assert_int_equal(cm_jwt_jwks(signer, &jwks), CM_OK);
    assert_int_equal(cm_jwt_set_jwks(v, jwks, strlen(jwks), NULL, d, sizeof(d)), CM_OK);
    char *tok = sign_with(signer, now, TTL);
    for (int i = 0; i < 3; i++) {
        args[i] = (struct swap_arg){v, tok, 0};
        assert_int_equal(pthread_create(&th[i], NULL, verify_during_swaps, &args[i]), 0);
    }
    for (int i = 0; i < 40; i++)
        assert_int_equal(cm_jwt_set_jwks(v, jwks, strlen(jwks), NULL, d, sizeof(d)), CM_OK);
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].failures, 0);
    }
    free(tok);
    free(jwks);
    cm_jwt_destroy(v);
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
        cmocka_unit_test(test_rotation_newest_key_signs_old_keys_verify),
        cmocka_unit_test(test_add_key_refusals),
        cmocka_unit_test(test_jwks_document_matches_the_key),
        cmocka_unit_test(test_jwks_parsing),
        cmocka_unit_test(test_unknown_kid_asks_the_refresh_hook_once),
        cmocka_unit_test(test_from_env_key_list),
        cmocka_unit_test(test_perms_claim_roundtrip),
        cmocka_unit_test(test_base64url_encode),
        cmocka_unit_test(test_verify_while_the_set_is_replaced),
    };
    return cmocka_run_group_tests_name("jwt", tests, setup, teardown);
}
