/* http_linger.c: the lingering close of an HTTP client connection (part of the
 * unity build engine.c), as nginx's lingering_close and HAProxy's do it.
 *
 * Closing a socket whose receive queue holds bytes we never read makes the
 * kernel answer with a RST instead of a FIN, and throw away what it had not
 * sent yet; the client's TCP may then discard the response it received but
 * had not read. That happens whenever we close while the client is still
 * sending: an answer of ours (400, 408, 503, a redirect) before its body was
 * read, a response that ended before the request did, pipelined requests
 * after a `Connection: close` one. Then, once the response is written, the
 * write side is shut (the FIN goes after it, and the MSG_MORE tail with it),
 * and what the client still sends is read and dropped until it closes, for
 * at most timeouts.linger (the listener's linger_ms; 0: no lingering),
 * giving up after LINGER_IDLE_US without a byte or past LINGER_BYTES. The
 * session keeps its maxconn place meanwhile (it holds a descriptor; a queue
 * timeout's 503 had none and takes none: http_queue_expired) but no server
 * connection, and a stop or shutdown ends it as any other.
 *
 * A close after a clean exchange (the whole request read, nothing buffered,
 * no readiness seen since the last read) closes at once: no syscall more.
 *
 * Over TLS the close_notify goes first (SSL_shutdown, right after the last
 * record of the response), then the FIN, and what comes after is read raw,
 * not decrypted: OpenSSL fails a read of application data once our
 * close_notify is sent (SSL_R_APPLICATION_DATA_AFTER_CLOSE_NOTIFY, a fatal
 * alert, then the reset this is about), and nothing of it will be answered:
 * the records only have to leave the kernel's receive queue. (So a client's
 * own close_notify is not noticed; its FIN, or the idle bound, ends it.)
 * The response's last record can leave the socket's send buffer full (a
 * client that is not reading yet): SSL_shutdown then fails with
 * SSL_ERROR_WANT_WRITE, the alert (or what of it the socket did not take)
 * buffered inside OpenSSL, and calling SSL_shutdown again writes the rest
 * (ssl3_shutdown: alert_dispatch). Closing then would be the reset again, with
 * the response's tail still in the send buffer; so the session waits for the
 * socket's EPOLLOUT edge (lingering == LINGER_NOTIFY; what the client sends
 * meanwhile is read raw and dropped, as in the linger, so that a client
 * writing before it reads cannot block us both). Once it is out, the FIN and
 * the linger as above. A broken connection still closes at once.
 *
 * A clean exchange (or any close with timeouts.linger 0) waits the same way
 * (LINGER_NOTIFY_CLEAN), then closes at once: no linger (the client was not
 * sending, or no linger is wanted; what came meanwhile was read and dropped,
 * so the receive queue is empty at the close). Closing without
 * the wait gave the client the end of stream without our close_notify, which
 * a client reading a close-delimited body (an HTTP/1.0-style response
 * without Content-Length) cannot tell from a truncation. Where the
 * close_notify fits (the common case) this is the one SSL_shutdown that
 * finish() made before: no syscall more. A client's end of stream during
 * either wait does not end it: a client that shut its side after its request
 * still reads (reading stops there, client_eof).
 *
 * The wait's bound is the one of any last bytes of a response: timeouts.client
 * from when they began to wait (T_CLOSING, close_after_write; the close_notify
 * is one more of them). A wait that follows such bytes keeps their deadline
 * rather than starting a second one: the whole close is bounded by one
 * timeouts.client, not two. A stop ends a waiting session at once, as a
 * lingering one (http_stop_idle: lingering). */

#define LINGER_IDLE_US (500 * 1000)
#define LINGER_BYTES (4u * 1024 * 1024)

/* ls_http.lingering: 0, or where the close is */
enum { LINGER_DRAIN = 1, LINGER_NOTIFY = 2, LINGER_NOTIFY_CLEAN = 3 };

/* Does our close_notify wait for room (then the linger, or the close)? */
static int notify_waits(const ls_http *h) { return h->lingering >= LINGER_NOTIFY; }

/* May the client still be sending? The request unread (a head started, its
 * body not all here), bytes buffered past it, or the socket said readable
 * since our last read (nginx's read->ready): all known without a syscall. */
static int client_may_send(const ls_session *s)
{
    const ls_http *h = s->http;
    if (h->client_eof || !s->L->hcfg->linger_ms)
        return 0;
    return h->in.len || h->parsing || !h->req_complete || s->rd[0];
}

/* Read and drop what the client sends: 1 if some came, 0 if none, -1 if
 * the session ended (the client closed or broke, or went past the bound).
 * While our close_notify waits, the client's end of stream is noted
 * (client_eof: no more reads) and the wait goes on: it may still read. */
static int drop_client_bytes(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    int got = 0;
    if (h->client_eof) {
        s->rd[0] = 0;
        return 0;
    }
    for (;;) {
        ssize_t n = recv(s->fd[0], W->buf, (size_t)W->e->bufsize, 0);
        if (n > 0) {
            h->linger_bytes += (uint32_t)n;
            if (h->linger_bytes > LINGER_BYTES) {
                finish(W, s, LS_END_CLIENT_CLOSE, 0);
                return -1;
            }
            got = 1;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            s->rd[0] = 0;
            return got;
        }
        if (n == 0 && notify_waits(h)) {
            h->client_eof = 1;
            s->rd[0] = 0;
            return got;
        }
        finish(W, s, LS_END_CLIENT_CLOSE, 0); /* its close (or a reset): done */
        return -1;
    }
}

