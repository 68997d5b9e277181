/* http.c - libmicrohttpd server with a router, request arena, problem+json and metrics. */
#include "common/http.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "common/config.h"
#include "common/internal.h"
#include "common/json.h"
#include "common/log.h"
#include "common/uuid.h"

#define MAX_ROUTES 64
#define MAX_SEGS 12
#define MAX_PARAMS 8
#define MAX_LIMITS 32

/* Latency histogram bounds in seconds (Prometheus `le` labels). */
static const double buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                 0.05,   0.1,   0.25,   0.5,   1,     2.5};
#define NBUCKETS (sizeof(buckets) / sizeof(buckets[0]))

struct route_stats {
    atomic_ulong by_class[6]; /* index status/100: 1xx..5xx */
    atomic_ulong le[NBUCKETS];
    atomic_ulong count;
    atomic_ulong sum_us;
};

struct route {
    char method[8];
    char *pattern;
    char *seg_buf; /* owns the strings segs[] point into */
    int prefix; /* match everything under pattern, any method */
    int internal; /* under /internal/: only with the shared key (internal.h) */
    int nsegs;
    char *segs[MAX_SEGS];
    cm_http_handler handler;
    void *ud;
    const cm_http_body_sink *sink; /* cm_http_route_stream: the body is streamed, not kept */
    struct route_stats stats;
};

struct cm_http_server {
    cm_http_config cfg;
    struct MHD_Daemon *mhd;
    struct route routes[MAX_ROUTES];
    int nroutes;
    struct route builtin_live, builtin_ready, builtin_metrics, unmatched;
    cm_http_ready_fn ready_fn;
    void *ready_ud;
    cm_http_metrics_fn metrics_fn;
    void *metrics_ud;
    atomic_int inflight;
    struct body_limit {
        char *prefix;
        size_t max;
    } limits[MAX_LIMITS]; /* per-path-prefix body caps (cm_http_body_limit) */
    int nlimits;
    unsigned max_conns, per_ip_conns; /* cm_http_set_connection_limits; 0: libmicrohttpd's */
    size_t conn_memory;
    int allow_suspend;                /* cm_http_allow_suspend */
    void (*drain_fn)(void *ud);       /* cm_http_set_drain_hook */
    void *drain_ud;
};

struct chunk {
    struct chunk *next;
    max_align_t data[];
};

struct hdr {
    struct hdr *next;
    char *name, *value;
};

struct cm_http_req {
    cm_http_server *srv;
    struct MHD_Connection *conn;
    const char *method;
    char *path;
    struct route *route;
    int nparams;
    const char *pnames[MAX_PARAMS];
    char *pvalues[MAX_PARAMS];
    char *body;
    size_t body_len, body_cap;
    size_t max_body; /* this request's cap: the server's, or a cm_http_body_limit prefix's */
    int too_big;
    char allow[64]; /* methods of the routes that matched the path but not the method */
    int replied;
    int status;
    char rid[65];
    char ip[INET6_ADDRSTRLEN];
    struct timespec t0;
    struct chunk *arena;
    struct hdr *hdrs;
    cJSON *json;
    cm_http_upgrade_fn up_fn; /* cm_http_reply_upgrade */
    void *up_ud;
    void (*up_free)(void *ud);
    int up_started; /* up_fn was called: up_ud is the callee's */
    char log_extra[512]; /* cm_http_log_field: ,"name":"value"... */
    size_t log_extra_len;
    int routed;          /* route_for has run (once per request) */
    int sink_opened;     /* the route's sink: open has run */
    int sink_buffer;     /* open declined streaming: the body is buffered */
    int sink_stopped;    /* a write failed: the rest of the body is discarded */
    void *sink_state;    /* what open returned; closed by req_free */
    uint64_t streamed;   /* body bytes handed to the sink */
    int defer;           /* replies made while the body streams (or suspended) wait */
    int suspended;       /* cm_http_suspend: answered later by another thread */
    struct MHD_Response *deferred;
};

/* --- arena ------------------------------------------------------------------------------ */

void *cm_http_alloc(cm_http_req *req, size_t size)
{
    struct chunk *c = malloc(sizeof(*c) + size);
    if (c == NULL)
        return NULL;
    c->next = req->arena;
    req->arena = c;
    return c->data;
}

