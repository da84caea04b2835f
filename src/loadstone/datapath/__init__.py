"""The data path: the native one when it is built and allowed, else the pure twin.

The choice is made once, at import time, as aiohttp does for its parser:
LOADSTONE_NO_EXTENSIONS=1 forces the pure-Python path, and so does a build
without the extension (no compiler, not Linux: no epoll/splice).

Mode http is chosen per listener on top of that (`http_frontend`): the native
HTTP path serves a listener whose configuration uses only what it implements
(loadstone.datapath.http_native.refusal), the pure one the others. Mode tcp is
too (`tcp_frontend`): the native engine terminates TLS, re-encrypts to servers
and routes on SNI in its workers; a listener using what
loadstone.datapath.native_gaps lists (monitor, request rules, rate limits) or
routing on SNI to more pools than the engine numbers
(sni_passthrough.native_refusal) is served by the pure path, which says so in
its status (data_path_reason).

The four frontends (tcp_pure, http_pure, tcp_native, http_native) all answer to
`seam.Frontend`, which is all the runtime and the admin API know of them.

A native engine whose llhttp fails its self-test does not start (DataPathError,
raised by `configure`): it never falls back to the pure path silently.
"""

from __future__ import annotations

import os

from loadstone.config.model import GlobalConfig, ListenerConfig
from loadstone.datapath import native_gaps, sni_passthrough
from loadstone.datapath.http_pure import HttpFrontend as PureHttpFrontend
from loadstone.datapath.limits import LIMIT
from loadstone.datapath.seam import Frontend, FrontendFactory
from loadstone.datapath.tcp_pure import TcpFrontend as PureTcpFrontend

NO_EXTENSIONS = os.environ.get("LOADSTONE_NO_EXTENSIONS", "") not in ("", "0")

TcpFrontend: FrontendFactory = PureTcpFrontend
IMPLEMENTATION = "pure"
BUILD = "none"  # the native build's variant: release | debug; none without it


class DataPathError(Exception):
    """The data path cannot start; the message is one line saying why."""


if not NO_EXTENSIONS:
    try:
        from loadstone.datapath import http_native, tcp_native
    except ImportError:
        pass
    else:
        TcpFrontend = tcp_native.TcpFrontend
        IMPLEMENTATION = "native"
        BUILD = tcp_native.BUILD


def http_frontend(config: ListenerConfig) -> tuple[FrontendFactory, str, str | None]:
    """The frontend class for an http listener, its path ("native" | "pure") and,
    for the pure one, why the native path does not serve it."""
    if IMPLEMENTATION != "native":
        why = "LOADSTONE_NO_EXTENSIONS=1" if NO_EXTENSIONS else "native data path not built"
        return PureHttpFrontend, "pure", why
    refused = http_native.refusal(config) or native_gaps.refusal(config)
    if refused is not None:
        return PureHttpFrontend, "pure", refused
    return http_native.HttpFrontend, "native", None


def tcp_frontend(config: ListenerConfig) -> tuple[FrontendFactory, str, str | None]:
    """The frontend class for a tcp listener, its path and, for the pure one when
    the native path is built, why it does not serve it."""
    if IMPLEMENTATION != "native":
        return PureTcpFrontend, "pure", None
    refused = (
        http_native.tls_refusal(config)
        or sni_passthrough.native_refusal(config)
        or native_gaps.refusal(config)
    )
    if refused is not None:
        return PureTcpFrontend, "pure", refused
    return tcp_native.TcpFrontend, "native", None


def configure(global_config: GlobalConfig) -> None:
    """Settings of the data path as a whole (workers, splice), before any listener.

    Raises DataPathError when the native engine cannot serve (its llhttp failed
    the self-test)."""
    LIMIT.configure(global_config.maxconn)
    if IMPLEMENTATION == "native":
        try:
            http_native.init_llhttp()
        except RuntimeError as exc:
            raise DataPathError(f"native data path: {exc}") from None
        tcp_native.configure(global_config)


def retune(global_config: GlobalConfig) -> None:
    """The global settings a reload changes in the running data path."""
    LIMIT.configure(global_config.maxconn)
    if IMPLEMENTATION == "native":
        tcp_native.set_poll_spin(global_config.poll_spin)


__all__ = [
    "BUILD",
    "IMPLEMENTATION",
    "NO_EXTENSIONS",
    "DataPathError",
    "Frontend",
    "FrontendFactory",
    "TcpFrontend",
    "configure",
    "http_frontend",
    "retune",
    "tcp_frontend",
]
