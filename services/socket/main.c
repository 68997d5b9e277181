/* main.c - the socket service: wires configuration, the WebSocket server, the Kafka consumer
 * that feeds it and the HTTP side (health, metrics). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/auth.h"
#include "common/config.h"
#include "common/http.h"
#include "common/jwks.h"
#include "common/kafka.h"
#include "common/log.h"
#include "common/tenant.h"
#include "common/process.h"
#include "common/session.h"
#include "socket_server.h"

static const cm_config_var vars[] = {
    {"WS_HOST", "127.0.0.1", "address the WebSocket endpoint listens on"},
    {"WS_PORT", "8083", "port of the WebSocket endpoint /v1/ws"},
    {"HTTP_HOST", "127.0.0.1", "address of the HTTP side (health, metrics)"},
    {"HTTP_PORT", "8183", "port of the HTTP side: /health/live, /health/ready, /metrics"},
    {"INTERNAL_KEY_FILE", "",
     "file with the key of the /internal service-to-service routes, the same in every process; "
     "unset: they are open"},
    {"MESSAGING_URL", "http://127.0.0.1:8082", "base URL of the messaging service"},
    {"UPSTREAM_THREADS", "8", "threads calling the messaging service"},
    {"UPSTREAM_TIMEOUT_MS", "10000", "time allowed to one call to the messaging service; must exceed messaging's LOCK_WAIT_MS + LOCK_TTL_MS (8000 by default)"},
    {"BREAKER_FAILURES", "5", "consecutive failed calls that open the circuit breaker"},
    {"BREAKER_OPEN_MS", "5000", "how long the open breaker refuses calls before a trial"},
    {"KAFKA_BROKERS", "127.0.0.1:9092", "Kafka bootstrap servers"},
    {"KAFKA_TOPIC_PREFIX", "", "prefix of every topic name"},
    {"KAFKA_GROUP_PREFIX", "socket", "consumer group prefix; each instance adds its own id"},
    {"REDIS_HOST", "127.0.0.1", "Redis host (session denylist, presence, typing pub/sub)"},
    {"REDIS_PORT", "6379", "Redis port"},
    {"EPHEMERAL_CHANNEL", "socket.ephemeral", "Redis pub/sub channel of typing and presence"},
    {"TYPING_TTL_MS", "6000", "a typing.start not repeated for this long ends with a stop"},
    {"PRESENCE_TTL_MS", "60000", "a connection not refreshed for this long counts as gone"},
    {"PRESENCE_BEAT_MS", "20000", "how often each connection refreshes its presence"},
    {"INSTANCE_TTL_MS", "15000", "an instance silent this long is dead: others mark its users offline"},
    {"PRESENCE_BATCH_MS", "250", "presence changes to one connection are batched this long"},
    {"USER_URL", "http://127.0.0.1:8081", "the user service: each tenant's ws_allowed_origins"},
    {"TENANT_SETTINGS_TTL_MS", "10000", "how long a tenant's settings are cached (a change applies within it)"},
    {"JWT_JWKS_URL", "", "JWK Set URL of the signing keys; replaces JWT_PUBLIC_KEY_FILE"},
    {"JWT_PUBLIC_KEY_FILE", NULL, "PEM public key, or kid=path,..., when JWT_JWKS_URL is unset"},
    {"JWT_ALG", "RS256", "pinned signing algorithm"},
    {"JWT_ISSUER", "chat-platform", "required iss"},
    {"JWT_AUDIENCE", "chat-api", "required aud"},
    {"FRAME_MAX_BYTES", "65536", "largest client message; larger ones close with 1009"},
    {"RATE_PER_S", "50", "client frames per second per connection (4x closes with 1008)"},
    {"CONNECTIONS_PER_USER", "20", "connections of one user on all instances (429 above)"},
    {"WS_ALLOWED_ORIGINS", "", "comma-separated Origins browsers may connect from; empty: any"},
    {"QUEUE_FRAMES", "4096", "frames queued to one connection before it is closed with 4003"},
    {"QUEUE_BYTES", "4194304", "bytes queued to one connection before it is closed with 4003"},
    {"SNDBUF_BYTES", "0", "kernel send buffer per connection (SO_SNDBUF); 0: autotuned"},
    {"PING_S", "30", "idle seconds before the server pings a connection"},
    {"IDLE_TIMEOUT_S", "75", "seconds without traffic or pong before a connection is dropped"},
    {"SYNC_PAGE", "200", "items per GET /v1/sync page during a catch-up"},
    {"HELD_EVENTS", "1024", "live events held per connection during a catch-up"},
    {"DRAIN_MS", "5000", "how long SIGTERM waits for connections to close"},
    {"LOG_LEVEL", "info", "debug, info, warn or error"},
};

typedef struct consumer_ctx {
    socket_srv *srv;
    cm_kafka_consumer *kafka;
    atomic_int stop;
    atomic_int polled; /* the consumer has answered at least once */
} consumer_ctx;

