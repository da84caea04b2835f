"""The anycast tests need network namespaces (root) and BIRD 2 (scripts/test installs it)."""

from __future__ import annotations

import shutil

import pytest

from tests.netbed.bed import netns_available

_why_not = netns_available()
if _why_not is not None:  # a property of the machine, not a missing feature
    pytest.skip(f"network namespaces unavailable: {_why_not}", allow_module_level=True)
if shutil.which("bird") is None:
    pytest.skip("BIRD 2 is not installed (scripts/test installs bird2)", allow_module_level=True)
