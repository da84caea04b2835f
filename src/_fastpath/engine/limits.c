/* limits.c: the process-wide bounds on accepting (part of the unity build
 * engine.c), as HAProxy has them:
 *
 * - global.maxconn: the client sessions of all workers, plus the pure path's
 *   that the control plane reports (ls_engine_set_foreign_conns), may not pass
 *   it. At the bound a worker stops accepting instead of accepting and closing:
 *   the clients wait in the kernel's backlog until a session ends.
 * - the descriptor limit: a worker that gets EMFILE/ENFILE (or ENOBUFS/ENOMEM)
 *   from accept stops watching that listening socket rather than spin on an
 *   event it cannot serve.
 *
 * A paused worker takes its listening sockets out of its epoll set (a socket
 * registered with EPOLLEXCLUSIVE cannot be modified, only deleted and added
 * again) and looks again after LS_ACCEPT_RETRY_MS, or at once when one of its
 * own sessions ends. A pause is counted once per episode: the retries of a
 * worker that is still over the limit are not new pauses. */

#define LS_ACCEPT_RETRY_MS 100

static int64_t process_conns(ls_engine *e)
{
    int64_t n = __atomic_load_n(&e->foreign_conns, __ATOMIC_RELAXED);
    for (int i = 0; i < e->nworkers; i++)
        n += __atomic_load_n(&e->workers[i].nsessions, __ATOMIC_RELAXED);
    return n;
}

/* 0: room; 1: at global.maxconn; 2: at the bound the descriptor limit sets
 * (RLIMIT_NOFILE, two descriptors a session and a reserve: the control plane
 * gives the engine the smaller of the two, and says which it is). */
static int accept_full(ls_worker *W)
{
    int64_t max = __atomic_load_n(&W->e->maxconn, __ATOMIC_RELAXED);
    if (max <= 0 || process_conns(W->e) < max)
        return 0;
    return __atomic_load_n(&W->e->bound_from_fds, __ATOMIC_RELAXED) ? 2 : 1;
}

/* Stop watching ls in this worker; 0 when there is no room to remember it (the
 * caller then refuses the connection as before). */
static int accept_pause(ls_worker *W, ls_lsock *ls, int at_maxconn)
{
    if (W->npaused >= LS_MAX_PAUSED)
        return 0;
    epoll_ctl(W->epfd, EPOLL_CTL_DEL, ls->fd, NULL);
    W->paused[W->npaused].ls = ls;
    W->paused[W->npaused].L = ls->L;
    W->paused[W->npaused].fd = ls->fd;
    W->npaused++;
    W->accept_resume_us = W->now_us + LS_ACCEPT_RETRY_MS * 1000;
    W->paused_nsessions = W->nsessions;
    if (!W->pause_episode) {
        W->pause_episode = 1;
        __atomic_add_fetch(at_maxconn ? &W->e->maxconn_pauses : &W->e->accept_pauses, 1,
                           __ATOMIC_RELAXED);
    }
    return 1;
}

/* Watch the paused sockets again. A socket the control plane removed in the
 * meantime is no longer in its listener's list (unlinked under ctl_lock before
 * it is freed), so it is left alone; the lock is only tried, never waited for. */
static void accept_resume(ls_worker *W)
{
    ls_engine *e = W->e;
    if (pthread_mutex_trylock(&e->ctl_lock) != 0) {
        W->accept_resume_us = W->now_us + 10 * 1000;
        return;
    }
    for (int i = 0; i < W->npaused; i++) {
        for (ls_lsock *ls = W->paused[i].L->socks; ls; ls = ls->next) {
            if (ls != W->paused[i].ls || ls->fd != W->paused[i].fd || ls->closed)
                continue;
            struct epoll_event ev;
            ev.events = EPOLLIN | EPOLLEXCLUSIVE;
            ev.data.u64 = (uint64_t)(uintptr_t)ls | TAG_LSOCK;
            if (epoll_ctl(W->epfd, EPOLL_CTL_ADD, ls->fd, &ev) < 0 && errno != EEXIST) {
                ev.events = EPOLLIN;
                epoll_ctl(W->epfd, EPOLL_CTL_ADD, ls->fd, &ev);
            }
            break;
        }
    }
    pthread_mutex_unlock(&e->ctl_lock);
    W->npaused = 0;
    W->accept_resume_us = 0;
}

/* Each round of the worker loop: resume when the retry time came or a session
 * of this worker ended (a descriptor, a maxconn slot freed). */
static void accept_maybe_resume(ls_worker *W)
{
    if (W->npaused && (W->now_us >= W->accept_resume_us || W->nsessions < W->paused_nsessions))
        accept_resume(W);
}

/* The epoll timeout of a paused worker: no later than its retry. */
static int accept_timeout(ls_worker *W, int timeout)
{
    if (!W->npaused)
        return timeout;
    int64_t wait = W->accept_resume_us - now_us();
    int ms = wait <= 0 ? 0 : (int)((wait + 999) / 1000);
    return timeout < 0 || ms < timeout ? ms : timeout;
}

void ls_engine_set_maxconn(ls_engine *e, int64_t maxconn, int64_t foreign)
{
    __atomic_store_n(&e->maxconn, maxconn, __ATOMIC_RELAXED);
    __atomic_store_n(&e->foreign_conns, foreign, __ATOMIC_RELAXED);
}

void ls_engine_set_bound_from_fds(ls_engine *e, int from_fds)
{
    __atomic_store_n(&e->bound_from_fds, from_fds, __ATOMIC_RELAXED);
}

void ls_engine_set_foreign_conns(ls_engine *e, int64_t foreign)
{
    __atomic_store_n(&e->foreign_conns, foreign, __ATOMIC_RELAXED);
}

void ls_engine_limit_stats(ls_engine *e, ls_limit_stats *out)
{
    out->conns = process_conns(e) - __atomic_load_n(&e->foreign_conns, __ATOMIC_RELAXED);
    out->accept_pauses = __atomic_load_n(&e->accept_pauses, __ATOMIC_RELAXED);
    out->maxconn_pauses = __atomic_load_n(&e->maxconn_pauses, __ATOMIC_RELAXED);
}
