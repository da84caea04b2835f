/* http_pool.c: the HTTP engine's server connections and their per-worker pool
 * (part of the unity build engine.c).
 *
 * A server connection that has served one response becomes a connection
 * object (an ls_session in state ST_POOLED, `owner` the session using it or
 * NULL when idle): its epoll registration moves to the object once, with
 * EPOLL_CTL_MOD, and stays there for the connection's life; events of a
 * connection in use are handed to its owner. Taking and giving back a pooled
 * connection is then a few pointer stores, no system call. */

/* Server connections and their pool
 *
 * A server connection that has served one response becomes a connection
 * object (an ls_session in state ST_POOLED, `owner` the session using it or
 * NULL when idle): its epoll registration moves to the object once, with
 * EPOLL_CTL_MOD, and stays there for the connection's life; events of a
 * connection in use are handed to its owner. Taking and giving back a pooled
 * connection is then a few pointer stores, no system call. */

/* A server connection is closed after some requests rather than pooled again.
 * Behind one server with several workers on one port, the kernel hands each
 * new connection to whichever worker is waiting in accept at that moment:
 * connections opened in the burst of a start all land on the one that was
 * idle, and would stay there for good. Renewed now and then while the server
 * is busy, they land on the worker with time to spare, and the workers'
 * shares even out.
 *
 * Each connection has its own limit, drawn when it opens, uniform in
 * [ceil(max/2), max] for server_max_requests max (the listener's
 * hcfg->max_requests, 1000 by default as nginx's upstream keepalive_requests;
 * 1 stays 1: no reuse). One limit for all would renew them all together:
 * the pool takes them oldest first, in turn, so they reach it within a few
 * requests of each other, and the burst of new connections lands on the one
 * server worker waiting then, the whole pool moving from worker to worker.
 * Drawn apart, the renewals spread in time, and each new connection lands on
 * whichever worker is free at its own moment. The cost is one connect per
 * 500 to 1000 requests, and a few multiplications per connection. */

