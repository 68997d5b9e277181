/* test_redis.c - unit tests of the Redis client (common/redis.h) against the local Redis. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"
#include "common/log.h"
#include "common/redis.h"
#include "common/uuid.h"
#include "testutil.h"

static cm_redis *r;
static char prefix[64]; /* unique per run: unit:<pid>:<random> */

static void key(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s:%s", prefix, name);
}

static int setup(void **state)
{
    char rnd[17];
    long port = 6379;
    (void)state;
    cm_log_init("test_redis", CM_LOG_ERROR);
    if (cm_random_hex(rnd, 8) != CM_OK)
        return -1;
    snprintf(prefix, sizeof(prefix), "unit:%ld:%s", (long)getpid(), rnd);
    if (cm_config_long("REDIS_PORT", 6379, 1, 65535, &port) != CM_OK)
        return -1;
    return cm_redis_create(cm_config_str("REDIS_HOST", "127.0.0.1"), (int)port, 2, 2000, &r) ==
                   CM_OK
               ? 0
               : -1;
}

static int teardown(void **state)
{
    (void)state;
    cm_redis_destroy(r);
    return 0;
}

static void test_ping(void **state)
{
    (void)state;
    assert_int_equal(cm_redis_ping(r), CM_OK);
}

static void test_set_get_del(void **state)
{
    char k[128], out[64];
    (void)state;
    key(k, sizeof(k), "kv");
    assert_int_equal(cm_redis_set(r, k, "value one", 0), CM_OK);
    assert_int_equal(cm_redis_get(r, k, out, sizeof(out)), CM_OK);
    assert_string_equal(out, "value one");
    assert_int_equal(cm_redis_set(r, k, "v2", 60000), CM_OK); /* overwrite, with a TTL */
    assert_int_equal(cm_redis_get(r, k, out, sizeof(out)), CM_OK);
    assert_string_equal(out, "v2");
    assert_int_equal(cm_redis_del(r, k), CM_OK);
    assert_int_equal(cm_redis_get(r, k, out, sizeof(out)), CM_ENOTFOUND);
    assert_int_equal(cm_redis_del(r, k), CM_OK); /* deleting what is gone is fine */
}

static void test_get_missing(void **state)
{
    char k[128], out[16] = "unchanged";
    (void)state;
    key(k, sizeof(k), "never-set");
    assert_int_equal(cm_redis_get(r, k, out, sizeof(out)), CM_ENOTFOUND);
    assert_string_equal(out, "unchanged");
}

static void test_get_too_big(void **state)
{
    char k[128], out[8];
    (void)state;
    key(k, sizeof(k), "big");
    assert_int_equal(cm_redis_set(r, k, "12345678", 60000), CM_OK);
    assert_int_equal(cm_redis_get(r, k, out, sizeof(out)), CM_ETOOBIG); /* 8 + NUL > 8 */
    assert_int_equal(cm_redis_set(r, k, "1234567", 60000), CM_OK);
    assert_int_equal(cm_redis_get(r, k, out, sizeof(out)), CM_OK);
    assert_string_equal(out, "1234567");
    assert_int_equal(cm_redis_del(r, k), CM_OK);
}

static void test_value_with_spaces_and_binary_safe_text(void **state)
{
    char k[128], out[128];
    (void)state;
    key(k, sizeof(k), "text with spaces");
    assert_int_equal(cm_redis_set(r, k, "a b\r\nc \"d\" caf\xc3\xa9", 60000), CM_OK);
    assert_int_equal(cm_redis_get(r, k, out, sizeof(out)), CM_OK);
    assert_string_equal(out, "a b\r\nc \"d\" caf\xc3\xa9");
    assert_int_equal(cm_redis_del(r, k), CM_OK);
}

static void test_ttl_expires(void **state)
{
    char k[128], out[16];
    (void)state;
    key(k, sizeof(k), "ttl");
    assert_int_equal(cm_redis_set(r, k, "soon gone", 50), CM_OK);
    tu_sleep_ms(120);
    assert_int_equal(cm_redis_get(r, k, out, sizeof(out)), CM_ENOTFOUND);
}

static void test_window_incr(void **state)
{
    char k[128];
    int64_t count = -1, remaining = -1;
    const int64_t window = 60000;
    (void)state;
    key(k, sizeof(k), "window");
    for (int64_t want = 1; want <= 3; want++) {
        assert_int_equal(cm_redis_window_incr(r, k, window, &count, &remaining), CM_OK);
        assert_int_equal(count, want);
        assert_in_range(remaining, 1, window);
    }
    assert_int_equal(cm_redis_del(r, k), CM_OK);
}

