"""The Galera eligibility rule, as tables of status rows (no server, no event loop)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from loadstone.checks import galera_rules
from loadstone.checks.dialogue import Verdict
from loadstone.checks.galera_rules import (
    STATUS_QUERY,
    WsrepPolicy,
    WsrepStatus,
    judge,
)
from loadstone.config.model import CheckConfig

# A Synced node of a healthy 3-node cluster, as information_schema spells it.
SYNCED_ROWS: dict[str, str] = {
    "WSREP_LOCAL_STATE": "4",
    "WSREP_CLUSTER_STATUS": "Primary",
    "WSREP_READY": "ON",
    "WSREP_CONNECTED": "ON",
    "WSREP_LOCAL_INDEX": "0",
    "WSREP_CLUSTER_SIZE": "3",
    "WSREP_LOCAL_RECV_QUEUE": "0",
    "READ_ONLY": "OFF",
    "WSREP_DESYNC": "OFF",
    "WSREP_REJECT_QUERIES": "NONE",
    "WSREP_SST_DONOR_REJECTS_QUERIES": "OFF",
    "WSREP_SST_METHOD": "mariabackup",
}


def rows(**changes: str | None) -> list[tuple[str, str]]:
    """SYNCED_ROWS with some values changed; None drops the row."""
    merged: dict[str, str | None] = {**SYNCED_ROWS, **{k.upper(): v for k, v in changes.items()}}
    return [(name, value) for name, value in merged.items() if value is not None]


def verdict(policy: WsrepPolicy | None = None, **changes: str | None) -> Verdict:
    return judge(WsrepStatus.from_rows(rows(**changes)), policy or WsrepPolicy())


DONOR_OK = WsrepPolicy(available_when_donor=True)
NO_RO = WsrepPolicy(available_when_readonly=False)


@pytest.mark.parametrize(
    ("changes", "policy", "ok", "detail"),
    [
        ({}, WsrepPolicy(), True, "synced"),
        # Outside the Primary component: also not ready, but the cause comes first.
        (
            {"wsrep_cluster_status": "non-Primary", "wsrep_ready": "OFF"},
            WsrepPolicy(),
            False,
            "non-primary",
        ),
        (
            {"wsrep_cluster_status": "Disconnected", "wsrep_connected": "OFF"},
            WsrepPolicy(),
            False,
            "non-primary",
        ),
        ({"wsrep_connected": "OFF"}, WsrepPolicy(), False, "non-primary"),
        ({"wsrep_ready": "OFF"}, WsrepPolicy(), False, "not ready"),
        ({"wsrep_reject_queries": "ALL"}, WsrepPolicy(), False, "rejecting queries"),
        ({"wsrep_reject_queries": "ALL_KILL"}, WsrepPolicy(), False, "rejecting queries"),
        # wsrep_desync=ON puts the node in state 2: "desynced", not "donor".
        ({"wsrep_desync": "ON", "wsrep_local_state": "2"}, WsrepPolicy(), False, "desynced"),
        ({"wsrep_desync": "ON", "wsrep_local_state": "2"}, DONOR_OK, False, "desynced"),
        ({"wsrep_desync": "ON"}, WsrepPolicy(), False, "desynced"),
        # Donor: out unless opted in, not rejecting queries, non-blocking SST.
        ({"wsrep_local_state": "2"}, WsrepPolicy(), False, "donor"),
        ({"wsrep_local_state": "2"}, DONOR_OK, True, "donor"),
        (
            {"wsrep_local_state": "2", "wsrep_sst_donor_rejects_queries": "ON"},
            DONOR_OK,
            False,
            "donor",
        ),
        ({"wsrep_local_state": "2", "wsrep_sst_method": "rsync"}, DONOR_OK, False, "donor"),
        ({"wsrep_local_state": "2", "wsrep_sst_method": "mysqldump"}, DONOR_OK, False, "donor"),
        ({"wsrep_local_state": "1"}, WsrepPolicy(), False, "not synced (joiner)"),
        ({"wsrep_local_state": "3"}, WsrepPolicy(), False, "not synced (joined)"),
        ({"wsrep_local_state": "5"}, WsrepPolicy(), False, "not synced (error)"),
        ({"wsrep_local_state": "7"}, WsrepPolicy(), False, "not synced (7)"),
        # read_only counts only when the check says so.
        ({"read_only": "ON"}, WsrepPolicy(), True, "synced"),
        ({"read_only": "ON"}, NO_RO, False, "read-only"),
        ({"read_only": "OFF"}, NO_RO, True, "synced"),
        # A lagging reader.
        ({"wsrep_local_recv_queue": "1234"}, WsrepPolicy(), True, "synced"),
        (
            {"wsrep_local_recv_queue": "1234"},
            WsrepPolicy(max_recv_queue=100),
            False,
            "recv queue 1234",
        ),
        ({"wsrep_local_recv_queue": "100"}, WsrepPolicy(max_recv_queue=100), True, "synced"),
        ({"wsrep_local_recv_queue": "1"}, WsrepPolicy(max_recv_queue=0), False, "recv queue 1"),
        ({"wsrep_local_recv_queue": None}, WsrepPolicy(max_recv_queue=0), True, "synced"),
        # Not a Galera node at all (wsrep provider not loaded: no status rows).
        (
            {"wsrep_local_state": None, "wsrep_cluster_status": None},
            WsrepPolicy(),
            False,
            "not a galera node",
        ),
        ({"wsrep_local_state": "x"}, WsrepPolicy(), False, "not a galera node"),
    ],
)
def test_rule(changes: dict[str, str | None], policy: WsrepPolicy, ok: bool, detail: str) -> None:
    v = verdict(policy, **changes)
    assert (v.ok, v.detail) == (ok, detail)
    # Every refusal was read from the node: definitive, out at once.
    assert v.definitive is (not ok)


def test_rows_in_any_case_order_and_as_bytes() -> None:
    raw = [(k.lower().encode(), v.encode()) for k, v in reversed(list(SYNCED_ROWS.items()))]
    status = WsrepStatus.from_rows(raw)
    assert status.local_state == 4 and status.cluster_status == "Primary"
    assert status.local_index == 0 and status.cluster_size == 3
    assert judge(status, WsrepPolicy()) == Verdict(True, "synced")


@pytest.mark.parametrize("on", ["ON", "on", "1", "TRUE"])
def test_boolean_spellings(on: str) -> None:
    assert verdict(wsrep_desync=on).detail == "desynced"


def test_policy_from_check() -> None:
    config = CheckConfig(
        type="galera",
        user="m",
        available_when_donor=True,
        available_when_readonly=False,
        max_recv_queue=7,
    )
    assert WsrepPolicy.from_check(config) == WsrepPolicy(True, False, 7)
    assert WsrepPolicy.from_check(CheckConfig(type="galera", user="m")) == WsrepPolicy()


def test_query_reads_every_variable_the_rule_needs() -> None:
    for name in SYNCED_ROWS:
        assert f"'{name}'" in STATUS_QUERY
    # One round trip: a single statement.
    assert (
        STATUS_QUERY.count("SELECT") == 2
        and "UNION ALL" in STATUS_QUERY
        and ";" not in STATUS_QUERY
    )


def test_rules_module_does_no_io() -> None:
    # Sans-IO: the rule imports nothing that does I/O (the package __init__
    # imports the scheduler, so look at this module's own imports).
    tree = ast.parse(Path(galera_rules.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {
        "__future__",
        "collections",
        "collections.abc",
        "dataclasses",
        "loadstone.checks.dialogue",
        "loadstone.config.model",
    }, imported
