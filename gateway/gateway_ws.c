/* gateway_ws.c - the WebSocket proxy: a client's upgrade is sent to a socket instance (least
 * connections) with the gateway's headers, the instance's 101 is relayed, and from then on a
 * relay thread copies bytes both ways without re-framing. It only follows the frame headers
 * of the instance's stream, so that when the instance goes away it can end the client's
 * connection with a close frame of its own (1012 "service restart": reconnect) at a frame
 * boundary. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "common/log.h"
#include "gateway.h"

#define HEAD_MAX 16384 /* the instance's 101 or refusal headers */
#define REFUSAL_BODY_MAX 65536
#define RELAY_BUF 16384
#define RELAY_STACK (512u << 10)

/* --- frame boundaries (RFC 6455 section 5.2) ----------------------------------------------- */

void gateway_ws_track_feed(gateway_ws_track *t, const unsigned char *p, size_t n)
{
    while (n > 0) {
        size_t need;
        uint64_t len;

        if (t->left > 0) {
            size_t k = n < t->left ? n : (size_t)t->left;
            t->left -= k;
            p += k;
            n -= k;
            continue;
        }
        t->hdr[t->hlen++] = *p++;
        n--;
        if (t->hlen < 2)
            continue;
        len = t->hdr[1] & 0x7f;
        need = 2 + (len == 126 ? 2 : len == 127 ? 8 : 0) + ((t->hdr[1] & 0x80) ? 4 : 0);
        if (t->hlen < need)
            continue;
        if (len == 126) {
            len = ((uint64_t)t->hdr[2] << 8) | t->hdr[3];
        } else if (len == 127) {
            len = 0;
            for (int i = 2; i < 10; i++)
                len = (len << 8) | t->hdr[i];
        }
        if ((t->hdr[0] & 0x0f) == 0x8)
            t->close_seen = 1;
        t->left = len;
        t->hlen = 0;
    }
}

int gateway_ws_track_at_boundary(const gateway_ws_track *t)
{
    return t->hlen == 0 && t->left == 0;
}

size_t gateway_ws_close_frame(int code, const char *reason, unsigned char *out, size_t n)
{
    size_t rlen = strlen(reason);

    if (rlen > 123)
        rlen = 123; /* control frame payloads are at most 125 bytes */
    if (n < 4 + rlen)
        return 0;
    out[0] = 0x88; /* FIN, close; unmasked, as a server's frames are */
    out[1] = (unsigned char)(2 + rlen);
    out[2] = (unsigned char)(code >> 8);
    out[3] = (unsigned char)(code & 0xff);
    memcpy(out + 4, reason, rlen);
    return 4 + rlen;
}

/* --- relayed connections ------------------------------------------------------------------- */

struct gateway_ws_relay {
    gateway_ctx *ctx;
    gateway_instance *inst;
    int up_fd, client_fd;
    cm_http_upgrade *handle;
    char *pending; /* the instance's bytes after its 101, for the client first */
    size_t npending;
    char *extra; /* the client's bytes after its request, for the instance first */
    size_t nextra;
    gateway_ws_track track;
    struct gateway_ws_relay *prev, *next;
};

static void relay_free(void *ud)
{
    struct gateway_ws_relay *r = ud;
    if (r == NULL)
        return;
    if (r->up_fd >= 0)
        close(r->up_fd);
    if (r->inst)
        atomic_fetch_sub(&r->inst->inflight, 1);
    free(r->pending);
    free(r->extra);
    free(r);
}

/* Writes all of p[0..n); 0, or -1 when the peer is gone. */
static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Writes the gateway's own close frame to the client when the stream is between frames and
 * the instance has not closed it already (otherwise a frame would be cut or a second close
 * sent: the client then only sees the TCP close, and reconnects all the same). */
static void close_client(struct gateway_ws_relay *r, int code, const char *reason)
{
    unsigned char f[128];
    size_t n;

    if (r->track.close_seen || !gateway_ws_track_at_boundary(&r->track))
        return;
    n = gateway_ws_close_frame(code, reason, f, sizeof(f));
    if (n > 0)
        (void)write_all(r->client_fd, f, n);
}

