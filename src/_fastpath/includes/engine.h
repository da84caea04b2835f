/* loadstone native data plane: public interface of the C engine.
 *
 * The engine is a set of worker threads, each with its own epoll loop, that
 * accept, pick a server, connect and relay TCP sessions without ever touching
 * the Python interpreter. The Python control plane (loadstone.datapath.native,
 * through the Cython module relay.pyx) drives it with the calls below; every
 * one of them is safe to call from the control-plane thread while the workers
 * run. See docs/architecture.md for the whole picture.
 */
#ifndef LS_ENGINE_H
#define LS_ENGINE_H

#include <stdint.h>
#include <sys/socket.h>
#include <netinet/in.h>

#define LS_MAX_WORKERS 64

/* Balancing algorithms of a published table. */
enum {
    LS_ALG_ROUNDROBIN = 0,
    LS_ALG_LEASTCONN = 1,
    LS_ALG_SOURCE = 2,
    LS_ALG_FIRST = 3,
    LS_ALG_ACTIVE_BACKUP = 4,
};

/* How a direction of a session moves its bytes. */
enum {
    LS_SPLICE_OFF = 0,  /* recv/send through the worker's buffer */
    LS_SPLICE_ON = 1,   /* splice(2) through a pipe from the first byte */
    LS_SPLICE_AUTO = 2, /* recv/send until a read fills the buffer, then splice */
};

/* Why a session ended; relay.pyx maps these to the pure path's words. */
enum {
    LS_END_CLIENT_CLOSE = 1,
    LS_END_SERVER_CLOSE,
    LS_END_CLIENT_RESET,
    LS_END_SERVER_RESET,
    LS_END_CLIENT_TIMEOUT,
    LS_END_SERVER_TIMEOUT,
    LS_END_QUEUE_TIMEOUT,
    LS_END_NO_SERVER,
    LS_END_CONNECT_FAILED, /* arg: errno, or -1 for a connect timeout */
    LS_END_SHUTDOWN,       /* arg: the reason id given to ls_shutdown */
    LS_END_SNI_REFUSED,    /* SNI passthrough: not a ClientHello (arg: LS_CH_* reason, sni.h) */
    LS_END_SNI_TIMEOUT,    /* SNI passthrough: no whole ClientHello by the inspect timeout */
};

/* Records handed to the control plane in batches. */
enum {
    LS_REC_SESSION = 1,        /* a session ended */
    LS_REC_CONNECT_FAILED = 2, /* a connect attempt failed (arg: errno or -1) */
    LS_REC_HTTP = 3,           /* mode http: a request ended (the access log line) */
    LS_REC_TLS_FAILED = 4,     /* a client's TLS handshake failed (tls: the reason) */
};

/* How an HTTP exchange ended (LS_REC_HTTP's reason); relay.pyx maps these to
 * the words of the pure path's access log (loadstone/datapath/http.py). */
enum {
    LS_HEND_OK = 1,
    LS_HEND_BAD_REQUEST,
    LS_HEND_BAD_REQUEST_BODY,
    LS_HEND_NO_SERVER,
    LS_HEND_CONNECT_FAILED, /* arg: errno, or -1 for a connect timeout */
    LS_HEND_REQUEST_TIMEOUT,
    LS_HEND_CLIENT_TIMEOUT,
    LS_HEND_SERVER_TIMEOUT,
    LS_HEND_TUNNEL_TIMEOUT,
    LS_HEND_SERVER_ERROR,
    LS_HEND_SERVER_CLOSE,
    LS_HEND_SERVER_RESET,
    LS_HEND_SERVER_ABORT,
    LS_HEND_CLIENT_CLOSE,
    LS_HEND_CLIENT_RESET,
    LS_HEND_SHUTDOWN, /* arg: the reason id given to ls_shutdown */
    LS_HEND_REDIRECT, /* the listener's `redirect`, answered by the engine */
};

#define LS_HTTP_TARGET_MAX 1024 /* bytes of the request target kept for the log */

typedef struct ls_record {
    uint8_t type;
    uint8_t reason; /* LS_END_* for LS_REC_SESSION */
    uint16_t _pad;
    int32_t listener;
    int32_t slot; /* server slot, -1 when the session reached none */
    int32_t arg;
    uint64_t bytes_in;  /* client -> server */
    uint64_t bytes_out; /* server -> client */
    double duration;    /* seconds */
    char client[56];    /* "ip:port" or "[ip6]:port" */
    /* LS_REC_SESSION of a TLS listener: "version/cipher/sni", else "";
     * LS_REC_TLS_FAILED: the reason */
    char tls[96];
    /* LS_REC_HTTP only, and last: flush_records copies a record's fields up
     * to here, and these (with target_len bytes of the target) only in an HTTP
     * record; a tcp session's record is 200 bytes of the 1.3 KiB.
     * duration above is the total time (Ta) */
    int32_t status;
    double t_request, t_queue, t_connect, t_response; /* seconds, -1: not reached */
    char method[24];
    uint16_t target_len;
    char target[LS_HTTP_TARGET_MAX];
} ls_record;

