/* What the io_uring test programs (uring_send.c, uring_close.c) share: a small
 * ring and two socket pairs. */
#include "uring.h"

#include <stdio.h>
#include <sys/socket.h>

/* 0, or the program's exit code: 3 when the kernel refuses io_uring (the engine
 * then sends and closes one call at a time), 4 without socket pairs. */
static int ring_and_pairs(ls_uring *u, int a[2], int b[2])
{
    if (ls_uring_init(u, 8) < 0) {
        printf("no io_uring: %s\n", strerror(errno));
        return 3;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, a) < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, b) < 0)
        return 4;
    return 0;
}
