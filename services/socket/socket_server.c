/* socket_server.c - the WebSocket endpoint /v1/ws on libwebsockets (on a libuv loop): authentication on the
 * upgrade, client frames and their acks, per-connection caps (frame size, rate, send queue,
 * token lifetime), and in-order delivery with the sync cursor (catch-up, then live, with no gap
 * and no duplicate at the seam). Everything here runs on the loop thread except
 * socket_srv_post, socket_srv_stop and socket_srv_metrics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errno.h>
#include <sys/socket.h>

#include <libwebsockets.h>
#include <uv.h>

#include "common/json.h"
#include "common/log.h"
#include "common/session.h"
#include "socket_server.h"

#define INBOX_MAX 65536
#define TOKEN_MAX 8192
#define SINCE_MAX 16384
#define W_LOAD 1
#define W_SYNC 2
#define W_SEND 3
#define W_RECEIPT 4
/* notification.created is produced at least once (its outbox may produce it again after a
 * crash, with the same id): the ids of this many recent ones are remembered to drop repeats. */
#define NOTIFIED_MAX 4096

/* One queued text frame: the shared bytes of an event (a reference, so a fan-out to many
 * connections serialises the event once), then the connection's own bytes (its cursor), or
 * only its own bytes (acks, errors, presence batches) when `ev` is NULL. */
typedef struct outframe {
    struct outframe *next;
    socket_event *ev;
    size_t len;  /* bytes of `own` */
    char own[];
} outframe;

/* Queue entries whose own bytes (an event's cursor, a short ack) fit in this many are all
 * allocated with this capacity and recycled through the server's pool (at most OUTFRAME_POOL
 * of them kept): a fan-out queues and frees one entry per recipient in bursts of hundreds,
 * which overflowed malloc's per-thread cache (perf: about 8% of the fan-out's CPU in
 * _int_malloc, consolidation and unlinking). 128 bytes hold the cursor of about 8
 * conversations; longer ones are malloc'ed as before. */
#define OUTFRAME_SMALL 128
#define OUTFRAME_POOL 16384

/* A writable callback gathers the queued frames into one write of about this many bytes (the
 * "cork" of uWebSockets): one send() for many small frames instead of one each. */
#define WRITE_BATCH 65536

/* lws allocates this much per connection for what it reads from the client, whatever the
 * message size (larger messages arrive in pieces, joined in conn.rx). Client frames are small
 * (a send is a few hundred bytes): 4096, lws's default, was 4 KiB of every idle connection. */
#define RX_BUFFER 256

/* Seconds a connection waits for the client's close frame after sending its own (send_close). */
#define CLOSE_LINGER_S 2

typedef enum conn_state { ST_LOADING, ST_SYNCING, ST_LIVE } conn_state;

typedef struct conn {
    struct lws *wsi;
    socket_srv *srv;
    uint64_t id;
    /* Who (from the token's claims, kept small: a connection holds only these): one block
     * "tenant/user\0tenant\0user\0session\0" that the four point into. */
    char *user_key, *tid, *sub, *sid;
    time_t exp; /* the token's expiry (Unix seconds, 0 none) */
    char *token;
    /* receiving */
    char *rx;
    size_t rx_len;
    int rx_discard; /* the rest of a message over the cap is being read and dropped */
    int64_t rate_window;
    long rate_count;
    /* sending */
    outframe *q_head, *q_tail;
    size_t q_frames, q_bytes;
    int close_code;
    const char *close_reason; /* a string constant, or NULL (none) */
    int close_sent; /* our close frame is out: waiting for the peer's (CLOSE_LINGER_S) */
    int dirty;      /* in the server's list of connections to write after this inbox drain */
    /* delivery */
    conn_state state;
    cm_cursor_pos *pos;
    size_t npos, cap_pos;
    char *since;        /* the cursor of the next catch-up; NULL: the current positions */
    int fresh;          /* no position yet: the first catch-up starts "now" */
    int sync_again;     /* live events were dropped during a catch-up: one more */
    int sync_on_drain;  /* the next catch-up page waits until the send queue drained */
    int loaded;         /* the conversation list is in (on_load): catch-ups may start */
    char sync_id[SOCKET_FRAME_ID_MAX + 1]; /* the client's sync frame to ack at the end */
    socket_event **held; /* live events held during a catch-up, in arrival order */
    size_t nheld;
    char **convs;        /* conversations this connection is indexed under */
    size_t nconvs;
    int64_t retry_at;    /* ms; a failed catch-up is retried then */
    int jobs;            /* upstream jobs in flight */
    /* presence */
    int present;         /* counted among the user's live connections in Redis */
    int64_t beat_at;     /* ms; next presence refresh */
    socket_presence_item *pres; /* changes of others waiting for the next batch */
    size_t npres, cap_pres;
    uint64_t pres_seen;  /* the last presence event queued here (one per event) */
    int gone;            /* the wsi closed; freed when jobs reaches 0 */
} conn;

typedef struct typing_entry {
    char conv_key[SOCKET_ID_MAX + CM_JWT_ID_MAX + 2]; /* tenant/conversation */
    char user[CM_JWT_ID_MAX + 1];
    int64_t until; /* ms; a stop is delivered then unless refreshed */
} typing_entry;

typedef struct pss {
    conn *c;
} pss;

struct socket_srv {
    socket_srv_config cfg;
    struct lws_context *lws;
    uv_loop_t loop;       /* the libuv loop lws joins (epoll), run by socket_srv_run */
    int loop_ready;
    void *loops[1];       /* info.foreign_loops */
    socket_upstream *up;
    socket_index *by_conv, *by_user;
    conn **conns; /* by id: open addressing would be faster; a list is enough per tick */
    size_t nconns, cap_conns;
    uint64_t next_id;
    lws_sorted_usec_list_t tick;
    socket_ephemeral *eph;
    typing_entry *typing; /* who types where, as every instance sees it from pub/sub */
    size_t ntyping, cap_typing;
    uint64_t pres_serial, pres_order;
    int64_t pres_flush_at;
    unsigned char *wbuf; /* the write buffer of write_batch (LWS_PRE, then frames) */
    /* While the inbox is routed (drain_inbox), connections given frames are listed here and
     * written once at the end, instead of each asking lws for a writable callback. */
    int deferring;
    conn **dirty;
    size_t ndirty, cap_dirty;
    outframe *pool;      /* free queue entries of OUTFRAME_SMALL bytes (linked by next) */
    size_t npool;
    size_t wcap;
    uint64_t notified[NOTIFIED_MAX]; /* the last notifications delivered (hashed ids), a ring */
    size_t notified_next;
    /* inbox, filled by the Kafka consumer */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    socket_event *in_head, *in_tail;
    size_t in_len;
    atomic_int stopping;
    long drain_ms;
    int64_t drain_until;
    int done;
    atomic_int serving;
    /* metrics */
    atomic_long m_conns, m_opened, m_frames_in, m_frames_out, m_events, m_dropped_slow,
        m_closed[10], m_presence_frames, m_typing, m_notifications;
    struct stage_hist *stages; /* [NSTAGES], socket_delivery_stage_seconds */
};

static const int close_codes[10] = {1000, 1001, 1003, 1007, 1008, 1009, 4001, 4002, 4003, 4004};

/* --- delivery stages (socket_delivery_stage_seconds) -------------------------------------------- */

/* Where a consumed event's time goes, per stage (socket.h, socket_event's t_* stamps): kafka =
 * the record's timestamp to the consumer thread's poll, consumer = building the frame and
 * handing it to the inbox, inbox = waiting there for the loop, write = from the loop's drain
 * to the lws_write of each connection's frame (routing, queues, waiting for writable), total =
 * the record's timestamp to that write. The first three count once per event, the last two
 * once per frame. Written on the loop thread only, read by /metrics: relaxed atomics, which
 * cost no more than plain counters on x86. */
enum { STAGE_KAFKA, STAGE_CONSUMER, STAGE_INBOX, STAGE_WRITE, STAGE_TOTAL, NSTAGES };
static const char *const stage_names[NSTAGES] = {"kafka", "consumer", "inbox", "write", "total"};
/* Seconds: 0.1 ms to 2.5 s, for a delivery that should take about a millisecond. */
static const double stage_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                      0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5};
#define NBOUNDS (sizeof(stage_bounds) / sizeof(stage_bounds[0]))
static const int64_t stage_bounds_us[NBOUNDS] = {100,   250,    500,    1000,    2500,
                                                 5000,  10000,  25000,  50000,   100000,
                                                 250000, 500000, 1000000, 2500000};
typedef struct stage_hist {
    atomic_ulong le[NBOUNDS + 1]; /* per bucket (not cumulative); the last is +Inf */
    atomic_ullong sum_us;
} stage_hist;

