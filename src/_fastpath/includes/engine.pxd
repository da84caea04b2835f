# cython: language_level=3
# C declarations of the native engine (engine.h), for relay.pyx.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint64_t

cdef extern from "netinet/in.h":
    ctypedef unsigned int socklen_t
    cdef struct sockaddr_in6:
        pass

cdef extern from "engine.h" nogil:
    int LS_MAX_WORKERS
    int LS_SPLICE_OFF, LS_SPLICE_ON, LS_SPLICE_AUTO
    int LS_REC_SESSION, LS_REC_CONNECT_FAILED, LS_REC_HTTP, LS_REC_TLS_FAILED
    int LS_END_CONNECT_FAILED
    int LS_HEND_OK, LS_HEND_CONNECT_FAILED, LS_HEND_SHUTDOWN, LS_HEND_REDIRECT
    int LS_HTTP_MAX_EXCEPT

    ctypedef struct ls_record:
        uint8_t type
        uint8_t reason
        int32_t listener
        int32_t slot
        int32_t arg
        uint64_t bytes_in
        uint64_t bytes_out
        double duration
        char client[56]
        int32_t status
        double t_request, t_queue, t_connect, t_response
        char method[24]
        uint16_t target_len
        char *target
        char tls[96]

    ctypedef struct ls_tserver:
        int32_t slot
        int32_t weight
        int32_t maxconn
        socklen_t addrlen
        sockaddr_in6 addr
        int32_t proxy_version

    ctypedef struct ls_lconfig:
        int32_t maxconn
        int32_t retries
        int32_t redispatch
        int64_t connect_ms
        int64_t idle_ms
        int32_t idle_reason
        int64_t queue_ms
        int32_t keepalive
        int32_t ka_idle
        int32_t ka_intvl
        int32_t ka_cnt
        int32_t log_mode

    ctypedef struct ls_hnet:
        int32_t family
        int32_t prefix
        uint8_t addr[16]

    int LS_HTTP_MAX_RULES, LS_HTTP_RULE_NAME, LS_HTTP_RULE_LINES
    ctypedef struct ls_hrules:
        int32_t ndrop
        char drop[32][64]
        int32_t lines_len
        char lines[4096]

    ctypedef struct ls_hconfig:
        int32_t enabled
        int64_t request_ms, keep_alive_ms, client_ms, server_ms, tunnel_ms
        int64_t linger_ms
        int32_t max_head_size, max_headers
        int32_t forwarded_port
        char forwardfor[64]
        char proto_line[96]
        int32_t nexcept
        ls_hnet *except_ "except"
        int32_t max_requests
        ls_hrules req_rules, resp_rules
        int32_t redirect_code
        char redirect_scheme[16]

    ctypedef struct ls_lstats:
        int64_t current
        int64_t queued
        uint64_t sessions_total
        uint64_t bytes_in
        uint64_t bytes_out
        uint64_t denied

    ctypedef struct ls_sstats:
        int64_t live
        uint64_t sessions_total
        uint64_t bytes_in
        uint64_t bytes_out

    ctypedef struct ls_limit_stats:
        int64_t conns
        uint64_t accept_pauses
        uint64_t maxconn_pauses

    ctypedef struct ls_engine:
        pass

    ls_engine *ls_engine_new(int workers, int splice_mode, int pipe_size, int bufsize,
                             int use_uring)
    int ls_engine_uring_workers(ls_engine *e)
    int ls_engine_start(ls_engine *e)
    void ls_engine_free(ls_engine *e)
    int ls_engine_record_fd(ls_engine *e)
    void ls_engine_set_poll_spin(ls_engine *e, int spin_us)
    int ls_engine_poll_spin(ls_engine *e)
    void ls_engine_poll_stats(ls_engine *e, uint64_t out[5])
    const char *ls_spin_selftest()

    int ls_listener_new(ls_engine *e)
    void ls_listener_configure(ls_engine *e, int lid, const ls_lconfig *cfg)
    int ls_listener_add_socket(ls_engine *e, int lid, int fd)
    int ls_listener_remove_socket(ls_engine *e, int lid, int fd)
    int ls_listener_new_slot(ls_engine *e, int lid)
    int ls_listener_publish(ls_engine *e, int lid, int alg, const ls_tserver *servers, int n,
                            const uint64_t *ring_pos, const int32_t *ring_owner, int nring)

    void ls_listener_stats(ls_engine *e, int lid, ls_lstats *out)
    void ls_server_stats(ls_engine *e, int lid, int slot, ls_sstats *out)
    int ls_shutdown(ls_engine *e, int lid, int slot, int reason_id)
    void ls_engine_set_maxconn(ls_engine *e, int64_t maxconn, int64_t foreign)
    void ls_engine_set_foreign_conns(ls_engine *e, int64_t foreign)
    void ls_engine_set_bound_from_fds(ls_engine *e, int from_fds)
    void ls_engine_limit_stats(ls_engine *e, ls_limit_stats *out)
    ls_record *ls_take_records(ls_engine *e, int *n)
    void ls_records_done(ls_engine *e, ls_record *r)
    uint64_t ls_blake2b64(const void *data, size_t len)
    size_t ls_addr_text(const void *sa, char *out, size_t size)  # a struct sockaddr

    int ls_http_init(char *err, int errlen)
    const char *ls_llhttp_version()
    void ls_http_set_answer(int status, const char *data, int len)
    void ls_listener_configure_http(ls_engine *e, int lid, const ls_hconfig *cfg)
    int LS_PROXY_NREFUSED
    void ls_listener_proxy_accept(ls_engine *e, int lid, int64_t timeout_ms, const ls_hnet *nets, int n)
    void ls_listener_proxy_refused(ls_engine *e, int lid, uint64_t *out)
    int ls_http_stop(ls_engine *e, int lid)
    void ls_http_close_after_response(ls_engine *e, int lid)
    int64_t ls_http_idle_server_conns(ls_engine *e, int lid)


