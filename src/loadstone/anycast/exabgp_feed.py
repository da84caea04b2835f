"""The process ExaBGP runs for loadstone: `python3 -m loadstone.anycast.exabgp_feed SOCKET`.

It connects to loadstone's anycast socket (global.anycast.socket), copies each
route line it receives to stdout (ExaBGP's process API), and remembers what it
announced. When loadstone's side closes (a stop, a crash, a kill -9), it
withdraws everything it announced, then connects again as soon as loadstone is
back. It reads its stdin, where ExaBGP acknowledges commands ("done"), so that
pipe never fills; EOF there means ExaBGP is gone, and the feed exits.

Imports nothing of loadstone but the standard library: it runs as ExaBGP's
child, at every ExaBGP start.
"""

from __future__ import annotations

import os
import re
import selectors
import socket
import sys
import time

_ROUTE = re.compile(r"(announce|withdraw) route (\S+) next-hop self")
RECONNECT = 0.2  # seconds between connection attempts while loadstone is away


class FeedState:
    """Lines from loadstone in, lines for ExaBGP out (no I/O)."""

    def __init__(self) -> None:
        self.announced: set[str] = set()
        self._partial = b""

    def received(self, data: bytes) -> list[str]:
        self._partial += data
        *lines, self._partial = self._partial.split(b"\n")
        out = []
        for raw in lines:
            match = _ROUTE.fullmatch(raw.decode(errors="replace").strip())
            if match is None:
                continue  # not a route line: never passed to ExaBGP
            verb, prefix = match.groups()
            (self.announced.add if verb == "announce" else self.announced.discard)(prefix)
            out.append(match.group(0))
        return out

    def lost(self) -> list[str]:
        """loadstone went away: withdraw what it had announced."""
        out = [f"withdraw route {prefix} next-hop self" for prefix in sorted(self.announced)]
        self.announced.clear()
        self._partial = b""
        return out


def _emit(lines: list[str]) -> None:
    for line in lines:
        sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python3 -m loadstone.anycast.exabgp_feed SOCKET\n")
        return 2
    path = argv[0]
    state = FeedState()
    selector = selectors.DefaultSelector()
    selector.register(sys.stdin.fileno(), selectors.EVENT_READ, "exabgp")
    conn: socket.socket | None = None
    while True:
        if conn is None:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                conn.connect(path)
                selector.register(conn, selectors.EVENT_READ, "loadstone")
            except OSError:
                conn.close()
                conn = None
        for key, _ in selector.select(RECONNECT if conn is None else None):
            if key.data == "exabgp":
                if not os.read(sys.stdin.fileno(), 65536):
                    return 0  # ExaBGP is gone
                continue
            assert conn is not None
            try:
                data = conn.recv(65536)
            except OSError:
                data = b""
            if data:
                _emit(state.received(data))
            else:
                selector.unregister(conn)
                conn.close()
                conn = None
                _emit(state.lost())
                time.sleep(RECONNECT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