/* Loop thread only (one writer). */
static void relaxed_add(atomic_ulong *v, unsigned long n)
{
    atomic_store_explicit(v, atomic_load_explicit(v, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static void stage_record(stage_hist *h, int64_t us)
{
    size_t i = 0;

    if (us < 0)
        us = 0; /* the producer's clock may be a little ahead of ours */
    while (i < NBOUNDS && us > stage_bounds_us[i])
        i++;
    relaxed_add(&h->le[i], 1);
    atomic_store_explicit(&h->sum_us,
                          atomic_load_explicit(&h->sum_us, memory_order_relaxed) + (unsigned long long)us,
                          memory_order_relaxed);
}

static void count_close(socket_srv *s, int code)
{
    for (int i = 0; i < 10; i++)
        if (close_codes[i] == code)
            atomic_fetch_add(&s->m_closed[i], 1);
}

/* --- positions (the connection's cursor) ---------------------------------------------------- */

static int64_t pos_get(conn *c, uint64_t key)
{
    cm_cursor_pos *p = cm_cursor_find(c->pos, c->npos, key);

    return p ? p->seq : -1;
}

static void pos_set(conn *c, uint64_t key, int64_t seq)
{
    cm_cursor_pos *p = cm_cursor_find(c->pos, c->npos, key);
    size_t i = 0;

    if (p) {
        p->seq = seq;
        return;
    }
    if (c->npos == c->cap_pos) {
        size_t cap = c->cap_pos ? c->cap_pos * 2 : 8;
        cm_cursor_pos *grown = realloc(c->pos, cap * sizeof(*grown));
        if (grown == NULL)
            return; /* the conversation stays unknown: its next event triggers a catch-up */
        c->pos = grown;
        c->cap_pos = cap;
    }
    while (i < c->npos && c->pos[i].key < key)
        i++;
    memmove(c->pos + i + 1, c->pos + i, (c->npos - i) * sizeof(*c->pos));
    c->pos[i].key = key;
    c->pos[i].seq = seq;
    c->npos++;
}

static void pos_del(conn *c, uint64_t key)
{
    cm_cursor_pos *p = cm_cursor_find(c->pos, c->npos, key);

    if (p) {
        memmove(p, p + 1, (size_t)(c->pos + c->npos - p - 1) * sizeof(*p));
        c->npos--;
    }
}

/* Replaces the positions with those of cursor `text`. CM_EINVAL for a bad cursor. */
static cm_err pos_load(conn *c, const char *text)
{
    size_t cap = strlen(text) / 12 + 1, n = 0;
    cm_cursor_pos *p = calloc(cap, sizeof(*p));
    cm_err rc;

    if (p == NULL)
        return CM_ENOMEM;
    if ((rc = cm_cursor_decode(text, p, cap, &n)) != CM_OK) {
        free(p);
        return rc;
    }
    free(c->pos);
    c->pos = p;
    c->npos = n;
    c->cap_pos = cap;
    return CM_OK;
}

/* --- sending ---------------------------------------------------------------------------------- */

/* Closes with `code` and `reason` (a string constant, at most 123 bytes) once the frames
 * already queued are written. */
static void conn_close(conn *c, int code, const char *reason)
{
    if (c->close_code || c->gone)
        return;
    c->close_code = code;
    c->close_reason = reason;
    lws_callback_on_writable(c->wsi);
}

/* A queue entry with room for `len` own bytes (from the pool when they fit OUTFRAME_SMALL),
 * or NULL. Loop thread only. */
static outframe *outframe_new(socket_srv *s, size_t len)
{
    outframe *f = s->pool;

    if (len > OUTFRAME_SMALL)
        return malloc(sizeof(*f) + len);
    if (f == NULL)
        return malloc(sizeof(*f) + OUTFRAME_SMALL);
    s->pool = f->next;
    s->npool--;
    /* The next pop reads the next entry's link: a pool entry freed long ago is out of the
     * cache (perf: most of conn_queue's time was that load's miss). */
    if (s->pool)
        __builtin_prefetch(s->pool);
    return f;
}

/* Drops the entry's event reference and returns it to the pool (or frees it). */
static void outframe_free(socket_srv *s, outframe *f)
{
    socket_event_release(f->ev);
    if (f->len <= OUTFRAME_SMALL && s->npool < OUTFRAME_POOL) {
        f->next = s->pool;
        s->pool = f;
        s->npool++;
        return;
    }
    free(f);
}

static size_t frame_len(const outframe *f)
{
    return (f->ev ? f->ev->frame_len : 0) + f->len;
}

/* Lists `c` for the write at the end of the inbox drain (flush_dirty). 0 when it cannot be
 * listed (out of memory): the caller asks lws for a writable callback instead. */
static int defer_write(conn *c)
{
    socket_srv *s = c->srv;

    if (c->dirty)
        return 1;
    if (s->ndirty == s->cap_dirty) {
        size_t cap = s->cap_dirty ? s->cap_dirty * 2 : 256;
        conn **grown = realloc(s->dirty, cap * sizeof(*grown));
        if (grown == NULL)
            return 0;
        s->dirty = grown;
        s->cap_dirty = cap;
    }
    s->dirty[s->ndirty++] = c;
    c->dirty = 1;
    return 1;
}

/* Queues one text frame: the bytes of event `shared` (may be NULL; not copied, a reference is
 * taken) followed by `own[0..len)` (copied). Returns 1 when queued, 0 when not. A full queue
 * closes the connection with 4003: the client resumes with its cursor instead of the server
 * growing memory. */
static int conn_queue(conn *c, socket_event *shared, const char *own, size_t len)
{
    size_t total = (shared ? shared->frame_len : 0) + len;
    outframe *f;

    if (c->close_code || c->gone)
        return 0;
    if (c->q_frames >= (size_t)c->srv->cfg.lim.queue_frames ||
        c->q_bytes + total > (size_t)c->srv->cfg.lim.queue_bytes) {
        atomic_fetch_add(&c->srv->m_dropped_slow, 1);
        conn_close(c, SOCKET_CLOSE_SLOW, "send queue full: reconnect with since=<cursor>");
        return 0;
    }
    if ((f = outframe_new(c->srv, len)) == NULL) {
        conn_close(c, SOCKET_CLOSE_SLOW, "out of memory: reconnect with since=<cursor>");
        return 0;
    }
    f->next = NULL;
    f->ev = shared;
    if (shared)
        shared->refs++;
    f->len = len;
    if (len)
        memcpy(f->own, own, len);
    if (c->q_tail)
        c->q_tail->next = f;
    else
        c->q_head = f;
    c->q_tail = f;
    c->q_frames++;
    c->q_bytes += total;
    if (!c->srv->deferring || !defer_write(c))
        lws_callback_on_writable(c->wsi);
    return 1;
}

/* Queues `a[0..alen)` as one text frame (copied). */
static void conn_send(conn *c, const char *a, size_t alen)
{
    conn_queue(c, NULL, a, alen);
}

/* Queues the whole frame of event `ev` (shared, not copied). */
static void conn_send_shared(conn *c, socket_event *ev)
{
    conn_queue(c, ev, NULL, 0);
}

/* Queues a heap string `s` (freed here; NULL is out of memory and ignored). */
static void conn_send_take(conn *c, char *s)
{
    if (s)
        conn_send(c, s, strlen(s));
    free(s);
}

static void conn_error(conn *c, const char *code, const char *detail)
{
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "type", "error");
    cJSON_AddStringToObject(o, "code", code);
    cJSON_AddStringToObject(o, "detail", detail);
    conn_send_take(c, cm_json_print(o));
    cJSON_Delete(o);
}

/* Sends an event (its shared bytes) with the connection's cursor after it appended: the frame
 * is {...shared...,"cursor":"<cursor>"}; cursors are base64url, no escaping. The positions are
 * kept sorted (pos_set), so the cursor is encoded without sorting or allocating. */
static void conn_send_event(conn *c, socket_event *ev)
{
    static const char head[] = ",\"cursor\":\"";
    char stack[512], *buf = stack;
    size_t hl = sizeof(head) - 1, cap = hl + CM_CURSOR_TEXT_MAX(c->npos) + 2, clen = 0;

    if (c->close_code || c->gone)
        return;
    if (cap > sizeof(stack) && (buf = malloc(cap)) == NULL) {
        conn_close(c, SOCKET_CLOSE_SLOW, "out of memory: reconnect with since=<cursor>");
        return;
    }
    memcpy(buf, head, hl);
    if (cm_cursor_encode_to(c->pos, c->npos, buf + hl, cap - hl - 2, &clen) != CM_OK) {
        conn_close(c, SOCKET_CLOSE_SLOW, "cursor too large: reconnect with since=<cursor>");
    } else {
        memcpy(buf + hl + clen, "\"}", 2);
        if (conn_queue(c, ev, buf, hl + clen + 2))
            atomic_fetch_add(&c->srv->m_events, 1);
    }
    if (buf != stack)
        free(buf);
}

/* --- the index --------------------------------------------------------------------------------- */

static void conv_key(const conn *c, const char *cid, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", c->tid, cid);
}

static int conn_follows(const conn *c, const char *cid)
{
    for (size_t i = 0; i < c->nconvs; i++)
        if (strcmp(c->convs[i], cid) == 0)
            return 1;
    return 0;
}

static void follow(conn *c, const char *cid)
{
    char key[SOCKET_ID_MAX + CM_JWT_ID_MAX + 2];
    char **grown;

    if (conn_follows(c, cid) || (grown = realloc(c->convs, (c->nconvs + 1) * sizeof(char *))) == NULL)
        return;
    c->convs = grown;
    if ((c->convs[c->nconvs] = strdup(cid)) == NULL)
        return;
    conv_key(c, cid, key, sizeof(key));
    if (socket_index_add(c->srv->by_conv, key, c) != CM_OK) {
        free(c->convs[c->nconvs]);
        return;
    }
    c->nconvs++;
}

static void unfollow(conn *c, const char *cid)
{
    char key[SOCKET_ID_MAX + CM_JWT_ID_MAX + 2];

    for (size_t i = 0; i < c->nconvs; i++)
        if (strcmp(c->convs[i], cid) == 0) {
            conv_key(c, cid, key, sizeof(key));
            socket_index_remove(c->srv->by_conv, key, c);
            free(c->convs[i]);
            c->convs[i] = c->convs[--c->nconvs];
            return;
        }
}

/* --- delivery -------------------------------------------------------------------------------- */

static void start_sync(conn *c);

static int is_me(const conn *c, const char *user)
{
    return strcmp(c->sub, user) == 0;
}

/* Membership bookkeeping of an event applied to this connection: a conversation it joined is
 * followed, one it left is forgotten after its member.removed was delivered. */
static void apply_membership(conn *c, const socket_event *ev)
{
    if (strcmp(ev->type, "member.removed") == 0 && is_me(c, ev->user_id)) {
        unfollow(c, ev->conversation_id);
        pos_del(c, ev->key);
    }
}

static void hold(conn *c, socket_event *ev)
{
    socket_event **grown;

    if (c->nheld >= (size_t)c->srv->cfg.lim.buffer_events ||
        (grown = realloc(c->held, (c->nheld + 1) * sizeof(*grown))) == NULL) {
        c->sync_again = 1; /* the next catch-up fetches what was not held */
        return;
    }
    c->held = grown;
    ev->refs++;
    c->held[c->nheld++] = ev;
}

/* Offers a live log event to a connection: delivered when it is the next of its conversation,
 * dropped when already applied, and otherwise fetched in order by a catch-up. */
static void offer(conn *c, socket_event *ev)
{
    if (c->close_code || c->gone)
        return;
    if (c->state != ST_LIVE) {
        hold(c, ev);
        return;
    }
    switch (socket_order_decide(pos_get(c, ev->key), ev->eseq)) {
    case 0:
        return;
    case 2:
        hold(c, ev);
        start_sync(c);
        return;
    default:
        break;
    }
    pos_set(c, ev->key, ev->eseq);
    if (!ev->audience[0] || is_me(c, ev->audience))
        conn_send_event(c, ev);
    apply_membership(c, ev);
}

/* --- typing and presence from Redis pub/sub ------------------------------------------------ */

/* Sends a typing frame to the local connections following `conv_key` (tenant/conversation),
 * except the typist's own. */
static void typing_deliver(socket_srv *s, const char *conv_key, const char *user,
                           socket_event *shared, const char *frame, size_t len)
{
    const socket_set *set = socket_index_get(s->by_conv, conv_key);

    for (size_t i = 0; set && i < set->n; i++) {
        conn *c = set->items[i];
        if (is_me(c, user))
            continue;
        if (shared)
            conn_send_shared(c, shared);
        else
            conn_send(c, frame, len);
    }
    atomic_fetch_add(&s->m_typing, 1);
}

/* A typing change seen by every instance: a start is delivered when the user begins (a
 * repeated start only extends it), a stop when the user was typing. */
static void route_typing(socket_srv *s, socket_event *ev)
{
    char key[SOCKET_ID_MAX + CM_JWT_ID_MAX + 2];
    int64_t now = socket_now_ms();
    size_t i;

    snprintf(key, sizeof(key), "%s/%s", ev->tenant, ev->conversation_id);
    for (i = 0; i < s->ntyping; i++)
        if (strcmp(s->typing[i].user, ev->sender) == 0 && strcmp(s->typing[i].conv_key, key) == 0)
            break;
    if (strcmp(ev->state, "start") == 0) {
        if (i < s->ntyping) {
            s->typing[i].until = now + s->cfg.typing_ttl_ms;
            return;
        }
        if (s->ntyping == s->cap_typing) {
            size_t cap = s->cap_typing ? s->cap_typing * 2 : 16;
            typing_entry *grown = realloc(s->typing, cap * sizeof(*grown));
            if (grown == NULL)
                return;
            s->typing = grown;
            s->cap_typing = cap;
        }
        typing_entry *t = &s->typing[s->ntyping++];
        snprintf(t->conv_key, sizeof(t->conv_key), "%s", key);
        snprintf(t->user, sizeof(t->user), "%s", ev->sender);
        t->until = now + s->cfg.typing_ttl_ms;
    } else {
        if (i == s->ntyping)
            return;
        s->typing[i] = s->typing[--s->ntyping];
    }
    typing_deliver(s, key, ev->sender, ev, NULL, 0);
}

/* Ends the typing of users whose start was not refreshed within typing_ttl_ms. */
static void typing_expire(socket_srv *s, int64_t now)
{
    for (size_t i = 0; i < s->ntyping;) {
        typing_entry t = s->typing[i];
        if (now < t.until) {
            i++;
            continue;
        }
        s->typing[i] = s->typing[--s->ntyping];
        char *frame = socket_typing_frame(strchr(t.conv_key, '/') + 1, t.user, "stop");
        if (frame)
            typing_deliver(s, t.conv_key, t.user, NULL, frame, strlen(frame));
        free(frame);
    }
}

/* Sends a connection its waiting presence changes as one frame. */
static void presence_flush(conn *c)
{
    if (c->npres == 0)
        return;
    conn_send_take(c, socket_presence_batch_json(c->pres, c->npres));
    atomic_fetch_add(&c->srv->m_presence_frames, 1);
    c->npres = 0;
}

#define PRESENCE_BATCH_MAX 4096

/* A presence change: queued once to each local connection of a user who shares one of the
 * user's conversations (and is not the user), for the next batch. The batches make a burst of
 * changes in a large group one frame per member per window, not one per change. */
static void route_presence(socket_srv *s, const socket_event *ev)
{
    char key[SOCKET_ID_MAX + CM_JWT_ID_MAX + 2];
    uint64_t serial = ++s->pres_serial;

    for (size_t m = 0; m < ev->nmembers; m++) {
        const socket_set *set;
        snprintf(key, sizeof(key), "%s/%s", ev->tenant, ev->members[m]);
        if ((set = socket_index_get(s->by_conv, key)) == NULL)
            continue;
        for (size_t i = 0; i < set->n; i++) {
            conn *c = set->items[i];
            socket_presence_item *it;
            if (c->pres_seen == serial || is_me(c, ev->sender) || c->close_code || c->gone)
                continue;
            c->pres_seen = serial;
            if (c->npres == PRESENCE_BATCH_MAX)
                presence_flush(c);
            if (c->npres == c->cap_pres) {
                size_t cap = c->cap_pres ? c->cap_pres * 2 : 4;
                socket_presence_item *grown = realloc(c->pres, cap * sizeof(*grown));
                if (grown == NULL)
                    continue;
                c->pres = grown;
                c->cap_pres = cap;
            }
            it = &c->pres[c->npres++];
            snprintf(it->user_id, sizeof(it->user_id), "%s", ev->sender);
            snprintf(it->status, sizeof(it->status), "%s", ev->state);
            it->last_seen = ev->last_seen;
            it->order = serial;
        }
    }
}

/* notification.created: to every local connection of the recipient (tenant and user), at
 * once whatever the connection's catch-up state (notifications are not in the conversation
 * log and carry no cursor), once per notification id. */
static void route_notification(socket_srv *s, socket_event *ev)
{
    char key[2 * CM_JWT_ID_MAX + 2];
    const socket_set *set;
    uint64_t h = cm_cursor_key(ev->event_id);

    for (size_t i = 0; i < NOTIFIED_MAX; i++)
        if (s->notified[i] == h)
            return; /* produced again: already delivered */
    s->notified[s->notified_next] = h;
    s->notified_next = (s->notified_next + 1) % NOTIFIED_MAX;
    snprintf(key, sizeof(key), "%s/%s", ev->tenant, ev->user_id);
    if ((set = socket_index_get(s->by_user, key)) == NULL)
        return;
    for (size_t i = 0; i < set->n; i++)
        conn_send_shared(set->items[i], ev);
    atomic_fetch_add(&s->m_notifications, 1);
}

/* Routes a consumed event to the local connections it concerns. */
static void route(socket_srv *s, socket_event *ev)
{
    char key[SOCKET_ID_MAX + CM_JWT_ID_MAX + 2];
    const socket_set *set;

    if (ev->kind == SOCKET_EV_EPHEMERAL) {
        if (strcmp(ev->type, "typing") == 0)
            route_typing(s, ev);
        else
            route_presence(s, ev);
        return;
    }
    if (ev->kind == SOCKET_EV_NOTIFICATION) {
        route_notification(s, ev);
        return;
    }
    if (ev->kind == SOCKET_EV_REVOKED) {
        snprintf(key, sizeof(key), "%s/%s", ev->tenant, ev->user_id);
        if ((set = socket_index_get(s->by_user, key)))
            for (size_t i = 0; i < set->n; i++) {
                conn *c = set->items[i];
                if (strcmp(c->sid, ev->sid) == 0)
                    conn_close(c, SOCKET_CLOSE_REVOKED, "session revoked");
            }
        return;
    }
    /* A member added here starts following the conversation before the event is offered. */
    for (size_t m = 0; m <= ev->nmembers; m++) {
        const char *u = m < ev->nmembers ? ev->members[m] : ev->user_id;
        if (!u[0] || (strcmp(ev->type, "member.added") && strcmp(ev->type, "conversation.created")))
            continue;
        snprintf(key, sizeof(key), "%s/%s", ev->tenant, u);
        if ((set = socket_index_get(s->by_user, key)))
            for (size_t i = 0; i < set->n; i++)
                follow(set->items[i], ev->conversation_id);
    }
    snprintf(key, sizeof(key), "%s/%s", ev->tenant, ev->conversation_id);
    if ((set = socket_index_get(s->by_conv, key)) == NULL)
        return;
    /* offer() may unfollow (member.removed), which reorders the set: walk a copy (on the
     * stack for the usual conversation, so a small fan-out allocates nothing here). */
    size_t n = set->n;
    conn *stack[64], **copy = n <= 64 ? stack : malloc(n * sizeof(conn *));
    if (copy == NULL)
        return;
    memcpy(copy, set->items, n * sizeof(conn *));
    for (size_t i = 0; i < n; i++)
        offer(copy[i], ev);
    if (copy != stack)
        free(copy);
}

static void submit(conn *c, socket_job *j)
{
    if (j == NULL) {
        conn_error(c, "internal", "out of memory");
        return;
    }
    c->jobs++;
    socket_upstream_submit(c->srv->up, j);
}

/* Starts a catch-up: POST /v1/sync from the connection's cursor (or `since`), page by page. */
static void start_sync(conn *c)
{
    cJSON *body;
    char *text = NULL, *json;

    if (c->state == ST_SYNCING) {
        c->sync_again = 1;
        return;
    }
    c->state = ST_SYNCING;
    c->sync_again = 0;
    if (c->since == NULL && !c->fresh && cm_cursor_encode(c->pos, c->npos, &text) != CM_OK) {
        conn_close(c, SOCKET_CLOSE_SLOW, "cursor too large: reconnect with since=<cursor>");
        return;
    }
    body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "since", c->since ? c->since : text ? text : "");
    cJSON_AddNumberToObject(body, "limit", (double)c->srv->cfg.lim.sync_limit);
    json = cm_json_print(body);
    cJSON_Delete(body);
    free(text);
    submit(c, json ? socket_job_new(SOCKET_JOB_CALL, W_SYNC, c->id, "POST", "/v1/sync", json,
                                    c->token)
                   : NULL);
    free(json);
}

/* The end of a catch-up: held live events go through the order check, then live. */
static void sync_finished(conn *c)
{
    socket_event **held = c->held;
    size_t n = c->nheld;

    c->held = NULL;
    c->nheld = 0;
    c->state = ST_LIVE;
    if (c->sync_id[0]) {
        cJSON *extra = cJSON_CreateObject();
        char *cursor = NULL;
        if (cm_cursor_encode(c->pos, c->npos, &cursor) == CM_OK)
            cJSON_AddStringToObject(extra, "cursor", cursor);
        free(cursor);
        conn_send_take(c, socket_ack_json(c->sync_id, "accepted", extra));
        c->sync_id[0] = '\0';
    }
    for (size_t i = 0; i < n; i++) {
        offer(c, held[i]);
        socket_event_release(held[i]);
    }
    free(held);
    if (c->sync_again && c->state == ST_LIVE)
        start_sync(c);
}

/* 1 while the send queue holds more than half of QUEUE_FRAMES or QUEUE_BYTES. */
static int queue_half_full(const conn *c)
{
    return c->q_frames > (size_t)c->srv->cfg.lim.queue_frames / 2 ||
           c->q_bytes > (size_t)c->srv->cfg.lim.queue_bytes / 2;
}

static void on_sync(conn *c, socket_job *j)
{
    cJSON *page = j->status == 200 && j->resp ? cJSON_Parse(j->resp) : NULL, *it;
    const char *next = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(page, "next_cursor"));
    int more = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(page, "has_more"));
    int can_cut, cut = 0;

    c->state = ST_LOADING; /* between pages; start_sync sets SYNCING again */
    if (page == NULL || next == NULL) {
        cJSON_Delete(page);
        if (j->status == 400 && c->since) {
            /* The client's cursor was refused: say so and continue from now. */
            conn_error(c, "bad-cursor", "the since cursor is not valid; continuing from now");
            free(c->since);
            c->since = NULL;
            c->fresh = 1;
        } else {
            conn_error(c, "sync-unavailable", "catching up failed; retrying");
            c->retry_at = socket_now_ms() + 1000;
            return;
        }
        start_sync(c);
        return;
    }
    /* The positions this page starts from, so that a page cut short below resumes exactly
     * after its last item sent (a fresh start has none to cut from: its page is "now"). */
    can_cut = !c->fresh && (c->since == NULL || pos_load(c, c->since) == CM_OK);
    free(c->since);
    c->since = NULL;
    c->fresh = 0;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(page, "items"))
    {
        socket_event *ev = NULL;
        if (can_cut && queue_half_full(c)) {
            /* A page larger than half the send queue (large messages) is not queued whole:
             * the rest comes from the positions reached, once the client has read. */
            cut = 1;
            break;
        }
        if (socket_event_from_sync_item(c->tid, it, &ev) != CM_OK)
            continue;
        if (strcmp(ev->type, "reset") == 0) {
            if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
                    cJSON_GetObjectItemCaseSensitive(it, "data"), "member")))
                follow(c, ev->conversation_id);
        } else {
            follow(c, ev->conversation_id);
        }
        pos_set(c, ev->key, ev->eseq);
        conn_send_event(c, ev);
        apply_membership(c, ev);
        socket_event_release(ev);
    }
    /* The server's cursor is the truth after a whole page (it also forgets left ones). */
    if (!cut && pos_load(c, next) != CM_OK)
        cm_warn("sync answered a cursor this service cannot decode");
    cJSON_Delete(page);
    if (more || cut) {
        /* Backpressure: a client still reading the last page gets the next one when its queue
         * is half empty, so a long catch-up to a slow reader is paced, not closed with 4003
         * (live events meanwhile are held, as during any catch-up). */
        if (queue_half_full(c))
            c->sync_on_drain = 1;
        else
            start_sync(c);
        return;
    }
    sync_finished(c);
}

