/* http_io.c: the HTTP engine's I/O (part of the unity build engine.c): its
 * buffers, reading and parsing the client's requests, relaying the server's
 * responses, and the writes that wait for the end of the worker's round. */

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

/* Writes wait for the end of the worker's event round (http_flush_round), as
 * HAProxy sends after its event pass: on loopback a send wakes the peer,
 * which then preempts the worker once per write; at the end of the round the
 * peers woken first are still running for the later writes. */
static void flush_later(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    if (!ls_list_linked(&h->flink))
        ls_list_push_front(&W->http_flush, &h->flink);
}

static void flush_cancel(ls_session *s)
{
    ls_http *h = s->http;
    if (ls_list_linked(&h->flink))
        ls_list_del(&h->flink);
}

/* Queue bytes for the client: written at once when it can take them. */
static void to_client(ls_worker *W, ls_session *s, const char *data, size_t n)
{
    ls_http *h = s->http;
    h->response_started = 1;
    h->bytes_out += n;
    count(W, s, 1, (ssize_t)n);
    if (n >= DIRECT_SEND_MIN && !h->cout.len && s->wr[0]) {
        ssize_t m = sess_send(s, 0, data, n, 0);
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

/* Is the response in flight the last one because the client shut its side
 * (the pure path's Exchange._last_before_eof)? The requests it pipelined
 * before its FIN are answered first (http_parse.c: request_buffered), so that
 * only the last response says `Connection: close`: one in the middle saying
 * so would be followed by more, which a client may take for a protocol error.
 * Nothing is scanned until the FIN was read. */
static int last_before_eof(const ls_http *h)
{
    return h->client_eof && (h->upgrade || !request_buffered(h));
}

/* Will the client connection stay open after the response in flight? */
static int keeps_connection(ls_session *s)
{
    ls_http *h = s->http;
    return h->keep_alive && h->keep_client && !last_before_eof(h) && !s->L->http_stopping &&
           (h->req_complete || !(h->flags & H_HAS_BODY));
}

/* The listener's response_headers, or NULL when it has none. */
static const ls_hrules *resp_rules(const ls_session *s)
{
    const ls_hrules *r = &s->L->hcfg->resp_rules;
    return r->ndrop || r->lines_len ? r : NULL;
}

/* memmem(p, n, "\r\n", 2) and memmem(p, n, "\r\n\r\n", 4) by memchr, which
 * scans by words where glibc's memmem goes byte by byte for so short a
 * needle: each relayed head is searched line by line. */
static const char *find_crlf(const char *p, size_t n)
{
    const char *end = p + n;
    while (p < end) {
        const char *cr = memchr(p, '\r', (size_t)(end - p));
        if (!cr || end - cr < 2)
            return NULL;
        if (cr[1] == '\n')
            return cr;
        p = cr + 1;
    }
    return NULL;
}

static const char *find_blank_line(const char *p, size_t n)
{
    const char *end = p + n;
    while (p < end) {
        const char *cr = find_crlf(p, (size_t)(end - p));
        if (!cr || end - cr < 4)
            return NULL;
        if (cr[2] == '\r' && cr[3] == '\n')
            return cr;
        p = cr + 2;
    }
    return NULL;
}

/* A field line named `name` (lower case, with its colon)? */
static int line_named(const char *line, size_t len, const char *name, size_t name_len)
{
    return len >= name_len && (line[0] | 0x20) == name[0] &&
           strncasecmp(line, name, name_len) == 0;
}

/* One head (`len` bytes up to the CRLF of its last field) copied to out + *o
 * without its Connection and Keep-Alive lines nor the fields rules `r` drop,
 * with the rules' lines, then `add`, then the blank line; `v11`: its status
 * line made to say HTTP/1.1. */
static void put_head(char *out, size_t *o, const char *data, size_t len, const char *add,
                     int v11, const ls_hrules *r)
{
    size_t i = 0;
    while (i < len) {
        const char *eol = find_crlf(data + i, len - i);
        size_t line = eol ? (size_t)(eol - (data + i)) + 2 : len - i;
        int cut = i > 0 && (line_named(data + i, line, "connection:", 11) ||
                            line_named(data + i, line, "keep-alive:", 11));
        if (!cut && i > 0 && r && r->ndrop) {
            const char *colon = memchr(data + i, ':', line);
            cut = colon && rule_drops(r, data + i, (size_t)(colon - (data + i)));
        }
        if (!cut) {
            memcpy(out + *o, data + i, line);
            if (i == 0 && v11 && line > 8)
                memcpy(out + *o, "HTTP/1.1", 8);
            *o += line;
        }
        i += line;
    }
    if (r) {
        memcpy(out + *o, r->lines, (size_t)r->lines_len);
        *o += (size_t)r->lines_len;
    }
    size_t add_len = strlen(add);
    memcpy(out + *o, add, add_len);
    *o += add_len;
    memcpy(out + *o, "\r\n", 2);
    *o += 2;
}

static int is_interim(const char *data, size_t n)
{
    return n > 10 &&
           (memcmp(data, "HTTP/1.1 1", 10) == 0 || memcmp(data, "HTTP/1.0 1", 10) == 0);
}

/* close_head and kept_open_head of loadstone/http/response.py: a relayed head
 * without its Connection and Keep-Alive lines and with `add` (a field line)
 * instead; `v11`: its status line made to say HTTP/1.1; `r`: the response
 * header rules applied to it and to the interim responses before it (as
 * ResponsePolicy.prepare: the fields they name go, their lines come before
 * `add`). Returns a malloc'ed copy, or NULL to send the bytes unchanged (the
 * head not all here, or interim responses first and no rules). With rules,
 * `data` may hold interim responses alone. */
static char *edit_head(const char *data, size_t n, const char *add, int v11, const ls_hrules *r,
                       size_t *out_n)
{
    /* llhttp skips empty lines before a status line (a server that ended the
     * previous body with one CRLF too many): they are not the end of this
     * head. Relayed as they are, the head after them rewritten. */
    size_t pos = 0, heads = 1;
    for (;;) { /* the interim responses: how many */
        while (pos < n && (data[pos] == '\r' || data[pos] == '\n'))
            pos++;
        if (!is_interim(data + pos, n - pos))
            break;
        const char *e = r ? find_blank_line(data + pos, n - pos) : NULL;
        if (!e)
            return NULL;
        pos = (size_t)(e - data) + 4;
        heads++;
    }
    const char *end = pos < n ? find_blank_line(data + pos, n - pos) : NULL;
    if (!end && (pos < n || heads == 1))
        return NULL; /* the head not all here */
    size_t rules_len = r ? (size_t)r->lines_len : 0;
    char *out = malloc(n + heads * rules_len + strlen(add) + 2);
    if (!out)
        return NULL;
    size_t o = 0, i = 0;
    for (;;) {
        size_t blank = i;
        while (i < n && (data[i] == '\r' || data[i] == '\n'))
            i++;
        memcpy(out + o, data + blank, i - blank);
        o += i - blank;
        if (!is_interim(data + i, n - i))
            break;
        const char *e = find_blank_line(data + i, n - i);
        put_head(out, &o, data + i, (size_t)(e - (data + i)) + 2, "", 0, r);
        i = (size_t)(e - data) + 4;
    }
    if (end) {
        size_t len = (size_t)(end - (data + i)) + 2; /* up to the CRLF of the last field */
        put_head(out, &o, data + i, len, add, v11, r);
        i += len + 2;
    }
    memcpy(out + o, data + i, n - i);
    *out_n = o + n - i;
    return out;
}

/* The head that goes to the client of the response in flight, at the start of
 * the first read of it (`data`): NULL when the bytes go unchanged, else a
 * malloc'ed copy. The server's Connection is its connection's (hop-by-hop): a
 * server closing after a framed response leaves the client connection open as
 * HAProxy does (a close-delimited body is relayed as it came, so its end is the
 * client's close too); a client connection closing is told so. With response
 * header rules every head is rewritten (read_server holds it until it is all
 * here). */
static char *head_for_client(ls_session *s, const char *data, size_t n, size_t *out_n)
{
    ls_http *h = s->http;
    const ls_hrules *r = resp_rules(s);
    if (h->resp_keep) {
        if (keeps_connection(s)) /* with rules, the server's keep-alive said again */
            return r ? edit_head(data, n, h->http10 ? "Connection: keep-alive\r\n" : "", 0, r,
                                 out_n)
                     : NULL;
        return edit_head(data, n, "Connection: close\r\n", 0, r, out_n);
    }
    char *kept = NULL;
    if (keeps_connection(s) && !h->resp_eof)
        kept = edit_head(data, n, h->http10 ? "Connection: keep-alive\r\n" : "", 1, r, out_n);
    if (!kept) {
        h->keep_client = 0; /* the server's close reaches the client */
        if (r) /* its Connection line goes with the others: ours says it */
            kept = edit_head(data, n, "Connection: close\r\n", 0, r, out_n);
    }
    return kept;
}

/* Response header rules: the start of a response is held until its head (after
 * any interim responses, relayed at once) is all read, so that the rules see
 * it whole. 1 while holding (the bytes are taken), 0 when `buf` goes on (with
 * what was held before it: *data and *n then name it all), -1 on a failure
 * (the exchange is ended). */
static int hold_head(ls_worker *W, ls_session *s, const char *buf, const char **data, size_t *n)
{
    ls_http *h = s->http;
    if (h->resp_head && !h->rhold.len)
        return 0; /* all in this read: the common case, no copy */
    if (buf_append(&h->rhold, buf, *n) < 0 || h->rhold.len > IN_LIMIT) {
        if (h->response_started)
            http_abort(W, s, LS_HEND_SERVER_ERROR);
        else
            http_answer(W, s, 502, LS_HEND_SERVER_ERROR, 0);
        return -1;
    }
    const char *held = h->rhold.p + h->rhold.off;
    if (h->resp_head) {
        *data = held;
        *n = h->rhold.len;
        return 0;
    }
    /* complete interim responses (100 Continue) go on now: a client may wait
     * for one before it sends its body */
    const char *last = NULL, *e = held;
    while ((e = memmem(e, h->rhold.len - (size_t)(e - held), "\r\n\r\n", 4)) != NULL) {
        e += 4;
        last = e;
    }
    if (last) {
        size_t k = (size_t)(last - held), m = k;
        char *edited = edit_head(held, k, "", 0, resp_rules(s), &m);
        to_client(W, s, edited ? edited : held, m);
        free(edited);
        if (s->state == ST_CLOSED)
            return -1;
        buf_consume(&h->rhold, k);
    }
    return 1;
}

/* The client connection broke (a reset, a send error). */
static void client_failed(ls_worker *W, ls_session *s)
{
    if (s->http->exchange)
        http_abort(W, s, LS_HEND_CLIENT_RESET);
    else
        finish(W, s, LS_END_CLIENT_RESET, 0);
}

/* The last bytes before a close the client asked for (Connection: close, or
 * HTTP/1.0), with the whole request read: sent with MSG_MORE, so that the
 * close right after it puts its FIN on their segment (tcp_send_fin marks an
 * unsent tail) instead of sending one segment more, which on loopback the
 * worker also delivers. Only then: the client has nothing more to send, so the
 * close is never a reset that would throw the held bytes away; one that sent
 * more after all (the socket said readable since) gets a lingering close
 * (http_linger.c), whose shutdown(SHUT_WR) sends the held bytes and the FIN
 * as a close does. */
static int fin_rides_along(const ls_session *s)
{
    const ls_http *h = s->http;
    return h->closing && !h->keep_alive && h->req_complete && !h->in.len && !h->upgrade &&
           !s->tls;
}

static int flush_client(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    if (!h->cout.len || !s->wr[0])
        return 0;
    ssize_t n = sess_send(s, 0, h->cout.p + h->cout.off, h->cout.len,
                          fin_rides_along(s) ? MSG_MORE : 0);
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
            close_client(W, s); /* http_linger.c: at once, or lingering */
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
        ssize_t n = sess_send(s, 1, h->out.p + h->out.off, h->out.len, 0);
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
            timer_set(W, s, W->now_us + s->L->hcfg->server_ms * 1000);
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
    ssize_t n = sess_recv(s, 1, buf, (size_t)W->e->bufsize);
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
        timer_set(W, s, W->now_us + s->L->hcfg->server_ms * 1000);
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
        if (h->rhold.len) { /* a 101 held by hold_head: relayed as it came */
            if (buf_append(&h->rhold, buf, (size_t)n) < 0) {
                http_abort(W, s, LS_HEND_SERVER_ERROR);
                return 1;
            }
            start_tunnel(W, s, h->rhold.p + h->rhold.off, h->rhold.len);
            return 1;
        }
        start_tunnel(W, s, buf, (size_t)n);
        return 1;
    }
    const char *data = buf;
    char *rewritten = NULL;
    if (h->resp_first && used && (resp_rules(s) || h->rhold.len)) { /* (a reload between) */
        int held = hold_head(W, s, buf, &data, &used);
        if (held)
            return 1;
    }
    if (h->resp_first && used) {
        h->resp_first = 0;
        size_t m;
        if (h->resp_head && (rewritten = head_for_client(s, data, used, &m)) != NULL) {
            data = rewritten;
            used = m;
        }
    }
    to_client(W, s, data, used);
    free(rewritten);
    if (s->state == ST_CLOSED)
        return 1;
    h->rhold.off = h->rhold.len = 0;
    if (h->resp_done)
        response_done(W, s);
    return 1;
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
        if (s->proxy_watch && proxy_watch_client(W, s))
            return s->state == ST_CLOSED; /* a header from an untrusted client, or wait */
        ssize_t n = sess_recv(s, 0, W->buf, (size_t)W->e->bufsize);
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
            if (h->parsing) {
                /* A request cut short (its head or its body) can never end: the
                 * server connection and ours go now, as HAProxy frees both,
                 * rather than after the client timeout. */
                http_abort(W, s, LS_HEND_CLIENT_CLOSE);
                return 1;
            }
            if (!h->exchange && !h->in.len)
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
            if (h->head_bytes > (uint32_t)s->L->hcfg->max_head_size) {
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
    if (h->lingering) {
        linger_progress(W, s); /* http_linger.c: the close_notify, or the last bytes */
        return;
    }
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
    ls_http *h;
    while ((h = LS_LIST_FIRST(&W->http_flush, ls_http, flink))) {
        ls_session *s = h->sess;
        flush_cancel(s);
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
    note_event(s, side, ev);
    if (s->state == ST_HTTP || h->lingering) /* (a queue timeout's linger: EXPIRED) */
        http_progress(W, s);
}
