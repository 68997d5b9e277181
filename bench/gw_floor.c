/* gw_floor.c - the floor of the gateway benchmark (bench/gateway_bench.sh): the smallest
 * correct proxy the gateway's two mandated libraries make, libmicrohttpd serving and a blocking
 * libcurl easy handle per server thread (issue 6: "a naive libmicrohttpd + blocking libcurl
 * prototype reached 0.75x" nginx's throughput). No auth, no limits, no route table, no
 * metrics, no logging: it forwards the request's path (not its query string: the bench's GET
 * has none) and its Authorization header to one upstream with GET and answers the upstream's
 * status, Content-Type and body. What the
 * gateway spends beyond this floor is what its features and its structure cost; what this
 * floor spends beyond nginx is what the two libraries cost on this machine.
 *
 * Configuration (environment):
 *   FLOOR_PORT      listening port on 127.0.0.1 (required)
 *   FLOOR_UPSTREAM  base URL of the upstream, e.g. http://127.0.0.1:29081 (required)
 *   FLOOR_MODE      "epoll" (default): MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
 *                   MHD_USE_TURBO (as libcommon's server) with a thread pool of FLOOR_THREADS
 *                   (default 1) threads, each with one libcurl easy handle; "poll": the same
 *                   with poll() instead of epoll; "select": with select(); "tpc":
 *                   MHD_USE_THREAD_PER_CONNECTION (a thread and a handle per client
 *                   connection, FLOOR_THREADS unused); "evented": no blocking at all, one
 *                   thread: libmicrohttpd in external epoll mode and a libcurl multi handle
 *                   (curl_multi_socket_action) on one epoll set, each request suspended while
 *                   its transfer runs and resumed on the same thread (the structure with the
 *                   fewest switches these libraries allow; FLOOR_THREADS unused);
 *                   "raw": as "epoll", but the upstream call is a blocking keep-alive socket
 *                   per thread with a minimal HTTP/1.1 exchange written here (no libcurl:
 *                   a measuring instrument for what libcurl costs, never product code; it
 *                   understands only Content-Length bodies up to 64 KiB).
 * The easy handles are reused (their connection kept alive: one upstream connection per
 * server thread), with CURLOPT_NOSIGNAL and no proxy lookup (CURLOPT_PROXY ""), as the
 * gateway's. Methods other than GET get 405; an upstream failure 502. Runs until SIGTERM or
 * SIGINT. */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <curl/curl.h>
#include <microhttpd.h>

#define BODY_MAX (1 << 20) /* larger upstream bodies fail the transfer: 502 */

/* An upstream body as it arrives (libcurl's CURLOPT_WRITEDATA for on_body). */
struct body {
    char *buf;
    size_t len, cap;
};

struct floor_thread {
    CURL *easy;
    struct body body;
};

static const char *upstream;
static size_t upstream_len;
static pthread_key_t thread_key;

static void thread_free(void *p)
{
    struct floor_thread *t = p;
    curl_easy_cleanup(t->easy);
    free(t->body.buf);
    free(t);
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    struct body *b = ud;
    size_t n = size * nmemb;

    if (b->len + n > BODY_MAX)
        return 0; /* fails the transfer: 502 */
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16384;
        char *p;
        while (cap < b->len + n)
            cap *= 2;
        if ((p = realloc(b->buf, cap)) == NULL)
            return 0;
        b->buf = p;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, data, n);
    b->len += n;
    return n;
}

/* The calling server thread's handle, made on its first request. */
static struct floor_thread *thread_get(void)
{
    struct floor_thread *t = pthread_getspecific(thread_key);

    if (t)
        return t;
    if ((t = calloc(1, sizeof(*t))) == NULL)
        return NULL;
    if ((t->easy = curl_easy_init()) == NULL) {
        free(t);
        return NULL;
    }
    curl_easy_setopt(t->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(t->easy, CURLOPT_PROXY, "");
    curl_easy_setopt(t->easy, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(t->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, &t->body);
    curl_easy_setopt(t->easy, CURLOPT_TIMEOUT_MS, 10000L);
    pthread_setspecific(thread_key, t);
    return t;
}

static enum MHD_Result answer(struct MHD_Connection *conn, unsigned status, const char *ct,
                              const void *body, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)(uintptr_t)body, MHD_RESPMEM_MUST_COPY);
    enum MHD_Result rc;

