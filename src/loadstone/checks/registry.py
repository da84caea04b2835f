"""The probe of each check type: check type -> probe factory.

The scheduler asks `make_probe` for the probe of each checked server; tools and
tests run one check with `run_probe`. A new check type is a probe module (built
on loadstone.checks.probe, and loadstone.checks.driver when it runs a dialogue)
and one line in `PROBES`: the probes never import this module, so the imports
run one way, registry -> probes -> probe/driver.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

from loadstone.checks.dialogue import Verdict
from loadstone.checks.driver import DialogueProbe, run_check
from loadstone.checks.http import HttpCheckDialogue, build_request
from loadstone.checks.probe import Probe, ProbeFactory
from loadstone.checks.sendexpect import SendExpectDialogue, compile_steps
from loadstone.config.model import Address, CheckConfig


def _tcp_probe(config: CheckConfig, host: str, port: int) -> Probe:
    return DialogueProbe(host, port, None)


def _http_probe(config: CheckConfig, host: str, port: int) -> Probe:
    host_header = config.host or str(Address(host, port))
    build_request(config, host_header)  # raise ValueError now, not at every check
    return DialogueProbe(host, port, partial(HttpCheckDialogue, config, host_header))


# The galera, mysql and amqp probes are imported when a server is first checked
# with them: they load heavy dependencies that the configurations checking no
# such server never need. (No circle: the probe modules do not import this one.)


def _galera_probe(config: CheckConfig, host: str, port: int) -> Probe:
    from loadstone.checks.galera import GaleraProbe  # lazy: aiomysql

    return GaleraProbe(config, host, port)


def _mysql_probe(config: CheckConfig, host: str, port: int) -> Probe:
    from loadstone.checks.mysql import MysqlProbe  # lazy: aiomysql

    return MysqlProbe(config, host, port)


def _amqp_probe(config: CheckConfig, host: str, port: int) -> Probe:
    from loadstone.checks.amqp_probe import AmqpProbe  # lazy: aiormq, pamqp, yarl

    return AmqpProbe(config, host, port)


def _send_expect_probe(config: CheckConfig, host: str, port: int) -> Probe:
    script = compile_steps(config.steps)  # once per server, not per check
    return DialogueProbe(host, port, partial(SendExpectDialogue, script))


PROBES: dict[str, ProbeFactory] = {
    "tcp": _tcp_probe,
    "http": _http_probe,
    "galera": _galera_probe,
    "mysql": _mysql_probe,
    "amqp": _amqp_probe,
    "send-expect": _send_expect_probe,
}


def make_probe(
    config: CheckConfig, host: str, port: int, registry: Mapping[str, ProbeFactory] = PROBES
) -> Probe:
    """The probe for one server. NotImplementedError for a type with no probe yet."""
    factory = registry.get(config.type)
    if factory is None:
        raise NotImplementedError(
            f"check type {config.type!r} is not implemented yet "
            f"(available: {', '.join(sorted(registry))})"
        )
    return factory(config, host, port)


async def run_probe(config: CheckConfig, host: str, port: int, timeout: float) -> Verdict:
    """One check with a throw-away probe (tools, tests; the scheduler keeps probes)."""
    probe = make_probe(config, host, port)
    try:
        return await run_check(probe, timeout)
    finally:
        await probe.close()
