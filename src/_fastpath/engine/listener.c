/* listener.c: the control plane's calls about listeners (part of the unity
 * build engine.c): create and configure them, their sockets and server slots,
 * publish server tables, read counters, close sessions. */

static ls_listener *get_listener(ls_engine *e, int lid)
{
    return lid >= 0 && lid < e->nlisteners ? e->listeners[lid] : NULL;
}

int ls_listener_new(ls_engine *e)
{
    pthread_mutex_lock(&e->ctl_lock);
    int id = -1;
    if (e->nlisteners < LS_MAX_LISTENERS) {
        ls_listener *L = calloc(1, sizeof *L);
        ls_lwstats *w = NULL;
        ls_hconfig *hcfg = calloc(1, sizeof *hcfg); /* mode tcp until configured */
        if (L && hcfg && posix_memalign((void **)&w, 64, (size_t)e->nworkers * sizeof *w) == 0) {
            memset(w, 0, (size_t)e->nworkers * sizeof *w);
            L->wstats = w;
            L->metrics = metrics_listener_alloc(e->nworkers); /* NULL: not counted */
            L->e = e;
            L->hcfg = hcfg;
            ls_list_init(&L->queue);
            L->proto = &proto_tcp;
            pthread_mutex_init(&L->lock, NULL);
            L->cfg.maxconn = 4096;
            L->cfg.connect_ms = 5000;
            L->cfg.idle_ms = 60000;
            L->cfg.idle_reason = LS_END_CLIENT_TIMEOUT;
            L->cfg.queue_ms = 30000;
            id = L->id = e->nlisteners;
            e->listeners[e->nlisteners++] = L;
        } else {
            free(hcfg);
            free(L);
        }
    }
    pthread_mutex_unlock(&e->ctl_lock);
    return id;
}

/* tcp_keepalive is set on the listening socket, not on each accepted one:
 * Linux copies SO_KEEPALIVE and TCP_KEEPIDLE/INTVL/CNT to every connection
 * it accepts from it (4 system calls fewer per client connection). */
static void listen_keepalive(int fd, const ls_lconfig *cfg)
{
    int on = cfg->keepalive != 0;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    if (on)
        set_keepalive(fd, cfg);
}

void ls_listener_configure(ls_engine *e, int lid, const ls_lconfig *cfg)
{
    ls_listener *L = get_listener(e, lid);
    if (!L)
        return;
    pthread_mutex_lock(&L->lock);
    L->cfg = *cfg;
    ls_session *next = dequeue_admissible(L); /* maxconn may have grown */
    pthread_mutex_unlock(&L->lock);
    pthread_mutex_lock(&e->ctl_lock);
    for (ls_lsock *ls = L->socks; ls; ls = ls->next)
        listen_keepalive(ls->fd, cfg);
    pthread_mutex_unlock(&e->ctl_lock);
    dispatch_admitted(NULL, next);
}

