/* loadstone native data plane, mode http: the per-request work of an HTTP
 * listener, run by the engine's workers (this file is #included by engine.c,
 * whose sessions, timers, picking and records it uses).
 *
 * Theory of operation
 * -------------------
 * An HTTP session is an engine session (ls_session) with an ls_http attached:
 * fd[0] the client, fd[1] the server connection of the exchange in flight (or
 * -1). Admission (maxconn, the queue) is the engine's; once admitted the
 * session is in ST_HTTP and this file drives it:
 *
 *   wait for a head --head parsed--> pick (engine: sess_connect) --pooled or
 *       ^                             connected--> head + body to the server,
 *       |                             response relayed to the client as read
 *       +--- response complete: server connection back to the worker's pool,
 *            access-log record, the request parser resumed on what is buffered
 *
 * Parsing is llhttp's (the parser of Node.js, vendored in src/_fastpath/vendor/
 * llhttp and built with the engine; ls_http_init self-tests it): no HTTP
 * grammar is written here.
 * The request parser pauses at the end of each message (on_message_complete
 * returns HPE_PAUSED), so pipelined requests wait, unparsed, in `in` and are
 * answered in order, one exchange at a time, as on the pure path.
 *
 * What goes to the server is rebuilt, never copied: the head from the parsed
 * fields (the checks and the field list of loadstone/http/request.py,
 * RequestPolicy.prepare), the body from what llhttp decoded, re-framed as
 * Content-Length data or fresh chunks, so that the two sides cannot disagree
 * on where a message ends. Responses are relayed as read (the pure path's raw
 * _Backend): llhttp only finds where each one ends.
 *
 * Nothing reaches the server before the whole client read it came in was
 * parsed: a read that turns out malformed further on is answered 400 and
 * never forwarded.
 *
 * Flow control: the client is not read while more than PENDING_LIMIT bytes
 * wait for the server, nor the server while the client has not taken the last
 * read. Server connections outlive exchanges in a per-worker pool (pool
 * entries are sessions in state ST_POOLED so that their epoll events and
 * timers go through the engine's loop); an event on an idle connection (the
 * server closed it, or sent something unasked) drops it.
 *
 * After a 101 the session becomes an engine TCP relay (ST_RELAY, pump()) with
 * timeouts.tunnel as its idle timeout.
 */
#include "llhttp.h"
#include <strings.h>

static ls_listener *get_listener(ls_engine *e, int lid);

/* ---------------------------------------------------------------------------------- */
/* llhttp: vendored (src/_fastpath/vendor/llhttp) and built with the engine. ls_http_init */
/* runs a self-test of the behaviour this file relies on before any listener is HTTP.  */

static volatile int llhttp_ready; /* set by the first ls_http_init that passes */

static llhttp_settings_t req_settings, resp_settings;

/* The answers the proxy makes itself, as loadstone.http.message.ANSWERS. */
static struct {
    char *data;
    int len;
} answers[600];

/* ---------------------------------------------------------------------------------- */
/* per-session state                                                                  */

#define PENDING_LIMIT (256 * 1024) /* request bytes kept for the server (pure path's) */
#define IN_LIMIT (64 * 1024)       /* pipelined bytes read ahead, unparsed */
#define DIRECT_SEND_MIN (16 * 1024) /* a bulk read is written at once, not at the round's end */

enum { H_CHUNKED = 1, H_HAS_BODY = 2 };
/* what the session's timer is for */
enum { T_HEAD = 0, T_IDLE, T_CLIENT, T_SERVER, T_CLOSING };

typedef struct ls_buf {
    char *p;
    uint32_t off, len, cap; /* bytes p[off .. off+len) */
} ls_buf;

typedef struct ls_field {
    uint32_t name, name_len, value, value_len; /* offsets into ls_http.head */
} ls_field;

struct ls_http {
    llhttp_t req, resp;
    ls_buf in;    /* client bytes read but not parsed (pipelined, or a paused parser) */
    ls_buf head;  /* target, field names and values of the head being parsed */
    ls_buf rhead; /* the head rebuilt for the server (kept for a resend) */
    ls_buf out;   /* to the server: rhead, then the re-framed body */
    ls_buf cout;  /* to the client: what it did not take yet */
    ls_field *fields;
    int nfields, capfields;
    uint32_t url_len;
    char extra[320]; /* X-Forwarded-* lines of this connection */
    int extra_len;
    /* per connection */
    int requests;
    uint8_t tkind, client_eof, closing, req_paused;
    /* the request being parsed */
    uint8_t parsing, head_done, in_value, req_complete, upgrade, http10, keep_alive, flags;
    uint8_t parse_error, upgrade_wait;
    int bad_status;
    const char *bad_reason;
    uint32_t head_bytes;
    char method[24];
    int64_t t_begin, t_head;
    /* the exchange in flight */
    uint8_t exchange, connected, head_written, req_sent, response_started, reused;
    uint8_t resp_head, resp_done, interim, resp_first, resp_keep, resp_eof, keep_client;
    uint8_t backend_reusable, tunnel, logged;
    uint8_t in_flush; /* on the worker's list of sessions with bytes to write */
    ls_session *conn; /* the connection object of a pooled server connection in use */
    ls_session *flush_prev, *flush_next;
    int status;
    int log_slot;
    int backend_requests;
    double t_wait, t_connect;
    int64_t t_connect_start, t_sent, t_response;
    uint64_t bytes_in, bytes_out;
};

static void buf_free(ls_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->off = b->len = b->cap = 0;
}

static int buf_append(ls_buf *b, const void *data, size_t n)
{
    if (!n)
        return 0;
    if (b->off + b->len + n > b->cap) {
        if (b->off && b->len + n <= b->cap) {
            memmove(b->p, b->p + b->off, b->len);
            b->off = 0;
        } else {
            size_t cap = b->cap ? b->cap : 1024;
            while (cap < b->len + n)
                cap *= 2;
            char *p = malloc(cap);
            if (!p)
                return -1;
            if (b->len)
                memcpy(p, b->p + b->off, b->len);
            free(b->p);
            b->p = p;
            b->off = 0;
            b->cap = (uint32_t)cap;
        }
    }
    memcpy(b->p + b->off + b->len, data, n);
    b->len += (uint32_t)n;
    return 0;
}

static void buf_consume(ls_buf *b, size_t n)
{
    b->off += (uint32_t)n;
    b->len -= (uint32_t)n;
    if (!b->len)
        b->off = 0;
}

static void http_free(struct ls_http *h)
{
    if (!h)
        return;
    free(h->conn); /* only at engine free: a finished session has none */
    buf_free(&h->in);
    buf_free(&h->head);
    buf_free(&h->rhead);
    buf_free(&h->out);
    buf_free(&h->cout);
    free(h->fields);
    free(h);
}

static int http_in_exchange(const ls_session *s) { return s->http->exchange; }

/* Writes wait for the end of the worker's event round (http_flush_round), as
 * HAProxy sends after its event pass: on loopback a send wakes the peer,
 * which then preempts the worker once per write; at the end of the round the
 * peers woken first are still running for the later writes. */
static void flush_later(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    if (h->in_flush)
        return;
    h->in_flush = 1;
    h->flush_prev = NULL;
    h->flush_next = W->http_flush;
    if (W->http_flush)
        W->http_flush->http->flush_prev = s;
    W->http_flush = s;
}

static void flush_cancel(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    if (!h->in_flush)
        return;
    if (h->flush_prev)
        h->flush_prev->http->flush_next = h->flush_next;
    else
        W->http_flush = h->flush_next;
    if (h->flush_next)
        h->flush_next->http->flush_prev = h->flush_prev;
    h->flush_prev = h->flush_next = NULL;
    h->in_flush = 0;
}

static inline ls_http *H(llhttp_t *p) { return ((ls_session *)p->data)->http; }

/* ---------------------------------------------------------------------------------- */
/* the request parser's callbacks                                                     */