static void on_load(conn *c, socket_job *j)
{
    if (j->status == 401) {
        /* The token passed at the upgrade and is refused now: its session was revoked in
         * between (the users-topic event may still be on its way). */
        conn_close(c, SOCKET_CLOSE_REVOKED, "session revoked");
        return;
    }
    if (j->status != 200) {
        conn_error(c, "unavailable", "the conversation list could not be loaded");
        conn_close(c, 1013, "try again later");
        return;
    }
    c->loaded = 1;
    for (size_t i = 0; i < j->nids; i++)
        follow(c, j->ids[i]);
    /* Online from the moment the conversations (who may see it) are known. */
    if (c->srv->eph) {
        c->present = 1;
        c->beat_at = socket_now_ms() + c->srv->cfg.presence_beat_ms;
        socket_ephemeral_presence(c->srv->eph, SOCKET_PRESENCE_CONNECT, c->tid,
                                  c->sub, c->id, NULL, c->convs, c->nconvs);
    }
    start_sync(c);
}

static void on_call(conn *c, socket_job *j)
{
    if (j->status >= 200 && j->status < 300) {
        cJSON *r = j->resp ? cJSON_Parse(j->resp) : NULL, *extra = cJSON_CreateObject();
        if (j->what == W_SEND) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(r, "id"),
                        *seq = cJSON_GetObjectItemCaseSensitive(r, "seq");
            if (cJSON_IsString(id))
                cJSON_AddStringToObject(extra, "message_id", id->valuestring);
            if (cJSON_IsNumber(seq))
                cJSON_AddNumberToObject(extra, "seq", seq->valuedouble);
        } else if (j->what == W_RECEIPT) {
            /* The caller's positions after the receipt (forward only, so possibly unchanged)
             * and what is left unread: a client updates its badge without another call. */
            static const char *const kept[] = {"read_seq", "delivered_seq", "unread_count",
                                               "unread_mentions"};
            for (size_t k = 0; k < sizeof(kept) / sizeof(kept[0]); k++) {
                const cJSON *v = cJSON_GetObjectItemCaseSensitive(r, kept[k]);
                if (cJSON_IsNumber(v))
                    cJSON_AddNumberToObject(extra, kept[k], v->valuedouble);
            }
        }
        cJSON_Delete(r);
        conn_send_take(c, socket_ack_json(j->frame_id, "accepted", extra));
        return;
    }
    conn_send_take(c, socket_rejected_json(j->frame_id, j->status, j->resp,
                                           j->refused ? "messaging unavailable (circuit open)"
                                           : j->status == 0 ? "messaging unavailable"
                                                            : "refused by messaging"));
}

