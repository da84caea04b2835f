/* worker.c: the worker threads and the engine's life (part of the unity build
 * engine.c): one epoll loop per worker, its timers, and creating, starting and
 * freeing the engine. */

static void run_timers(ls_worker *W)
{
    while (W->heap_len && W->heap[0]->deadline_us <= W->now_us) {
        ls_session *s = W->heap[0];
        switch (s->state) {
        case ST_QUEUED:
        case ST_ADMITTING:
            queue_expired(W, s);
            break;
        case ST_DELAY:
            timer_del(W, s);
            do_connect(W, s);
            break;
        case ST_CONNECTING:
        case ST_TLS_CONNECT: /* the server's handshake is part of the connect */
            timer_del(W, s);
            connect_failed(W, s, -1);
            break;
        case ST_HTTP:
        case ST_POOLED:
        case ST_EXPIRED: /* http: the linger after a queue timeout's 503 */
            s->proto->timeout(W, s);
            break;
        case ST_TLS_HANDSHAKE:
            tls_timeout(W, s);
            break;
        case ST_PROXY_HEADER:
            proxy_timeout(W, s);
            break;
        case ST_SNI_INSPECT:
            sni_timeout(W, s);
            break;
        case ST_RELAY: {
            /* the idle deadline is re-armed lazily (engine.c: Timers) */
            int64_t real = s->last_us + s->proto->relay_idle_ms(s) * 1000;
            if (real > W->now_us)
                timer_set(W, s, real);
            else
                finish(W, s, s->L->cfg.idle_reason, 0);
            break;
        }
        default:
            timer_del(W, s);
            break;
        }
    }
}

/* Wait for the worker's next events. After a round that had events, look once
 * more without sleeping: under load the peers answer while the round runs, and
 * taking their events now saves the worker a sleep and a wake-up (a context
 * switch each way, the dearest part of a small request on a busy machine).
 *
 * global.poll_spin goes further when events come close together (the last sleep
 * was no longer than the spin, so a spin would have caught its event): before
 * sleeping, keep looking for up to spin_us, calling sched_yield() between looks
 * so that any other runnable thread on this CPU (the clients, the servers) runs
 * first and the spin takes only time the CPU would otherwise spend idle. On a
 * small machine where the proxy, its clients and its servers share the cores, a
 * sleeping worker is woken late: an idle virtual CPU takes tens of microseconds
 * to wake, and the events of a whole new connection (accept, connect, the
 * request, the answer, the close) arrive as several wake-ups. A worker whose
 * sleeps are longer (a quiet listener, a moderate fixed rate) does not spin:
 * the gate keeps an idle proxy idle. (A gate of twice the spin cost up to 7 %
 * more CPU per request at a fixed 20,000 req/s.)
 *
 * The spin's time is the worker's CPU, and a hit costs the whole gap it waited
 * through (about 22 us of a 30 us spin in http close, 9 in 10 spins hitting):
 * unbudgeted, 30us gave http close 18-21 % more rate at 27-32 % more CPU per
 * request. So a worker may spin only on credit: a quarter of the time its
 * rounds took before each look (LS_SPIN_BUDGET_SHARE), at most four spins'
 * worth (and that much to start with, or when the setting changes), each spin
 * paid from it. That keeps the spin below a fifth of the
 * worker's CPU: measured side by side in two runs on a loaded machine
 * (benchmarks/README.md), 30us budgeted gave http close 6-11 % more rate at 2-6 %
 * more CPU per request, tcp close 0-18 % more at the same CPU, and keep-alive
 * 2-5 % less rate. What the spins took and found is counted (poll_stats). */
#define LS_SPIN_BUDGET_SHARE 4
#define LS_SPIN_CREDIT_SPINS 4

/* The budget, as arithmetic alone (no clock: spin_selftest.c checks it): the
 * worker's credit takes its share of a round that took worked_us; how long a
 * spin of spin_us may last now. */
