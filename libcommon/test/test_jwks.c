/* test_jwks.c - unit tests of the JWK Set fetcher (common/jwks.h) against a real HTTP server:
 * first fetch, unknown-kid refresh and its rate limit, refused documents, background refresh
 * dropping a retired key, and the environment form. */
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

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "common/http.h"
#include "common/jwks.h"
#include "common/jwt.h"
#include "common/log.h"
#include "testutil.h"

#define ISS "chat-platform"
#define AUD "chat-api"
#define TTL 900

/* The key server: serves `doc` with `status` at /jwks.json and counts requests. */
static struct {
    cm_http_server *srv;
    int port;
    pthread_mutex_t lock;
    char *doc;
    int status;
    int hits;
} ks = {.lock = PTHREAD_MUTEX_INITIALIZER};

static cm_jwt *k1_signer, *k2_signer, *both; /* both: k1 then k2, for the JWK Sets */
static char *set_k1, *set_k12, *set_k2;
static time_t now;

static void h_jwks(cm_http_req *req, void *ud)
{
    (void)ud;
    pthread_mutex_lock(&ks.lock);
    ks.hits++;
    const char *doc = ks.doc ? ks.doc : "";
    cm_http_reply_raw(req, ks.status, "application/jwk-set+json", doc, strlen(doc));
    pthread_mutex_unlock(&ks.lock);
}

static void serve(const char *doc, int status)
{
    pthread_mutex_lock(&ks.lock);
    free(ks.doc);
    ks.doc = strdup(doc);
    ks.status = status;
    pthread_mutex_unlock(&ks.lock);
}

static int hits(void)
{
    pthread_mutex_lock(&ks.lock);
    int h = ks.hits;
    pthread_mutex_unlock(&ks.lock);
    return h;
}

static char *gen_private_pem(size_t *len)
{
    EVP_PKEY *pk = EVP_RSA_gen(2048);
    BIO *bio = BIO_new(BIO_s_mem());
    char *data, *out;
    PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL);
    long n = BIO_get_mem_data(bio, &data);
    out = strndup(data, (size_t)n);
    *len = (size_t)n;
    BIO_free(bio);
    EVP_PKEY_free(pk);
    return out;
}

static int setup(void **state)
{
    size_t l1, l2;
    char *p1 = gen_private_pem(&l1), *p2 = gen_private_pem(&l2);
    cm_jwt_config c = {.alg = "RS256", .issuer = ISS, .audience = AUD, .leeway_s = 30};
    (void)state;
    cm_log_init("test_jwks", CM_LOG_ERROR + 1);
    now = time(NULL);
    c.key = p1, c.key_len = l1, c.kid = "k1";
    if (cm_jwt_create(&c, &k1_signer) != CM_OK)
        return -1;
    c.key = p2, c.key_len = l2, c.kid = "k2";
    if (cm_jwt_create(&c, &k2_signer) != CM_OK)
        return -1;
    c.key = p1, c.key_len = l1, c.kid = "k1";
    if (cm_jwt_create(&c, &both) != CM_OK || cm_jwt_jwks(both, &set_k1) != CM_OK ||
        cm_jwt_add_key(both, "k2", p2, l2) != CM_OK || cm_jwt_jwks(both, &set_k12) != CM_OK ||
        cm_jwt_jwks(k2_signer, &set_k2) != CM_OK)
        return -1;
    free(p1);
    free(p2);
    ks.port = tu_free_port();
    cm_http_config hc = {.host = "127.0.0.1", .port = ks.port, .threads = 2,
                         .max_body = 1024, .idle_timeout_s = 5, .drain_s = 1};
    if (cm_http_server_create(&hc, &ks.srv) != CM_OK ||
        cm_http_route(ks.srv, "GET", "/jwks.json", h_jwks, NULL) != CM_OK)
        return -1;
    return cm_http_server_start(ks.srv) == CM_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    cm_http_server_destroy(ks.srv);
    cm_jwt_destroy(k1_signer);
    cm_jwt_destroy(k2_signer);
    cm_jwt_destroy(both);
    free(set_k1);
    free(set_k12);
    free(set_k2);
    free(ks.doc);
    return 0;
}

static char *token(cm_jwt *signer)
{
    cm_jwt_claims c;
    char *tok = NULL;
    memset(&c, 0, sizeof(c));
    snprintf(c.sub, sizeof(c.sub), "user-1");
    snprintf(c.tid, sizeof(c.tid), "tenant-1");
    assert_int_equal(cm_jwt_sign(signer, &c, now, TTL, &tok), CM_OK);
    return tok;
}

static cm_err verify(cm_jwt *v, const char *tok, char *detail, size_t n)
{
    cm_jwt_claims c;
    return cm_jwt_verify(v, tok, now, &c, detail, n);
}

