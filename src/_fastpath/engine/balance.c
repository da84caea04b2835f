/* balance.c: server selection, the balancing algorithms of a published table
 * (part of the unity build engine.c). Each mirrors its loadstone.balance twin
 * so that both data paths pick alike; all run under the listener's lock. */

/* The key the `source` balancer hashes: the client IP as Python prints it, an
 * IPv4-mapped IPv6 address as plain IPv4. */
static uint64_t client_hash(const ls_addr *a)
{
    char ip[INET6_ADDRSTRLEN];
    const char *key = ip;
    if (a->sa.sa_family == AF_INET) {
        inet_ntop(AF_INET, &a->in4.sin_addr, ip, sizeof ip);
    } else {
        inet_ntop(AF_INET6, &a->in6.sin6_addr, ip, sizeof ip);
        if (strncmp(ip, "::ffff:", 7) == 0 && strchr(ip, '.'))
            key = ip + 7;
    }
    return ls_blake2b64_impl(key, strlen(key));
}

static int is_failed(const ls_session *s, int slot)
{
    for (int i = 0; i < s->nfailed; i++)
        if (s->failed[i] == slot)
            return 1;
    return 0;
}

/* Smooth weighted round-robin (nginx), as loadstone.balance.roundrobin. */
static int pick_rr(ls_listener *L, ls_table *T, const ls_session *s, int exclude)
{
    int best = -1;
    int64_t best_value = 0, total = 0;
    for (int i = 0; i < T->n; i++) {
        ls_tserver *t = &T->servers[i];
        if (exclude && is_failed(s, t->slot))
            continue;
        ls_slot_shared *sh = slot_shared(L, t->slot);
        int64_t value = sh->rr_current + t->weight;
        sh->rr_current = value;
        total += t->weight;
        if (best < 0 || value > best_value) {
            best = i;
            best_value = value;
        }
    }
    if (best < 0)
        return exclude ? pick_rr(L, T, s, 0) : -1;
    slot_shared(L, T->servers[best].slot)->rr_current = best_value - total;
    return best;
}

/* Least connections for the weight, rotating the start, as balance.leastconn. */
static int pick_leastconn(ls_listener *L, ls_table *T, const ls_session *s, int exclude)
{
    int n = T->n, best = -1, at = L->lc_next;
    int64_t best_load = 0, best_weight = 1;
    if (at >= n)
        at = 0;
    for (int k = 0; k < n; k++) {
        ls_tserver *t = &T->servers[at];
        if (!(exclude && is_failed(s, t->slot))) {
            int64_t load = __atomic_load_n(&slot_shared(L, t->slot)->live, __ATOMIC_RELAXED) + 1;
            if (best < 0 || load * best_weight < best_load * t->weight) {
                best = at;
                best_load = load;
                best_weight = t->weight;
            }
        }
        at = at + 1 < n ? at + 1 : 0;
    }
    if (best < 0)
        return exclude ? pick_leastconn(L, T, s, 0) : -1;
    L->lc_next = best + 1 < n ? best + 1 : 0;
    return best;
}

/* First server with a free slot, in configuration order, as balance.first. */
static int pick_first(ls_listener *L, ls_table *T, const ls_session *s, int exclude)
{
    for (int i = 0; i < T->n; i++) {
        ls_tserver *t = &T->servers[i];
        if (exclude && is_failed(s, t->slot))
            continue;
        if (t->maxconn < 0 ||
            __atomic_load_n(&slot_shared(L, t->slot)->live, __ATOMIC_RELAXED) < t->maxconn)
            return i;
    }
    return exclude ? pick_first(L, T, s, 0) : -1;
}

/* Consistent hash of the client address, as balance.source. */
static int pick_source(ls_table *T, const ls_session *s, int exclude)
{
    if (T->nring == 0 || T->n == 0)
        return -1;
    if (exclude) {
        int all = 1;
        for (int i = 0; i < T->n && all; i++)
            all = is_failed(s, T->servers[i].slot);
        if (all)
            exclude = 0;
    }
    /* bisect_left: the first point at or after the client's position */
    int lo = 0, hi = T->nring;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (T->ring_pos[mid] < s->hashpos)
            lo = mid + 1;
        else
            hi = mid;
    }
    int at = lo;
    for (int k = 0; k < T->nring; k++, at++) {
        if (at == T->nring)
            at = 0;
        int owner = T->ring_owner[at];
        if (owner >= 0 && !(exclude && is_failed(s, T->servers[owner].slot)))
            return owner;
    }
    return -1;
}

/* Choose a server for the session (taking the listener's lock): its slot (the
 * server's live count taken) and address in s->saddr, or -1 when none can
 * take it. A retry avoids the servers that failed it when redispatch is on. */
static int pick_server(ls_listener *L, ls_session *s)
{
    if (!s->hashed && L->alg == LS_ALG_SOURCE) {
        s->hashpos = client_hash(&s->client);
        s->hashed = 1;
    }
    pthread_mutex_lock(&L->lock);
    ls_table *T = sni_table(L, s); /* L->table, or the SNI pool's (sni.c) */
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
        s->proxy_version = (uint8_t)t->proxy_version;
        __atomic_fetch_add(&slot_shared(L, slot)->live, 1, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&L->lock);
    return slot;
}