char *cm_http_strdup(cm_http_req *req, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = cm_http_alloc(req, n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static void req_free(cm_http_req *req)
{
    if (req->sink_state && req->route && req->route->sink && req->route->sink->close)
        req->route->sink->close(req->sink_state);
    if (req->deferred)
        MHD_destroy_response(req->deferred);
    while (req->arena) {
        struct chunk *n = req->arena->next;
        free(req->arena);
        req->arena = n;
    }
    cJSON_Delete(req->json);
    free(req->body);
    free(req);
}

/* --- routes ----------------------------------------------------------------------------- */

static int split_path(char *path, char **segs, int max)
{
    int n = 0;
    char *p = path;
    while (*p == '/')
        p++;
    while (*p) {
        if (n == max)
            return -1;
        segs[n++] = p;
        char *slash = strchr(p, '/');
        if (slash == NULL)
            break;
        *slash = '\0';
        p = slash + 1;
    }
    return n;
}

static cm_err add_route(cm_http_server *srv, const char *method, const char *pattern, int prefix,
                        cm_http_handler handler, void *ud)
{
    struct route *r;
    char *copy;

    if (srv->nroutes == MAX_ROUTES)
        return CM_ETOOBIG;
    if (pattern[0] != '/' || strlen(method) >= sizeof(r->method))
        return CM_EINVAL;
    r = &srv->routes[srv->nroutes];
    memset(r, 0, sizeof(*r));
    r->pattern = strdup(pattern);
    copy = strdup(pattern);
    if (r->pattern == NULL || copy == NULL) {
        free(r->pattern);
        free(copy);
        return CM_ENOMEM;
    }
    r->nsegs = split_path(copy, r->segs, MAX_SEGS);
    if (r->nsegs < 0) {
        free(r->pattern);
        free(copy);
        return CM_EINVAL;
    }
    r->seg_buf = copy;
    snprintf(r->method, sizeof(r->method), "%s", method);
    r->prefix = prefix;
    r->internal = strncmp(pattern, "/internal/", 10) == 0;
    r->handler = handler;
    r->ud = ud;
    srv->nroutes++;
    return CM_OK;
}

cm_err cm_http_route(cm_http_server *srv, const char *method, const char *pattern,
                     cm_http_handler handler, void *ud)
{
    return add_route(srv, method, pattern, 0, handler, ud);
}

cm_err cm_http_route_prefix(cm_http_server *srv, const char *prefix, cm_http_handler handler,
                            void *ud)
{
    return add_route(srv, "*", prefix, 1, handler, ud);
}

cm_err cm_http_route_stream(cm_http_server *srv, const char *method, const char *pattern,
                            const cm_http_body_sink *sink, cm_http_handler handler, void *ud)
{
    cm_err rc;
    if (sink == NULL || sink->open == NULL || sink->write == NULL)
        return CM_EINVAL;
    rc = add_route(srv, method, pattern, 0, handler, ud);
    if (rc == CM_OK)
        srv->routes[srv->nroutes - 1].sink = sink;
    return rc;
}

void *cm_http_body_state(const cm_http_req *req)
{
    return req->sink_state;
}

/* Matches req->path against the routes; fills params. Returns the route, or NULL with
 * *method_mismatch set when some route matched the path but not the method. */
static struct route *match(cm_http_req *req, int *method_mismatch)
{
    cm_http_server *srv = req->srv;
    char *segs[MAX_SEGS + 1];
    char *copy = cm_http_strdup(req, req->path);
    int n;

    *method_mismatch = 0;
    if (copy == NULL)
        return NULL;
    n = split_path(copy, segs, MAX_SEGS + 1);
    if (n < 0)
        return NULL;
    for (int i = 0; i < srv->nroutes; i++) {
        struct route *r = &srv->routes[i];
        int ok = 1, np = 0;
        if (r->prefix) {
            if (n < r->nsegs)
                continue;
        } else if (n != r->nsegs) {
            continue;
        }
        for (int s = 0; s < r->nsegs && ok; s++) {
            if (r->segs[s][0] == '{') {
                if (segs[s][0] == '\0' || np == MAX_PARAMS) {
                    ok = 0;
                } else {
                    req->pnames[np] = r->segs[s];
                    req->pvalues[np++] = segs[s];
                }
            } else if (strcmp(r->segs[s], segs[s]) != 0) {
                ok = 0;
            }
        }
        if (!ok)
            continue;
        if (!r->prefix && strcmp(r->method, req->method) != 0) {
            size_t al = strlen(req->allow);
            *method_mismatch = 1;
            if (al + strlen(r->method) + 3 < sizeof(req->allow))
                snprintf(req->allow + al, sizeof(req->allow) - al, "%s%s", al ? ", " : "",
                         r->method);
            continue;
        }
        req->nparams = np;
        return r;
    }
    return NULL;
}

const char *cm_http_param(const cm_http_req *req, const char *name)
{
    size_t n = strlen(name);
    for (int i = 0; i < req->nparams; i++) {
        const char *p = req->pnames[i]; /* "{name}" */
        if (strncmp(p + 1, name, n) == 0 && p[n + 1] == '}' && p[n + 2] == '\0')
            return req->pvalues[i];
    }
    return NULL;
}

/* --- request accessors ------------------------------------------------------------------ */

const char *cm_http_method(const cm_http_req *req)
{
    return req->method;
}
const char *cm_http_path(const cm_http_req *req)
{
    return req->path;
}
const char *cm_http_request_id(const cm_http_req *req)
{
    return req->rid;
}
const char *cm_http_client_ip(const cm_http_req *req)
{
    return req->ip;
}
int cm_http_reply_status(const cm_http_req *req)
{
    return req->replied ? req->status : 0;
}

const char *cm_http_query(const cm_http_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *cm_http_header(const cm_http_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

struct each_ctx {
    void (*fn)(void *ud, const char *name, const char *value);
    void *ud;
};

static enum MHD_Result each_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    struct each_ctx *c = cls;
    (void)kind;
    c->fn(c->ud, key, value ? value : "");
    return MHD_YES;
}

static enum MHD_Result each_query(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    return each_header(cls, kind, key, value);
}

void cm_http_each_query(const cm_http_req *req,
                        void (*fn)(void *ud, const char *name, const char *value), void *ud)
{
    struct each_ctx c = {fn, ud};
    MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, each_query, &c);
}

void cm_http_each_header(const cm_http_req *req,
                         void (*fn)(void *ud, const char *name, const char *value), void *ud)
{
    struct each_ctx c = {fn, ud};
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, each_header, &c);
}

const char *cm_http_body(const cm_http_req *req, size_t *len)
{
    *len = req->body_len;
    return req->body ? req->body : "";
}

cm_err cm_http_json_body(cm_http_req *req, cJSON **out)
{
    const char *ct = cm_http_header(req, "Content-Type");
    char detail[256];
    cJSON *v = NULL;

    if (ct == NULL || strncasecmp(ct, "application/json", 16) != 0 ||
        (ct[16] != '\0' && ct[16] != ';' && ct[16] != ' ')) {
        cm_http_problem(req, 415, "unsupported-media-type", "Unsupported Media Type",
                        "the body must be sent with Content-Type: application/json");
        return CM_EINVAL;
    }
    if (cm_json_parse(req->body ? req->body : "", req->body_len, CM_JSON_DEPTH_DEFAULT, &v,
                      detail, sizeof(detail)) != CM_OK) {
        cm_http_problem(req, 400, "malformed-json", "Malformed JSON", "%s", detail);
        return CM_EINVAL;
    }
    if (!cJSON_IsObject(v)) {
        cJSON_Delete(v);
        cm_http_problem(req, 400, "validation", "Invalid request",
                        "the body must be a JSON object");
        return CM_EINVAL;
    }
    req->json = v;
    *out = v;
    return CM_OK;
}

cm_err cm_http_query_long(cm_http_req *req, const char *name, long def, long min, long max,
                          long *out)
{
    const char *v = cm_http_query(req, name);
    char *end;
    long n;

    if (v == NULL || *v == '\0') {
        *out = def;
        return CM_OK;
    }
    n = strtol(v, &end, 10);
    if (end == v || *end != '\0') {
        cm_http_problem(req, 400, "validation", "Invalid request",
                        "query parameter '%s' must be an integer", name);
        return CM_EINVAL;
    }
    *out = n < min ? min : n > max ? max : n;
    return CM_OK;
}

void cm_http_log_field(cm_http_req *req, const char *name, const char *value)
{
    char ev[256];
    int n;
    if (!cm_log_enabled(CM_LOG_INFO))
        return; /* only the access log (on_completed) reads them */
    cm_json_escape(value ? value : "", ev, sizeof(ev));
    n = snprintf(req->log_extra + req->log_extra_len, sizeof(req->log_extra) - req->log_extra_len,
                 ",\"%s\":\"%s\"", name, ev);
    if (n > 0 && (size_t)n < sizeof(req->log_extra) - req->log_extra_len)
        req->log_extra_len += (size_t)n;
    else
        req->log_extra[req->log_extra_len] = '\0'; /* full: the field is left out */
}

/* --- replies ---------------------------------------------------------------------------- */

void cm_http_add_header(cm_http_req *req, const char *name, const char *value)
{
    size_t nl = strlen(name) + 1, vl = strlen(value) + 1;
    struct hdr *h = cm_http_alloc(req, sizeof(*h) + nl + vl); /* one allocation, not three */
    if (h == NULL)
        return;
    h->name = (char *)(h + 1);
    h->value = h->name + nl;
    memcpy(h->name, name, nl);
    memcpy(h->value, value, vl);
    h->next = req->hdrs;
    req->hdrs = h;
}

static void reply_buffer(cm_http_req *req, int status, const char *content_type, void *body,
                         size_t len, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *resp;

    if (req->replied) {
        cm_error("http: second reply to %s %s ignored (bug)", req->method, req->path);
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return;
    }
    req->replied = 1;
    req->status = status;
    resp = MHD_create_response_from_buffer(len, body, mode);
    if (resp == NULL) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return;
    }
    if (content_type)
        MHD_add_response_header(resp, "Content-Type", content_type);
    MHD_add_response_header(resp, "X-Request-Id", req->rid);
    for (struct hdr *h = req->hdrs; h; h = h->next)
        MHD_add_response_header(resp, h->name, h->value);
    if (req->defer) {
        /* Answered while the body streams in: sent once the body has been read (answering
         * with unread data would make the connection's reset swallow the answer). */
        req->deferred = resp;
        return;
    }
    MHD_queue_response(req->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
}

void cm_http_reply_raw(cm_http_req *req, int status, const char *content_type, const void *body,
                       size_t len)
{
    reply_buffer(req, status, content_type, (void *)body, len, MHD_RESPMEM_MUST_COPY);
}

void cm_http_reply_take(cm_http_req *req, int status, const char *content_type, char *body,
                        size_t len)
{
    if (body == NULL) {
        reply_buffer(req, status, content_type, (void *)"", 0, MHD_RESPMEM_PERSISTENT);
        return;
    }
    reply_buffer(req, status, content_type, body, len, MHD_RESPMEM_MUST_FREE);
}

void cm_http_reply_json(cm_http_req *req, int status, cJSON *body)
{
    char *text = NULL;

    if (body) {
        text = cm_json_print(body);
        cJSON_Delete(body);
        if (text == NULL) {
            static const char oom[] = "{\"title\":\"out of memory\",\"status\":500}";
            cm_http_reply_raw(req, 500, "application/problem+json", oom, sizeof(oom) - 1);
            return;
        }
    }
    cm_http_reply_raw(req, status, "application/json", text ? text : "", text ? strlen(text) : 0);
    free(text);
}

void cm_http_reply_page(cm_http_req *req, cJSON *items, const char *next_cursor)
{
    cJSON *out = cJSON_CreateObject();
    cJSON_AddItemToObject(out, "items", items);
    if (next_cursor)
        cJSON_AddStringToObject(out, "next_cursor", next_cursor);
    else
        cJSON_AddNullToObject(out, "next_cursor");
    cm_http_reply_json(req, 200, out);
}

void cm_http_problem(cm_http_req *req, int status, const char *slug, const char *title,
                     const char *detail_fmt, ...)
{
    char detail[1024], type[96];
    va_list ap;
    cJSON *p = cJSON_CreateObject();
    char *text;

    va_start(ap, detail_fmt);
    vsnprintf(detail, sizeof(detail), detail_fmt, ap);
    va_end(ap);
    snprintf(type, sizeof(type), "urn:chat:problem:%s", slug);
    cJSON_AddStringToObject(p, "type", type);
    cJSON_AddStringToObject(p, "title", title);
    cJSON_AddNumberToObject(p, "status", status);
    cJSON_AddStringToObject(p, "detail", detail);
    cJSON_AddStringToObject(p, "instance", req->path ? req->path : "");
    cJSON_AddStringToObject(p, "request_id", req->rid);
    text = cm_json_print(p);
    cJSON_Delete(p);
    if (text == NULL)
        text = strdup("{\"status\":500}");
    if (status >= 500)
        cm_warn("http: %d %s: %s", status, slug, detail);
    cm_http_reply_raw(req, status, "application/problem+json", text, text ? strlen(text) : 0);
    free(text);
}

void cm_http_reply_error(cm_http_req *req, cm_err err, const char *detail)
{
    const char *d = detail ? detail : cm_strerror(err);
    switch (err) {
    case CM_EINVAL:
        cm_http_problem(req, 400, "validation", "Invalid request", "%s", d);
        break;
    case CM_EUNAUTH:
        cm_http_problem(req, 401, "unauthenticated", "Unauthenticated", "%s", d);
        break;
    case CM_EFORBIDDEN:
        cm_http_problem(req, 403, "forbidden", "Forbidden", "%s", d);
        break;
    case CM_ENOTFOUND:
        cm_http_problem(req, 404, "not-found", "Not Found", "%s", d);
        break;
    case CM_ECONFLICT:
        cm_http_problem(req, 409, "conflict", "Conflict", "%s", d);
        break;
    case CM_ETOOBIG:
        cm_http_problem(req, 413, "too-large", "Content Too Large", "%s", d);
        break;
    case CM_ELIMIT:
        cm_http_problem(req, 429, "rate-limited", "Too Many Requests", "%s", d);
        break;
    case CM_EIO:
    case CM_EAGAIN:
    case CM_ETIMEOUT:
        cm_http_add_header(req, "Retry-After", "1");
        cm_http_problem(req, 503, "unavailable", "Service Unavailable", "%s", d);
        break;
    default:
        cm_http_problem(req, 500, "internal", "Internal Server Error", "%s", d);
    }
}

/* --- built-in endpoints ----------------------------------------------------------------- */

static void h_live(cm_http_req *req, void *ud)
{
    (void)ud;
    cm_http_reply_raw(req, 200, "application/json", "{\"status\":\"ok\"}", 15);
}

static void h_ready(cm_http_req *req, void *ud)
{
    cm_http_server *srv = ud;
    char detail[256] = "";
    cm_err rc = srv->ready_fn ? srv->ready_fn(srv->ready_ud, detail, sizeof(detail)) : CM_OK;
    if (rc != CM_OK) {
        cm_http_problem(req, 503, "not-ready", "Not Ready", "%s", detail[0] ? detail : "not ready");
        return;
    }
    cm_http_reply_raw(req, 200, "application/json", "{\"status\":\"ready\"}", 18);
}

struct mbuf {
    char *p;
    size_t len, cap;
    int oom;
};

static void mbuf_emit(void *ctx, const char *text)
{
    struct mbuf *b = ctx;
    size_t n = strlen(text);
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 8192);
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, text, n + 1);
    b->len += n;
}