static cm_jwt *fed_verifier(long min_interval_s, long max_age_s, cm_jwks **fetcher)
{
    char url[128];
    cm_jwt *v = NULL;
    cm_jwt_config c = {.alg = "RS256", .issuer = ISS, .audience = AUD, .leeway_s = 30};
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/jwks.json", ks.port);
    cm_jwks_config jc = {.url = url, .min_interval_s = min_interval_s, .max_age_s = max_age_s,
                         .timeout_ms = 2000};
    assert_int_equal(cm_jwt_create_keyless(&c, &v), CM_OK);
    assert_int_equal(cm_jwks_attach(v, &jc, fetcher), CM_OK);
    return v;
}

static void test_attach_refuses_bad_config(void **state)
{
    cm_jwt *v = NULL;
    cm_jwt_config c = {.alg = "RS256", .issuer = ISS, .audience = AUD};
    (void)state;
    assert_int_equal(cm_jwt_create_keyless(&c, &v), CM_OK);
    cm_jwks_config bad[] = {
        {.url = NULL, .min_interval_s = 1, .timeout_ms = 100},
        {.url = "file:///etc/passwd", .min_interval_s = 1, .timeout_ms = 100},
        {.url = "ftp://x/jwks", .min_interval_s = 1, .timeout_ms = 100},
        {.url = "http://x/jwks", .min_interval_s = 0, .timeout_ms = 100},
        {.url = "http://x/jwks", .min_interval_s = 1, .max_age_s = -1, .timeout_ms = 100},
        {.url = "http://x/jwks", .min_interval_s = 1, .timeout_ms = 0},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(cm_jwks_attach(v, &bad[i], NULL), CM_EINVAL);
    assert_int_equal(cm_jwt_key_count(v), 0);
    cm_jwt_destroy(v);
}

static void test_first_fetch_and_unknown_kid_refresh(void **state)
{
    char d[256];
    cm_jwks *f = NULL;
    (void)state;
    serve(set_k1, 200);
    int h0 = hits();
    cm_jwt *v = fed_verifier(1, 0, &f);
    assert_int_equal(hits(), h0 + 1); /* fetched at attach */
    assert_int_equal(cm_jwt_key_count(v), 1);
    char *t1 = token(k1_signer), *t2 = token(k2_signer);
    assert_int_equal(verify(v, t1, d, sizeof(d)), CM_OK);
    assert_int_equal(hits(), h0 + 1); /* known kid: no fetch */
    /* k2 appears on the server: the first k2 token makes the verifier fetch again. */
    serve(set_k12, 200);
    tu_sleep_ms(1100); /* past the minimum interval */
    assert_int_equal(verify(v, t2, d, sizeof(d)), CM_OK);
    assert_int_equal(hits(), h0 + 2);
    assert_int_equal(cm_jwt_key_count(v), 2);
    assert_int_equal(cm_jwks_fetch_count(f), 2);
    free(t1);
    free(t2);
    cm_jwt_destroy(v);
}

static void test_unknown_kids_fetch_at_most_once_per_interval(void **state)
{
    char d[256];
    cm_jwt *other = NULL;
    size_t l;
    char *p = gen_private_pem(&l);
    cm_jwt_config c = {.alg = "RS256", .issuer = ISS, .audience = AUD, .key = p, .key_len = l};
    (void)state;
    serve(set_k1, 200);
    int h0 = hits();
    cm_jwt *v = fed_verifier(60, 0, NULL);
    char kid[32];
    /* A flood of forged kids costs one fetch per interval, not one per token. */
    for (int i = 0; i < 20; i++) {
        snprintf(kid, sizeof(kid), "forged%d", i);
        c.kid = kid;
        assert_int_equal(cm_jwt_create(&c, &other), CM_OK);
        char *t = token(other);
        assert_int_equal(verify(v, t, d, sizeof(d)), CM_EUNAUTH);
        assert_string_equal(d, "the token key id (kid) is unknown");
        free(t);
        cm_jwt_destroy(other);
    }
    assert_int_equal(hits(), h0 + 1); /* the attach fetch; the forged kids came too soon */
    free(p);
    cm_jwt_destroy(v);
}

static void test_bad_answers_keep_the_keys(void **state)
{
    char d[256], *big;
    cm_jwks *f = NULL;
    (void)state;
    serve(set_k1, 200);
    cm_jwt *v = fed_verifier(1, 0, &f);
    char *t1 = token(k1_signer);
    serve("{\"keys\":[]}", 200);
    assert_int_equal(cm_jwks_refresh_now(f), CM_EINVAL);
    serve("oops", 500);
    assert_int_equal(cm_jwks_refresh_now(f), CM_EIO);
    serve(set_k1, 404);
    assert_int_equal(cm_jwks_refresh_now(f), CM_EIO);
    big = malloc(CM_JWT_JWKS_MAX + 2);
    assert_non_null(big);
    memset(big, ' ', CM_JWT_JWKS_MAX + 1);
    big[CM_JWT_JWKS_MAX + 1] = '\0';
    serve(big, 200);
    assert_int_equal(cm_jwks_refresh_now(f), CM_ETOOBIG);
    free(big);
    assert_int_equal(verify(v, t1, d, sizeof(d)), CM_OK); /* still the last good set */
    free(t1);
    cm_jwt_destroy(v);
}

static void test_server_down_at_start(void **state)
{
    char d[256], url[128];
    cm_jwt *v = NULL;
    cm_jwks *f = NULL;
    cm_jwt_config c = {.alg = "RS256", .issuer = ISS, .audience = AUD};
    int dead = tu_free_port();
    (void)state;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/jwks.json", dead);
    cm_jwks_config jc = {.url = url, .min_interval_s = 60, .timeout_ms = 500};
    assert_int_equal(cm_jwt_create_keyless(&c, &v), CM_OK);
    assert_int_equal(cm_jwks_attach(v, &jc, &f), CM_OK); /* not fatal */
    assert_int_equal(cm_jwt_key_count(v), 0);
    char *t1 = token(k1_signer);
    assert_int_equal(verify(v, t1, d, sizeof(d)), CM_EUNAUTH);
    assert_int_equal(cm_jwks_fetch_count(f), 1); /* within a second of the failed start */
    /* While the set is empty the interval is one second, not the configured minute. */
    tu_sleep_ms(1100);
    assert_int_equal(verify(v, t1, d, sizeof(d)), CM_EUNAUTH);
    assert_int_equal(cm_jwks_fetch_count(f), 2);
    free(t1);
    cm_jwt_destroy(v);
}

static void test_background_refresh_drops_a_retired_key(void **state)
{
    char d[256];
    (void)state;
    serve(set_k12, 200);
    cm_jwt *v = fed_verifier(60, 1, NULL);
    char *t1 = token(k1_signer), *t2 = token(k2_signer);
    assert_int_equal(verify(v, t1, d, sizeof(d)), CM_OK);
    serve(set_k2, 200); /* k1 retired */
    for (int i = 0; i < 40 && cm_jwt_key_count(v) != 1; i++)
        tu_sleep_ms(100);
    assert_int_equal(cm_jwt_key_count(v), 1);
    assert_int_equal(verify(v, t1, d, sizeof(d)), CM_EUNAUTH);
    assert_string_equal(d, "the token key id (kid) is unknown");
    assert_int_equal(verify(v, t2, d, sizeof(d)), CM_OK);
    free(t1);
    free(t2);
    cm_jwt_destroy(v); /* stops the background thread */
}

static void test_verifier_from_env(void **state)
{
    char d[256], url[128];
    cm_jwt *v = NULL;
    (void)state;
    serve(set_k1, 200);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/jwks.json", ks.port);
    unsetenv("JWT_ALG");
    unsetenv("JWT_ISSUER");
    unsetenv("JWT_AUDIENCE");
    setenv("JWT_JWKS_URL", url, 1);
    setenv("JWT_JWKS_MAX_AGE_S", "0", 1);
    assert_int_equal(cm_jwt_verifier_from_env(&v), CM_OK);
    char *t1 = token(k1_signer);
    assert_int_equal(verify(v, t1, d, sizeof(d)), CM_OK);
    cm_jwt_destroy(v);
    v = NULL;
    setenv("JWT_JWKS_URL", "gopher://x", 1);
    assert_int_equal(cm_jwt_verifier_from_env(&v), CM_EINVAL);
    setenv("JWT_JWKS_URL", url, 1);
    setenv("JWT_JWKS_MIN_REFRESH_S", "0", 1);
    assert_int_equal(cm_jwt_verifier_from_env(&v), CM_EINVAL);
    assert_null(v);
    unsetenv("JWT_JWKS_MIN_REFRESH_S");
    unsetenv("JWT_JWKS_MAX_AGE_S");
    /* Without a URL the public key file keeps working. */
    unsetenv("JWT_JWKS_URL");
    unsetenv("JWT_PUBLIC_KEY_FILE");
    assert_int_equal(cm_jwt_verifier_from_env(&v), CM_ENOTFOUND);
    free(t1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attach_refuses_bad_config),
        cmocka_unit_test(test_first_fetch_and_unknown_kid_refresh),
        cmocka_unit_test(test_unknown_kids_fetch_at_most_once_per_interval),
        cmocka_unit_test(test_bad_answers_keep_the_keys),
        cmocka_unit_test(test_server_down_at_start),
        cmocka_unit_test(test_background_refresh_drops_a_retired_key),
        cmocka_unit_test(test_verifier_from_env),
    };
    return cmocka_run_group_tests_name("jwks", tests, setup, teardown);
}
