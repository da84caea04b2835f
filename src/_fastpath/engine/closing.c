/* closing.c: the close()s of a worker's pass, issued together (part of the
 * unity build engine.c).
 *
 * Why: with a new connection per request every session ends with two close()s
 * (the client's socket and the server's), each a system call of its own. Where
 * the worker has an io_uring (global.io_uring: auto, uring.h), a session's
 * descriptors are queued on the ring instead and closed by one io_uring_enter()
 * at the end of the pass, or earlier with the pass's batch of sends
 * (flush_outbox), whichever comes first.
 *
 * Why this is safe:
 * - a descriptor queued here stays open (its number taken) until the close is
 *   issued, so no accept() or socket() of this or another thread can be given
 *   the same number meanwhile, and a queued close can only close its own socket;
 * - every send to it has been made: the sends of the outbox are issued (and
 *   completed, MSG_DONTWAIT) inside flush_outbox, never left on the ring, and a
 *   session that ended is skipped by the outbox; bytes held back with MSG_MORE
 *   and a TLS close_notify were written by send()/SSL_shutdown before the close
 *   was queued, so the FIN follows them as with close();
 * - the worker calls closing_flush() before it waits in epoll_wait() again and
 *   before its dead sessions are freed, so the epoll registrations (which name the
 *   session's memory) are gone before the kernel could report them, exactly
 *   as after close();
 * - a close is done inline by io_uring_enter() (a socket has no ->flush), so its
 *   completion is posted before the call returns, like the sends' (uring.h).
 * A close's result is ignored, as close()'s is everywhere in the engine. Without
 * a ring (io_uring off or refused), or after the ring broke, close() as before. */

/* Tags of ring entries that are closes (the others index the outbox). */
#define LS_TAG_CLOSE (1ull << 63)
/* At most this many closes wait on the ring (LS_OUTBOX_ENTRIES entries); a batch
 * of sends that would not fit after them issues them first (relay.c). */
#define LS_CLOSING_MAX (LS_OUTBOX_ENTRIES / 4)

/* The result of one entry of the worker's ring (ls_uring_run's done). */
static void uring_done(void *ctx, uint64_t tag, int32_t res)
{
    ls_worker *W = ctx;
    if (tag & LS_TAG_CLOSE) {
        if (res == LS_URING_NOT_SENT)
            close((int)(uint32_t)tag); /* the kernel did not take it: close it here */
        return;
    }
    W->oents[tag].res = res;
}

/* Issue what waits on the worker's ring (the queued closes) now. */
static void closing_flush(ls_worker *W)
{
    if (!W->closing)
        return;
    if (W->closing == 1 && W->uring.queued == 1) {
        /* One close alone: close() costs less than an io_uring_enter() for it */
        W->closing = 0;
        close(ls_uring_unqueue_last(&W->uring));
        return;
    }
    W->closing = 0;
    if (ls_uring_run(&W->uring, uring_done, W))
        ls_uring_free(&W->uring); /* a broken ring: one close() at a time from now on */
}

/* close(fd), queued on the worker's ring where it has one. */
static void fd_close(ls_worker *W, int fd)
{
    if (W->uring.fd < 0) {
        close(fd);
        return;
    }
    if (W->closing >= LS_CLOSING_MAX)
        closing_flush(W);
    if (W->uring.fd < 0) {
        close(fd);
        return;
    }
    ls_uring_close(&W->uring, fd, LS_TAG_CLOSE | (uint32_t)fd);
    W->closing++;
}