/* The live connection with id `id`, or NULL. s->conns is in increasing id order (ids grow and
 * connections are appended; conns_remove keeps the order), so this is a binary search: a linear
 * one per finished upstream job cost O(connections) each, 20,000 jobs x 10,000 connections
 * while 10,000 clients connected. */
static conn *conns_find(const socket_srv *s, uint64_t id, size_t *at)
{
    size_t lo = 0, hi = s->nconns;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->conns[mid]->id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < s->nconns && s->conns[lo]->id == id) {
        if (at)
            *at = lo;
        return s->conns[lo];
    }
    return NULL;
}

static void conn_free(conn *c);

static void jobs_done(socket_srv *s)
{
    for (socket_job *j = socket_upstream_take_done(s->up), *next; j; j = next) {
        conn *c = conns_find(s, j->conn_id, NULL);
        next = j->next;
        if (c) {
            c->jobs--;
            if (c->gone) {
                if (c->jobs == 0)
                    conn_free(c);
            } else if (j->what == W_LOAD) {
                on_load(c, j);
            } else if (j->what == W_SYNC) {
                on_sync(c, j);
            } else {
                on_call(c, j);
            }
        }
        socket_job_free(j);
    }
}

/* --- client frames ------------------------------------------------------------------------------ */

static void reject(conn *c, const char *id, const char *code, const char *detail)
{
    if (id && id[0]) {
        char problem[512];
        cJSON *p = cJSON_CreateObject();
        char *text;
        cJSON_AddStringToObject(p, "type", "urn:chat:problem:validation");
        cJSON_AddStringToObject(p, "title", code);
        cJSON_AddNumberToObject(p, "status", 400);
        cJSON_AddStringToObject(p, "detail", detail);
        text = cm_json_print(p);
        cJSON_Delete(p);
        snprintf(problem, sizeof(problem), "%s", text ? text : "{}");
        free(text);
        conn_send_take(c, socket_rejected_json(id, 400, problem, code));
    } else {
        conn_error(c, code, detail);
    }
}

static void receipt(conn *c, const socket_frame_in *f, const char *what)
{
    char path[160], body[64];

    snprintf(path, sizeof(path), "/v1/conversations/%s/%s", f->conversation_id, what);
    snprintf(body, sizeof(body), "{\"seq\":%lld}", (long long)f->seq);
    socket_job *j = socket_job_new(SOCKET_JOB_CALL, W_RECEIPT, c->id, "POST", path, body, c->token);
    if (j)
        snprintf(j->frame_id, sizeof(j->frame_id), "%s", f->id ? f->id : "");
    submit(c, j);
}

/* typing.start / typing.stop: published to every instance (Redis pub/sub), each relaying it
 * to its own connections of the conversation's members (route_typing). */
static void typing(conn *c, const socket_frame_in *f)
{
    if (!conn_follows(c, f->conversation_id)) {
        reject(c, f->id, "not-found", "no such conversation");
        return;
    }
    if (c->srv->eph)
        socket_ephemeral_typing(c->srv->eph, c->tid, f->conversation_id, c->sub,
                                f->cmd == SOCKET_CMD_TYPING_START);
    if (f->id)
        conn_send_take(c, socket_ack_json(f->id, "accepted", NULL));
}

/* presence.set: the status the user chose (online, away, invisible), kept in Redis; the members
 * of the user's conversations are told when what they see changes. */
static void presence_set(conn *c, const socket_frame_in *f)
{
    if (c->srv->eph)
        socket_ephemeral_presence(c->srv->eph, SOCKET_PRESENCE_SET, c->tid, c->sub,
                                  c->id, f->status, c->convs, c->nconvs);
    if (f->id)
        conn_send_take(c, socket_ack_json(f->id, "accepted", NULL));
}

