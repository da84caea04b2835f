"""What this loadstone is built with: its version, the data path, the native
build's variant, the llhttp and OpenSSL it uses. `loadstone_build_info` and
`loadstone version -v` both read it from here.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass

import loadstone
from loadstone import datapath

if datapath.IMPLEMENTATION == "native":
    from loadstone._fastpath import relay


@dataclass(frozen=True)
class BuildInfo:
    version: str
    data_path: str  # "native" | "pure" (http listeners may still be pure: see their status)
    build: str  # the native build's variant: release | debug | asan...; none without it
    llhttp: str  # of the native engine; "none" without it
    openssl: str  # the OpenSSL version the pure path's TLS uses (Python's ssl)

    def labels(self) -> dict[str, str]:
        return {
            "version": self.version,
            "data_path": self.data_path,
            "build": self.build,
            "llhttp": self.llhttp,
            "openssl": self.openssl,
        }


def openssl_version() -> str:
    """ "3.0.15" from Python's "OpenSSL 3.0.15 3 Sep 2024"."""
    found = re.search(r"\d+\.\d+\.\d+\w*", ssl.OPENSSL_VERSION)
    return found.group(0) if found else ssl.OPENSSL_VERSION


def build_info() -> BuildInfo:
    native = datapath.IMPLEMENTATION == "native"
    return BuildInfo(
        version=loadstone.__version__,
        data_path=datapath.IMPLEMENTATION,
        build=datapath.BUILD,
        llhttp=relay.LLHTTP_VERSION if native else "none",
        openssl=openssl_version(),
    )