# TLS termination (tls.h, engine/tls.c)
cdef extern from "tls.h" nogil:
    int LS_TLS_TICKET_KEY_BYTES
    int LS_TLS_MAX_TICKET_KEYS

    ctypedef struct ls_tls_cert:
        const char *chain
        int32_t chain_len
        const char *key
        int32_t key_len

    ctypedef struct ls_tls_name:
        const char *name
        int32_t cert

    ctypedef struct ls_tls_config:
        const ls_tls_cert *certs
        int32_t ncerts
        const ls_tls_name *names
        int32_t nnames
        const unsigned char *alpn
        int32_t alpn_len
        int32_t min_version
        const char *ciphers
        const char *ciphersuites
        const char *client_ca
        int32_t verify_client
        int64_t handshake_ms
        const char *session_context

    ctypedef struct ls_tls_stats:
        uint64_t handshakes, resumed
        int32_t nfailures
        char failure[32][48]
        uint64_t failures[32]

    int ls_listener_set_tls(ls_engine *e, int lid, const ls_tls_config *cfg, char *err, int errlen)
    int ls_engine_set_ticket_keys(ls_engine *e, const unsigned char *keys, int n)
    void ls_listener_tls_stats(ls_engine *e, int lid, ls_tls_stats *out)

    # TLS to servers (engine/tls_upstream.c)
    ctypedef struct ls_tls_upstream_config:
        int32_t verify
        const char *ca_file
        const char *name
        int32_t name_is_ip
        const unsigned char *alpn
        int32_t alpn_len
        ls_tls_cert client

    int ls_server_set_tls(ls_engine *e, int lid, int slot, const ls_tls_upstream_config *cfg,
                          char *err, int errlen)

# SNI passthrough (sni.h, engine/sni.c) and its ClientHello reader (clienthello.h)
cdef extern from "sni.h" nogil:
    int LS_SNI_MAX_POOLS
    int LS_SNI_NREFUSED
    int LS_SNI_TIMEOUT
    int LS_END_SNI_REFUSED, LS_END_SNI_TIMEOUT

    ctypedef struct ls_sni_route:
        const char *name
        int32_t pool
        int32_t suffix

    int ls_listener_set_sni(ls_engine *e, int lid, int64_t inspect_ms, int default_pool,
                            const ls_sni_route *routes, int n)
    int ls_listener_publish_pool(ls_engine *e, int lid, int pool, int alg,
                                 const ls_tserver *servers, int n, const uint64_t *ring_pos,
                                 const int32_t *ring_owner, int nring)
    void ls_listener_sni_stats(ls_engine *e, int lid, uint64_t *routed, uint64_t *refused)

cdef extern from "clienthello.h" nogil:
    int LS_CH_ERROR, LS_CH_MORE, LS_CH_DONE
    int LS_CH_NREASONS
    const char *const *ls_ch_reasons

    ctypedef struct ls_ch_hello:
        int has_server_name
        const char *server_name
        size_t server_name_len
        const uint8_t *alpn
        size_t alpn_len
        const uint8_t *versions
        size_t nversions
        size_t size

    ctypedef struct ls_ch_reader:
        int reason

    void ls_ch_init(ls_ch_reader *r)
    void ls_ch_free(ls_ch_reader *r)
    int ls_ch_feed(ls_ch_reader *r, const uint8_t *data, size_t len, ls_ch_hello *out)

# the OpenSSL the engine is linked with (loadstone.buildinfo)
cdef extern from "<openssl/crypto.h>" nogil:
    int OPENSSL_VERSION_STRING
    const char *OpenSSL_version(int t)

