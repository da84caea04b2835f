"""Idle server connections are reused oldest first, on both data paths.

Behind one server with several workers on one port (uwsgi, mod_wsgi, nginx), each
server connection belongs to the worker that accepted it: requests reach the
workers as the proxy spreads them over its connections. Reusing the most recently
released connection first (a stack) sends sequential requests down one connection
while the others sit idle; taken oldest first, every pooled connection serves in
turn; and a connection is renewed after 1000 requests, so that connections
opened in one burst (all accepted by the one worker idle then) move over time.
The backend's /echo names each request's client port, i.e. which of the proxy's
server connections carried it.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.harness import Backend, Loadstone
from tests.integration.test_http_mode import http_config, port_of

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("datapath")]


def get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
        return bytes(answer.read())


def test_sequential_requests_take_turns_on_the_pooled_connections(
    backends: Callable[..., list[Backend]], loadstone: Callable[..., Loadstone]
) -> None:
    config = http_config(backends(1))
    # One worker, one pool (the native path keeps a pool per worker).
    config["global"]["workers"] = 1
    port = port_of(loadstone(config))
    # Two requests in flight at once need two server connections; both go back
    # to the pool when they are answered.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert len(list(pool.map(lambda _: get(port, "/slow?delay=0.5"), range(2)))) == 2

    # /echo names the server connection that carried it (the proxy's port) and
    # how many the backend has seen.
    answers = [json.loads(get(port, "/echo")) for _ in range(4)]
    ports = [a["peer_port"] for a in answers]
    assert {a["connections"] for a in answers} == {2}, answers  # no connection opened
    # Both pooled connections served, in turn: the one idle longest each time.
    assert ports[0] != ports[1] and ports[0] == ports[2] and ports[1] == ports[3], ports


def echoes_on_one_connection(port: int, n: int) -> list[dict[str, Any]]:
    """`n` requests of /echo one after the other on one client connection."""
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        answers = []
        for _ in range(n):
            client.request("GET", "/echo")
            answers.append(json.loads(client.getresponse().read()))
        return answers
    finally:
        client.close()


def test_a_server_connection_is_renewed_after_1000_requests(
    backends: Callable[..., list[Backend]], loadstone: Callable[..., Loadstone]
) -> None:
    config = http_config(backends(1))
    config["global"]["workers"] = 1
    ports = [a["peer_port"] for a in echoes_on_one_connection(port_of(loadstone(config)), 1001)]
    # One server connection for the first 1000 (kept between them), a new one then.
    assert set(ports[:1000]) == {ports[0]}
    assert ports[1000] != ports[0]


def test_server_max_requests_sets_when_a_server_connection_is_renewed(
    backends: Callable[..., list[Backend]], loadstone: Callable[..., Loadstone]
) -> None:
    # HAProxy's max-reuse, nginx's keepalive_requests: here 3 requests a connection.
    config = http_config(backends(1), server_max_requests=3)
    config["global"]["workers"] = 1
    answers = echoes_on_one_connection(port_of(loadstone(config)), 7)
    ports = [a["peer_port"] for a in answers]
    # Three requests on each server connection, then a new one (the client's own
    # connection stays: only the server side is renewed).
    assert ports[0] == ports[1] == ports[2] != ports[3], ports
    assert ports[3] == ports[4] == ports[5] != ports[6], ports
    assert answers[6]["connections"] == 3, answers