    if (r == NULL)
        return MHD_NO;
    if (ct)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ct);
    rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    static int first_call;
    struct floor_thread *t;
    struct curl_slist auth_node = {0};
    char target[4096], auth[8192];
    const char *h, *ct = NULL;
    size_t ul = strlen(url);
    long status = 0;
    CURLcode cc;
    (void)cls;
    (void)version;
    (void)upload_data;

    if (*con_cls == NULL) { /* headers are in: answer on the next call */
        *con_cls = &first_call;
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0; /* a GET body is ignored */
        return MHD_YES;
    }
    if (strcmp(method, "GET") != 0)
        return answer(conn, 405, "text/plain", "GET only\n", 9);
    if (upstream_len + ul + 1 > sizeof(target) || (t = thread_get()) == NULL)
        return answer(conn, 500, "text/plain", "floor: no handle or URL too long\n", 33);
    memcpy(target, upstream, upstream_len);
    memcpy(target + upstream_len, url, ul + 1);
    curl_easy_setopt(t->easy, CURLOPT_URL, target);
    h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (h && (size_t)snprintf(auth, sizeof(auth), "Authorization: %s", h) < sizeof(auth)) {
        auth_node.data = auth; /* a list on the stack: libcurl only reads it */
        curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, &auth_node);
    } else {
        curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, NULL);
    }
    t->body.len = 0;
    cc = curl_easy_perform(t->easy);
    curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, NULL); /* auth_node leaves the stack */
    if (cc != CURLE_OK)
        return answer(conn, 502, "text/plain", "floor: upstream failed\n", 23);
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    if (curl_easy_getinfo(t->easy, CURLINFO_CONTENT_TYPE, &ct) != CURLE_OK)
        ct = NULL;
    return answer(conn, (unsigned)status, ct, t->body.buf, t->body.len);
}

/* --- "raw": the same server threads, the upstream call without libcurl ------------------- */

struct raw_thread {
    int fd;
    char buf[65536];
};

static pthread_key_t raw_key;
static struct sockaddr_in raw_up;
static char raw_host[64];

static void raw_free(void *p)
{
    struct raw_thread *t = p;
    if (t->fd >= 0)
        close(t->fd);
    free(t);
}

/* One GET over the thread's kept-alive connection (opened when missing). Returns the body's
 * length (at t->buf + *body_off) and sets the status, or -1. */
static long raw_get(struct raw_thread *t, const char *url, const char *auth, long *status,
                    size_t *body_off)
{
    char req[12288];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\n%s%s%sAccept: */*\r\n\r\n",
                     url, raw_host, auth ? "Authorization: " : "", auth ? auth : "",
                     auth ? "\r\n" : "");
    size_t have = 0;
    long clen = -1;
    char *eoh = NULL;

    if (n < 0 || (size_t)n >= sizeof(req))
        return -1;
    if (t->fd < 0) {
        int one = 1;
        if ((t->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
            return -1;
        setsockopt(t->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(t->fd, (struct sockaddr *)&raw_up, sizeof(raw_up)) != 0)
            goto fail;
    }
    if (send(t->fd, req, (size_t)n, MSG_NOSIGNAL) != n)
        goto fail;
    for (;;) {
        ssize_t r = recv(t->fd, t->buf + have, sizeof(t->buf) - 1 - have, 0);
        if (r <= 0)
            goto fail;
        have += (size_t)r;
        t->buf[have] = '\0';
        if (eoh == NULL && (eoh = strstr(t->buf, "\r\n\r\n")) != NULL) {
            char *cl = strcasestr(t->buf, "\r\nContent-Length:");
            if (cl == NULL || cl > eoh || sscanf(t->buf, "HTTP/1.%*d %ld", status) != 1)
                goto fail;
            clen = strtol(cl + 17, NULL, 10);
            *body_off = (size_t)(eoh + 4 - t->buf);
        }
        if (eoh && have >= *body_off + (size_t)clen)
            return clen;
        if (have + 1 >= sizeof(t->buf))
            goto fail;
    }
fail:
    close(t->fd);
    t->fd = -1;
    return -1;
}

static enum MHD_Result raw_on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **con_cls)
{
    static int first_call;
    struct raw_thread *t = pthread_getspecific(raw_key);
    long status = 0, len;
    size_t off = 0;
    (void)cls;
    (void)version;
    (void)upload_data;

    if (*con_cls == NULL) {
        *con_cls = &first_call;
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (strcmp(method, "GET") != 0)
        return answer(conn, 405, "text/plain", "GET only\n", 9);
    if (t == NULL) {
        if ((t = malloc(sizeof(*t))) == NULL)
            return MHD_NO;
        t->fd = -1;
        pthread_setspecific(raw_key, t);
    }
    {
        const char *auth =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        int reused = t->fd >= 0;
        len = raw_get(t, url, auth, &status, &off);
        if (len < 0 && reused) /* the kept-alive connection was closed: once more, afresh */
            len = raw_get(t, url, auth, &status, &off);
    }
    if (len < 0)
        return answer(conn, 502, "text/plain", "floor: upstream failed\n", 23);
    {
        char ct[128] = "", *h = strcasestr(t->buf, "\r\nContent-Type:");
        if (h && h < t->buf + off) {
            size_t n;
            h += 15;
            h += strspn(h, " ");
            n = strcspn(h, "\r");
            if (n < sizeof(ct)) {
                memcpy(ct, h, n);
                ct[n] = '\0';
            }
        }
        return answer(conn, (unsigned)status, ct[0] ? ct : NULL, t->buf + off, (size_t)len);
    }
}

