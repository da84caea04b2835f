/* proxy_proto.c: the PROXY protocol (HAProxy's proxy-protocol.txt, versions 1
 * and 2) in the engine (part of the unity build engine.c): the header written
 * first on a new server connection when the picked server has `send_proxy`,
 * and, further down, the header read from clients with `accept_proxy`. The
 * pure path's twin is loadstone/proxy_protocol.py `encode`; the header here is
 * byte for byte the same.
 *
 * The header carries the client's address and the address it reached (the
 * client socket's local address). It goes out with one send() on the freshly
 * connected socket, before any client byte and before the protocol's own
 * connected hook: an empty socket buffer takes a header of at most 232 bytes
 * whole, so no partial write needs to be kept. An HTTP server connection that
 * carried one is never pooled (http_pool.c), as it names one client. */

#define PROXY_V2_SIG "\r\n\r\n\0\r\nQUIT\n"
#define PROXY_V2_SIGLEN 12
#define PROXY_HEADER_MAX 232 /* v2 over IPv6: 16 + 36; v1: at most 107 */

/* An IPv4 address as IPv6 (::ffff:a.b.c.d), for a header whose two addresses
 * differ in family, as the pure path's encode() does. */
static void proxy_map6(const ls_addr *a, struct sockaddr_in6 *out)
{
    memset(out, 0, sizeof *out);
    out->sin6_family = AF_INET6;
    if (a->sa.sa_family == AF_INET6) {
        *out = a->in6;
        return;
    }
    out->sin6_port = a->in4.sin_port;
    out->sin6_addr.s6_addr[10] = 0xff;
    out->sin6_addr.s6_addr[11] = 0xff;
    memcpy(&out->sin6_addr.s6_addr[12], &a->in4.sin_addr, 4);
}

/* The header telling a server that `src` connected to `dst`, in `out`; its
 * length. Without both addresses: v1 UNKNOWN, v2 LOCAL. */
static int proxy_encode(int version, const ls_addr *src, const ls_addr *dst, char *out)
{
    int f1 = src ? src->sa.sa_family : AF_UNSPEC, f2 = dst ? dst->sa.sa_family : AF_UNSPEC;
    int known = (f1 == AF_INET || f1 == AF_INET6) && (f2 == AF_INET || f2 == AF_INET6);
    ls_addr a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    if (known && f1 == f2) {
        a = *src;
        b = *dst;
    } else if (known) {
        proxy_map6(src, &a.in6);
        proxy_map6(dst, &b.in6);
    }
    int v4 = known && a.sa.sa_family == AF_INET;
    if (version == 1) {
        if (!known)
            return snprintf(out, PROXY_HEADER_MAX, "PROXY UNKNOWN\r\n");
        char sip[INET6_ADDRSTRLEN], dip[INET6_ADDRSTRLEN];
        inet_ntop(a.sa.sa_family, v4 ? (void *)&a.in4.sin_addr : (void *)&a.in6.sin6_addr, sip,
                  sizeof sip);
        inet_ntop(b.sa.sa_family, v4 ? (void *)&b.in4.sin_addr : (void *)&b.in6.sin6_addr, dip,
                  sizeof dip);
        return snprintf(out, PROXY_HEADER_MAX, "PROXY %s %s %s %u %u\r\n", v4 ? "TCP4" : "TCP6",
                        sip, dip, ntohs(v4 ? a.in4.sin_port : a.in6.sin6_port),
                        ntohs(v4 ? b.in4.sin_port : b.in6.sin6_port));
    }
    unsigned char *p = (unsigned char *)out;
    memcpy(p, PROXY_V2_SIG, PROXY_V2_SIGLEN);
    if (!known) {
        p[12] = 0x20; /* version 2, LOCAL */
        p[13] = 0x00; /* UNSPEC */
        p[14] = p[15] = 0;
        return 16;
    }
    p[12] = 0x21; /* version 2, PROXY */
    if (v4) {
        p[13] = 0x11; /* TCP over IPv4 */
        p[14] = 0;
        p[15] = 12;
        memcpy(p + 16, &a.in4.sin_addr, 4);
        memcpy(p + 20, &b.in4.sin_addr, 4);
        memcpy(p + 24, &a.in4.sin_port, 2); /* already in network order */
        memcpy(p + 26, &b.in4.sin_port, 2);
        return 28;
    }
    p[13] = 0x21; /* TCP over IPv6 */
    p[14] = 0;
    p[15] = 36;
    memcpy(p + 16, &a.in6.sin6_addr, 16);
    memcpy(p + 32, &b.in6.sin6_addr, 16);
    memcpy(p + 48, &a.in6.sin6_port, 2);
    memcpy(p + 50, &b.in6.sin6_port, 2);
    return 52;
}