/* The linger proper: drop what comes; a byte puts the idle bound off. */
static void linger_drain(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    if (drop_client_bytes(W, s) > 0) {
        int64_t next = W->now_us + LINGER_IDLE_US;
        timer_set(W, s, next < h->linger_end ? next : h->linger_end);
    }
}

/* What came of our close_notify. */
enum { NOTIFY_SENT, NOTIFY_WAITS, NOTIFY_FAILED };

/* TLS: the close_notify, after the response's records (SSL_shutdown; again
 * after NOTIFY_WAITS: OpenSSL keeps the alert and writes what is left of it).
 * NOTIFY_WAITS: the socket's buffer is full, wait for it to be writable;
 * NOTIFY_FAILED: the connection is broken. Without TLS: nothing to do.
 * finish()'s tls_close sends no second one (closed). */
static int tls_notify(ls_session *s)
{
    ls_tls_conn *t = s->tls;
    if (!t)
        return NOTIFY_SENT;
    if (t->fatal || (t->closed && !notify_waits(s->http)) ||
        !SSL_is_init_finished(t->ssl))
        return NOTIFY_FAILED;
    t->closed = 1;
    ERR_clear_error(); /* SSL_get_error reads the queue: nothing stale in it */
    int r = SSL_shutdown(t->ssl); /* 0: ours sent, the client's not seen yet */
    int err = r < 0 ? SSL_get_error(t->ssl, r) : SSL_ERROR_NONE;
    ERR_clear_error();
    if (r >= 0)
        return NOTIFY_SENT;
    if (err == SSL_ERROR_WANT_WRITE) {
        s->wr[0] = 0; /* the next EPOLLOUT edge sets it */
        return NOTIFY_WAITS;
    }
    t->fatal = 1;
    return NOTIFY_FAILED;
}

/* The close_notify is out (or there is none): the FIN, then the linger. */
static void linger_begin(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    if (shutdown(s->fd[0], SHUT_WR) < 0) {
        finish(W, s, LS_END_CLIENT_CLOSE, 0);
        return;
    }
    h->lingering = LINGER_DRAIN;
    h->tkind = T_LINGER;
    buf_free(&h->in); /* nothing of it will be answered */
    h->linger_end = W->now_us + s->L->hcfg->linger_ms * 1000;
    int64_t idle = W->now_us + LINGER_IDLE_US;
    timer_set(W, s, idle < h->linger_end ? idle : h->linger_end);
    s->rd[0] = 1; /* what came before the shutdown too */
    linger_drain(W, s);
}

/* SSL_shutdown once more when the socket is writable again; its events come
 * here until then (http_event: lingering). */
static void notify_retry(ls_worker *W, ls_session *s)
{
    if (!s->wr[0])
        return;
    int notify = tls_notify(s);
    if (notify == NOTIFY_SENT && s->http->lingering == LINGER_NOTIFY && !s->http->client_eof)
        linger_begin(W, s);
    else if (notify != NOTIFY_WAITS)
        finish(W, s, LS_END_CLIENT_CLOSE, 0); /* clean, or the client's FIN came: at
                                                 once; or broken */
}

/* An event of a lingering session: its close_notify's retry, or the
 * client's last bytes, dropped. While the close_notify waits, what the client
 * sends is dropped too (raw, as in the linger): a client that writes its
 * whole upload before it reads would otherwise block on a full window while
 * we wait for it to read, until timeouts.client. */
static void linger_progress(ls_worker *W, ls_session *s)
{
    if (notify_waits(s->http)) {
        if (s->rd[0] && drop_client_bytes(W, s) < 0)
            return;
        notify_retry(W, s);
    } else {
        linger_drain(W, s);
    }
}

/* Our close_notify meets a full send buffer: wait for room (`mode`:
 * LINGER_NOTIFY, the linger after it; LINGER_NOTIFY_CLEAN, the close). */
static void notify_wait(ls_worker *W, ls_session *s, int mode)
{
    ls_http *h = s->http;
    h->lingering = (uint8_t)mode;
    if (h->tkind != T_CLOSING) {
        /* no last bytes waited before it: its own timeouts.client starts now;
         * otherwise their deadline stays (T_CLOSING: close_after_write) */
        h->tkind = T_CLOSING;
        timer_set(W, s, W->now_us + s->L->hcfg->client_ms * 1000);
    }
    buf_free(&h->in);        /* nothing of it will be answered */
    s->rd[0] = 1;            /* what came before the wait, too */
    drop_client_bytes(W, s); /* the last thing here: it may end the session */
}

/* The response is all written and the connection is to close: over TLS our
 * close_notify first (without TLS, or where it fits, no syscall more than a
 * close); then the linger where the client may still be sending. */
static void close_client(ls_worker *W, ls_session *s)
{
    int linger = client_may_send(s);
    int notify = tls_notify(s);
    if (notify == NOTIFY_SENT && linger)
        linger_begin(W, s);
    else if (notify == NOTIFY_WAITS)
        notify_wait(W, s, linger ? LINGER_NOTIFY : LINGER_NOTIFY_CLEAN);
    else
        finish(W, s, LS_END_CLIENT_CLOSE, 0); /* a clean exchange, or broken */
}