static int spin_credit(ls_worker *W, int spin_us, int64_t worked_us)
{
    int window = spin_us;
    if (W->credit_spin_us != spin_us) { /* a new setting starts with a full purse */
        W->credit_spin_us = spin_us;
        W->spin_credit_us = (int64_t)LS_SPIN_CREDIT_SPINS * spin_us;
    }
    W->spin_credit_us += worked_us / LS_SPIN_BUDGET_SHARE;
    if (W->spin_credit_us > (int64_t)LS_SPIN_CREDIT_SPINS * spin_us)
        W->spin_credit_us = (int64_t)LS_SPIN_CREDIT_SPINS * spin_us;
    if (window > W->spin_credit_us)
        window = W->spin_credit_us > 0 ? (int)W->spin_credit_us : 0;
    return window;
}

/* A spin that took spun_us ended, with events (hit) or without: paid from
 * the credit, and counted (poll_stats). */
static void spin_paid(ls_worker *W, int64_t spun_us, int hit)
{
    W->spun_us += (uint64_t)spun_us;
    W->spin_credit_us -= spun_us;
    if (hit)
        W->spin_hits++;
    else /* ran to its end without events */
        W->wasted_us += (uint64_t)spun_us;
}

/* How long this worker may spin now: the gate's spin, capped by the worker's
 * credit (taking its new share). */
static int spin_window(ls_worker *W, int spin_us)
{
    if (W->last_sleep_us > spin_us)
        return 0;
    return spin_credit(W, spin_us, now_us() - W->now_us);
}

static int poll_events(ls_worker *W, struct epoll_event *events, int timeout, int busy)
{
    int n = 0;
    int spin_us = __atomic_load_n(&W->e->spin_us, __ATOMIC_RELAXED);
    if (timeout != 0 && busy) {
        n = epoll_wait(W->epfd, events, LS_EVENTS, 0);
        int window = spin_us > 0 ? spin_window(W, spin_us) : 0;
        if (n == 0 && window > 0) {
            W->spins++;
            int64_t start = now_us(), now = start, until = start + window;
            while (n == 0 && now < until) {
                sched_yield();
                n = epoll_wait(W->epfd, events, LS_EVENTS, 0);
                now = now_us();
            }
            spin_paid(W, now - start, n > 0);
        }
    }
    if (n == 0) {
        if (timeout == 0)
            return epoll_wait(W->epfd, events, LS_EVENTS, 0);
        int64_t before = now_us();
        n = epoll_wait(W->epfd, events, LS_EVENTS, timeout);
        W->last_sleep_us = now_us() - before;
        W->sleeps++;
    }
    return n;
}

static void *worker_main(void *arg)
{
    ls_worker *W = arg;
    char name[16];
    snprintf(name, sizeof name, "ls-worker-%d", W->id);
    pthread_setname_np(pthread_self(), name);
    worker_rand_seed(W); /* in the process that runs it, once */
    struct epoll_event events[LS_EVENTS];
    int busy = 0; /* the last round had events */
    while (!W->stop) {
        int timeout = -1;
        if (W->ready || W->admit || !ls_list_empty(&W->http_flush)) {
            timeout = 0;
        } else if (W->heap_len) {
            int64_t wait = W->heap[0]->deadline_us - now_us();
            timeout = wait <= 0 ? 0 : (int)((wait + 999) / 1000);
        }
        timeout = accept_timeout(W, timeout);
        int n = poll_events(W, events, timeout, busy);
        busy = n > 0;
        W->now_us = now_us();
        for (int i = 0; i < n; i++) {
            uint64_t data = events[i].data.u64;
            unsigned tag = (unsigned)(data & TAG_MASK);
            void *p = (void *)(uintptr_t)(data & ~(uint64_t)TAG_MASK);
            switch (tag) {
            case TAG_CLIENT:
                on_session(W, p, 0, events[i].events);
                break;
            case TAG_SERVER:
                on_session(W, p, 1, events[i].events);
                break;
            case TAG_LSOCK:
                on_accept(W, p);
                break;
            default:
                drain_eventfd(W->cmdfd);
                break;
            }
        }
        http_flush_round(W); /* mode http: the round's writes, together */
        flush_outbox(W);      /* mode tcp: likewise */
        /* sessions that used up their share of the round, then new admissions */
        ls_session *ready = W->ready;
        W->ready = NULL;
        while (ready) {
            ls_session *s = ready;
            ready = s->rnext;
            s->in_ready = 0;
            if (s->state == ST_CLOSED) {
                if (s->in_outbox) {
                    s->rnext = W->dead; /* flush_outbox still looks at it */
                    W->dead = s;
                } else if (!s->admit_pending) {
                    sess_free(s);
                }
                continue;
            }
            s->proto->progress(W, s);
        }
        while (W->admit) {
            ls_session *s = W->admit;
            W->admit = s->rnext;
            s->rnext = NULL;
            admit_arrived(W, s);
        }
        run_timers(W);
        accept_maybe_resume(W);
        run_commands(W);
        flush_outbox(W);
        while (W->dead) {
            ls_session *s = W->dead;
            W->dead = s->rnext;
            sess_free(s);
        }
        flush_records(W);
        if (W->nsessions == 0 && W->npipes)
            pipes_trim(W);
    }
    return NULL;
}

