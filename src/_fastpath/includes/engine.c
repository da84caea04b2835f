/* loadstone native data plane: worker threads with their own epoll loops.
 *
 * Theory of operation
 * -------------------
 * N workers (global.workers), each a pthread with one epoll set, share the
 * listening sockets (registered in every worker with EPOLLEXCLUSIVE, so one
 * connection wakes one worker). A worker owns the sessions it accepted for
 * their whole life; nothing about a session is ever touched by another thread,
 * so the relay needs no lock. What workers share, per listener:
 *
 *   - the server table (candidates, weights, addresses, algorithm, the source
 *     ring), published by the Python control plane as a new immutable block on
 *     every state change and swapped under the listener's mutex;
 *   - the mutable balancing state (round-robin "current" values, leastconn's
 *     rotation, live session counts) and the maxconn admission count and
 *     queue, under the same mutex. A pick takes it once per connect attempt:
 *     an uncontended mutex is ~20 ns, the connect itself ~10 us.
 *
 * Counters (bytes, sessions) are per worker and per listener/server, written
 * only by their worker with plain stores, and summed on demand by the control
 * plane: no atomic operation or shared cache line per packet.
 *
 * Session life (the pure path's, see loadstone/datapath/pure.py):
 *
 *   accepted --(slot free)--> connecting --(connected)--> relaying --> closed
 *       |                       |  ^   \--(failed, retries left: pick again,
 *       +--(maxconn: queued)    |  |       after a back-off when it is the same
 *                               +--+       server)
 *
 * Relaying is edge-triggered: each socket is registered once with
 * EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET and the session keeps "readable" and
 * "writable" flags; a direction moves bytes while its source is readable and
 * its destination writable, and stops (clearing a flag) on EAGAIN. A short
 * read clears "readable" without the extra EAGAIN read, unless the peer's FIN
 * is pending (EPOLLRDHUP), HAProxy's trick. Bytes go through the worker's one
 * buffer (recv then send at once: nothing is kept per idle session); what the
 * destination does not take is copied into a buffer of the session, and the
 * source is not read again before it drained. In splice mode a direction
 * moves bytes with splice(2) through a pipe taken from the worker's pool.
 *
 * A FIN is passed on (shutdown(SHUT_WR)) once the bytes before it are
 * delivered; the session ends when both directions have done so, or on a
 * reset, an idle timeout, a shutdown order from the control plane.
 *
 * Timers: one binary heap of session deadlines per worker. The idle deadline
 * is re-armed lazily (each read or write only stores the time; a fired entry
 * finds the real deadline and re-arms), so relaying costs no heap operation.
 *
 * Control plane -> worker: a command list per worker and an eventfd to wake
 * it; a worker runs its commands after the events of an epoll round, so a
 * synchronous command is also a barrier (no event fetched before it is still
 * being handled). Worker -> control plane: finished sessions and failed
 * connects become records, appended in one batch per epoll round to the
 * engine's queue; an eventfd, watched by the asyncio loop, says there are some.
 */
#define _GNU_SOURCE
#include "engine.h"
#include "blake2b.h"
#include "uring.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

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

#define TAG_CLIENT 0u
#define TAG_SERVER 1u
#define TAG_LSOCK 2u
#define TAG_CMD 3u
#define TAG_MASK 3u

uint64_t ls_blake2b64(const void *data, size_t len) { return ls_blake2b64_impl(data, len); }

/* ---------------------------------------------------------------------------------- */
/* types                                                                              */

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
} ls_chunk;

typedef struct ls_lwstats {
    uint64_t sessions_total, bytes_in, bytes_out, denied;
    char pad[32];
} __attribute__((aligned(64))) ls_lwstats;

typedef struct ls_session ls_session;
typedef struct ls_worker ls_worker;
typedef struct ls_http ls_http; /* mode http: http_engine.c */
typedef struct ls_listener ls_listener;

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
    ls_session *qhead, *qtail;
    ls_lsock *socks; /* control-plane thread only */
    int nslots;
    ls_chunk *chunks[LS_MAX_CHUNKS];
    ls_lwstats *wstats; /* [workers] */
    /* mode http (http_engine.c) */
    ls_hconfig hcfg;
    volatile int http_stopping;
    int64_t http_pooled; /* idle server connections, all workers (atomic) */
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
    ST_HTTP,   /* mode http: driven by http_engine.c */
    ST_POOLED, /* mode http: an idle server connection in a worker's pool */
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
    ls_session *qprev, *qnext;       /* listener queue */
    ls_session *aprev, *anext;       /* worker's sessions */
    ls_session *rnext;               /* ready list / dead list / admit list */
    ls_http *http;                   /* mode http, else NULL */
    ls_session *owner;               /* mode http: a server connection object's user */
};

enum { CMD_SHUTDOWN = 1, CMD_BARRIER, CMD_ADMIT, CMD_STOP, CMD_HTTP_STOP };

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
    ls_session *all;
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
    ls_session *http_pool;  /* mode http: idle server connections */
    ls_session *http_flush; /* mode http: sessions with bytes to write this round */
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
};

/* ---------------------------------------------------------------------------------- */
/* small helpers                                                                      */

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void wake(int fd)
{
    uint64_t one = 1;
    ssize_t r = write(fd, &one, sizeof one);
    (void)r;
}

static void drain_eventfd(int fd)
{
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof v);
    (void)r;
}

static inline ls_slot_shared *slot_shared(ls_listener *L, int slot)
{
    return &L->chunks[slot / LS_SLOTS_PER_CHUNK]->shared[slot % LS_SLOTS_PER_CHUNK];
}

static inline ls_slot_wstats *slot_w(ls_listener *L, int worker, int slot)
{
    ls_chunk *c = L->chunks[slot / LS_SLOTS_PER_CHUNK];
    return &c->w[worker * LS_SLOTS_PER_CHUNK + slot % LS_SLOTS_PER_CHUNK];
}

static void set_keepalive(int fd, const ls_lconfig *cfg)
{
    if (!cfg->keepalive)
        return;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &cfg->ka_idle, sizeof(int));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &cfg->ka_intvl, sizeof(int));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cfg->ka_cnt, sizeof(int));
}

static void format_addr(const ls_addr *a, char *out, size_t size)
{
    char ip[INET6_ADDRSTRLEN];
    if (a->sa.sa_family == AF_INET) {
        inet_ntop(AF_INET, &a->in4.sin_addr, ip, sizeof ip);
        snprintf(out, size, "%s:%u", ip, ntohs(a->in4.sin_port));
    } else if (a->sa.sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &a->in6.sin6_addr, ip, sizeof ip);
        snprintf(out, size, "[%s]:%u", ip, ntohs(a->in6.sin6_port));
    } else {
        snprintf(out, size, "-");
    }
}

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

/* ---------------------------------------------------------------------------------- */
/* records                                                                            */