static void on_frame(conn *c, const char *text, size_t len)
{
    socket_frame_in f;
    char code[32], detail[256], id[SOCKET_FRAME_ID_MAX + 1];
    int64_t now = socket_now_ms();

    atomic_fetch_add(&c->srv->m_frames_in, 1);
    if (now - c->rate_window >= 1000) {
        c->rate_window = now;
        c->rate_count = 0;
    }
    if (++c->rate_count > c->srv->cfg.lim.rate_per_s) {
        if (c->rate_count > 4 * c->srv->cfg.lim.rate_per_s) {
            conn_close(c, SOCKET_CLOSE_POLICY, "rate cap exceeded");
            return;
        }
        if (socket_frame_parse(text, len, &f, code, sizeof(code), detail, sizeof(detail), id) ==
            CM_OK)
            socket_frame_in_cleanup(&f);
        if (id[0])
            conn_send_take(c, socket_rejected_json(id, 429, NULL, "rate-limited"));
        else
            conn_error(c, "rate-limited", "too many frames per second");
        return;
    }
    if (socket_frame_parse(text, len, &f, code, sizeof(code), detail, sizeof(detail), id) !=
        CM_OK) {
        reject(c, id, code, detail);
        return;
    }
    /* Every frame with an id is acknowledged at once; calls upstream are acked again after. */
    if (f.id && f.cmd != SOCKET_CMD_PING && f.cmd != SOCKET_CMD_TYPING_START &&
        f.cmd != SOCKET_CMD_TYPING_STOP && f.cmd != SOCKET_CMD_PRESENCE)
        conn_send_take(c, socket_ack_json(f.id, "pending", NULL));
    switch (f.cmd) {
    case SOCKET_CMD_SEND: {
        char path[160], *body = socket_send_body(&f);
        socket_job *j;
        snprintf(path, sizeof(path), "/v1/conversations/%s/messages", f.conversation_id);
        j = body ? socket_job_new(SOCKET_JOB_CALL, W_SEND, c->id, "POST", path, body, c->token)
                 : NULL;
        free(body);
        if (j)
            snprintf(j->frame_id, sizeof(j->frame_id), "%s", f.id ? f.id : "");
        submit(c, j);
        break;
    }
    case SOCKET_CMD_READ:
        receipt(c, &f, "read");
        break;
    case SOCKET_CMD_RECEIVED:
        receipt(c, &f, "delivered");
        break;
    case SOCKET_CMD_TYPING_START:
    case SOCKET_CMD_TYPING_STOP:
        typing(c, &f);
        break;
    case SOCKET_CMD_PRESENCE:
        presence_set(c, &f);
        break;
    case SOCKET_CMD_SYNC:
        if (f.since && f.since[0]) {
            free(c->since);
            c->since = strdup(f.since);
            c->fresh = 0;
        }
        if (f.id)
            snprintf(c->sync_id, sizeof(c->sync_id), "%s", f.id);
        /* Before the conversation list is in, the first catch-up (on_load) serves it. */
        if (c->loaded)
            start_sync(c);
        break;
    case SOCKET_CMD_PING: {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "pong");
        if (f.id)
            cJSON_AddStringToObject(o, "id", f.id);
        conn_send_take(c, cm_json_print(o));
        cJSON_Delete(o);
        if (f.id)
            conn_send_take(c, socket_ack_json(f.id, "accepted", NULL));
        break;
    }
    }
    socket_frame_in_cleanup(&f);
}

/* --- connections ---------------------------------------------------------------------------------- */

/* Copies the value of query argument `name` ("name=") into `out` (size n). 0 when absent or
 * empty. lws copies "name=value" into the buffer and returns where the value starts. */
static int query_arg(struct lws *wsi, const char *name, char *out, size_t n)
{
    const char *v = lws_get_urlarg_by_name(wsi, name, out, (int)n);

    if (v == NULL || *v == '\0')
        return 0;
    memmove(out, v, strlen(v) + 1);
    return 1;
}

/* Reads the access token of the upgrade request into `out` (Authorization: Bearer, or the
 * access_token query parameter). 0 when there is none. */
static int upgrade_token(struct lws *wsi, char *out, int n)
{
    char hdr[TOKEN_MAX + 16];

    if (lws_hdr_copy(wsi, hdr, sizeof(hdr), WSI_TOKEN_HTTP_AUTHORIZATION) > 7 &&
        strncasecmp(hdr, "Bearer ", 7) == 0) {
        size_t len = strlen(hdr + 7);
        if (len >= (size_t)n)
            return 0; /* longer than any token we issue: refused, never cut short */
        memcpy(out, hdr + 7, len + 1);
        return 1;
    }
    return query_arg(wsi, "access_token=", out, (size_t)n);
}

/* Verifies the upgrade's token and session: CM_OK with the claims, CM_EUNAUTH with a reason,
 * CM_EIO when the denylist cannot be consulted. */
static cm_err authenticate(socket_srv *s, struct lws *wsi, char *token, cm_jwt_claims *claims,
                           char *detail, size_t n)
{
    cm_err rc;

    if (!upgrade_token(wsi, token, TOKEN_MAX)) {
        snprintf(detail, n, "missing access token (Authorization: Bearer or ?access_token=)");
        return CM_EUNAUTH;
    }
    if ((rc = cm_jwt_verify(s->cfg.verifier, token, time(NULL), claims, detail, n)) != CM_OK)
        return rc;
    return cm_session_check_claims(s->cfg.redis, claims, detail, n);
}

static void conns_remove(socket_srv *s, conn *c)
{
    size_t i;

    if (conns_find(s, c->id, &i) == c) {
        memmove(s->conns + i, s->conns + i + 1, (s->nconns - i - 1) * sizeof(conn *));
        s->nconns--;
    }
}

static void conn_free(conn *c)
{
    conns_remove(c->srv, c);
    for (outframe *f = c->q_head, *next; f; f = next) {
        next = f->next;
        outframe_free(c->srv, f);
    }
    for (size_t i = 0; i < c->nheld; i++)
        socket_event_release(c->held[i]);
    free(c->held);
    free(c->pres);
    free(c->convs);
    free(c->pos);
    free(c->since);
    free(c->token);
    free(c->user_key);
    free(c->rx);
    free(c);
}

/* Keeps what the connection needs of `claims` in one allocation (conn.user_key). CM_ENOMEM. */
static cm_err conn_identify(conn *c, const cm_jwt_claims *claims)
{
    size_t lt = strlen(claims->tid), lu = strlen(claims->sub), ls = strlen(claims->sid);
    char *b = malloc(2 * (lt + lu) + ls + 5);

    if (b == NULL)
        return CM_ENOMEM;
    c->user_key = b;
    memcpy(b, claims->tid, lt);
    b[lt] = '/';
    memcpy(b + lt + 1, claims->sub, lu + 1);
    c->tid = b + lt + lu + 2;
    memcpy(c->tid, claims->tid, lt + 1);
    c->sub = c->tid + lt + 1;
    memcpy(c->sub, claims->sub, lu + 1);
    c->sid = c->sub + lu + 1;
    memcpy(c->sid, claims->sid, ls + 1);
    c->exp = claims->exp;
    return CM_OK;
}

static conn *conn_open(socket_srv *s, struct lws *wsi)
{
    char token[TOKEN_MAX + 1], detail[256], since[SINCE_MAX];
    cm_jwt_claims claims;
    conn *c = calloc(1, sizeof(*c));
    conn **grown;

    if (c == NULL)
        return NULL;
    c->wsi = wsi;
    c->srv = s;
    c->id = ++s->next_id;
    c->fresh = 1;
    /* The upgrade was authenticated in LWS_CALLBACK_HTTP_CONFIRM_UPGRADE; the claims are read
     * again here because lws gives the WebSocket its own session data. */
    if (authenticate(s, wsi, token, &claims, detail, sizeof(detail)) != CM_OK ||
        (c->token = strdup(token)) == NULL || conn_identify(c, &claims) != CM_OK)
        goto fail;
    if (query_arg(wsi, "since=", since, sizeof(since))) {
        if ((c->since = strdup(since)) == NULL)
            goto fail;
        c->fresh = 0;
    }
    if (s->nconns == s->cap_conns) {
        size_t cap = s->cap_conns ? s->cap_conns * 2 : 64;
        if ((grown = realloc(s->conns, cap * sizeof(conn *))) == NULL)
            goto fail;
        s->conns = grown;
        s->cap_conns = cap;
    }
    if (socket_index_add(s->by_user, c->user_key, c) != CM_OK)
        goto fail;
    s->conns[s->nconns++] = c;
    atomic_fetch_add(&s->m_conns, 1);
    atomic_fetch_add(&s->m_opened, 1);
    return c;
fail:
    free(c->user_key);
    free(c->token);
    free(c->since);
    free(c);
    return NULL;
}

static void conn_closed(conn *c)
{
    socket_srv *s = c->srv;

    if (c->present && s->eph)
        socket_ephemeral_presence(s->eph, SOCKET_PRESENCE_DISCONNECT, c->tid,
                                  c->sub, c->id, NULL, c->convs, c->nconvs);
    c->present = 0;
    while (c->nconvs)
        unfollow(c, c->convs[c->nconvs - 1]);
    socket_index_remove(s->by_user, c->user_key, c);
    atomic_fetch_sub(&s->m_conns, 1);
    count_close(s, c->close_code ? c->close_code : 1000);
    c->gone = 1;
    c->wsi = NULL;
    if (c->jobs == 0)
        conn_free(c);
}

/* Answers the upgrade request with an RFC 9457 problem and no upgrade. The response is written
 * whole: lws would label headers it builds before the upgrade decision HTTP/1.0. */
