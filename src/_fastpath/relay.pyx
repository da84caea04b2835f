# cython: language_level=3, boundscheck=False, wraparound=False
"""The native data plane's Python face: an `Engine` owning the worker threads.

The engine itself (engine/engine.c and the files it includes) is C that never takes the GIL: worker
threads with their own epoll loops accept, pick a server from the published
table, connect and relay. This module is the thin, typed boundary the control
plane (loadstone.datapath.tcp_native) calls: it converts Python values into the C
structures the engine copies, and the engine's records back into tuples.
Every call that waits for the workers (removing a socket, shutting sessions)
releases the GIL while it waits.
"""

cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.errno cimport errno
from libc.stdint cimport int32_t, uint8_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memset, strlen
from libc.math cimport floor
from libc.stdio cimport snprintf
from libc.time cimport gmtime_r, strftime, tm
from posix.time cimport CLOCK_REALTIME, clock_gettime, timespec

from includes.engine cimport *
from includes.engine_metrics cimport *

cdef extern from *:
    """
    #ifndef LS_BUILD_VARIANT
    #define LS_BUILD_VARIANT "release"
    #endif
    """
    const char *LS_BUILD_VARIANT

cdef extern from "arpa/inet.h" nogil:
    int inet_pton(int af, const char *src, void *dst)
    unsigned short htons(unsigned short v)

cdef extern from "sys/socket.h":
    int AF_INET
    int AF_INET6

cdef extern from "netinet/in.h":
    cdef struct in_addr:
        pass
    cdef struct in6_addr:
        pass
    cdef struct sockaddr_in:
        unsigned short sin_family
        unsigned short sin_port
        in_addr sin_addr
    cdef struct sockaddr_in6_full "sockaddr_in6":
        unsigned short sin6_family
        unsigned short sin6_port
        in6_addr sin6_addr

BUILD = LS_BUILD_VARIANT.decode()

ALGORITHMS = {
    "roundrobin": 0,
    "leastconn": 1,
    "source": 2,
    "first": 3,
    "active-backup": 4,
}
SPLICE_MODES = {"off": LS_SPLICE_OFF, "on": LS_SPLICE_ON, "auto": LS_SPLICE_AUTO}

# The pure path's words for why a session ended (LS_END_* in engine.h).
END_CLIENT_TIMEOUT = 5
END_SERVER_TIMEOUT = 6
END_CONNECT_FAILED = 9
END_SHUTDOWN = 10
END_SNI_REFUSED = LS_END_SNI_REFUSED  # arg: an index of SNI_REASONS
END_SNI_TIMEOUT = LS_END_SNI_TIMEOUT
END_WORDS = (
    "",
    "client-close",
    "server-close",
    "client-reset",
    "server-reset",
    "client-timeout",
    "server-timeout",
    "queue-timeout",
    "no-server",
    "connect-failed",
    "shutdown",
    "sni-refused",
    "sni-inspect-timeout",
)
# SNI passthrough's refusals by index (engine/sni.c): the ClientHello reader's
# reasons (engine/clienthello.c, the words of loadstone.tls.clienthello), then
# the inspect timeout (sni_passthrough.INSPECT_TIMEOUT_REASON).
SNI_REASONS = tuple(
    ls_ch_reasons[i].decode() for i in range(LS_CH_NREASONS)
) + ("sni-inspect-timeout",)
SNI_MAX_POOLS = LS_SNI_MAX_POOLS
REC_SESSION = LS_REC_SESSION
REC_CONNECT_FAILED = LS_REC_CONNECT_FAILED
REC_HTTP = LS_REC_HTTP
REC_TLS_FAILED = LS_REC_TLS_FAILED

# mode http: how an exchange ended (LS_HEND_* in engine.h), in the words of the
# pure path's access log (loadstone/datapath/http.py).
HTTP_END_CONNECT_FAILED = 5
HTTP_END_SHUTDOWN = 16
HTTP_END_WORDS = (
    "",
    "ok",
    "bad-request",
    "bad-request-body",
    "no-server",
    "connect-failed",
    "request-timeout",
    "client-timeout",
    "server-timeout",
    "tunnel-timeout",
    "server-error",
    "server-close",
    "server-reset",
    "server-abort",
    "client-close",
    "client-reset",
    "shutdown",
    "redirect",
)


LLHTTP_VERSION = ls_llhttp_version().decode()  # the vendored llhttp built in
# the OpenSSL the engine's TLS runs on ("3.0.15"): the system's libssl, which
# need not be the one Python's ssl module was built with
OPENSSL_VERSION = OpenSSL_version(OPENSSL_VERSION_STRING).decode()


def init_llhttp():
    """Run the engine's self-test of its llhttp and set up the HTTP parsers (once;
    again is a no-op). Raises RuntimeError saying what failed."""
    cdef char err[256]
    err[0] = 0
    if ls_http_init(err, sizeof(err)) < 0:
        raise RuntimeError(err.decode(errors="replace"))


def spin_selftest():
    """The poll_spin budget played out exactly (engine/spin_selftest.c): None,
    or what broke it."""
    cdef const char *why = ls_spin_selftest()
    return None if why == NULL else why.decode()


def set_http_answer(int status, bytes data):
    """The bytes the engine sends when it answers `status` itself."""
    ls_http_set_answer(status, data, len(data))


def read_client_hello(pieces):
    """The engine's ClientHello reader (engine/clienthello.c) fed these pieces
    one after the other, as reads would bring them: ("hello", server_name or
    None, alpn names, versions, size), ("error", reason) or ("more",). The
    twin test compares it with loadstone.tls.clienthello."""
    cdef ls_ch_reader reader
    cdef ls_ch_hello hello
    cdef bytearray data = bytearray()
    cdef int r = LS_CH_MORE
    cdef size_t i
    ls_ch_init(&reader)
    try:
        for piece in pieces:
            data += piece
            if not data:
                continue  # nothing to read yet, as Python's feed(b"")
            r = ls_ch_feed(&reader, <const uint8_t *><char *>data, len(data), &hello)
            if r != LS_CH_MORE:
                break
        if r == LS_CH_ERROR:
            return ("error", ls_ch_reasons[reader.reason].decode())
        if r == LS_CH_MORE:
            return ("more",)
        name = None
        if hello.has_server_name:
            name = hello.server_name[: hello.server_name_len].decode("ascii")
        alpn = []
        raw = (<const char *>hello.alpn)[: hello.alpn_len] if hello.alpn_len else b""
        at = 0
        while at < len(raw):
            alpn.append(raw[at + 1 : at + 1 + raw[at]].decode("latin-1"))
            at += 1 + raw[at]
        versions = []
        for i in range(hello.nversions):
            versions.append((hello.versions[2 * i] << 8) | hello.versions[2 * i + 1])
        return ("hello", name, tuple(alpn), tuple(versions), hello.size)
    finally:
        ls_ch_free(&reader)