static ls_record *new_record(ls_worker *W)
{
    if (W->nrecs == W->caprecs) {
        int cap = W->caprecs ? W->caprecs * 2 : 64;
        ls_record *r = realloc(W->recs, (size_t)cap * sizeof *r);
        if (!r)
            return NULL;
        W->recs = r;
        W->caprecs = cap;
    }
    ls_record *r = &W->recs[W->nrecs++];
    memset(r, 0, offsetof(ls_record, client));
    r->client[0] = 0;
    return r;
}

static void flush_records(ls_worker *W)
{
    if (!W->nrecs)
        return;
    ls_engine *e = W->e;
    pthread_mutex_lock(&e->rec_lock);
    int was_empty = e->nrecs == 0;
    if (e->nrecs + W->nrecs > e->caprecs) {
        int cap = e->caprecs ? e->caprecs : 256;
        while (cap < e->nrecs + W->nrecs)
            cap *= 2;
        ls_record *r = realloc(e->recs, (size_t)cap * sizeof *r);
        if (r) {
            e->recs = r;
            e->caprecs = cap;
        }
    }
    if (e->nrecs + W->nrecs <= e->caprecs) {
        memcpy(e->recs + e->nrecs, W->recs, (size_t)W->nrecs * sizeof *W->recs);
        e->nrecs += W->nrecs;
    }
    pthread_mutex_unlock(&e->rec_lock);
    W->nrecs = 0;
    if (was_empty)
        wake(e->recfd);
}

ls_record *ls_take_records(ls_engine *e, int *n)
{
    drain_eventfd(e->recfd);
    pthread_mutex_lock(&e->rec_lock);
    ls_record *r = e->recs;
    *n = e->nrecs;
    e->recs = NULL;
    e->nrecs = e->caprecs = 0;
    pthread_mutex_unlock(&e->rec_lock);
    return r;
}

/* ---------------------------------------------------------------------------------- */
/* timers: a binary min-heap of deadlines                                              */

static void heap_swap(ls_session **h, int a, int b)
{
    ls_session *t = h[a];
    h[a] = h[b];
    h[b] = t;
    h[a]->heap_idx = a;
    h[b]->heap_idx = b;
}

static void heap_up(ls_worker *W, int i)
{
    ls_session **h = W->heap;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (h[p]->deadline_us <= h[i]->deadline_us)
            break;
        heap_swap(h, p, i);
        i = p;
    }
}

static void heap_down(ls_worker *W, int i)
{
    ls_session **h = W->heap;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < W->heap_len && h[l]->deadline_us < h[m]->deadline_us)
            m = l;
        if (r < W->heap_len && h[r]->deadline_us < h[m]->deadline_us)
            m = r;
        if (m == i)
            break;
        heap_swap(h, m, i);
        i = m;
    }
}

static void timer_set(ls_worker *W, ls_session *s, int64_t deadline)
{
    s->deadline_us = deadline;
    if (s->heap_idx >= 0) {
        heap_up(W, s->heap_idx);
        heap_down(W, s->heap_idx);
        return;
    }
    if (W->heap_len == W->heap_cap) {
        int cap = W->heap_cap ? W->heap_cap * 2 : 256;
        ls_session **h = realloc(W->heap, (size_t)cap * sizeof *h);
        if (!h)
            abort(); /* out of memory for a pointer array: nothing sane left to do */
        W->heap = h;
        W->heap_cap = cap;
    }
    s->heap_idx = W->heap_len;
    W->heap[W->heap_len++] = s;
    heap_up(W, s->heap_idx);
}

static void timer_del(ls_worker *W, ls_session *s)
{
    int i = s->heap_idx;
    if (i < 0)
        return;
    s->heap_idx = -1;
    W->heap_len--;
    if (i == W->heap_len)
        return;
    W->heap[i] = W->heap[W->heap_len];
    W->heap[i]->heap_idx = i;
    heap_up(W, i);
    heap_down(W, W->heap[i]->heap_idx);
}

/* ---------------------------------------------------------------------------------- */
/* pipes                                                                              */

static int pipe_get(ls_worker *W, ls_dir *D)
{
    int p[2];
    if (W->npipes) {
        W->npipes--;
        p[0] = W->pipes[W->npipes][0];
        p[1] = W->pipes[W->npipes][1];
    } else {
        if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0)
            return -1;
        if (W->e->pipe_size > 0)
            fcntl(p[1], F_SETPIPE_SZ, W->e->pipe_size);
    }
    D->pr = p[0];
    D->pw = p[1];
    return 0;
}

static void pipe_put(ls_worker *W, ls_dir *D)
{
    if (D->pr < 0)
        return;
    if (D->plen == 0 && W->npipes < LS_PIPE_POOL) {
        W->pipes[W->npipes][0] = D->pr;
        W->pipes[W->npipes][1] = D->pw;
        W->npipes++;
    } else {
        close(D->pr);
        close(D->pw);
    }
    D->pr = D->pw = -1;
    D->plen = 0;
}

/* An idle worker holds no pipe: descriptors go back to their baseline. */
static void pipes_trim(ls_worker *W)
{
    while (W->npipes) {
        W->npipes--;
        close(W->pipes[W->npipes][0]);
        close(W->pipes[W->npipes][1]);
    }
}

/* ---------------------------------------------------------------------------------- */
/* commands                                                                           */

static void post(ls_worker *W, ls_cmd *c)
{
    c->next = NULL;
    pthread_mutex_lock(&W->cmd_lock);
    if (W->cmd_tail)
        W->cmd_tail->next = c;
    else
        W->cmd_head = c;
    W->cmd_tail = c;
    pthread_mutex_unlock(&W->cmd_lock);
    wake(W->cmdfd);
}

/* Run a command on every worker and wait for all of them; returns the sum of
 * their results. */
static int post_all_sync(ls_engine *e, int type, ls_listener *L, int slot, int reason)
{
    ls_cmd *cmds = calloc((size_t)e->nworkers, sizeof *cmds);
    if (!cmds)
        return -ENOMEM;
    for (int i = 0; i < e->nworkers; i++) {
        cmds[i].type = type;
        cmds[i].L = L;
        cmds[i].slot = slot;
        cmds[i].reason = reason;
        cmds[i].sync = 1;
        post(&e->workers[i], &cmds[i]);
    }
    int total = 0;
    pthread_mutex_lock(&e->sync_lock);
    for (int i = 0; i < e->nworkers; i++) {
        while (!cmds[i].done)
            pthread_cond_wait(&e->sync_cond, &e->sync_lock);
        total += cmds[i].result;
    }
    pthread_mutex_unlock(&e->sync_lock);
    free(cmds);
    return total;
}

/* ---------------------------------------------------------------------------------- */
/* balancing (under the listener lock)                                                */

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

/* ---------------------------------------------------------------------------------- */
/* sessions                                                                           */

static void pump(ls_worker *W, ls_session *s, int d);
static void on_session(ls_worker *W, ls_session *s, int side, uint32_t ev);
static void sess_connect(ls_worker *W, ls_session *s);
static void finish(ls_worker *W, ls_session *s, int reason, int arg);