/* One server of a published table. */
typedef struct ls_tserver {
    int32_t slot;
    int32_t weight;
    int32_t maxconn; /* -1: no limit */
    socklen_t addrlen;
    struct sockaddr_in6 addr; /* large enough for sockaddr_in too */
    int32_t proxy_version;    /* PROXY protocol header sent first: 0 none, 1, 2 */
} ls_tserver;

/* Listener settings; copied in whole by ls_listener_configure. */
typedef struct ls_lconfig {
    int32_t maxconn;
    int32_t retries;
    int32_t redispatch;
    int64_t connect_ms;
    int64_t idle_ms;     /* min(client, server) timeout */
    int32_t idle_reason; /* LS_END_CLIENT_TIMEOUT or LS_END_SERVER_TIMEOUT */
    int64_t queue_ms;
    int32_t keepalive; /* 0: off; else the three values below apply */
    int32_t ka_idle, ka_intvl, ka_cnt;
    int32_t log_mode; /* LS_LOG_*: which TCP sessions get a record (and a line) */
} ls_lconfig;

/* A listener's `log` (loadstone/sessionlog.py `logged`). */
enum { LS_LOG_ALL = 0, LS_LOG_ERRORS = 1, LS_LOG_NONE = 2 };

/* mode http: what the native HTTP path does besides the TCP settings above
 * (loadstone/datapath/http_native.py fills it from the listener). */
#define LS_HTTP_MAX_EXCEPT 32
typedef struct ls_hnet {
    int32_t family; /* AF_INET or AF_INET6 */
    int32_t prefix;
    uint8_t addr[16];
} ls_hnet;

/* Header rules of one direction (`request_headers` or `response_headers`),
 * compiled by http_native.py: rules apply in the order written, a set or a
 * delete removing every earlier field of its name, so what they do to a head
 * is the same whatever it holds: the fields named in `drop` go, and `lines`
 * (what the sets and adds leave, in order) follows the fields kept. */
#define LS_HTTP_MAX_RULES 32       /* rules per direction */
#define LS_HTTP_RULE_NAME 64       /* a rule's header name, with its NUL */
#define LS_HTTP_RULE_LINES 4096    /* the bytes of the lines the rules add */
typedef struct ls_hrules {
    int32_t ndrop;
    char drop[LS_HTTP_MAX_RULES][LS_HTTP_RULE_NAME]; /* names, compared ignoring case */
    int32_t lines_len;
    char lines[LS_HTTP_RULE_LINES]; /* "Name: value\r\n" lines */
} ls_hrules;

typedef struct ls_hconfig {
    int32_t enabled;
    int64_t request_ms, keep_alive_ms, client_ms, server_ms, tunnel_ms;
    int64_t linger_ms; /* the lingering close (http_linger.c), 0: none */
    int32_t max_head_size, max_headers;
    int32_t forwarded_port;     /* add X-Forwarded-Port */
    char forwardfor[64];        /* header name, "" when forwardfor is off */
    char proto_line[96];        /* "X-Forwarded-Proto: https\r\n", or "" */
    int32_t nexcept;            /* forwardfor's `except` networks */
    ls_hnet except[LS_HTTP_MAX_EXCEPT];
    int32_t max_requests; /* a server connection serves this many, then closes (>= 1) */
    ls_hrules req_rules, resp_rules;
    int32_t redirect_code;    /* `redirect`: every request answered so, or 0 */
    char redirect_scheme[16]; /* its scheme ("https") */
} ls_hconfig;

typedef struct ls_engine ls_engine;

/* Engine life. ls_engine_new returns NULL and sets errno on failure. */
/* use_uring: give each worker an io_uring for its batched sends where the kernel
 * allows one (ls_engine_uring_workers says how many got it). */
ls_engine *ls_engine_new(int workers, int splice_mode, int pipe_size, int bufsize,
                         int use_uring);
int ls_engine_uring_workers(ls_engine *e);
int ls_engine_start(ls_engine *e);
void ls_engine_free(ls_engine *e); /* stops and joins the workers first */
int ls_engine_record_fd(ls_engine *e);
/* global.poll_spin: before sleeping, a worker whose last sleep was short looks
 * for events this many microseconds more, yielding the CPU (0: never), within a
 * budget of a quarter of its busy time. Taken by the workers at their next pass. */
void ls_engine_set_poll_spin(ls_engine *e, int spin_us);
int ls_engine_poll_spin(ls_engine *e); /* the spin the workers use, in microseconds */
/* How the workers waited, summed: sleeping epoll_wait() calls, spins, spins
 * that found an event, microseconds spinning, and of them those of spins that
 * found nothing. */
#define LS_POLL_STATS 5
void ls_engine_poll_stats(ls_engine *e, uint64_t out[LS_POLL_STATS]);
/* The spin budget's arithmetic played out without a clock (spin_selftest.c):
 * NULL, or what broke it. For the tests. */