enum relay_end { END_CLIENT, END_UPSTREAM, END_UPSTREAM_GONE, END_IDLE, END_DRAIN };
static const char *const end_names[] = {"client", "upstream", "upstream_gone", "idle", "drain"};

/* Copies one read's worth from `from` to `to`; counts bytes in *counter. 1: copied, 0: `from`
 * closed or failed, -1: `to` failed. */
static int pump(struct gateway_ws_relay *r, int from, int to, int track, atomic_ulong *counter)
{
    char buf[RELAY_BUF];
    ssize_t n = recv(from, buf, sizeof(buf), 0);

    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return 1;
    if (n <= 0)
        return 0;
    if (track)
        gateway_ws_track_feed(&r->track, (const unsigned char *)buf, (size_t)n);
    if (write_all(to, buf, (size_t)n) != 0)
        return -1;
    atomic_fetch_add(counter, (unsigned long)n);
    return 1;
}

static enum relay_end relay_loop(struct gateway_ws_relay *r)
{
    gateway_ws *ws = &r->ctx->ws;
    int64_t last = gateway_now_ms();

    if (r->nextra && write_all(r->up_fd, r->extra, r->nextra) != 0)
        return END_UPSTREAM_GONE;
    if (r->npending) {
        gateway_ws_track_feed(&r->track, (const unsigned char *)r->pending, r->npending);
        if (write_all(r->client_fd, r->pending, r->npending) != 0)
            return END_CLIENT;
    }
    for (;;) {
        struct pollfd p[2] = {{r->client_fd, POLLIN, 0}, {r->up_fd, POLLIN, 0}};
        int64_t now;
        int rc = poll(p, 2, 1000);

        if (atomic_load(&ws->stopping))
            return END_DRAIN;
        now = gateway_now_ms();
        if (rc < 0 && errno != EINTR)
            return END_CLIENT;
        if (rc <= 0) {
            if (now - last >= r->ctx->ws_idle_ms)
                return END_IDLE;
            continue;
        }
        last = now;
        if (p[1].revents) {
            rc = pump(r, r->up_fd, r->client_fd, 1, &ws->bytes_down);
            if (rc == 0)
                return r->track.close_seen ? END_UPSTREAM : END_UPSTREAM_GONE;
            if (rc < 0)
                return END_CLIENT;
        }
        if (p[0].revents) {
            rc = pump(r, r->client_fd, r->up_fd, 0, &ws->bytes_up);
            if (rc == 0)
                return END_CLIENT;
            if (rc < 0)
                return r->track.close_seen ? END_UPSTREAM : END_UPSTREAM_GONE;
        }
    }
}

static void *relay_main(void *ud)
{
    struct gateway_ws_relay *r = ud;
    gateway_ws *ws = &r->ctx->ws;
    enum relay_end end = relay_loop(r);

    switch (end) {
    case END_UPSTREAM_GONE:
        close_client(r, 1012, "service restart");
        cm_info("gateway: websocket: instance %s went away; client told to reconnect (1012)",
                r->inst->id);
        break;
    case END_IDLE:
        close_client(r, 1001, "idle timeout");
        break;
    case END_DRAIN:
        close_client(r, 1001, "gateway going away");
        break;
    default:
        break;
    }
    atomic_fetch_add(&ws->closed[end], 1);
    cm_http_upgrade_close(r->handle);
    pthread_mutex_lock(&ws->lock);
    if (r->prev)
        r->prev->next = r->next;
    else
        ws->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    ws->open--;
    pthread_cond_broadcast(&ws->cond);
    pthread_mutex_unlock(&ws->lock);
    relay_free(r);
    return NULL;
}

/* The client's connection is ours: start its relay thread. */
static void on_upgraded(void *ud, int fd, const char *extra, size_t extra_len,
                        cm_http_upgrade *up)
{
    struct gateway_ws_relay *r = ud;
    gateway_ws *ws = &r->ctx->ws;
    pthread_attr_t attr;
    pthread_t t;
    int rc;

    r->client_fd = fd;
    r->handle = up;
    if (extra_len) {
        r->extra = malloc(extra_len);
        if (r->extra == NULL)
            goto fail;
        memcpy(r->extra, extra, extra_len);
        r->nextra = extra_len;
    }
    pthread_mutex_lock(&ws->lock);
    r->next = ws->head;
    if (ws->head)
        ws->head->prev = r;
    ws->head = r;
    ws->open++;
    atomic_fetch_add(&ws->opened, 1);
    pthread_mutex_unlock(&ws->lock);
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, RELAY_STACK);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&t, &attr, relay_main, r);
    pthread_attr_destroy(&attr);
    if (rc == 0)
        return;
    cm_error("gateway: websocket: no relay thread: %s", strerror(rc));
    pthread_mutex_lock(&ws->lock);
    if (r->next)
        r->next->prev = NULL;
    ws->head = r->next;
    ws->open--;
    pthread_mutex_unlock(&ws->lock);