def address_text(bytes sockaddr):
    """A struct sockaddr (sockaddr_in or sockaddr_in6, as bytes) as the engine
    writes a client address into a session's log line."""
    cdef char buf[128]
    cdef char out[64]
    if len(sockaddr) > sizeof(buf):
        raise ValueError("not a sockaddr")
    memset(buf, 0, sizeof(buf))
    memcpy(buf, <const char *>sockaddr, len(sockaddr))
    cdef size_t n = ls_addr_text(buf, out, sizeof(out))
    return out[:n].decode("ascii")


def blake2b64(bytes data):
    """The `source` balancer's ring position of a key, computed by the engine."""
    return ls_blake2b64(<const char *>data, len(data))


cdef int _fill_address(ls_tserver *t, str host, int port) except -1:
    cdef bytes raw = host.encode()
    cdef sockaddr_in *a4 = <sockaddr_in *>&t.addr
    cdef sockaddr_in6_full *a6 = <sockaddr_in6_full *>&t.addr
    memset(&t.addr, 0, sizeof(t.addr))
    if ":" in host:
        if inet_pton(AF_INET6, raw, &a6.sin6_addr) != 1:
            raise ValueError(f"not an IPv6 address: {host!r}")
        a6.sin6_family = AF_INET6
        a6.sin6_port = htons(port)
        t.addrlen = sizeof(sockaddr_in6_full)
    else:
        if inet_pton(AF_INET, raw, &a4.sin_addr) != 1:
            raise ValueError(f"not an IPv4 address: {host!r}")
        a4.sin_family = AF_INET
        a4.sin_port = htons(port)
        t.addrlen = sizeof(sockaddr_in)
    return 0


