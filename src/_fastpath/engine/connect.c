/* connect.c: reaching a server (part of the unity build engine.c): pick
 * (balance.c), connect with a timeout, retry with redispatch and back-off,
 * as the pure path's connect loop. */

/* Pick a server and connect to it (an admitted session, or a retry). */
static void sess_connect(ls_worker *W, ls_session *s)
{
    ls_listener *L = s->L;
    if (s->http && !http_in_exchange(s)) {
        http_admitted(W, s); /* admitted: a server is picked per request */
        return;
    }
    if (!s->hashed && L->alg == LS_ALG_SOURCE) {
        s->hashpos = client_hash(&s->client);
        s->hashed = 1;
    }
    pthread_mutex_lock(&L->lock);
    ls_table *T = L->table;
    int exclude = L->cfg.redispatch && s->nfailed > 0;
    int i = -1;
    if (T && T->n) {
        switch (T->alg) {
        case LS_ALG_ROUNDROBIN:
            i = pick_rr(L, T, s, exclude);
            break;
        case LS_ALG_LEASTCONN:
            i = pick_leastconn(L, T, s, exclude);
            break;
        case LS_ALG_SOURCE:
            if (!s->hashed) {
                s->hashpos = client_hash(&s->client);
                s->hashed = 1;
            }
            i = pick_source(T, s, exclude);
            break;
        case LS_ALG_FIRST:
            i = pick_first(L, T, s, exclude);
            break;
        default: /* active-backup: the table holds the active server alone;
                    a retry goes to it again, never to a second writer */
            i = 0;
            break;
        }
    }
    int slot = -1;
    if (i >= 0) {
        ls_tserver *t = &T->servers[i];
        slot = t->slot;
        memcpy(&s->saddr, &t->addr, t->addrlen);
        s->saddrlen = t->addrlen;
        __atomic_fetch_add(&slot_shared(L, slot)->live, 1, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&L->lock);
    if (slot < 0) {
        if (s->http)
            http_answer(W, s, 503, LS_HEND_NO_SERVER, 0);
        else
            finish(W, s, LS_END_NO_SERVER, 0);
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
    if (s->http && http_take_pooled(W, s))
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
        connected(W, s);
        return;
    }
    s->state = ST_CONNECTING;
    timer_set(W, s, W->now_us + L->cfg.connect_ms * 1000);
}

static void connected(ls_worker *W, ls_session *s)
{
    if (s->http) {
        http_connected(W, s);
        return;
    }
    relay_start(W, s, s->L->cfg.idle_ms);
}

static void connect_failed(ls_worker *W, ls_session *s, int err)
{
    ls_listener *L = s->L;
    int slot = s->slot;
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
        if (s->http)
            http_answer(W, s, 503, LS_HEND_CONNECT_FAILED, err);
        else
            finish(W, s, LS_END_CONNECT_FAILED, err);
        return;
    }
    sess_connect(W, s);
}