/* --- "evented": one thread, libmicrohttpd external epoll + libcurl multi ------------------ */

struct ev_req {
    struct MHD_Connection *conn;
    CURL *easy;
    struct curl_slist auth_node;
    struct body body;
    long status;
    int started, done, failed;
    char auth[8192];
};

static int ev_ep;
static CURLM *ev_multi;
static int64_t ev_timer_ms = -1; /* libcurl's timeout, ms from ev_now(); -1 none */
static CURL *ev_free[256];
static int ev_nfree;

/* A request's end: its easy handle (if any) back to the free list, or cleaned up when the list
 * is full; its body and itself freed. */
static void ev_release(struct ev_req *r)
{
    if (r->easy) {
        if (ev_nfree < (int)(sizeof(ev_free) / sizeof(ev_free[0])))
            ev_free[ev_nfree++] = r->easy;
        else
            curl_easy_cleanup(r->easy);
    }
    free(r->body.buf);
    free(r);
}

static int64_t ev_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int ev_on_socket(CURL *e, curl_socket_t fd, int what, void *ud, void *sockp)
{
    struct epoll_event ev = {.data.fd = fd};
    (void)e;
    (void)ud;

    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(ev_ep, EPOLL_CTL_DEL, fd, NULL);
        curl_multi_assign(ev_multi, fd, NULL);
        return 0;
    }
    ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0u) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u);
    if (sockp == NULL) {
        epoll_ctl(ev_ep, EPOLL_CTL_ADD, fd, &ev);
        curl_multi_assign(ev_multi, fd, &ev_ep);
    } else {
        epoll_ctl(ev_ep, EPOLL_CTL_MOD, fd, &ev);
    }
    return 0;
}

static int ev_on_timer(CURLM *m, long timeout_ms, void *ud)
{
    (void)m;
    (void)ud;
    ev_timer_ms = timeout_ms < 0 ? -1 : ev_now() + timeout_ms;
    return 0;
}

static enum MHD_Result ev_on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                     const char *method, const char *version,
                                     const char *upload_data, size_t *upload_data_size,
                                     void **con_cls)
{
    struct ev_req *r = *con_cls;
    char target[4096];
    const char *h, *ct = NULL;
    size_t ul = strlen(url);
    enum MHD_Result rc;
    (void)cls;
    (void)version;
    (void)upload_data;

    if (r == NULL) { /* headers are in: answer (or start) on the next call */
        if ((r = calloc(1, sizeof(*r))) == NULL)
            return MHD_NO;
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0; /* a GET body is ignored */
        return MHD_YES;
    }
    if (!r->started) { /* the request is in: start the transfer, suspend */
        if (strcmp(method, "GET") != 0 || upstream_len + ul + 1 > sizeof(target)) {
            free(r);
            *con_cls = NULL;
            return answer(conn, 405, "text/plain", "GET only\n", 9);
        }
        if (ev_nfree > 0) {
            r->easy = ev_free[--ev_nfree];
        } else if ((r->easy = curl_easy_init()) != NULL) {
            curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
            curl_easy_setopt(r->easy, CURLOPT_PROXY, "");
            curl_easy_setopt(r->easy, CURLOPT_HTTPGET, 1L);
            curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_body);
            curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, 10000L);
        } else {
            free(r);
            *con_cls = NULL;
            return answer(conn, 500, "text/plain", "floor: no handle\n", 17);
        }
        memcpy(target, upstream, upstream_len);
        memcpy(target + upstream_len, url, ul + 1);
        r->conn = conn;
        curl_easy_setopt(r->easy, CURLOPT_URL, target);
        curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, &r->body);
        curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
        h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        if (h && (size_t)snprintf(r->auth, sizeof(r->auth), "Authorization: %s", h) <
                     sizeof(r->auth)) {
            r->auth_node.data = r->auth;
            curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, &r->auth_node);
        } else {
            curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, NULL);
        }
        r->started = 1;
        curl_multi_add_handle(ev_multi, r->easy);
        MHD_suspend_connection(conn);
        return MHD_YES;
    }
    if (!r->done)
        return MHD_YES; /* not resumed by us: wait */
    if (r->failed)
        rc = answer(conn, 502, "text/plain", "floor: upstream failed\n", 23);
    else {
        if (curl_easy_getinfo(r->easy, CURLINFO_CONTENT_TYPE, &ct) != CURLE_OK)
            ct = NULL;
        rc = answer(conn, (unsigned)r->status, ct, r->body.buf, r->body.len);
    }
    ev_release(r);
    *con_cls = NULL;
    return rc;
}