static void test_window_resets(void **state)
{
    char k[128];
    int64_t count = -1, remaining = -1;
    (void)state;
    key(k, sizeof(k), "short-window");
    assert_int_equal(cm_redis_window_incr(r, k, 100, &count, &remaining), CM_OK);
    assert_int_equal(cm_redis_window_incr(r, k, 100, &count, &remaining), CM_OK);
    assert_int_equal(count, 2);
    assert_in_range(remaining, 1, 100);
    tu_sleep_ms(180);
    assert_int_equal(cm_redis_window_incr(r, k, 100, &count, &remaining), CM_OK);
    assert_int_equal(count, 1); /* a new window */
    assert_int_equal(cm_redis_del(r, k), CM_OK);
}

struct incr_arg {
    const char *key;
    int failures;
};

static void *incr_many(void *arg)
{
    struct incr_arg *a = arg;
    int64_t c, rem;
    for (int i = 0; i < 50; i++)
        if (cm_redis_window_incr(r, a->key, 60000, &c, &rem) != CM_OK)
            a->failures++;
    return NULL;
}

static void test_window_counts_every_hit_across_threads(void **state)
{
    char k[128];
    pthread_t th[4];
    struct incr_arg args[4];
    int64_t count, remaining;
    (void)state;
    key(k, sizeof(k), "threads");
    /* Four threads share a pool of two connections. */
    for (int i = 0; i < 4; i++) {
        args[i] = (struct incr_arg){k, 0};
        assert_int_equal(pthread_create(&th[i], NULL, incr_many, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].failures, 0);
    }
    assert_int_equal(cm_redis_window_incr(r, k, 60000, &count, &remaining), CM_OK);
    assert_int_equal(count, 201);
    assert_int_equal(cm_redis_del(r, k), CM_OK);
}

static void test_lock_excludes_and_releases_by_token(void **state)
{
    char k[128];
    (void)state;
    key(k, sizeof(k), "lease");
    assert_int_equal(cm_redis_lock(r, k, "holder-a", 60000), CM_OK);
    assert_int_equal(cm_redis_lock(r, k, "holder-b", 60000), CM_ECONFLICT);
    assert_int_equal(cm_redis_lock(r, k, "holder-a", 60000), CM_ECONFLICT); /* not reentrant */
    /* Only the holder's token releases it. */
    assert_int_equal(cm_redis_unlock(r, k, "holder-b"), CM_ENOTFOUND);
    assert_int_equal(cm_redis_lock(r, k, "holder-b", 60000), CM_ECONFLICT);
    assert_int_equal(cm_redis_unlock(r, k, "holder-a"), CM_OK);
    assert_int_equal(cm_redis_unlock(r, k, "holder-a"), CM_ENOTFOUND);
    assert_int_equal(cm_redis_lock(r, k, "holder-b", 60000), CM_OK);
    assert_int_equal(cm_redis_unlock(r, k, "holder-b"), CM_OK);
}

static void test_lock_lease_expires(void **state)
{
    char k[128];
    (void)state;
    key(k, sizeof(k), "short-lease");
    assert_int_equal(cm_redis_lock(r, k, "slow", 60), CM_OK);
    tu_sleep_ms(150);
    /* The lease ran out: another holder takes it, and the late holder cannot release it. */
    assert_int_equal(cm_redis_lock(r, k, "next", 60000), CM_OK);
    assert_int_equal(cm_redis_unlock(r, k, "slow"), CM_ENOTFOUND);
    assert_int_equal(cm_redis_unlock(r, k, "next"), CM_OK);
}

struct lock_arg {
    const char *key;
    int inside, max_inside, rounds, failures;
    pthread_mutex_t *mu;
};

