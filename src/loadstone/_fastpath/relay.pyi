# Typing of the compiled module built from src/_fastpath/relay.pyx.

from typing import Any

BUILD: str
ALGORITHMS: dict[str, int]
SPLICE_MODES: dict[str, int]
END_WORDS: tuple[str, ...]
END_CLIENT_TIMEOUT: int
END_SERVER_TIMEOUT: int
END_CONNECT_FAILED: int
END_SHUTDOWN: int
END_SNI_REFUSED: int  # arg: an index of SNI_REASONS
END_SNI_TIMEOUT: int
SNI_REASONS: tuple[str, ...]  # the ClientHello reader's reasons, then "sni-inspect-timeout"
SNI_MAX_POOLS: int
REC_SESSION: int
REC_CONNECT_FAILED: int
REC_HTTP: int
REC_TLS_FAILED: int
HTTP_END_WORDS: tuple[str, ...]
HTTP_END_CONNECT_FAILED: int
HTTP_END_SHUTDOWN: int

# (type, listener, slot, reason, arg, client, bytes_in, bytes_out, duration), and for
# REC_HTTP then (status, method, target, (t_request, t_queue, t_connect, t_response, t_total));
# REC_SESSION then (tls,): "version/cipher/sni" or ""; REC_TLS_FAILED then (reason,)
Record = tuple[Any, ...]

def blake2b64(data: bytes) -> int: ...

# ("hello", server_name | None, alpn, versions, size) | ("error", reason) | ("more",)
def read_client_hello(pieces: list[bytes]) -> tuple[Any, ...]: ...

LLHTTP_VERSION: str  # of the llhttp built in (src/_fastpath/vendor/llhttp)
OPENSSL_VERSION: str  # of the OpenSSL the engine is linked with ("3.0.15")

def init_llhttp() -> None: ...
def set_http_answer(status: int, data: bytes) -> None: ...

class Engine:
    workers: int
    splice: str
    pipe_size: int
    bufsize: int
    io_uring_workers: int
    def __init__(
        self,
        workers: int = 1,
        splice: str = "auto",
        pipe_size: int = 0,
        bufsize: int = 0,
        io_uring: str = "auto",
    ) -> None: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    def record_fd(self) -> int: ...
    def set_poll_spin(self, seconds: float) -> None: ...
    @property
    def poll_spin(self) -> float: ...
    def poll_stats(self) -> tuple[int, int, int]: ...
    def spin_stats(self) -> tuple[int, int, int, int, int]: ...
    def new_listener(self) -> int: ...
    def configure(
        self,
        lid: int,
        *,
        maxconn: int,
        retries: int,
        redispatch: bool,
        connect: float,
        idle: float,
        idle_is_client: bool,
        queue: float,
        log_mode: int = 0,
        keepalive: tuple[int, int, int] | None = None,
    ) -> None: ...
    def configure_http(
        self,
        lid: int,
        *,
        request: float,
        keep_alive: float,
        client: float,
        server: float,
        tunnel: float,
        max_head_size: int,
        max_headers: int,
        forwarded_port: bool,
        forwardfor: str,
        proto_line: str,
        except_nets: list[tuple[int, bytes, int]],
        max_requests: int = 1000,
        request_rules: tuple[tuple[bytes, ...], bytes] = ((), b""),
        response_rules: tuple[tuple[bytes, ...], bytes] = ((), b""),
        redirect_code: int = 0,
        redirect_scheme: str = "",
        linger: float = 2.0,
    ) -> None: ...
    def http_stop(self, lid: int) -> int: ...
    def http_close_after_response(self, lid: int) -> None: ...
    def http_idle_server_conns(self, lid: int) -> int: ...
    def add_socket(self, lid: int, fd: int) -> None: ...
    def remove_socket(self, lid: int, fd: int) -> None: ...
    def new_slot(self, lid: int) -> int: ...
    def publish(
        self,
        lid: int,
        algorithm: str,
        servers: list[tuple[int, int, int, str, int]] | list[tuple[int, int, int, str, int, int]],
        ring_pos: list[int] | tuple[int, ...] = (),
        ring_owner: list[int] | tuple[int, ...] = (),
        pool: int = -1,
    ) -> None: ...
    def proxy_accept(
        self, lid: int, timeout: float | None, nets: list[tuple[int, bytes, int]]
    ) -> None: ...
    def proxy_refused(self, lid: int) -> tuple[int, int, int, int]: ...
    def set_sni(
        self,
        lid: int,
        inspect_timeout: float | None,
        default_pool: int,
        routes: list[tuple[str, int, bool]],
    ) -> None: ...
    def sni_stats(self, lid: int) -> tuple[list[int], list[int]]: ...
    def set_tls(
        self,
        lid: int,
        certificates: list[tuple[bytes, bytes]],
        names: list[tuple[str, int]],
        alpn: bytes,
        min_version: int,
        ciphers: str,
        ciphersuites: str | None,
        client_ca: str | None,
        verify_client: int,
        handshake_timeout: float,
        session_context: str,
    ) -> None: ...
    def clear_tls(self, lid: int) -> None: ...
    def set_server_tls(
        self,
        lid: int,
        slot: int,
        settings: tuple[bool, str | None, str | None, bool, bytes, tuple[bytes, bytes] | None]
        | None,
    ) -> None: ...
    def set_ticket_keys(self, keys: bytes) -> None: ...
    def tls_stats(self, lid: int) -> tuple[int, int, dict[str, int]]: ...
    def listener_stats(self, lid: int) -> tuple[int, int, int, int, int, int]: ...
    def server_stats(self, lid: int, slot: int) -> tuple[int, int, int, int]: ...
    # ((request bucket counts, sum s), (connect bucket counts, sum s), code row)
    def listener_metrics(
        self, lid: int
    ) -> tuple[tuple[list[int], float], tuple[list[int], float], list[int]]: ...
    def server_codes(self, lid: int, slot: int) -> list[int]: ...
    def set_maxconn(self, maxconn: int, foreign: int) -> None: ...
    def set_foreign_conns(self, foreign: int) -> None: ...
    def set_bound_from_fds(self, from_fds: bool) -> None: ...
    def limit_stats(self) -> tuple[int, int, int]: ...
    def shutdown(self, lid: int, slot: int, reason_id: int) -> int: ...
    def take_records(
        self, log_names: dict[int, tuple[bool, bytes, list[bytes]]] | None = None
    ) -> tuple[dict[int, str], list[Record]]: ...

# the log lines' number writers, for the tests that hold them to Python's text
def decimal_text(n: int, point: int = 0) -> bytes: ...

# engine/metrics.c: the histograms' bounds (seconds) and the codes counted one by one
def json_seconds(t: float) -> str: ...
def metric_buckets() -> list[float]: ...
def metric_codes() -> list[int]: ...