/* mode http hooks (http_engine.c, included below) */
static int http_accepted(ls_session *s);
static int http_in_exchange(const ls_session *s);
static void http_admitted(ls_worker *W, ls_session *s);
static int http_take_pooled(ls_worker *W, ls_session *s);
static void http_connected(ls_worker *W, ls_session *s);
static void http_answer(ls_worker *W, ls_session *s, int status, int end, int arg);
static void http_event(ls_worker *W, ls_session *s, int side, uint32_t ev);
static void http_progress(ls_worker *W, ls_session *s);
static void http_timeout(ls_worker *W, ls_session *s);
static void http_finish(ls_worker *W, ls_session *s, int reason, int arg);
static void http_free(ls_http *h);
static void pool_drop(ls_worker *W, ls_session *p);
static void conn_event(ls_worker *W, ls_session *p, uint32_t ev);
static void http_pool_shutdown(ls_worker *W, ls_listener *L, int slot);
static int http_stop_idle(ls_worker *W, ls_listener *L);
static void http_flush_round(ls_worker *W);

static void ready_push(ls_worker *W, ls_session *s)
{
    if (s->in_ready)
        return;
    s->in_ready = 1;
    s->rnext = W->ready;
    W->ready = s;
}

/* Take sessions off the listener queue while slots are free (lock held);
 * returns them as a list linked through rnext. */
static ls_session *dequeue_admissible(ls_listener *L)
{
    ls_session *out = NULL, **tail = &out;
    while (L->qhead && L->active < L->cfg.maxconn) {
        ls_session *q = L->qhead;
        L->qhead = q->qnext;
        if (L->qhead)
            L->qhead->qprev = NULL;
        else
            L->qtail = NULL;
        q->qprev = q->qnext = NULL;
        L->nqueued--;
        L->active++;
        __atomic_store_n(&q->state, ST_ADMITTING, __ATOMIC_RELAXED);
        q->rnext = NULL;
        *tail = q;
        tail = &q->rnext;
    }
    return out;
}

/* Hand admitted sessions to their workers (W: the calling worker or NULL). */
static void dispatch_admitted(ls_worker *W, ls_session *list)
{
    while (list) {
        ls_session *q = list;
        list = q->rnext;
        q->rnext = NULL;
        if (q->W == W) {
            q->rnext = W->admit;
            W->admit = q;
        } else {
            ls_cmd *c = calloc(1, sizeof *c);
            if (!c)
                abort();
            c->type = CMD_ADMIT;
            c->s = q;
            post(q->W, c);
        }
    }
}

static void queue_remove(ls_listener *L, ls_session *s)
{
    if (s->qprev)
        s->qprev->qnext = s->qnext;
    else
        L->qhead = s->qnext;
    if (s->qnext)
        s->qnext->qprev = s->qprev;
    else
        L->qtail = s->qprev;
    s->qprev = s->qnext = NULL;
    L->nqueued--;
}

static void dir_release(ls_worker *W, ls_dir *D)
{
    free(D->buf);
    D->buf = NULL;
    D->len = D->off = 0;
    pipe_put(W, D);
}

static void finish(ls_worker *W, ls_session *s, int reason, int arg)
{
    if (s->state == ST_CLOSED)
        return;
    ls_listener *L = s->L;
    int state = __atomic_load_n(&s->state, __ATOMIC_RELAXED);
    int admitted = 1;
    timer_del(W, s);
    if (state == ST_QUEUED || state == ST_ADMITTING) {
        /* another worker may take it off the queue: decide under the lock */
        pthread_mutex_lock(&L->lock);
        state = s->state;
        s->state = ST_CLOSED;
        if (state == ST_QUEUED) {
            queue_remove(L, s);
            admitted = 0;
        } else {
            /* counted by whoever took it off the queue; the ADMIT order (a
             * command or the worker's admit list) is still on its way and
             * frees the session when it arrives */
            s->admit_pending = 1;
        }
        pthread_mutex_unlock(&L->lock);
    } else {
        s->state = ST_CLOSED;
        admitted = state != ST_EXPIRED;
    }
    if (admitted) {
        pthread_mutex_lock(&L->lock);
        L->active--;
        ls_session *next = dequeue_admissible(L);
        pthread_mutex_unlock(&L->lock);
        dispatch_admitted(W, next);
    }
    if (s->http)
        http_finish(W, s, reason, arg); /* before the descriptors close */
    for (int i = 0; i < 2; i++) {
        if (s->fd[i] >= 0) {
            close(s->fd[i]);
            s->fd[i] = -1;
        }
        dir_release(W, &s->dir[i]);
    }
    if (s->http) {
        /* mode http: one record per request, written by http_engine.c */
    } else if (s->slot >= 0) {
        __atomic_fetch_sub(&slot_shared(L, s->slot)->live, 1, __ATOMIC_RELAXED);
    } else {
        L->wstats[W->id].denied++;
    }
    int quiet = L->cfg.log_mode == LS_LOG_NONE ||
                (L->cfg.log_mode == LS_LOG_ERRORS &&
                 (reason == LS_END_CLIENT_CLOSE || reason == LS_END_SERVER_CLOSE));
    ls_record *r = s->http || quiet ? NULL : new_record(W);
    if (r) {
        r->type = LS_REC_SESSION;
        r->reason = (uint8_t)reason;
        r->listener = L->id;
        r->slot = s->slot;
        r->arg = arg;
        r->bytes_in = s->bytes[0];
        r->bytes_out = s->bytes[1];
        r->duration = (double)(W->now_us - s->start_us) / 1e6;
        format_addr(&s->client, r->client, sizeof r->client);
    }
    /* unlink from the worker's list; freed at the end of the round */
    if (s->aprev)
        s->aprev->anext = s->anext;
    else
        W->all = s->anext;
    if (s->anext)
        s->anext->aprev = s->aprev;
    s->aprev = s->anext = NULL;
    W->nsessions--;
    if (!s->admit_pending && !s->in_ready) {
        s->rnext = W->dead;
        W->dead = s;
    }
    /* in_ready: freed when the ready list is walked; admit_pending: by the ADMIT */
}

static void sess_free(ls_session *s)
{
    http_free(s->http);
    free(s->failed);
    free(s);
}

static void connect_failed(ls_worker *W, ls_session *s, int err)
{
    ls_listener *L = s->L;
    int slot = s->slot;
    if (s->fd[1] >= 0) {
        close(s->fd[1]);
        s->fd[1] = -1;
    }
    s->wr[1] = s->rd[1] = s->rdhup[1] = 0;
    __atomic_fetch_sub(&slot_shared(L, slot)->live, 1, __ATOMIC_RELAXED);
    s->slot = -1;
    ls_record *r = new_record(W);
    if (r) {
        r->type = LS_REC_CONNECT_FAILED;
        r->listener = L->id;
        r->slot = slot;
        r->arg = err;
    }
    if (s->nfailed == s->cap_failed) {
        int cap = s->cap_failed ? s->cap_failed * 2 : 4;
        int32_t *f = realloc(s->failed, (size_t)cap * sizeof *f);
        if (!f) {
            finish(W, s, LS_END_CONNECT_FAILED, err);
            return;
        }
        s->failed = f;
        s->cap_failed = cap;
    }
    s->failed[s->nfailed++] = slot;
    if (s->attempts > L->cfg.retries) {
        if (s->http)
            http_answer(W, s, 503, LS_HEND_CONNECT_FAILED, err);
        else
            finish(W, s, LS_END_CONNECT_FAILED, err);
        return;
    }
    sess_connect(W, s);
}