static void *lock_loop(void *arg)
{
    struct lock_arg *a = arg;
    char token[32];
    snprintf(token, sizeof(token), "t-%p", (void *)a);
    for (int i = 0; i < 20;) {
        cm_err rc = cm_redis_lock(r, a->key, token, 5000);
        if (rc == CM_ECONFLICT) {
            tu_sleep_ms(1);
            continue;
        }
        if (rc != CM_OK) {
            a->failures++;
            return NULL;
        }
        pthread_mutex_lock(a->mu);
        if (++a->inside > a->max_inside)
            a->max_inside = a->inside;
        pthread_mutex_unlock(a->mu);
        tu_sleep_ms(1);
        pthread_mutex_lock(a->mu);
        a->inside--;
        pthread_mutex_unlock(a->mu);
        if (cm_redis_unlock(r, a->key, token) != CM_OK)
            a->failures++;
        i++;
    }
    return NULL;
}

static void test_lock_is_mutual_exclusion_across_threads(void **state)
{
    char k[128];
    pthread_t th[4];
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    /* One shared counter of holders inside the critical section, seen by every thread. */
    struct lock_arg shared = {NULL, 0, 0, 0, 0, &mu};
    struct lock_arg *args[4];
    (void)state;
    key(k, sizeof(k), "mutex");
    shared.key = k;
    for (int i = 0; i < 4; i++) {
        args[i] = &shared;
        assert_int_equal(pthread_create(&th[i], NULL, lock_loop, args[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(shared.failures, 0);
    assert_int_equal(shared.max_inside, 1);
}

static void test_unreachable_is_eio(void **state)
{
    cm_redis *down = NULL;
    char out[8];
    int64_t c, rem;
    (void)state;
    /* Creation succeeds with Redis down; each call then reports CM_EIO. */
    assert_int_equal(cm_redis_create("127.0.0.1", tu_free_port(), 1, 200, &down), CM_OK);
    cm_log_init("test_redis", CM_LOG_ERROR + 1); /* the failures are logged; expected */
    assert_int_equal(cm_redis_ping(down), CM_EIO);
    assert_int_equal(cm_redis_get(down, "k", out, sizeof(out)), CM_EIO);
    assert_int_equal(cm_redis_window_incr(down, "k", 1000, &c, &rem), CM_EIO);
    assert_int_equal(cm_redis_lock(down, "k", "t", 1000), CM_EIO);
    assert_int_equal(cm_redis_unlock(down, "k", "t"), CM_EIO);
    cm_log_init("test_redis", CM_LOG_ERROR);
    cm_redis_destroy(down);
    cm_redis_destroy(NULL);
}

static void test_create_refuses_bad_arguments(void **state)
{
    cm_redis *x = NULL;
    (void)state;
    assert_int_equal(cm_redis_create(NULL, 6379, 1, 100, &x), CM_EINVAL);
    assert_int_equal(cm_redis_create("127.0.0.1", 0, 1, 100, &x), CM_EINVAL);
    assert_int_equal(cm_redis_create("127.0.0.1", 6379, 0, 100, &x), CM_EINVAL);
    assert_int_equal(cm_redis_create("127.0.0.1", 6379, 1, 0, &x), CM_EINVAL);
    assert_null(x);
}

static void test_exists(void **state)
{
    char a[128], b[128], c[128];
    int64_t n = -1;
    (void)state;
    key(a, sizeof(a), "ex-a");
    key(b, sizeof(b), "ex-b");
    key(c, sizeof(c), "ex-c");
    const char *keys[] = {a, b, c};
    assert_int_equal(cm_redis_exists(r, keys, 3, &n), CM_OK);
    assert_int_equal(n, 0);
    assert_int_equal(cm_redis_set(r, a, "1", 5000), CM_OK);
    assert_int_equal(cm_redis_set(r, c, "1", 5000), CM_OK);
    assert_int_equal(cm_redis_exists(r, keys, 3, &n), CM_OK);
    assert_int_equal(n, 2);
    assert_int_equal(cm_redis_exists(r, keys + 1, 1, &n), CM_OK);
    assert_int_equal(n, 0);
    assert_int_equal(cm_redis_exists(r, keys, 0, &n), CM_EINVAL);
    cm_redis_del(r, a);
    cm_redis_del(r, c);
}

/* Scripts run by SHA1 after the first call give the same answers; a script that fails is not
 * run a second time (its INCR happened once). */
static void test_eval_ints_by_sha(void **state)
{
    static const char ADD[] = "return {redis.call('INCRBY', KEYS[1], ARGV[1]), #KEYS}";
    static const char FAILS[] = "redis.call('INCR', KEYS[1]) return redis.error_reply('boom')";
    char k[128], v[32];
    const char *keys[1] = {k}, *args[1] = {"5"};
    int64_t out[4];
    size_t n = 0;
    (void)state;

    key(k, sizeof(k), "evalsha");
    for (int i = 1; i <= 3; i++) {
        assert_int_equal(cm_redis_eval_ints(r, ADD, 1, keys, 1, args, out, 4, &n), CM_OK);
        assert_int_equal(n, 2);
        assert_int_equal(out[0], 5 * i);
        assert_int_equal(out[1], 1);
    }
    key(k, sizeof(k), "evalsha-fails");
    assert_int_equal(cm_redis_eval_ints(r, FAILS, 1, keys, 0, NULL, out, 4, &n), CM_EIO);
    assert_int_equal(cm_redis_get(r, k, v, sizeof(v)), CM_OK);
    assert_string_equal(v, "1");
    cm_redis_del(r, k);
    key(k, sizeof(k), "evalsha");
    cm_redis_del(r, k);
}

typedef struct strs_seen {
    char text[6][64]; /* "<i>:<err>:<strings joined by ,>" per reply */
    size_t n;
} strs_seen;

static void collect_strs(void *ud, size_t i, int err, const char *const *v, const size_t *len,
                         size_t n)
{
    strs_seen *s = ud;
    char *o = s->text[i];
    int w = snprintf(o, 64, "%zu:%d:", i, err);
    for (size_t j = 0; j < n && w > 0 && w < 64; j++)
        w += snprintf(o + w, 64 - (size_t)w, "%s%.*s", j ? "," : "", (int)len[j], v[j]);
    s->n++;
}

/* One round trip, each reply handed over in order: a hash's fields and values, a string,
 * nil, an integer and an error reply (which does not stop the others). */
static void test_pipeline_strings(void **state)
{
    char h[128], s[128], none[128];
    strs_seen seen = {.n = 0};
    int64_t out[3];
    (void)state;
    key(h, sizeof(h), "ps-hash");
    key(s, sizeof(s), "ps-str");
    key(none, sizeof(none), "ps-none");
    cm_redis_cmd w[] = {{4, {"HSET", h, "f1", "v1"}}, {4, {"HSET", h, "f2", "v2"}},
                        {3, {"SET", s, "text"}}};
    assert_int_equal(cm_redis_pipeline(r, w, 3, out), CM_OK);
    cm_redis_cmd rd[] = {{2, {"HGETALL", h}}, {2, {"GET", s}},     {2, {"GET", none}},
                         {2, {"EXISTS", s}},  {2, {"HGETALL", s}}, {2, {"HGETALL", none}}};
    assert_int_equal(cm_redis_pipeline_strings(r, rd, 6, collect_strs, &seen), CM_OK);
    assert_int_equal(seen.n, 6);
    /* Redis keeps a small hash in insertion order (listpack). */
    assert_string_equal(seen.text[0], "0:0:f1,v1,f2,v2");
    assert_string_equal(seen.text[1], "1:0:text");
    assert_string_equal(seen.text[2], "2:0:");
    assert_string_equal(seen.text[3], "3:0:");
    assert_string_equal(seen.text[4], "4:-1:"); /* WRONGTYPE */
    assert_string_equal(seen.text[5], "5:0:");
    assert_int_equal(cm_redis_pipeline_strings(r, rd, 0, collect_strs, &seen), CM_OK);
    cm_redis_del(r, h);
    cm_redis_del(r, s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exists),
        cmocka_unit_test(test_pipeline_strings),
        cmocka_unit_test(test_ping),
        cmocka_unit_test(test_set_get_del),
        cmocka_unit_test(test_get_missing),
        cmocka_unit_test(test_get_too_big),
        cmocka_unit_test(test_value_with_spaces_and_binary_safe_text),
        cmocka_unit_test(test_ttl_expires),
        cmocka_unit_test(test_window_incr),
        cmocka_unit_test(test_window_resets),
        cmocka_unit_test(test_window_counts_every_hit_across_threads),
        cmocka_unit_test(test_lock_excludes_and_releases_by_token),
        cmocka_unit_test(test_lock_lease_expires),
        cmocka_unit_test(test_lock_is_mutual_exclusion_across_threads),
        cmocka_unit_test(test_eval_ints_by_sha),
        cmocka_unit_test(test_unreachable_is_eio),
        cmocka_unit_test(test_create_refuses_bad_arguments),
    };
    return cmocka_run_group_tests_name("redis", tests, setup, teardown);
}