static int refuse(struct lws *wsi, unsigned int status, const char *detail)
{
    unsigned char buf[LWS_PRE + 1024], *out = buf + LWS_PRE;
    char body[512];
    const char *slug = status == 401   ? "unauthorized"
                       : status == 403 ? "forbidden"
                       : status == 429 ? "rate-limited"
                       : status == 404 ? "not-found"
                       : status == 426 ? "upgrade-required"
                                       : "unavailable";
    const char *title = status == 401   ? "Unauthorized"
                        : status == 403 ? "Forbidden"
                        : status == 429 ? "Too Many Requests"
                        : status == 404 ? "Not Found"
                        : status == 426 ? "Upgrade Required"
                                        : "Service Unavailable";
    int nb = snprintf(body, sizeof(body),
                      "{\"type\":\"urn:chat:problem:%s\",\"title\":\"%s\",\"status\":%u,"
                      "\"detail\":\"%s\"}",
                      slug, title, status, detail);
    int n;

    if (nb < 0 || nb >= (int)sizeof(body))
        return -1;
    n = snprintf((char *)out, sizeof(buf) - LWS_PRE,
                 "HTTP/1.1 %u %s\r\nContent-Type: application/problem+json\r\n"
                 "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                 status, title, nb, body);
    if (n < 0 || n >= (int)(sizeof(buf) - LWS_PRE))
        return -1;
    if (lws_write(wsi, out, (size_t)n, LWS_WRITE_HTTP_FINAL) != n)
        return -1;
    return -1; /* written whole: hang up */
}

/* Whether `origin` is in the tenant's ws_allowed_origins (an empty or unknown list allows any).
 * The settings are cached (TENANT_SETTINGS_TTL_MS); a miss asks the user service from the
 * event loop, bounded by a short timeout, once per tenant and TTL. */
static int tenant_origin_allowed(socket_srv *s, const char *tenant, const char *origin)
{
    char list[4096];
    size_t n = 0;
    cJSON *settings = NULL, *o;
    int ok = 1;

    if (s->cfg.tenants == NULL || cm_tenant_settings_get(s->cfg.tenants, tenant, &settings) != CM_OK)
        return 1; /* unknown: the platform's WS_ALLOWED_ORIGINS alone decides */
    list[0] = '\0';
    cJSON_ArrayForEach(o, cJSON_GetObjectItemCaseSensitive(settings, "ws_allowed_origins"))
    {
        int w;
        if (!cJSON_IsString(o))
            continue;
        w = snprintf(list + n, sizeof(list) - n, "%s%s", n ? "," : "", o->valuestring);
        if (w < 0 || (size_t)w >= sizeof(list) - n)
            break;
        n += (size_t)w;
    }
    if (n > 0)
        ok = socket_origin_allowed(list, origin);
    cJSON_Delete(settings);
    return ok;
}

/* Escapes nothing but quotes and backslashes would need it: reasons are ours or the JWT
 * module's, which contain neither. */
static int confirm_upgrade(socket_srv *s, struct lws *wsi)
{
    char token[TOKEN_MAX + 1], detail[256], uri[64], key[2 * CM_JWT_ID_MAX + 2], origin[512];
    cm_jwt_claims claims;
    const socket_set *set;
    int64_t live = 0;
    cm_err rc;

    if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) <= 0 || strcmp(uri, "/v1/ws") != 0)
        return refuse(wsi, 404, "the WebSocket endpoint is /v1/ws");
    if (atomic_load(&s->stopping))
        return refuse(wsi, 503, "shutting down");
    /* A browser page of another site must not ride on a user's token (cross-site WebSocket
     * hijacking): its Origin must be allowed. Clients that send no Origin are not browsers. */
    if (lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) > 0 &&
        lws_hdr_copy(wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN) < 0)
        origin[0] = '\0'; /* too long to be one we allow */
    if (!socket_origin_allowed(s->cfg.allowed_origins,
                               lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) > 0 ? origin : NULL))
        return refuse(wsi, 403, "this Origin is not allowed (WS_ALLOWED_ORIGINS)");
    if ((rc = authenticate(s, wsi, token, &claims, detail, sizeof(detail))) != CM_OK) {
        for (char *q = detail; *q; q++)
            if (*q == '"' || *q == '\\')
                *q = '\'';
        return refuse(wsi, rc == CM_EUNAUTH ? 401 : 503, detail);
    }
    /* The tenant's own allowlist too (its ws_allowed_origins setting; empty: any). */
    if (lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) > 0 && !tenant_origin_allowed(s, claims.tid, origin))
        return refuse(wsi, 403, "this Origin is not allowed by the tenant (ws_allowed_origins)");
    snprintf(key, sizeof(key), "%s/%s", claims.tid, claims.sub);
    if ((set = socket_index_get(s->by_user, key)) && set->n >= (size_t)s->cfg.lim.per_user)
        return refuse(wsi, 429, "too many connections for this user");
    /* Across instances: the user's live connections in Redis (those of the presence TTLs). A
     * Redis outage already refused the upgrade above (the session check fails closed). */
    if (s->eph && socket_ephemeral_connections(s->eph, claims.tid, claims.sub, &live) == CM_OK &&
        live >= s->cfg.lim.per_user)
        return refuse(wsi, 429, "too many connections for this user");
    return 0;
}

/* Counts one frame of consumed event `ev` written at `now` (socket_wall_us). With
 * LOG_LEVEL=debug, the first frame of an event that took over 50 ms from its record's
 * timestamp is logged with its stages (ms), to tell a stall of one stage from a slow broker. */
static void stage_written(socket_srv *s, socket_event *ev, int64_t now)
{
    stage_record(&s->stages[STAGE_WRITE], now - ev->t_drained);
    if (ev->t_produced == 0)
        return;
    stage_record(&s->stages[STAGE_TOTAL], now - ev->t_produced);
    if (now - ev->t_produced > 50000 && !ev->t_logged && cm_log_enabled(CM_LOG_DEBUG)) {
        ev->t_logged = 1; /* its first slow frame only */
        cm_debug("slow delivery: %.1f ms: kafka %.1f, consumer %.1f, inbox %.1f, write %.1f "
                 "(%s eseq %lld)",
                 (double)(now - ev->t_produced) / 1e3,
                 (double)(ev->t_consumed - ev->t_produced) / 1e3,
                 (double)(ev->t_posted - ev->t_consumed) / 1e3,
                 (double)(ev->t_drained - ev->t_posted) / 1e3, (double)(now - ev->t_drained) / 1e3,
                 ev->conversation_id, (long long)ev->eseq);
    }
}

/* Writes the RFC 6455 section 5.2 header of an unmasked, final text frame of `len` payload
 * bytes into `out` (room for 10); returns its length. */
static size_t frame_header(unsigned char *out, size_t len)
{
    out[0] = 0x81; /* FIN, text */
    if (len < 126) {
        out[1] = (unsigned char)len;
        return 2;
    }
    if (len < 65536) {
        out[1] = 126;
        out[2] = (unsigned char)(len >> 8);
        out[3] = (unsigned char)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (unsigned char)((uint64_t)len >> (8 * (7 - i)));
    return 10;
}

/* Gathers queued frames (at least one, then up to WRITE_BATCH bytes) into the loop's write
 * buffer, framed, and hands them to lws in one write: lws 4.1 has no cork or writev, and one
 * send() per small frame is what capped fan-out (DESIGN.md, performance notes). lws keeps
 * what the socket does not take and sends it before anything else (its own pings, pongs and
 * the close frame included), so frames stay whole and in order. 0, or -1 to hang up. */
static int write_batch(conn *c)
{
    socket_srv *s = c->srv;
    size_t o = LWS_PRE, nframes = 0;
    int64_t now = 0;

    while (c->q_head) {
        outframe *f = c->q_head;
        size_t len, need;
        if (f->next)
            __builtin_prefetch(f->next); /* queued during the drain, often out of the cache */
        len = frame_len(f);
        need = o + 10 + len;
        if (nframes > 0 && need - LWS_PRE > WRITE_BATCH)
            break;
        if (need > s->wcap) {
            unsigned char *grown = realloc(s->wbuf, need);
            if (grown == NULL)
                break; /* what is gathered goes now; nothing at all is a hang-up below */
            s->wbuf = grown;
            s->wcap = need;
        }
        o += frame_header(s->wbuf + o, len);
        if (f->ev) {
            memcpy(s->wbuf + o, f->ev->frame, f->ev->frame_len);
            o += f->ev->frame_len;
            if (f->ev->t_drained) {
                if (now == 0)
                    now = socket_wall_us();
                stage_written(s, f->ev, now);
            }
        }
        memcpy(s->wbuf + o, f->own, f->len);
        o += f->len;
        c->q_head = f->next;
        if (c->q_head == NULL)
            c->q_tail = NULL;
        c->q_frames--;
        c->q_bytes -= len;
        outframe_free(s, f);
        nframes++;
    }
    if (nframes == 0)
        return -1;
    /* LWS_WRITE_RAW: the bytes are already frames (lws's framing would make them one). */
    if (lws_write(c->wsi, s->wbuf + LWS_PRE, o - LWS_PRE, LWS_WRITE_RAW) < (int)(o - LWS_PRE))
        return -1;
    atomic_fetch_add(&s->m_frames_out, (long)nframes);
    return 0;
}

/* Sends our close frame and waits, reading and dropping, for the peer's close (RFC 6455
 * 7.1.1: the server closes the TCP connection once the close handshake is done), at most
 * CLOSE_LINGER_S. Hanging up at once (lws's default) would leave the frames the
 * client sent meanwhile unread: the kernel then answers with a reset, which can destroy the
 * close frame before the client reads it (the client sees 1006, not our code). */
static int send_close(conn *c)
{
    unsigned char buf[LWS_PRE + 2 + 125], *p = buf + LWS_PRE;
    size_t n = strlen(c->close_reason);

    if (n > 123) /* a control frame's payload is at most 125 bytes (RFC 6455 5.5) */
        n = 123;
    /* lws 4.1 does not export a close opcode for lws_write: framed here, written raw, as the
     * text frames of write_batch are. */
    p[0] = 0x88; /* FIN, close */
    p[1] = (unsigned char)(n + 2);
    p[2] = (unsigned char)(c->close_code >> 8);
    p[3] = (unsigned char)(c->close_code & 0xff);
    memcpy(p + 4, c->close_reason, n);
    if (lws_write(c->wsi, p, n + 4, LWS_WRITE_RAW) < (int)(n + 4))
        return -1;
    c->close_sent = 1;
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_ACK, CLOSE_LINGER_S);
    return 0;
}

