"""global.log (where events and session lines go) and global.admin.socket."""

from __future__ import annotations

import pytest

from loadstone.config import parse_config
from loadstone.config.model import LogConfig, LogTarget
from tests.unit.test_config import doc, problems_of


def test_default_is_events_on_stderr_sessions_on_stdout() -> None:
    log = parse_config(doc()).global_.log
    assert log == LogConfig(events=LogTarget("stderr"), sessions=LogTarget("stdout"))


def test_a_string_names_the_target_and_a_mapping_sets_the_rest() -> None:
    log = parse_config(
        doc(
            **{
                "global": {
                    "log": {
                        "events": "syslog",
                        "sessions": {
                            "target": "syslog+tcp://127.0.0.1:6514",
                            "format": "json",
                            "protocol": "rfc3164",
                            "facility": "local0",
                            "tag": "haproxy",
                        },
                    }
                }
            }
        )
    ).global_.log
    assert log.events == LogTarget("syslog")
    assert log.sessions == LogTarget(
        "syslog+tcp://127.0.0.1:6514", "json", "rfc3164", "local0", "haproxy"
    )


def test_a_mapping_without_target_keeps_the_default_stream() -> None:
    log = parse_config(doc(**{"global": {"log": {"events": {"format": "json"}}}})).global_.log
    assert log.events == LogTarget("stderr", format="json")


@pytest.mark.parametrize(
    ("log", "problem"),
    [
        ({"events": "journald"}, "global.log.events: expected stdout, stderr, syslog"),
        ({"sessions": "file:x.log"}, "global.log.sessions: file:PATH needs an absolute path"),
        ({"sessions": {"facility": "local9"}}, "global.log.sessions.facility: must be one of"),
        ({"sessions": {"protocol": "rfc6587"}}, "global.log.sessions.protocol: must be one of"),
        ({"events": {"tag": "load stone"}}, "global.log.events.tag: expected 1-48 printable"),
        ({"events": {"format": "xml"}}, "global.log.events.format: must be one of text, json"),
        ({"access": "stdout"}, "global.log.access: unknown key; valid keys: events, sessions"),
        ({"events": ["stdout"]}, "global.log.events: expected a mapping"),
    ],
)
def test_bad_log_settings_name_their_path(log: dict[str, object], problem: str) -> None:
    problems = problems_of(doc(**{"global": {"log": log}}))
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_admin_socket_is_an_absolute_path() -> None:
    admin = parse_config(
        doc(**{"global": {"admin": {"socket": "/run/loadstone/admin.sock"}}})
    ).global_.admin
    assert admin.socket == "/run/loadstone/admin.sock"
    assert parse_config(doc()).global_.admin.socket is None
    assert problems_of(doc(**{"global": {"admin": {"socket": "admin.sock"}}})) == [
        "global.admin.socket: expected an absolute path, got 'admin.sock'"
    ]
    long = "/run/" + "x" * 110
    assert problems_of(doc(**{"global": {"admin": {"socket": long}}})) == [
        "global.admin.socket: a unix socket path is at most 107 bytes long"
    ]
