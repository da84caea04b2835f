/* http_exchange.c, mode http: the per-request work of an HTTP listener, run
 * by the engine's workers (part of the unity build engine.c, whose sessions,
 * timers, picking and records it uses; the engine calls it through the hooks
 * of proto_http, in http_session.c).
 *
 * Theory of operation
 * -------------------
 * An HTTP session is an engine session (ls_session) with an ls_http attached:
 * fd[0] the client, fd[1] the server connection of the exchange in flight (or
 * -1). Admission (maxconn, the queue) is the engine's; once admitted the
 * session is in ST_HTTP and the http_*.c files drive it:
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

/* The status lines of the redirects (loadstone.http.message.STATUS_LINES). */
static const char *const status_lines[600] = {
    [301] = "HTTP/1.1 301 Moved Permanently\r\n",
    [302] = "HTTP/1.1 302 Found\r\n",
    [303] = "HTTP/1.1 303 See Other\r\n",
    [307] = "HTTP/1.1 307 Temporary Redirect\r\n",
    [308] = "HTTP/1.1 308 Permanent Redirect\r\n",
};

/* The answers the proxy makes itself, as loadstone.http.message.ANSWERS. */
static struct {
    char *data;
    int len;
} answers[600];

static double secs(int64_t us) { return (double)us / 1e6; }

/* Whether the listener's `log` wants a line for this request (the pure
 * path's sessionlog.logged): `errors` keeps one that did not end ok or got a
 * 5xx, `none` none. */
static int http_logged(const ls_session *s, int end)
{
    int mode = s->L->cfg.log_mode;
    if (mode == LS_LOG_ALL)
        return 1;
    return mode == LS_LOG_ERRORS && (end != LS_HEND_OK || s->http->status >= 500);
}

/* The record of a request that ended, for the control plane to write its log
 * line; none for a request the listener's `log` leaves out, so that with
 * `log: none` (or `errors` and all well) the control plane is not woken for
 * it. Every request is counted all the same (metrics_http: the status API's and
 * Prometheus' counts). */
static void http_record(ls_worker *W, ls_session *s, int end, int arg)
{
    ls_http *h = s->http;
    ls_record *r = http_logged(s, end) ? new_record(W) : NULL;
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
    tls_log_fields(s, r->tls, sizeof r->tls); /* version/cipher/sni on a TLS listener */
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
}

static void http_log(ls_worker *W, ls_session *s, int end, int arg)
{
    ls_http *h = s->http;
    metrics_http(W, s, h->status, h->log_slot, W->now_us - h->t_begin);
    http_record(W, s, end, arg);
    /* the request's bytes were read before its server was known */
    if (h->log_slot >= 0)
        slot_w(s->L, W->id, h->log_slot)->bytes_in += h->bytes_in;
    h->bytes_in = h->bytes_out = 0;
    h->t_wait = 0;
    h->logged = 1;
}

static void close_after_write(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    h->closing = 1;
    if (!h->cout.len) {
        close_client(W, s); /* http_linger.c */
        return;
    }
    h->tkind = T_CLOSING; /* its deadline runs (close_client keeps it) */
    flush_later(W, s);
    timer_set(W, s, W->now_us + s->L->hcfg->client_ms * 1000);
}

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
    if (!(h->keep_client && h->keep_alive) || s->L->http_stopping || h->upgrade ||
        last_before_eof(h)) {
        close_after_write(W, s);
        return;
    }
    /* the next request: parse what is buffered (after the client's FIN too:
     * the complete requests it pipelined before it), or wait for it */
    h->req_paused = 0;
    llhttp_resume(&h->req);
    h->head_done = 0;
    h->tkind = T_IDLE;
    timer_set(W, s, W->now_us + s->L->hcfg->keep_alive_ms * 1000);
}

/* `redirect` on the listener: every request answered with the same URL in
 * another scheme, then the connection closes (the pure path's _redirect and
 * loadstone.http.message.redirect, byte for byte). No Host (HTTP/1.0): no
 * URL to send the client to, 400. */
static void http_redirect(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    const ls_hconfig *c = s->L->hcfg;
    if (!h->has_host || !h->host_len) {
        http_answer(W, s, 400, LS_HEND_BAD_REQUEST, 0);
        return;
    }
    const char *base = h->head.p + h->head.off;
    int code = c->redirect_code;
    const char *line = code > 0 && code < 600 ? status_lines[code] : NULL;
    ls_buf b = {0};
    int err = !line || buf_append(&b, line, strlen(line));
    err |= buf_append(&b, "location: ", 10);
    err |= buf_append(&b, c->redirect_scheme, strlen(c->redirect_scheme));
    err |= buf_append(&b, "://", 3);
    err |= buf_append(&b, base + h->host, h->host_len);
    err |= buf_append(&b, base, h->url_len);
    static const char rest[] = "\r\ncontent-length: 0\r\ncache-control: no-cache\r\n"
                               "connection: close\r\n\r\n";
    err |= buf_append(&b, rest, sizeof rest - 1);
    if (err) {
        buf_free(&b);
        http_answer(W, s, 500, LS_HEND_BAD_REQUEST, 0);
        return;
    }
    h->status = code;
    to_client(W, s, b.p + b.off, b.len);
    buf_free(&b);
    if (s->state == ST_CLOSED)
        return;
    http_log(W, s, LS_HEND_REDIRECT, 0);
    h->exchange = 0;
    close_after_write(W, s);
}

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
    h->rhold.off = h->rhold.len = 0;
    if (L->hcfg->redirect_code) {
        http_redirect(W, s);
        return;
    }
    llhttp_init(&h->resp, HTTP_RESPONSE, &resp_settings);
    h->resp.data = s;
    if (h->flags & H_HAS_BODY && !h->req_complete) {
        h->tkind = T_CLIENT;
        timer_set(W, s, W->now_us + L->hcfg->client_ms * 1000);
    } else {
        h->tkind = T_SERVER;
        timer_set(W, s, W->now_us + L->hcfg->server_ms * 1000);
    }
    h->t_connect_start = W->now_us;
    s->state = ST_PICKING;
    sess_connect(W, s); /* pooled, connecting, delayed, or answered 503 */
}

/* the server connection of the exchange is up (proto_http.connected) */
static void http_connected(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    timer_del(W, s);
    s->state = ST_HTTP;
    h->connected = 1;
    h->backend_requests = 1;
    h->backend_max = conn_max_requests(W, s->L->hcfg->max_requests);
    h->t_connect = secs(W->now_us - h->t_connect_start);
    h->log_slot = s->slot;
    int64_t ms = h->tkind == T_CLIENT ? s->L->hcfg->client_ms : s->L->hcfg->server_ms;
    timer_set(W, s, W->now_us + ms * 1000);
    http_progress(W, s);
}

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
            h->rhold.off = h->rhold.len = 0; /* a head the lost connection began */
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

/* 101 Switching Protocols: from here on an engine TCP relay. */
static void start_tunnel(ls_worker *W, ls_session *s, const char *resp, size_t n)
{
    ls_http *h = s->http;
    flush_cancel(s); /* the relay's buffers take what is pending */
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
    relay_start(W, s, s->L->hcfg->tunnel_ms);
}
