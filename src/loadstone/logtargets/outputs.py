"""The process's two log outputs, built from global.log: events (Python logging:
starts, state changes, reloads, errors) and session/request lines.

`LogOutputs.open` opens both destinations (a file that cannot be opened is a
start-up error), `install` routes Python logging to the events one, `reopen`
serves SIGUSR1 and `loadstone ctl reopen-logs`, `close` delivers what is queued
before the process exits.

JSON events have the fields `time` (Unix seconds, float), `level` (debug, info,
warning, error, critical), `logger` (e.g. loadstone.runtime), `message`, and
`exception` (the traceback) when there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import Any

import orjson

from loadstone.config.model import LogConfig, LogFormat, LogTarget
from loadstone.logtargets import parse_destination
from loadstone.logtargets.sinks import FileSink, Sink, StreamSink, SyslogSink
from loadstone.logtargets.syslog import FACILITIES, SyslogFormatter, severity_of


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()


def event_formatter(fmt: LogFormat) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    formatter = logging.Formatter(
        "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    formatter.converter = time.gmtime
    return formatter


class SinkHandler(logging.Handler):
    """Python logging into a sink, each record with its syslog severity."""

    def __init__(self, sink: Sink) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.sink.write(line, severity_of(record.levelno))


class LogSetupError(Exception):
    """A destination cannot be opened; the message starts with its YAML path."""


def open_sink(target: LogTarget, path: str, msgid: str) -> Sink:
    """The sink for one of global.log's targets; `msgid` is the RFC 5424 MSGID."""
    destination = parse_destination(target.target)
    if destination.kind in ("stdout", "stderr"):
        return StreamSink(destination)
    if destination.kind == "file":
        try:
            return FileSink(destination)
        except OSError as exc:
            raise LogSetupError(
                f"{path}: cannot open {destination.path}: {(exc.strerror or str(exc)).lower()}"
            ) from None
    # The local daemon adds the host name to RFC 3164 messages, as for syslog(3).
    local_bsd = destination.kind == "unix" and target.protocol == "rfc3164"
    formatter = SyslogFormatter(
        target.protocol,
        FACILITIES[target.facility],
        target.tag,
        None if local_bsd else socket.gethostname(),
        os.getpid(),
        framed=destination.kind == "tcp",
    )
    return SyslogSink(destination, formatter, msgid)


class LogOutputs:
    def __init__(
        self, events: Sink, sessions: Sink, events_format: LogFormat, sessions_format: LogFormat
    ) -> None:
        self.events = events
        self.sessions = sessions
        self.events_format = events_format
        self.sessions_format = sessions_format

    @classmethod
    def open(
        cls, config: LogConfig, default_format: LogFormat, forced: LogFormat | None = None
    ) -> LogOutputs:
        """Both outputs; `forced` (run --log-format) overrides every format."""
        events = open_sink(config.events, "global.log.events", "event")
        try:
            sessions = open_sink(config.sessions, "global.log.sessions", "session")
        except LogSetupError:
            events.close()
            raise
        return cls(
            events,
            sessions,
            forced or config.events.format or default_format,
            forced or config.sessions.format or default_format,
        )

    def install(self, level: str) -> None:
        """Send Python logging (the events) to the events destination."""
        handler = SinkHandler(self.events)
        handler.setFormatter(event_formatter(self.events_format))
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(level.upper())

    async def reopen(self) -> list[str]:
        """Reopen file destinations (after logrotate moved them); the errors of
        those that kept their old file."""
        results = await asyncio.gather(
            *(asyncio.wrap_future(sink.reopen()) for sink in (self.events, self.sessions))
        )
        return [error for error in results if error is not None]

    async def events_delivered(self, timeout: float) -> None:
        """Wait (at most `timeout` seconds) until the events logged so far are
        out, so that an answer can follow the messages it refers to."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.wrap_future(self.events.delivered()), timeout)

    def status(self) -> dict[str, Any]:
        return {"events": self.events.status(), "sessions": self.sessions.status()}

    def close(self) -> None:
        """Deliver what is queued and stop the writers; events logged after
        this go to stderr."""
        root = logging.getLogger()
        root.handlers[:] = [logging.StreamHandler()]
        root.handlers[0].setFormatter(event_formatter(self.events_format))
        self.sessions.close()
        self.events.close()