static int on_writeable(conn *c)
{
    if (c->close_sent)
        return 0; /* nothing goes after the close frame */

    while (c->q_head) {
        if (write_batch(c) != 0)
            return -1;
        if (c->sync_on_drain && !queue_half_full(c) && !c->close_code) {
            c->sync_on_drain = 0;
            start_sync(c); /* the catch-up's next page (on_sync) */
        }
        if (c->q_head && lws_send_pipe_choked(c->wsi)) {
            lws_callback_on_writable(c->wsi);
            return 0;
        }
    }
    if (c->sync_on_drain && !queue_half_full(c) && !c->close_code) {
        c->sync_on_drain = 0; /* the queue was written elsewhere (flush_dirty) */
        start_sync(c);
    }
    if (c->close_code) {
        if (lws_send_pipe_choked(c->wsi)) {
            /* lws still holds the end of the last frame: the close frame goes after it, or
             * the client would see the connection end without its close code. */
            lws_callback_on_writable(c->wsi);
            return 0;
        }
        if (c->close_reason == NULL) { /* the peer's close: lws answers it and hangs up */
            lws_close_reason(c->wsi, (enum lws_close_status)c->close_code, (unsigned char *)"", 0);
            return -1;
        }
        return send_close(c);
    }
    return 0;
}

static int on_receive(conn *c, const char *in, size_t len)
{
    struct lws *wsi = c->wsi;
    size_t max = (size_t)c->srv->cfg.lim.frame_max;
    char *grown;

    if (c->close_code)
        return 0; /* closing: what the peer sends until its close frame is dropped */
    if (lws_frame_is_binary(wsi)) {
        conn_close(c, SOCKET_CLOSE_UNSUPPORTED, "binary frames are not supported: send JSON text");
        return 0;
    }
    if (c->rx_discard || c->rx_len + len + lws_remaining_packet_payload(wsi) > max) {
        /* Over the cap: the rest of the message is read and dropped, then the connection is
         * closed with 1009 (hanging up with the rest unread would make the kernel answer
         * with a reset, which can overtake the close frame). A message more than 16 times the
         * cap is not worth reading: hang up now. */
        static const char r[] = "message over the size cap";
        c->rx_len = 0;
        if (!c->rx_discard && lws_remaining_packet_payload(wsi) > 16 * max) {
            lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, (unsigned char *)r,
                             sizeof(r) - 1);
            c->close_code = SOCKET_CLOSE_TOO_BIG;
            return -1;
        }
        c->rx_discard = 1;
        if (lws_is_final_fragment(wsi)) {
            c->rx_discard = 0;
            conn_close(c, SOCKET_CLOSE_TOO_BIG, r);
        }
        return 0;
    }
    if (lws_is_first_fragment(wsi) && lws_is_final_fragment(wsi) && c->rx_len == 0) {
        on_frame(c, in, len);
        return 0;
    }
    if ((grown = realloc(c->rx, c->rx_len + len + 1)) == NULL)
        return -1;
    c->rx = grown;
    memcpy(c->rx + c->rx_len, in, len);
    c->rx_len += len;
    if (lws_is_final_fragment(wsi)) {
        on_frame(c, c->rx, c->rx_len);
        c->rx_len = 0;
    }
    return 0;
}

/* Closes connections whose token expired, retries failed catch-ups, refreshes presence, sends
 * presence batches, ends typing that was not refreshed. */
static void on_tick(lws_sorted_usec_list_t *sul)
{
    socket_srv *s = lws_container_of(sul, socket_srv, tick);
    time_t now = time(NULL);
    int64_t ms = socket_now_ms();
    int flush = ms >= s->pres_flush_at;

    if (flush)
        s->pres_flush_at = ms + s->cfg.presence_batch_ms;
    typing_expire(s, ms);
    for (size_t i = 0; i < s->nconns; i++) {
        conn *c = s->conns[i];
        if (c->gone)
            continue;
        if (flush)
            presence_flush(c);
        if (c->present && ms >= c->beat_at) {
            c->beat_at = ms + s->cfg.presence_beat_ms;
            socket_ephemeral_presence(s->eph, SOCKET_PRESENCE_BEAT, c->tid, c->sub,
                                      c->id, NULL, c->convs, c->nconvs);
        }
        if (c->exp && now >= c->exp)
            conn_close(c, SOCKET_CLOSE_TOKEN_EXPIRED, "access token expired");
        else if (c->retry_at && ms >= c->retry_at) {
            c->retry_at = 0;
            start_sync(c);
        }
    }
    if (!s->done) /* the loop's last turns run after the drain, while lws is destroyed */
        lws_sul_schedule(s->lws, 0, &s->tick, on_tick, 250 * LWS_US_PER_MS);
}

/* Writes the queued frames of the connections listed during an inbox drain, directly, as
 * uWebSockets does at the end of its loop iteration: a socket with room takes them now (one
 * send of up to WRITE_BATCH bytes each), and lws is asked for a writable callback only where
 * something is left. Asking for one per connection and event made lws's libuv loop add and
 * remove each socket's EPOLLOUT (two epoll_ctl calls per connection per drain). lws keeps what
 * a socket does not take (lws_partial_buffered) and sends it before anything written later,
 * so frames stay whole and in order; a connection with such a remainder waits for its
 * writable callback (on_writeable) instead of growing lws's buffer. */
static void flush_dirty(socket_srv *s)
{
    for (size_t i = 0; i < s->ndirty; i++) {
        conn *c = s->dirty[i];
        /* The next connections' state and first queued frame, a step ahead (cache misses
         * were most of write_batch's own time in perf). */
        if (i + 2 < s->ndirty)
            __builtin_prefetch(s->dirty[i + 2]);
        if (i + 1 < s->ndirty && s->dirty[i + 1]->q_head)
            __builtin_prefetch(s->dirty[i + 1]->q_head);
        c->dirty = 0;
        if (c->gone || c->close_sent || c->q_head == NULL)
            continue;
        if (!lws_partial_buffered(c->wsi) && write_batch(c) != 0) {
            lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
            continue;
        }
        if (c->sync_on_drain && !queue_half_full(c) && !c->close_code) {
            c->sync_on_drain = 0;
            start_sync(c); /* the catch-up's next page (on_sync), as on_writeable would */
        }
        if (c->q_head || c->close_code)
            lws_callback_on_writable(c->wsi);
    }
    s->ndirty = 0;
}

static void drain_inbox(socket_srv *s)
{
    socket_event *ev;
    int64_t now = 0;

    pthread_mutex_lock(&s->mu);
    ev = s->in_head;
    s->in_head = s->in_tail = NULL;
    s->in_len = 0;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    s->deferring = 1;
    if (ev)
        now = socket_wall_us();
    while (ev) {
        socket_event *next = ev->next;
        if (ev->t_posted) {
            ev->t_drained = now;
            if (ev->t_produced)
                stage_record(&s->stages[STAGE_KAFKA], ev->t_consumed - ev->t_produced);
            stage_record(&s->stages[STAGE_CONSUMER], ev->t_posted - ev->t_consumed);
            stage_record(&s->stages[STAGE_INBOX], now - ev->t_posted);
        }
        route(s, ev);
        socket_event_release(ev);
        ev = next;
    }
    s->deferring = 0;
    flush_dirty(s);
}

static void on_cancelled(socket_srv *s)
{
    drain_inbox(s);
    jobs_done(s);
    if (atomic_load(&s->stopping)) {
        int64_t now = socket_now_ms();
        if (s->drain_until == 0) {
            s->drain_until = now + s->drain_ms;
            for (size_t i = 0; i < s->nconns; i++)
                conn_close(s->conns[i], SOCKET_CLOSE_GOING_AWAY,
                           "going away: reconnect with since=<cursor>");
        }
        if (atomic_load(&s->m_conns) == 0 || now >= s->drain_until) {
            s->done = 1;
        } else
            lws_cancel_service(s->lws); /* come back until drained */
    }
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    struct lws_context *ctx = lws_get_context(wsi);
    socket_srv *s = ctx ? lws_context_user(ctx) : NULL;
    pss *p = user;

    switch (reason) {
    case LWS_CALLBACK_PROTOCOL_INIT:
        if (s) {
            lws_sul_schedule(ctx, 0, &s->tick, on_tick, 250 * LWS_US_PER_MS);
            atomic_store(&s->serving, 1);
        }
        return 0;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        if (s)
            on_cancelled(s);
        return 0;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return confirm_upgrade(s, wsi);
    case LWS_CALLBACK_HTTP:
        return refuse(wsi, 426, "the WebSocket endpoint is /v1/ws (Upgrade: websocket)");
    case LWS_CALLBACK_ESTABLISHED:
        if ((p->c = conn_open(s, wsi)) == NULL)
            return -1;
        if (s->cfg.lim.sndbuf > 0) {
            /* Bounds the kernel's share of a stalled reader's backlog (the queue's is QUEUE_*). */
            int v = (int)s->cfg.lim.sndbuf;
            if (setsockopt(lws_get_socket_fd(wsi), SOL_SOCKET, SO_SNDBUF, &v, sizeof(v)) != 0)
                cm_warn("SO_SNDBUF %d refused: %s", v, strerror(errno));
        }
        submit(p->c, socket_job_new(SOCKET_JOB_LOAD, W_LOAD, p->c->id, "GET", "", NULL,
                                    p->c->token));
        return 0;
    case LWS_CALLBACK_RECEIVE:
        return p->c ? on_receive(p->c, in, len) : -1;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return p->c ? on_writeable(p->c) : 0;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (p->c && p->c->close_sent)
            return -1; /* the answer to our close: the handshake is done, hang up */
        if (p->c && !p->c->close_code)
            p->c->close_code = 1000;
        return 0;
    case LWS_CALLBACK_CLOSED:
        if (p->c)
            conn_closed(p->c);
        p->c = NULL;
        return 0;
    default:
        return 0;
    }
}

/* --- the server ------------------------------------------------------------------------------------ */

/* Wakes the loop (any thread): LWS_CALLBACK_EVENT_WAIT_CANCELLED then drains the queues. */
static void wake(void *ud)
{
    socket_srv *s = ud;

    if (s->lws)
        lws_cancel_service(s->lws);
}

