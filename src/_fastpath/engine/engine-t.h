/* engine-t.h: the native engine's internal types and limits (logic apart, in
 * the files engine.c includes; the interface Python sees is includes/engine.h).
 *
 * Who writes what: a session (ls_session) belongs to the worker that accepted
 * it; a listener's table, balancing state and maxconn queue are shared by the
 * workers under its mutex; per-worker counters are written by their worker
 * alone and summed by the control plane.
 */
#ifndef LS_ENGINE_T_H
#define LS_ENGINE_T_H

#include "engine.h"
#include "list.h"
#include "uring.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/epoll.h>

#ifndef EPOLLEXCLUSIVE
#define EPOLLEXCLUSIVE (1u << 28)
#endif

#define LS_MAX_LISTENERS 4096
#define LS_SLOTS_PER_CHUNK 64
#define LS_MAX_CHUNKS 1024
#define LS_EVENTS 256
#define LS_ROUNDS 32        /* reads per direction before yielding to others */
#define LS_OUTBOX_BYTES (256 * 1024)
#define LS_OUTBOX_ENTRIES 1024
#define LS_ACCEPT_BATCH 64  /* accepts per wake-up */
#define LS_PIPE_POOL 64     /* idle pipes a worker keeps */
#define LS_MAX_PAUSED 64    /* listening sockets a worker can pause (limits.c) */

/* what an epoll event's data names: the low bits of the pointer */
#define TAG_CLIENT 0u
#define TAG_SERVER 1u
#define TAG_LSOCK 2u
#define TAG_CMD 3u
#define TAG_MASK 3u

typedef struct ls_table {
    int alg;
    int n;
    ls_tserver *servers;
    int nring;
    uint64_t *ring_pos;
    int32_t *ring_owner;
} ls_table;

typedef struct ls_slot_shared {
    int64_t live;       /* sessions on this server now (atomic) */
    int64_t rr_current; /* smooth weighted round-robin value (under the lock) */
} ls_slot_shared;

typedef struct ls_slot_wstats { /* per worker, written by it alone */
    uint64_t sessions_total, bytes_in, bytes_out;
} ls_slot_wstats;

typedef struct ls_chunk {
    ls_slot_shared shared[LS_SLOTS_PER_CHUNK];
    ls_slot_wstats *w; /* [workers][LS_SLOTS_PER_CHUNK] */
    uint64_t *codes; /* HTTP responses by code, [workers][LS_SLOTS_PER_CHUNK][LS_HTTP_NCODES] (metrics.c) */
} ls_chunk;

typedef struct ls_lwstats {
    uint64_t sessions_total, bytes_in, bytes_out, denied;
    uint64_t proxy_refused[LS_PROXY_NREFUSED]; /* accept_proxy's refusals (proxy_proto.c) */
} __attribute__((aligned(64))) ls_lwstats;

/* A listener's accept_proxy (proxy_proto.c): the networks trusted to send a
 * PROXY header, and the time a header may take. */
typedef struct ls_paccept {
    int64_t timeout_ms;
    struct ls_paccept *prev; /* settings replaced, kept until the listener goes */
    int nnets;
    ls_hnet nets[];
} ls_paccept;

typedef struct ls_session ls_session;
typedef struct ls_worker ls_worker;
typedef struct ls_http ls_http; /* mode http: http-t.h */
typedef struct ls_listener ls_listener;

/* What differs between the sessions of a tcp and of an http listener: one
 * table per mode (proto_tcp in session.c, proto_http in http_session.c),
 * taken from the listener at accept and kept for the session's life. The
 * engine's generic code (accept, admission, connect, the relay, finish, the
 * worker loop) calls through it and knows nothing of HTTP. NULL: nothing to do. */
typedef struct ls_proto {
    /* on_accept: the connection's own state, before it is admitted; 0 or -1 */
    int (*accepted)(ls_session *s);
    /* past maxconn: tcp picks a server and connects, http waits for a head */
    void (*admitted)(ls_worker *W, ls_session *s);
    /* sess_connect, a server picked: an idle connection to it, if any; 1 if taken */
    int (*take_pooled)(ls_worker *W, ls_session *s);
    /* the server connection is up */
    void (*connected)(ls_worker *W, ls_session *s);
    /* no server to take it (LS_END_NO_SERVER), or the last connect attempt
     * failed (LS_END_CONNECT_FAILED, arg: errno or -1) */
    void (*unserved)(ls_worker *W, ls_session *s, int end, int arg);
    /* an epoll event, but for the server socket of a connect in progress */
    void (*event)(ls_worker *W, ls_session *s, int side, uint32_t ev);
    /* the session's turn on the worker's ready list */
    void (*progress)(ls_worker *W, ls_session *s);
    /* a deadline in a state of the protocol's own (ST_HTTP, ST_POOLED) */
    void (*timeout)(ls_worker *W, ls_session *s);
    /* how long a relaying session may stay idle (read when its timer fires) */
    int64_t (*relay_idle_ms)(const ls_session *s);
    /* finish(), before the descriptors close: counters, records */
    void (*ended)(ls_worker *W, ls_session *s, int reason, int arg);
    /* sess_free(): the protocol's state of the session */
    void (*release)(ls_session *s);
    /* CMD_STOP_IDLE: close the listener's idle connections; how many */
    int (*stop_idle)(ls_worker *W, ls_listener *L);
    /* CMD_SHUTDOWN: close the idle server connections of the listener (or of
     * one of its servers, slot >= 0) kept by the worker */
    void (*drop_idle)(ls_worker *W, ls_listener *L, int slot);
    /* timeouts.queue passed, the session EXPIRED (never counted); NULL:
     * finish(LS_END_QUEUE_TIMEOUT). http: its 503, then a lingering close */
    void (*queue_expired)(ls_worker *W, ls_session *s);
} ls_proto;

