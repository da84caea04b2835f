"""GET /api/v1/health?hold=SECONDS: a health check that notices a dead loadstone
at once, for keepalived's vrrp_script.

keepalived runs a vrrp_script at most once a second; a loadstone killed -9
just after a run went unnoticed until the next one, and the VIP with no
serving holder in that second cost the clients a SYN retransmission (1 s).
With `hold`, a healthy answer is a chunked body left open for that long: the
script (curl -f, `loadstone ctl health --hold`) runs while the process lives
and fails the moment the body ends early, which is what the kernel does to
the connection when the process dies, and what loadstone itself does when it
turns unhealthy (a SIGTERM's stop_delay, a listener lost) while holding.

keepalived's own vrrp_track_process would notice a death at once too, but the
kernel's process-events connector it relies on answers only in the initial
network and PID namespaces: a keepalived in a container or a network namespace
gets no events, and a missing listen is FAULT for good (docs/high-availability.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
from aiohttp import web

MAX_HOLD = 60.0
# How often a held check asks the runtime again: it ends this late at worst
# after loadstone turns unhealthy (a death ends it at once, through the kernel).
RECHECK = 0.05


def requested_hold(request: web.Request) -> float:
    """The `hold` query parameter in seconds; 0 without one."""
    text = request.query.get("hold")
    if text is None:
        return 0.0
    try:
        hold = float(text)
    except ValueError:
        hold = -1.0
    if not 0 <= hold <= MAX_HOLD:
        raise web.HTTPBadRequest(text=f"hold: seconds from 0 to {MAX_HOLD:g}, not {text!r}\n")
    return hold


async def held_health(
    request: web.Request, problems: Callable[[], list[str]], hold: float
) -> web.StreamResponse:
    """The healthy answer, its chunked body ended after `hold` seconds, or cut
    (no last chunk: the client sees a truncated body) once `problems()` is not
    empty."""
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(orjson.dumps({"healthy": True, "problems": []}) + b"\n")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + hold
    while (left := deadline - loop.time()) > 0:
        await asyncio.sleep(min(RECHECK, left))
        if problems():
            if request.transport is not None:
                request.transport.abort()
            return response
    await response.write_eof()
    return response