int ls_listener_add_socket(ls_engine *e, int lid, int fd)
{
    ls_listener *L = get_listener(e, lid);
    if (!L)
        return -EINVAL;
    ls_lsock *ls = calloc(1, sizeof *ls);
    if (!ls)
        return -ENOMEM;
    ls->fd = fd;
    ls->L = L;
    pthread_mutex_lock(&e->ctl_lock);
    listen_keepalive(fd, &L->cfg);
    int err = 0;
    for (int i = 0; i < e->nworkers; i++) {
        struct epoll_event ev;
        ev.events = EPOLLIN | EPOLLEXCLUSIVE;
        ev.data.u64 = (uint64_t)(uintptr_t)ls | TAG_LSOCK;
        if (epoll_ctl(e->workers[i].epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            ev.events = EPOLLIN; /* a kernel before 4.5: every worker wakes */
            if (epoll_ctl(e->workers[i].epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
                err = -errno;
                for (int k = 0; k < i; k++)
                    epoll_ctl(e->workers[k].epfd, EPOLL_CTL_DEL, fd, NULL);
                break;
            }
        }
    }
    if (!err) {
        ls->next = L->socks;
        L->socks = ls;
    } else {
        free(ls);
    }
    pthread_mutex_unlock(&e->ctl_lock);
    return err;
}

int ls_listener_remove_socket(ls_engine *e, int lid, int fd)
{
    ls_listener *L = get_listener(e, lid);
    if (!L)
        return -EINVAL;
    pthread_mutex_lock(&e->ctl_lock);
    ls_lsock **pp = &L->socks, *ls = NULL;
    while (*pp) {
        if ((*pp)->fd == fd) {
            ls = *pp;
            *pp = ls->next;
            break;
        }
        pp = &(*pp)->next;
    }
    pthread_mutex_unlock(&e->ctl_lock);
    if (!ls)
        return -ENOENT;
    ls->closed = 1;
    for (int i = 0; i < e->nworkers; i++)
        epoll_ctl(e->workers[i].epfd, EPOLL_CTL_DEL, fd, NULL);
    /* After the barrier no worker holds an event for this socket. */
    post_all_sync(e, CMD_BARRIER, L, -1, 0);
    free(ls);
    return 0;
}

int ls_listener_new_slot(ls_engine *e, int lid)
{
    ls_listener *L = get_listener(e, lid);
    if (!L)
        return -1;
    pthread_mutex_lock(&e->ctl_lock);
    int slot = L->nslots;
    int c = slot / LS_SLOTS_PER_CHUNK;
    if (c >= LS_MAX_CHUNKS) {
        pthread_mutex_unlock(&e->ctl_lock);
        return -1;
    }
    if (!L->chunks[c]) {
        ls_chunk *ch = calloc(1, sizeof *ch);
        if (ch)
            ch->w = calloc((size_t)e->nworkers * LS_SLOTS_PER_CHUNK, sizeof *ch->w);
        if (!ch || !ch->w) {
            free(ch);
            pthread_mutex_unlock(&e->ctl_lock);
            return -1;
        }
        ch->codes = metrics_codes_alloc(e->nworkers); /* NULL: not counted */
        /* published to the workers by the lock of the table that first names it */
        L->chunks[c] = ch;
    }
    L->nslots++;
    pthread_mutex_unlock(&e->ctl_lock);
    return slot;
}

static void table_free(ls_table *T)
{
    if (!T)
        return;
    free(T->servers);
    free(T->ring_pos);
    free(T->ring_owner);
    free(T);
}

/* A copy of a server table the control plane publishes (the listener's, or a
 * pool's: sni.c); NULL with *err -ENOMEM or -EINVAL (a slot never made). */
static ls_table *table_new(ls_listener *L, int alg, const ls_tserver *servers, int n,
                           const uint64_t *ring_pos, const int32_t *ring_owner, int nring,
                           int *err)
{
    ls_table *T = calloc(1, sizeof *T);
    *err = -ENOMEM;
    if (!T)
        return NULL;
    T->alg = alg;
    T->n = n;
    T->nring = nring;
    T->servers = malloc((size_t)(n ? n : 1) * sizeof *T->servers);
    T->ring_pos = malloc((size_t)(nring ? nring : 1) * sizeof *T->ring_pos);
    T->ring_owner = malloc((size_t)(nring ? nring : 1) * sizeof *T->ring_owner);
    if (!T->servers || !T->ring_pos || !T->ring_owner) {
        table_free(T);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        if (servers[i].slot < 0 || servers[i].slot >= L->nslots) {
            table_free(T);
            *err = -EINVAL;
            return NULL;
        }
    }
    memcpy(T->servers, servers, (size_t)n * sizeof *servers);
    if (nring) {
        memcpy(T->ring_pos, ring_pos, (size_t)nring * sizeof *ring_pos);
        memcpy(T->ring_owner, ring_owner, (size_t)nring * sizeof *ring_owner);
    }
    return T;
}

int ls_listener_publish(ls_engine *e, int lid, int alg, const ls_tserver *servers, int n,
                        const uint64_t *ring_pos, const int32_t *ring_owner, int nring)
{
    ls_listener *L = get_listener(e, lid);
    if (!L)
        return -EINVAL;
    int err;
    ls_table *T = table_new(L, alg, servers, n, ring_pos, ring_owner, nring, &err);
    if (!T)
        return err;
    pthread_mutex_lock(&L->lock);
    ls_table *old = L->table;
    L->table = T;
    L->alg = alg;
    /* Round-robin: a server that left starts afresh at 0 when it comes back
     * (loadstone.balance.roundrobin.SmoothWeighted.update). */
    for (int slot = 0; slot < L->nslots; slot++) {
        int kept = 0;
        for (int i = 0; i < n && !kept; i++)
            kept = servers[i].slot == slot;
        if (!kept)
            slot_shared(L, slot)->rr_current = 0;
    }
    if (L->lc_next >= n)
        L->lc_next = 0;
    pthread_mutex_unlock(&L->lock);
    table_free(old);
    return 0;
}

void ls_listener_stats(ls_engine *e, int lid, ls_lstats *out)
{
    memset(out, 0, sizeof *out);
    ls_listener *L = get_listener(e, lid);
    if (!L)
        return;
    pthread_mutex_lock(&L->lock);
    out->current = L->active + L->nqueued;
    out->queued = L->nqueued;
    pthread_mutex_unlock(&L->lock);
    for (int i = 0; i < e->nworkers; i++) {
        ls_lwstats *w = &L->wstats[i];
        out->sessions_total += __atomic_load_n(&w->sessions_total, __ATOMIC_RELAXED);
        out->bytes_in += __atomic_load_n(&w->bytes_in, __ATOMIC_RELAXED);
        out->bytes_out += __atomic_load_n(&w->bytes_out, __ATOMIC_RELAXED);
        out->denied += __atomic_load_n(&w->denied, __ATOMIC_RELAXED);
    }
}

void ls_server_stats(ls_engine *e, int lid, int slot, ls_sstats *out)
{
    memset(out, 0, sizeof *out);
    ls_listener *L = get_listener(e, lid);
    if (!L || slot < 0 || slot >= L->nslots)
        return;
    out->live = __atomic_load_n(&slot_shared(L, slot)->live, __ATOMIC_RELAXED);
    for (int i = 0; i < e->nworkers; i++) {
        ls_slot_wstats *w = slot_w(L, i, slot);
        out->sessions_total += __atomic_load_n(&w->sessions_total, __ATOMIC_RELAXED);
        out->bytes_in += __atomic_load_n(&w->bytes_in, __ATOMIC_RELAXED);
        out->bytes_out += __atomic_load_n(&w->bytes_out, __ATOMIC_RELAXED);
    }
}

int ls_shutdown(ls_engine *e, int lid, int slot, int reason_id)
{
    ls_listener *L = get_listener(e, lid);
    if (!L)
        return 0;
    return post_all_sync(e, CMD_SHUTDOWN, L, slot, reason_id);
}