static void emit_route(struct mbuf *b, const char *method, const char *route,
                       struct route_stats *st)
{
    char line[512];
    static const char *classes[] = {"0xx", "1xx", "2xx", "3xx", "4xx", "5xx"};
    unsigned long cum = 0;

    for (int c = 1; c < 6; c++) {
        unsigned long v = atomic_load(&st->by_class[c]);
        if (v == 0)
            continue;
        snprintf(line, sizeof(line),
                 "http_requests_total{method=\"%s\",route=\"%s\",code=\"%s\"} %lu\n", method,
                 route, classes[c], v);
        mbuf_emit(b, line);
    }
    if (atomic_load(&st->count) == 0)
        return;
    for (size_t i = 0; i < NBUCKETS; i++) {
        cum += atomic_load(&st->le[i]);
        snprintf(line, sizeof(line),
                 "http_request_duration_seconds_bucket{method=\"%s\",route=\"%s\",le=\"%g\"} %lu\n",
                 method, route, buckets[i], cum);
        mbuf_emit(b, line);
    }
    snprintf(line, sizeof(line),
             "http_request_duration_seconds_bucket{method=\"%s\",route=\"%s\",le=\"+Inf\"} %lu\n"
             "http_request_duration_seconds_sum{method=\"%s\",route=\"%s\"} %.6f\n"
             "http_request_duration_seconds_count{method=\"%s\",route=\"%s\"} %lu\n",
             method, route, atomic_load(&st->count), method, route,
             (double)atomic_load(&st->sum_us) / 1e6, method, route, atomic_load(&st->count));
    mbuf_emit(b, line);
}

