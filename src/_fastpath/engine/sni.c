/* sni.c: SNI passthrough in the workers (part of the unity build engine.c),
 * the twin of the pure path's (loadstone/datapath/sni_passthrough.py and the
 * inspection in tcp_pure.py). No call here takes the GIL or waits.
 *
 * A session of a listener with passthrough, once admitted (it counts against
 * maxconn, as on the pure path), does not pick a server at once: it waits in
 * ST_SNI_INSPECT, under the listener's inspect timeout, reading what the
 * client sends into a buffer of its own (recv, no MSG_PEEK) and feeding the
 * whole of it to the ClientHello reader (clienthello.c). Then:
 *  - a whole ClientHello: its server name chooses a pool (exact names, then
 *    suffixes of "*." names, else the default pool); the buffer becomes the
 *    client direction's unsent bytes (dir[0].buf), so the relay writes them,
 *    untouched, before anything else, and the session picks a server from the
 *    pool's own table and connects as any tcp session;
 *  - bytes that cannot be a ClientHello: the session ends at once;
 *  - no whole ClientHello by the timeout (a slow or silent client, a
 *    truncated hello followed by a FIN): it ends then.
 * Refusals are counted by reason (the reader's words, "sni-inspect-timeout"),
 * and logged as the pure path logs them (end "sni-refused (reason)", no
 * server). Reading stops at the pure path's PENDING_LIMIT of buffered bytes;
 * a hello not whole by then ends at the timeout. */

#include "clienthello.c"
#include "sni.h"

#define LS_SNI_PENDING_LIMIT (256 * 1024) /* tcp_pure.PENDING_LIMIT */

_Static_assert(LS_SNI_MAX_POOLS <= 64 && LS_SNI_NREFUSED <= 64,
               "relay.pyx's sni_stats reads the counts into arrays of 64");

static ls_sni *listener_sni(ls_listener *L)
{
    if (!L->sni)
        L->sni = calloc(1, sizeof *L->sni);
    return L->sni;
}

static void sni_config_free(ls_sni_config *c)
{
    for (int i = 0; i < c->n; i++)
        free(c->names[i].name);
    free(c);
}

int ls_listener_set_sni(ls_engine *e, int lid, int64_t inspect_ms, int default_pool,
                        const ls_sni_route *routes, int n)
{
    ls_listener *L = get_listener(e, lid);
    if (!L)
        return -1;
    ls_sni_config *c = NULL;
    if (n >= 0) {
        if (default_pool < 0 || default_pool >= LS_SNI_MAX_POOLS)
            return -1;
        c = calloc(1, sizeof *c + (size_t)n * sizeof c->names[0]);
        if (!c)
            return -1;
        c->inspect_ms = inspect_ms > 0 ? inspect_ms : 1;
        c->default_pool = default_pool;
        for (int i = 0; i < n; i++) {
            ls_sni_name *m = &c->names[i];
            m->len = strlen(routes[i].name);
            m->name = strdup(routes[i].name);
            m->pool = routes[i].pool;
            m->suffix = routes[i].suffix != 0;
            c->n = i + 1;
            if (!m->name || m->pool < 0 || m->pool >= LS_SNI_MAX_POOLS) {
                sni_config_free(c);
                return -1;
            }
        }
    }
    pthread_mutex_lock(&e->ctl_lock);
    ls_sni *N = c || L->sni ? listener_sni(L) : NULL;
    if (c && !N) {
        pthread_mutex_unlock(&e->ctl_lock);
        sni_config_free(c);
        return -1;
    }
    if (N) {
        /* the one replaced stays until the listener goes: a worker may be reading it */
        ls_sni_config *old = N->cfg;
        __atomic_store_n(&N->cfg, c, __ATOMIC_RELEASE);
        if (old) {
            old->prev = N->old;
            N->old = old;
        }
    }
    pthread_mutex_unlock(&e->ctl_lock);
    return 0;
}

int ls_listener_publish_pool(ls_engine *e, int lid, int pool, int alg, const ls_tserver *servers,
                             int n, const uint64_t *ring_pos, const int32_t *ring_owner,
                             int nring)
{
    ls_listener *L = get_listener(e, lid);
    if (!L || pool < 0 || pool >= LS_SNI_MAX_POOLS)
        return -EINVAL;
    pthread_mutex_lock(&e->ctl_lock);
    ls_sni *N = listener_sni(L);
    pthread_mutex_unlock(&e->ctl_lock);
    if (!N)
        return -ENOMEM;
    int err;
    ls_table *T = table_new(L, alg, servers, n, ring_pos, ring_owner, nring, &err);
    if (!T)
        return err;
    pthread_mutex_lock(&L->lock);
    ls_table *old = N->tables[pool];
    N->tables[pool] = T;
    /* Round-robin: a server that left the pool starts afresh at 0 when it
     * comes back (as ls_listener_publish, for this pool's servers). */
    for (int i = 0; old && i < old->n; i++) {
        int kept = 0;
        for (int j = 0; j < n && !kept; j++)
            kept = servers[j].slot == old->servers[i].slot;
        if (!kept)
            slot_shared(L, old->servers[i].slot)->rr_current = 0;
    }
    pthread_mutex_unlock(&L->lock);
    table_free(old);
    return 0;
}

