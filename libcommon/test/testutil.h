/* testutil.h - helpers shared by the libcommon unit tests: files, ports, a raw HTTP client. */
#ifndef TESTUTIL_H
#define TESTUTIL_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Reads a whole file into a NUL-terminated heap buffer; NULL when it cannot be read. */
static inline char *tu_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0;

    if (f == NULL)
        return NULL;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *p = realloc(buf, cap);
            if (p == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = p;
        }
        size_t r = fread(buf + n, 1, 4096, f);
        n += r;
        if (r == 0)
            break;
    }
    fclose(f);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

/* A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it). */
static inline int tu_free_port(void)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

    if (fd < 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static inline void tu_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A parsed HTTP/1.1 response read until the server closed the connection. */
typedef struct tu_resp {
    int status;
    char *raw;        /* everything received, NUL-terminated */
    size_t raw_len;
    const char *body; /* inside raw */
    size_t body_len;
} tu_resp;

static inline void tu_resp_free(tu_resp *r)
{
    free(r->raw);
    memset(r, 0, sizeof(*r));
}

/* Returns the value of response header `name` copied into `out` (size n), or NULL. */
static inline const char *tu_resp_header(const tu_resp *r, const char *name, char *out, size_t n)
{
    size_t nl = strlen(name);
    const char *p = strstr(r->raw, "\r\n");
    const char *end = r->body ? r->body : r->raw + r->raw_len;

    while (p && p + 2 < end) {
        const char *line = p + 2, *eol = strstr(line, "\r\n");
        if (eol == NULL || eol == line)
            break;
        if ((size_t)(eol - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            size_t vl = (size_t)(eol - v);
            if (vl >= n)
                vl = n - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return out;
        }
        p = eol;
    }
    return NULL;
}

/* Sends `req` (len bytes, a complete request the caller wrote, normally with
 * "Connection: close") to 127.0.0.1:port and reads the answer until the server closes or
 * 10 s pass. Returns 0 with *r filled (free with tu_resp_free), -1 on a socket error. */
static inline int tu_http_raw(int port, const char *req, size_t len, tu_resp *r)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    size_t cap = 16384, n = 0, off = 0;
    char *buf = NULL;

    memset(r, 0, sizeof(*r));
    if (fd < 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        goto fail;
    /* The server may answer (413) and close before everything is sent: stop sending then. */
    while (off < len) {
        ssize_t w = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    buf = malloc(cap);
    if (buf == NULL)
        goto fail;
    for (;;) {
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, 10000) <= 0)
            break;
        if (n + 4096 + 1 > cap) {
            char *p = realloc(buf, cap * 2);
            if (p == NULL)
                goto fail;
            buf = p;
            cap *= 2;
        }
        ssize_t rd = recv(fd, buf + n, 4096, 0);
        if (rd <= 0)
            break; /* EOF, or a reset after the answer */
        n += (size_t)rd;
    }
    close(fd);
    buf[n] = '\0';
    r->raw = buf;
    r->raw_len = n;
    if (n < 12 || strncmp(buf, "HTTP/1.", 7) != 0)
        return 0; /* status stays 0: the caller's assertion shows the raw text */
    r->status = (int)strtol(buf + 9, NULL, 10); /* "HTTP/1.1 NNN reason" */
    char *sep = strstr(buf, "\r\n\r\n");
    if (sep) {
        r->body = sep + 4;
        r->body_len = n - (size_t)(r->body - buf);
    }
    return 0;
fail:
    free(buf);
    close(fd);
    return -1;
}

/* Sends `method path` with extra header lines `headers` ("Name: v\r\n..." or NULL) and an
 * optional body sent with Content-Length. */
static inline int tu_http(int port, const char *method, const char *path, const char *headers,
                          const char *body, size_t body_len, tu_resp *r)
{
    size_t cap = 1024 + (headers ? strlen(headers) : 0) + strlen(path) + body_len;
    char *req = malloc(cap);
    int n, rc;

    if (req == NULL)
        return -1;
    if (body)
        n = snprintf(req, cap,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s"
                     "Content-Length: %zu\r\n\r\n",
                     method, path, headers ? headers : "", body_len);
    else
        n = snprintf(req, cap, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s\r\n",
                     method, path, headers ? headers : "");
    if (n < 0 || (size_t)n + body_len >= cap) {
        free(req);
        return -1;
    }
    if (body)
        memcpy(req + n, body, body_len);
    rc = tu_http_raw(port, req, (size_t)n + body_len, r);
    free(req);
    return rc;
}

/* base64url without padding (RFC 4648 section 5) of in[0..len) into a heap string. */
static inline char *tu_b64url(const void *in, size_t len)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const unsigned char *s = in;
    char *out = malloc(len * 4 / 3 + 4), *o = out;
    size_t i = 0;

    if (out == NULL)
        return NULL;
    for (; i + 2 < len; i += 3) {
        *o++ = tbl[s[i] >> 2];
        *o++ = tbl[((s[i] & 3) << 4) | (s[i + 1] >> 4)];
        *o++ = tbl[((s[i + 1] & 15) << 2) | (s[i + 2] >> 6)];
        *o++ = tbl[s[i + 2] & 63];
    }
    if (len - i == 1) {
        *o++ = tbl[s[i] >> 2];
        *o++ = tbl[(s[i] & 3) << 4];
    } else if (len - i == 2) {
        *o++ = tbl[s[i] >> 2];
        *o++ = tbl[((s[i] & 3) << 4) | (s[i + 1] >> 4)];
        *o++ = tbl[(s[i + 1] & 15) << 2];
    }
    *o = '\0';
    return out;
}

#endif
