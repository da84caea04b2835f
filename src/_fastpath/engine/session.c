/* session.c: a session's life in its worker (part of the unity build
 * engine.c): accepted, its epoll events dispatched, ended by finish() and
 * freed at the end of the worker's round. */

static void set_keepalive(int fd, const ls_lconfig *cfg)
{
    if (!cfg->keepalive)
        return;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &cfg->ka_idle, sizeof(int));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &cfg->ka_intvl, sizeof(int));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cfg->ka_cnt, sizeof(int));
}

static void format_addr(const ls_addr *a, char *out, size_t size)
{
    ls_addr_text(&a->sa, out, size); /* addr_text.c: inet_ntop's text, without libc's formatting */
}

/* Sessions and their HTTP state kept for reuse by the thread that freed them
 * (a worker, mostly): with a new client connection per request each costs a
 * calloc and a free, and a round's burst of them outruns glibc's per-thread
 * cache of 7 a size, whose misses showed in the profile (_int_malloc,
 * _int_free). At most SPARES_MAX of each; a thread's are freed when it ends. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LS_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(LS_ASAN)
#define SPARES_MAX 1 /* kept as free()d under ASan: a use after the end is found */
#define SPARES_OFF 1
#else
#define SPARES_MAX 64
#define SPARES_OFF 0
#endif

typedef struct ls_spares {
    void *p[SPARES_MAX];
    int n;
} ls_spares;

static __thread ls_spares spare_sessions, spare_https;
static __thread int spares_kept; /* this thread's exit frees them */
static pthread_key_t spares_key;
static pthread_once_t spares_once = PTHREAD_ONCE_INIT;
static int spares_ok;

static void spares_drop(void *unused)
{
    (void)unused;
    ls_spares *lists[2] = {&spare_sessions, &spare_https};
    for (int k = 0; k < 2; k++)
        while (lists[k]->n)
            free(lists[k]->p[--lists[k]->n]);
}

static void spares_init(void) { spares_ok = pthread_key_create(&spares_key, spares_drop) == 0; }

/* A zeroed block of `size` bytes: a spare, or calloc'ed. */
static void *spare_take(ls_spares *sp, size_t size)
{
    if (!sp->n)
        return calloc(1, size);
    void *p = sp->p[--sp->n];
    memset(p, 0, size);
    return p;
}

static void spare_give(ls_spares *sp, void *p)
{
    if (!p)
        return;
    if (!spares_kept) {
        pthread_once(&spares_once, spares_init);
        spares_kept = spares_ok && pthread_setspecific(spares_key, &spares_kept) == 0;
    }
    if (spares_kept && sp->n < SPARES_MAX && !SPARES_OFF)
        sp->p[sp->n++] = p;
    else
        free(p);
}

static void ready_push(ls_worker *W, ls_session *s)
{
    if (s->in_ready)
        return;
    s->in_ready = 1;
    s->rnext = W->ready;
    W->ready = s;
}

static void fail_side(ls_worker *W, ls_session *s, int side)
{
    finish(W, s, side == 0 ? LS_END_CLIENT_RESET : LS_END_SERVER_RESET, 0);
}

static int sock_error(int fd)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return errno;
    return err;
}