static int req_message_begin(llhttp_t *p)
{
    ls_session *s = p->data;
    ls_http *h = s->http;
    h->parsing = 1;
    h->head_done = h->req_complete = h->in_value = 0;
    h->head.off = h->head.len = 0;
    h->nfields = 0;
    h->url_len = 0;
    h->flags = 0;
    h->head_bytes = 0;
    h->method[0] = 0;
    h->t_begin = s->W->now_us;
    h->t_head = -1;
    if (!h->exchange) {
        h->tkind = T_HEAD;
        timer_set(s->W, s, s->W->now_us + s->L->hcfg.request_ms * 1000);
    }
    return 0;
}

static int req_url(llhttp_t *p, const char *at, size_t n)
{
    ls_http *h = H(p);
    if (buf_append(&h->head, at, n) < 0)
        return -1;
    h->url_len += (uint32_t)n;
    return 0;
}

static int req_field(llhttp_t *p, const char *at, size_t n)
{
    ls_http *h = H(p);
    if (h->head_done)
        return 0; /* trailers: not forwarded (the body is re-framed) */
    if (h->in_value || h->nfields == 0) {
        ls_session *s = p->data;
        if (h->nfields >= s->L->hcfg.max_headers) {
            h->bad_status = 431;
            h->bad_reason = "too many header fields";
            return -1;
        }
        if (h->nfields == h->capfields) {
            int cap = h->capfields ? h->capfields * 2 : 32;
            ls_field *f = realloc(h->fields, (size_t)cap * sizeof *f);
            if (!f)
                return -1;
            h->fields = f;
            h->capfields = cap;
        }
        ls_field *f = &h->fields[h->nfields++];
        f->name = h->head.len;
        f->name_len = 0;
        f->value = 0;
        f->value_len = 0;
        h->in_value = 0;
    }
    ls_field *f = &h->fields[h->nfields - 1];
    if (buf_append(&h->head, at, n) < 0)
        return -1;
    f->name_len += (uint32_t)n;
    return 0;
}

static int req_value(llhttp_t *p, const char *at, size_t n)
{
    ls_http *h = H(p);
    if (h->head_done || h->nfields == 0)
        return 0;
    ls_field *f = &h->fields[h->nfields - 1];
    if (!h->in_value) {
        h->in_value = 1;
        f->value = h->head.len;
    }
    if (buf_append(&h->head, at, n) < 0)
        return -1;
    f->value_len += (uint32_t)n;
    return 0;
}

static int ieq(const char *a, size_t alen, const char *lit)
{
    size_t n = strlen(lit);
    return alen == n && strncasecmp(a, lit, n) == 0;
}

/* a value without its surrounding whitespace */
static void strip(const char **v, size_t *n)
{
    while (*n && (**v == ' ' || **v == '\t')) {
        (*v)++;
        (*n)--;
    }
    while (*n && ((*v)[*n - 1] == ' ' || (*v)[*n - 1] == '\t'))
        (*n)--;
}

/* Hop-by-hop fields (RFC 9110 section 7.6.1) and those whose value the proxy sets. */
static int dropped(const ls_hconfig *c, const char *name, size_t n)
{
    return ieq(name, n, "keep-alive") || ieq(name, n, "proxy-connection") || ieq(name, n, "te") ||
           ieq(name, n, "http2-settings") ||
           (c->proto_line[0] && ieq(name, n, "x-forwarded-proto")) ||
           (c->forwarded_port && ieq(name, n, "x-forwarded-port"));
}

#define MAX_NAMED 16

/* RequestPolicy.prepare: check the parsed head and build the one for the
 * server in h->rhead. 0, or -1 with bad_status/bad_reason set. */