static void h_metrics(cm_http_req *req, void *ud)
{
    cm_http_server *srv = ud;
    struct mbuf b = {0};
    char line[160];

    mbuf_emit(&b, "# TYPE http_requests_total counter\n"
                  "# TYPE http_request_duration_seconds histogram\n");
    for (int i = 0; i < srv->nroutes; i++)
        emit_route(&b, srv->routes[i].method, srv->routes[i].pattern, &srv->routes[i].stats);
    emit_route(&b, "*", "unmatched", &srv->unmatched.stats);
    snprintf(line, sizeof(line), "# TYPE http_requests_in_flight gauge\nhttp_requests_in_flight %d\n",
             atomic_load(&srv->inflight));
    mbuf_emit(&b, line);
    if (srv->metrics_fn)
        srv->metrics_fn(srv->metrics_ud, mbuf_emit, &b);
    if (b.oom) {
        free(b.p);
        cm_http_reply_error(req, CM_ENOMEM, "out of memory while rendering metrics");
        return;
    }
    cm_http_reply_raw(req, 200, "text/plain; version=0.0.4", b.p ? b.p : "", b.len);
    free(b.p);
}

/* --- libmicrohttpd glue ----------------------------------------------------------------- */

static int valid_request_id(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (n >= 64 || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                         (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
            return 0;
    }
    return n > 0;
}

static cm_http_req *req_begin(cm_http_server *srv, struct MHD_Connection *conn, const char *url,
                              const char *method)
{
    cm_http_req *req = calloc(1, sizeof(*req));
    const union MHD_ConnectionInfo *ci;
    const char *rid;

    if (req == NULL)
        return NULL;
    req->srv = srv;
    req->conn = conn;
    req->method = method;
    clock_gettime(CLOCK_MONOTONIC, &req->t0);
    req->path = cm_http_strdup(req, url);
    if (req->path == NULL) {
        req_free(req);
        return NULL;
    }
    rid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
    if (rid && valid_request_id(rid))
        snprintf(req->rid, sizeof(req->rid), "%s", rid);
    else if (cm_uuid_v7(req->rid) != CM_OK)
        snprintf(req->rid, sizeof(req->rid), "unknown");
    ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, req->ip,
                      sizeof(req->ip));
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr,
                      req->ip, sizeof(req->ip));
    }
    atomic_fetch_add(&srv->inflight, 1);
    return req;
}