/* Write the session's PROXY header on its new server connection; 0, or -1
 * with errno set. */
static int proxy_send(ls_session *s)
{
    ls_addr local;
    socklen_t len = sizeof local;
    const ls_addr *dst = &local;
    if (s->proxy_dst.sa.sa_family != AF_UNSPEC)
        dst = &s->proxy_dst; /* what the client's own PROXY header said (accept_proxy) */
    else if (getsockname(s->fd[0], &local.sa, &len) < 0)
        dst = NULL; /* the client is gone: the header says UNKNOWN/LOCAL */
    char header[PROXY_HEADER_MAX];
    int n = proxy_encode(s->proxy_version, &s->client, dst, header);
    for (;;) {
        ssize_t sent = send(s->fd[1], header, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent == n)
            return 0;
        if (sent < 0 && errno == EINTR)
            continue;
        if (sent >= 0)
            errno = EIO; /* a fresh socket that took part of 232 bytes: give up on it */
        return -1;
    }
}

/* The server's TCP connection is up: the PROXY header first (in clear, before
 * a TLS ClientHello, as a server behind both expects), then TLS to the server
 * when it has settings (the connect goes on in ST_TLS_CONNECT and
 * tls_upstream_step calls the protocol's hook), else the protocol's own hook
 * (a tcp relay, an HTTP head). A header that cannot be written is a failed
 * connect: retried, redispatched or answered as one. */
static void server_connected(ls_worker *W, ls_session *s)
{
    if (s->proxy_version && proxy_send(s) < 0) {
        connect_failed(W, s, errno);
        return;
    }
    if (tls_upstream_begin(W, s))
        return;
    metrics_connected(W, s);
    s->proto->connected(W, s);
}

/* ---------------------------------------------------------------------------------- */
/* Accepting (accept_proxy): the header read before the session is admitted           */
/*
 * A connection from a trusted network waits in ST_PROXY_HEADER (no server, not
 * counted against maxconn) until its header is whole: the bytes are looked at
 * with MSG_PEEK and only the header's are taken off the socket, so what follows
 * it stays in the kernel for the relay, the TLS handshake or the HTTP parser,
 * as if the client had sent nothing else. From any other network the session
 * starts at once (a server may speak first), watched until its first bytes
 * show whether it tries to send a header (proxy_watch_client). The pure path's
 * twin is loadstone/datapath/proxy_gate.py; the refusals are counted under the
 * same reasons (LS_PROXY_REFUSED_*). */

#define PROXY_V1_MAX 107
#define PROXY_V2_MAX (16 + 65535)

static int in_net(const ls_hnet *n, int family, const uint8_t *addr); /* http_session.c */
static int connection_lines(ls_session *s, ls_http *h);                  /* http_session.c */

/* Is the client (a connection's own address) in the listener's trusted networks?
 * An IPv4-mapped IPv6 address matches as IPv4 too. */
static int proxy_trusted(const ls_paccept *pa, const ls_addr *a)
{
    const uint8_t *raw6 = (const uint8_t *)&a->in6.sin6_addr;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    for (int i = 0; i < pa->nnets; i++) {
        const ls_hnet *n = &pa->nets[i];
        if (a->sa.sa_family == AF_INET && in_net(n, AF_INET, (const uint8_t *)&a->in4.sin_addr))
            return 1;
        if (a->sa.sa_family == AF_INET6 &&
            (in_net(n, AF_INET6, raw6) || (!memcmp(raw6, mapped, 12) && in_net(n, AF_INET, raw6 + 12))))
            return 1;
    }
    return 0;
}