static int build_head(ls_session *s, ls_http *h)
{
    const ls_hconfig *c = &s->L->hcfg;
    const char *base = h->head.p + h->head.off;
    if (h->nfields > c->max_headers) {
        h->bad_status = 431;
        h->bad_reason = "too many header fields";
        return -1;
    }
    int hosts = 0, ka10 = 0, nnamed = 0;
    struct {
        const char *p;
        size_t n;
    } named[MAX_NAMED];
    uint8_t *keep = h->nfields ? alloca((size_t)h->nfields) : NULL;
    size_t size = strlen(h->method) + h->url_len + 12;
    for (int i = 0; i < h->nfields; i++) {
        ls_field *f = &h->fields[i];
        const char *name = base + f->name, *value = base + f->value;
        size_t nl = f->name_len, vl = f->value_len;
        size += nl + vl + 4;
        keep[i] = 1;
        if (ieq(name, nl, "host")) {
            hosts++;
        } else if (ieq(name, nl, "content-length")) {
            const char *v = value;
            size_t n = vl;
            strip(&v, &n);
            if (!(n == 1 && v[0] == '0'))
                h->flags |= H_HAS_BODY;
        } else if (ieq(name, nl, "transfer-encoding")) {
            const char *v = value;
            size_t n = vl;
            strip(&v, &n);
            if (h->http10) {
                h->bad_status = 400;
                h->bad_reason = "Transfer-Encoding in an HTTP/1.0 request";
                return -1;
            }
            if (!ieq(v, n, "chunked")) {
                h->bad_status = 400;
                h->bad_reason = "unsupported Transfer-Encoding";
                return -1;
            }
            h->flags |= H_CHUNKED | H_HAS_BODY;
        } else if (ieq(name, nl, "connection")) {
            keep[i] = 0; /* hop-by-hop: ours is written below */
            const char *v = value, *end = value + vl;
            while (v < end) {
                const char *comma = memchr(v, ',', (size_t)(end - v));
                const char *e = comma ? comma : end;
                const char *o = v;
                size_t on = (size_t)(e - v);
                strip(&o, &on);
                if (ieq(o, on, "keep-alive"))
                    ka10 = 1;
                else if (on && !ieq(o, on, "close") && !ieq(o, on, "upgrade") &&
                         nnamed < MAX_NAMED) {
                    named[nnamed].p = o;
                    named[nnamed].n = on;
                    nnamed++;
                }
                v = e + 1;
            }
        } else if (ieq(name, nl, "upgrade")) {
            keep[i] = h->upgrade;
        } else if (dropped(c, name, nl)) {
            keep[i] = 0;
        }
    }
    if (size > (size_t)c->max_head_size) {
        h->bad_status = 431;
        h->bad_reason = "request head too large";
        return -1;
    }
    if (hosts > 1) {
        h->bad_status = 400;
        h->bad_reason = "more than one Host header";
        return -1;
    }
    if (hosts == 0 && !h->http10) {
        h->bad_status = 400;
        h->bad_reason = "no Host header in an HTTP/1.1 request";
        return -1;
    }
    ls_buf *o = &h->rhead;
    o->off = o->len = 0;
    int err = buf_append(o, h->method, strlen(h->method));
    err |= buf_append(o, " ", 1);
    err |= buf_append(o, base, h->url_len);
    err |= buf_append(o, h->http10 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n", 11);
    for (int i = 0; i < h->nfields; i++) {
        if (!keep[i])
            continue;
        ls_field *f = &h->fields[i];
        int gone = 0;
        for (int k = 0; k < nnamed && !gone; k++)
            gone = f->name_len == named[k].n &&
                   strncasecmp(base + f->name, named[k].p, named[k].n) == 0;
        if (gone)
            continue; /* named in Connection: hop-by-hop too */
        err |= buf_append(o, base + f->name, f->name_len);
        err |= buf_append(o, ": ", 2);
        err |= buf_append(o, base + f->value, f->value_len);
        err |= buf_append(o, "\r\n", 2);
    }
    err |= buf_append(o, h->extra, (size_t)h->extra_len);
    if (h->upgrade)
        err |= buf_append(o, "Connection: upgrade\r\n", 21);
    else if (h->http10 && ka10)
        err |= buf_append(o, "Connection: keep-alive\r\n", 24);
    err |= buf_append(o, "\r\n", 2);
    if (err) {
        h->bad_status = 500;
        h->bad_reason = "out of memory";
        return -1;
    }
    return 0;
}

/* strlcpy: snprintf's formatting showed in the profile of every request */
static void copy_str(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src);
    if (n >= size)
        n = size - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

static int req_headers_complete(llhttp_t *p)
{
    ls_session *s = p->data;
    ls_http *h = s->http;
    h->t_head = s->W->now_us;
    h->head_done = 1;
    const char *m = llhttp_method_name(llhttp_get_method(p));
    copy_str(h->method, sizeof h->method, m ? m : "");
    int major = llhttp_get_http_major(p), minor = llhttp_get_http_minor(p);
    h->keep_alive = llhttp_should_keep_alive(p) ? 1 : 0;
    h->upgrade = llhttp_get_upgrade(p) ? 1 : 0;
    h->http10 = major == 1 && minor == 0;
    if (llhttp_get_method(p) == HTTP_CONNECT) {
        h->bad_status = 501;
        h->bad_reason = "CONNECT is not supported";
        return -1;
    }
    if (major != 1 || minor > 1) {
        h->bad_status = 400;
        h->bad_reason = "HTTP version not supported";
        return -1;
    }
    if (build_head(s, h) < 0)
        return -1;
    return buf_append(&h->out, h->rhead.p + h->rhead.off, h->rhead.len) < 0 ? -1 : 0;
}

static int req_body(llhttp_t *p, const char *at, size_t n)
{
    ls_session *s = p->data;
    ls_http *h = s->http;
    if (h->flags & H_CHUNKED) {
        char size[24];
        int k = snprintf(size, sizeof size, "%zx\r\n", n);
        if (buf_append(&h->out, size, (size_t)k) < 0 || buf_append(&h->out, at, n) < 0 ||
            buf_append(&h->out, "\r\n", 2) < 0)
            return -1;
    } else if (buf_append(&h->out, at, n) < 0) {
        return -1;
    }
    if (h->tkind == T_CLIENT)
        timer_set(s->W, s, s->W->now_us + s->L->hcfg.client_ms * 1000);
    return 0;
}

static int req_message_complete(llhttp_t *p)
{
    ls_http *h = H(p);
    h->req_complete = 1;
    h->parsing = 0;
    if (h->flags & H_CHUNKED && buf_append(&h->out, "0\r\n\r\n", 5) < 0)
        return -1;
    /* An upgrade stops llhttp by itself (HPE_PAUSED_UPGRADE) right after this;
     * anything else: stop here, the next pipelined request waits its turn. */
    return llhttp_get_upgrade(p) ? 0 : HPE_PAUSED;
}

/* ---------------------------------------------------------------------------------- */
/* the response parser's callbacks                                                    */

static int resp_headers_complete(llhttp_t *p)
{
    ls_session *s = p->data;
    ls_http *h = s->http;
    int status = llhttp_get_status_code(p);
    if (status < 200 && status != 101) {
        h->interim = 1; /* 100 Continue, 103 Early Hints: relayed as they are */
        return 0;
    }
    if (status == 101 && !h->upgrade)
        return -1; /* a 101 to a request that did not ask to upgrade */
    h->status = status;
    h->resp_head = 1;
    h->t_response = s->W->now_us;
    h->resp_keep = llhttp_should_keep_alive(p) ? 1 : 0;
    h->resp_eof = llhttp_message_needs_eof(p) ? 1 : 0;
    if (!h->resp_keep)
        h->keep_client = 0; /* its Connection: close reaches the client as it is */
    return strcmp(h->method, "HEAD") == 0 ? 1 : 0; /* 1: no body follows */
}

static int resp_message_complete(llhttp_t *p)
{
    ls_http *h = H(p);
    if (h->interim) {
        h->interim = 0;
        return 0;
    }
    h->resp_done = 1;
    return llhttp_get_upgrade(p) ? 0 : HPE_PAUSED;
}

/* ---------------------------------------------------------------------------------- */
/* llhttp's self-test                                                                 */

typedef struct selftest {
    int begins, headers, completes, fields, values, body_len;
    char url[32];
    int url_len;
} selftest;

static int st_begin(llhttp_t *p) { ((selftest *)p->data)->begins++; return 0; }
static int st_url(llhttp_t *p, const char *at, size_t n)
{
    selftest *t = p->data;
    if (t->url_len + n < sizeof t->url) {
        memcpy(t->url + t->url_len, at, n);
        t->url_len += (int)n;
    }
    return 0;
}
static int st_field(llhttp_t *p, const char *at, size_t n) { ((selftest *)p->data)->fields++; return 0; }
static int st_value(llhttp_t *p, const char *at, size_t n) { ((selftest *)p->data)->values++; return 0; }
static int st_headers(llhttp_t *p) { ((selftest *)p->data)->headers++; return 0; }
static int st_body(llhttp_t *p, const char *at, size_t n) { ((selftest *)p->data)->body_len += (int)n; return 0; }
static int st_complete(llhttp_t *p) { ((selftest *)p->data)->completes++; return HPE_PAUSED; }

/* Parse a known request and response and check every callback, getter and
 * field this file relies on; NULL or what failed. A build of llhttp with other
 * defaults (lenient flags, another release) fails here, at start, rather than
 * mid-request. */
static const char *http_selftest(void)
{
    /* For tests only: makes the self-test fail, to show what a start with a
     * broken llhttp does (tests/integration/test_http_native.py). */
    if (getenv("LOADSTONE_TEST_LLHTTP_SELFTEST_FAIL"))
        return "forced by LOADSTONE_TEST_LLHTTP_SELFTEST_FAIL (a test setting)";
    static const char req[] = "POST /a?b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                              "Connection: keep-alive\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                              "HEAD / HTTP/1.0\r\n\r\n";
    static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
                               "HTTP/1.1 204 No Content\r\n\r\n";
    static const char bad[] = "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n";
    llhttp_settings_t st;
    llhttp_settings_init(&st);
    st.on_message_begin = st_begin;
    st.on_url = st_url;
    st.on_header_field = st_field;
    st.on_header_value = st_value;
    st.on_headers_complete = st_headers;
    st.on_body = st_body;
    st.on_message_complete = st_complete;
    llhttp_t p;
    selftest t;
    memset(&t, 0, sizeof t);
    llhttp_init(&p, HTTP_REQUEST, &st);
    p.data = &t;
    int err = llhttp_execute(&p, req, sizeof req - 1);
    if (err != HPE_PAUSED)
        return "a request did not pause at its end";
    const char *pos = llhttp_get_error_pos(&p);
    if (!pos || pos < req || pos > req + sizeof req - 1)
        return "llhttp_get_error_pos out of the input";
    if (t.begins != 1 || t.headers != 1 || t.completes != 1 || t.fields != 3 || t.values != 3 ||
        t.body_len != 3 || t.url_len != 4 || memcmp(t.url, "/a?b", 4) != 0)
        return "request callbacks";
    if (strcmp(llhttp_method_name(llhttp_get_method(&p)), "POST") != 0 || llhttp_get_http_major(&p) != 1 ||
        llhttp_get_http_minor(&p) != 1 || !llhttp_should_keep_alive(&p) || llhttp_get_upgrade(&p))
        return "request getters";
    if (p.data != &t)
        return "llhttp_t layout (data)";
    llhttp_resume(&p);
    size_t rest = (size_t)(req + sizeof req - 1 - pos);
    err = llhttp_execute(&p, pos, rest);
    if (err != HPE_PAUSED || t.completes != 2 || llhttp_get_http_minor(&p) != 0 ||
        llhttp_get_method(&p) != HTTP_HEAD || llhttp_should_keep_alive(&p))
        return "a resumed request";
    memset(&t, 0, sizeof t);
    llhttp_init(&p, HTTP_RESPONSE, &st);
    p.data = &t;
    err = llhttp_execute(&p, resp, sizeof resp - 1);
    if (err != HPE_PAUSED || t.body_len != 2 || llhttp_get_status_code(&p) != 200 ||
        !llhttp_should_keep_alive(&p) || llhttp_message_needs_eof(&p))
        return "a response";
    pos = llhttp_get_error_pos(&p);
    llhttp_resume(&p);
    err = llhttp_execute(&p, pos, (size_t)(resp + sizeof resp - 1 - pos));
    if (err != HPE_PAUSED || llhttp_get_status_code(&p) != 204 || t.completes != 2)
        return "a second response";
    memset(&t, 0, sizeof t);
    llhttp_init(&p, HTTP_REQUEST, &st);
    p.data = &t;
    err = llhttp_execute(&p, bad, sizeof bad - 1);
    if (err == HPE_OK || err == HPE_PAUSED || t.headers != 0)
        return "Content-Length with Transfer-Encoding was not refused (lenient llhttp?)";
    if (!llhttp_get_error_reason(&p))
        return "llhttp_get_error_reason";
    return NULL;
}

#define LS_STR_(x) #x
#define LS_STR(x) LS_STR_(x)

const char *ls_llhttp_version(void)
{
    return LS_STR(LLHTTP_VERSION_MAJOR) "." LS_STR(LLHTTP_VERSION_MINOR) "." LS_STR(
        LLHTTP_VERSION_PATCH);
}

int ls_http_init(char *errbuf, int errlen)
{
    const char *failed = http_selftest();
    if (failed) {
        snprintf(errbuf, (size_t)errlen, "llhttp %s failed the engine's self-test: %s",
                 ls_llhttp_version(), failed);
        return -1;
    }
    if (llhttp_ready)
        return 0; /* settled once: workers may be parsing with the settings */
    llhttp_settings_init(&req_settings);
    req_settings.on_message_begin = req_message_begin;
    req_settings.on_url = req_url;
    req_settings.on_header_field = req_field;
    req_settings.on_header_value = req_value;
    req_settings.on_headers_complete = req_headers_complete;
    req_settings.on_body = req_body;
    req_settings.on_message_complete = req_message_complete;
    llhttp_settings_init(&resp_settings);
    resp_settings.on_headers_complete = resp_headers_complete;
    resp_settings.on_message_complete = resp_message_complete;
    llhttp_ready = 1;
    return 0;
}

void ls_http_set_answer(int status, const char *data, int len)
{
    if (status < 100 || status >= 600 || len <= 0)
        return;
    char *copy = malloc((size_t)len);
    if (!copy)
        return;
    memcpy(copy, data, (size_t)len);
    free(answers[status].data);
    answers[status].data = copy;
    answers[status].len = len;
}

/* ---------------------------------------------------------------------------------- */
/* a new client connection                                                            */

static int in_net(const ls_hnet *n, int family, const uint8_t *addr)
{
    if (n->family != family)
        return 0;
    int bits = n->prefix, i = 0;
    for (; bits >= 8; bits -= 8, i++)
        if (n->addr[i] != addr[i])
            return 0;
    if (bits) {
        uint8_t mask = (uint8_t)(0xff << (8 - bits));
        if ((n->addr[i] & mask) != (addr[i] & mask))
            return 0;
    }
    return 1;
}

/* RequestPolicy.connection_lines: X-Forwarded-For, -Port and -Proto, once per
 * connection. The address is written as Python prints it (an IPv4-mapped IPv6
 * address as plain IPv4). */
static void connection_lines(ls_session *s, ls_http *h)
{
    const ls_hconfig *c = &s->L->hcfg;
    char ip[INET6_ADDRSTRLEN] = "";
    int family = 0;
    uint8_t raw[16];
    if (s->client.sa.sa_family == AF_INET) {
        family = AF_INET;
        memcpy(raw, &s->client.in4.sin_addr, 4);
        inet_ntop(AF_INET, raw, ip, sizeof ip);
    } else if (s->client.sa.sa_family == AF_INET6) {
        const uint8_t *a = (const uint8_t *)&s->client.in6.sin6_addr;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a, mapped, 12) == 0) {
            family = AF_INET;
            memcpy(raw, a + 12, 4);
            inet_ntop(AF_INET, raw, ip, sizeof ip);
        } else {
            family = AF_INET6;
            memcpy(raw, a, 16);
            inet_ntop(AF_INET6, raw, ip, sizeof ip);
        }
    }
    int n = 0;
    size_t cap = sizeof h->extra;
    if (c->forwardfor[0] && family) {
        int excepted = 0;
        for (int i = 0; i < c->nexcept && !excepted; i++)
            excepted = in_net(&c->except[i], family, raw);
        if (!excepted)
            n += snprintf(h->extra + n, cap - (size_t)n, "%s: %s\r\n", c->forwardfor, ip);
    }
    if (c->forwarded_port) {
        ls_addr local;
        socklen_t len = sizeof local;
        if (getsockname(s->fd[0], &local.sa, &len) == 0) {
            unsigned port = local.sa.sa_family == AF_INET ? ntohs(local.in4.sin_port)
                                                           : ntohs(local.in6.sin6_port);
            n += snprintf(h->extra + n, cap - (size_t)n, "X-Forwarded-Port: %u\r\n", port);
        }
    }
    n += snprintf(h->extra + n, cap - (size_t)n, "%s", c->proto_line);
    h->extra_len = n < (int)cap ? n : (int)cap - 1;
}