fail:
    close_client(r, 1011, "internal error");
    cm_http_upgrade_close(up);
    relay_free(r);
}

/* --- the handshake with the instance ------------------------------------------------------- */

/* Connects to "addr:port" or "[v6]:port" within timeout_ms; the socket is blocking, with
 * send and receive timeouts of io_ms for the handshake. -1 on failure. */
static int connect_instance(const char *id, long timeout_ms, long io_ms)
{
    char host[INET6_ADDRSTRLEN + 2], *colon;
    struct addrinfo hints = {0}, *res = NULL;
    struct timeval tv = {io_ms / 1000, (io_ms % 1000) * 1000};
    int fd = -1, one = 1;

    if (snprintf(host, sizeof(host), "%s", id) >= (int)sizeof(host) ||
        (colon = strrchr(host, ':')) == NULL)
        return -1;
    *colon = '\0';
    if (host[0] == '[') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0)
        return -1;
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        goto fail;
    if (connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
        struct pollfd p = {fd, POLLOUT, 0};
        int err = 0;
        socklen_t len = sizeof(err);
        if (errno != EINPROGRESS || poll(&p, 1, (int)timeout_ms) != 1 ||
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0)
            goto fail;
    }
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0)
        goto fail;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    freeaddrinfo(res);
    return fd;
fail:
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    return -1;
}

/* The upgrade request for the instance: the client's request line and headers (minus the
 * dropped ones) with the gateway's, and the upgrade's own hop-by-hop pair. -1 when it does
 * not fit in `out` (size n). */
static int build_request(cm_http_req *req, const struct curl_slist *headers, const char *target,
                         char *out, size_t n)
{
    const char *host = cm_http_header(req, "Host");
    size_t len;
    int w = snprintf(out, n, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\n"
                             "Upgrade: websocket\r\n",
                     target, host ? host : "localhost");

    if (w < 0 || (size_t)w >= n)
        return -1;
    len = (size_t)w;
    for (const struct curl_slist *h = headers; h; h = h->next) {
        w = snprintf(out + len, n - len, "%s\r\n", h->data);
        if (w < 0 || (size_t)w >= n - len)
            return -1;
        len += (size_t)w;
    }
    if (len + 3 > n)
        return -1;
    memcpy(out + len, "\r\n", 3);
    return (int)(len + 2);
}

/* Reads the instance's answer head into buf (size n) up to the blank line. Returns its
 * length, with *got the bytes read in all (the rest belongs to the body or the stream);
 * -1 on a timeout, a close or a head larger than n. */
static long read_head(int fd, char *buf, size_t n, size_t *got)
{
    size_t len = 0;

    while (len < n - 1) {
        ssize_t r = recv(fd, buf + len, n - 1 - len, 0);
        char *end;
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        len += (size_t)r;
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
        if (end) {
            *got = len;
            return (long)(end + 4 - buf);
        }
    }
    return -1;
}

/* The value of header `name` in a head (lines after the status line), copied to out. */
static int head_value(const char *head, const char *name, char *out, size_t n)
{
    size_t nl = strlen(name);
    for (const char *l = strstr(head, "\r\n"); l && l[2] != '\r'; l = strstr(l + 2, "\r\n")) {
        const char *v = l + 2, *e;
        if (strncasecmp(v, name, nl) != 0 || v[nl] != ':')
            continue;
        v += nl + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        e = strstr(v, "\r\n");
        if (e == NULL || (size_t)(e - v) >= n)
            return -1;
        memcpy(out, v, (size_t)(e - v));
        out[e - v] = '\0';
        return 0;
    }
    return -1;
}

