"""The command session of HAProxy's runtime socket, sans-IO: bytes in, bytes out.

Theory of operation
-------------------
HAProxy's CLI reads one line at a time. A line holds one command or several
separated by `;`; each command's words are separated by spaces. Without
`prompt` the session is non-interactive: the first line is run, its output
written and the connection closed (`echo "show info" | socat STDIO SOCK`).
`prompt` makes it interactive: after each line the output is followed by
"\n> " and the session reads the next line, until `quit` or the client closes.
In both modes each line's output ends with an empty line, which is how a client
knows the answer is complete.

An unknown command gets HAProxy's usage text, a command above the socket's
level "Permission denied"; neither ends an interactive session. The words are
HAProxy 2.6's (src/cli.c, src/server.c, src/stats.c).

The session reads the running proxy through `RuntimeView` and changes it only
through loadstone.server_actions, the code the admin HTTP API runs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from loadstone.config.model import HaproxySocketLevel as Level
from loadstone.haproxy_socket import stats
from loadstone.haproxy_socket.proxies import Backend, all_backends, find_backends
from loadstone.runtime_view import RuntimeView
from loadstone.server import ServerRuntime
from loadstone.server_actions import MAX_WEIGHT, set_state, set_weight, shutdown_sessions

_RANK: Final = {"user": 0, "operator": 1, "admin": 2}
# A line longer than this without a newline is not a command (HAProxy's bufsize).
MAX_LINE: Final = 16384
PERMISSION_DENIED: Final = "Permission denied\n"


@dataclass(frozen=True, slots=True)
class Command:
    words: tuple[str, ...]  # the keyword words, e.g. ("show", "stat")
    args: str  # usage of the arguments, for help
    doc: str
    level: Level
    run: Callable[[Session, list[str]], str]  # (session, arguments) -> output

    @property
    def usage(self) -> str:
        return " ".join(self.words) + (f" {self.args}" if self.args else "")


class Session:
    """One client connection. Feed it with `receive`, write what it returns;
    close the connection once `closed` is set."""

    def __init__(
        self,
        runtime: RuntimeView,
        level: Level = "admin",
        pid: int = 0,
        node: str = "",
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.runtime = runtime
        self.level: Level = level
        self.pid = pid
        self.node = node  # `show info`'s node: the host name, as HAProxy's default
        # Idle time after which the server closes the connection; `set timeout cli` sets it.
        self.timeout = timeout
        self.clock = clock
        self.interactive = False
        self.closed = False
        self._buffer = bytearray()

    # -- bytes -------------------------------------------------------------------------

    def receive(self, data: bytes) -> bytes:
        """Run the complete lines of `data` (after what was buffered); the output."""
        self._buffer += data
        out: list[str] = []
        while not self.closed:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LINE:
                    self._buffer.clear()
                    self.closed = True
                    out.append("Line too long.\n\n")
                break
            line = bytes(self._buffer[:end]).rstrip(b"\r").decode("utf-8", "replace")
            del self._buffer[: end + 1]
            out.append(self.run_line(line))
        return "".join(out).encode()

    def end_of_input(self) -> bytes:
        """The client closed its side: a last line without newline is still run."""
        if self.closed or not self._buffer.strip():
            self.closed = True
            return b""
        out = self.receive(b"\n")
        self.closed = True
        return out

    # -- lines -------------------------------------------------------------------------

    def run_line(self, line: str) -> str:
        was_interactive = self.interactive
        out = []
        for text in line.split(";"):
            words = text.split()
            if words:
                out.append(self.run_command(words))
            if self.closed:
                return "".join(out)
        if self.interactive:
            return "".join(out) + "\n> "
        if was_interactive:  # `prompt` again: back to non-interactive, which closes
            self.closed = True
            return "".join(out)
        self.closed = True
        return "".join(out) + "\n"

    def run_command(self, words: list[str]) -> str:
        command = _find(words)
        if command is None:
            return _usage(words, self.level)
        if _RANK[command.level] > _RANK[self.level]:
            return PERMISSION_DENIED
        return command.run(self, words[len(command.words) :])

    # -- commands ----------------------------------------------------------------------

    def help(self, args: list[str]) -> str:
        return _usage([], self.level, help_asked=True)

    def prompt(self, args: list[str]) -> str:
        self.interactive = not self.interactive
        return ""

    def quit(self, args: list[str]) -> str:
        self.closed = True
        return ""

    def show_info(self, args: list[str]) -> str:
        return stats.show_info(self.runtime, self.pid, self.node, self.clock())

    def show_stat(self, args: list[str]) -> str:
        if args[:1] == ["domain"]:
            if args[1:2] not in (["proxy"], []):
                return "Unsupported domain.\n"
            args = args[2:]
        only = stats.StatFilter()
        if len(args) >= 3 and args[0] not in ("typed", "json", "desc", "up", "no-maint"):
            try:
                types, sid = int(args[1]), int(args[2])
            except ValueError:
                return "Usage: show stat [{<iid>|<proxy>} <type> <sid>]\n"
            only = stats.StatFilter(None if args[0] == "-1" else args[0], types, sid)
        return stats.show_stat(self.runtime, self.pid, self.clock(), only)

    def set_timeout_cli(self, args: list[str]) -> str:
        seconds = args[0] if args else ""
        if not seconds.isdigit() or int(seconds) == 0:
            return "Expects an integer value.\n"
        self.timeout = float(seconds)
        return ""

    def show_servers_state(self, args: list[str]) -> str:
        backends = all_backends(self.runtime.listeners)
        if args:
            backends = [b for b in backends if b.name == args[0]]
            if not backends:
                return "Can't find backend.\n"
        return stats.show_servers_state(backends, self.clock())

    def show_backend(self, args: list[str]) -> str:
        names = [b.name for b in all_backends(self.runtime.listeners)]
        return "# name\n" + "".join(f"{name}\n" for name in names)

    def _servers(self, arg: str | None) -> list[tuple[Backend, ServerRuntime]] | str:
        """The server `backend/server` names in every copy of the backend, or the error."""
        backend, slash, server = (arg or "").partition("/")
        if not backend or not slash or not server:
            return "Require 'backend/server'.\n"
        backends = find_backends(self.runtime.listeners, backend)
        if not backends:
            return "No such backend.\n"
        found = [(b, s) for b in backends for name, s in b.servers if name == server]
        return found or "No such server.\n"

    def get_weight(self, args: list[str]) -> str:
        found = self._servers(args[0] if args else None)
        if isinstance(found, str):
            return found
        server = found[0][1]
        return f"{server.weight} (initial {server.config.weight})\n"

    def set_weight(self, args: list[str]) -> str:
        found = self._servers(args[0] if args else None)
        if isinstance(found, str):
            return found
        if len(args) < 2:
            return "Require <weight> or <weight%>.\n"
        return self._weight(found, args[1])

    def _weight(self, found: list[tuple[Backend, ServerRuntime]], text: str) -> str:
        """HAProxy's weight argument: N (0-256) or N% of the configured weight."""
        m = re.fullmatch(r"(\d+)(%?)(.*)", text)
        if m is None or m[3]:
            return "Trailing garbage in weight string.\n"
        for backend, server in found:
            weight = int(m[1])
            if m[2]:
                weight = min(MAX_WEIGHT, server.config.weight * weight // 100)
            elif weight > MAX_WEIGHT:
                return f"Absolute weight can only be between 0 and {MAX_WEIGHT} inclusive.\n"
            set_weight(backend.listener.pool, server, weight)
        return ""

    def _set_state(self, args: list[str], state: str) -> str:
        found = self._servers(args[0] if args else None)
        if isinstance(found, str):
            return found
        for backend, server in found:
            set_state(backend.listener.pool, server, state)
        return ""

    def enable_server(self, args: list[str]) -> str:
        return self._set_state(args, "ready")

    def disable_server(self, args: list[str]) -> str:
        return self._set_state(args, "maint")

    def set_server(self, args: list[str]) -> str:
        found = self._servers(args[0] if args else None)
        if isinstance(found, str):
            return found
        what = args[1] if len(args) > 1 else ""
        value = args[2] if len(args) > 2 else ""
        if what == "state":
            if value not in ("ready", "drain", "maint"):
                return "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n"
            return self._set_state(args, value)
        if what == "weight":
            return self._weight(found, value)
        return "'set server <srv>' only supports 'state' and 'weight' in loadstone.\n"

    def shutdown_sessions_server(self, args: list[str]) -> str:
        found = self._servers(args[0] if args else None)
        if isinstance(found, str):
            return found
        for _, server in found:
            shutdown_sessions(server)
        return ""


COMMANDS: Final = (
    Command(("help",), "", "this message", "user", Session.help),
    Command(("prompt",), "", "toggle interactive mode with prompt", "user", Session.prompt),
    Command(("quit",), "", "disconnect", "user", Session.quit),
    Command(("show", "info"), "", "report information about the running process", "user",
            Session.show_info),
    Command(("show", "stat"), "[{<iid>|<proxy>} <type> <sid>]",
            "report counters for each proxy and server", "user", Session.show_stat),
    Command(("show", "servers", "state"), "[<backend>]", "dump volatile server information",
            "user", Session.show_servers_state),
    Command(("show", "backend"), "", "list backends in the current running config", "user",
            Session.show_backend),
    Command(("set", "timeout", "cli"), "<delay>", "change this session's idle timeout",
            "user", Session.set_timeout_cli),
    Command(("get", "weight"), "<bk>/<srv>", "report a server's current weight", "user",
            Session.get_weight),
    Command(("set", "weight"), "<bk>/<srv> (<w>|<w>%)", "change a server's weight", "admin",
            Session.set_weight),
    Command(("set", "server"), "<bk>/<srv> state|weight <value>", "change a server's state",
            "admin", Session.set_server),
    Command(("enable", "server"), "<bk>/<srv>", "enable a disabled server", "admin",
            Session.enable_server),
    Command(("disable", "server"), "<bk>/<srv>", "disable a server (maintenance)", "admin",
            Session.disable_server),
    Command(("shutdown", "sessions", "server"), "<bk>/<srv>",
            "kill sessions on a server", "admin", Session.shutdown_sessions_server),
)  # fmt: skip


def _find(words: list[str]) -> Command | None:
    for command in COMMANDS:
        n = len(command.words)
        if tuple(words[:n]) == command.words:
            return command
    return None


def _usage(words: list[str], level: Level, help_asked: bool = False) -> str:
    """HAProxy's answer to help and to an unknown command (cli_gen_usage_msg)."""
    if help_asked:
        head = "The following commands are valid at this level:\n"
    elif not words:
        head = "Unknown command. Please enter one of the following commands only:\n"
    else:
        head = "Unknown command, but maybe one of the following ones is a better match:\n"
    allowed = [c for c in COMMANDS if _RANK[c.level] <= _RANK[level]]
    if words and not help_asked:
        # The commands sharing the most leading words with what was typed.
        def shared(c: Command) -> int:
            return next(
                (i for i, (a, b) in enumerate(zip(c.words, words, strict=False)) if a != b),
                min(len(c.words), len(words)),
            )

        best = max((shared(c) for c in allowed), default=0)
        allowed = [c for c in allowed if shared(c) == best] if best else allowed
    width = max(len(c.usage) for c in COMMANDS)
    return head + "".join(f"  {c.usage:<{width}} : {c.doc}\n" for c in allowed)