/* Both directions of a relaying session, `first` first. */
static void pump_both(ls_worker *W, ls_session *s, int first)
{
    pump(W, s, first);
    if (s->state == ST_RELAY)
        pump(W, s, 1 - first);
}

/* Relay bytes both ways from now on (a connected tcp session, an HTTP tunnel),
 * ended after `idle_ms` without traffic. */
static void relay_start(ls_worker *W, ls_session *s, int64_t idle_ms)
{
    s->state = ST_RELAY;
    s->last_us = W->now_us;
    timer_set(W, s, W->now_us + idle_ms * 1000);
    pump_both(W, s, 0);
}

static void connected(ls_worker *W, ls_session *s)
{
    if (s->http) {
        http_connected(W, s);
        return;
    }
    relay_start(W, s, s->L->cfg.idle_ms);
}

static void do_connect(ls_worker *W, ls_session *s)
{
    ls_listener *L = s->L;
    int fd = socket(s->saddr.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        connect_failed(W, s, errno);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    set_keepalive(fd, &L->cfg);
    s->fd[1] = fd;
    s->rd[1] = s->wr[1] = s->rdhup[1] = 0;
    struct epoll_event ev;
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u64 = (uint64_t)(uintptr_t)s | TAG_SERVER;
    int r = connect(fd, &s->saddr.sa, s->saddrlen);
    if (r < 0 && errno != EINPROGRESS) {
        connect_failed(W, s, errno);
        return;
    }
    if (epoll_ctl(W->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        connect_failed(W, s, errno);
        return;
    }
    if (r == 0) {
        s->wr[1] = 1;
        connected(W, s);
        return;
    }
    s->state = ST_CONNECTING;
    timer_set(W, s, W->now_us + L->cfg.connect_ms * 1000);
}

/* Pick a server and connect to it (an admitted session, or a retry). */
static void sess_connect(ls_worker *W, ls_session *s)
{
    ls_listener *L = s->L;
    if (s->http && !http_in_exchange(s)) {
        http_admitted(W, s); /* admitted: a server is picked per request */
        return;
    }
    if (!s->hashed && L->alg == LS_ALG_SOURCE) {
        s->hashpos = client_hash(&s->client);
        s->hashed = 1;
    }
    pthread_mutex_lock(&L->lock);
    ls_table *T = L->table;
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
        __atomic_fetch_add(&slot_shared(L, slot)->live, 1, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&L->lock);
    if (slot < 0) {
        if (s->http)
            http_answer(W, s, 503, LS_HEND_NO_SERVER, 0);
        else
            finish(W, s, LS_END_NO_SERVER, 0);
        return;
    }
    s->slot = slot;
    s->attempts++;
    slot_w(L, W->id, slot)->sessions_total++;
    if (is_failed(s, slot)) {
        /* The same server again (no other left, or no redispatch): back off so a
         * check can mark a dead server down and the balancer choose another. */
        int64_t delay = 50000;
        for (int k = 0; k < s->nfailed && delay < L->cfg.connect_ms * 1000; k++)
            delay *= 2;
        if (delay > L->cfg.connect_ms * 1000)
            delay = L->cfg.connect_ms * 1000;
        s->state = ST_DELAY;
        timer_set(W, s, W->now_us + delay);
        return;
    }
    if (s->http && http_take_pooled(W, s))
        return;
    do_connect(W, s);
}

static void fail_side(ls_worker *W, ls_session *s, int side)
{
    finish(W, s, side == 0 ? LS_END_CLIENT_RESET : LS_END_SERVER_RESET, 0);
}

static inline void count(ls_worker *W, ls_session *s, int d, ssize_t n)
{
    s->bytes[d] += (uint64_t)n;
    ls_lwstats *ls = &s->L->wstats[W->id];
    if (d == 0)
        ls->bytes_in += (uint64_t)n;
    else
        ls->bytes_out += (uint64_t)n;
    if (s->slot >= 0) {
        ls_slot_wstats *ss = slot_w(s->L, W->id, s->slot);
        if (d == 0)
            ss->bytes_in += (uint64_t)n;
        else
            ss->bytes_out += (uint64_t)n;
    }
}

/* Move bytes in direction d (0: client -> server, 1: server -> client) for as
 * long as the source is readable and the destination writable. May end the
 * session (state ST_CLOSED on return). */
/* The part of a message the receiver did not take: kept in the direction's
 * own buffer until it is writable again (the worker's buffers are reused at
 * once). -1 when out of memory. */
static int keep_unsent(ls_dir *D, const char *data, size_t len)
{
    D->buf = malloc(len);
    if (!D->buf)
        return -1;
    memcpy(D->buf, data, len);
    D->off = 0;
    D->len = (uint32_t)len;
    return 0;
}

/* Send to side `dst` of a relaying session. Returns the bytes the socket took
 * (0 when it is full: wr[dst] is cleared and its EPOLLOUT edge brings the
 * rest), or -1 when the send failed and the session was ended. */
static ssize_t relay_send(ls_worker *W, ls_session *s, int dst, const char *data, size_t len,
                          int flags)
{
    for (;;) {
        ssize_t n = send(s->fd[dst], data, len, MSG_NOSIGNAL | MSG_DONTWAIT | flags);
        if (n >= 0) {
            s->last_us = W->now_us;
            return n;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            s->wr[dst] = 0;
            return 0;
        }
        fail_side(W, s, dst);
        return -1;
    }
}

static void pump(ls_worker *W, ls_session *s, int d)
{
    ls_dir *D = &s->dir[d];
    int src = d, dst = 1 - d;
    int rounds = 0;
    for (;;) {
        int sfd = s->fd[src], dfd = s->fd[dst];
        if (D->held)
            return; /* flush_outbox sends those bytes first, then pumps again */
        if (D->len) {
            if (!s->wr[dst])
                return;
            ssize_t n = relay_send(W, s, dst, D->buf + D->off, D->len, 0);
            if (n <= 0)
                return; /* full (wait for EPOLLOUT) or ended */
            D->off += (uint32_t)n;
            D->len -= (uint32_t)n;
            if (D->len)
                continue;
            free(D->buf);
            D->buf = NULL;
            D->off = 0;
        }
        if (D->plen) {
            if (!s->wr[dst])
                return;
            ssize_t n = splice(D->pr, NULL, dfd, NULL, D->plen, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    s->wr[dst] = 0;
                    return;
                }
                if (errno == EINTR)
                    continue;
                fail_side(W, s, dst);
                return;
            }
            s->last_us = W->now_us;
            D->plen -= (uint32_t)n;
            if (D->plen)
                continue;
        }
        if (D->eof) {
            if (!D->shut) {
                D->shut = 1;
                pipe_put(W, D);
                /* The last direction to end needs no shutdown(): the close()
                 * just below sends that FIN (nothing is left unread). */
                if (!s->dir[1 - d].shut)
                    shutdown(dfd, SHUT_WR);
            }
            if (s->dir[1 - d].shut)
                finish(W, s, s->first_eof == 2 ? LS_END_SERVER_CLOSE : LS_END_CLIENT_CLOSE, 0);
            return;
        }
        if (!s->rd[src])
            return;
        if (++rounds > LS_ROUNDS) {
            ready_push(W, s); /* let the other sessions of this round go first */
            return;
        }
        ssize_t n;
        if (D->splice) {
            if (D->pr < 0 && pipe_get(W, D) < 0) {
                D->splice = 0; /* out of descriptors: copy instead */
                continue;
            }
            n = splice(sfd, NULL, D->pw, NULL, (size_t)W->e->pipe_size, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n > 0) {
                D->plen = (uint32_t)n;
                count(W, s, d, n);
                s->last_us = W->now_us;
                continue;
            }
            if (n < 0 && (errno == EINVAL || errno == ENOSYS)) {
                pipe_put(W, D); /* a socket splice cannot read: copy instead */
                D->splice = 0;
                continue;
            }
        } else {
            n = recv(sfd, W->buf, (size_t)W->e->bufsize, 0);
            if (n > 0) {
                count(W, s, d, n);
                s->last_us = W->now_us;
                if (n == W->e->bufsize) {
                    if (W->e->splice_mode == LS_SPLICE_AUTO)
                        D->splice = 1; /* a bulk transfer: zero-copy from now on */
                } else if (!s->rdhup[src]) {
                    s->rd[src] = 0; /* drained; the next byte brings a new edge */
                } else {
                    /* Drained, and the peer's FIN had arrived before this read
                     * (EPOLLRDHUP): nothing but the end is left, so take it now
                     * rather than with one more recv() returning 0. */
                    D->eof = 1;
                    s->rd[src] = 0;
                    if (!s->first_eof)
                        s->first_eof = (uint8_t)(src + 1);
                }
                ssize_t m = 0;
                if (s->wr[dst] && !D->eof && n < W->e->bufsize &&
                    W->olen + (uint32_t)n <= LS_OUTBOX_BYTES && W->on < LS_OUTBOX_ENTRIES) {
                    /* A small message: held for the end of this pass of the loop
                     * (flush_outbox). Sent now, it would wake its receiver (nginx,
                     * the client), which on two busy cores often preempts this
                     * thread mid-pass; sent with the pass's other messages, the
                     * wake-ups come when the worker is about to sleep anyway. The
                     * copy is one memcpy of a small message; a read that fills
                     * the buffer (bulk) is sent at once as before. Measured in
                     * benchmarks/README.md: ~6% more keep-alive req/s, ~4% less
                     * CPU per request (the pure HTTP path's and the native HTTP
                     * path's round-end writes are the same idea). */
                    ls_outbox_entry *o = &W->oents[W->on++];
                    o->s = s;
                    o->d = d;
                    o->off = W->olen;
                    o->len = (uint32_t)n;
                    memcpy(W->obuf + W->olen, W->buf, (size_t)n);
                    W->olen += (uint32_t)n;
                    D->held = 1;
                    s->in_outbox = 1;
                    return;
                }
                if (s->wr[dst]) {
                    /* Last bytes before a FIN: MSG_MORE holds them back until
                     * the shutdown()/close() just after, so that data and FIN
                     * leave in one segment (one wake-up of the peer, not two). */
                    m = relay_send(W, s, dst, W->buf, (size_t)n, D->eof ? MSG_MORE : 0);
                    if (m < 0)
                        return;
                }
                if (m < n && keep_unsent(D, W->buf + m, (size_t)(n - m)) < 0) {
                    fail_side(W, s, dst);
                    return;
                }
                continue;
            }
        }
        if (n == 0) {
            D->eof = 1;
            s->rd[src] = 0;
            if (!s->first_eof)
                s->first_eof = (uint8_t)(src + 1);
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            s->rd[src] = 0;
            if (D->splice && D->plen == 0)
                pipe_put(W, D);
            return;
        }
        if (errno == EINTR)
            continue;
        fail_side(W, s, src);
        return;
    }
}

/* Send what pump() held back during this pass, in the order it was read. A
 * session closed meanwhile keeps its memory until the dead list is freed, which
 * comes after the last flush of the pass (finish() and the ready list leave a
 * session with in_outbox set to the dead list). */
static void outbox_sent(void *ctx, uint64_t tag, int32_t res)
{
    ((ls_outbox_entry *)ctx)[tag].res = res;
}

/* Send entries [from, to) of the outbox with one io_uring_enter(); each entry's
 * res then holds its send's result. */
static void outbox_send_batch(ls_worker *W, int from, int to)
{
    for (int i = from; i < to; i++) {
        ls_outbox_entry *o = &W->oents[i];
        o->res = LS_URING_UNKNOWN;
        if (o->s->state != ST_RELAY) {
            o->res = LS_URING_NOT_SENT; /* skipped below anyway */
            continue;
        }
        ls_uring_send(&W->uring, o->s->fd[1 - o->d], W->obuf + o->off, o->len, MSG_NOSIGNAL,
                      (uint64_t)i);
    }
    if (ls_uring_run(&W->uring, outbox_sent, W->oents))
        ls_uring_free(&W->uring); /* a broken ring: one send() at a time from now on */
}

/* The result of a batched send, as relay_send() would have returned it. */
static ssize_t batched_result(ls_worker *W, ls_session *s, int dst, const char *data, size_t len,
                              int32_t res)
{
    if (res >= 0) {
        s->last_us = W->now_us;
        return res;
    }
    if (res == LS_URING_NOT_SENT || res == -EINTR)
        return relay_send(W, s, dst, data, len, 0);
    if (res == -EAGAIN || res == -EWOULDBLOCK) {
        s->wr[dst] = 0;
        return 0;
    }
    fail_side(W, s, dst); /* an error, or a result lost with a broken ring */
    return -1;
}

static void flush_outbox(ls_worker *W)
{
    int batch_end = 0;
    for (int i = 0; i < W->on; i++) { /* pump() below may append: W->on grows */
        if (i >= batch_end && W->uring.fd >= 0 && W->on - i >= 2) {
            batch_end = W->on;
            outbox_send_batch(W, i, batch_end);
        }
        ls_outbox_entry *o = &W->oents[i];
        ls_session *s = o->s;
        ls_dir *D = &s->dir[o->d];
        int dst = 1 - o->d;
        D->held = 0;
        s->in_outbox = 0;
        if (s->state != ST_RELAY)
            continue;
        const char *data = W->obuf + o->off;
        ssize_t m = i < batch_end ? batched_result(W, s, dst, data, o->len, o->res)
                                  : relay_send(W, s, dst, data, o->len, 0);
        if (m < 0)
            continue;
        if ((uint32_t)m < o->len && keep_unsent(D, data + m, o->len - (size_t)m) < 0) {
            fail_side(W, s, dst);
            continue;
        }
        pump(W, s, o->d); /* what arrived meanwhile, or the end of the stream */
    }
    W->on = 0;
    W->olen = 0;
}

static int sock_error(int fd)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return errno;
    return err;
}

