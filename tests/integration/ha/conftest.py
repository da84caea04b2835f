"""Shared by the HA tests: they need network namespaces (root, CAP_SYS_ADMIN)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.netbed.bed import NetBed, netns_available

PROBE = Path(__file__).resolve().parents[2] / "netbed" / "probe.py"

_why_not = netns_available()
if _why_not is not None:  # a property of the machine, not a missing feature
    pytest.skip(f"network namespaces unavailable: {_why_not}", allow_module_level=True)


def connect_result(bed: NetBed, host: str, address: str, port: int, timeout: float = 1.0) -> str:
    """connected | refused | timeout | unreachable, seen from `host`."""
    argv = [sys.executable, str(PROBE), "connect", address, str(port), str(timeout)]
    return bed.run(host, argv).strip()