cm_err socket_srv_create(const socket_srv_config *cfg, socket_srv **out)
{
    static const lws_retry_bo_t retry_zero = {0};
    struct lws_context_creation_info info;
    socket_srv *s = calloc(1, sizeof(*s));
    lws_retry_bo_t *retry;

    if (s == NULL)
        return CM_ENOMEM;
    s->cfg = *cfg;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->stages = calloc(NSTAGES, sizeof(*s->stages));
    if (s->stages == NULL) {
        free(s);
        return CM_ENOMEM;
    }
    s->by_conv = socket_index_create();
    s->by_user = socket_index_create();
    if (s->by_conv == NULL || s->by_user == NULL ||
        socket_upstream_create(cfg->messaging_url, cfg->upstream_threads,
                               cfg->upstream_timeout_ms, cfg->breaker_threshold,
                               cfg->breaker_open_ms, wake, s,
                               &s->up) != CM_OK)
        goto fail;
    /* The idle policy: ping after ping_s without traffic, hang up after idle_s. */
    static lws_retry_bo_t retry_store;
    retry_store = retry_zero;
    retry = &retry_store;
    retry->secs_since_valid_ping = (uint16_t)cfg->lim.ping_s;
    retry->secs_since_valid_hangup = (uint16_t)cfg->lim.idle_s;
    static struct lws_protocols protocols[2];
    /* tx_packet_size: left at 0, lws would cap each write at RX_BUFFER bytes. */
    protocols[0] = (struct lws_protocols){"chat", callback, sizeof(pss), RX_BUFFER, 0, NULL,
                                          WRITE_BATCH + 16};
    memset(&info, 0, sizeof(info));
    info.port = cfg->port;
    info.iface = cfg->host;
    info.protocols = protocols;
    info.user = s;
    info.retry_and_idle_policy = retry;
    info.max_http_header_data = (unsigned short)(SINCE_MAX + TOKEN_MAX > 65535 ? 65535 : SINCE_MAX + TOKEN_MAX);
    /* libuv (epoll) through Debian's event-lib plugin, on a loop of ours: lws joins it
     * (foreign_loops) and socket_srv_run runs it one turn at a time, so the drain can end it
     * (lws_service with the plugin runs the loop until it has no handles: it never returned).
     * lws's own poll loop polled every connection's descriptor on each turn: at 500
     * connections that was about a quarter of the fan-out's CPU. */
    if (uv_loop_init(&s->loop) != 0)
        goto fail;
    s->loop_ready = 1;
    s->loops[0] = &s->loop;
    info.foreign_loops = s->loops;
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8 | LWS_SERVER_OPTION_DISABLE_IPV6 |
                   LWS_SERVER_OPTION_LIBUV;
    info.fd_limit_per_thread = 0;
    lws_set_log_level(LLL_ERR | LLL_WARN, NULL);
    if ((s->lws = lws_create_context(&info)) == NULL) {
        cm_error("cannot listen on %s:%d for WebSockets", cfg->host, cfg->port);
        goto fail;
    }
    *out = s;
    return CM_OK;
fail:
    socket_srv_destroy(s);
    return CM_EIO;
}

void socket_srv_attach_ephemeral(socket_srv *s, socket_ephemeral *eph)
{
    s->eph = eph;
}

void socket_srv_run(socket_srv *s)
{
    while (!s->done)
        uv_run(&s->loop, UV_RUN_ONCE);
}

void socket_srv_stop(socket_srv *s, long drain_ms)
{
    s->drain_ms = drain_ms;
    atomic_store(&s->stopping, 1);
    lws_cancel_service(s->lws);
}

int socket_srv_serving(socket_srv *s)
{
    return atomic_load(&s->serving);
}

void socket_srv_post(socket_srv *s, socket_event *ev)
{
    ev->next = NULL;
    socket_srv_post_chain(s, ev, 1);
}

void socket_srv_post_chain(socket_srv *s, socket_event *head, size_t n)
{
    socket_event *tail = head;
    int64_t now = socket_wall_us();
    int wake;

    for (;; tail = tail->next) {
        if (tail->t_consumed)
            tail->t_posted = now;
        if (tail->next == NULL)
            break;
    }
    pthread_mutex_lock(&s->mu);
    while (s->in_len >= INBOX_MAX && !atomic_load(&s->stopping))
        pthread_cond_wait(&s->cv, &s->mu);
    if (s->in_tail)
        s->in_tail->next = head;
    else
        s->in_head = head;
    s->in_tail = tail;
    /* Only the first events of a batch wake the loop (a pipe write each): the loop takes the
     * whole inbox at once (drain_inbox), so later ones ride along until it empties it. */
    wake = s->in_len == 0;
    s->in_len += n;
    pthread_mutex_unlock(&s->mu);
    if (wake)
        lws_cancel_service(s->lws);
}

static void close_handle(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void socket_srv_destroy(socket_srv *s)
{
    if (s == NULL)
        return;
    /* Workers first (they wake the loop), then lws (LWS_CALLBACK_CLOSED for what is left). */
    socket_upstream_destroy(s->up);
    s->up = NULL;
    if (s->lws) {
        if (atomic_load(&s->serving))
            lws_sul_schedule(s->lws, 0, &s->tick, NULL, LWS_SET_TIMER_USEC_CANCEL);
        lws_context_destroy(s->lws);
    }
    s->lws = NULL;
    if (s->loop_ready) {
        /* lws closes its handles on the loop: run it until they are closed. */
        uv_run(&s->loop, UV_RUN_DEFAULT);
        uv_walk(&s->loop, close_handle, NULL);
        uv_run(&s->loop, UV_RUN_DEFAULT);
        uv_loop_close(&s->loop);
    }
    while (s->nconns)
        conn_free(s->conns[s->nconns - 1]);
    free(s->conns);
    for (socket_event *ev = s->in_head, *next; ev; ev = next) {
        next = ev->next;
        socket_event_release(ev);
    }
    socket_index_destroy(s->by_conv);
    socket_index_destroy(s->by_user);
    free(s->typing);
    free(s->wbuf);
    free(s->dirty);
    for (outframe *f = s->pool, *next; f; f = next) {
        next = f->next;
        free(f);
    }
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->stages);
    free(s);
}

void socket_srv_metrics(void *ud, void (*emit)(void *ctx, const char *text), void *ctx)
{
    socket_srv *s = ud;
    char line[512];
    long calls = 0, failures = 0;
    int open = 0;

    if (s->up)
        socket_upstream_stats(s->up, &calls, &failures, &open);
    snprintf(line, sizeof(line),
             "# TYPE socket_connections gauge\nsocket_connections %ld\n"
             "# TYPE socket_connections_opened_total counter\n"
             "socket_connections_opened_total %ld\n",
             atomic_load(&s->m_conns), atomic_load(&s->m_opened));
    emit(ctx, line);
    snprintf(line, sizeof(line),
             "# TYPE socket_frames_received_total counter\nsocket_frames_received_total %ld\n"
             "# TYPE socket_frames_sent_total counter\nsocket_frames_sent_total %ld\n",
             atomic_load(&s->m_frames_in), atomic_load(&s->m_frames_out));
    emit(ctx, line);
    snprintf(line, sizeof(line),
             "# TYPE socket_events_delivered_total counter\nsocket_events_delivered_total %ld\n"
             "# TYPE socket_slow_consumers_total counter\nsocket_slow_consumers_total %ld\n",
             atomic_load(&s->m_events), atomic_load(&s->m_dropped_slow));
    emit(ctx, line);
    snprintf(line, sizeof(line),
             "# TYPE socket_upstream_calls_total counter\nsocket_upstream_calls_total %ld\n"
             "socket_upstream_failures_total %ld\nsocket_upstream_breaker_open %d\n",
             calls, failures, open);
    emit(ctx, line);
    snprintf(line, sizeof(line),
             "# TYPE socket_presence_frames_total counter\nsocket_presence_frames_total %ld\n"
             "# TYPE socket_typing_relayed_total counter\nsocket_typing_relayed_total %ld\n",
             atomic_load(&s->m_presence_frames), atomic_load(&s->m_typing));
    emit(ctx, line);
    snprintf(line, sizeof(line),
             "# TYPE socket_notifications_relayed_total counter\n"
             "socket_notifications_relayed_total %ld\n",
             atomic_load(&s->m_notifications));
    emit(ctx, line);
    if (s->eph) {
        long pub = 0, rec = 0, failed = 0, swept = 0;
        socket_ephemeral_stats(s->eph, &pub, &rec, &failed, &swept);
        snprintf(line, sizeof(line),
                 "# TYPE socket_redis_ops_total counter\nsocket_redis_ops_total %ld\n"
                 "socket_redis_ops_failed_total %ld\n"
                 "# TYPE socket_pubsub_received_total counter\nsocket_pubsub_received_total %ld\n"
                 "# TYPE socket_presence_swept_total counter\nsocket_presence_swept_total %ld\n",
                 pub, failed, rec, swept);
        emit(ctx, line);
    }
    emit(ctx, "# TYPE socket_delivery_stage_seconds histogram\n");
    for (int st = 0; st < NSTAGES; st++) {
        const stage_hist *h = &s->stages[st];
        unsigned long cum = 0;
        for (size_t i = 0; i < NBOUNDS; i++) {
            cum += atomic_load_explicit(&h->le[i], memory_order_relaxed);
            snprintf(line, sizeof(line),
                     "socket_delivery_stage_seconds_bucket{stage=\"%s\",le=\"%g\"} %lu\n",
                     stage_names[st], stage_bounds[i], cum);
            emit(ctx, line);
        }
        cum += atomic_load_explicit(&h->le[NBOUNDS], memory_order_relaxed);
        snprintf(line, sizeof(line),
                 "socket_delivery_stage_seconds_bucket{stage=\"%s\",le=\"+Inf\"} %lu\n"
                 "socket_delivery_stage_seconds_sum{stage=\"%s\"} %.6f\n"
                 "socket_delivery_stage_seconds_count{stage=\"%s\"} %lu\n",
                 stage_names[st], cum, stage_names[st],
                 (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6,
                 stage_names[st], cum);
        emit(ctx, line);
    }
    emit(ctx, "# TYPE socket_closes_total counter\n");
    for (int i = 0; i < 10; i++) {
        snprintf(line, sizeof(line), "socket_closes_total{code=\"%d\"} %ld\n", close_codes[i],
                 atomic_load(&s->m_closed[i]));
        emit(ctx, line);
    }
}