void ls_listener_sni_stats(ls_engine *e, int lid, uint64_t routed[LS_SNI_MAX_POOLS],
                           uint64_t refused[LS_SNI_NREFUSED])
{
    memset(routed, 0, LS_SNI_MAX_POOLS * sizeof *routed);
    memset(refused, 0, LS_SNI_NREFUSED * sizeof *refused);
    ls_listener *L = get_listener(e, lid);
    ls_sni *N = L ? L->sni : NULL;
    if (!N)
        return;
    for (int i = 0; i < LS_SNI_MAX_POOLS; i++)
        routed[i] = __atomic_load_n(&N->routed[i], __ATOMIC_RELAXED);
    for (int i = 0; i < LS_SNI_NREFUSED; i++)
        refused[i] = __atomic_load_n(&N->refused[i], __ATOMIC_RELAXED);
}

static void sni_listener_free(ls_listener *L)
{
    ls_sni *N = L->sni;
    if (!N)
        return;
    if (N->cfg)
        sni_config_free(N->cfg);
    while (N->old) {
        ls_sni_config *prev = N->old->prev;
        sni_config_free(N->old);
        N->old = prev;
    }
    for (int i = 0; i < LS_SNI_MAX_POOLS; i++)
        table_free(N->tables[i]);
    free(N);
    L->sni = NULL;
}

/* pick_server's table: the routed pool's (under the listener's lock). A pool
 * never published has none: no server, as an empty pool on the pure path. */
static ls_table *sni_table(ls_listener *L, const ls_session *s)
{
    if (!s->route || !L->sni)
        return L->table;
    return L->sni->tables[s->route - 1];
}

/* ---------------------------------------------------------------------------------- */
/* a session's inspection                                                             */

static void sni_free(ls_session *s)
{
    ls_sni_conn *k = s->sni;
    if (!k)
        return;
    ls_ch_free(&k->reader);
    free(k->buf);
    free(k);
    s->sni = NULL;
}

/* Ends a session before routing, counted by reason (LS_CH_*, LS_SNI_TIMEOUT). */
static void sni_refuse(ls_worker *W, ls_session *s, int reason)
{
    __atomic_fetch_add(&s->L->sni->refused[reason], 1, __ATOMIC_RELAXED);
    finish(W, s, reason == LS_SNI_TIMEOUT ? LS_END_SNI_TIMEOUT : LS_END_SNI_REFUSED, reason);
}

/* RFC 8701 GREASE values (0x0a0a, 0x1a1a ... 0xfafa): never a real version. */
static int sni_grease(unsigned v) { return (v & 0x0F0F) == 0x0A0A && (v >> 8) == (v & 0xFF); }

/* The session log's tls field, sni_passthrough.log_field: the newest version
 * offered, "passthrough" for the cipher the proxy never sees, the SNI. */
static void sni_log_field(const ls_ch_hello *h, char *out, size_t size)
{
    static const char *const names[] = {"SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"};
    int best = -1;
    for (size_t i = 0; i < h->nversions; i++) {
        int v = (int)(((unsigned)h->versions[2 * i] << 8) | h->versions[2 * i + 1]);
        if (!sni_grease((unsigned)v) && v > best)
            best = v;
    }
    char version[16];
    if (best < 0)
        snprintf(version, sizeof version, "-");
    else if (best >= 0x0300 && best <= 0x0304)
        snprintf(version, sizeof version, "%s", names[best - 0x0300]);
    else
        snprintf(version, sizeof version, "0x%04x", best);
    int empty = !h->has_server_name || h->server_name_len == 0;
    snprintf(out, size, "%s/passthrough/%.*s", version, empty ? 1 : (int)h->server_name_len,
             empty ? "-" : h->server_name);
}

/* The pool of a server name (sni_passthrough.SniPools.route). */
static int sni_pool_of(const ls_sni_config *c, const ls_ch_hello *h)
{
    if (!h->has_server_name)
        return c->default_pool;
    const char *name = h->server_name;
    size_t len = h->server_name_len;
    for (int i = 0; i < c->n; i++) {
        const ls_sni_name *m = &c->names[i];
        if (!m->suffix && m->len == len && memcmp(m->name, name, len) == 0)
            return m->pool;
    }
    for (int i = 0; i < c->n; i++) {
        const ls_sni_name *m = &c->names[i];
        if (m->suffix && m->len <= len && memcmp(m->name, name + len - m->len, m->len) == 0)
            return m->pool;
    }
    return c->default_pool;
}

