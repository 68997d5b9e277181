/* bench_auth.c - what authentication costs: access-token verification as the gateway does it
 * (cm_jwt_verify, then the Redis denylist check of cm_auth_bearer) per second, on 1 and N
 * threads, side by side with raw OpenSSL RS256 verification of the same token in the same
 * process (the floor: libjwt adds the PEM parse and JSON work); and the login's argon2id cost
 * next to PBKDF2-HMAC-SHA256 at OWASP's 600000 iterations, the usual peer for "a password hash
 * of the recommended strength".
 *
 * usage: bench_auth PRIVATE_PEM PUBLIC_PEM TOKEN_OUT  (writes the token for the PyJWT peer) */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sodium.h>

#include "common/config.h"
#include "common/jwt.h"
#include "common/log.h"
#include "common/redis.h"
#include "common/session.h"

#define SECONDS 2.0

static cm_jwt *signer, *verifier;
static cm_redis *redis;
static const char *token;
static EVP_PKEY *pub;
static unsigned char sig[512];
static size_t sig_len;
static const char *signed_part;
static size_t signed_len;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef int (*op_fn)(void);

static int op_verify(void)
{
    cm_jwt_claims c;
    char d[128];
    return cm_jwt_verify(verifier, token, time(NULL), &c, d, sizeof(d)) == CM_OK;
}

static int op_verify_denylist(void)
{
    cm_jwt_claims c;
    char d[128];
    return cm_jwt_verify(verifier, token, time(NULL), &c, d, sizeof(d)) == CM_OK &&
           cm_session_check_claims(redis, &c, d, sizeof(d)) == CM_OK;
}

static int op_openssl(void)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pub) == 1 &&
             EVP_DigestVerify(md, sig, sig_len, (const unsigned char *)signed_part, signed_len) == 1;
    EVP_MD_CTX_free(md);
    return ok;
}

struct run {
    op_fn op;
    long count;
    int failed;
};

static void *worker(void *arg)
{
    struct run *r = arg;
    double end = now_s() + SECONDS;
    while (now_s() < end) {
        for (int i = 0; i < 16; i++)
            if (!r->op())
                r->failed = 1;
        r->count += 16;
    }
    return NULL;
}

/* Operations per second of `op` on `threads` threads. */
static double rate(op_fn op, int threads)
{
    pthread_t th[16];
    struct run runs[16];
    long total = 0;

    for (int i = 0; i < threads; i++) {
        runs[i] = (struct run){op, 0, 0};
        pthread_create(&th[i], NULL, worker, &runs[i]);
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        if (runs[i].failed) {
            fprintf(stderr, "bench: an operation failed\n");
            exit(1);
        }
        total += runs[i].count;
    }
    return (double)total / SECONDS;
}

static char *read_file(const char *path, size_t *len)
{
    char *buf = NULL;
    if (cm_config_read_path(path, 65536, &buf, len) != CM_OK) {
        fprintf(stderr, "bench: cannot read %s\n", path);
        exit(1);
    }
    return buf;
}

