"""Request rules through a running loadstone, in front of a real aiohttp
backend: what the client gets back, and what the server sees (or never sees)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable

import pytest

from tests.integration.harness import Backend, Loadstone, free_port, wait_for

pytestmark = pytest.mark.usefixtures("datapath")


def http(port: int, request: bytes, source: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection; (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), source_address=(source, 0)) as s:
        s.settimeout(5)
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def get(path: str, host: str = "api.example.com", extra: str = "", method: str = "GET") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
    ).encode()


def test_rules_on_a_running_listener(
    backends: Callable[..., list[Backend]], loadstone: Callable[..., Loadstone]
) -> None:
    (web,) = backends(1)
    port = free_port()
    ls = loadstone(
        {
            "listeners": {
                "api": {
                    "bind": [f"127.0.0.1:{port}"],
                    "mode": "http",
                    "servers": [{"name": web.name, "address": web.address}],
                    "request_rules": [
                        {
                            "redirect": {"scheme": "https", "code": 301},
                            "if": {"host": "www.example.com"},
                        },
                        {"deny": 403, "if": {"path_prefix": "/admin"}},
                        {"set_header": {"name": "X-Rule", "value": "seen"}},
                        {"del_header": "X-Secret"},
                        {"allow": True, "if": {"src": "127.0.0.5"}},
                        {"allow": True, "if": {"method": "GET", "path_prefix": "/echo"}},
                        {"deny": 405},
                    ],
                }
            }
        }
    )
    status, headers, _ = http(port, get("/x?y=1", host="www.example.com"))
    assert (status, headers["location"]) == (301, "https://www.example.com/x?y=1")
    assert http(port, get("/admin/users"), source="127.0.0.5")[0] == 403
    status, _, body = http(port, get("/echo", extra="X-Secret: s3cret\r\n"))
    assert status == 200
    seen = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert seen["x-rule"] == "seen" and "x-secret" not in seen
    # The allow-list: POST only from 127.0.0.5; others get the final deny.
    assert http(port, get("/echo", method="POST", extra="Content-Length: 0\r\n"))[0] == 405
    post_from_5 = http(
        port, get("/echo", method="POST", extra="Content-Length: 0\r\n"), "127.0.0.5"
    )
    assert post_from_5[0] == 200
    status = ls.status()["listeners"]["api"]
    if status["data_path"] == "pure" and status.get("data_path_reason"):
        assert (
            "request_rules" in status["data_path_reason"]
            or "LOADSTONE" in status["data_path_reason"]
        )

    def ends() -> list[str]:
        return [line["end"] for line in ls.session_logs() if line.get("listener") == "api"]

    # The answers the rules made are logged as such, with their status.
    wait_for(lambda: len(ends()) == 5, what="five access-log lines")
    assert sorted(ends()) == ["denied", "denied", "ok", "ok", "redirect"]


def test_rate_limits_answer_429_to_one_client_while_another_is_served(
    backends: Callable[..., list[Backend]], loadstone: Callable[..., Loadstone]
) -> None:
    """openstack-ansible's stick-table counters: a client over its request rate,
    or with too many errors, gets 429; another client is served meanwhile."""
    (web,) = backends(1)
    port = free_port()
    loadstone(
        {
            "listeners": {
                "api": {
                    "bind": [f"127.0.0.1:{port}"],
                    "mode": "http",
                    "servers": [{"name": web.name, "address": web.address}],
                    "request_rules": [
                        {
                            "deny": 429,
                            "if": {
                                "path_prefix": "/auth",
                                "request_rate": {"above": 5, "per": "60s"},
                            },
                        },
                        {"deny": 429, "if": {"error_rate": {"above": 3, "per": "60s"}}},
                    ],
                }
            }
        }
    )
    over = [http(port, get("/auth/tokens"), "127.0.0.5")[0] for _ in range(8)]
    assert over == [200] * 5 + [429] * 3
    assert http(port, get("/auth/tokens"), "127.0.0.6")[0] == 200  # another client is served
    assert http(port, get("/"), "127.0.0.5")[0] == 200  # the limit is on /auth only
    # Errors are counted once answered: the 4th 404 makes the rate 4, above 3,
    # so from the 5th request on anything gets 429 (HAProxy: sc_http_err_rate gt 3).
    errors = [http(port, get("/status?code=404"), "127.0.0.7")[0] for _ in range(5)]
    assert errors == [404, 404, 404, 404, 429]
    assert http(port, get("/"), "127.0.0.7")[0] == 429
    assert http(port, get("/"), "127.0.0.6")[0] == 200