/* Relays a refusal (401, 404, 429...) with its body as the answer to the client. */
static void relay_refusal(cm_http_req *req, int fd, int status, char *buf, long head_len,
                          size_t got)
{
    char ct[128], cl[32], *body = NULL, *end;
    unsigned long want = 0;
    size_t have = got - (size_t)head_len;

    if (head_value(buf, "Content-Length", cl, sizeof(cl)) == 0) {
        want = strtoul(cl, &end, 10);
        if (*end != '\0' || want > REFUSAL_BODY_MAX)
            want = 0;
    }
    body = malloc(want + 1);
    if (body == NULL) {
        cm_http_reply_error(req, CM_ENOMEM, NULL);
        return;
    }
    if (have > want)
        have = want;
    memcpy(body, buf + head_len, have);
    while (have < want) {
        ssize_t r = recv(fd, body + have, want - have, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        have += (size_t)r;
    }
    if (head_value(buf, "WWW-Authenticate", cl, sizeof(cl)) == 0)
        cm_http_add_header(req, "WWW-Authenticate", cl);
    cm_http_reply_raw(req, status, head_value(buf, "Content-Type", ct, sizeof(ct)) == 0 ? ct : NULL,
                      body, have);
    free(body);
}

int gateway_ws_is_upgrade(cm_http_req *req)
{
    const char *u = cm_http_header(req, "Upgrade");
    return u && strcasecmp(u, "websocket") == 0 && strcmp(cm_http_method(req), "GET") == 0;
}

/* One attempt at `inst`: 1 when the request was answered (101 handed over, or the instance's
 * refusal relayed), 0 when the instance could not be reached or failed (try another). */
static int try_instance(gateway_ctx *ctx, cm_http_req *req, gateway_instance *inst,
                        const char *request, size_t request_len)
{
    static const char *const kept[] = {"Upgrade", "Sec-WebSocket-Accept",
                                       "Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions"};
    struct gateway_ws_relay *r;
    char *buf = NULL, value[512];
    size_t got = 0;
    long head_len;
    int fd, status = 0;
    struct timespec t0, t1;
    double secs;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    fd = connect_instance(inst->id, ctx->connect_timeout_ms, ctx->timeout_ms);
    if (fd < 0 || write_all(fd, request, request_len) != 0)
        goto failed;
    buf = malloc(HEAD_MAX);
    if (buf == NULL)
        goto failed;
    head_len = read_head(fd, buf, HEAD_MAX, &got);
    if (head_len < 0 || sscanf(buf, "HTTP/1.%*d %3d", &status) != 1 || status >= 500)
        goto failed;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    gateway_done(ctx, inst, 1, secs);
    cm_http_log_field(req, "upstream", inst->id);
    if (status != 101) {
        atomic_fetch_add(&ctx->ws.refused, 1);
        relay_refusal(req, fd, status, buf, head_len, got);
        close(fd);
        free(buf);
        return 1;
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        close(fd);
        free(buf);
        cm_http_reply_error(req, CM_ENOMEM, NULL);
        return 1;
    }
    r->ctx = ctx;
    r->up_fd = fd;
    r->client_fd = -1;
    /* Counted in flight for as long as the relay lasts: least connections sees it. */
    atomic_fetch_add(&inst->inflight, 1);
    r->inst = inst;
    if (got > (size_t)head_len) {
        r->npending = got - (size_t)head_len;
        r->pending = malloc(r->npending);
        if (r->pending == NULL) {
            relay_free(r);
            free(buf);
            cm_http_reply_error(req, CM_ENOMEM, NULL);
            return 1;
        }
        memcpy(r->pending, buf + head_len, r->npending);
    }
    {
        /* The relay blocks in poll; the handshake's timeouts must not end it. */
        struct timeval none = {0, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof(none));
    }
    for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++)
        if (head_value(buf, kept[i], value, sizeof(value)) == 0)
            cm_http_add_header(req, kept[i], value);
    free(buf);
    cm_http_reply_upgrade(req, on_upgraded, r, relay_free);
    return 1;
failed:
    clock_gettime(CLOCK_MONOTONIC, &t1);
    secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    gateway_done(ctx, inst, 0, secs);
    if (fd >= 0)
        close(fd);
    free(buf);
    return 0;
}

