/* loadstone native data plane: worker threads with their own epoll loops.
 *
 * This is the engine's one translation unit: it includes its parts, one file
 * per subsystem, so the compiler still sees (and inlines across) the whole of
 * it, as before the split. Types are in engine-t.h and http-t.h, what each part
 * offers the others in engine-i.h and http-i.h, the one linked list in list.h.
 * What differs between a tcp and an http listener's sessions goes through a
 * table of protocol hooks (ls_proto: proto_tcp in session.c, proto_http in
 * http_session.c), so the generic parts never ask which mode a session is in.
 *
 *   timers.c      the clock, the deadline heap
 *   metrics.c     histograms and HTTP codes counted by the workers
 *   control.c     commands to the workers, records back to the control plane
 *   balance.c     server selection (the balancing algorithms)
 *   queue.c       admission under maxconn, the listener's queue
 *   relay.c       moving bytes: pump, the outbox, splice pipes
 *   session.c     accept, epoll events, finish; proto_tcp
 *   connect.c     pick, connect, retry and redispatch
 *   proxy_proto.c the PROXY protocol: headers sent to servers, read from clients
 *   http_parse.c  mode http: llhttp's callbacks, the head rebuilt for the server
 *   http_selftest.c  the self-test of the llhttp built in
 *   http_io.c     reading, parsing, relaying, the round's writes
 *   http_pool.c   server connections and the per-worker idle pool
 *   http_exchange.c  an exchange, from its head to its log record
 *   http_session.c   a client connection: set-up, proto_http, control calls
 *   worker.c      the worker loop and threads, the engine's life
 *   spin_selftest.c  poll_spin's budget checked without a clock (tests)
 *   listener.c    the control plane's calls about listeners
 *   sni.c         SNI passthrough: an admitted tcp session reads its ClientHello
 *                 (clienthello.c, the sans-IO reader) and picks its pool's table
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

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "engine-t.h"
#include "http-t.h"
#include "engine-i.h"
#include "http-i.h"
#include "tls-t.h"
#include "sni-t.h"

#include "timers.c"
#include "metrics.c" /* the workers' Prometheus counters */
#include "tls.c"
#include "tls_upstream.c" /* TLS to servers */
#include "control.c"
#include "balance.c"
#include "queue.c"
#include "relay.c"
#include "limits.c"
#include "addr_text.c" /* client addresses as the session log shows them */
#include "session.c"
#include "connect.c"
#include "proxy_proto.c" /* PROXY protocol headers, sent and accepted */
#include "http_parse.c"
#include "http_selftest.c"
#include "http_io.c"
#include "http_linger.c" /* the lingering close of a client still sending */
#include "http_pool.c"
#include "http_exchange.c"
#include "http_session.c"
#include "worker.c"
#include "spin_selftest.c" /* poll_spin's budget checked, for the tests */
#include "listener.c"
#include "sni.c" /* SNI passthrough: the ClientHello read before a pool is chosen */

uint64_t ls_blake2b64(const void *data, size_t len) { return ls_blake2b64_impl(data, len); }