/* on_accept's hook: an HTTP listener's connection gets its state; 0 or -1. */
static int http_accepted(ls_session *s)
{
    ls_http *h = calloc(1, sizeof *h);
    if (!h)
        return -1;
    s->http = h;
    llhttp_init(&h->req, HTTP_REQUEST, &req_settings);
    h->req.data = s;
    h->log_slot = -1;
    h->t_connect = -1;
    connection_lines(s, h);
    return 0;
}

/* ---------------------------------------------------------------------------------- */
/* records, answers, the end of an exchange                                           */

static double secs(int64_t us) { return (double)us / 1e6; }

static void http_log(ls_worker *W, ls_session *s, int end, int arg)
{
    ls_http *h = s->http;
    ls_record *r = new_record(W);
    if (!r)
        return;
    r->type = LS_REC_HTTP;
    r->reason = (uint8_t)end;
    r->listener = s->L->id;
    r->slot = h->log_slot;
    r->arg = arg;
    r->bytes_in = h->bytes_in;
    r->bytes_out = h->bytes_out;
    if (h->tunnel) {
        r->bytes_in += s->bytes[0];
        r->bytes_out += s->bytes[1];
    }
    r->duration = secs(W->now_us - h->t_begin);
    format_addr(&s->client, r->client, sizeof r->client);
    r->status = h->status;
    r->t_request = h->t_head >= 0 ? secs(h->t_head - h->t_begin) : -1.0;
    r->t_queue = h->t_wait;
    r->t_connect = h->t_connect;
    r->t_response = h->t_response >= 0 && h->t_sent >= 0 ? secs(h->t_response - h->t_sent) : -1.0;
    copy_str(r->method, sizeof r->method, h->method);
    uint32_t n = h->url_len < LS_HTTP_TARGET_MAX ? h->url_len : LS_HTTP_TARGET_MAX;
    if (h->head.p && n <= h->head.len)
        memcpy(r->target, h->head.p + h->head.off, n);
    else
        n = 0;
    r->target_len = (uint16_t)n;
    /* the request's bytes were read before its server was known */
    if (h->log_slot >= 0)
        slot_w(s->L, W->id, h->log_slot)->bytes_in += h->bytes_in;
    h->bytes_in = h->bytes_out = 0;
    h->t_wait = 0;
    h->logged = 1;
}

/* The server connection of the exchange is done with: back to the pool when
 * `reusable`, else closed; the server's session count goes down. */
