"""Features of the pure data path the native engine does not have yet, beside
those http_native.refusal names: a listener using one is served by the pure
path, which says why in the status API's `data_path_reason`."""

from __future__ import annotations

from loadstone.config.model import ListenerConfig

_NOT_NATIVE = "native data path: not implemented"


def refusal(listener: ListenerConfig) -> str | None:
    """Why the native engine cannot serve `listener`, or None."""
    if listener.monitor is not None:
        return f"monitor ({_NOT_NATIVE})"
    if listener.request_rules:
        return f"request_rules ({_NOT_NATIVE})"
    return None
