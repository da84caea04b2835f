/* uring.h: the one use the engine makes of io_uring, a batch of non-blocking
 * send()s in one system call.
 *
 * Why: at the end of a pass the worker sends the small messages it held back
 * (the outbox, engine.c). Each send() wakes its receiver, and on a busy machine
 * the woken peer preempts the worker on the way out of that send(), before the
 * rest of the batch is sent. One io_uring_enter() issues every send of the batch
 * in the kernel before it returns, so the peers are woken together and the
 * worker is preempted at most once per batch.
 *
 * Only what that needs: no SQ polling, no registered buffers, no liburing (not a
 * declared build requirement). The sends carry MSG_DONTWAIT, which makes the
 * kernel finish them at once with -EAGAIN rather than waiting for room, so every
 * completion is posted before io_uring_enter() returns. A kernel without
 * io_uring (or with it disabled) leaves fd at -1, and the caller sends one by one.
 */
#ifndef LS_URING_H
#define LS_URING_H

#include <errno.h>
#include <linux/io_uring.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef struct ls_uring {
    int fd;
    unsigned *sq_tail, *sq_mask, *sq_array;
    unsigned *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
    void *ring;
    size_t ring_size, sqes_size;
    unsigned queued; /* sends written to the SQ, not yet made visible to the kernel */
} ls_uring;

static int ls_uring_init(ls_uring *u, unsigned entries)
{
    memset(u, 0, sizeof *u);
    u->fd = -1;
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_SUBMIT_ALL;
    int fd = (int)syscall(__NR_io_uring_setup, entries, &p);
    if (fd < 0)
        return -1;
    if (!(p.features & IORING_FEAT_SINGLE_MMAP)) {
        close(fd);
        errno = ENOSYS;
        return -1;
    }
    size_t sq_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    u->ring_size = sq_size > cq_size ? sq_size : cq_size;
    u->ring = mmap(NULL, u->ring_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                   IORING_OFF_SQ_RING);
    if (u->ring == MAP_FAILED) {
        close(fd);
        return -1;
    }
    u->sqes_size = p.sq_entries * sizeof(struct io_uring_sqe);
    u->sqes = mmap(NULL, u->sqes_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                   IORING_OFF_SQES);
    if (u->sqes == MAP_FAILED) {
        munmap(u->ring, u->ring_size);
        close(fd);
        return -1;
    }
    char *r = u->ring;
    u->sq_tail = (unsigned *)(r + p.sq_off.tail);
    u->sq_mask = (unsigned *)(r + p.sq_off.ring_mask);
    u->sq_array = (unsigned *)(r + p.sq_off.array);
    u->cq_head = (unsigned *)(r + p.cq_off.head);
    u->cq_tail = (unsigned *)(r + p.cq_off.tail);
    u->cq_mask = (unsigned *)(r + p.cq_off.ring_mask);
    u->cqes = (struct io_uring_cqe *)(r + p.cq_off.cqes);
    u->fd = fd;
    return 0;
}

static void ls_uring_free(ls_uring *u)
{
    if (u->fd < 0)
        return;
    munmap(u->sqes, u->sqes_size);
    munmap(u->ring, u->ring_size);
    close(u->fd);
    u->fd = -1;
}

/* Queue send(fd, data, len, flags | MSG_DONTWAIT); its result comes back with
 * tag. At most the ring's size (ls_uring_init) before ls_uring_run(). */
static void ls_uring_send(ls_uring *u, int fd, const void *data, unsigned len, int flags,
                          uint64_t tag)
{
    unsigned tail = *u->sq_tail + u->queued;
    unsigned idx = tail & *u->sq_mask;
    struct io_uring_sqe *sqe = &u->sqes[idx];
    memset(sqe, 0, sizeof *sqe);
    sqe->opcode = IORING_OP_SEND;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)data;
    sqe->len = len;
    sqe->msg_flags = (uint32_t)(flags | MSG_DONTWAIT);
    sqe->user_data = tag;
    u->sq_array[idx] = idx;
    u->queued++;
}

/* A result meaning "not sent": io_uring_enter() failed before the kernel took
 * the send, so the caller must send it itself. */
#define LS_URING_NOT_SENT INT32_MIN
/* What a send's result is before its completion arrives. */
#define LS_URING_UNKNOWN (INT32_MIN + 1)

/* Issue the queued sends and hand each result (bytes sent, -errno, or
 * LS_URING_NOT_SENT) to done(ctx, tag, result). Returns the number of sends the
 * kernel did not take (0 on a healthy ring). */
static unsigned ls_uring_run(ls_uring *u, void (*done)(void *, uint64_t, int32_t), void *ctx)
{
    unsigned n = u->queued;
    if (!n)
        return 0;
    unsigned start = *u->sq_tail;
    __atomic_store_n(u->sq_tail, start + n, __ATOMIC_RELEASE);
    u->queued = 0;
    unsigned submitted = 0, got = 0, lost = 0;
    while (got + lost < n) {
        /* MSG_DONTWAIT sends complete inline; waiting is for the odd one that did not */
        unsigned wait = submitted + lost == n ? n - lost - got : 0;
        int r = (int)syscall(__NR_io_uring_enter, u->fd, n - submitted - lost, wait,
                             wait ? IORING_ENTER_GETEVENTS : 0, NULL, 0);
        if (r > 0 && !wait)
            submitted += (unsigned)r;
        int hard = r < 0 && errno != EINTR && errno != EAGAIN && errno != EBUSY;
        if (hard && wait)
            break; /* results lost: the caller ends those sessions (never happens) */
        if (hard) {
            /* The ring is unusable: take back what the kernel did not consume,
             * oldest first, and give it to the caller to send. */
            unsigned tail = start + submitted;
            for (unsigned i = submitted + lost; i < n; i++) {
                unsigned idx = (start + i) & *u->sq_mask;
                done(ctx, u->sqes[idx].user_data, LS_URING_NOT_SENT);
                lost++;
            }
            __atomic_store_n(u->sq_tail, tail, __ATOMIC_RELEASE);
            if (submitted == got)
                break;
        }
        unsigned head = *u->cq_head;
        unsigned tail = __atomic_load_n(u->cq_tail, __ATOMIC_ACQUIRE);
        for (; head != tail; head++) {
            struct io_uring_cqe *c = &u->cqes[head & *u->cq_mask];
            done(ctx, c->user_data, c->res);
            got++;
        }
        __atomic_store_n(u->cq_head, head, __ATOMIC_RELEASE);
    }
    return lost;
}

#endif
