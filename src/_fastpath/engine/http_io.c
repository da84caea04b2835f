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

/* Will the client connection stay open after the response in flight? */
static int keeps_connection(ls_session *s)
{
    ls_http *h = s->http;
    return h->keep_alive && h->keep_client && !h->client_eof && !s->L->http_stopping &&
           (h->req_complete || !(h->flags & H_HAS_BODY));
}

/* close_head and kept_open_head of loadstone/http/response.py: a relayed head
 * without its Connection and Keep-Alive lines and with `add` (a field line)
 * instead; `v11`: its status line made to say HTTP/1.1. Returns a malloc'ed
 * copy, or NULL to send the bytes unchanged (the head not all here, or interim
 * responses first). */
static char *edit_head(const char *data, size_t n, const char *add, int v11, size_t *out_n)
{
    /* llhttp skips empty lines before a status line (a server that ended the
     * previous body with one CRLF too many): they are not the end of this
     * head. Relayed as they are, the head after them rewritten. */
    size_t lead = 0;
    while (lead < n && (data[lead] == '\r' || data[lead] == '\n'))
        lead++;
    const char *all = data;
    data += lead;
    n -= lead;
    const char *end = memmem(data, n, "\r\n\r\n", 4);
    if (!end || (n > 10 && (memcmp(data, "HTTP/1.1 1", 10) == 0 || memcmp(data, "HTTP/1.0 1", 10) == 0)))
        return NULL;
    size_t head_len = (size_t)(end - data) + 2; /* up to the CRLF of the last field */
    size_t add_len = strlen(add);
    char *out = malloc(lead + n + add_len + 2);
    if (!out)
        return NULL;
    memcpy(out, all, lead);
    size_t o = lead, i = 0;
    while (i < head_len) {
        const char *eol = memmem(data + i, head_len - i, "\r\n", 2);
        size_t line = eol ? (size_t)(eol - (data + i)) + 2 : head_len - i;
        int cut = i > 0 && ((line >= 11 && strncasecmp(data + i, "connection:", 11) == 0) ||
                            (line >= 11 && strncasecmp(data + i, "keep-alive:", 11) == 0));
        if (!cut) {
            memcpy(out + o, data + i, line);
            if (i == 0 && v11 && line > 8)
                memcpy(out + o, "HTTP/1.1", 8);
            o += line;
        }
        i += line;
    }
    memcpy(out + o, add, add_len);
    o += add_len;
    memcpy(out + o, "\r\n", 2);
    o += 2;
    size_t rest = n - (head_len + 2);
    memcpy(out + o, data + head_len + 2, rest);
    *out_n = o + rest;
    return out;
}

/* The head that goes to the client of the response in flight, at the start of
 * the first read of it (`data`): NULL when the bytes go unchanged, else a
 * malloc'ed copy. The server's Connection is its connection's (hop-by-hop): a
 * server closing after a framed response leaves the client connection open as
 * HAProxy does (a close-delimited body is relayed as it came, so its end is the
 * client's close too); a client connection closing is told so. */
static char *head_for_client(ls_session *s, const char *data, size_t n, size_t *out_n)
{
    ls_http *h = s->http;
    if (h->resp_keep)
        return keeps_connection(s) ? NULL : edit_head(data, n, "Connection: close\r\n", 0, out_n);
    char *kept = NULL;
    if (keeps_connection(s) && !h->resp_eof)
        kept = edit_head(data, n, h->http10 ? "Connection: keep-alive\r\n" : "", 1, out_n);
    if (!kept)
        h->keep_client = 0; /* the server's close reaches the client */
    return kept;
}

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
    ssize_t n = sess_send(s, 0, h->cout.p + h->cout.off, h->cout.len, 0);
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
        if (h->resp_head && (rewritten = head_for_client(s, buf, used, &m)) != NULL) {
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
    if (s->state == ST_HTTP)
        http_progress(W, s);
}