int main(int argc, char **argv)
{
    size_t priv_len, pub_len;
    char *priv_pem, *pub_pem, *tok = NULL, hash[crypto_pwhash_STRBYTES];
    long cores = 2;
    cm_jwt_claims c = {0};

    if (argc != 4) {
        fprintf(stderr, "usage: %s PRIVATE_PEM PUBLIC_PEM TOKEN_OUT\n", argv[0]);
        return 2;
    }
    cm_log_init("bench", CM_LOG_ERROR);
    if (sodium_init() < 0)
        return 1;
    priv_pem = read_file(argv[1], &priv_len);
    pub_pem = read_file(argv[2], &pub_len);
    cm_jwt_config cfg = {.alg = "RS256", .key = priv_pem, .key_len = priv_len, .kid = "k1",
                         .issuer = "chat-platform", .audience = "chat-api", .leeway_s = 30};
    if (cm_jwt_create(&cfg, &signer) != CM_OK)
        return 1;
    cfg.key = pub_pem;
    cfg.key_len = pub_len;
    if (cm_jwt_create(&cfg, &verifier) != CM_OK)
        return 1;
    snprintf(c.sub, sizeof(c.sub), "alice");
    snprintf(c.tid, sizeof(c.tid), "0190a3b2-7c1e-7a10-8f3e-2b9d4c5e6f70");
    snprintf(c.sid, sizeof(c.sid), "0190a3b3-2a3b-7d40-b26b-5eaf7f8b9ca3");
    snprintf(c.roles, sizeof(c.roles), "member");
    snprintf(c.perms, sizeof(c.perms), "conversation.create conversation.read message.send");
    if (cm_jwt_sign(signer, &c, time(NULL), 3600, &tok) != CM_OK)
        return 1;
    token = tok;
    FILE *f = fopen(argv[3], "w");
    if (f == NULL || fputs(token, f) < 0 || fclose(f) != 0)
        return 1;

    /* The same token's parts for raw OpenSSL. */
    const char *last = strrchr(token, '.');
    signed_part = token;
    signed_len = (size_t)(last - token);
    long n = cm_base64url_decode(last + 1, strlen(last + 1), sig, sizeof(sig));
    if (n <= 0)
        return 1;
    sig_len = (size_t)n;
    BIO *b = BIO_new_mem_buf(pub_pem, (int)pub_len);
    pub = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
    BIO_free(b);
    if (pub == NULL)
        return 1;
    cm_config_long("BENCH_THREADS", 2, 1, 16, &cores);
    long rport = 6379;
    cm_config_long("REDIS_PORT", 6379, 1, 65535, &rport);
    cm_redis_create(cm_config_str("REDIS_HOST", "127.0.0.1"), (int)rport, (int)cores, 1000, &redis);

    printf("token verification (RS256, 2048-bit key, %zu-byte token), %.0f s each\n",
           strlen(token), SECONDS);
    for (int t = 1; t <= cores; t = t == 1 && cores > 1 ? (int)cores : t + (int)cores) {
        double ours = rate(op_verify, t), raw = rate(op_openssl, t),
               gw = rate(op_verify_denylist, t);
        printf("  %d thread%s: cm_jwt_verify %8.0f/s | raw OpenSSL verify %8.0f/s | ratio %.2f\n",
               t, t > 1 ? "s" : " ", ours, raw, ours / raw);
        printf("             + Redis denylist (cm_auth_bearer's path) %8.0f/s | ratio to verify %.2f\n",
               gw, gw / ours);
    }

    printf("login password hash, per call\n");
    double t0 = now_s();
    int rounds = 5;
    for (int i = 0; i < rounds; i++)
        if (crypto_pwhash_str(hash, "correct horse battery staple", 28,
                              crypto_pwhash_OPSLIMIT_INTERACTIVE,
                              crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0)
            return 1;
    double hash_ms = (now_s() - t0) * 1000 / rounds;
    t0 = now_s();
    for (int i = 0; i < rounds; i++)
        if (crypto_pwhash_str_verify(hash, "correct horse battery staple", 28) != 0)
            return 1;
    double verify_ms = (now_s() - t0) * 1000 / rounds;
    unsigned char out[32];
    t0 = now_s();
    for (int i = 0; i < rounds; i++)
        PKCS5_PBKDF2_HMAC("correct horse battery staple", 28, (const unsigned char *)"saltsaltsaltsalt",
                          16, 600000, EVP_sha256(), sizeof(out), out);
    double pbkdf2_ms = (now_s() - t0) * 1000 / rounds;
    printf("  argon2id (t=2, 64 MiB) hash %.1f ms, verify %.1f ms | PBKDF2-SHA256 600k %.1f ms | "
           "ratio verify/PBKDF2 %.2f\n",
           hash_ms, verify_ms, pbkdf2_ms, verify_ms / pbkdf2_ms);
    printf("  login capacity per core from the hash alone: %.0f/s\n", 1000.0 / verify_ms);

    EVP_PKEY_free(pub);
    cm_redis_destroy(redis);
    cm_jwt_destroy(signer);
    cm_jwt_destroy(verifier);
    free(tok);
    free(priv_pem);
    free(pub_pem);
    return 0;
}