const char *ls_spin_selftest(void);

/* Listeners. Ids are small integers, never reused. */
int ls_listener_new(ls_engine *e);
void ls_listener_configure(ls_engine *e, int lid, const ls_lconfig *cfg);
int ls_listener_add_socket(ls_engine *e, int lid, int fd);    /* 0 or -errno */
int ls_listener_remove_socket(ls_engine *e, int lid, int fd); /* waits for every worker */
int ls_listener_new_slot(ls_engine *e, int lid);              /* -1 when full */
/* Publish a new server table: copies everything it is given. ring_owner[i] is
 * an index into servers, or -1 for a point whose server takes no sessions. */
int ls_listener_publish(ls_engine *e, int lid, int alg, const ls_tserver *servers, int n,
                        const uint64_t *ring_pos, const int32_t *ring_owner, int nring);

/* accept_proxy: connections from `nets` must start with a PROXY header, whole
 * within timeout_ms; n < 0: none (proxy_proto.c). Refusals by reason: */
enum {
    LS_PROXY_REFUSED_MALFORMED = 0,
    LS_PROXY_REFUSED_TRUNCATED,
    LS_PROXY_REFUSED_TIMEOUT,
    LS_PROXY_REFUSED_UNTRUSTED,
    LS_PROXY_NREFUSED,
};
void ls_listener_proxy_accept(ls_engine *e, int lid, int64_t timeout_ms, const ls_hnet *nets, int n);
void ls_listener_proxy_refused(ls_engine *e, int lid, uint64_t out[LS_PROXY_NREFUSED]);

/* Counters, summed over the workers. */
typedef struct ls_lstats {
    int64_t current; /* admitted + queued */
    int64_t queued;
    uint64_t sessions_total;
    uint64_t bytes_in, bytes_out;
    uint64_t denied;
} ls_lstats;
typedef struct ls_sstats {
    int64_t live;
    uint64_t sessions_total;
    uint64_t bytes_in, bytes_out;
} ls_sstats;
void ls_listener_stats(ls_engine *e, int lid, ls_lstats *out);
void ls_server_stats(ls_engine *e, int lid, int slot, ls_sstats *out);

/* global.maxconn (0: none) over the engine's client sessions and `foreign`
 * ones (the pure path's), and the pauses of accepting (limits.c). */
typedef struct ls_limit_stats {
    int64_t conns; /* the engine's client sessions */
    uint64_t accept_pauses;  /* at the descriptor limit */
    uint64_t maxconn_pauses; /* at global.maxconn */
} ls_limit_stats;
void ls_engine_set_maxconn(ls_engine *e, int64_t maxconn, int64_t foreign);
void ls_engine_set_foreign_conns(ls_engine *e, int64_t foreign);
void ls_engine_set_bound_from_fds(ls_engine *e, int from_fds);
void ls_engine_limit_stats(ls_engine *e, ls_limit_stats *out);

/* Close the sessions of a listener (slot -1) or of one of its servers, now;
 * returns how many were closed. Waits for every worker. */
int ls_shutdown(ls_engine *e, int lid, int slot, int reason_id);

/* Take the records queued so far: returns a malloc'ed array (the caller gives
 * it back with ls_records_done, or frees it) and its length in *n, or NULL
 * with *n = 0. */
ls_record *ls_take_records(ls_engine *e, int *n);
/* Give taken records back instead of freeing them: the array is filled again
 * (one kept, up to LS_SPARE_RECORDS_MAX records; a larger one is freed). */
#define LS_SPARE_RECORDS_MAX 4096
void ls_records_done(ls_engine *e, ls_record *r);

/* A client address as the session log writes it (192.0.2.1:5000,
 * [2001:db8::1]:5000, "-" for another family), inet_ntop's text built without
 * libc formatting (addr_text.c); cut to `size` as snprintf cuts; returns the
 * length of the whole text. */
size_t ls_addr_text(const struct sockaddr *sa, char *out, size_t size);

/* Hash used by the `source` algorithm: the first 8 bytes of BLAKE2b-64 of the
 * key, big-endian, as loadstone.balance.source._position computes it. */
uint64_t ls_blake2b64(const void *data, size_t len);

/* mode http (http_engine.c). ls_http_init runs the self-test of the vendored
 * llhttp and sets up its callbacks; 0, or -1 with a reason in err. Until it
 * succeeds no listener can be HTTP. ls_llhttp_version: "major.minor.patch". */
int ls_http_init(char *err, int errlen);
const char *ls_llhttp_version(void);
void ls_http_set_answer(int status, const char *data, int len);
void ls_listener_configure_http(ls_engine *e, int lid, const ls_hconfig *cfg);
/* Soft stop: idle keep-alive connections close now, the others after their
 * response in flight. Waits for every worker. */
int ls_http_stop(ls_engine *e, int lid);
void ls_http_close_after_response(ls_engine *e, int lid);
int64_t ls_http_idle_server_conns(ls_engine *e, int lid);

#endif