static struct route *route_for(cm_http_req *req)
{
    cm_http_server *srv = req->srv;
    int mismatch = 0;
    struct route *r;

    if (strcmp(req->path, "/health/live") == 0)
        r = &srv->builtin_live;
    else if (strcmp(req->path, "/health/ready") == 0)
        r = &srv->builtin_ready;
    else if (strcmp(req->path, "/metrics") == 0)
        r = &srv->builtin_metrics;
    else
        r = NULL;
    if (r) {
        if (strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0)
            return r;
        snprintf(req->allow, sizeof(req->allow), "GET, HEAD");
        req->nparams = -1;
        return NULL;
    }
    r = match(req, &mismatch);
    if (r)
        return r;
    req->nparams = mismatch ? -1 : 0; /* remember 405 vs 404 */
    return NULL;
}

/* The body cap for `path`: the longest cm_http_body_limit prefix that matches it at a segment
 * boundary, else the server's max_body. */
static size_t body_limit_for(const cm_http_server *srv, const char *path)
{
    size_t best = 0, max = srv->cfg.max_body;
    for (int i = 0; i < srv->nlimits; i++) {
        size_t n = strlen(srv->limits[i].prefix);
        if (strncmp(path, srv->limits[i].prefix, n) == 0 && (path[n] == '\0' || path[n] == '/') &&
            n > best) {
            best = n;
            max = srv->limits[i].max;
        }
    }
    return max;
}

/* Queues the answer given while a streamed body was arriving. */
static void flush_deferred(cm_http_req *req)
{
    if (req->deferred == NULL)
        return;
    MHD_queue_response(req->conn, (unsigned)req->status, req->deferred);
    MHD_destroy_response(req->deferred);
    req->deferred = NULL;
}

/* Hands one piece of a streamed route's body (`*size` bytes, 0 on the last call) to its sink,
 * opening it first. Returns 1 when the piece was taken (or discarded), 0 when the request goes
 * on the ordinary way: the last call, or open declined and the body is buffered. Answers made
 * by open and write are deferred to the end of the body. */
static int stream_piece(cm_http_req *req, const char *data, size_t *size)
{
    const cm_http_body_sink *sink = req->route->sink;
    size_t n = *size;

    if (!req->sink_opened) {
        req->sink_opened = 1;
        cm_log_set_request_id(req->rid);
        req->defer = 1;
        req->sink_state = sink->open(req, req->route->ud);
        req->defer = 0;
        if (req->replied) {
            *size = 0;
            return n > 0;
        }
        if (req->sink_state == NULL) {
            req->sink_buffer = 1;
            return 0;
        }
    }
    if (n == 0)
        return 0;
    *size = 0;
    if (req->too_big)
        return 1;
    if (req->streamed + n > req->max_body) {
        req->too_big = 1; /* 413 at the end, as for buffered bodies */
        return 1;
    }
    req->streamed += n;
    if (!req->sink_stopped) {
        req->defer = 1;
        if (sink->write(req, req->sink_state, data, n) != CM_OK)
            req->sink_stopped = 1;
        req->defer = 0;
    }
    return 1;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    cm_http_server *srv = cls;
    cm_http_req *req = *con_cls;
    (void)version;

    if (req == NULL) {
        /* First call: headers only. Refuse an announced oversized body here, before any of it
         * is read; everything else is answered on a later call (answering in the first call
         * costs libmicrohttpd a slow path, see DESIGN.md performance notes). */
        const char *cl;
        req = req_begin(srv, conn, url, method);
        if (req == NULL)
            return MHD_NO;
        *con_cls = req;
        req->max_body = body_limit_for(srv, req->path);
        cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl) {
            char *end;
            unsigned long long n = strtoull(cl, &end, 10);
            if (end == cl || *end != '\0' || cl[0] == '-') {
                req->route = route_for(req);
                cm_log_set_request_id(req->rid);
                cm_http_problem(req, 400, "bad-request", "Bad Request",
                                "the Content-Length header is not a number");
                return MHD_YES;
            }
            if (n > req->max_body) {
                req->route = route_for(req);
                cm_log_set_request_id(req->rid);
                cm_http_problem(req, 413, "too-large", "Content Too Large",
                                "the body is larger than the limit of %zu bytes",
                                req->max_body);
                return MHD_YES;
            }
        }
        return MHD_YES;
    }
    if (req->replied) {
        if (*upload_data_size == 0)
            flush_deferred(req); /* a streamed body has been read: now its answer goes */
        *upload_data_size = 0; /* discard what follows an early answer */
        return MHD_YES;
    }
    if (!req->routed) {
        req->route = route_for(req);
        req->routed = 1;
    }
    if (req->route && req->route->sink && !req->sink_buffer) {
        if (stream_piece(req, upload_data, upload_data_size))
            return MHD_YES;
        if (req->replied) { /* open answered an empty body */
            flush_deferred(req);
            return MHD_YES;
        }
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (req->too_big)
            return MHD_YES;
        if (req->body_len + n > req->max_body) {
            /* Discard the rest and answer 413 at the end: answering now would close the
             * connection with unread data, and the reset would swallow the answer. */
            req->too_big = 1;
            return MHD_YES;
        }
        if (req->body_len + n > req->body_cap) {
            size_t cap = req->body_cap ? req->body_cap * 2 : 4096;
            while (cap < req->body_len + n)
                cap *= 2;
            if (cap > req->max_body)
                cap = req->max_body;
            char *p = realloc(req->body, cap);
            if (p == NULL)
                return MHD_NO;
            req->body = p;
            req->body_cap = cap;
        }
        memcpy(req->body + req->body_len, upload_data, n);
        req->body_len += n;
        return MHD_YES;
    }

    /* Last call: the whole request is here. */
    cm_log_set_request_id(req->rid);
    if (req->too_big) {
        cm_http_problem(req, 413, "too-large", "Content Too Large",
                        "the body is larger than the limit of %zu bytes", req->max_body);
    } else if (req->route == NULL) {
        if (req->nparams < 0) {
            cm_http_add_header(req, "Allow", req->allow);
            cm_http_problem(req, 405, "method-not-allowed", "Method Not Allowed",
                            "%s is not allowed on %s", req->method, req->path);
        } else
            cm_http_problem(req, 404, "not-found", "Not Found", "no route for %s", req->path);
    } else if (req->route->internal &&
               !cm_internal_key_accepts(cm_http_header(req, CM_INTERNAL_KEY_HEADER))) {
        cm_http_problem(req, 401, "unauthenticated", "Unauthenticated",
                        "%s is a service-to-service route: the " CM_INTERNAL_KEY_HEADER
                        " header is missing or does not match INTERNAL_KEY_FILE", req->path);
    } else {
        req->route->handler(req, req->route->ud);
        if (req->suspended)
            return MHD_YES; /* another thread answers, then cm_http_resume: req is its now */
        if (!req->replied) {
            cm_error("http: handler for %s %s answered nothing (bug)", req->method, req->path);
            cm_http_reply_error(req, CM_EINTERNAL, "the handler produced no answer");
        }
    }
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    cm_http_server *srv = cls;
    cm_http_req *req = *con_cls;
    struct timespec t1;
    struct route *r;
    char fields[1280], epath[256];
    double secs;
    (void)conn;

    if (req == NULL)
        return;
    *con_cls = NULL;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    secs = (double)(t1.tv_sec - req->t0.tv_sec) + (double)(t1.tv_nsec - req->t0.tv_nsec) / 1e9;
    r = req->route ? req->route : &srv->unmatched;
    if (req->status >= 100 && req->status < 600)
        atomic_fetch_add(&r->stats.by_class[req->status / 100], 1);
    for (size_t i = 0; i < NBUCKETS; i++) {
        if (secs <= buckets[i]) {
            atomic_fetch_add(&r->stats.le[i], 1);
            break;
        }
    }
    atomic_fetch_add(&r->stats.count, 1);
    atomic_fetch_add(&r->stats.sum_us, (unsigned long)(secs * 1e6));

    if (r != &srv->builtin_live && r != &srv->builtin_ready && r != &srv->builtin_metrics &&
        cm_log_enabled(CM_LOG_INFO)) {
        cm_json_escape(req->path, epath, sizeof(epath));
        snprintf(fields, sizeof(fields),
                 "\"method\":\"%s\",\"path\":\"%s\",\"route\":\"%s\",\"status\":%d,"
                 "\"duration_ms\":%.3f,\"client_ip\":\"%s\",\"completed\":%s%s",
                 req->method, epath, req->route ? req->route->pattern : "", req->status,
                 secs * 1000, req->ip, toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "true" : "false",
                 req->log_extra);
        cm_log_set_request_id(req->rid);
        cm_log_fields(CM_LOG_INFO, "request", fields);
        cm_log_set_request_id(NULL);
    }
    atomic_fetch_sub(&srv->inflight, 1);
    if (req->up_free && !req->up_started)
        req->up_free(req->up_ud); /* the 101 never reached the client */
    req_free(req);
}

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    if (n && msg[n - 1] == '\n')
        msg[n - 1] = '\0';
    cm_warn("libmicrohttpd: %s", msg);
}