static void release_server(ls_worker *W, ls_session *s, int reusable);

static void close_after_write(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    h->closing = 1;
    h->tkind = T_CLOSING;
    if (!h->cout.len) {
        finish(W, s, LS_END_CLIENT_CLOSE, 0);
        return;
    }
    flush_later(W, s);
    timer_set(W, s, W->now_us + s->L->hcfg.client_ms * 1000);
}

static void to_client(ls_worker *W, ls_session *s, const char *data, size_t n);

/* Answer the request in flight ourselves and close the connection. */
static void http_answer(ls_worker *W, ls_session *s, int status, int end, int arg)
{
    ls_http *h = s->http;
    release_server(W, s, 0);
    h->status = status;
    if (!h->response_started && answers[status].data)
        to_client(W, s, answers[status].data, (size_t)answers[status].len);
    if (s->state == ST_CLOSED)
        return;
    if (s->state != ST_HTTP) {
        timer_del(W, s); /* a connect's timer */
        s->state = ST_HTTP;
    }
    http_log(W, s, end, arg);
    h->exchange = 0;
    close_after_write(W, s);
}

/* The exchange ends without an answer of ours: log it, close everything. */
static void http_abort(ls_worker *W, ls_session *s, int end)
{
    ls_http *h = s->http;
    release_server(W, s, 0);
    if (h->exchange && !h->logged)
        http_log(W, s, end, 0);
    h->exchange = 0;
    finish(W, s, LS_END_CLIENT_CLOSE, 0);
}

static void start_exchange(ls_worker *W, ls_session *s);

static void response_done(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    if (!h->req_complete) {
        /* The server answered before the whole request body came: the rest of
         * the body cannot be told apart from a next request. Close both. */
        h->keep_client = 0;
        h->backend_reusable = 0;
    }
    release_server(W, s, h->backend_reusable && h->resp_keep && !h->resp_eof && h->req_sent &&
                             !h->out.len);
    http_log(W, s, LS_HEND_OK, 0);
    h->exchange = 0;
    if (!(h->keep_client && h->keep_alive) || s->L->http_stopping || h->client_eof ||
        h->upgrade) {
        close_after_write(W, s);
        return;
    }
    /* the next request: parse what is buffered, or wait for it */
    h->req_paused = 0;
    llhttp_resume(&h->req);
    h->head_done = 0;
    h->tkind = T_IDLE;
    timer_set(W, s, W->now_us + s->L->hcfg.keep_alive_ms * 1000);
}

/* ---------------------------------------------------------------------------------- */
/* the server connection pool (per worker)                                            */

/* Server connections and their pool
 *
 * A server connection that has served one response becomes a connection
 * object (an ls_session in state ST_POOLED, `owner` the session using it or
 * NULL when idle): its epoll registration moves to the object once, with
 * EPOLL_CTL_MOD, and stays there for the connection's life; events of a
 * connection in use are handed to its owner. Taking and giving back a pooled
 * connection is then a few pointer stores, no system call. */

static void pool_unlink(ls_worker *W, ls_session *p)
{
    if (p->qprev)
        p->qprev->qnext = p->qnext;
    else
        W->http_pool = p->qnext;
    if (p->qnext)
        p->qnext->qprev = p->qprev;
    p->qprev = p->qnext = NULL;
    __atomic_fetch_sub(&p->L->http_pooled, 1, __ATOMIC_RELAXED);
}

/* The end of a connection object (closing its descriptor unless it is -1). */
static void conn_free(ls_worker *W, ls_session *p)
{
    timer_del(W, p);
    if (p->fd[1] >= 0)
        close(p->fd[1]);
    p->fd[1] = -1;
    p->owner = NULL;
    p->state = ST_CLOSED;
    p->rnext = W->dead; /* a stale event of this round may still name it */
    W->dead = p;
}

/* An idle connection closed by the server, spoken on unasked, or idle too long. */
static void pool_drop(ls_worker *W, ls_session *p)
{
    if (p->state != ST_POOLED || p->owner)
        return;
    pool_unlink(W, p);
    conn_free(W, p);
}

/* on_session's hook for a connection object. */
static void conn_event(ls_worker *W, ls_session *p, uint32_t ev)
{
    if (p->owner) {
        on_session(W, p->owner, 1, ev);
        return;
    }
    if (ev & ~(uint32_t)EPOLLOUT)
        pool_drop(W, p);
}

/* Close the session's server connection (no pooling, no count change). */
static void drop_server_conn(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    if (h->conn) {
        h->conn->fd[1] = s->fd[1];
        h->conn->owner = NULL;
        conn_free(W, h->conn);
        h->conn = NULL;
    } else if (s->fd[1] >= 0) {
        close(s->fd[1]);
    }
    s->fd[1] = -1;
    s->rd[1] = s->wr[1] = s->rdhup[1] = 0;
    h->connected = 0;
}

/* Give the session's server connection to the pool; 0, or -1 if it could not. */
static int pool_put(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    ls_listener *L = s->L;
    ls_session *p = h->conn;
    if (!p) {
        p = calloc(1, sizeof *p);
        if (!p)
            return -1;
        struct epoll_event ev;
        ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
        ev.data.u64 = (uint64_t)(uintptr_t)p | TAG_SERVER;
        if (epoll_ctl(W->epfd, EPOLL_CTL_MOD, s->fd[1], &ev) < 0) {
            free(p);
            return -1;
        }
        p->L = L;
        p->W = W;
        p->fd[0] = -1;
        p->fd[1] = s->fd[1];
        p->heap_idx = -1;
        p->state = ST_POOLED;
    }
    p->slot = s->slot;
    p->attempts = h->backend_requests;
    p->owner = NULL;
    p->qprev = NULL;
    p->qnext = W->http_pool;
    if (W->http_pool)
        W->http_pool->qprev = p;
    W->http_pool = p;
    __atomic_fetch_add(&L->http_pooled, 1, __ATOMIC_RELAXED);
    timer_set(W, p, W->now_us + L->hcfg.keep_alive_ms * 1000);
    h->conn = NULL;
    s->fd[1] = -1;
    s->rd[1] = s->wr[1] = s->rdhup[1] = 0;
    h->connected = 0;
    return 0;
}

static void release_server(ls_worker *W, ls_session *s, int reusable)
{
    ls_http *h = s->http;
    ls_listener *L = s->L;
    if (!(s->fd[1] >= 0 && reusable && h->connected && !L->http_stopping && pool_put(W, s) == 0))
        drop_server_conn(W, s);
    if (s->slot >= 0) {
        __atomic_fetch_sub(&slot_shared(L, s->slot)->live, 1, __ATOMIC_RELAXED);
        s->slot = -1;
    }
}

/* sess_connect's hook: an idle connection to the picked server, if the
 * worker has one; 1 when the session got it. */
static int http_take_pooled(ls_worker *W, ls_session *s)
{
    for (ls_session *p = W->http_pool; p; p = p->qnext) {
        if (p->L != s->L || p->slot != s->slot)
            continue;
        ls_http *h = s->http;
        pool_unlink(W, p);
        timer_del(W, p);
        p->owner = s;
        h->conn = p;
        h->backend_requests = p->attempts + 1;
        s->fd[1] = p->fd[1];
        s->rd[1] = s->rdhup[1] = 0;
        s->wr[1] = 1;
        s->state = ST_HTTP;
        h->connected = 1;
        h->reused = 1;
        h->t_connect = 0;
        h->log_slot = s->slot;
        /* no event will say so (the registration did not change): the head
         * goes out with this round's writes */
        flush_later(W, s);
        return 1;
    }
    return 0;
}

static void http_pool_shutdown(ls_worker *W, ls_listener *L, int slot)
{
    ls_session *p = W->http_pool;
    while (p) {
        ls_session *n = p->qnext;
        if ((!L || p->L == L) && (slot < 0 || p->slot == slot))
            pool_drop(W, p);
        p = n;
    }
}