static void on_accept(ls_worker *W, ls_lsock *ls)
{
    ls_listener *L = ls->L;
    for (int k = 0; k < LS_ACCEPT_BATCH; k++) {
        if (ls->closed)
            return;
        int full = accept_full(W);
        if (full && accept_pause(W, ls, full == 1))
            return; /* global.maxconn or the descriptor bound: the clients wait in the backlog */
        ls_addr addr;
        socklen_t alen = sizeof addr;
        int fd = accept4(ls->fd, &addr.sa, &alen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if ((errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) &&
                accept_pause(W, ls, 0))
                return; /* out of descriptors: look again later (limits.c) */
            if ((errno == EMFILE || errno == ENFILE) && W->sparefd >= 0) {
                /* Out of descriptors: refuse this one rather than spin on it. */
                close(W->sparefd);
                fd = accept(ls->fd, NULL, NULL);
                if (fd >= 0)
                    close(fd);
                W->sparefd = open("/dev/null", O_RDONLY | O_CLOEXEC);
            }
            return;
        }
        W->pause_episode = 0; /* accepting again: a later pause is a new one */
        ls_session *s = spare_take(&spare_sessions, sizeof *s);
        if (!s) {
            close(fd);
            continue;
        }
        s->L = L;
        s->W = W;
        s->proto = L->proto;
        s->fd[0] = fd;
        s->fd[1] = -1;
        s->slot = -1;
        s->heap_idx = -1;
        s->dir[0].pr = s->dir[0].pw = s->dir[1].pr = s->dir[1].pw = -1;
        s->dir[0].splice = s->dir[1].splice = W->e->splice_mode == LS_SPLICE_ON;
        s->start_us = W->now_us;
        memcpy(&s->client, &addr, alen < sizeof addr ? alen : sizeof addr);
        /* TCP_NODELAY and tcp_keepalive come from the listening socket (Linux
         * copies them; listener.c listen_keepalive) */
        if (tls_attach(s) < 0) {
            close(fd);
            free(s);
            continue;
        }
        if (s->proto->accepted && s->proto->accepted(s) < 0) {
            tls_free(s);
            close(fd);
            free(s);
            continue;
        }
        ls_list_push_front(&W->sessions, &s->alink);
        W->nsessions++;
        if (!s->tls) /* a TLS session counts once its handshake is done */
            L->wstats[W->id].sessions_total++;
        struct epoll_event ev;
        ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
        ev.data.u64 = (uint64_t)(uintptr_t)s | TAG_CLIENT;
        s->state = ST_PICKING; /* not counted yet: admit() decides */
        if (epoll_ctl(W->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            /* counted as admitted here, then released by finish() */
            pthread_mutex_lock(&L->lock);
            L->active++;
            pthread_mutex_unlock(&L->lock);
            finish(W, s, LS_END_CLIENT_RESET, 0);
            continue;
        }
        if (proxy_gate(W, s))
            continue; /* a trusted client's PROXY header first (proxy_proto.c) */
        if (s->tls)
            tls_begin(W, s); /* admitted once the handshake is done */
        else
            admit(W, s);
    }
}

/* An epoll event of a session's socket (side 0: the client, 1: the server). */
static void on_session(ls_worker *W, ls_session *s, int side, uint32_t ev)
{
    if (s->state == ST_CLOSED)
        return;
    if (s->state == ST_PROXY_HEADER) {
        proxy_header_event(W, s, ev);
        return;
    }
    if (s->state == ST_SNI_INSPECT) {
        sni_event(W, s, ev); /* the client's side alone: no server yet */
        return;
    }
    if (s->tls && side == 0) {
        if (s->state == ST_TLS_HANDSHAKE) {
            tls_handshake_event(W, s, ev);
            return;
        }
        tls_note_event(s, 0, ev);
    }
    if (side == 1 && s->state == ST_TLS_CONNECT) {
        tls_upstream_step(W, s); /* the server's handshake, inside the connect */
        return;
    }
    if (side == 1 && s->stls)
        tls_note_event(s, 1, ev);
    if (side == 1 && s->state == ST_CONNECTING) {
        if (ev & (EPOLLERR | EPOLLHUP)) {
            int err = sock_error(s->fd[1]);
            timer_del(W, s);
            connect_failed(W, s, err ? err : ECONNREFUSED);
            return;
        }
        if (ev & EPOLLOUT) {
            /* writable without an error: connected (no SO_ERROR to ask) */
            s->wr[1] = 1;
            if (ev & EPOLLIN)
                s->rd[1] = 1;
            if (ev & EPOLLRDHUP)
                s->rdhup[1] = s->rd[1] = 1;
            server_connected(W, s); /* the PROXY header, TLS, then the protocol's */
        }
        return;
    }
    s->proto->event(W, s, side, ev);
}

/* The event of a session waiting for admission or a server, or relaying: the
 * whole of a tcp session's (proto_tcp), an http session's before it is
 * admitted and after an upgrade. */
static void relay_event(ls_worker *W, ls_session *s, int side, uint32_t ev)
{
    if (ev & EPOLLERR) {
        /* A reset. The bytes the peer sent before it are still readable: relay
         * them (or, before the server is reached, count them, as the pure path
         * does with what it buffered), then end the session. */
        if (s->state == ST_RELAY) {
            if (s->in_outbox)
                flush_outbox(W); /* what was read before the reset goes first */
            s->rd[side] = s->wr[side] = s->rdhup[side] = 1;
            pump_both(W, s, side);
        } else if (side == 0) {
            ssize_t n;
            while ((n = sess_recv(s, 0, W->buf, (size_t)W->e->bufsize)) > 0)
                count(W, s, 0, n);
        }
        if (s->state != ST_CLOSED)
            fail_side(W, s, side);
        return;
    }
    note_event(s, side, ev);
    if (s->state != ST_RELAY) {
        /* queued or connecting: the client's bytes wait in the kernel; a client
         * that is gone for good (both directions shut) ends it now */
        if (side == 0 && (ev & EPOLLHUP))
            finish(W, s, LS_END_CLIENT_RESET, 0);
        return;
    }
    pump_both(W, s, side);
}

static void finish(ls_worker *W, ls_session *s, int reason, int arg)
{
    if (s->state == ST_CLOSED)
        return;
    ls_listener *L = s->L;
    int state = __atomic_load_n(&s->state, __ATOMIC_RELAXED);
    int admitted = 1;
    timer_del(W, s);
    if (state == ST_QUEUED || state == ST_ADMITTING) {
        /* another worker may take it off the queue: decide under the lock */
        pthread_mutex_lock(&L->lock);
        state = s->state;
        s->state = ST_CLOSED;
        if (state == ST_QUEUED) {
            queue_remove(L, s);
            admitted = 0;
        } else {
            /* counted by whoever took it off the queue; the ADMIT order (a
             * command or the worker's admit list) is still on its way and
             * frees the session when it arrives */
            s->admit_pending = 1;
        }
        pthread_mutex_unlock(&L->lock);
    } else {
        s->state = ST_CLOSED;
        /* a TLS handshake that did not complete: never admitted */
        admitted = state != ST_EXPIRED && state != ST_TLS_HANDSHAKE && state != ST_PROXY_HEADER;
    }
    if (admitted) {
        pthread_mutex_lock(&L->lock);
        L->active--;
        ls_session *next = dequeue_admissible(L);
        pthread_mutex_unlock(&L->lock);
        dispatch_admitted(W, next);
    }
    if (state != ST_TLS_HANDSHAKE && state != ST_PROXY_HEADER) /* no session yet: the
                                  handshake's (the PROXY refusals') counters say it */
        s->proto->ended(W, s, reason, arg); /* before the descriptors close */
    tls_close(s);
    tls_upstream_close(s);
    for (int i = 0; i < 2; i++) {
        if (s->fd[i] >= 0) {
            close(s->fd[i]);
            s->fd[i] = -1;
        }
        dir_release(W, &s->dir[i]);
    }
    /* unlink from the worker's list; freed at the end of the round */
    ls_list_del(&s->alink);
    W->nsessions--;
    if (!s->admit_pending && !s->in_ready) {
        s->rnext = W->dead;
        W->dead = s;
    }
    /* in_ready: freed when the ready list is walked; admit_pending: by the ADMIT */
}

static void sess_free(ls_session *s)
{
    if (s->proto->release)
        s->proto->release(s);
    tls_free(s);
    sni_free(s);
    free(s->failed);
    spare_give(&spare_sessions, s);
}

/* ---------------------------------------------------------------------------------- */
/* mode tcp: the session is a relay once connected                                    */

static void tcp_admitted(ls_worker *W, ls_session *s)
{
    if (!sni_begin(W, s)) /* SNI passthrough reads the ClientHello first (sni.c) */
        sess_connect(W, s);
}

static void tcp_connected(ls_worker *W, ls_session *s) { relay_start(W, s, s->L->cfg.idle_ms); }

static void tcp_unserved(ls_worker *W, ls_session *s, int end, int arg) { finish(W, s, end, arg); }

static void tcp_progress(ls_worker *W, ls_session *s) { pump_both(W, s, 0); }

static int64_t tcp_relay_idle_ms(const ls_session *s) { return s->L->cfg.idle_ms; }

/* The server's count, and the session's record unless the listener's `log`
 * leaves it out. */
static void tcp_ended(ls_worker *W, ls_session *s, int reason, int arg)
{
    ls_listener *L = s->L;
    if (s->slot >= 0)
        __atomic_fetch_sub(&slot_shared(L, s->slot)->live, 1, __ATOMIC_RELAXED);
    else
        L->wstats[W->id].denied++;
    int quiet = L->cfg.log_mode == LS_LOG_NONE ||
                (L->cfg.log_mode == LS_LOG_ERRORS &&
                 (reason == LS_END_CLIENT_CLOSE || reason == LS_END_SERVER_CLOSE));
    ls_record *r = quiet ? NULL : new_record(W);
    if (r) {
        r->type = LS_REC_SESSION;
        r->reason = (uint8_t)reason;
        r->listener = L->id;
        r->slot = s->slot;
        r->arg = arg;
        r->bytes_in = s->bytes[0];
        r->bytes_out = s->bytes[1];
        r->duration = (double)(W->now_us - s->start_us) / 1e6;
        format_addr(&s->client, r->client, sizeof r->client);
        tls_log_fields(s, r->tls, sizeof r->tls);
        sni_log_fields(s, r->tls, sizeof r->tls);
    }
}

static const ls_proto proto_tcp = {
    .admitted = tcp_admitted,
    .connected = tcp_connected,
    .unserved = tcp_unserved,
    .event = relay_event,
    .progress = tcp_progress,
    .relay_idle_ms = tcp_relay_idle_ms,
    .ended = tcp_ended,
};