/* Records taken per poll: what has already arrived, up to this many, becomes one chain handed
 * to the loop at once (one lock, one wake-up, one offset store), not one of each per record. */
#define CONSUME_BATCH 512

static cm_err on_records(const cm_kafka_record *recs, size_t n, void *ud)
{
    consumer_ctx *cc = ud;
    socket_event *head = NULL, **tail = &head;
    size_t count = 0;
    int64_t now = socket_wall_us();

    for (size_t i = 0; i < n; i++) {
        const cm_kafka_record *rec = &recs[i];
        socket_event *ev = NULL;
        cm_err rc = socket_event_from_cloudevent(rec->topic, rec->key, rec->key_len, rec->value,
                                                 rec->value_len, &ev);
        if (rc == CM_OK) {
            ev->t_produced = rec->timestamp_ms > 0 ? rec->timestamp_ms * 1000 : 0;
            ev->t_consumed = now;
            *tail = ev;
            tail = &ev->next;
            count++;
        } else if (rc == CM_EINVAL) {
            cm_warn("skipping a malformed event on %s partition %d offset %lld", rec->topic,
                    (int)rec->partition, (long long)rec->offset);
        }
    }
    if (head)
        socket_srv_post_chain(cc->srv, head, count);
    /* Delivery is best effort live: a client that misses an event catches up by cursor. */
    return CM_OK;
}

static void *consume(void *arg)
{
    consumer_ctx *cc = arg;

    while (!atomic_load(&cc->stop)) {
        cm_err rc = cm_kafka_consumer_poll_batch(cc->kafka, 200, CONSUME_BATCH, on_records, cc);
        if (rc == CM_OK || rc == CM_EAGAIN)
            atomic_store(&cc->polled, 1);
    }
    return NULL;
}

typedef struct ready_ctx {
    socket_srv *srv;
    consumer_ctx *cc;
    cm_redis *redis;
} ready_ctx;

static cm_err ready(void *ud, char *detail, size_t n)
{
    ready_ctx *r = ud;

    if (!socket_srv_serving(r->srv)) {
        snprintf(detail, n, "the WebSocket loop is not serving yet");
        return CM_EIO;
    }
    if (!atomic_load(&r->cc->polled)) {
        snprintf(detail, n, "the Kafka consumer has not joined yet");
        return CM_EIO;
    }
    if (cm_redis_ping(r->redis) != CM_OK) {
        snprintf(detail, n, "redis does not answer");
        return CM_EIO;
    }
    return CM_OK;
}

static void post_event(void *ud, socket_event *ev)
{
    socket_srv_post(ud, ev);
}

static void *run_loop(void *arg)
{
    socket_srv_run(arg);
    return NULL;
}