/* A request that ends before it was answered (its client gone): its state and handle back. */
static void ev_on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                            enum MHD_RequestTerminationCode toe)
{
    struct ev_req *r = *con_cls;
    (void)cls;
    (void)conn;
    (void)toe;

    if (r == NULL)
        return;
    ev_release(r); /* if started, resumed only once its transfer ended: not in the multi */
    *con_cls = NULL;
}

static volatile sig_atomic_t ev_stop;

static void ev_on_signal(int sig)
{
    (void)sig;
    ev_stop = 1;
}

/* Runs the evented floor on this thread until SIGTERM/SIGINT (which interrupt epoll_wait). */
static int run_evented(struct sockaddr_in *sa)
{
    struct sigaction act = {.sa_handler = ev_on_signal};
    struct MHD_Daemon *d;
    const union MHD_DaemonInfo *info;
    struct epoll_event ev = {.events = EPOLLIN}, evs[64];
    sigset_t set;
    int running = 0, mhd_fd;

    d = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_TURBO | MHD_ALLOW_SUSPEND_RESUME |
                             MHD_USE_ERROR_LOG,
                         0, NULL, NULL, ev_on_request, NULL, MHD_OPTION_SOCK_ADDR,
                         (struct sockaddr *)sa, MHD_OPTION_CONNECTION_TIMEOUT, 30u,
                         MHD_OPTION_NOTIFY_COMPLETED, ev_on_completed, NULL, MHD_OPTION_END);
    if (d == NULL || (info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_EPOLL_FD)) == NULL)
        return 1;
    mhd_fd = info->epoll_fd;
    ev_ep = epoll_create1(EPOLL_CLOEXEC);
    ev.data.fd = mhd_fd;
    ev_multi = curl_multi_init();
    if (ev_ep < 0 || ev_multi == NULL || epoll_ctl(ev_ep, EPOLL_CTL_ADD, mhd_fd, &ev) != 0)
        return 1;
    curl_multi_setopt(ev_multi, CURLMOPT_SOCKETFUNCTION, ev_on_socket);
    curl_multi_setopt(ev_multi, CURLMOPT_TIMERFUNCTION, ev_on_timer);
    curl_multi_setopt(ev_multi, CURLMOPT_MAXCONNECTS, 256L);
    sigaction(SIGTERM, &act, NULL);
    sigaction(SIGINT, &act, NULL);
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    while (!ev_stop) {
        MHD_UNSIGNED_LONG_LONG mhd_to = 0;
        int64_t now = ev_now(), to = 1000;
        int n, mhd_ready = 0, resumed = 0;
        CURLMsg *msg;
        int left;

        if (ev_timer_ms >= 0)
            to = ev_timer_ms <= now ? 0 : ev_timer_ms - now;
        if (MHD_get_timeout(d, &mhd_to) == MHD_YES && (int64_t)mhd_to < to)
            to = (int64_t)mhd_to;
        n = epoll_wait(ev_ep, evs, 64, (int)to);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.fd == mhd_fd) {
                mhd_ready = 1; /* MHD_run below */
                continue;
            }
            curl_multi_socket_action(ev_multi, evs[i].data.fd,
                                     ((evs[i].events & EPOLLIN) ? CURL_CSELECT_IN : 0) |
                                         ((evs[i].events & EPOLLOUT) ? CURL_CSELECT_OUT : 0) |
                                         ((evs[i].events & (EPOLLERR | EPOLLHUP))
                                              ? CURL_CSELECT_ERR
                                              : 0),
                                     &running);
        }
        if (ev_timer_ms >= 0 && ev_timer_ms <= ev_now()) {
            ev_timer_ms = -1;
            curl_multi_socket_action(ev_multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }
        while ((msg = curl_multi_info_read(ev_multi, &left)) != NULL) {
            struct ev_req *r = NULL;
            if (msg->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            r->failed = msg->data.result != CURLE_OK;
            curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
            curl_multi_remove_handle(ev_multi, r->easy);
            r->done = 1;
            MHD_resume_connection(r->conn);
            resumed = 1;
        }
        if (mhd_ready || resumed || n == 0)
            MHD_run(d); /* new requests, the resumed ones answered, timeouts */
        if (resumed)
            MHD_run(d); /* sends what the resumed ones queued */
    }
    MHD_stop_daemon(d);
    return 0;
}

