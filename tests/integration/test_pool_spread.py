"""Idle server connections are reused oldest first, on both data paths.

Behind one server with several workers on one port (uwsgi, mod_wsgi, nginx), each
server connection belongs to the worker that accepted it: requests reach the
workers as the proxy spreads them over its connections. Reusing the most recently
released connection first (a stack) sends sequential requests down one connection
while the others sit idle; taken oldest first, every pooled connection serves in
turn; and a connection is renewed after 500 to 1000 requests (its own limit,
drawn when it opens), so that connections opened in one burst (all accepted by
the one worker idle then) move over time, not all at once.
The backend's /echo names each request's client port, i.e. which of the proxy's
server connections carried it.
"""

from __future__ import annotations

import collections
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


def one_worker(
    backends: Callable[..., list[Backend]], loadstone: Callable[..., Loadstone], **options: Any
) -> int:
    """The port of a loadstone before one backend, with one worker (one pool:
    the native path keeps a pool per worker)."""
    config = http_config(backends(1), **options)
    config["global"]["workers"] = 1
    return port_of(loadstone(config))


def served_in_turn(ports: list[int]) -> list[int]:
    """How many requests each server connection served, in order, when they
    served one after the other (one client, one request at a time)."""
    runs: list[int] = []
    for i, port in enumerate(ports):
        if i and port == ports[i - 1]:
            runs[-1] += 1
        else:
            assert port not in ports[:i], ports  # a connection left, never back
            runs.append(1)
    return runs


def test_a_server_connection_is_renewed_after_500_to_1000_requests(
    backends: Callable[..., list[Backend]], loadstone: Callable[..., Loadstone]
) -> None:
    port = one_worker(backends, loadstone)
    ports = [a["peer_port"] for a in echoes_on_one_connection(port, 1001)]
    # One server connection for the first 500 to 1000 requests (its own limit,
    # under the default 1000), a new one then.
    first = served_in_turn(ports)[0]
    assert 500 <= first <= 1000, first


def test_server_max_requests_sets_when_a_server_connection_is_renewed(
    backends: Callable[..., list[Backend]], loadstone: Callable[..., Loadstone]
) -> None:
    # HAProxy's max-reuse, nginx's keepalive_requests: here at most 20 requests a
    # connection, each drawing its own limit from 10 to 20.
    answers = echoes_on_one_connection(one_worker(backends, loadstone, server_max_requests=20), 300)
    runs = served_in_turn([a["peer_port"] for a in answers])
    # The client's own connection stays: only the server side is renewed, and a
    # connection is opened only to replace one that reached its limit.
    assert answers[-1]["connections"] == len(runs), answers[-1]
    assert sum(runs) == 300 and max(runs) <= 20, runs
    done = runs[:-1]  # the last one may not have reached its limit yet
    assert len(done) >= 300 // 20 - 1, runs
    assert all(10 <= n <= 20 for n in done), runs
    # Not all renewed after the same count: the renewals spread in time.
    assert len(set(done)) > 1, runs


def test_server_connections_in_turn_are_renewed_apart(
    backends: Callable[..., list[Backend]], loadstone: Callable[..., Loadstone]
) -> None:
    # Four clients at once keep four server connections busy, taken in turn from
    # the pool: with one limit for all they would reach it together, and be
    # renewed in one burst (to whichever server worker waits in accept then).
    port = one_worker(backends, loadstone, server_max_requests=20)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        busy = [
            a["peer_port"]
            for b in pool.map(lambda _: echoes_on_one_connection(port, 75), range(4))
            for a in b
        ]
    # Then one client, long enough for every connection still open to reach its
    # limit: the pool holds the four (a few more if a client was quicker than a
    # release), each taking its turn, and opens none while one waits. Every server
    # connection of the busy phase has then served all it will.
    after = [a["peer_port"] for a in echoes_on_one_connection(port, 400)]
    served = collections.Counter(busy + after)
    assert max(served.values()) <= 20, served
    counts = [served[p] for p in dict.fromkeys(busy)]
    assert len(counts) >= 300 // 20, counts
    assert all(10 <= n <= 20 for n in counts), counts
    assert len(set(counts)) > 1, counts


def test_server_max_requests_1_reuses_no_server_connection(
    backends: Callable[..., list[Backend]], loadstone: Callable[..., Loadstone]
) -> None:
    answers = echoes_on_one_connection(one_worker(backends, loadstone, server_max_requests=1), 5)
    assert len({a["peer_port"] for a in answers}) == 5, answers
    assert answers[-1]["connections"] == 5, answers