int main(int argc, char **argv)
{
    static const char *const topics[] = {"messages", "conversations", "users", "notifications"};
    socket_srv_config sc = {0};
    consumer_ctx cc = {0};
    ready_ctx rd = {0};
    cm_http_config hc;
    cm_http_server *http = NULL;
    cm_jwt *verifier = NULL;
    cm_redis *redis = NULL;
    socket_srv *srv = NULL;
    socket_ephemeral *eph = NULL;
    socket_ephemeral_config ec = {0};
    socket_presence_ctx pc = {0};
    long presence_ttl_ms;
    pthread_t loop_thread, consumer_thread;
    int loop_started = 0, consumer_started = 0, rc = 1;
    long ws_port, redis_port, threads, timeout_ms, failures, open_ms, drain_ms, tenant_ttl_ms;
    char group[256], host[128];

    if (cm_config_help_requested(argc, argv,
                                 "WebSocket connections, live delivery, acks, typing and presence.", vars,
                                 sizeof(vars) / sizeof(vars[0])))
        return 0;
    cm_process_block_signals();
    cm_log_init("socket", cm_log_level_parse(cm_config_str("LOG_LEVEL", NULL), CM_LOG_INFO));
    socket_limits *l = &sc.lim;
    if (cm_http_config_from_env(8183, &hc) ||
        cm_config_long("WS_PORT", 8083, 1, 65535, &ws_port) ||
        cm_config_long("REDIS_PORT", 6379, 1, 65535, &redis_port) ||
        cm_config_long("UPSTREAM_THREADS", 8, 1, 256, &threads) ||
        /* A send may wait LOCK_WAIT_MS for its conversation's write lease in the messaging
         * service, then hold it up to LOCK_TTL_MS: timing out before that answers `rejected`
         * for a message messaging then stores (services/socket/README.md, "Sends"). */
        cm_config_long("UPSTREAM_TIMEOUT_MS", 10000, 100, 600000, &timeout_ms) ||
        cm_config_long("BREAKER_FAILURES", 5, 1, 1000, &failures) ||
        cm_config_long("BREAKER_OPEN_MS", 5000, 100, 600000, &open_ms) ||
        cm_config_long("FRAME_MAX_BYTES", 65536, 256, 16 << 20, &l->frame_max) ||
        cm_config_long("RATE_PER_S", 50, 1, 100000, &l->rate_per_s) ||
        cm_config_long("CONNECTIONS_PER_USER", 20, 1, 10000, &l->per_user) ||
        cm_config_long("QUEUE_FRAMES", 4096, 16, 1000000, &l->queue_frames) ||
        cm_config_long("QUEUE_BYTES", 4 << 20, 65536, 1L << 30, &l->queue_bytes) ||
        cm_config_long("SNDBUF_BYTES", 0, 0, 64L << 20, &l->sndbuf) ||
        cm_config_long("PING_S", 30, 1, 3600, &l->ping_s) ||
        cm_config_long("IDLE_TIMEOUT_S", 75, 2, 7200, &l->idle_s) ||
        cm_config_long("SYNC_PAGE", 200, 1, 500, &l->sync_limit) ||
        cm_config_long("HELD_EVENTS", 1024, 0, 1000000, &l->buffer_events) ||
        cm_config_long("DRAIN_MS", 5000, 0, 600000, &drain_ms) ||
        cm_config_long("TYPING_TTL_MS", 6000, 500, 600000, &sc.typing_ttl_ms) ||
        cm_config_long("PRESENCE_TTL_MS", 60000, 1000, 86400000, &presence_ttl_ms) ||
        cm_config_long("PRESENCE_BEAT_MS", 20000, 250, 86400000, &sc.presence_beat_ms) ||
        cm_config_long("INSTANCE_TTL_MS", 15000, 1000, 86400000, &ec.instance_ttl_ms) ||
        cm_config_long("PRESENCE_BATCH_MS", 250, 0, 60000, &sc.presence_batch_ms) ||
        cm_jwt_verifier_from_env(&verifier) ||
        cm_redis_create(cm_config_str("REDIS_HOST", "127.0.0.1"), (int)redis_port, 3, 500,
                        &redis))
        goto out;
    if (sc.presence_beat_ms >= presence_ttl_ms) {
        cm_error("PRESENCE_BEAT_MS must be smaller than PRESENCE_TTL_MS");
        goto out;
    }
    if (l->idle_s <= l->ping_s) {
        cm_error("IDLE_TIMEOUT_S must be larger than PING_S");
        goto out;
    }
    sc.host = cm_config_str("WS_HOST", "127.0.0.1");
    sc.port = (int)ws_port;
    sc.verifier = verifier;
    sc.allowed_origins = cm_config_str("WS_ALLOWED_ORIGINS", "");
    if (cm_config_long("TENANT_SETTINGS_TTL_MS", 10000, 0, 3600000, &tenant_ttl_ms) ||
        cm_tenant_settings_create(cm_config_str("USER_URL", "http://127.0.0.1:8081"), tenant_ttl_ms,
                                  500, &sc.tenants))
        goto out;
    sc.redis = redis;
    sc.messaging_url = cm_config_str("MESSAGING_URL", "http://127.0.0.1:8082");
    sc.upstream_threads = (int)threads;
    sc.upstream_timeout_ms = timeout_ms;
    sc.breaker_threshold = (int)failures;
    sc.breaker_open_ms = open_ms;
    if (socket_srv_create(&sc, &srv) != CM_OK)
        goto out;
    /* Each instance is its own consumer group, so every instance sees every event; it starts at
     * the end of the topics: what happened before is what sync is for. */
    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "host");
    host[sizeof(host) - 1] = '\0';
    snprintf(group, sizeof(group), "%s-%s-%d-%lld", cm_config_str("KAFKA_GROUP_PREFIX", "socket"),
             host, (int)getpid(), (long long)time(NULL));
    cc.srv = srv;
    ec.redis = redis;
    ec.host = cm_config_str("REDIS_HOST", "127.0.0.1");
    ec.port = (int)redis_port;
    ec.channel = cm_config_str("EPHEMERAL_CHANNEL", "socket.ephemeral");
    ec.instance = group;
    ec.presence_ttl_ms = presence_ttl_ms;
    ec.post = post_event;
    ec.post_ud = srv;
    if (socket_ephemeral_create(&ec, &eph) != CM_OK)
        goto out;
    socket_srv_attach_ephemeral(srv, eph);
    if (cm_kafka_consumer_create(cm_config_str("KAFKA_BROKERS", "127.0.0.1:9092"),
                                 cm_config_str("KAFKA_TOPIC_PREFIX", ""), group, topics, 4, 0,
                                 &cc.kafka) != CM_OK)
        goto out;
    if (pthread_create(&loop_thread, NULL, run_loop, srv) != 0)
        goto out;
    loop_started = 1;
    if (pthread_create(&consumer_thread, NULL, consume, &cc) != 0)
        goto out;
    consumer_started = 1;
    rd.srv = srv;
    rd.cc = &cc;
    rd.redis = redis;
    if (cm_http_server_create(&hc, &http) != CM_OK)
        goto out;
    cm_session_enforce(redis); /* revoked sessions' tokens are refused (session.h) */
    pc.verifier = verifier;
    pc.eph = eph;
    if (cm_http_route(http, "GET", "/v1/users/{id}/presence", socket_presence_get, &pc) != CM_OK)
        goto out;
    cm_http_set_ready(http, ready, &rd);
    cm_http_set_metrics(http, socket_srv_metrics, srv);
    if (cm_http_server_start(http) != CM_OK)
        goto out;
    cm_info("socket service ready: WebSocket on %s:%ld/v1/ws, HTTP on %s:%d", sc.host, ws_port,
            hc.host, hc.port);
    cm_info("stopping on signal %d", cm_process_wait_signal());
    rc = 0;
out:
    /* Stop taking connections and close the open ones with 1001, then the consumer. */
    if (loop_started) {
        socket_srv_stop(srv, drain_ms);
        pthread_join(loop_thread, NULL);
    }
    /* Then the Redis side: the drain's disconnects are run before it stops. */
    cm_http_server_destroy(http);
    http = NULL;
    /* Detached first: connections lws closes in socket_srv_destroy must not report their
     * disconnect to a freed ephemeral (ASan heap-use-after-free at shutdown). */
    if (srv)
        socket_srv_attach_ephemeral(srv, NULL);
    socket_ephemeral_destroy(eph);
    if (consumer_started) {
        atomic_store(&cc.stop, 1);
        pthread_join(consumer_thread, NULL);
    }
    cm_http_server_destroy(http);
    cm_kafka_consumer_destroy(cc.kafka);
    socket_srv_destroy(srv);
    cm_tenant_settings_destroy(sc.tenants);
    cm_redis_destroy(redis);
    cm_jwt_destroy(verifier);
    return rc;
}