typedef struct ls_lsock {
    int fd;
    volatile int closed;
    ls_listener *L;
    struct ls_lsock *next;
} ls_lsock;

struct ls_listener {
    int id;
    ls_engine *e;
    pthread_mutex_t lock;
    ls_table *table;  /* under lock */
    volatile int alg; /* the table's, read without the lock as a hint */
    ls_lconfig cfg;   /* written under lock; scalars read racily are fine */
    int lc_next;      /* leastconn rotation, under lock */
    int64_t active;   /* admitted sessions, under lock */
    int64_t nqueued;  /* under lock */
    ls_list queue;    /* sessions waiting for a slot (qlink), under lock */
    ls_lsock *socks; /* control-plane thread only */
    int nslots;
    ls_chunk *chunks[LS_MAX_CHUNKS];
    ls_lwstats *wstats; /* [workers] */
    const ls_proto *volatile proto; /* of the sessions it accepts (tcp or http) */
    /* mode http (http_*.c) */
    /* Published whole and never written in place: a reload's new settings are a
     * new block, the old one freed once every worker has passed a barrier
     * (http_session.c ls_listener_configure_http). Never NULL. */
    ls_hconfig *volatile hcfg;
    volatile int http_stopping;
    int64_t http_pooled; /* idle server connections, all workers (atomic) */
    struct ls_lmetrics_w *metrics; /* [workers]: histograms, codes (metrics.c) */
    struct ls_tls *tls;  /* TLS termination (tls.c), NULL: plain TCP */
    struct ls_tls_upstreams *tls_up; /* TLS to its servers by slot (tls_upstream.c) */
    ls_paccept *volatile paccept; /* accept_proxy (proxy_proto.c), NULL: none */
    ls_paccept *paccept_old;
    struct ls_sni *sni; /* SNI passthrough (sni.c), NULL: none */
};

/* QUEUED: waiting for a maxconn slot (not counted as active). ADMITTING: taken
 * off the queue by some worker, counted, its owner not told yet. EXPIRED: off
 * the queue by its queue timeout, not counted. PICKING: counted, choosing a
 * server. DELAY: waiting to retry the same server. */
enum {
    ST_QUEUED = 1,
    ST_ADMITTING,
    ST_EXPIRED,
    ST_PICKING,
    ST_DELAY,
    ST_CONNECTING,
    ST_RELAY,
    ST_CLOSED,
    ST_HTTP,   /* mode http: driven by http_*.c */
    ST_POOLED, /* mode http: an idle server connection in a worker's pool */
    ST_TLS_HANDSHAKE, /* a TLS listener's connection before admission (tls.c) */
    ST_TLS_CONNECT,   /* connected to a TLS server, its handshake running (tls_upstream.c) */
    ST_PROXY_HEADER,  /* a trusted client's PROXY header being read (proxy_proto.c) */
    ST_SNI_INSPECT,   /* admitted, its ClientHello being read to choose a pool (sni.c) */
};

typedef struct ls_dir {
    char *buf; /* bytes read but not yet written (recv/send mode) */
    uint32_t off, len;
    int pr, pw;    /* pipe (splice mode); -1: none */
    uint32_t plen; /* bytes in the pipe */
    uint8_t eof, shut, splice;
    uint8_t held; /* bytes wait in the worker's outbox (see flush_outbox) */
} ls_dir;

typedef union ls_addr {
    struct sockaddr sa;
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
} ls_addr;

