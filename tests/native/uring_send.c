/* Checks the kernel behaviour the engine's batched sends rely on (uring.h):
 * a batch of sends completes inside ls_uring_run(), a send to a socket whose
 * buffer is full comes back at once with -EAGAIN instead of waiting for room,
 * and the bytes that were sent arrive in order. Built and run by
 * tests/unit/test_uring.py; prints one line per check and exits 0 when all pass. */
#include "uring.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>

static int32_t results[4];

static void done(void *ctx, uint64_t tag, int32_t res)
{
    (void)ctx;
    results[tag] = res;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(void)
{
    ls_uring u;
    if (ls_uring_init(&u, 8) < 0) {
        printf("no io_uring: %s\n", strerror(errno));
        return 3;
    }
    int a[2], b[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, a) < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, b) < 0)
        return 4;
    int small = 4096;
    setsockopt(b[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    fcntl(b[0], F_SETFL, O_NONBLOCK);
    char block[1024];
    memset(block, 'x', sizeof block);
    while (send(b[0], block, sizeof block, MSG_DONTWAIT) > 0) /* fill b: nobody reads b[1] */
        ;
    if (errno != EAGAIN)
        return 5;

    /* one batch: a send that fits, one to the full socket, another that fits */
    ls_uring_send(&u, a[0], "hello ", 6, MSG_NOSIGNAL, 0);
    ls_uring_send(&u, b[0], block, sizeof block, MSG_NOSIGNAL, 1);
    ls_uring_send(&u, a[0], "world", 5, MSG_NOSIGNAL, 2);
    results[0] = results[1] = results[2] = LS_URING_UNKNOWN;
    double t0 = now();
    unsigned lost = ls_uring_run(&u, done, NULL);
    double took = now() - t0;
    printf("lost %u\n", lost);
    printf("fits %d %d\n", results[0], results[2]);
    printf("full %s\n", results[1] == -EAGAIN ? "EAGAIN" : "other");
    printf("prompt %s\n", took < 0.5 ? "yes" : "no");
    char got[32] = {0};
    ssize_t n = recv(a[1], got, sizeof got - 1, MSG_DONTWAIT);
    printf("received %zd %s\n", n, got);
    ls_uring_free(&u);
    return 0;
}