/* Could `data` be the start of a header (proxy_protocol.could_start_header)? */
static int proxy_could_start(const char *data, size_t n)
{
    size_t k = n < 6 ? n : 6;
    if (!memcmp(data, "PROXY ", k))
        return 1;
    k = n < PROXY_V2_SIGLEN ? n : PROXY_V2_SIGLEN;
    return !memcmp(data, PROXY_V2_SIG, k);
}

static int parse_port(const char *p, size_t n, uint16_t *out)
{
    if (n == 0 || n > 5 || (n > 1 && p[0] == '0'))
        return -1;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(p[i] - '0');
    }
    if (v > 65535)
        return -1;
    *out = htons((uint16_t)v);
    return 0;
}

static int parse_ip(int family, const char *p, size_t n, ls_addr *out)
{
    char text[INET6_ADDRSTRLEN];
    if (n == 0 || n >= sizeof text)
        return -1;
    memcpy(text, p, n);
    text[n] = 0;
    memset(out, 0, sizeof *out);
    out->sa.sa_family = (sa_family_t)family;
    void *dst = family == AF_INET ? (void *)&out->in4.sin_addr : (void *)&out->in6.sin6_addr;
    return inet_pton(family, text, dst) == 1 ? 0 : -1;
}

static void set_port(ls_addr *a, uint16_t port)
{
    if (a->sa.sa_family == AF_INET)
        a->in4.sin_port = port;
    else
        a->in6.sin6_port = port;
}

/* A v1 line: 1 and its length in *len (src/dst family AF_UNSPEC for UNKNOWN), 0
 * while more bytes are needed, -1 when it can never be valid. */
static int parse_v1(const char *d, size_t n, ls_addr *src, ls_addr *dst, size_t *len)
{
    size_t lim = n < PROXY_V1_MAX ? n : PROXY_V1_MAX;
    const char *end = NULL;
    for (size_t i = 0; i + 1 < lim; i++)
        if (d[i] == '\r' && d[i + 1] == '\n') {
            end = d + i;
            break;
        }
    if (!end)
        return n >= PROXY_V1_MAX || !proxy_could_start(d, n) ? -1 : 0;
    *len = (size_t)(end - d) + 2;
    if ((size_t)(end - d) < 6 || memcmp(d, "PROXY ", 6))
        return -1;
    const char *f[6];
    size_t fl[6];
    int nf = 0;
    const char *p = d + 6;
    while (p <= end && nf < 6) {
        const char *q = p;
        while (q < end && *q != ' ')
            q++;
        f[nf] = p;
        fl[nf++] = (size_t)(q - p);
        p = q + 1;
    }
    if (nf >= 1 && fl[0] == 7 && !memcmp(f[0], "UNKNOWN", 7)) {
        src->sa.sa_family = dst->sa.sa_family = AF_UNSPEC;
        return 1;
    }
    if (nf != 5 || p <= end || fl[0] != 4)
        return -1;
    int family = !memcmp(f[0], "TCP4", 4) ? AF_INET : !memcmp(f[0], "TCP6", 4) ? AF_INET6 : 0;
    uint16_t sport, dport;
    if (!family || parse_ip(family, f[1], fl[1], src) || parse_ip(family, f[2], fl[2], dst) ||
        parse_port(f[3], fl[3], &sport) || parse_port(f[4], fl[4], &dport))
        return -1;
    set_port(src, sport);
    set_port(dst, dport);
    return 1;
}

/* A v2 block, as parse_v1. LOCAL and UNSPEC give AF_UNSPEC addresses. */
static int parse_v2(const unsigned char *d, size_t n, ls_addr *src, ls_addr *dst, size_t *len)
{
    if (n < 16)
        return proxy_could_start((const char *)d, n) ? 0 : -1;
    if (memcmp(d, PROXY_V2_SIG, PROXY_V2_SIGLEN))
        return -1;
    int version = d[12] >> 4, command = d[12] & 0x0f, fam = d[13];
    size_t body = ((size_t)d[14] << 8) | d[15];
    if (version != 2 || command > 1)
        return -1;
    if (n < 16 + body)
        return 0;
    *len = 16 + body;
    src->sa.sa_family = dst->sa.sa_family = AF_UNSPEC;
    if (command == 0 || (fam >> 4) == 0)
        return 1; /* LOCAL, or UNSPEC: the connection's own addresses */
    if ((fam & 0x0f) > 2)
        return -1;
    if ((fam >> 4) > 2)
        return 1; /* AF_UNIX: no address of ours to use */
    int family = (fam >> 4) == 1 ? AF_INET : AF_INET6;
    size_t alen = family == AF_INET ? 4 : 16; /* then: src, dst, sport, dport */
    if (body < 2 * alen + 4)
        return -1;
    ls_addr *ends[2] = {src, dst};
    for (int i = 0; i < 2; i++) {
        ls_addr *a = ends[i];
        memset(a, 0, sizeof *a);
        a->sa.sa_family = (sa_family_t)family;
        void *ip = family == AF_INET ? (void *)&a->in4.sin_addr : (void *)&a->in6.sin6_addr;
        void *port = family == AF_INET ? (void *)&a->in4.sin_port : (void *)&a->in6.sin6_port;
        memcpy(ip, d + 16 + (size_t)i * alen, alen);
        memcpy(port, d + 16 + 2 * alen + (size_t)i * 2, 2); /* both in network order */
    }
    return 1;
}