/* ---------------------------------------------------------------------------------- */
/* an exchange                                                                         */

static void start_exchange(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    ls_listener *L = s->L;
    h->exchange = 1;
    h->requests++;
    h->status = 0;
    h->logged = 0;
    h->response_started = h->head_written = h->req_sent = h->reused = 0;
    h->resp_head = h->resp_done = h->interim = h->resp_keep = h->resp_eof = 0;
    h->resp_first = 1;
    h->backend_reusable = 1;
    h->keep_client = !L->http_stopping;
    h->t_connect = -1;
    h->t_sent = h->t_response = -1;
    h->backend_requests = 0;
    h->log_slot = -1;
    s->attempts = 0;
    s->nfailed = 0;
    llhttp_init(&h->resp, HTTP_RESPONSE, &resp_settings);
    h->resp.data = s;
    if (h->flags & H_HAS_BODY && !h->req_complete) {
        h->tkind = T_CLIENT;
        timer_set(W, s, W->now_us + L->hcfg.client_ms * 1000);
    } else {
        h->tkind = T_SERVER;
        timer_set(W, s, W->now_us + L->hcfg.server_ms * 1000);
    }
    h->t_connect_start = W->now_us;
    s->state = ST_PICKING;
    sess_connect(W, s); /* pooled, connecting, delayed, or answered 503 */
}

/* the engine's connected() hook */
static void http_connected(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    timer_del(W, s);
    s->state = ST_HTTP;
    h->connected = 1;
    h->backend_requests = 1;
    h->t_connect = secs(W->now_us - h->t_connect_start);
    h->log_slot = s->slot;
    int64_t ms = h->tkind == T_CLIENT ? s->L->hcfg.client_ms : s->L->hcfg.server_ms;
    timer_set(W, s, W->now_us + ms * 1000);
    http_progress(W, s);
}

/* Queue bytes for the client: written at once when it can take them. */
static void to_client(ls_worker *W, ls_session *s, const char *data, size_t n)
{
    ls_http *h = s->http;
    h->response_started = 1;
    h->bytes_out += n;
    count(W, s, 1, (ssize_t)n);
    if (n >= DIRECT_SEND_MIN && !h->cout.len && s->wr[0]) {
        ssize_t m = send(s->fd[0], data, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (m < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                finish(W, s, LS_END_CLIENT_RESET, 0);
                return;
            }
            m = 0;
            s->wr[0] = 0;
        } else if ((size_t)m < n) {
            s->wr[0] = 0;
        }
        data += m;
        n -= (size_t)m;
    }
    if (!n)
        return;
    if (buf_append(&h->cout, data, n) < 0) {
        finish(W, s, LS_END_CLIENT_RESET, 0);
        return;
    }
    flush_later(W, s);
}

/* Will the client connection stay open after the response in flight? */
static int keeps_connection(ls_session *s)
{
    ls_http *h = s->http;
    return h->keep_alive && h->keep_client && !h->client_eof && !s->L->http_stopping &&
           (h->req_complete || !(h->flags & H_HAS_BODY));
}

/* close_head of loadstone/http/response.py: a relayed head made to say
 * Connection: close (the client connection closes after this response while
 * the server's head says keep-alive). Returns a malloc'ed copy or NULL to send
 * the bytes unchanged. */
static char *close_head(const char *data, size_t n, size_t *out_n)
{
    const char *end = memmem(data, n, "\r\n\r\n", 4);
    if (!end || (n > 10 && (memcmp(data, "HTTP/1.1 1", 10) == 0 || memcmp(data, "HTTP/1.0 1", 10) == 0)))
        return NULL;
    size_t head_len = (size_t)(end - data) + 2; /* up to the CRLF of the last field */
    char *out = malloc(n + 24);
    if (!out)
        return NULL;
    size_t o = 0, i = 0;
    while (i < head_len) {
        const char *eol = memmem(data + i, head_len - i, "\r\n", 2);
        size_t line = eol ? (size_t)(eol - (data + i)) + 2 : head_len - i;
        int cut = i > 0 && ((line >= 11 && strncasecmp(data + i, "connection:", 11) == 0) ||
                            (line >= 11 && strncasecmp(data + i, "keep-alive:", 11) == 0));
        if (!cut) {
            memcpy(out + o, data + i, line);
            o += line;
        }
        i += line;
    }
    memcpy(out + o, "Connection: close\r\n\r\n", 21);
    o += 21;
    size_t rest = n - (head_len + 2);
    memcpy(out + o, data + head_len + 2, rest);
    *out_n = o + rest;
    return out;
}

static void start_tunnel(ls_worker *W, ls_session *s, const char *resp, size_t n);

/* A reused connection the server closed just as the request went out, or no
 * response at all: retry, 502, or the end of a body delimited by the close. */
static void server_lost(ls_worker *W, ls_session *s, int reset)
{
    ls_http *h = s->http;
    ls_listener *L = s->L;
    if (h->resp_head) {
        /* relayed as read: the body ran until the server closed */
        h->keep_client = 0;
        h->backend_reusable = 0;
        response_done(W, s);
        return;
    }
    if (!h->response_started) {
        int idempotent = !strcmp(h->method, "GET") || !strcmp(h->method, "HEAD") ||
                         !strcmp(h->method, "OPTIONS") || !strcmp(h->method, "PUT") ||
                         !strcmp(h->method, "DELETE") || !strcmp(h->method, "TRACE");
        if (h->backend_requests > 1 && h->req_complete && idempotent &&
            !(h->flags & H_HAS_BODY) && s->attempts <= L->cfg.retries) {
            /* nothing was processed: send it again on a fresh connection */
            drop_server_conn(W, s);
            h->reused = 0;
            h->req_sent = 0;
            h->out.off = h->out.len = 0;
            buf_append(&h->out, h->rhead.p + h->rhead.off, h->rhead.len);
            llhttp_init(&h->resp, HTTP_RESPONSE, &resp_settings);
            h->resp.data = s;
            s->attempts++;
            h->t_connect_start = W->now_us;
            do_connect(W, s);
            return;
        }
        http_answer(W, s, 502, reset ? LS_HEND_SERVER_RESET : LS_HEND_SERVER_CLOSE, 0);
        return;
    }
    http_abort(W, s, LS_HEND_SERVER_ABORT);
}

/* ---------------------------------------------------------------------------------- */
/* moving bytes                                                                        */

/* The client connection broke (a reset, a send error). */
static void client_failed(ls_worker *W, ls_session *s)
{
    if (s->http->exchange)
        http_abort(W, s, LS_HEND_CLIENT_RESET);
    else
        finish(W, s, LS_END_CLIENT_RESET, 0);
}

static int flush_client(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    if (!h->cout.len || !s->wr[0])
        return 0;
    ssize_t n = send(s->fd[0], h->cout.p + h->cout.off, h->cout.len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            s->wr[0] = 0;
            return 0;
        }
        if (errno == EINTR)
            return 1;
        client_failed(W, s);
        return 1;
    }
    buf_consume(&h->cout, (size_t)n);
    if (!h->cout.len) {
        buf_free(&h->cout);
        if (h->closing)
            finish(W, s, LS_END_CLIENT_CLOSE, 0);
    }
    return 1;
}

static int flush_server(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    if (!h->connected)
        return 0;
    int moved = 0;
    if (h->out.len && s->wr[1]) {
        ssize_t n = send(s->fd[1], h->out.p + h->out.off, h->out.len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                s->wr[1] = 0;
                return 0;
            }
            if (errno == EINTR)
                return 1;
            server_lost(W, s, 1);
            return 1;
        }
        h->head_written = 1;
        buf_consume(&h->out, (size_t)n);
        moved = 1;
    }
    if (!h->out.len && h->req_complete && !h->req_sent) {
        h->req_sent = 1;
        h->t_sent = W->now_us;
        if (h->tkind == T_CLIENT) {
            h->tkind = T_SERVER;
            timer_set(W, s, W->now_us + s->L->hcfg.server_ms * 1000);
        }
    }
    return moved;
}

