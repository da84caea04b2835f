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
    if (r == 0) {
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
    if (!why && err < 0 && s->stls && !SSL_is_init_finished(s->stls->ssl))
        why = "handshake timeout"; /* the connect timeout ran out in the server's handshake */
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
