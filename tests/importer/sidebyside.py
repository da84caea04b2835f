"""HAProxy and loadstone side by side on loopback, for the differential tests.

`HAProxy` runs a configuration text with an admin socket of its own;
`loopback` rewrites a corpus configuration (198.18.0.x, service ports) to
loopback addresses and free ports, once per proxy, so that HAProxy and
loadstone listen on different ports in front of the same backends.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.harness import Loadstone, free_port, wait_for

HAPROXY = shutil.which("haproxy")


class HAProxy:
    """`haproxy -db` on a configuration text, with an admin socket to read its state."""

    def __init__(self, tmp: Path, text: str) -> None:
        self.socket = tmp / "haproxy.sock"
        self.path = tmp / "haproxy.cfg"
        self.path.write_text(f"global\n    stats socket {self.socket} level admin\n\n{text}")
        assert HAPROXY is not None
        self.stderr = open(tmp / "haproxy.err", "wb")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(self.path)], stdout=subprocess.DEVNULL, stderr=self.stderr
        )
        wait_for(self.socket.exists, what="haproxy stats socket")

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.socket))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def states(self, backend: str) -> dict[str, str]:
        """Server -> UP/DOWN as `show stat` says (a transition in progress shows its target)."""
        rows = csv.DictReader(io.StringIO(self.command("show stat").lstrip("# ")))
        return {
            row["svname"]: row["status"].split()[0]
            for row in rows
            if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.stderr.close()


SECTION = re.compile(
    r"(global|defaults|listen|frontend|backend|peers|userlist|resolvers|mailers|cache|program)\b"
)
CORPUS_ADDRESS = re.compile(r"198\.18\.0\.(\d+)")
PORT_AT_END = re.compile(r":(\d+)$")


@dataclass
class Loopback:
    """Port maps of one rewrite: the binds' ports are the proxy's own, the servers' shared."""

    fronts: dict[int, int] = field(default_factory=dict)  # service port -> this proxy's port
    servers: dict[int, int] = field(default_factory=dict)  # server/check port -> backend port
    backends: set[tuple[str, int, int]] = field(default_factory=set)  # (host, port, corpus port)

    def front(self, port: int) -> int:
        return self.fronts.setdefault(port, free_port("0.0.0.0"))

    def server(self, host: str, port: int) -> int:
        new = self.servers.setdefault(port, free_port("0.0.0.0"))
        self.backends.add((host, new, port))
        return new


def loopback(text: str, ports: Loopback, map_dir: Path) -> str:
    """A corpus configuration on loopback: the global section dropped (sockets, users,
    chroot of the deployer's hosts), TLS binds dropped (as the import leaves them
    out), 198.18.0.N -> 127.0.0.N, bind ports -> `ports.front`, server and check
    ports -> `ports.server`, map files read from `map_dir`."""
    out: list[str] = []
    in_global = False
    for line in text.splitlines():
        words = line.split()
        if words and SECTION.fullmatch(words[0]):
            in_global = words[0] == "global"
        if in_global or not words:
            continue
        line = CORPUS_ADDRESS.sub(r"127.0.0.\1", line).replace("/etc/haproxy/", f"{map_dir}/")
        words = line.split()
        if words[0] == "bind" or (words[0] == "listen" and len(words) > 2):
            if " ssl" in line:
                continue
            address = words[1] if words[0] == "bind" else words[2]
            m = PORT_AT_END.search(address)
            assert m is not None, line
            line = line.replace(address, address[: m.start()] + f":{ports.front(int(m[1]))}", 1)
        elif words[0] in ("server", "default-server") and len(words) > 2:
            address = words[2]
            host, _, port = address.rpartition(":")
            new = ports.server(host, int(port))
            line = line.replace(address, f"{host}:{new}", 1)
            m = re.search(r" port (\d+)", line)
            if m:
                line = line.replace(m[0], f" port {ports.server(host, int(m[1]))}")
        elif words[:3] == ["tcp-check", "connect", "port"]:
            new = ports.servers.setdefault(int(words[3]), free_port("0.0.0.0"))
            line = line.replace(f"port {words[3]}", f"port {new}")
        out.append(line)
    return "\n".join(out) + "\n"


def loadstone_states(ls: Loadstone, listener: str) -> dict[str, str]:
    servers = ls.status()["listeners"][listener]["servers"]
    return {name: s["state"].upper() for name, s in servers.items()}


def http_get(address: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://{address}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


def tcp_exchange(host: str, port: int, payload: bytes, half_close: bool = True) -> bytes:
    """Send `payload`, half-close (unless told not to: an HTTP/1.0 server closes
    itself, and may drop a request whose client half-closed), read until closed."""
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(payload)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        data = b""
        try:
            while chunk := s.recv(4096):
                data += chunk
        except ConnectionResetError:
            pass
    return data


def tcp_who(host: str, port: int) -> str:
    """Which echo backend a TCP session reached (it names itself after our FIN)."""
    data = tcp_exchange(host, port, b"hello")
    assert data.startswith(b"hello\nEOF ")
    return data.decode().split()[-1]


def wait_until_up(ls: Loadstone, listener: str) -> None:
    wait_for(
        lambda: set(loadstone_states(ls, listener).values()) == {"UP"},
        timeout=60,
        what=f"every server of {listener} up in loadstone",
    )