static int read_server(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    if (!h->connected || !s->rd[1] || h->cout.len)
        return 0;
    char *buf = W->buf;
    ssize_t n = recv(s->fd[1], buf, (size_t)W->e->bufsize, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            s->rd[1] = 0;
            return 0;
        }
        if (errno == EINTR)
            return 1;
        server_lost(W, s, 1);
        return 1;
    }
    if (n == 0) {
        s->rd[1] = 0;
        if (h->resp_head && h->resp_eof && !h->resp_done) {
            llhttp_finish(&h->resp); /* the body ends with the close */
            h->keep_client = 0;
            h->backend_reusable = 0;
            response_done(W, s);
            return 1;
        }
        server_lost(W, s, 0);
        return 1;
    }
    if (n < W->e->bufsize && !s->rdhup[1])
        s->rd[1] = 0;
    if (h->tkind == T_SERVER)
        timer_set(W, s, W->now_us + s->L->hcfg.server_ms * 1000);
    int err = llhttp_execute(&h->resp, buf, (size_t)n);
    size_t used = (size_t)n;
    int upgraded = 0;
    if (err == HPE_PAUSED) {
        used = (size_t)(llhttp_get_error_pos(&h->resp) - buf);
        if (used < (size_t)n)
            h->backend_reusable = 0; /* bytes after a complete response: dropped */
    } else if (err == HPE_PAUSED_UPGRADE) {
        upgraded = 1;
    } else if (err != HPE_OK) {
        if (!h->resp_head) {
            http_answer(W, s, 502, LS_HEND_SERVER_ERROR, 0);
        } else {
            http_abort(W, s, LS_HEND_SERVER_ERROR);
        }
        return 1;
    }
    if (upgraded) {
        start_tunnel(W, s, buf, (size_t)n);
        return 1;
    }
    const char *data = buf;
    char *rewritten = NULL;
    if (h->resp_first && used) {
        h->resp_first = 0;
        size_t m;
        if (h->resp_head && h->resp_keep && !keeps_connection(s) &&
            (rewritten = close_head(buf, used, &m)) != NULL) {
            data = rewritten;
            used = m;
        }
    }
    to_client(W, s, data, used);
    free(rewritten);
    if (s->state == ST_CLOSED)
        return 1;
    if (h->resp_done)
        response_done(W, s);
    return 1;
}

/* An exchange for a request that never got a complete head (answered 400 or
 * 408 by us): it is counted and logged like any other. */
static void own_exchange(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    h->requests++;
    h->exchange = 1;
    h->logged = 0;
    h->response_started = 0;
    if (!h->parsing) {
        h->t_begin = W->now_us;
        h->t_head = -1;
    }
    h->t_connect = -1;
    h->t_sent = h->t_response = -1;
}

static void parse_failed(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    int status = h->bad_status ? h->bad_status : 400;
    h->bad_status = 0;
    if (h->exchange) {
        if (!h->head_written) {
            /* the body of the request in flight is malformed and nothing of it
             * left yet: refuse it whole */
            h->out.off = h->out.len = 0;
            http_answer(W, s, status, LS_HEND_BAD_REQUEST, 0);
        } else {
            /* part of it is at the server already: nothing more can be answered */
            http_abort(W, s, LS_HEND_BAD_REQUEST_BODY);
        }
        return;
    }
    own_exchange(W, s);
    http_answer(W, s, status, LS_HEND_BAD_REQUEST, 0);
}

/* Run the request parser over data; returns how much it took. */
static size_t parse_request(ls_worker *W, ls_session *s, const char *data, size_t n)
{
    ls_http *h = s->http;
    if (h->req_paused || h->parse_error || !n)
        return 0;
    int err = llhttp_execute(&h->req, data, n);
    if (err == HPE_OK)
        return n;
    if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
        h->req_paused = 1;
        if (err == HPE_PAUSED_UPGRADE)
            h->upgrade_wait = 1;
        return (size_t)(llhttp_get_error_pos(&h->req) - data);
    }
    h->parse_error = 1;
    return n;
}

static int read_client(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    int moved = 0;
    if (h->closing)
        return 0;
    /* what is buffered first: pipelined requests, once the parser is resumed */
    if (h->in.len && !h->req_paused && !h->parse_error) {
        size_t used = parse_request(W, s, h->in.p + h->in.off, h->in.len);
        buf_consume(&h->in, used);
        moved = 1;
    } else {
        if (!s->rd[0] || h->client_eof || h->upgrade_wait)
            return 0;
        if (h->out.len >= PENDING_LIMIT || h->in.len >= IN_LIMIT)
            return 0;
        ssize_t n = recv(s->fd[0], W->buf, (size_t)W->e->bufsize, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                s->rd[0] = 0;
                return 0;
            }
            if (errno == EINTR)
                return 1;
            client_failed(W, s);
            return 1;
        }
        if (n == 0) {
            s->rd[0] = 0;
            h->client_eof = 1;
            if (!h->exchange && !h->parsing && !h->in.len)
                finish(W, s, LS_END_CLIENT_CLOSE, 0);
            return 1;
        }
        if (n < W->e->bufsize && !s->rdhup[0])
            s->rd[0] = 0;
        h->bytes_in += (uint64_t)n;
        count(W, s, 0, n);
        if (h->parsing && !h->head_done) {
            /* a head still incomplete after an earlier read: bound what
             * llhttp is made to wait for (a header value dripping in) */
            h->head_bytes += (uint32_t)n;
            if (h->head_bytes > (uint32_t)s->L->hcfg.max_head_size) {
                h->bad_status = 431;
                h->parse_error = 1;
            }
        }
        if (!h->parse_error) {
            size_t used = 0;
            if (!h->in.len)
                used = parse_request(W, s, W->buf, (size_t)n);
            if (used < (size_t)n && buf_append(&h->in, W->buf + used, (size_t)n - used) < 0) {
                finish(W, s, LS_END_CLIENT_RESET, 0);
                return 1;
            }
            if (used == 0 && h->in.len == (uint32_t)n) {
                /* appended whole: parse from the buffer */
                size_t u = parse_request(W, s, h->in.p + h->in.off, h->in.len);
                buf_consume(&h->in, u);
            }
        }
        moved = 1;
    }
    if (h->parse_error) {
        parse_failed(W, s);
        return 1;
    }
    if (h->head_done && !h->exchange) {
        h->head_done = 2; /* taken */
        start_exchange(W, s);
    }
    return moved;
}

/* Everything that can progress, until nothing does (or the session ends);
 * what is to be written waits for the end of the round (flush_later). */
static void http_progress(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    int round = 0;
    for (; round < LS_ROUNDS; round++) {
        if (s->state == ST_CLOSED || s->state == ST_RELAY)
            return;
        int moved = 0;
        if (s->state == ST_HTTP) {
            moved |= read_server(W, s);
            if (s->state == ST_CLOSED || s->state == ST_RELAY)
                return;
        }
        moved |= read_client(W, s);
        if (!moved)
            break;
    }
    if (s->state == ST_CLOSED || s->state == ST_RELAY)
        return;
    if (h->cout.len || (h->connected && (h->out.len || (h->req_complete && !h->req_sent))))
        flush_later(W, s);
    if (round == LS_ROUNDS)
        ready_push(W, s); /* let the other sessions of this round go first */
}

/* The end of an event round: write what the round produced. A session that
 * moved bytes is looked at again in this round's ready pass (the client may
 * have taken what held the server's next read back). */
static void http_flush_round(ls_worker *W)
{
    while (W->http_flush) {
        ls_session *s = W->http_flush;
        flush_cancel(W, s);
        if (s->state == ST_CLOSED)
            continue;
        int moved = flush_client(W, s);
        if (s->state == ST_CLOSED)
            continue;
        if (s->state == ST_HTTP)
            moved |= flush_server(W, s);
        if (moved && s->state == ST_HTTP)
            ready_push(W, s);
    }
}