static void on_session(ls_worker *W, ls_session *s, int side, uint32_t ev)
{
    if (s->state == ST_CLOSED)
        return;
    if (s->state == ST_POOLED) {
        conn_event(W, s, ev); /* mode http: a server connection object */
        return;
    }
    if (side == 1 && s->state == ST_CONNECTING) {
        if (ev & (EPOLLERR | EPOLLHUP)) {
            int err = sock_error(s->fd[1]);
            timer_del(W, s);
            connect_failed(W, s, err ? err : ECONNREFUSED);
            return;
        }
        if (ev & EPOLLOUT) {
            /* writable without an error: connected (no SO_ERROR to ask) */
            s->wr[1] = 1;
            if (ev & EPOLLIN)
                s->rd[1] = 1;
            if (ev & EPOLLRDHUP)
                s->rdhup[1] = s->rd[1] = 1;
            connected(W, s);
        }
        return;
    }
    if (s->http && s->state != ST_RELAY && s->state != ST_QUEUED && s->state != ST_ADMITTING) {
        http_event(W, s, side, ev);
        return;
    }
    if (ev & EPOLLERR) {
        /* A reset. The bytes the peer sent before it are still readable: relay
         * them (or, before the server is reached, count them, as the pure path
         * does with what it buffered), then end the session. */
        if (s->state == ST_RELAY) {
            if (s->in_outbox)
                flush_outbox(W); /* what was read before the reset goes first */
            s->rd[side] = s->wr[side] = s->rdhup[side] = 1;
            pump_both(W, s, side);
        } else if (side == 0) {
            ssize_t n;
            while ((n = recv(s->fd[0], W->buf, (size_t)W->e->bufsize, 0)) > 0)
                count(W, s, 0, n);
        }
        if (s->state != ST_CLOSED)
            fail_side(W, s, side);
        return;
    }
    if (ev & EPOLLIN)
        s->rd[side] = 1;
    if (ev & (EPOLLRDHUP | EPOLLHUP))
        s->rd[side] = s->rdhup[side] = 1;
    if (ev & (EPOLLOUT | EPOLLHUP))
        s->wr[side] = 1;
    if (s->state != ST_RELAY) {
        /* queued or connecting: the client's bytes wait in the kernel; a client
         * that is gone for good (both directions shut) ends it now */
        if (side == 0 && (ev & EPOLLHUP))
            finish(W, s, LS_END_CLIENT_RESET, 0);
        return;
    }
    pump_both(W, s, side);
}

