/* Checks the kernel behaviour the engine's batched closes rely on (uring.h,
 * engine/closing.c): a socket's IORING_OP_CLOSE queued after a send of the same
 * batch is done inside ls_uring_run() (the descriptor is gone when it returns,
 * no io-wq thread was started for it), the peer reads the bytes sent before it
 * and then the end of the stream, and a close taken back before the run is not
 * issued. Built and run by tests/unit/test_uring.py; prints one line per check. */
#include "uring_test.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/socket.h>

static int32_t results[3];

static void done(void *ctx, uint64_t tag, int32_t res)
{
    (void)ctx;
    results[tag] = res;
}

/* The threads of this process besides the main one (io-wq workers are ours). */
static int other_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = -1; /* the main thread */
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

int main(void)
{
    ls_uring u;
    int a[2], b[2], failed = ring_and_pairs(&u, a, b);
    if (failed) /* 3: no io_uring */
        return failed;
    ls_uring_send(&u, a[0], "last words", 10, MSG_NOSIGNAL, 0);
    ls_uring_close(&u, a[0], 1);
    ls_uring_close(&u, b[0], 2);
    printf("taken back %s\n", ls_uring_unqueue_last(&u) == b[0] ? "yes" : "no");
    results[0] = results[1] = results[2] = LS_URING_UNKNOWN;
    unsigned lost = ls_uring_run(&u, done, NULL);
    printf("lost %u\n", lost);
    printf("results %d %d %s\n", results[0], results[1],
           results[2] == LS_URING_UNKNOWN ? "unissued" : "issued");
    printf("closed %s\n", fcntl(a[0], F_GETFD) < 0 && errno == EBADF ? "yes" : "no");
    printf("kept %s\n", fcntl(b[0], F_GETFD) >= 0 ? "yes" : "no");
    printf("threads %d\n", other_threads());
    char got[32] = {0};
    ssize_t n = recv(a[1], got, sizeof got - 1, MSG_DONTWAIT);
    ssize_t end = recv(a[1], got + n, sizeof got - 1 - (size_t)n, MSG_DONTWAIT);
    printf("received %zd %s then %zd\n", n, got, end);
    ls_uring_free(&u);
    return 0;
}
