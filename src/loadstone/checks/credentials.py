"""Check credentials: where a probe's password comes from.

Shared by the probes that log in (galera and mysql through aiomysql, amqp
through aiormq). It imports no driver, so a probe module can use it without
loading another protocol's client library.
"""

from __future__ import annotations

import os

from loadstone.config.model import CheckConfig
from loadstone.systemd import credential_path


def read_password(config: CheckConfig) -> str:
    """The check's password, from its environment variable or file ("" if neither).

    Read when the probe is built (start-up, reload); ValueError when it cannot
    be read, so that a missing secret stops the start instead of checking with a
    wrong password forever. The message names the source, never the value."""
    if config.password_env is not None:
        value = os.environ.get(config.password_env)
        if value is None:
            raise ValueError(
                f"check password_env: environment variable {config.password_env} is not set"
            )
        return value
    if config.password_file is not None:
        try:
            with open(credential_path(config.password_file), encoding="utf-8") as f:
                value = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise ValueError(
                f"check password_file: cannot read {config.password_file}: {why}"
            ) from None
        # Files written by editors and `echo` end in a newline that is not part
        # of the password.
        return value.removesuffix("\n").removesuffix("\r")
    return ""
