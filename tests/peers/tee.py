"""A TCP relay that keeps a copy of what its clients send, per connection.

Put between a proxy and its server, it shows the exact bytes the proxy
forwarded, so a test can replay them to other HTTP implementations and
compare how each frames them (tests/integration/test_smuggling.py).
"""

from __future__ import annotations

import contextlib
import socket
import threading


class Tee:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = int(self.listener.getsockname()[1])
        self._lock = threading.Lock()
        self._streams: list[bytearray] = []  # client -> upstream, one per connection
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def mark(self) -> list[int]:
        """Where each connection's record ends now."""
        with self._lock:
            return [len(s) for s in self._streams]

    def since(self, mark: list[int]) -> list[bytes]:
        """What each connection carried after `mark` (those that carried something)."""
        with self._lock:
            new = [bytes(s[mark[i] if i < len(mark) else 0 :]) for i, s in enumerate(self._streams)]
        return [n for n in new if n]

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            record = bytearray()
            with self._lock:
                self._streams.append(record)
                self._sockets += (client, server)
            threading.Thread(target=self._pump, args=(client, server, record), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, None), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bytearray | None) -> None:
        try:
            while data := src.recv(65536):
                if record is not None:
                    with self._lock:
                        record += data  # before it goes on: a response proves it is here
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_RDWR)
