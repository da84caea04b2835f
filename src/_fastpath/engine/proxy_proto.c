/* proxy_proto.c: the PROXY protocol header (HAProxy's proxy-protocol.txt,
 * versions 1 and 2) the engine writes first on a new server connection when
 * the picked server has `send_proxy` (part of the unity build engine.c). The
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
    if (getsockname(s->fd[0], &local.sa, &len) < 0)
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

/* The server connection is up: the PROXY header first, then the protocol's
 * own hook (a tcp relay, an HTTP head). A header that cannot be written is a
 * failed connect: retried, redispatched or answered as one. */
static void server_connected(ls_worker *W, ls_session *s)
{
    if (s->proxy_version && proxy_send(s) < 0) {
        connect_failed(W, s, errno);
        return;
    }
    s->proto->connected(W, s);
}