ls_engine *ls_engine_new(int workers, int splice_mode, int pipe_size, int bufsize,
                         int use_uring)
{
    if (workers < 1 || workers > LS_MAX_WORKERS) {
        errno = EINVAL;
        return NULL;
    }
    ls_engine *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->nworkers = workers;
    e->splice_mode = splice_mode;
    e->pipe_size = pipe_size > 0 ? pipe_size : 65536;
    e->bufsize = bufsize > 0 ? bufsize : 65536;
    pthread_mutex_init(&e->ctl_lock, NULL);
    pthread_mutex_init(&e->sync_lock, NULL);
    pthread_cond_init(&e->sync_cond, NULL);
    pthread_mutex_init(&e->rec_lock, NULL);
    e->recfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    e->workers = calloc((size_t)workers, sizeof *e->workers);
    if (e->recfd < 0 || !e->workers)
        goto fail;
    for (int i = 0; i < workers; i++) { /* first: ls_engine_free walks them all */
        ls_worker *W = &e->workers[i];
        ls_list_init(&W->sessions);
        ls_list_init(&W->http_pool);
        ls_list_init(&W->http_flush);
        /* no descriptor yet (0 from calloc would be stdin, closed on a failure) */
        W->epfd = W->cmdfd = W->sparefd = -1;
        W->uring.fd = -1;
    }
    for (int i = 0; i < workers; i++) {
        ls_worker *W = &e->workers[i];
        W->e = e;
        W->id = i;
        W->last_sleep_us = INT64_MAX; /* no spin before a first short sleep */
        pthread_mutex_init(&W->cmd_lock, NULL);
        W->epfd = epoll_create1(EPOLL_CLOEXEC);
        W->cmdfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        W->sparefd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        W->buf = malloc((size_t)e->bufsize);
        W->obuf = malloc(LS_OUTBOX_BYTES);
        W->oents = calloc(LS_OUTBOX_ENTRIES, sizeof *W->oents);
        W->pipes = calloc(LS_PIPE_POOL, sizeof *W->pipes);
        if (W->epfd < 0 || W->cmdfd < 0 || !W->buf || !W->pipes)
            goto fail;
        if (use_uring)
            (void)ls_uring_init(&W->uring, LS_OUTBOX_ENTRIES); /* fd stays -1 without it */
        struct epoll_event ev;
        ev.events = EPOLLIN;
        ev.data.u64 = TAG_CMD;
        if (epoll_ctl(W->epfd, EPOLL_CTL_ADD, W->cmdfd, &ev) < 0)
            goto fail;
    }
    return e;
fail:
    ls_engine_free(e);
    return NULL;
}