/* xorshift64* (Vigna): the worker's own generator, no lock, no system call */
static uint64_t worker_rand(ls_worker *W)
{
    uint64_t x = W->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    W->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* When the worker starts: a state of its own (splitmix64 of the time, the
 * process and the worker), never 0 (xorshift would stay there). */
static void worker_rand_seed(ls_worker *W)
{
    uint64_t z = (uint64_t)now_us() ^ ((uint64_t)getpid() << 32) ^
                 ((uint64_t)W->id * 0x9E3779B97F4A7C15ULL);
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    W->rng = z ? z : 1;
}

/* A new server connection's own limit: uniform in [ceil(max/2), max] (max >= 1). */
static int conn_max_requests(ls_worker *W, int max)
{
    uint32_t lo = ((uint32_t)max + 1) / 2, span = (uint32_t)max - lo + 1;
    uint32_t r = (uint32_t)(worker_rand(W) >> 32);
    return (int)(lo + (uint32_t)(((uint64_t)r * span) >> 32));
}

static void pool_unlink(ls_session *p)
{
    ls_list_del(&p->qlink);
    __atomic_fetch_sub(&p->L->http_pooled, 1, __ATOMIC_RELAXED);
}

/* The end of a connection object (closing its descriptor unless it is -1). */
static void conn_free(ls_worker *W, ls_session *p)
{
    timer_del(W, p);
    tls_upstream_free(p);
    if (p->fd[1] >= 0)
        close(p->fd[1]);
    p->fd[1] = -1;
    p->owner = NULL;
    p->state = ST_CLOSED;
    p->rnext = W->dead; /* a stale event of this round may still name it */
    W->dead = p;
}

/* An idle connection closed by the server, spoken on unasked, or idle too long. */
static void pool_drop(ls_worker *W, ls_session *p)
{
    if (p->state != ST_POOLED || p->owner)
        return;
    pool_unlink(p);
    conn_free(W, p);
}

/* An epoll event of a connection object (on_session, through proto_http). */
static void conn_event(ls_worker *W, ls_session *p, uint32_t ev)
{
    if (p->owner) {
        on_session(W, p->owner, 1, ev);
        return;
    }
    if (ev & ~(uint32_t)EPOLLOUT)
        pool_drop(W, p);
}

/* Close the session's server connection (no pooling, no count change). */
static void drop_server_conn(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    if (h->conn) {
        h->conn->fd[1] = s->fd[1];
        h->conn->stls = s->stls; /* the connection's TLS goes with its descriptor */
        s->stls = NULL;
        h->conn->owner = NULL;
        conn_free(W, h->conn);
        h->conn = NULL;
    } else if (s->fd[1] >= 0) {
        tls_upstream_free(s);
        close(s->fd[1]);
    }
    s->fd[1] = -1;
    s->rd[1] = s->wr[1] = s->rdhup[1] = 0;
    h->connected = 0;
}

/* Give the session's server connection to the pool; 0, or -1 if it could not. */
static int pool_put(ls_worker *W, ls_session *s)
{
    ls_http *h = s->http;
    ls_listener *L = s->L;
    ls_session *p = h->conn;
    if (!p) {
        p = calloc(1, sizeof *p);
        if (!p)
            return -1;
        struct epoll_event ev;
        ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
        ev.data.u64 = (uint64_t)(uintptr_t)p | TAG_SERVER;
        if (epoll_ctl(W->epfd, EPOLL_CTL_MOD, s->fd[1], &ev) < 0) {
            free(p);
            return -1;
        }
        p->L = L;
        p->W = W;
        p->fd[0] = -1;
        p->fd[1] = s->fd[1];
        p->heap_idx = -1;
        p->state = ST_POOLED;
        p->proto = s->proto;
    }
    p->slot = s->slot;
    p->stls = s->stls;
    s->stls = NULL;
    p->attempts = h->backend_requests;
    p->conn_max = h->backend_max;
    p->owner = NULL;
    /* Oldest first: http_take_pooled takes from the front, so the connection
     * idle longest serves next and every pooled connection takes its turn.
     * Reusing the newest (a stack) would pile the requests on the few
     * connections at its top, and with them on the one worker of a
     * multi-worker server (uwsgi, nginx) that accepted those. */
    ls_list_push_back(&W->http_pool, &p->qlink);
    __atomic_fetch_add(&L->http_pooled, 1, __ATOMIC_RELAXED);
    timer_set(W, p, W->now_us + L->hcfg->keep_alive_ms * 1000);
    h->conn = NULL;
    s->fd[1] = -1;
    s->rd[1] = s->wr[1] = s->rdhup[1] = 0;
    h->connected = 0;
    return 0;
}

static void release_server(ls_worker *W, ls_session *s, int reusable)
{
    ls_http *h = s->http;
    ls_listener *L = s->L;
    /* its own limit reached (or a lower server_max_requests a reload brought),
     * or it told one client's address in a PROXY header: it serves no other */
    if (h->backend_requests >= h->backend_max || h->backend_requests >= L->hcfg->max_requests ||
        s->proxy_version)
        reusable = 0;
    if (!(s->fd[1] >= 0 && reusable && h->connected && !L->http_stopping && pool_put(W, s) == 0))
        drop_server_conn(W, s);
    if (s->slot >= 0) {
        __atomic_fetch_sub(&slot_shared(L, s->slot)->live, 1, __ATOMIC_RELAXED);
        s->slot = -1;
    }
}

/* proto_http.take_pooled: an idle connection to the picked server, if the
 * worker has one, the one idle longest; 1 when the session got it. */
static int http_take_pooled(ls_worker *W, ls_session *s)
{
    if (s->proxy_version)
        return 0; /* its own connection, with its own PROXY header */
    ls_list *pos;
    LS_LIST_FOR_EACH(pos, &W->http_pool) {
        ls_session *p = LS_LIST_ELEM(pos, ls_session, qlink);
        if (p->L != s->L || p->slot != s->slot)
            continue;
        ls_http *h = s->http;
        pool_unlink(p);
        timer_del(W, p);
        p->owner = s;
        h->conn = p;
        h->backend_requests = p->attempts + 1;
        h->backend_max = p->conn_max;
        s->fd[1] = p->fd[1];
        s->stls = p->stls;
        p->stls = NULL;
        s->rd[1] = s->rdhup[1] = 0;
        s->wr[1] = 1;
        s->state = ST_HTTP;
        h->connected = 1;
        h->reused = 1;
        h->t_connect = 0;
        h->log_slot = s->slot;
        /* no event will say so (the registration did not change): the head
         * goes out with this round's writes */
        flush_later(W, s);
        return 1;
    }
    return 0;
}

static void http_pool_shutdown(ls_worker *W, ls_listener *L, int slot)
{
    ls_list *pos, *tmp;
    LS_LIST_FOR_EACH_SAFE(pos, tmp, &W->http_pool) {
        ls_session *p = LS_LIST_ELEM(pos, ls_session, qlink);
        if ((!L || p->L == L) && (slot < 0 || p->slot == slot))
            pool_drop(W, p);
    }
}