/* A whole ClientHello: the pool, then a server, as any admitted tcp session. */
static void sni_route(ls_worker *W, ls_session *s, const ls_ch_hello *h)
{
    ls_sni_conn *k = s->sni;
    ls_sni *N = s->L->sni;
    ls_sni_config *c = __atomic_load_n(&N->cfg, __ATOMIC_ACQUIRE);
    timer_del(W, s);
    sni_log_field(h, k->log, sizeof k->log);
    if (c) { /* else a reload took passthrough away meanwhile: the listener's table */
        int pool = sni_pool_of(c, h);
        s->route = pool + 1;
        __atomic_fetch_add(&N->routed[pool], 1, __ATOMIC_RELAXED);
    }
    /* The bytes read go first to the server, unchanged: they are the client
     * direction's unsent bytes, which pump() writes before reading more. */
    ls_dir *D = &s->dir[0];
    D->buf = k->buf;
    D->off = 0;
    D->len = k->len;
    k->buf = NULL;
    k->len = k->cap = 0;
    ls_ch_free(&k->reader);
    s->state = ST_PICKING;
    s->rd[0] = 1; /* what followed the hello (or the FIN) is read by the relay */
    sess_connect(W, s);
}

/* Read what the client sent, until the socket is drained, the hello is whole
 * or refused, or the buffer holds PENDING_LIMIT bytes. */
static void sni_read(ls_worker *W, ls_session *s)
{
    ls_sni_conn *k = s->sni;
    while (k->len < LS_SNI_PENDING_LIMIT && !k->eof) {
        size_t room = LS_SNI_PENDING_LIMIT - k->len;
        if (room > (size_t)W->e->bufsize)
            room = (size_t)W->e->bufsize;
        ssize_t n = recv(s->fd[0], W->buf, room, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                s->rd[0] = 0;
                return;
            }
            finish(W, s, LS_END_CLIENT_RESET, 0);
            return;
        }
        if (n == 0) {
            /* The client's FIN with its hello not whole: the pure path keeps
             * the session until the timeout (the FIN would be passed on to a
             * server), and so does this one. */
            k->eof = 1;
            s->rdhup[0] = 1;
            return;
        }
        if (k->len + (size_t)n > k->cap) {
            uint32_t cap = k->cap ? k->cap : 4096;
            while (cap < k->len + (size_t)n)
                cap *= 2;
            char *buf = realloc(k->buf, cap);
            if (!buf) {
                sni_refuse(W, s, LS_CH_NO_MEMORY);
                return;
            }
            k->buf = buf;
            k->cap = cap;
        }
        memcpy(k->buf + k->len, W->buf, (size_t)n);
        k->len += (uint32_t)n;
        count(W, s, 0, n);
        ls_ch_hello hello;
        int r = ls_ch_feed(&k->reader, (const uint8_t *)k->buf, k->len, &hello);
        if (r == LS_CH_DONE) {
            sni_route(W, s, &hello);
            return;
        }
        if (r == LS_CH_ERROR) {
            sni_refuse(W, s, k->reader.reason);
            return;
        }
    }
}

/* tcp_admitted's first step: 1 when the session waits for its ClientHello,
 * 0 to pick a server now (no passthrough). */
static int sni_begin(ls_worker *W, ls_session *s)
{
    ls_sni *N = s->L->sni;
    ls_sni_config *c = N ? __atomic_load_n(&N->cfg, __ATOMIC_ACQUIRE) : NULL;
    if (!c || s->route)
        return 0;
    ls_sni_conn *k = calloc(1, sizeof *k);
    if (!k) {
        finish(W, s, LS_END_CLIENT_RESET, 0);
        return 1;
    }
    ls_ch_init(&k->reader);
    s->sni = k;
    s->state = ST_SNI_INSPECT;
    timer_set(W, s, W->now_us + c->inspect_ms * 1000);
    /* bytes sent while the session was queued are in the socket already */
    s->rd[0] = 1;
    sni_read(W, s);
    return 1;
}

static void sni_event(ls_worker *W, ls_session *s, uint32_t ev)
{
    note_event(s, 0, ev);
    if (s->rd[0])
        sni_read(W, s);
    /* a reset: the bytes before it were read above (as asyncio reads them) */
    if (s->state == ST_SNI_INSPECT && (ev & EPOLLERR))
        finish(W, s, LS_END_CLIENT_RESET, 0);
}

static void sni_timeout(ls_worker *W, ls_session *s)
{
    timer_del(W, s);
    sni_refuse(W, s, LS_SNI_TIMEOUT);
}

/* tcp_ended: the log's tls field of a routed session ("" otherwise). */
static void sni_log_fields(const ls_session *s, char *out, size_t size)
{
    if (s->sni && s->sni->log[0])
        snprintf(out, size, "%s", s->sni->log);
}
