"""Whether a Galera node may take traffic, from its wsrep status: pure logic, no I/O.

Theory of operation
-------------------
The Galera probe (galera.py) runs `STATUS_QUERY` on a kept-open monitor
connection and hands the rows to `WsrepStatus.from_rows`; `judge` turns the
status and the check's options (`WsrepPolicy`) into a verdict. Nothing here
touches a socket or an event loop, so the rule is tested with tables of rows
(tests/unit/test_galera_rules.py), and the same rule serves the writer listener
(active-backup) and the readers listeners (roundrobin, leastconn).

The rule (DESIGN.md, "Galera writer policy"; ProxySQL and MaxScale galeramon
read the same variables, see ../shared/notes/galera-amqp.md):

    eligible  <=>  wsrep_cluster_status = Primary
              and  wsrep_connected = ON and wsrep_ready = ON
              and  wsrep_reject_queries = NONE
              and  wsrep_desync = OFF
              and  ( wsrep_local_state = 4 (Synced)
                     or ( wsrep_local_state = 2 (Donor/Desynced)
                          and available_when_donor
                          and wsrep_sst_donor_rejects_queries = OFF
                          and the SST method does not block the donor ) )
              and  (read_only = OFF or available_when_readonly)
              and  (wsrep_local_recv_queue <= max_recv_queue, when set)

The tests run in that order and the first that fails names the reason, so that
the detail says what an operator has to fix first: a node outside the Primary
component is "non-primary" even though it is also not ready.

Every refusal is definitive: the node itself said it cannot take traffic, so
it is taken out at once (not after `fall` checks). A node that answers with
an unreadable status (not a Galera node) is refused too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from loadstone.checks.dialogue import Verdict
from loadstone.config.model import CheckConfig

# One round trip. information_schema is readable on a node that is not ready
# (MariaDB answers SET, SHOW, table-less SELECT and information_schema reads
# there), so the status can always be read; the names are upper-case in both
# tables. WSREP_LOCAL_RECV_QUEUE is for max_recv_queue; WSREP_INCOMING_ADDRESSES
# and WSREP_CLUSTER_SIZE name the Primary Component's members (membership.py).
STATUS_QUERY = (
    "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
    "WHERE VARIABLE_NAME IN ('WSREP_LOCAL_STATE','WSREP_CLUSTER_STATUS','WSREP_READY',"
    "'WSREP_CONNECTED','WSREP_LOCAL_INDEX','WSREP_CLUSTER_SIZE','WSREP_LOCAL_RECV_QUEUE',"
    "'WSREP_INCOMING_ADDRESSES') "
    "UNION ALL SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES "
    "WHERE VARIABLE_NAME IN ('READ_ONLY','WSREP_DESYNC','WSREP_REJECT_QUERIES',"
    "'WSREP_SST_DONOR_REJECTS_QUERIES','WSREP_SST_METHOD')"
)

# Run once per monitor connection: without it a node with wsrep_sync_wait set
# globally makes even this read wait for the cluster, and the probe hangs on a
# lagging node instead of reporting it.
SESSION_SETUP = "SET SESSION wsrep_sync_wait=0"

# wsrep_local_state (codership wsrep_api.h): compare the number, not the comment.
JOINER, DONOR, JOINED, SYNCED, ERROR = 1, 2, 3, 4, 5
_STATE_NAMES = {
    JOINER: "joiner",
    DONOR: "donor",
    JOINED: "joined",
    SYNCED: "synced",
    ERROR: "error",
}

# SST methods that lock the donor for the whole transfer (rsync and mysqldump
# hold a global read lock; mariabackup does not): such a donor would make
# writes hang, so available_when_donor does not make it eligible (MaxScale's rule).
BLOCKING_SST_METHODS = frozenset({"rsync", "rsync_wan", "mysqldump"})


@dataclass(frozen=True, slots=True)
class WsrepPolicy:
    """The check's options that change the rule."""

    available_when_donor: bool = False
    available_when_readonly: bool = True
    max_recv_queue: int | None = None  # None: the receive queue is not looked at

    @classmethod
    def from_check(cls, config: CheckConfig) -> WsrepPolicy:
        return cls(
            available_when_donor=config.available_when_donor,
            available_when_readonly=config.available_when_readonly,
            max_recv_queue=config.max_recv_queue,
        )