cdef class Engine:
    """The worker threads and everything they share."""

    def __cinit__(self, int workers=1, str splice="auto", int pipe_size=0, int bufsize=0,
                  str io_uring="auto"):
        self.engine = NULL
        self._line_buffers = {}
        if splice not in SPLICE_MODES:
            raise ValueError(f"splice must be one of {', '.join(SPLICE_MODES)}, got {splice!r}")
        if io_uring not in ("auto", "off"):
            raise ValueError(f"io_uring must be auto or off, got {io_uring!r}")
        self.workers = workers
        self.splice = splice
        self.pipe_size = pipe_size if pipe_size > 0 else 256 * 1024
        self.bufsize = bufsize if bufsize > 0 else 64 * 1024
        self.engine = ls_engine_new(workers, SPLICE_MODES[splice], self.pipe_size, self.bufsize,
                                    io_uring == "auto")
        if self.engine == NULL:
            raise OSError(errno, "cannot create the native engine")
        # Workers whose io_uring the kernel granted (the others send one by one).
        self.io_uring_workers = ls_engine_uring_workers(self.engine)
        cdef int err = ls_engine_start(self.engine)
        if err < 0:
            ls_engine_free(self.engine)
            self.engine = NULL
            raise OSError(-err, "cannot start the native workers")

    def __dealloc__(self):
        self.close()

    cdef int _check(self) except -1:
        if self.engine == NULL:
            raise RuntimeError("the native engine is closed")
        return 0

    def close(self):
        """Stop and join the workers, close every descriptor they hold."""
        cdef ls_engine *e = self.engine
        self.engine = NULL
        if e != NULL:
            with nogil:
                ls_engine_free(e)

    @property
    def closed(self):
        return self.engine == NULL

    def record_fd(self):
        self._check()
        return ls_engine_record_fd(self.engine)

    def set_poll_spin(self, double seconds):
        """global.poll_spin: how long a worker looks for events before sleeping."""
        self._check()
        ls_engine_set_poll_spin(self.engine, <int>min(seconds * 1e6 + 0.5, 1e6))

    @property
    def poll_spin(self):
        """The spin the workers use now (seconds, to the microsecond)."""
        self._check()
        return ls_engine_poll_spin(self.engine) / 1e6

    def poll_stats(self):
        """(sleeps, spins, spins that found events), summed over the workers."""
        return self.spin_stats()[:3]

    def spin_stats(self):
        """(sleeps, spins, hits, spun_us, wasted_us), summed over the workers:
        poll_stats, the microseconds spent spinning, and of them those of spins
        that found nothing."""
        self._check()
        cdef uint64_t out[5]
        ls_engine_poll_stats(self.engine, out)
        return tuple(out[k] for k in range(5))

    # -- listeners -------------------------------------------------------------------

    def new_listener(self):
        self._check()
        cdef int lid = ls_listener_new(self.engine)
        if lid < 0:
            raise RuntimeError("too many listeners")
        return lid

    def configure(
        self,
        int lid,
        *,
        int maxconn,
        int retries,
        bint redispatch,
        double connect,
        double idle,
        bint idle_is_client,
        double queue,
        int log_mode=0,
        keepalive=None,
    ):
        """Timeouts in seconds; keepalive: None or (idle, interval, count);
        log_mode: 0 every TCP session, 1 those not closed by a peer, 2 none."""
        self._check()
        cdef ls_lconfig cfg
        memset(&cfg, 0, sizeof(cfg))
        cfg.maxconn = maxconn
        cfg.retries = retries
        cfg.redispatch = redispatch
        cfg.connect_ms = max(1, <long long>(connect * 1000))
        cfg.idle_ms = max(1, <long long>(idle * 1000))
        cfg.idle_reason = END_CLIENT_TIMEOUT if idle_is_client else END_SERVER_TIMEOUT
        cfg.queue_ms = max(1, <long long>(queue * 1000))
        cfg.log_mode = log_mode
        if keepalive is not None:
            cfg.keepalive = 1
            cfg.ka_idle, cfg.ka_intvl, cfg.ka_cnt = keepalive
        ls_listener_configure(self.engine, lid, &cfg)

    def configure_http(
        self,
        int lid,
        *,
        double request,
        double keep_alive,
        double client,
        double server,
        double tunnel,
        int max_head_size,
        int max_headers,
        bint forwarded_port,
        str forwardfor,
        str proto_line,
        list except_nets,
        int max_requests=1000,
        tuple request_rules=((), b""),
        tuple response_rules=((), b""),
        int redirect_code=0,
        str redirect_scheme="",
        double linger=2.0,
    ):
        """Serve the listener in mode http (load_llhttp first). Timeouts in seconds;
        except_nets: [(4 or 6, packed address bytes, prefix length)]; max_requests:
        requests a server connection serves before it is closed; request_rules and
        response_rules: (names the rules remove, lines they add) as
        http_native.compile_rules makes them; redirect_code: every request answered
        with a redirect to `redirect_scheme` (0: none)."""
        self._check()
        cdef ls_hconfig cfg
        memset(&cfg, 0, sizeof(cfg))
        cdef bytes ff = forwardfor.encode("ascii")
        cdef bytes proto = proto_line.encode("ascii")
        if len(ff) >= 64 or len(proto) >= 96 or len(except_nets) > LS_HTTP_MAX_EXCEPT:
            raise ValueError("forwardfor name, proto line or except list too long")
        cfg.enabled = 1
        cfg.request_ms = max(1, <long long>(request * 1000))
        cfg.keep_alive_ms = max(1, <long long>(keep_alive * 1000))
        cfg.client_ms = max(1, <long long>(client * 1000))
        cfg.server_ms = max(1, <long long>(server * 1000))
        cfg.tunnel_ms = max(1, <long long>(tunnel * 1000))
        cfg.linger_ms = max(0, <long long>(linger * 1000))  # 0: a close at once
        cfg.max_head_size = max_head_size
        cfg.max_headers = max_headers
        cfg.forwarded_port = forwarded_port
        memcpy(cfg.forwardfor, <const char *>ff, len(ff))
        memcpy(cfg.proto_line, <const char *>proto, len(proto))
        cdef int i
        cdef bytes packed
        for i in range(len(except_nets)):
            version, packed, prefix = except_nets[i]
            cfg.except_[i].family = AF_INET if version == 4 else AF_INET6
            cfg.except_[i].prefix = prefix
            memcpy(cfg.except_[i].addr, <const char *>packed, len(packed))
        cfg.nexcept = len(except_nets)
        cfg.max_requests = max(1, max_requests)
        _set_rules(&cfg.req_rules, request_rules)
        _set_rules(&cfg.resp_rules, response_rules)
        cdef bytes scheme = redirect_scheme.encode("ascii")
        if redirect_code not in (0, 301, 302, 303, 307, 308) or len(scheme) >= 16:
            raise ValueError("redirect code or scheme not supported")
        cfg.redirect_code = redirect_code
        memcpy(cfg.redirect_scheme, <const char *>scheme, len(scheme))
        ls_listener_configure_http(self.engine, lid, &cfg)

    def proxy_accept(self, int lid, timeout, list nets):
        """accept_proxy for the listener's next connections: nets [(4 or 6, packed
        address bytes, prefix length)] trusted to send a PROXY header whole within
        `timeout` seconds; timeout None: accept no header (nets ignored)."""
        self._check()
        cdef int n = len(nets)
        cdef ls_hnet *table = <ls_hnet *>calloc(n if n else 1, sizeof(ls_hnet))
        cdef int i
        cdef bytes packed
        if table == NULL:
            raise MemoryError()
        try:
            for i in range(n):
                version, packed, prefix = nets[i]
                table[i].family = AF_INET if version == 4 else AF_INET6
                table[i].prefix = prefix
                memcpy(table[i].addr, <const char *>packed, len(packed))
            if timeout is None:
                ls_listener_proxy_accept(self.engine, lid, 0, NULL, -1)
            else:
                ls_listener_proxy_accept(
                    self.engine, lid, max(1, <long long>(timeout * 1000)), table, n
                )
        finally:
            free(table)

    def proxy_refused(self, int lid):
        """Connections closed for their PROXY header: (malformed, truncated,
        timeout, untrusted)."""
        self._check()
        cdef uint64_t out[8]
        ls_listener_proxy_refused(self.engine, lid, out)
        return (out[0], out[1], out[2], out[3])

    def set_sni(self, int lid, inspect_timeout, int default_pool, list routes):
        """SNI passthrough for the listener's next admitted sessions: routes
        [(name, pool id, is_suffix)] in the order written (a suffix is ".example"
        for "*.example"), the default pool's id, the inspect timeout in seconds;
        inspect_timeout None: no passthrough."""
        self._check()
        cdef int n = len(routes), i, rc
        cdef bytes raw
        cdef ls_sni_route *table = <ls_sni_route *>calloc(n if n else 1, sizeof(ls_sni_route))
        if table == NULL:
            raise MemoryError()
        names = [name.encode("ascii") for name, _, _ in routes]  # kept alive for the call
        try:
            for i in range(n):
                raw = names[i]
                table[i].name = raw
                table[i].pool = routes[i][1]
                table[i].suffix = routes[i][2]
            if inspect_timeout is None:
                rc = ls_listener_set_sni(self.engine, lid, 0, 0, NULL, -1)
            else:
                rc = ls_listener_set_sni(
                    self.engine, lid, max(1, <long long>(inspect_timeout * 1000)),
                    default_pool, table, n,
                )
            if rc < 0:
                raise ValueError("SNI passthrough refused by the engine (pool id out of range?)")
        finally:
            free(table)

    def sni_stats(self, int lid):
        """SNI passthrough's counts: (routed by pool id, refused by SNI_REASONS index)."""
        self._check()
        cdef uint64_t routed[64]
        cdef uint64_t refused[64]
        ls_listener_sni_stats(self.engine, lid, routed, refused)
        return (
            [routed[i] for i in range(LS_SNI_MAX_POOLS)],
            [refused[i] for i in range(LS_SNI_NREFUSED)],
        )

    def http_stop(self, int lid):
        """Soft stop of an HTTP listener: its idle keep-alive connections close now."""
        self._check()
        cdef int n
        with nogil:
            n = ls_http_stop(self.engine, lid)
        return n

    def http_close_after_response(self, int lid):
        """Every response of an HTTP listener says Connection: close from now on."""
        self._check()
        ls_http_close_after_response(self.engine, lid)

    def http_idle_server_conns(self, int lid):
        self._check()
        return ls_http_idle_server_conns(self.engine, lid)

    def set_tls(self, int lid, list certificates, list names, bytes alpn, int min_version,
                str ciphers, ciphersuites, client_ca, int verify_client, double handshake_timeout,
                str session_context):
        """New handshakes of the listener use these settings (tls.h ls_tls_config):
        certificates [(chain PEM, key PEM)], names [(SNI name, certificate index)],
        alpn in wire format. Raises ValueError with OpenSSL's reason."""
        self._check()
        cdef ls_tls_config cfg
        cdef char err[256]
        cdef int i, rc
        cdef int ncerts = len(certificates), nnames = len(names)
        cdef ls_tls_cert *certs = <ls_tls_cert *>malloc((ncerts or 1) * sizeof(ls_tls_cert))
        cdef ls_tls_name *sni = <ls_tls_name *>malloc((nnames or 1) * sizeof(ls_tls_name))
        # keep the encoded bytes alive for the call: the engine copies them
        keep = []
        try:
            if certs == NULL or sni == NULL:
                raise MemoryError()
            for i in range(ncerts):
                chain, key = certificates[i]
                keep += [chain, key]
                certs[i].chain = <const char *>chain
                certs[i].chain_len = len(chain)
                certs[i].key = <const char *>key
                certs[i].key_len = len(key)
            for i in range(nnames):
                raw = names[i][0].encode("ascii")
                keep.append(raw)
                sni[i].name = <const char *>raw
                sni[i].cert = names[i][1]
            memset(&cfg, 0, sizeof(cfg))
            cfg.certs = certs
            cfg.ncerts = ncerts
            cfg.names = sni
            cfg.nnames = nnames
            if alpn:
                cfg.alpn = <const unsigned char *>alpn
                cfg.alpn_len = len(alpn)
            cfg.min_version = min_version
            raw = ciphers.encode("ascii")
            keep.append(raw)
            cfg.ciphers = <const char *>raw
            if ciphersuites is not None:
                raw = ciphersuites.encode("ascii")
                keep.append(raw)
                cfg.ciphersuites = <const char *>raw
            if client_ca is not None:
                raw = client_ca.encode()
                keep.append(raw)
                cfg.client_ca = <const char *>raw
            cfg.verify_client = verify_client
            cfg.handshake_ms = <long long>(handshake_timeout * 1000)
            raw = session_context.encode()
            keep.append(raw)
            cfg.session_context = <const char *>raw
            err[0] = 0
            with nogil:
                rc = ls_listener_set_tls(self.engine, lid, &cfg, err, sizeof(err))
            if rc < 0:
                raise ValueError(err.decode(errors="replace"))
        finally:
            free(certs)
            free(sni)

    def clear_tls(self, int lid):
        """New connections of the listener are plain TCP (a reload took `tls` away)."""
        self._check()
        cdef char err[8]
        ls_listener_set_tls(self.engine, lid, NULL, err, sizeof(err))

    def set_server_tls(self, int lid, int slot, settings):
        """Connections to server `slot` of the listener use TLS from now on
        (tls.h ls_tls_upstream_config): settings is (verify, ca_file, name,
        name_is_ip, alpn wire bytes, (chain PEM, key PEM) or None), or None
        for plain TCP. Raises ValueError with OpenSSL's reason."""
        self._check()
        cdef ls_tls_upstream_config cfg
        cdef char err[256]
        cdef int rc
        if settings is None:
            with nogil:
                rc = ls_server_set_tls(self.engine, lid, slot, NULL, err, sizeof(err))
            if rc < 0:
                raise ValueError(err.decode(errors="replace"))
            return
        verify, ca_file, name, name_is_ip, alpn, client = settings
        # the encoded bytes live through the call (the engine copies them)
        cdef bytes ca_raw = ca_file.encode() if ca_file is not None else None
        cdef bytes name_raw = name.encode("ascii") if name is not None else None
        cdef bytes alpn_raw = alpn
        cdef bytes chain = client[0] if client is not None else None
        cdef bytes key = client[1] if client is not None else None
        memset(&cfg, 0, sizeof(cfg))
        cfg.verify = 1 if verify else 0
        if ca_raw is not None:
            cfg.ca_file = <const char *>ca_raw
        if name_raw is not None:
            cfg.name = <const char *>name_raw
        cfg.name_is_ip = 1 if name_is_ip else 0
        if alpn_raw:
            cfg.alpn = <const unsigned char *>alpn_raw
            cfg.alpn_len = len(alpn_raw)
        if chain is not None:
            cfg.client.chain = <const char *>chain
            cfg.client.chain_len = len(chain)
            cfg.client.key = <const char *>key
            cfg.client.key_len = len(key)
        err[0] = 0
        with nogil:
            rc = ls_server_set_tls(self.engine, lid, slot, &cfg, err, sizeof(err))
        if rc < 0:
            raise ValueError(err.decode(errors="replace"))

    def set_ticket_keys(self, bytes keys):
        """The session-ticket keys of every TLS listener: a concatenation of
        80-byte keys (name, AES key, HMAC key), the first one encrypting."""
        self._check()
        cdef int n = len(keys) // LS_TLS_TICKET_KEY_BYTES
        if n < 1 or n > LS_TLS_MAX_TICKET_KEYS or len(keys) % LS_TLS_TICKET_KEY_BYTES:
            raise ValueError("ticket keys: 1 to 8 keys of 80 bytes")
        if ls_engine_set_ticket_keys(self.engine, <const unsigned char *>keys, n) < 0:
            raise MemoryError()

    def tls_stats(self, int lid):
        """(handshakes, resumed, {failure reason: count}) of a TLS listener."""
        self._check()
        cdef ls_tls_stats st
        cdef int i
        ls_listener_tls_stats(self.engine, lid, &st)
        failures = {}
        for i in range(st.nfailures):
            failures[st.failure[i].decode("ascii", errors="replace")] = st.failures[i]
        return st.handshakes, st.resumed, failures

    def add_socket(self, int lid, int fd):
        self._check()
        cdef int err = ls_listener_add_socket(self.engine, lid, fd)
        if err < 0:
            raise OSError(-err, "cannot watch the listening socket")

    def remove_socket(self, int lid, int fd):
        """Stop accepting on fd; returns once no worker can touch it any more."""
        self._check()
        with nogil:
            ls_listener_remove_socket(self.engine, lid, fd)

    def new_slot(self, int lid):
        """A counter slot for one server of the listener (stable across tables)."""
        self._check()
        cdef int slot = ls_listener_new_slot(self.engine, lid)
        if slot < 0:
            raise RuntimeError("too many servers in one listener")
        return slot

    def publish(self, int lid, str algorithm, list servers, ring_pos=(), ring_owner=(),
                int pool=-1):
        """Swap in a new server table (the listener's, or with pool >= 0 the table
        of that SNI passthrough pool id).

        servers: [(slot, weight, maxconn or -1, ip, port[, proxy_version])], in the
        order the algorithm walks them; proxy_version: the PROXY protocol header the
        engine sends first on each connection to it (0 none, 1, 2). ring_pos / ring_owner: the `source` ring, its
        owners as indexes into servers (-1 for a point of a server that takes
        no session now).
        """
        self._check()
        cdef int n = len(servers)
        cdef int nring = len(ring_pos)
        if len(ring_owner) != nring:
            raise ValueError("ring_pos and ring_owner differ in length")
        cdef ls_tserver *table = <ls_tserver *>malloc((n if n else 1) * sizeof(ls_tserver))
        cdef uint64_t *pos = <uint64_t *>malloc((nring if nring else 1) * sizeof(uint64_t))
        cdef int32_t *owner = <int32_t *>malloc((nring if nring else 1) * sizeof(int32_t))
        cdef int i, err
        try:
            if table == NULL or pos == NULL or owner == NULL:
                raise MemoryError()
            for i in range(n):
                slot, weight, maxconn, host, port = servers[i][:5]
                memset(&table[i], 0, sizeof(ls_tserver))
                table[i].proxy_version = servers[i][5] if len(servers[i]) > 5 else 0
                table[i].slot = slot
                table[i].weight = weight
                table[i].maxconn = maxconn
                _fill_address(&table[i], host, port)
            for i in range(nring):
                pos[i] = ring_pos[i]
                owner[i] = ring_owner[i]
            if pool < 0:
                err = ls_listener_publish(
                    self.engine, lid, ALGORITHMS[algorithm], table, n, pos, owner, nring
                )
            else:
                err = ls_listener_publish_pool(
                    self.engine, lid, pool, ALGORITHMS[algorithm], table, n, pos, owner, nring
                )
            if err < 0:
                raise OSError(-err, "cannot publish the server table")
        finally:
            free(table)
            free(pos)
            free(owner)

    # -- counters and control --------------------------------------------------------

    def listener_stats(self, int lid):
        """(current, queued, sessions_total, bytes_in, bytes_out, denied)"""
        self._check()
        cdef ls_lstats st
        ls_listener_stats(self.engine, lid, &st)
        return (st.current, st.queued, st.sessions_total, st.bytes_in, st.bytes_out, st.denied)

    def server_stats(self, int lid, int slot):
        """(live, sessions_total, bytes_in, bytes_out)"""
        self._check()
        cdef ls_sstats st
        ls_server_stats(self.engine, lid, slot, &st)
        return (st.live, st.sessions_total, st.bytes_in, st.bytes_out)

    def listener_metrics(self, int lid):
        """The workers' histograms and HTTP codes of a listener, summed:
        (request, connect, codes), each histogram (per-bucket counts, sum in
        seconds), codes a list in the order of metric_codes()."""
        self._check()
        cdef ls_lmetrics m
        ls_listener_metrics(self.engine, lid, &m)
        return (
            _hist(&m.request),
            _hist(&m.connect),
            [m.codes[k] for k in range(LS_HTTP_NCODES)],
        )

    def server_codes(self, int lid, int slot):
        """HTTP responses of one server by code, in the order of metric_codes()."""
        self._check()
        cdef uint64_t codes[40]
        ls_server_codes(self.engine, lid, slot, codes)
        return [codes[k] for k in range(LS_HTTP_NCODES)]

    def set_maxconn(self, long long maxconn, long long foreign):
        """global.maxconn (0: none) and the client connections of the pure path."""
        self._check()
        ls_engine_set_maxconn(self.engine, maxconn, foreign)

    def set_bound_from_fds(self, bint from_fds):
        """Whether the bound of set_maxconn is the descriptor limit's (its pauses
        then count as fd_limit) rather than global.maxconn."""
        self._check()
        ls_engine_set_bound_from_fds(self.engine, from_fds)

    def set_foreign_conns(self, long long foreign):
        self._check()
        ls_engine_set_foreign_conns(self.engine, foreign)

    def limit_stats(self):
        """(client sessions, pauses at the descriptor limit, pauses at global.maxconn)"""
        self._check()
        cdef ls_limit_stats st
        ls_engine_limit_stats(self.engine, &st)
        return (st.conns, st.accept_pauses, st.maxconn_pauses)

    def shutdown(self, int lid, int slot, int reason_id):
        """Close the listener's sessions (slot -1) or one server's; returns how many."""
        self._check()
        cdef int n
        with nogil:
            n = ls_shutdown(self.engine, lid, slot, reason_id)
        return n

    def take_records(self, dict log_names=None):
        """The records the workers queued, as (lines, others).

        Log lines are formatted here, in C, for the listeners in `log_names`
        (lid -> (json, listener name, [server name by slot]), the names as they
        appear in a line: JSON-escaped for json): the same text or JSON as
        SessionLog.session (a TCP session) and SessionLog.request (an HTTP
        request) write. lines[lid] is a str of that listener's lines joined by
        newlines. (HTTP requests are counted by the workers themselves:
        listener_metrics.) Every other record (a failed
        connect, an end whose words need Python, a listener not in `log_names`)
        is in `others` as (type, listener, slot, reason, arg, client, bytes_in,
        bytes_out, duration), REC_HTTP ones followed by (status, method, target,
        timings). Formatting in C keeps a Python call, a tuple and a dict per
        session or request off the control plane: at thousands of them a second
        it was most of the process's Python time."""
        self._check()
        cdef int n = 0, i
        cdef ls_record *recs = ls_take_records(self.engine, &n)
        cdef ls_record *r
        cdef _LineBuffer buf = None
        cdef tuple names = None
        cdef int names_of = -1  # the listener `names` and `buf` belong to
        cdef char stamp[40]
        cdef char now_text[40]
        cdef double now = _wall_clock(stamp) if n else 0.0
        # The JSON lines' "time", formatted once for the batch: a double's %.6f
        # costs glibc a multi-precision division, and was the bulk of this
        # function's time with six of them per request line.
        snprintf(now_text, sizeof(now_text), "%.6f", now)
        out = []
        lines = {}
        # Kept from call to call: a buffer grown anew for every batch was a few
        # reallocs, copies and fresh pages per drain of the engine.
        cdef dict buffers = self._line_buffers
        for buf in buffers.values():
            buf.length = 0  # a batch that raised half way leaves no lines behind
        buf = None
        try:
            for i in range(n):
                r = &recs[i]
                if i + RECORD_PREFETCH < n:
                    _prefetch_record(&recs[i + RECORD_PREFETCH])
                if log_names is not None and _formatted_here(r):
                    if r.listener != names_of:
                        # A batch is mostly runs of one listener's records: its
                        # names and buffer are looked up once per run.
                        names_of = r.listener
                        names = log_names.get(r.listener)
                        buf = None
                    if names is not None:
                        # The engine made this record only if `log` wants its
                        # line (engine.c tcp_ended, http_exchange.c http_logged).
                        if buf is None:
                            buf = buffers.get(r.listener)
                            if buf is None:
                                buf = buffers[r.listener] = _LineBuffer()
                        if r.type == LS_REC_SESSION:
                            _format_session(buf, r, names, now_text, stamp)
                        else:
                            _format_http(buf, r, names, now_text, stamp)
                        continue
                record = (
                    r.type,
                    r.listener,
                    r.slot,
                    r.reason,
                    r.arg,
                    r.client[: strlen(r.client)].decode("ascii"),
                    r.bytes_in,
                    r.bytes_out,
                    r.duration,
                )
                if (r.type == LS_REC_SESSION or r.type == LS_REC_TLS_FAILED or
                        r.type == LS_REC_CONNECT_FAILED):
                    # version/cipher/sni of a TLS session ("" for a plain one);
                    # a failed handshake's reason (a client's, or a server's in
                    # a failed connect; "" when the connect itself failed)
                    record += (r.tls[: strlen(r.tls)].decode("ascii", errors="replace"),)
                elif r.type == LS_REC_HTTP:
                    record += (
                        r.status,
                        r.method[: strlen(r.method)].decode("latin-1"),
                        r.target[: r.target_len].decode("latin-1"),
                        (r.t_request, r.t_queue, r.t_connect, r.t_response, r.duration),
                        r.tls[: strlen(r.tls)].decode("ascii", errors="replace"),
                    )
                out.append(record)
        finally:
            ls_records_done(self.engine, recs)
        for lid, buf in buffers.items():
            if buf.length:
                lines[lid] = buf.take()
        return lines, out


