"""Every fuzz target by name; its seed corpus is fuzz/corpus/NAME/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fuzz import (
    targets_checks,
    targets_config,
    targets_http,
    targets_proxy,
    targets_tls,
)

Target = Callable[[bytes], None]

TARGETS: dict[str, Target] = {
    "request_head": targets_http.request_head,
    "response_head": targets_http.response_head,
    "chunk_framing": targets_http.chunk_framing,
    "cookie": targets_http.cookie,
    "routing": targets_http.routing,
    "amqp_header": targets_checks.amqp_header,
    "amqp_alarms": targets_checks.amqp_alarms,
    "http_check": targets_checks.http_check,
    "send_expect": targets_checks.send_expect,
    "mysql_greeting": targets_checks.mysql_greeting,
    "galera_status": targets_checks.galera_status,
    "client_hello": targets_tls.client_hello,
    "proxy_header": targets_proxy.proxy_header,
    "config_yaml": targets_config.config_yaml,
}

CORPUS = Path(__file__).parent / "corpus"
CRASHES = Path(__file__).parent / "crashes"


def seeds(name: str) -> list[bytes]:
    """The checked-in seed inputs of a target, in a stable order."""
    folder = CORPUS / name
    return [p.read_bytes() for p in sorted(folder.iterdir())] if folder.is_dir() else []