def _on(value: str | None) -> bool:
    # GLOBAL_VARIABLES spells booleans ON/OFF; accept 1/0 and TRUE too, as some
    # versions and proxies do.
    return value is not None and value.strip().upper() in ("ON", "1", "TRUE", "YES")


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class WsrepStatus:
    """What the status query said; None where the row was missing or unreadable."""

    local_state: int | None
    cluster_status: str | None
    ready: bool
    connected: bool
    desync: bool
    reject_queries: str
    donor_rejects_queries: bool
    sst_method: str
    read_only: bool
    recv_queue: int | None
    local_index: int | None = None
    cluster_size: int | None = None
    incoming_addresses: str | None = None

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[object, object]]) -> WsrepStatus:
        """From (VARIABLE_NAME, VARIABLE_VALUE) rows, in any order and case."""
        values: dict[str, str] = {}
        for name, value in rows:
            key = _text(name).upper()
            values[key] = _text(value) if value is not None else ""
        return cls(
            local_state=_int(values.get("WSREP_LOCAL_STATE")),
            cluster_status=values.get("WSREP_CLUSTER_STATUS"),
            ready=_on(values.get("WSREP_READY")),
            connected=_on(values.get("WSREP_CONNECTED")),
            desync=_on(values.get("WSREP_DESYNC")),
            reject_queries=values.get("WSREP_REJECT_QUERIES", "NONE").strip().upper() or "NONE",
            donor_rejects_queries=_on(values.get("WSREP_SST_DONOR_REJECTS_QUERIES")),
            sst_method=values.get("WSREP_SST_METHOD", "").strip().lower(),
            read_only=_on(values.get("READ_ONLY")),
            recv_queue=_int(values.get("WSREP_LOCAL_RECV_QUEUE")),
            local_index=_int(values.get("WSREP_LOCAL_INDEX")),
            cluster_size=_int(values.get("WSREP_CLUSTER_SIZE")),
            incoming_addresses=values.get("WSREP_INCOMING_ADDRESSES"),
        )


def _text(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _out(detail: str) -> Verdict:
    return Verdict(False, detail, definitive=True)


def judge(status: WsrepStatus, policy: WsrepPolicy) -> Verdict:
    """The eligibility rule of the module docstring; the detail names the first reason."""
    if status.local_state is None or status.cluster_status is None:
        return _out("not a galera node")
    if status.cluster_status.strip().lower() != "primary" or not status.connected:
        return _out("non-primary")
    if not status.ready:
        return _out("not ready")
    if status.reject_queries != "NONE":
        return _out("rejecting queries")
    if status.desync:
        return _out("desynced")
    if status.local_state == DONOR:
        if not (
            policy.available_when_donor
            and not status.donor_rejects_queries
            and status.sst_method not in BLOCKING_SST_METHODS
        ):
            return _out("donor")
        state_detail = "donor"
    elif status.local_state == SYNCED:
        state_detail = "synced"
    else:
        # Joiner, joined (catching up after a state transfer) or error: not
        # consistent with the cluster yet.
        return _out(f"not synced ({_STATE_NAMES.get(status.local_state, status.local_state)})")
    if status.read_only and not policy.available_when_readonly:
        return _out("read-only")
    if (
        policy.max_recv_queue is not None
        and status.recv_queue is not None
        and status.recv_queue > policy.max_recv_queue
    ):
        return _out(f"recv queue {status.recv_queue}")
    return Verdict(True, state_detail)
