/* relay.c: moving a session's bytes both ways (part of the unity build
 * engine.c): pump() per direction, edge-triggered, through the worker's
 * buffer or splice(2) pipes; the outbox that holds small messages until the
 * end of the worker's pass (sent in one io_uring_enter() where there is a
 * ring); the worker's pool of pipes. */

static int pipe_get(ls_worker *W, ls_dir *D)
{
    int p[2];
    if (W->npipes) {
        W->npipes--;
        p[0] = W->pipes[W->npipes][0];
        p[1] = W->pipes[W->npipes][1];
    } else {
        if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0)
            return -1;
        if (W->e->pipe_size > 0)
            fcntl(p[1], F_SETPIPE_SZ, W->e->pipe_size);
    }
    D->pr = p[0];
    D->pw = p[1];
    return 0;
}

static void pipe_put(ls_worker *W, ls_dir *D)
{
    if (D->pr < 0)
        return;
    if (D->plen == 0 && W->npipes < LS_PIPE_POOL) {
        W->pipes[W->npipes][0] = D->pr;
        W->pipes[W->npipes][1] = D->pw;
        W->npipes++;
    } else {
        close(D->pr);
        close(D->pw);
    }
    D->pr = D->pw = -1;
    D->plen = 0;
}

/* An idle worker holds no pipe: descriptors go back to their baseline. */
static void pipes_trim(ls_worker *W)
{
    while (W->npipes) {
        W->npipes--;
        close(W->pipes[W->npipes][0]);
        close(W->pipes[W->npipes][1]);
    }
}

static void dir_release(ls_worker *W, ls_dir *D)
{
    free(D->buf);
    D->buf = NULL;
    D->len = D->off = 0;
    pipe_put(W, D);
}

/* Move bytes in direction d (0: client -> server, 1: server -> client) for as
 * long as the source is readable and the destination writable. May end the
 * session (state ST_CLOSED on return). */
/* The part of a message the receiver did not take: kept in the direction's
 * own buffer until it is writable again (the worker's buffers are reused at
 * once). -1 when out of memory. */
static int keep_unsent(ls_dir *D, const char *data, size_t len)
{
    D->buf = malloc(len);
    if (!D->buf)
        return -1;
    memcpy(D->buf, data, len);
    D->off = 0;
    D->len = (uint32_t)len;
    return 0;
}

/* Send to side `dst` of a relaying session. Returns the bytes the socket took
 * (0 when it is full: wr[dst] is cleared and its EPOLLOUT edge brings the
 * rest), or -1 when the send failed and the session was ended. */
static ssize_t relay_send(ls_worker *W, ls_session *s, int dst, const char *data, size_t len,
                          int flags)
{
    for (;;) {
        ssize_t n = sess_send(s, dst, data, len, flags);
        if (n >= 0) {
            s->last_us = W->now_us;
            return n;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            s->wr[dst] = 0;
            return 0;
        }
        fail_side(W, s, dst);
        return -1;
    }
}