/* 101 Switching Protocols: from here on an engine TCP relay. */
static void start_tunnel(ls_worker *W, ls_session *s, const char *resp, size_t n)
{
    ls_http *h = s->http;
    flush_cancel(W, s); /* the relay's buffers take what is pending */
    h->tunnel = 1;
    h->response_started = 1;
    h->bytes_out += n;
    count(W, s, 1, (ssize_t)n);
    ls_dir *up = &s->dir[0], *down = &s->dir[1];
    /* the 101 and what followed it, for the client */
    ls_buf b = {0};
    if (buf_append(&b, h->cout.p ? h->cout.p + h->cout.off : "", h->cout.len) < 0 ||
        buf_append(&b, resp, n) < 0) {
        buf_free(&b);
        http_abort(W, s, LS_HEND_SERVER_ERROR);
        return;
    }
    buf_free(&h->cout);
    down->buf = b.p;
    down->off = b.off;
    down->len = b.len;
    /* what the client sent after its request head, for the server */
    ls_buf u = {0};
    buf_append(&u, h->out.p ? h->out.p + h->out.off : "", h->out.len);
    buf_append(&u, h->in.p ? h->in.p + h->in.off : "", h->in.len);
    buf_free(&h->out);
    buf_free(&h->in);
    up->buf = u.p;
    up->off = u.off;
    up->len = u.len;
    up->splice = down->splice = 0;
    h->connected = 0;
    h->exchange = 1;
    s->bytes[0] = s->bytes[1] = 0;
    s->rd[0] = s->rd[1] = 1;
    relay_start(W, s, s->L->hcfg.tunnel_ms);
}

/* ---------------------------------------------------------------------------------- */
/* the engine's hooks                                                                  */

/* sess_connect's hook: the session was admitted (maxconn): wait for a head. */
static void http_admitted(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    s->state = ST_HTTP;
    h->t_wait = s->start_us < W->now_us - 1000 ? secs(W->now_us - s->start_us) : 0.0;
    h->tkind = T_HEAD;
    timer_set(W, s, W->now_us + s->L->hcfg.request_ms * 1000);
    http_progress(W, s);
}

static void http_event(ls_worker *W, ls_session *s, int side, uint32_t ev)
{
    ls_http *h = s->http;
    if (ev & EPOLLERR) {
        if (side == 0) {
            client_failed(W, s);
            return;
        }
        if (!h->connected)
            return; /* a stale event of a connection gone back to the pool */
        server_lost(W, s, 1);
        if (s->state != ST_CLOSED)
            http_progress(W, s);
        return;
    }
    if (ev & EPOLLIN)
        s->rd[side] = 1;
    if (ev & (EPOLLRDHUP | EPOLLHUP))
        s->rd[side] = s->rdhup[side] = 1;
    if (ev & (EPOLLOUT | EPOLLHUP))
        s->wr[side] = 1;
    if (s->state == ST_HTTP)
        http_progress(W, s);
}

static void http_timeout(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    timer_del(W, s);
    switch (h->tkind) {
    case T_IDLE:
        if (!h->parsing) {
            finish(W, s, LS_END_CLIENT_TIMEOUT, 0); /* keep-alive timeout: silent */
            return;
        }
        /* fall through: a head started */
    case T_HEAD:
        if (!h->exchange) {
            own_exchange(W, s);
            http_answer(W, s, 408, LS_HEND_REQUEST_TIMEOUT, 0);
        } else {
            http_abort(W, s, LS_HEND_REQUEST_TIMEOUT);
        }
        return;
    case T_CLIENT:
        if (h->response_started)
            http_abort(W, s, LS_HEND_CLIENT_TIMEOUT);
        else
            http_answer(W, s, 408, LS_HEND_CLIENT_TIMEOUT, 0);
        return;
    case T_SERVER:
        if (h->response_started)
            http_abort(W, s, LS_HEND_SERVER_TIMEOUT);
        else
            http_answer(W, s, 504, LS_HEND_SERVER_TIMEOUT, 0);
        return;
    default: /* T_CLOSING: the client does not take our last bytes */
        finish(W, s, LS_END_CLIENT_TIMEOUT, 0);
        return;
    }
}

/* finish()'s hook, before the descriptors close: what an HTTP connection
 * leaves behind (the 503 of a queue timeout, the record of an exchange cut
 * short, the server's count). */
static void http_finish(ls_worker *W, ls_session *s, int reason, int arg)
{
    ls_http *h = s->http;
    ls_listener *L = s->L;
    flush_cancel(W, s);
    if (h->conn) {
        h->conn->fd[1] = -1; /* finish() closes it as the session's */
        conn_free(W, h->conn);
        h->conn = NULL;
    }
    if (reason == LS_END_QUEUE_TIMEOUT && answers[503].data) {
        ssize_t r = send(s->fd[0], answers[503].data, (size_t)answers[503].len,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)r;
    }
    if (h->exchange && !h->logged) {
        int end;
        switch (reason) {
        case LS_END_CLIENT_TIMEOUT:
        case LS_END_SERVER_TIMEOUT:
            end = h->tunnel ? LS_HEND_TUNNEL_TIMEOUT : LS_HEND_CLIENT_TIMEOUT;
            break;
        case LS_END_CLIENT_RESET:
            end = LS_HEND_CLIENT_RESET;
            break;
        case LS_END_SERVER_RESET:
            end = LS_HEND_SERVER_RESET;
            break;
        case LS_END_SERVER_CLOSE:
            end = LS_HEND_SERVER_CLOSE;
            break;
        case LS_END_SHUTDOWN:
            end = LS_HEND_SHUTDOWN;
            break;
        default:
            end = LS_HEND_CLIENT_CLOSE;
            break;
        }
        if (h->tunnel)
            h->log_slot = s->slot >= 0 ? s->slot : h->log_slot;
        http_log(W, s, end, reason == LS_END_SHUTDOWN ? arg : 0);
    }
    if (s->slot >= 0) {
        __atomic_fetch_sub(&slot_shared(L, s->slot)->live, 1, __ATOMIC_RELAXED);
        s->slot = -1;
    }
    if (h->requests == 0)
        L->wstats[W->id].denied++;
}

/* run_commands' CMD_HTTP_STOP: close the connections waiting between requests. */
static int http_stop_idle(ls_worker *W, ls_listener *L)
{
    int closed = 0;
    ls_session *s = W->all;
    while (s) {
        ls_session *n = s->anext;
        if (s->L == L && s->http && s->state == ST_HTTP && !s->http->exchange &&
            !s->http->parsing && !s->http->in.len) {
            finish(W, s, LS_END_CLIENT_CLOSE, 0);
            closed++;
        }
        s = n;
    }
    http_pool_shutdown(W, L, -1);
    return closed;
}

/* ---------------------------------------------------------------------------------- */
/* the control plane's side                                                            */

void ls_listener_configure_http(ls_engine *e, int lid, const ls_hconfig *cfg)
{
    ls_listener *L = get_listener(e, lid);
    if (!L)
        return;
    pthread_mutex_lock(&L->lock);
    L->hcfg = *cfg;
    if (!llhttp_ready)
        L->hcfg.enabled = 0;
    L->http_stopping = 0;
    pthread_mutex_unlock(&L->lock);
}

int ls_http_stop(ls_engine *e, int lid)
{
    ls_listener *L = get_listener(e, lid);
    if (!L)
        return 0;
    L->http_stopping = 1;
    return post_all_sync(e, CMD_HTTP_STOP, L, -1, 0);
}

int64_t ls_http_idle_server_conns(ls_engine *e, int lid)
{
    ls_listener *L = get_listener(e, lid);
    return L ? __atomic_load_n(&L->http_pooled, __ATOMIC_RELAXED) : 0;
}