cm_err cm_http_config_from_env(int default_port, cm_http_config *cfg)
{
    long port, threads, body, idle, drain;

    if (cm_config_long("HTTP_PORT", default_port, 1, 65535, &port) ||
        cm_config_long("HTTP_THREADS", 4, 1, 256, &threads) ||
        cm_config_long("HTTP_MAX_BODY", 1 << 20, 1, 1L << 30, &body) ||
        cm_config_long("HTTP_IDLE_TIMEOUT_S", 60, 1, 3600, &idle) ||
        cm_config_long("HTTP_DRAIN_S", 10, 0, 300, &drain) || cm_internal_key_load() != CM_OK)
        return CM_EINVAL;
    cfg->host = cm_config_str("HTTP_HOST", "127.0.0.1");
    cfg->port = (int)port;
    cfg->threads = (int)threads;
    cfg->max_body = (size_t)body;
    cfg->idle_timeout_s = (unsigned)idle;
    cfg->drain_s = (unsigned)drain;
    return CM_OK;
}

cm_err cm_http_server_create(const cm_http_config *cfg, cm_http_server **out)
{
    cm_http_server *srv;

    if (cfg->port <= 0 || cfg->port > 65535 || cfg->threads < 1 || cfg->max_body == 0)
        return CM_EINVAL;
    srv = calloc(1, sizeof(*srv));
    if (srv == NULL)
        return CM_ENOMEM;
    srv->cfg = *cfg;
    srv->builtin_live = (struct route){.method = "GET", .pattern = "/health/live",
                                       .handler = h_live, .ud = srv};
    srv->builtin_ready = (struct route){.method = "GET", .pattern = "/health/ready",
                                        .handler = h_ready, .ud = srv};
    srv->builtin_metrics = (struct route){.method = "GET", .pattern = "/metrics",
                                          .handler = h_metrics, .ud = srv};
    srv->unmatched = (struct route){.method = "*", .pattern = "unmatched"};
    *out = srv;
    return CM_OK;
}

void cm_http_set_ready(cm_http_server *srv, cm_http_ready_fn fn, void *ud)
{
    srv->ready_fn = fn;
    srv->ready_ud = ud;
}

void cm_http_set_metrics(cm_http_server *srv, cm_http_metrics_fn fn, void *ud)
{
    srv->metrics_fn = fn;
    srv->metrics_ud = ud;
}

void cm_http_set_connection_limits(cm_http_server *srv, unsigned max_conns,
                                   unsigned per_ip_conns, size_t conn_memory)
{
    srv->max_conns = max_conns;
    srv->per_ip_conns = per_ip_conns;
    srv->conn_memory = conn_memory;
}