/* The decimal number at `s` (ending at its end or a '/', as a URL's port does) into *out when
 * it is within [lo, hi]; -1 otherwise. */
static int parse_number(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || (*end != '\0' && *end != '/') || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int main(void)
{
    const char *port = getenv("FLOOR_PORT"), *mode = getenv("FLOOR_MODE"),
               *threads = getenv("FLOOR_THREADS");
    unsigned flags, nthreads;
    long port_n, threads_n = 1, up_port = 80;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    struct MHD_Daemon *d;
    sigset_t set;
    int sig;

    upstream = getenv("FLOOR_UPSTREAM");
    if (port == NULL || upstream == NULL) {
        fprintf(stderr, "gw_floor: FLOOR_PORT and FLOOR_UPSTREAM are required\n");
        return 2;
    }
    if (parse_number(port, 1, 65535, &port_n) != 0 ||
        (threads && parse_number(threads, 1, 1024, &threads_n) != 0)) {
        fprintf(stderr, "gw_floor: FLOOR_PORT must be 1..65535, FLOOR_THREADS 1..1024\n");
        return 2;
    }
    nthreads = (unsigned)threads_n;
    upstream_len = strlen(upstream);
    mode = mode ? mode : "epoll";
    sa.sin_port = htons((unsigned short)port_n);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0 || pthread_key_create(&thread_key, thread_free))
        return 1;
    /* Signals are taken by sigwait below, never delivered to a server thread. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (strcmp(mode, "evented") == 0)
        return run_evented(&sa);
    if (strcmp(mode, "raw") == 0) {
        const char *hp = strstr(upstream, "://");
        hp = hp ? hp + 3 : upstream;
        snprintf(raw_host, sizeof(raw_host), "%s", hp);
        raw_up.sin_family = AF_INET;
        if (strchr(hp, ':') && parse_number(strchr(hp, ':') + 1, 1, 65535, &up_port) != 0) {
            fprintf(stderr, "gw_floor: FLOOR_UPSTREAM's port must be 1..65535\n");
            return 2;
        }
        raw_up.sin_port = htons((unsigned short)up_port);
        raw_up.sin_addr.s_addr = htonl(INADDR_LOOPBACK); /* the bench's upstream is local */
        if (pthread_key_create(&raw_key, raw_free) != 0)
            return 1;
        d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_TURBO |
                                 MHD_USE_ERROR_LOG,
                             0, NULL, NULL, raw_on_request, NULL, MHD_OPTION_SOCK_ADDR,
                             (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_TIMEOUT, 30u,
                             nthreads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END,
                             nthreads, MHD_OPTION_END);
    } else if (strcmp(mode, "tpc") == 0) {
        flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD;
        d = MHD_start_daemon(flags | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request, NULL,
                             MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                             MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
    } else {
        flags = MHD_USE_INTERNAL_POLLING_THREAD;
        if (strcmp(mode, "epoll") == 0)
            flags |= MHD_USE_EPOLL | MHD_USE_TURBO;
        else if (strcmp(mode, "poll") == 0)
            flags |= MHD_USE_POLL;
        else if (strcmp(mode, "select") != 0) {
            fprintf(stderr, "gw_floor: FLOOR_MODE is epoll, poll, select or tpc\n");
            return 2;
        }
        d = MHD_start_daemon(flags | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request, NULL,
                             MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                             MHD_OPTION_CONNECTION_TIMEOUT, 30u,
                             /* a pool of 1 is the internal thread itself (no pool) */
                             nthreads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END,
                             nthreads, MHD_OPTION_END);
    }
    if (d == NULL) {
        fprintf(stderr, "gw_floor: libmicrohttpd did not start on port %s\n", port);
        return 1;
    }
    sigdelset(&set, SIGPIPE);
    sigwait(&set, &sig);
    MHD_stop_daemon(d);
    curl_global_cleanup();
    return 0;
}
