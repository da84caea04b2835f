"""nginx as the proxy under test: the stream module in tcp mode, proxy_pass in http mode.

Configured as nginx's documentation recommends for load balancing
(nginx.org/en/docs/stream/ngx_stream_proxy_module.html, and for HTTP
ngx_http_upstream_module.html#keepalive): an `upstream` group, round robin (its
default), and in http mode `keepalive` idle connections to the servers, which need
`proxy_http_version 1.1` and an empty Connection header to be reused.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from benchmarks.harness import nginx
from benchmarks.harness.backends import Backend
from benchmarks.harness.net import LOOPBACK
from benchmarks.harness.proxies import MAXCONN, TIMEOUT_CONNECT, TIMEOUT_IDLE, Proxy

# One line per session, the fields of HAProxy's `option tcplog`: client, time,
# server, connect time and duration, bytes each way, status.
_STREAM_LOG = (
    "'$remote_addr:$remote_port [$time_local] $server_port $upstream_addr "
    "$upstream_connect_time/$session_time $bytes_sent $bytes_received $status'"
)
# One line per request, those of `option httplog`: client, time, server, the
# server's and the whole request's time, status, bytes, request line.
_HTTP_LOG = (
    "'$remote_addr:$remote_port [$time_local] $server_port $upstream_addr "
    '$upstream_response_time/$request_time $status $body_bytes_sent "$request"\''
)
# Idle server connections each worker keeps (the documentation's example uses 16
# or 32): more than the 50 client connections of the keep-alive scenarios would
# ever leave idle at once per server.
UPSTREAM_KEEPALIVE = 64
# As the backends do: keep-alive scenarios measure the proxy, not nginx closing a
# client or server connection after its default 1,000 requests.
KEEPALIVE_REQUESTS = 10_000_000


class NginxProxy(Proxy):
    """Debian's nginx with `worker_processes` = workers, its own prefix, in the foreground."""

    name = "nginx"

    def __init__(
        self,
        workdir: Path,
        backends: Sequence[Backend],
        *,
        workers: int,
        mode: str = "tcp",
        log_sessions: bool = False,
        binary: str = "nginx",
    ) -> None:
        self.binary = nginx.find_binary(binary)
        # Checked before anything is written: a missing stream module is a setup error.
        self.load_module = nginx.stream_module_line(self.binary) if mode == "tcp" else ""
        self.log_sessions = log_sessions
        super().__init__(workdir, backends, workers=workers, mode=mode)
        (self.workdir / "tmp").mkdir()

    def _access_log(self, log_format: str) -> str:
        # Unbuffered, as HAProxy writes each line to its log file and loadstone each
        # session's line: one write per line for every proxy.
        if not self.log_sessions:
            return "    access_log off;\n"
        return (
            f"    log_format bench {log_format};\n    access_log {self.workdir}/access.log bench;\n"
        )

    def _servers(self) -> str:
        return "".join(f"        server {b.address};\n" for b in self.backends)

    def _stream_block(self) -> str:
        return (
            "stream {\n"
            f"{self._access_log(_STREAM_LOG)}"
            "    upstream bench_servers {\n"
            f"{self._servers()}"
            "    }\n"
            "    server {\n"
            f"        listen {LOOPBACK}:{self.port} backlog=4096;\n"
            "        proxy_pass bench_servers;\n"
            f"        proxy_connect_timeout {TIMEOUT_CONNECT};\n"
            f"        proxy_timeout {TIMEOUT_IDLE};\n"
            "    }\n"
            "}\n"
        )

    def _http_block(self) -> str:
        return (
            "http {\n"
            f"{self._access_log(_HTTP_LOG)}"
            f"{nginx.temp_paths(self.workdir)}"
            f"    keepalive_requests {KEEPALIVE_REQUESTS};\n"
            # HAProxy's `timeout http-keep-alive` in the harness.
            "    keepalive_timeout 10s;\n"
            "    upstream bench_servers {\n"
            f"{self._servers()}"
            f"        keepalive {UPSTREAM_KEEPALIVE};\n"
            f"        keepalive_requests {KEEPALIVE_REQUESTS};\n"
            "    }\n"
            "    server {\n"
            f"        listen {LOOPBACK}:{self.port} backlog=4096;\n"
            "        location / {\n"
            "            proxy_pass http://bench_servers;\n"
            "            proxy_http_version 1.1;\n"
            '            proxy_set_header Connection "";\n'
            # X-Forwarded-For, as HAProxy's `option forwardfor` and loadstone's
            # `forwardfor: true` add it (Host is passed on as the client sent it).
            "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
            "            proxy_set_header Host $http_host;\n"
            f"            proxy_connect_timeout {TIMEOUT_CONNECT};\n"
            f"            proxy_read_timeout {TIMEOUT_IDLE};\n"
            f"            proxy_send_timeout {TIMEOUT_IDLE};\n"
            "        }\n"
            "    }\n"
            "}\n"
        )

    def write_config(self) -> Path:
        # A worker's connections count both sides of a session: client and server.
        connections = 2 * MAXCONN
        text = (
            "# Generated by benchmarks/harness/nginx_proxy.py\n"
            + (f"{self.load_module}\n" if self.load_module else "")
            + f"{nginx.user_line()}\n"
            f"worker_processes {self.workers};\n"
            f"worker_rlimit_nofile {connections + 100};\n"
            f"pid {self.workdir}/nginx.pid;\n"
            f"error_log {self.workdir}/error.log warn;\n"
            "\n"
            f"events {{\n    worker_connections {connections};\n}}\n"
            "\n" + (self._stream_block() if self.mode == "tcp" else self._http_block())
        )
        path = self.workdir / "nginx.conf"
        path.write_text(text)
        return path

    def check_argv(self, config: Path) -> list[str]:
        return nginx.check_argv(self.binary, self.workdir, config)

    def run_argv(self, config: Path) -> list[str]:
        return nginx.run_argv(self.binary, self.workdir, config)

    def version(self) -> str:
        return nginx.version(self.binary)
