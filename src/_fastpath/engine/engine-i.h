/* engine-i.h: what each part of the engine offers the others (the functions
 * one file of the unity build engine.c calls in another), and the few small
 * helpers every part inlines. Types are in engine-t.h. */
#ifndef LS_ENGINE_I_H
#define LS_ENGINE_I_H

#include "engine-t.h"

#include <sys/types.h>

/* timers.c */
static int64_t now_us(void);
static void timer_set(ls_worker *W, ls_session *s, int64_t deadline);
static void timer_del(ls_worker *W, ls_session *s);

/* control.c */
static void drain_eventfd(int fd);
static void post(ls_worker *W, ls_cmd *c);
static int post_all_sync(ls_engine *e, int type, ls_listener *L, int slot, int reason);
static void run_commands(ls_worker *W);
static ls_record *new_record(ls_worker *W);
static void flush_records(ls_worker *W);

/* balance.c */
static int is_failed(const ls_session *s, int slot);
static int pick_server(ls_listener *L, ls_session *s);

/* queue.c */
static void admit(ls_worker *W, ls_session *s);
static void admit_arrived(ls_worker *W, ls_session *s);
static void queue_expired(ls_worker *W, ls_session *s);
static ls_session *dequeue_admissible(ls_listener *L);
static void dispatch_admitted(ls_worker *W, ls_session *list);
static void queue_remove(ls_listener *L, ls_session *s);

/* relay.c */
static void pipes_trim(ls_worker *W);
static void dir_release(ls_worker *W, ls_dir *D);
static void pump_both(ls_worker *W, ls_session *s, int first);
static void relay_start(ls_worker *W, ls_session *s, int64_t idle_ms);
static void flush_outbox(ls_worker *W);

/* session.c (and proto_tcp, the hooks of a tcp session) */
static void set_keepalive(int fd, const ls_lconfig *cfg);
static void format_addr(const ls_addr *a, char *out, size_t size);
static void ready_push(ls_worker *W, ls_session *s);
static void fail_side(ls_worker *W, ls_session *s, int side);
static void on_accept(ls_worker *W, ls_lsock *ls);
static void on_session(ls_worker *W, ls_session *s, int side, uint32_t ev);
static void relay_event(ls_worker *W, ls_session *s, int side, uint32_t ev);
static void finish(ls_worker *W, ls_session *s, int reason, int arg);
static void sess_free(ls_session *s);

/* connect.c */
static void sess_connect(ls_worker *W, ls_session *s);
static void do_connect(ls_worker *W, ls_session *s);
static void connect_failed(ls_worker *W, ls_session *s, int err);

/* proxy_proto.c */
static void server_connected(ls_worker *W, ls_session *s);
static int proxy_gate(ls_worker *W, ls_session *s);
static void proxy_header_event(ls_worker *W, ls_session *s, uint32_t ev);
static void proxy_timeout(ls_worker *W, ls_session *s);
static int proxy_watch_client(ls_worker *W, ls_session *s);
static void proxy_accept_free(ls_listener *L);

/* listener.c */
static ls_listener *get_listener(ls_engine *e, int lid);

/* sni.c */
static int sni_begin(ls_worker *W, ls_session *s);
static void sni_event(ls_worker *W, ls_session *s, uint32_t ev);
static void sni_timeout(ls_worker *W, ls_session *s);
static void sni_free(ls_session *s);
static void sni_log_fields(const ls_session *s, char *out, size_t size);
static ls_table *sni_table(ls_listener *L, const ls_session *s);
static void sni_listener_free(ls_listener *L);

/* counters and shared state of a server slot */

static inline ls_slot_shared *slot_shared(ls_listener *L, int slot)
{
    return &L->chunks[slot / LS_SLOTS_PER_CHUNK]->shared[slot % LS_SLOTS_PER_CHUNK];
}

static inline ls_slot_wstats *slot_w(ls_listener *L, int worker, int slot)
{
    ls_chunk *c = L->chunks[slot / LS_SLOTS_PER_CHUNK];
    return &c->w[worker * LS_SLOTS_PER_CHUNK + slot % LS_SLOTS_PER_CHUNK];
}

/* What an edge-triggered epoll event says of a side of the session: readable
 * (also at the peer's FIN, EPOLLRDHUP, which pump() takes with the last read),
 * writable. The flags stay until a read or write meets EAGAIN. */
static inline void note_event(ls_session *s, int side, uint32_t ev)
{
    if (ev & EPOLLIN)
        s->rd[side] = 1;
    if (ev & (EPOLLRDHUP | EPOLLHUP))
        s->rd[side] = s->rdhup[side] = 1;
    if (ev & (EPOLLOUT | EPOLLHUP))
        s->wr[side] = 1;
}

/* Bytes moved in direction d (0: client -> server), on the session, its listener
 * and its server, in the worker's own counters. */
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

#endif
