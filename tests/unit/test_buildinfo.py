"""What `loadstone_build_info` and `loadstone version -v` say about OpenSSL: the
engine's own (OpenSSL_version from the C side) when the native engine is built,
since its TLS runs on that library and not on Python's ssl's."""

from __future__ import annotations

import importlib
import re
import ssl

import pytest

from loadstone import buildinfo, datapath


def test_openssl_is_the_engines_when_native() -> None:
    info = buildinfo.build_info()
    assert re.fullmatch(r"\d+\.\d+\.\d+\w*", info.openssl), info.openssl
    assert info.python_openssl in ssl.OPENSSL_VERSION
    assert info.labels()["openssl"] == info.openssl
    if datapath.IMPLEMENTATION != "native":
        pytest.skip("the native engine is not built here: Python's OpenSSL is the one")
    relay = importlib.import_module("loadstone._fastpath.relay")  # only with the engine

    assert info.openssl == relay.OPENSSL_VERSION == buildinfo.engine_openssl_version()
    described = buildinfo.describe()["OpenSSL"]
    assert described.startswith(f"{relay.OPENSSL_VERSION} (the engine's TLS)"), described
    assert f"{info.python_openssl} (Python's ssl" in described