static void pump(ls_worker *W, ls_session *s, int d)
{
    ls_dir *D = &s->dir[d];
    int src = d, dst = 1 - d;
    int rounds = 0;
    for (;;) {
        int sfd = s->fd[src], dfd = s->fd[dst];
        if (D->held)
            return; /* flush_outbox sends those bytes first, then pumps again */
        if (D->len) {
            if (!s->wr[dst])
                return;
            ssize_t n = relay_send(W, s, dst, D->buf + D->off, D->len, 0);
            if (n <= 0)
                return; /* full (wait for EPOLLOUT) or ended */
            D->off += (uint32_t)n;
            D->len -= (uint32_t)n;
            if (D->len)
                continue;
            free(D->buf);
            D->buf = NULL;
            D->off = 0;
        }
        if (D->plen) {
            if (!s->wr[dst])
                return;
            ssize_t n = splice(D->pr, NULL, dfd, NULL, D->plen, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    s->wr[dst] = 0;
                    return;
                }
                if (errno == EINTR)
                    continue;
                fail_side(W, s, dst);
                return;
            }
            s->last_us = W->now_us;
            D->plen -= (uint32_t)n;
            if (D->plen)
                continue;
        }
        if (D->eof) {
            if (!D->shut) {
                D->shut = 1;
                pipe_put(W, D);
                /* The last direction to end needs no shutdown(): the close()
                 * just below sends that FIN (nothing is left unread). */
                if (!s->dir[1 - d].shut) {
                    if (dst == 0)
                        tls_shutdown_write(s); /* close_notify first */
                    else
                        tls_upstream_close(s);
                    shutdown(dfd, SHUT_WR);
                }
            }
            if (s->dir[1 - d].shut)
                finish(W, s, s->first_eof == 2 ? LS_END_SERVER_CLOSE : LS_END_CLIENT_CLOSE, 0);
            return;
        }
        if (!s->rd[src])
            return;
        if (src == 0 && s->proxy_watch && proxy_watch_client(W, s))
            return; /* an untrusted client's header (closed), or too few bytes to tell */
        if (++rounds > LS_ROUNDS) {
            ready_push(W, s); /* let the other sessions of this round go first */
            return;
        }
        ssize_t n;
        if (D->splice) {
            if (D->pr < 0 && pipe_get(W, D) < 0) {
                D->splice = 0; /* out of descriptors: copy instead */
                continue;
            }
            n = splice(sfd, NULL, D->pw, NULL, (size_t)W->e->pipe_size, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n > 0) {
                D->plen = (uint32_t)n;
                count(W, s, d, n);
                s->last_us = W->now_us;
                continue;
            }
            if (n < 0 && (errno == EINVAL || errno == ENOSYS)) {
                pipe_put(W, D); /* a socket splice cannot read: copy instead */
                D->splice = 0;
                continue;
            }
        } else {
            n = sess_recv(s, src, W->buf, (size_t)W->e->bufsize);
            if (n > 0) {
                count(W, s, d, n);
                s->last_us = W->now_us;
                if (n == W->e->bufsize) {
                    if (W->e->splice_mode == LS_SPLICE_AUTO && !s->tls && !s->stls)
                        D->splice = 1; /* a bulk transfer: zero-copy from now on */
                } else if (!s->rdhup[src]) {
                    s->rd[src] = 0; /* drained; the next byte brings a new edge */
                } else {
                    /* Drained, and the peer's FIN had arrived before this read
                     * (EPOLLRDHUP): nothing but the end is left, so take it now
                     * rather than with one more recv() returning 0. */
                    D->eof = 1;
                    s->rd[src] = 0;
                    if (!s->first_eof)
                        s->first_eof = (uint8_t)(src + 1);
                }
                ssize_t m = 0;
                if (s->wr[dst] && !D->eof && n < W->e->bufsize &&
                    W->olen + (uint32_t)n <= LS_OUTBOX_BYTES && W->on < LS_OUTBOX_ENTRIES) {
                    /* A small message: held for the end of this pass of the loop
                     * (flush_outbox). Sent now, it would wake its receiver (nginx,
                     * the client), which on two busy cores often preempts this
                     * thread mid-pass; sent with the pass's other messages, the
                     * wake-ups come when the worker is about to sleep anyway. The
                     * copy is one memcpy of a small message; a read that fills
                     * the buffer (bulk) is sent at once as before. Measured in
                     * benchmarks/README.md: ~6% more keep-alive req/s, ~4% less
                     * CPU per request (the pure HTTP path's and the native HTTP
                     * path's round-end writes are the same idea). */
                    ls_outbox_entry *o = &W->oents[W->on++];
                    o->s = s;
                    o->d = d;
                    o->off = W->olen;
                    o->len = (uint32_t)n;
                    memcpy(W->obuf + W->olen, W->buf, (size_t)n);
                    W->olen += (uint32_t)n;
                    D->held = 1;
                    s->in_outbox = 1;
                    return;
                }
                if (s->wr[dst]) {
                    /* Last bytes before a FIN: MSG_MORE holds them back until
                     * the shutdown()/close() just after, so that data and FIN
                     * leave in one segment (one wake-up of the peer, not two). */
                    m = relay_send(W, s, dst, W->buf, (size_t)n, D->eof ? MSG_MORE : 0);
                    if (m < 0)
                        return;
                }
                if (m < n && keep_unsent(D, W->buf + m, (size_t)(n - m)) < 0) {
                    fail_side(W, s, dst);
                    return;
                }
                continue;
            }
        }
        if (n == 0) {
            D->eof = 1;
            s->rd[src] = 0;
            if (!s->first_eof)
                s->first_eof = (uint8_t)(src + 1);
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            s->rd[src] = 0;
            if (D->splice && D->plen == 0)
                pipe_put(W, D);
            return;
        }
        if (errno == EINTR)
            continue;
        fail_side(W, s, src);
        return;
    }
}