static int proxy_parse(const char *d, size_t n, ls_addr *src, ls_addr *dst, size_t *len)
{
    if (n == 0)
        return 0;
    if ((unsigned char)d[0] == '\r')
        return parse_v2((const unsigned char *)d, n, src, dst, len);
    return parse_v1(d, n, src, dst, len);
}

/* Close a connection for its header, counted by reason. What the client sent
 * is read first (a bounded amount): bytes left unread would turn the close
 * into a reset, where the pure path, which had read them, ends with a FIN. */
static void proxy_refuse(ls_worker *W, ls_session *s, int reason)
{
    s->L->wstats[W->id].proxy_refused[reason]++;
    for (int k = 0; k < 4 && recv(s->fd[0], W->buf, (size_t)W->e->bufsize, MSG_DONTWAIT) > 0; k++)
        ;
    finish(W, s, LS_END_CLIENT_RESET, 0);
}

/* The session's life after accept on a listener with accept_proxy: 1 when a
 * trusted client must send its header first (the session waits), 0 to go on
 * (an untrusted one is watched, proxy_watch_client). */
static int proxy_gate(ls_worker *W, ls_session *s)
{
    const ls_paccept *pa = __atomic_load_n(&s->L->paccept, __ATOMIC_ACQUIRE);
    if (!pa)
        return 0;
    if (!proxy_trusted(pa, &s->client)) {
        /* Behind TLS the socket holds ciphertext (a header there fails the
         * handshake instead): nothing to watch. */
        s->proxy_watch = !s->tls;
        return 0;
    }
    s->state = ST_PROXY_HEADER;
    timer_set(W, s, W->now_us + pa->timeout_ms * 1000);
    proxy_header_event(W, s, EPOLLIN);
    return 1;
}

/* The session once its header is read: admitted, or its TLS handshake begun. */
static void proxy_done(ls_worker *W, ls_session *s)
{
    timer_del(W, s);
    s->state = ST_PICKING;
    /* What followed the header is in the socket, and the socket's EPOLLOUT edge
     * came while the header was read: neither brings a new edge. A send that
     * finds the socket full clears wr[0] again. */
    s->rd[0] = s->wr[0] = 1;
    if (s->tls)
        tls_begin(W, s);
    else
        admit(W, s);
}

/* An event of a trusted client's socket before its header is whole. */
static void proxy_header_event(ls_worker *W, ls_session *s, uint32_t ev)
{
    static __thread char buf[PROXY_V2_MAX];
    note_event(s, 0, ev);
    ssize_t n;
    do
        n = recv(s->fd[0], buf, sizeof buf, MSG_PEEK);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            finish(W, s, LS_END_CLIENT_RESET, 0);
        return;
    }
    if (n == 0) {
        proxy_refuse(W, s, LS_PROXY_REFUSED_TRUNCATED);
        return;
    }
    ls_addr src, dst;
    size_t len = 0;
    int r = proxy_parse(buf, (size_t)n, &src, &dst, &len);
    if (r < 0) {
        proxy_refuse(W, s, LS_PROXY_REFUSED_MALFORMED);
        return;
    }
    if (r == 0) {
        /* a client that shut its side, with its header incomplete */
        if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            proxy_refuse(W, s, LS_PROXY_REFUSED_TRUNCATED);
        return;
    }
    /* take the header alone off the socket (it is all there: peeked) */
    size_t got = 0;
    while (got < len) {
        ssize_t m = recv(s->fd[0], buf, len - got, 0);
        if (m <= 0) {
            if (m < 0 && errno == EINTR)
                continue;
            finish(W, s, LS_END_CLIENT_RESET, 0);
            return;
        }
        got += (size_t)m;
    }
    if (src.sa.sa_family != AF_UNSPEC) {
        s->client = src;
        s->proxy_dst = dst;
        /* X-Forwarded-For: the header's client */
        if (s->http && connection_lines(s, s->http) < 0) {
            finish(W, s, LS_END_CLIENT_RESET, 0);
            return;
        }
    }
    if (ev & (EPOLLRDHUP | EPOLLHUP))
        s->rdhup[0] = 1;
    proxy_done(W, s);
}