cm_err cm_http_server_start(cm_http_server *srv)
{
    struct sockaddr_in sa;
    struct MHD_OptionItem limits[4];
    int nl = 0;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)srv->cfg.port);
    if (inet_pton(AF_INET, srv->cfg.host ? srv->cfg.host : "0.0.0.0", &sa.sin_addr) != 1) {
        cm_error("http: bad bind address %s", srv->cfg.host);
        return CM_EINVAL;
    }
    if (srv->max_conns)
        limits[nl++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, srv->max_conns, NULL};
    if (srv->per_ip_conns)
        limits[nl++] =
            (struct MHD_OptionItem){MHD_OPTION_PER_IP_CONNECTION_LIMIT, srv->per_ip_conns, NULL};
    if (srv->conn_memory)
        limits[nl++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                                               (intptr_t)srv->conn_memory, NULL};
    limits[nl] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    srv->mhd = MHD_start_daemon(
        MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_TURBO | MHD_USE_ITC | MHD_USE_ERROR_LOG |
            MHD_ALLOW_UPGRADE | (srv->allow_suspend ? MHD_ALLOW_SUSPEND_RESUME : 0), 0, NULL,
        NULL, on_request, srv,
        /* The logger first: libmicrohttpd warns about any option that comes before it. */
        MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, srv, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)srv->cfg.threads, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, srv, MHD_OPTION_CONNECTION_TIMEOUT, srv->cfg.idle_timeout_s,
        MHD_OPTION_ARRAY, limits, MHD_OPTION_END);
    if (srv->mhd == NULL) {
        cm_error("http: cannot listen on %s:%d", srv->cfg.host, srv->cfg.port);
        return CM_EIO;
    }
    cm_info("http: listening on %s:%d with %d threads", srv->cfg.host, srv->cfg.port,
            srv->cfg.threads);
    return CM_OK;
}

void cm_http_server_stop(cm_http_server *srv)
{
    MHD_socket fd;
    struct timespec ts = {0, 20 * 1000000};
    unsigned waited_ms = 0;

    if (srv == NULL || srv->mhd == NULL)
        return;
    fd = MHD_quiesce_daemon(srv->mhd);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    while (atomic_load(&srv->inflight) > 0 && waited_ms < srv->cfg.drain_s * 1000) {
        nanosleep(&ts, NULL);
        waited_ms += 20;
    }
    if (atomic_load(&srv->inflight) > 0)
        cm_warn("http: %d requests still in flight after %us drain", atomic_load(&srv->inflight),
                srv->cfg.drain_s);
    if (srv->drain_fn)
        srv->drain_fn(srv->drain_ud); /* no suspended connection may outlive the daemon */
    MHD_stop_daemon(srv->mhd);
    srv->mhd = NULL;
}

void cm_http_server_destroy(cm_http_server *srv)
{
    if (srv == NULL)
        return;
    cm_http_server_stop(srv);
    for (int i = 0; i < srv->nroutes; i++) {
        free(srv->routes[i].pattern);
        free(srv->routes[i].seg_buf);
    }
    for (int i = 0; i < srv->nlimits; i++)
        free(srv->limits[i].prefix);
    free(srv);
}

/* --- answers made later ----------------------------------------------------------------- */

void cm_http_allow_suspend(cm_http_server *srv)
{
    srv->allow_suspend = 1;
}

void cm_http_set_drain_hook(cm_http_server *srv, void (*fn)(void *ud), void *ud)
{
    srv->drain_fn = fn;
    srv->drain_ud = ud;
}

cm_err cm_http_suspend(cm_http_req *req)
{
    if (!req->srv->allow_suspend || req->replied || req->suspended)
        return CM_EINVAL;
    req->suspended = 1;
    req->defer = 1; /* the reply is queued by the server thread that resumes it (on_request) */
    MHD_suspend_connection(req->conn);
    return CM_OK;
}

void cm_http_resume(cm_http_req *req)
{
    if (!req->replied) {
        cm_error("http: suspended %s %s resumed without an answer (bug)", req->method, req->path);
        cm_http_reply_error(req, CM_EINTERNAL, "the handler produced no answer");
    }
    /* libmicrohttpd calls on_request again on a server thread, which finds req->replied and
     * queues the deferred answer (its resume list is locked: what this thread wrote is seen). */
    MHD_resume_connection(req->conn);
}

/* --- protocol upgrades ------------------------------------------------------------------ */

static void on_upgraded(void *cls, struct MHD_Connection *conn, void *con_cls, const char *extra,
                        size_t extra_len, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
    cm_http_req *req = cls;
    int fl = fcntl(sock, F_GETFL);
    (void)conn;
    (void)con_cls;

    /* libmicrohttpd leaves it non-blocking; the callee's relay expects plain blocking I/O. */
    if (fl != -1)
        (void)fcntl(sock, F_SETFL, fl & ~O_NONBLOCK);
    req->up_started = 1;
    req->up_fn(req->up_ud, sock, extra, extra_len, (cm_http_upgrade *)urh);
}

void cm_http_reply_upgrade(cm_http_req *req, cm_http_upgrade_fn fn, void *ud,
                           void (*free_ud)(void *ud))
{
    struct MHD_Response *resp;

    if (req->replied) {
        cm_error("http: second reply to %s %s ignored (bug)", req->method, req->path);
        if (free_ud)
            free_ud(ud);
        return;
    }
    req->replied = 1;
    req->status = 101;
    req->up_fn = fn;
    req->up_ud = ud;
    req->up_free = free_ud;
    resp = MHD_create_response_for_upgrade(on_upgraded, req);
    if (resp == NULL)
        return; /* on_completed frees ud; the client sees the connection close */
    MHD_add_response_header(resp, "X-Request-Id", req->rid);
    for (struct hdr *h = req->hdrs; h; h = h->next)
        MHD_add_response_header(resp, h->name, h->value);
    if (MHD_queue_response(req->conn, 101, resp) != MHD_YES)
        cm_error("http: the 101 answer to %s could not be queued", req->path);
    MHD_destroy_response(resp);
}