int ls_engine_start(ls_engine *e)
{
    /* Workers take no signal: the control plane's thread handles them all. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int err = 0;
    for (int i = 0; i < e->nworkers && !err; i++) {
        ls_worker *W = &e->workers[i];
        err = pthread_create(&W->thread, NULL, worker_main, W);
        if (!err)
            W->started = 1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return -err;
}

int ls_engine_record_fd(ls_engine *e) { return e->recfd; }

void ls_engine_set_poll_spin(ls_engine *e, int spin_us)
{
    __atomic_store_n(&e->spin_us, spin_us > 0 ? spin_us : 0, __ATOMIC_RELAXED);
}

int ls_engine_poll_spin(ls_engine *e) { return __atomic_load_n(&e->spin_us, __ATOMIC_RELAXED); }

void ls_engine_poll_stats(ls_engine *e, uint64_t out[LS_POLL_STATS])
{
    for (int k = 0; k < LS_POLL_STATS; k++)
        out[k] = 0;
    for (int i = 0; i < e->nworkers; i++) { /* each the worker's own: read relaxed */
        ls_worker *W = &e->workers[i];
        out[0] += __atomic_load_n(&W->sleeps, __ATOMIC_RELAXED);
        out[1] += __atomic_load_n(&W->spins, __ATOMIC_RELAXED);
        out[2] += __atomic_load_n(&W->spin_hits, __ATOMIC_RELAXED);
        out[3] += __atomic_load_n(&W->spun_us, __ATOMIC_RELAXED);
        out[4] += __atomic_load_n(&W->wasted_us, __ATOMIC_RELAXED);
    }
}

int ls_engine_uring_workers(ls_engine *e)
{
    int n = 0;
    for (int i = 0; i < e->nworkers; i++)
        n += e->workers[i].uring.fd >= 0;
    return n;
}

void ls_engine_free(ls_engine *e)
{
    if (!e)
        return;
    if (e->workers) {
        for (int i = 0; i < e->nworkers; i++) {
            ls_worker *W = &e->workers[i];
            if (W->started) {
                ls_cmd *c = calloc(1, sizeof *c);
                if (c) {
                    c->type = CMD_STOP;
                    post(W, c);
                    pthread_join(W->thread, NULL);
                    free(c);
                }
            }
            ls_list *pos, *tmp;
            LS_LIST_FOR_EACH_SAFE(pos, tmp, &W->sessions) {
                ls_session *s = LS_LIST_ELEM(pos, ls_session, alink);
                for (int k = 0; k < 2; k++) {
                    if (s->fd[k] >= 0)
                        close(s->fd[k]);
                    dir_release(W, &s->dir[k]);
                }
                sess_free(s);
            }
            http_pool_shutdown(W, NULL, -1);
            while (W->dead) {
                ls_session *d = W->dead;
                W->dead = d->rnext;
                sess_free(d);
            }
            pipes_trim(W);
            if (W->epfd >= 0)
                close(W->epfd);
            if (W->cmdfd >= 0)
                close(W->cmdfd);
            if (W->sparefd >= 0)
                close(W->sparefd);
            ls_uring_free(&W->uring);
            free(W->buf);
            free(W->obuf);
            free(W->oents);
            free(W->pipes);
            free(W->heap);
            free(W->recs);
        }
        free(e->workers);
    }
    for (int i = 0; i < e->nlisteners; i++) {
        ls_listener *L = e->listeners[i];
        ls_lsock *ls = L->socks;
        while (ls) {
            ls_lsock *n = ls->next;
            free(ls);
            ls = n;
        }
        for (int c = 0; c < LS_MAX_CHUNKS && L->chunks[c]; c++) {
            free(L->chunks[c]->w);
            free(L->chunks[c]->codes);
            free(L->chunks[c]);
        }
        if (L->table) {
            free(L->table->servers);
            free(L->table->ring_pos);
            free(L->table->ring_owner);
            free(L->table);
        }
        tls_listener_free(L);
        tls_upstream_listener_free(L);
        proxy_accept_free(L);
        sni_listener_free(L);
        free(L->wstats);
        free(L->metrics);
        free(L->hcfg);
        free(L);
    }
    tls_engine_free(e);
    if (e->recfd >= 0)
        close(e->recfd);
    free(e->recs);
    free(e->spare_recs);
    free(e);
}
