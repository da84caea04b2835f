/* connect.c: reaching a server (part of the unity build engine.c): pick
 * (balance.c), connect with a timeout, retry with redispatch and back-off,
 * as the pure path's connect loop. */

/* Pick a server and connect to it (an admitted tcp session, an HTTP request,
 * or a retry). */
static void sess_connect(ls_worker *W, ls_session *s)
{
    ls_listener *L = s->L;
    int slot;
    if (!L->cfg.redispatch && s->nfailed > 0) {
        /* Without redispatch a retry goes to the server that failed, as
         * HAProxy's does (s->saddr still holds its address). */
        slot = s->failed[s->nfailed - 1];
        __atomic_fetch_add(&slot_shared(L, slot)->live, 1, __ATOMIC_RELAXED);
    } else {
        slot = pick_server(L, s);
    }
    if (slot < 0) {
        s->proto->unserved(W, s, LS_END_NO_SERVER, 0);
        return;
    }
    s->slot = slot;
    s->attempts++;
    slot_w(L, W->id, slot)->sessions_total++;
    if (is_failed(s, slot)) {
        /* The same server again (no other left, or no redispatch): back off so a
         * check can mark a dead server down and the balancer choose another. */
        int64_t delay = 50000;
        for (int k = 0; k < s->nfailed && delay < L->cfg.connect_ms * 1000; k++)
            delay *= 2;
        if (delay > L->cfg.connect_ms * 1000)
            delay = L->cfg.connect_ms * 1000;
        s->state = ST_DELAY;
        timer_set(W, s, W->now_us + delay);
        return;
    }
    if (s->proto->take_pooled && s->proto->take_pooled(W, s))
        return;
    do_connect(W, s);
}

/* A connect() that said EINPROGRESS, asked once more: 1 when it is done. To a
 * server on this host (any local address goes through the loopback device) the
 * handshake has usually completed inside the first call: its SYN, the SYN-ACK
 * and the ACK are handled before connect() returns. Learning it now rather than
 * from the EPOLLOUT event of the next round lets the client's first bytes go to
 * the server in this round, one pass of the loop (and one sleep and wake-up of
 * the worker) earlier per new connection. Those bytes are most likely in the
 * client socket already (a client sends as soon as its connect() returns, before
 * this worker was even woken to accept): they are read without waiting for
 * their event, at the cost of one recv() answering EAGAIN when the client waits
 * for the server to speak first. A remote server answers EALREADY (one system
 * call spent); its connect ends with the EPOLLOUT event as before. 0: still in
 * progress, -errno: failed (a local server refused it). */
static int connect_done(ls_session *s)
{
    if (connect(s->fd[1], &s->saddr.sa, s->saddrlen) < 0 && errno != EISCONN)
        return errno == EALREADY || errno == EINPROGRESS || errno == EINTR ? 0 : -errno;
    if (!s->http && !s->tls && !s->proxy_watch)
        s->rd[0] = 1; /* a plain tcp relay: read the client at once (above) */
    return 1;
}

static void do_connect(ls_worker *W, ls_session *s)
{
    ls_listener *L = s->L;
    int fd = socket(s->saddr.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        connect_failed(W, s, errno);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    set_keepalive(fd, &L->cfg);
    s->fd[1] = fd;
    s->rd[1] = s->wr[1] = s->rdhup[1] = 0;
    struct epoll_event ev;
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u64 = (uint64_t)(uintptr_t)s | TAG_SERVER;
    s->connect_us = W->now_us;
    int r = connect(fd, &s->saddr.sa, s->saddrlen);
    if (r < 0 && errno != EINPROGRESS) {
        connect_failed(W, s, errno);
        return;
    }
    if (epoll_ctl(W->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        connect_failed(W, s, errno);
        return;
    }
    int done = r == 0 ? 1 : connect_done(s);
    if (done < 0) {
        connect_failed(W, s, -done); /* refused already: retried at once */
        return;
    }
    if (done) {
        s->wr[1] = 1;
        server_connected(W, s); /* the PROXY header, TLS, then the protocol's */
        return;
    }
    s->state = ST_CONNECTING;
    timer_set(W, s, W->now_us + L->cfg.connect_ms * 1000);
}

static void connect_failed(ls_worker *W, ls_session *s, int err)
{
    ls_listener *L = s->L;
    int slot = s->slot;
    const char *why = s->stls ? s->stls->why : NULL; /* a TLS handshake's reason */
    int verify_failed = s->stls && s->stls->verify_failed;
    tls_upstream_free(s);
    if (s->fd[1] >= 0) {
        close(s->fd[1]);
        s->fd[1] = -1;
    }
    s->wr[1] = s->rd[1] = s->rdhup[1] = 0;
    __atomic_fetch_sub(&slot_shared(L, slot)->live, 1, __ATOMIC_RELAXED);
    s->slot = -1;
    ls_record *r = new_record(W);
    if (r) {
        r->type = LS_REC_CONNECT_FAILED;
        r->listener = L->id;
        r->slot = slot;
        r->arg = err;
        r->tls[0] = 0; /* the pure path's words (tls.upstream.handshake_error_text) */
        if (why)
            snprintf(r->tls, sizeof r->tls, "tls: %s%s",
                     verify_failed ? "certificate verify failed: " : "", why);
    }
    if (s->nfailed == s->cap_failed) {
        int cap = s->cap_failed ? s->cap_failed * 2 : 4;
        int32_t *f = realloc(s->failed, (size_t)cap * sizeof *f);
        if (!f) {
            finish(W, s, LS_END_CONNECT_FAILED, err);
            return;
        }
        s->failed = f;
        s->cap_failed = cap;
    }
    s->failed[s->nfailed++] = slot;
    if (s->attempts > L->cfg.retries) {
        s->proto->unserved(W, s, LS_END_CONNECT_FAILED, err);
        return;
    }
    sess_connect(W, s);
}