/* Both directions of a relaying session, `first` first. */
static void pump_both(ls_worker *W, ls_session *s, int first)
{
    pump(W, s, first);
    if (s->state == ST_RELAY)
        pump(W, s, 1 - first);
}

/* Relay bytes both ways from now on (a connected tcp session, an HTTP tunnel),
 * ended after `idle_ms` without traffic. */
static void relay_start(ls_worker *W, ls_session *s, int64_t idle_ms)
{
    s->state = ST_RELAY;
    s->last_us = W->now_us;
    timer_set(W, s, W->now_us + idle_ms * 1000);
    pump_both(W, s, 0);
}

/* Send what pump() held back during this pass, in the order it was read. A
 * session closed meanwhile keeps its memory until the dead list is freed, which
 * comes after the last flush of the pass (finish() and the ready list leave a
 * session with in_outbox set to the dead list). */
static void outbox_sent(void *ctx, uint64_t tag, int32_t res)
{
    ((ls_outbox_entry *)ctx)[tag].res = res;
}

/* Send entries [from, to) of the outbox with one io_uring_enter(); each entry's
 * res then holds its send's result. */
static void outbox_send_batch(ls_worker *W, int from, int to)
{
    for (int i = from; i < to; i++) {
        ls_outbox_entry *o = &W->oents[i];
        o->res = LS_URING_UNKNOWN;
        if (o->s->state != ST_RELAY || (o->s->tls && o->d == 1) || (o->s->stls && o->d == 0)) {
            /* TLS records are written by OpenSSL: relay_send, below */
            o->res = LS_URING_NOT_SENT; /* skipped below anyway */
            continue;
        }
        ls_uring_send(&W->uring, o->s->fd[1 - o->d], W->obuf + o->off, o->len, MSG_NOSIGNAL,
                      (uint64_t)i);
    }
    if (ls_uring_run(&W->uring, outbox_sent, W->oents))
        ls_uring_free(&W->uring); /* a broken ring: one send() at a time from now on */
}

/* The result of a batched send, as relay_send() would have returned it. */
static ssize_t batched_result(ls_worker *W, ls_session *s, int dst, const char *data, size_t len,
                              int32_t res)
{
    if (res >= 0) {
        s->last_us = W->now_us;
        return res;
    }
    if (res == LS_URING_NOT_SENT || res == -EINTR)
        return relay_send(W, s, dst, data, len, 0);
    if (res == -EAGAIN || res == -EWOULDBLOCK) {
        s->wr[dst] = 0;
        return 0;
    }
    fail_side(W, s, dst); /* an error, or a result lost with a broken ring */
    return -1;
}

static void flush_outbox(ls_worker *W)
{
    int batch_end = 0;
    for (int i = 0; i < W->on; i++) { /* pump() below may append: W->on grows */
        if (i >= batch_end && W->uring.fd >= 0 && W->on - i >= 2) {
            batch_end = W->on;
            outbox_send_batch(W, i, batch_end);
        }
        ls_outbox_entry *o = &W->oents[i];
        ls_session *s = o->s;
        ls_dir *D = &s->dir[o->d];
        int dst = 1 - o->d;
        D->held = 0;
        s->in_outbox = 0;
        if (s->state != ST_RELAY)
            continue;
        const char *data = W->obuf + o->off;
        ssize_t m = i < batch_end ? batched_result(W, s, dst, data, o->len, o->res)
                                  : relay_send(W, s, dst, data, o->len, 0);
        if (m < 0)
            continue;
        if ((uint32_t)m < o->len && keep_unsent(D, data + m, o->len - (size_t)m) < 0) {
            fail_side(W, s, dst);
            continue;
        }
        pump(W, s, o->d); /* what arrived meanwhile, or the end of the stream */
    }
    W->on = 0;
    W->olen = 0;
}