static void admit(ls_worker *W, ls_session *s)
{
    ls_listener *L = s->L;
    pthread_mutex_lock(&L->lock);
    if (L->active < L->cfg.maxconn && !L->qhead) {
        L->active++;
        pthread_mutex_unlock(&L->lock);
        sess_connect(W, s);
        return;
    }
    /* Over maxconn: wait for a slot, as HAProxy's queue, bounded by timeouts.queue. */
    s->state = ST_QUEUED;
    s->qprev = L->qtail;
    s->qnext = NULL;
    if (L->qtail)
        L->qtail->qnext = s;
    else
        L->qhead = s;
    L->qtail = s;
    L->nqueued++;
    int64_t queue_ms = L->cfg.queue_ms;
    pthread_mutex_unlock(&L->lock);
    timer_set(W, s, W->now_us + queue_ms * 1000);
}

static void on_accept(ls_worker *W, ls_lsock *ls)
{
    ls_listener *L = ls->L;
    for (int k = 0; k < LS_ACCEPT_BATCH; k++) {
        if (ls->closed)
            return;
        ls_addr addr;
        socklen_t alen = sizeof addr;
        int fd = accept4(ls->fd, &addr.sa, &alen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if ((errno == EMFILE || errno == ENFILE) && W->sparefd >= 0) {
                /* Out of descriptors: refuse this one rather than spin on it. */
                close(W->sparefd);
                fd = accept(ls->fd, NULL, NULL);
                if (fd >= 0)
                    close(fd);
                W->sparefd = open("/dev/null", O_RDONLY | O_CLOEXEC);
            }
            return;
        }
        ls_session *s = calloc(1, sizeof *s);
        if (!s) {
            close(fd);
            continue;
        }
        s->L = L;
        s->W = W;
        s->fd[0] = fd;
        s->fd[1] = -1;
        s->slot = -1;
        s->heap_idx = -1;
        s->dir[0].pr = s->dir[0].pw = s->dir[1].pr = s->dir[1].pw = -1;
        s->dir[0].splice = s->dir[1].splice = W->e->splice_mode == LS_SPLICE_ON;
        s->start_us = W->now_us;
        memcpy(&s->client, &addr, alen < sizeof addr ? alen : sizeof addr);
        s->anext = W->all;
        if (W->all)
            W->all->aprev = s;
        W->all = s;
        W->nsessions++;
        L->wstats[W->id].sessions_total++;
        /* TCP_NODELAY comes from the listening socket (Linux copies it) */
        set_keepalive(fd, &L->cfg);
        if (L->hcfg.enabled && http_accepted(s) < 0) {
            close(fd);
            free(s);
            continue;
        }
        struct epoll_event ev;
        ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
        ev.data.u64 = (uint64_t)(uintptr_t)s | TAG_CLIENT;
        s->state = ST_PICKING; /* not counted yet: admit() decides */
        if (epoll_ctl(W->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            /* counted as admitted here, then released by finish() */
            pthread_mutex_lock(&L->lock);
            L->active++;
            pthread_mutex_unlock(&L->lock);
            finish(W, s, LS_END_CLIENT_RESET, 0);
            continue;
        }
        admit(W, s);
    }
}

#include "http_engine.c"

/* ---------------------------------------------------------------------------------- */
/* the worker loop                                                                    */

static void flush_records(ls_worker *W);

static void run_commands(ls_worker *W)
{
    pthread_mutex_lock(&W->cmd_lock);
    ls_cmd *c = W->cmd_head;
    W->cmd_head = W->cmd_tail = NULL;
    pthread_mutex_unlock(&W->cmd_lock);
    ls_cmd *acks = NULL;
    while (c) {
        ls_cmd *next = c->next;
        c->result = 0;
        switch (c->type) {
        case CMD_SHUTDOWN: {
            ls_session *s = W->all;
            while (s) {
                ls_session *n = s->anext;
                if (s->L == c->L && (c->slot < 0 || s->slot == c->slot)) {
                    finish(W, s, LS_END_SHUTDOWN, c->reason);
                    c->result++;
                }
                s = n;
            }
            http_pool_shutdown(W, c->L, c->slot);
            break;
        }
        case CMD_HTTP_STOP:
            c->result = http_stop_idle(W, c->L);
            break;
        case CMD_ADMIT: {
            ls_session *s = c->s;
            if (s->admit_pending) {
                sess_free(s); /* closed while the order was on its way */
            } else if (s->state == ST_ADMITTING) {
                timer_del(W, s);
                s->state = ST_PICKING;
                sess_connect(W, s);
            }
            free(c);
            c = NULL;
            break;
        }
        case CMD_STOP:
            W->stop = 1;
            break;
        default: /* CMD_BARRIER */
            break;
        }
        if (c && c->sync) {
            c->next = acks;
            acks = c;
        }
        c = next;
    }
    if (!acks)
        return;
    /* The records of what a command did reach the queue before its caller
     * wakes, so that it can read them at once (the session log on stop). */
    flush_records(W);
    pthread_mutex_lock(&W->e->sync_lock);
    for (c = acks; c; c = c->next)
        c->done = 1;
    pthread_cond_broadcast(&W->e->sync_cond);
    pthread_mutex_unlock(&W->e->sync_lock);
}

static void run_timers(ls_worker *W)
{
    while (W->heap_len && W->heap[0]->deadline_us <= W->now_us) {
        ls_session *s = W->heap[0];
        ls_listener *L = s->L;
        switch (s->state) {
        case ST_QUEUED:
        case ST_ADMITTING:
            timer_del(W, s);
            pthread_mutex_lock(&L->lock);
            if (s->state == ST_QUEUED) {
                queue_remove(L, s);
                s->state = ST_EXPIRED;
            }
            pthread_mutex_unlock(&L->lock);
            if (s->state == ST_EXPIRED)
                finish(W, s, LS_END_QUEUE_TIMEOUT, 0);
            break;
        case ST_DELAY:
            timer_del(W, s);
            do_connect(W, s);
            break;
        case ST_CONNECTING:
            timer_del(W, s);
            connect_failed(W, s, -1);
            break;
        case ST_HTTP:
            http_timeout(W, s);
            break;
        case ST_POOLED:
            timer_del(W, s);
            pool_drop(W, s); /* idle for http_keep_alive */
            break;
        case ST_RELAY: {
            /* an HTTP session relays only after an upgrade: timeouts.tunnel */
            int64_t idle_ms = s->http ? L->hcfg.tunnel_ms : L->cfg.idle_ms;
            int64_t real = s->last_us + idle_ms * 1000;
            if (real > W->now_us)
                timer_set(W, s, real);
            else
                finish(W, s, L->cfg.idle_reason, 0);
            break;
        }
        default:
            timer_del(W, s);
            break;
        }
    }
}

static void *worker_main(void *arg)
{
    ls_worker *W = arg;
    char name[16];
    snprintf(name, sizeof name, "ls-worker-%d", W->id);
    pthread_setname_np(pthread_self(), name);
    struct epoll_event events[LS_EVENTS];
    int busy = 0; /* the last round had events */
    while (!W->stop) {
        int timeout = -1;
        if (W->ready || W->admit || W->http_flush) {
            timeout = 0;
        } else if (W->heap_len) {
            int64_t wait = W->heap[0]->deadline_us - now_us();
            timeout = wait <= 0 ? 0 : (int)((wait + 999) / 1000);
        }
        /* After a round that had events, look once more without sleeping: under
         * load the peers answer while the round runs, and taking their events now
         * saves the worker a sleep and a wake-up (a context switch each way, the
         * dearest part of a small request on a busy machine). Sleep only after a
         * look that found nothing. */
        int n = 0;
        if (timeout != 0 && busy)
            n = epoll_wait(W->epfd, events, LS_EVENTS, 0);
        if (n == 0)
            n = epoll_wait(W->epfd, events, LS_EVENTS, timeout);
        busy = n > 0;
        W->now_us = now_us();
        for (int i = 0; i < n; i++) {
            uint64_t data = events[i].data.u64;
            unsigned tag = (unsigned)(data & TAG_MASK);
            void *p = (void *)(uintptr_t)(data & ~(uint64_t)TAG_MASK);
            switch (tag) {
            case TAG_CLIENT:
                on_session(W, p, 0, events[i].events);
                break;
            case TAG_SERVER:
                on_session(W, p, 1, events[i].events);
                break;
            case TAG_LSOCK:
                on_accept(W, p);
                break;
            default:
                drain_eventfd(W->cmdfd);
                break;
            }
        }
        http_flush_round(W); /* mode http: the round's writes, together */
        flush_outbox(W);      /* mode tcp: likewise */
        /* sessions that used up their share of the round, then new admissions */
        ls_session *ready = W->ready;
        W->ready = NULL;
        while (ready) {
            ls_session *s = ready;
            ready = s->rnext;
            s->in_ready = 0;
            if (s->state == ST_CLOSED) {
                if (s->in_outbox) {
                    s->rnext = W->dead; /* flush_outbox still looks at it */
                    W->dead = s;
                } else if (!s->admit_pending) {
                    sess_free(s);
                }
                continue;
            }
            if (s->http && s->state != ST_RELAY) {
                http_progress(W, s);
                continue;
            }
            pump_both(W, s, 0);
        }
        while (W->admit) {
            ls_session *s = W->admit;
            W->admit = s->rnext;
            s->rnext = NULL;
            if (s->admit_pending) {
                sess_free(s); /* closed while waiting here */
            } else if (s->state == ST_ADMITTING) {
                timer_del(W, s);
                s->state = ST_PICKING;
                sess_connect(W, s);
            }
        }
        run_timers(W);
        run_commands(W);
        flush_outbox(W);
        while (W->dead) {
            ls_session *s = W->dead;
            W->dead = s->rnext;
            sess_free(s);
        }
        flush_records(W);
        if (W->nsessions == 0 && W->npipes)
            pipes_trim(W);
    }
    return NULL;
}

/* ---------------------------------------------------------------------------------- */
/* the control plane's side                                                           */

ls_engine *ls_engine_new(int workers, int splice_mode, int pipe_size, int bufsize,
                         int use_uring)
{
    if (workers < 1 || workers > LS_MAX_WORKERS) {
        errno = EINVAL;
        return NULL;
    }
    ls_engine *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->nworkers = workers;
    e->splice_mode = splice_mode;
    e->pipe_size = pipe_size > 0 ? pipe_size : 65536;
    e->bufsize = bufsize > 0 ? bufsize : 65536;
    pthread_mutex_init(&e->ctl_lock, NULL);
    pthread_mutex_init(&e->sync_lock, NULL);
    pthread_cond_init(&e->sync_cond, NULL);
    pthread_mutex_init(&e->rec_lock, NULL);
    e->recfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    e->workers = calloc((size_t)workers, sizeof *e->workers);
    if (e->recfd < 0 || !e->workers)
        goto fail;
    for (int i = 0; i < workers; i++) {
        ls_worker *W = &e->workers[i];
        W->e = e;
        W->id = i;
        W->epfd = W->cmdfd = W->sparefd = -1;
        W->uring.fd = -1;
        pthread_mutex_init(&W->cmd_lock, NULL);
        W->epfd = epoll_create1(EPOLL_CLOEXEC);
        W->cmdfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        W->sparefd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        W->buf = malloc((size_t)e->bufsize);
        W->obuf = malloc(LS_OUTBOX_BYTES);
        W->oents = calloc(LS_OUTBOX_ENTRIES, sizeof *W->oents);
        W->pipes = calloc(LS_PIPE_POOL, sizeof *W->pipes);
        if (W->epfd < 0 || W->cmdfd < 0 || !W->buf || !W->pipes)
            goto fail;
        if (use_uring)
            (void)ls_uring_init(&W->uring, LS_OUTBOX_ENTRIES); /* fd stays -1 without it */
        struct epoll_event ev;
        ev.events = EPOLLIN;
        ev.data.u64 = TAG_CMD;
        if (epoll_ctl(W->epfd, EPOLL_CTL_ADD, W->cmdfd, &ev) < 0)
            goto fail;
    }
    return e;
fail:
    ls_engine_free(e);
    return NULL;
}

int ls_engine_start(ls_engine *e)
{
    /* Workers take no signal: the control plane's thread handles them all. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int err = 0;
    for (int i = 0; i < e->nworkers && !err; i++) {
        ls_worker *W = &e->workers[i];
        err = pthread_create(&W->thread, NULL, worker_main, W);
        if (!err)
            W->started = 1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return -err;
}

int ls_engine_record_fd(ls_engine *e) { return e->recfd; }

int ls_engine_uring_workers(ls_engine *e)
{
    int n = 0;
    for (int i = 0; i < e->nworkers; i++)
        n += e->workers[i].uring.fd >= 0;
    return n;
}

void ls_engine_free(ls_engine *e)
{
    if (!e)
        return;
    if (e->workers) {
        for (int i = 0; i < e->nworkers; i++) {
            ls_worker *W = &e->workers[i];
            if (W->started) {
                ls_cmd *c = calloc(1, sizeof *c);
                if (c) {
                    c->type = CMD_STOP;
                    post(W, c);
                    pthread_join(W->thread, NULL);
                    free(c);
                }
            }
            ls_session *s = W->all;
            while (s) {
                ls_session *n = s->anext;
                for (int k = 0; k < 2; k++) {
                    if (s->fd[k] >= 0)
                        close(s->fd[k]);
                    dir_release(W, &s->dir[k]);
                }
                sess_free(s);
                s = n;
            }
            http_pool_shutdown(W, NULL, -1);
            while (W->dead) {
                ls_session *d = W->dead;
                W->dead = d->rnext;
                sess_free(d);
            }
            pipes_trim(W);
            if (W->epfd >= 0)
                close(W->epfd);
            if (W->cmdfd >= 0)
                close(W->cmdfd);
            if (W->sparefd >= 0)
                close(W->sparefd);
            ls_uring_free(&W->uring);
            free(W->buf);
            free(W->obuf);
            free(W->oents);
            free(W->pipes);
            free(W->heap);
            free(W->recs);
        }
        free(e->workers);
    }
    for (int i = 0; i < e->nlisteners; i++) {
        ls_listener *L = e->listeners[i];
        ls_lsock *ls = L->socks;
        while (ls) {
            ls_lsock *n = ls->next;
            free(ls);
            ls = n;
        }
        for (int c = 0; c < LS_MAX_CHUNKS && L->chunks[c]; c++) {
            free(L->chunks[c]->w);
            free(L->chunks[c]);
        }
        if (L->table) {
            free(L->table->servers);
            free(L->table->ring_pos);
            free(L->table->ring_owner);
            free(L->table);
        }
        free(L->wstats);
        free(L);
    }
    if (e->recfd >= 0)
        close(e->recfd);
    free(e->recs);
    free(e);
}

int ls_listener_new(ls_engine *e)
{
    pthread_mutex_lock(&e->ctl_lock);
    int id = -1;
    if (e->nlisteners < LS_MAX_LISTENERS) {
        ls_listener *L = calloc(1, sizeof *L);
        ls_lwstats *w = NULL;
        if (L && posix_memalign((void **)&w, 64, (size_t)e->nworkers * sizeof *w) == 0) {
            memset(w, 0, (size_t)e->nworkers * sizeof *w);
            L->wstats = w;
            L->e = e;
            pthread_mutex_init(&L->lock, NULL);
            L->cfg.maxconn = 4096;
            L->cfg.connect_ms = 5000;
            L->cfg.idle_ms = 60000;
            L->cfg.idle_reason = LS_END_CLIENT_TIMEOUT;
            L->cfg.queue_ms = 30000;
            id = L->id = e->nlisteners;
            e->listeners[e->nlisteners++] = L;
        } else {
            free(L);
        }
    }
    pthread_mutex_unlock(&e->ctl_lock);
    return id;
}

static ls_listener *get_listener(ls_engine *e, int lid)
{
    return lid >= 0 && lid < e->nlisteners ? e->listeners[lid] : NULL;
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
        /* published to the workers by the lock of the table that first names it */
        L->chunks[c] = ch;
    }
    L->nslots++;
    pthread_mutex_unlock(&e->ctl_lock);
    return slot;
}