void cm_http_upgrade_close(cm_http_upgrade *up)
{
    MHD_upgrade_action((struct MHD_UpgradeResponseHandle *)up, MHD_UPGRADE_ACTION_CLOSE);
}

/* --- per-prefix body caps, streamed replies, multipart bodies ---------------------------- */

cm_err cm_http_body_limit(cm_http_server *srv, const char *prefix, size_t max_body)
{
    char *p;
    if (prefix == NULL || prefix[0] != '/' || max_body == 0)
        return CM_EINVAL;
    if (srv->nlimits == MAX_LIMITS)
        return CM_ETOOBIG;
    p = strdup(prefix);
    if (p == NULL)
        return CM_ENOMEM;
    srv->limits[srv->nlimits].prefix = p;
    srv->limits[srv->nlimits].max = max_body;
    srv->nlimits++;
    return CM_OK;
}

struct stream_ctx {
    cm_http_reader read;
    void *ud;
    void (*free_ud)(void *ud);
};

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct stream_ctx *s = cls;
    long n = s->read(s->ud, pos, buf, max);
    if (n <= 0)
        return MHD_CONTENT_READER_END_WITH_ERROR; /* the connection is closed: truncated */
    return (ssize_t)n;
}

static void stream_free(void *cls)
{
    struct stream_ctx *s = cls;
    if (s->free_ud)
        s->free_ud(s->ud);
    free(s);
}

void cm_http_reply_stream(cm_http_req *req, int status, const char *content_type, uint64_t size,
                          cm_http_reader read, void *ud, void (*free_ud)(void *ud))
{
    struct MHD_Response *resp;
    struct stream_ctx *s;

    if (req->replied) {
        cm_error("http: second reply to %s %s ignored (bug)", req->method, req->path);
        if (free_ud)
            free_ud(ud);
        return;
    }
    if (size == 0) {
        if (free_ud)
            free_ud(ud);
        cm_http_reply_raw(req, status, content_type, "", 0);
        return;
    }
    s = malloc(sizeof(*s));
    if (s == NULL) {
        if (free_ud)
            free_ud(ud);
        cm_http_reply_error(req, CM_ENOMEM, NULL);
        return;
    }
    s->read = read;
    s->ud = ud;
    s->free_ud = free_ud;
    req->replied = 1;
    req->status = status;
    /* 64 KiB blocks: large enough for few reader calls, small enough to keep memory flat. */
    resp = MHD_create_response_from_callback(size, 64 * 1024, stream_read, s, stream_free);
    if (resp == NULL) {
        stream_free(s);
        return;
    }
    if (content_type)
        MHD_add_response_header(resp, "Content-Type", content_type);
    MHD_add_response_header(resp, "X-Request-Id", req->rid);
    for (struct hdr *h = req->hdrs; h; h = h->next)
        MHD_add_response_header(resp, h->name, h->value);
    if (req->defer) {
        req->deferred = resp; /* as in cm_http_reply_raw */
        return;
    }
    MHD_queue_response(req->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
}

struct mp_ctx {
    const char *field;
    cm_http_part *out;
    char *buf;
    size_t cap;
    int found, done, toobig;
};

static enum MHD_Result mp_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *filename, const char *content_type,
                               const char *transfer_encoding, const char *data, uint64_t off,
                               size_t size)
{
    struct mp_ctx *c = cls;
    (void)kind;
    (void)transfer_encoding;
    if (key == NULL || strcmp(key, c->field) != 0 || c->done)
        return MHD_YES;
    if (!c->found) {
        c->found = 1;
        c->out->filename = filename;
        c->out->content_type = content_type;
        c->out->len = 0;
    } else if (off == 0) {
        c->done = 1; /* a second part with the same name: the first one counts */
        return MHD_YES;
    }
    if (size == 0)
        return MHD_YES;
    if (off != c->out->len || c->out->len + size > c->cap) {
        c->toobig = 1;
        return MHD_NO;
    }
    memcpy(c->buf + c->out->len, data, size);
    c->out->len += size;
    return MHD_YES;
}

/* Keeps the filename and content type alive past the post processor (it frees its own). */
static const char *mp_keep(cm_http_req *req, const char *s)
{
    return s ? cm_http_strdup(req, s) : NULL;
}

cm_err cm_http_multipart_file(cm_http_req *req, const char *field, cm_http_part *out)
{
    const char *ct = cm_http_header(req, "Content-Type");
    struct MHD_PostProcessor *pp;
    struct mp_ctx c = {.field = field, .out = out};
    cm_http_part part = {0};
    size_t off = 0;
    int ok;

    if (ct == NULL || strncasecmp(ct, "multipart/form-data", 19) != 0)
        return CM_EINVAL;
    c.out = &part;
    c.cap = req->body_len;
    c.buf = cm_http_alloc(req, c.cap ? c.cap : 1);
    if (c.buf == NULL)
        return CM_ENOMEM;
    pp = MHD_create_post_processor(req->conn, 64 * 1024, mp_iter, &c);
    if (pp == NULL)
        return CM_EINVAL; /* no boundary parameter */
    ok = 1;
    while (ok && off < req->body_len) {
        size_t n = req->body_len - off > 65536 ? 65536 : req->body_len - off;
        ok = MHD_post_process(pp, req->body + off, n) == MHD_YES;
        off += n;
    }
    /* The filename and type strings live in the processor: copy before destroying it. */
    if (c.found) {
        part.filename = mp_keep(req, part.filename);
        part.content_type = mp_keep(req, part.content_type);
    }
    if (MHD_destroy_post_processor(pp) != MHD_YES)
        ok = 0; /* the body ended before the closing boundary */
    if (!ok || c.toobig || !c.found)
        return CM_EINVAL;
    part.name = field;
    part.data = c.buf;
    *out = part;
    return CM_OK;
}