struct ls_session {
    ls_listener *L;
    ls_worker *W;
    const ls_proto *proto;
    int fd[2]; /* client, server */
    uint8_t state;
    uint8_t rd[2], wr[2], rdhup[2];
    uint8_t first_eof;     /* 0, 1 client, 2 server */
    uint8_t admit_pending; /* closed while an ADMIT was on its way */
    uint8_t in_ready;
    uint8_t in_outbox;
    uint8_t hashed;
    int32_t slot;
    int32_t attempts;
    int32_t nfailed;
    int32_t cap_failed;
    int32_t *failed;
    uint64_t hashpos;
    int64_t start_us, last_us, deadline_us;
    int heap_idx;
    ls_dir dir[2];
    uint64_t bytes[2];
    ls_addr client;
    ls_addr saddr;
    socklen_t saddrlen;
    ls_list qlink; /* in the listener's queue; a connection object: in the worker's pool */
    ls_list alink; /* in the worker's sessions */
    ls_session *rnext;               /* ready list / dead list / admit list */
    ls_http *http;                   /* mode http, else NULL */
    ls_session *owner;               /* mode http: a server connection object's user */
    int64_t connect_us;              /* when the connect in flight began (metrics.c) */
    struct ls_tls_conn *tls;         /* TLS on the client side (tls.c), else NULL */
    struct ls_tls_conn *stls;        /* TLS on the server side (tls_upstream.c), else NULL */
    uint8_t proxy_version;           /* PROXY header to the picked server: 0, 1, 2 (proxy_proto.c) */
    uint8_t proxy_watch;             /* an untrusted client's first bytes not seen yet */
    ls_addr proxy_dst;               /* the address a PROXY header said the client reached */
    struct ls_sni_conn *sni;         /* SNI passthrough: the ClientHello read (sni.c), else NULL */
    int32_t route;                   /* SNI passthrough: 1 + the pool id chosen; 0: the listener's table */
    int32_t conn_max;                /* mode http, a connection object: the requests it may serve (http_pool.c) */
};

enum { CMD_SHUTDOWN = 1, CMD_BARRIER, CMD_ADMIT, CMD_STOP, CMD_STOP_IDLE };

typedef struct ls_cmd {
    int type;
    ls_listener *L;
    int slot, reason;
    ls_session *s;
    int result;
    int sync;
    volatile int done;
    struct ls_cmd *next;
} ls_cmd;

typedef struct ls_outbox_entry {
    ls_session *s;
    uint32_t off, len;
    int d;
    int32_t res; /* the send's result when the batch went through io_uring */
} ls_outbox_entry;

/* A listening socket a worker stopped watching (limits.c). */
typedef struct ls_paused {
    ls_lsock *ls; /* compared, never followed: it may have been freed */
    ls_listener *L;
    int fd;
} ls_paused;

struct ls_worker {
    ls_engine *e;
    int id;
    pthread_t thread;
    int started;
    int epfd, cmdfd, sparefd;
    pthread_mutex_t cmd_lock;
    ls_cmd *cmd_head, *cmd_tail;
    ls_session **heap;
    int heap_len, heap_cap;
    ls_session *ready, *dead, *admit;
    ls_list sessions; /* the sessions it owns (alink), connection objects aside */
    int64_t nsessions;
    char *buf;
    /* Small messages read in one pass of the loop, sent together at its end. */
    char *obuf;
    uint32_t olen;
    ls_outbox_entry *oents;
    int on;
    ls_uring uring; /* fd -1: no io_uring, the outbox is sent one send() at a time */
    int (*pipes)[2];
    int npipes;
    ls_record *recs;
    int nrecs, caprecs;
    int64_t now_us;
    volatile int stop;
    ls_list http_pool;  /* mode http: idle server connections (qlink) */
    ls_list http_flush; /* mode http: ls_http of sessions with bytes to write this round */
    /* accepting paused at global.maxconn or the descriptor limit (limits.c) */
    int npaused, pause_episode;
    int64_t accept_resume_us, paused_nsessions;
    ls_paused paused[LS_MAX_PAUSED];
    /* global.poll_spin (worker.c poll): how the worker's waits went */
    int64_t last_sleep_us; /* how long its last sleeping epoll_wait() lasted */
    uint64_t sleeps, spins, spin_hits;
    uint64_t spun_us, wasted_us; /* time spinning; of it, spins that found nothing */
    int64_t spin_credit_us;      /* how long it may spin (worker.c spin_window) */
    int credit_spin_us;          /* the spin_us that credit was given for */
    uint64_t rng; /* xorshift64* state, seeded when the worker starts (http_pool.c worker_rand) */
};

struct ls_engine {
    int nworkers;
    int splice_mode, pipe_size, bufsize;
    ls_worker *workers;
    ls_listener *listeners[LS_MAX_LISTENERS];
    int nlisteners;
    pthread_mutex_t ctl_lock; /* one control-plane call at a time */
    pthread_mutex_t sync_lock;
    pthread_cond_t sync_cond;
    pthread_mutex_t rec_lock;
    ls_record *recs;
    int nrecs, caprecs;
    int recfd;
    /* the array take_records gave back (ls_records_done), the next to fill:
     * an array allocated anew for every drain grew by realloc from 256
     * records, copying them, in the worker, every 20 ms */
    ls_record *spare_recs;
    int spare_cap, taken_cap;
    struct ls_tls_keys *tls_keys; /* session-ticket keys of every TLS listener (tls.c) */
    /* limits.c: global.maxconn (0: none), the pure path's sessions, pauses */
    int64_t maxconn, foreign_conns;
    int bound_from_fds; /* maxconn is the descriptor bound (datapath/limits.py) */
    uint64_t accept_pauses, maxconn_pauses;
    int spin_us; /* global.poll_spin in microseconds (0: never spin); read relaxed */
};

#endif