int ls_listener_publish(ls_engine *e, int lid, int alg, const ls_tserver *servers, int n,
                        const uint64_t *ring_pos, const int32_t *ring_owner, int nring)
{
    ls_listener *L = get_listener(e, lid);
    if (!L)
        return -EINVAL;
    ls_table *T = calloc(1, sizeof *T);
    if (!T)
        return -ENOMEM;
    T->alg = alg;
    T->n = n;
    T->nring = nring;
    T->servers = malloc((size_t)(n ? n : 1) * sizeof *T->servers);
    T->ring_pos = malloc((size_t)(nring ? nring : 1) * sizeof *T->ring_pos);
    T->ring_owner = malloc((size_t)(nring ? nring : 1) * sizeof *T->ring_owner);
    if (!T->servers || !T->ring_pos || !T->ring_owner) {
        free(T->servers);
        free(T->ring_pos);
        free(T->ring_owner);
        free(T);
        return -ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        if (servers[i].slot < 0 || servers[i].slot >= L->nslots) {
            free(T->servers);
            free(T->ring_pos);
            free(T->ring_owner);
            free(T);
            return -EINVAL;
        }
    }
    memcpy(T->servers, servers, (size_t)n * sizeof *servers);
    if (nring) {
        memcpy(T->ring_pos, ring_pos, (size_t)nring * sizeof *ring_pos);
        memcpy(T->ring_owner, ring_owner, (size_t)nring * sizeof *ring_owner);
    }
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
    if (old) {
        free(old->servers);
        free(old->ring_pos);
        free(old->ring_owner);
        free(old);
    }
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
