"""What this loadstone is built with: its version, the data path, the native
build's variant, the llhttp and OpenSSL it uses. `loadstone_build_info` and
`loadstone version -v` both read it from here.
"""

from __future__ import annotations

import contextlib
import platform
import re
import ssl
from dataclasses import dataclass
from importlib import metadata

import loadstone
from loadstone import datapath
from loadstone.kernel_features import kernel_features

if datapath.IMPLEMENTATION == "native":
    from loadstone._fastpath import relay


@dataclass(frozen=True)
class BuildInfo:
    version: str
    data_path: str  # "native" | "pure" (http listeners may still be pure: see their status)
    build: str  # the native build's variant: release | debug | asan...; none without it
    llhttp: str  # of the native engine; "none" without it
    openssl: str  # the OpenSSL the TLS runs on: the engine's when native, else Python's ssl's
    python_openssl: str  # the OpenSSL of Python's ssl (the pure path's TLS and the checks)

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


def engine_openssl_version() -> str | None:
    """The OpenSSL the native engine is linked with (its TLS termination and
    re-encryption run on it: OpenSSL_version from the C side), None without
    the engine. It can differ from Python's (a wheel's own libssl)."""
    return relay.OPENSSL_VERSION if datapath.IMPLEMENTATION == "native" else None


def build_info() -> BuildInfo:
    native = datapath.IMPLEMENTATION == "native"
    return BuildInfo(
        version=loadstone.__version__,
        data_path=datapath.IMPLEMENTATION,
        build=datapath.BUILD,
        llhttp=relay.LLHTTP_VERSION if native else "none",
        openssl=engine_openssl_version() or openssl_version(),
        python_openssl=openssl_version(),
    )


def io_uring_state() -> str:
    """Whether the native engine's workers get an io_uring for their batched
    sends here (a worker is started and stopped to find out)."""
    if datapath.IMPLEMENTATION != "native":
        return "n/a (no native data path)"
    with contextlib.closing(relay.Engine(workers=1, io_uring="auto")) as engine:
        granted = engine.io_uring_workers
    return "yes" if granted else "no (the kernel refused it)"


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe() -> dict[str, str]:
    """`loadstone version -v`: what it is built with and what the kernel offers."""
    info = build_info()
    return {
        "version": info.version,
        "data path": info.data_path,
        "build": info.build,
        "llhttp": info.llhttp,
        "OpenSSL": (
            f"{info.openssl} (the engine's TLS), {info.python_openssl} (Python's ssl: "
            "the pure path's TLS and the checks)"
            if info.data_path == "native"
            else f"{info.openssl} (Python's ssl: the pure path's TLS)"
        ),
        "Python": platform.python_version(),
        "uvloop": _package_version("uvloop"),
        "kernel": f"{platform.system()} {platform.release()}",
        "io_uring": io_uring_state(),
        **kernel_features(),
    }