cdef void _set_rules(ls_hrules *r, tuple rules) except *:
    """One direction's header rules into the engine's fixed-size table;
    ValueError beyond its limits (http_native.refusal keeps such a listener on
    the pure path before it gets here)."""
    names, lines = rules
    cdef bytes name
    cdef bytes block = lines
    if len(names) > LS_HTTP_MAX_RULES or len(block) > LS_HTTP_RULE_LINES:
        raise ValueError("too many header rules, or their lines too long")
    cdef int i
    for i in range(len(names)):
        name = names[i]
        if len(name) >= LS_HTTP_RULE_NAME:
            raise ValueError("header rule name too long")
        memcpy(r.drop[i], <const char *>name, len(name))
    r.ndrop = len(names)
    memcpy(r.lines, <const char *>block, len(block))
    r.lines_len = len(block)


cdef extern from *:
    """
    /* A record's fields up to its tls text (what a tcp session's line reads)
     * brought into the cache ahead of use: the workers wrote them on another
     * core, 1.3 KiB apart, and waiting for each record's first line was most
     * of take_records' time per line. */
    static inline void ls_prefetch_record(const void *r)
    {
        const char *p = (const char *)r;
        __builtin_prefetch(p);
        __builtin_prefetch(p + 64);
        __builtin_prefetch(p + 128);
        __builtin_prefetch(p + 192);
    }
    """
    void _prefetch_record "ls_prefetch_record"(const ls_record *r) nogil