void gateway_ws_proxy(gateway_ctx *ctx, cm_http_req *req, gateway_route *route,
                      const cm_jwt_claims *claims)
{
    char target[4096], *request = NULL;
    struct curl_slist *headers = NULL;
    gateway_instance *inst = NULL;
    int len, tries = 0;

    if (gateway_request_target(req, target, sizeof(target)) != 0) {
        cm_http_problem(req, 414, "uri-too-long", "URI Too Long", "the request URI is too long");
        goto out;
    }
    headers = gateway_forward_headers(req, claims);
    request = malloc(HEAD_MAX * 2);
    if (headers == NULL || request == NULL) {
        cm_http_reply_error(req, CM_ENOMEM, NULL);
        goto out;
    }
    len = build_request(req, headers, target, request, HEAD_MAX * 2);
    if (len < 0) {
        cm_http_problem(req, 431, "headers-too-large", "Request Header Fields Too Large",
                        "the upgrade request's headers are too large to relay");
        goto out;
    }
    for (;;) {
        char url[GW_URL_MAX], connect_to[GW_URL_MAX];
        int64_t retry_in = 0;
        if (gateway_pick(ctx, route->pool, inst, &inst, url, connect_to, &retry_in) != CM_OK)
            break;
        tries++;
        if (try_instance(ctx, req, inst, request, (size_t)len))
            goto out;
        cm_warn("gateway: websocket: instance %s failed the upgrade", inst->id);
        /* An upgrade is a GET that has changed nothing yet: another instance may take it. */
        if (tries > ctx->retry_max)
            break;
    }
    atomic_fetch_add(&ctx->ws.failed, 1);
    cm_http_add_header(req, "Retry-After", "1");
    cm_http_problem(req, 503, "upstream-unavailable", "Service Unavailable",
                    "no instance of the %s service can take WebSocket connections now",
                    route->pool->name);
out:
    free(request);
}

/* --- lifecycle and metrics ----------------------------------------------------------------- */

void gateway_ws_init(gateway_ws *ws)
{
    pthread_mutex_init(&ws->lock, NULL);
    pthread_cond_init(&ws->cond, NULL);
}

void gateway_ws_shutdown(gateway_ws *ws, long wait_ms)
{
    struct timespec until;

    atomic_store(&ws->stopping, 1);
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += wait_ms / 1000;
    until.tv_nsec += (wait_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&ws->lock);
    while (ws->open > 0 && pthread_cond_timedwait(&ws->cond, &ws->lock, &until) == 0)
        ;
    if (ws->open > 0)
        cm_warn("gateway: websocket: %d relays still open at shutdown", ws->open);
    pthread_mutex_unlock(&ws->lock);
}

void gateway_ws_metrics(gateway_ws *ws, void (*emit)(void *ctx, const char *text), void *ectx)
{
    char line[512];
    int open;

    pthread_mutex_lock(&ws->lock);
    open = ws->open;
    pthread_mutex_unlock(&ws->lock);
    snprintf(line, sizeof(line),
             "# TYPE gateway_ws_connections gauge\ngateway_ws_connections %d\n"
             "# TYPE gateway_ws_upgrades_total counter\n"
             "gateway_ws_upgrades_total{result=\"relayed\"} %lu\n"
             "gateway_ws_upgrades_total{result=\"refused\"} %lu\n"
             "gateway_ws_upgrades_total{result=\"unavailable\"} %lu\n"
             "# TYPE gateway_ws_bytes_total counter\n"
             "gateway_ws_bytes_total{direction=\"to_upstream\"} %lu\n"
             "gateway_ws_bytes_total{direction=\"to_client\"} %lu\n"
             "# TYPE gateway_ws_closed_total counter\n",
             open, atomic_load(&ws->opened), atomic_load(&ws->refused),
             atomic_load(&ws->failed), atomic_load(&ws->bytes_up), atomic_load(&ws->bytes_down));
    emit(ectx, line);
    for (size_t i = 0; i < sizeof(end_names) / sizeof(end_names[0]); i++) {
        snprintf(line, sizeof(line), "gateway_ws_closed_total{by=\"%s\"} %lu\n", end_names[i],
                 atomic_load(&ws->closed[i]));
        emit(ectx, line);
    }
}
