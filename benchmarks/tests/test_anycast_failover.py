"""What benchmarks/anycast_failover.py reads from the client's flow lines."""

from __future__ import annotations

from tests.netbed.flows import parse

from benchmarks.anycast_failover import broken_shares, client_view

# START ok|fail TOOK SERVED_BY BACKEND CONN SOURCE, as tests/netbed/flows.py writes them.
LINES = [
    "10.00 ok 0.002 lb1 be1 0.1 198.18.1.2",
    "10.00 ok 0.002 lb2 be1 1.1 198.18.1.3",
    "10.01 ok 0.002 lb2 be1 2.1 198.18.1.4",
    "10.01 ok 0.002 lb3 be1 3.1 198.18.1.5",
    # the fault at 10.02: lb2 is lost; lb3's connection is moved by the router
    "10.03 fail 0.001 - ConnectionResetError 1.1 198.18.1.3",
    "10.03 fail 0.001 - ConnectionResetError 2.1 198.18.1.4",
    "10.04 ok 0.002 lb1 be1 0.1 198.18.1.2",
    "10.05 fail 0.001 - ConnectionResetError 3.1 198.18.1.5",
    "10.06 ok 0.002 lb3 be1 1.2 198.18.1.3",
    "truncated line at the kill",
]


def test_client_view_counts_failures_after_the_fault() -> None:
    view = client_view(parse(LINES), fault=10.02)
    assert view == {"failed_requests": 3, "client_outage_s": 0.03, "requests": 5}


def test_broken_shares_split_the_lost_instances_connections_from_the_others() -> None:
    shares = broken_shares(parse(LINES), fault=10.02, victim="lb2")
    assert shares == {
        "connections": 4,
        "to_lost": 2,
        "lost_broken_share": 1.0,
        "others_broken_share": 0.5,
        "all_broken_share": 0.75,
    }
