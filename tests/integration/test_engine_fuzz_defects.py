"""Defects the C engine's libFuzzer harness (fuzz/c/, scripts/fuzz-c) found, shown
through a running loadstone on both data paths. The harness's own input for
each is kept in fuzz/c/reproducers/ (replayed by test_fuzz_c.py)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from tests.integration.harness import Backend, Loadstone, free_port
from tests.integration.test_http_mode import exchange, http_config, port_of

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("datapath")]

Start = Callable[..., Loadstone]


@contextlib.contextmanager
def canned_server(answer: bytes) -> Iterator[int]:
    """A server that answers every request head with the bytes `answer` as they are."""
    listener = socket.create_server(("127.0.0.1", free_port()))

    def serve(conn: socket.socket) -> None:
        with conn:
            seen = b""
            while b"\r\n\r\n" not in seen:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                seen += chunk
            conn.sendall(answer)
            while conn.recv(65536):  # until the proxy closes it
                pass

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # the listener closed: the test is over
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(timeout=5)


def test_connection_close_after_empty_lines_before_the_status_line(loadstone: Start) -> None:
    # fuzz/c/reproducers/close-head-leading-empty-lines. The client closes
    # after this response, the server's head says keep-alive: the relayed head
    # is rewritten to say close. With empty lines before the status line
    # (which llhttp skips), the native close_head took the first one for the
    # end of the head and wrote "Connection: close" before the status line.
    answer = b"\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
    with canned_server(answer) as server_port:
        ls = loadstone(http_config([Backend("s1", server_port)]))
        request = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        responses = exchange(port_of(ls), request)
    assert [(r.status, r.header("Connection"), r.body) for r in responses] == [
        (200, "close", b"ok")
    ]