cdef enum:
    RECORD_PREFETCH = 4  # records ahead of the one being formatted


cdef inline bint _formatted_here(ls_record *r):
    """Whether take_records writes this record's log line itself: every session
    and request end but those that need words from Python (a failed connect's
    errno text, a shutdown's reason)."""
    if r.type == LS_REC_SESSION:
        return 0 < r.reason < LS_END_CONNECT_FAILED
    if r.type == LS_REC_HTTP:
        return (0 < r.reason <= LS_HEND_REDIRECT and r.reason != LS_HEND_CONNECT_FAILED
                and r.reason != LS_HEND_SHUTDOWN)
    return False


cdef double _wall_clock(char *stamp):
    """Now, as seconds since the epoch, and as the text log's UTC stamp
    (2026-11-23T18:36:08.841Z, the same as sessionlog._stamp)."""
    cdef timespec ts
    cdef tm t
    clock_gettime(CLOCK_REALTIME, &ts)
    gmtime_r(&ts.tv_sec, &t)
    cdef size_t k = strftime(stamp, 32, "%Y-%m-%dT%H:%M:%S", &t)
    snprintf(stamp + k, 8, ".%03dZ", <int>(ts.tv_nsec // 1000000))
    return <double>ts.tv_sec + <double>ts.tv_nsec / 1e9


cdef _hist(ls_hist *h):
    return ([h.n[b] for b in range(LS_HIST_BOUNDS + 1)], h.sum_us / 1e6)


def json_seconds(double t):
    """A duration as the JSON access and session lines write it (tests compare it
    with %.6f, trailing zeros dropped)."""
    cdef char out[64]
    cdef int k = _json_seconds(out, sizeof(out), t)
    return out[:k].decode("ascii")


def metric_buckets():
    """The histograms' upper bounds in seconds (engine/metrics.c)."""
    return [ls_hist_bounds_us[b] / 1e6 for b in range(LS_HIST_BOUNDS)]


def metric_codes():
    """The HTTP codes the engine counts one by one; each class's other codes follow."""
    return [ls_http_tracked[k] for k in range(LS_HTTP_TRACKED)]


# The largest line buffer take_records keeps for the next batch (a drain of a
# busy listener is a few hundred KiB of lines).
cdef enum:
    LINE_BUFFER_KEPT = 4 * 1024 * 1024


cdef class _LineBuffer:
    """Lines of one listener, appended in C; joined by newlines."""
    cdef char *data
    cdef size_t length, capacity

    def __dealloc__(self):
        free(self.data)

    cdef int reserve(self, size_t more) except -1:
        cdef size_t want = self.length + more
        cdef char *grown
        if want <= self.capacity:
            return 0
        want = max(want, self.capacity * 2, <size_t>4096)
        grown = <char *>realloc(self.data, want)
        if grown == NULL:
            raise MemoryError()
        self.data = grown
        self.capacity = want
        return 0

    cdef str take(self):
        """The lines so far; the buffer is left empty for the next batch, its
        memory kept unless a burst made it large."""
        # latin-1: a request target's bytes become the characters the pure path
        # makes of them (it decodes targets as latin-1); the rest is ASCII.
        text = self.data[: self.length].decode("latin-1")
        self.length = 0
        if self.capacity > LINE_BUFFER_KEPT:
            free(self.data)
            self.data = NULL
            self.capacity = 0
        return text


cdef extern from *:
    """
    /* LS_END_* -> the pure path's words (relay.END_WORDS), for the reasons
     * take_records formats in C (those below LS_END_CONNECT_FAILED). */
    static const char *const ls_end_words[] = {
        "", "client-close", "server-close", "client-reset", "server-reset",
        "client-timeout", "server-timeout", "queue-timeout", "no-server",
    };
    /* LS_HEND_* -> the access log's words (relay.HTTP_END_WORDS), for the ends
     * take_records formats in C (all but connect-failed and shutdown). */
    static const char *const ls_http_end_words[] = {
        "", "ok", "bad-request", "bad-request-body", "no-server", "connect-failed",
        "request-timeout", "client-timeout", "server-timeout", "tunnel-timeout",
        "server-error", "server-close", "server-reset", "server-abort",
        "client-close", "client-reset", "shutdown", "redirect",
    };
    """
    const char *const *ls_end_words
    const char *const *ls_http_end_words

cdef const char *ls_timing_keys[5]
ls_timing_keys[:] = [b"t_request", b"t_queue", b"t_connect", b"t_response", b"t_total"]


cdef inline char *_put(char *at, const char *s):
    """`s` copied to `at` (the line buffer has room: reserved per line); returns
    the end of what was written. The JSON lines are put together with these
    rather than snprintf, whose format parsing was a third of the control
    thread's time per logged request once the floats were gone."""
    cdef size_t n = strlen(s)
    memcpy(at, s, n)
    return at + n


# "00" to "99": _put_decimal writes two digits per division.
cdef const char *_DIGIT_PAIRS = (
    b"00010203040506070809101112131415161718192021222324"
    b"25262728293031323334353637383940414243444546474849"
    b"50515253545556575859606162636465666768697071727374"
    b"75767778798081828384858687888990919293949596979899"
)


@cython.cdivision(True)
cdef char *_put_decimal(char *at, unsigned long long n, int point):
    """`n` in decimal with a point before its last `point` digits (0 to 20; 0:
    none), padded with zeros to one digit before the point: (42, 0) 42, (5, 3)
    0.005, (1234567, 6) 1.234567. The one decimal writer of the log lines: their
    integers and, from a count of milli- or microseconds, their seconds.

    One pass from the last digit, two at a time, dividing by constants only (a
    multiply for the compiler): splitting whole and fraction first took two
    divisions by a variable power of ten."""
    cdef char digits[24]
    cdef char *p = digits + sizeof(digits)
    cdef int i = 0
    cdef unsigned r
    while i + 1 < point:
        r = <unsigned>(n % 100)
        n //= 100
        p -= 2
        memcpy(p, _DIGIT_PAIRS + 2 * r, 2)
        i += 2
    if i < point:
        p -= 1
        p[0] = <char>(48 + n % 10)
        n //= 10
    if point:
        p -= 1
        p[0] = b"."
    while n >= 100:
        r = <unsigned>(n % 100)
        n //= 100
        p -= 2
        memcpy(p, _DIGIT_PAIRS + 2 * r, 2)
    if n >= 10:
        p -= 2
        memcpy(p, _DIGIT_PAIRS + 2 * n, 2)
    else:
        p -= 1
        p[0] = <char>(48 + n)
    cdef size_t length = <size_t>(digits + sizeof(digits) - p)
    memcpy(at, p, length)
    return at + length


cdef inline char *_put_int(char *at, long long v):
    """`v` in decimal, as %lld writes it."""
    if v >= 0:
        return _put_decimal(at, <unsigned long long>v, 0)
    at[0] = b"-"
    return _put_decimal(at + 1, <unsigned long long>(-(v + 1)) + 1, 0)


def decimal_text(n, int point=0):
    """_put_decimal's text of `n` (bytes; a negative `n`: _put_int's), for the
    tests that hold it to Python's."""
    cdef char out[32]
    cdef char *end
    if not 0 <= point <= 20:
        raise ValueError(f"point {point} is not within 0..20")
    if n < 0:
        if point:
            raise ValueError("a negative number is written without a point")
        end = _put_int(out, n)
    else:
        end = _put_decimal(out, n, point)
    return PyBytes_FromStringAndSize(out, end - out)


cdef char *_put_head(char *at, const char *now, const char *event, ls_record *r,
                     const char *listener, const char *server):
    """The start of a JSON line, the same for sessions and requests:
    {"time":..,"event":"..","client":"..","listener":"..","server":".." """
    at = _put(at, b'{"time":')
    at = _put(at, now)
    at = _put(at, b',"event":"')
    at = _put(at, event)
    at = _put(at, b'","client":"')
    at = _put(at, r.client)
    at = _put(at, b'","listener":"')
    at = _put(at, listener)
    at = _put(at, b'","server":"')
    at = _put(at, server)
    at[0] = b'"'
    return at + 1


cdef char *_put_tail(char *at, const char *end, ls_record *r):
    """The end of a JSON line: ,"end":"..", the "tls" field of a TLS listener's
    session or request (version/cipher/sni, as SessionLog's), and the brace."""
    at = _put(at, b',"end":"')
    at = _put(at, end)
    at[0] = b'"'
    at += 1
    if r.tls[0]:
        at = _put(at, b',"tls":"')
        at = _put(at, r.tls)
        at[0] = b'"'
        at += 1
    at[0] = b"}"
    return at + 1


cdef bytes _server_name(tuple names, int slot):
    """The server's name as a line shows it (log_names' list), "-" for none."""
    cdef list servers = names[2]
    return servers[slot] if 0 <= slot < len(servers) else b"-"


cdef int _format_session(_LineBuffer buf, ls_record *r, tuple names, const char *now,
                         const char *stamp) except -1:
    cdef bint as_json = names[0]
    cdef bytes listener = names[1]
    cdef bytes server = _server_name(names, r.slot)
    cdef const char *end = ls_end_words[r.reason]
    buf.reserve(len(listener) + len(server) + 420)  # 96 of them: the tls field
    cdef char *at = buf.data + buf.length
    cdef char *line
    cdef size_t room = buf.capacity - buf.length
    cdef int k
    if buf.length:
        at[0] = b"\n"
        at += 1
        room -= 1
    if as_json:
        # The keys and order of SessionLog.session's JSON; duration rounded to
        # the microsecond as there, with the trailing zeros dropped.
        line = at
        at = _put_head(at, now, b"session", r, listener, server)
        at = _put(at, b',"bytes_in":')
        at = _put_decimal(at, r.bytes_in, 0)
        at = _put(at, b',"bytes_out":')
        at = _put_decimal(at, r.bytes_out, 0)
        at = _put(at, b',"duration":')
        at += _json_seconds(at, room - <size_t>(at - line), r.duration)
        at = _put_tail(at, end, r)
        k = <int>(at - line)
    else:
        k = snprintf(
            at, room,
            "%s session %s %s/%s in=%llu out=%llu duration=%.3fs end=%s",
            stamp, r.client, <const char *>listener, <const char *>server,
            <unsigned long long>r.bytes_in, <unsigned long long>r.bytes_out, r.duration, end,
        )
        if r.tls[0]:
            k += snprintf(at + k, room - k, " tls=%s", r.tls)
    buf.length += (buf.length != 0) + <size_t>k
    return 0


cdef size_t _json_escaped(char *out, const char *s, size_t n):
    """`s` as the inside of a JSON string, as orjson writes it ("  \\  and control
    characters escaped, other bytes as they are); `out` has room for 6 * n."""
    cdef size_t i, k = 0
    cdef unsigned char c
    for i in range(n):
        c = <unsigned char>s[i]
        if c == b'"' or c == b"\\":
            out[k] = b"\\"
            out[k + 1] = <char>c
            k += 2
        elif c < 0x20:
            if c == b"\n":
                out[k] = b"\\"
                out[k + 1] = b"n"
                k += 2
            elif c == b"\r":
                out[k] = b"\\"
                out[k + 1] = b"r"
                k += 2
            elif c == b"\t":
                out[k] = b"\\"
                out[k + 1] = b"t"
                k += 2
            else:
                k += snprintf(out + k, 7, "\\u%04x", c)
        else:
            out[k] = <char>c
            k += 1
    return k


cdef int _fixed(char *out, size_t room, double value, int digits):
    """`value` with `digits` (at most 6) decimals, as snprintf's "%.*f" writes
    it, but for a tie (an exact ...5 in binary), rounded up here. printf's
    float conversion was most of the cost of an access-log line (a perf
    profile of keep-alive requests over TLS: 5 % of loadstone's CPU)."""
    cdef double scale = 1
    cdef int i
    for i in range(digits):
        scale *= 10
    if not (0 <= value < 1e12) or room < 40:  # negative, huge, NaN: printf's
        return snprintf(out, room, "%.*f", digits, value)
    cdef char *end = _put_decimal(out, <unsigned long long>(value * scale + 0.5), digits)
    end[0] = 0
    return <int>(end - out)


def fixed_decimal(double value, int digits):
    """_fixed's text of `value` (bytes), for the tests that hold it to printf's."""
    cdef char out[64]
    cdef int n = _fixed(out, sizeof(out), value, max(0, min(digits, 6)))
    return PyBytes_FromStringAndSize(out, n)


@cython.cdivision(True)
cdef int _json_seconds(char *out, size_t room, double t):
    """A duration in seconds to the microsecond, trailing zeros dropped (-1: not reached).

    The text of snprintf's %.6f, written from whole microseconds: glibc prints a
    double through multi-precision arithmetic, which made most of the control
    thread's time per logged request. Values %.6f might round otherwise (within
    a millionth of a microsecond of a half), negative ones and any too large for
    a 64-bit count still go through snprintf."""
    cdef double x = t * 1e6
    cdef double frac = x - floor(x)
    cdef int k
    if t >= 0 and x < 9e15 and not (0.499999 < frac < 0.500001) and room >= 32:
        k = <int>(_put_decimal(out, <unsigned long long>floor(x + 0.5), 6) - out)
    else:
        k = snprintf(out, room, "%.6f", t)
    while k > 1 and out[k - 1] == b"0" and out[k - 2] != b".":  # one digit kept after the point
        k -= 1
    return k


cdef int _format_http(_LineBuffer buf, ls_record *r, tuple names, const char *now,
                      const char *stamp) except -1:
    cdef bint as_json = names[0]
    cdef bytes listener = names[1]
    cdef bytes server = _server_name(names, r.slot)
    cdef const char *end = ls_http_end_words[r.reason]
    cdef double timings[5]
    timings[0] = r.t_request
    timings[1] = r.t_queue
    timings[2] = r.t_connect
    timings[3] = r.t_response
    timings[4] = r.duration
    cdef size_t method_len = strlen(r.method)
    buf.reserve(len(listener) + len(server) + 6 * (method_len + r.target_len) + 620)  # 96: tls
    cdef char *start = buf.data + buf.length
    cdef char *at = start
    cdef size_t room = buf.capacity - buf.length
    cdef int i
    if buf.length:
        at[0] = b"\n"
        at += 1
    if as_json:
        # The keys and order of SessionLog.request's JSON; the timings to the
        # microsecond (orjson writes the shortest exact repr of the double).
        at = _put_head(at, now, b"http", r, listener, server)
        at = _put(at, b',"method":"')
        at += _json_escaped(at, r.method, method_len)
        at = _put(at, b'","target":"')
        at += _json_escaped(at, r.target, r.target_len)
        at = _put(at, b'","status":')
        at = _put_int(at, r.status)
        at = _put(at, b',"bytes_in":')
        at = _put_decimal(at, r.bytes_in, 0)
        at = _put(at, b',"bytes_out":')
        at = _put_decimal(at, r.bytes_out, 0)
        for i in range(5):
            at = _put(at, b',"')
            at = _put(at, ls_timing_keys[i])
            at = _put(at, b'":')
            at += _json_seconds(at, room - <size_t>(at - start), timings[i])
        at = _put_tail(at, end, r)
    else:
        at += snprintf(
            at, room - (at - start), "%s http %s %s/%s %d ",
            stamp, r.client, <const char *>listener, <const char *>server, r.status,
        )
        for i in range(5):
            if i:
                at[0] = b"/"
                at += 1
            if timings[i] < 0:
                at += snprintf(at, room - (at - start), "-1")
            else:
                at += _fixed(at, room - (at - start), timings[i] * 1000, 3)
        at += snprintf(
            at, room - (at - start), 'ms in=%llu out=%llu "%s ',
            <unsigned long long>r.bytes_in, <unsigned long long>r.bytes_out, r.method,
        )
        memcpy(at, r.target, r.target_len)
        at += r.target_len
        at += snprintf(at, room - (at - start), '" end=%s', end)
        if r.tls[0]:
            at += snprintf(at, room - (at - start), " tls=%s", r.tls)
    buf.length += <size_t>(at - start)
    return 0