static void proxy_timeout(ls_worker *W, ls_session *s)
{
    timer_del(W, s);
    proxy_refuse(W, s, LS_PROXY_REFUSED_TIMEOUT);
}

/* An untrusted client's first bytes, before they are read for relaying: 0 to
 * go on, 1 to wait for more (too few to tell), -1 when it sent a header and was
 * closed. */
static int proxy_watch_client(ls_worker *W, ls_session *s)
{
    char peek[PROXY_V2_SIGLEN];
    ssize_t n;
    do
        n = recv(s->fd[0], peek, sizeof peek, MSG_PEEK);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        s->rd[0] = 0; /* nothing yet: the first bytes bring an edge */
        return 1;
    }
    if (n <= 0 || !proxy_could_start(peek, (size_t)n)) {
        s->proxy_watch = 0; /* not a header (or nothing, or the end): relayed as is */
        return 0;
    }
    if (n < PROXY_V2_SIGLEN) {
        if (s->rdhup[0]) {
            s->proxy_watch = 0; /* the client ended: its bytes are no header */
            return 0;
        }
        s->rd[0] = 0; /* the next bytes bring a new edge */
        return 1;
    }
    proxy_refuse(W, s, LS_PROXY_REFUSED_UNTRUSTED);
    return -1;
}

/* ls_listener_proxy_accept: a new accept_proxy for the listener's next
 * connections (NULL nets with n < 0: none). The old setting stays allocated
 * until the listener goes, as a worker may still be reading it. */
void ls_listener_proxy_accept(ls_engine *e, int lid, int64_t timeout_ms, const ls_hnet *nets, int n)
{
    ls_listener *L = get_listener(e, lid);
    if (!L)
        return;
    ls_paccept *pa = NULL;
    if (n >= 0) {
        pa = calloc(1, sizeof *pa + (size_t)n * sizeof(ls_hnet));
        if (!pa)
            return;
        pa->timeout_ms = timeout_ms > 0 ? timeout_ms : 1;
        pa->nnets = n;
        if (n)
            memcpy(pa->nets, nets, (size_t)n * sizeof(ls_hnet));
    }
    pthread_mutex_lock(&e->ctl_lock);
    ls_paccept *old = L->paccept;
    __atomic_store_n(&L->paccept, pa, __ATOMIC_RELEASE);
    if (old) {
        old->prev = L->paccept_old;
        L->paccept_old = old;
    }
    pthread_mutex_unlock(&e->ctl_lock);
}

static void proxy_accept_free(ls_listener *L)
{
    ls_paccept *pa = L->paccept;
    if (pa) {
        pa->prev = L->paccept_old;
        L->paccept_old = pa;
    }
    L->paccept = NULL;
    while (L->paccept_old) {
        ls_paccept *next = L->paccept_old->prev;
        free(L->paccept_old);
        L->paccept_old = next;
    }
}

void ls_listener_proxy_refused(ls_engine *e, int lid, uint64_t out[LS_PROXY_NREFUSED])
{
    memset(out, 0, LS_PROXY_NREFUSED * sizeof *out);
    ls_listener *L = get_listener(e, lid);
    if (!L)
        return;
    for (int w = 0; w < e->nworkers; w++)
        for (int r = 0; r < LS_PROXY_NREFUSED; r++)
            out[r] += __atomic_load_n(&L->wstats[w].proxy_refused[r], __ATOMIC_RELAXED);
}
