"""Health checks: sans-IO probe dialogues, the probes and their registry (check type
-> probe), the I/O driver, the rise/fall state, the scheduler.

What the runtime calls:

    scheduler = CheckScheduler(pools)   # raises NotImplementedError / ValueError early
    scheduler.start()                   # from the running loop; sets pool.on_connect_failure
    ...
    await scheduler.stop()

Checkers write `ServerRuntime.check_*` and call `Pool.set_health`; nothing else
here touches server state.
"""

from loadstone.checks.dialogue import Dialogue, Verdict
from loadstone.checks.driver import DialogueProbe, run_check
from loadstone.checks.probe import CheckFailed, Probe, ProbeFactory
from loadstone.checks.registry import PROBES, make_probe, run_probe
from loadstone.checks.scheduler import CheckScheduler, ServerCheck
from loadstone.checks.state import HealthCounter

__all__ = [
    "PROBES",
    "CheckFailed",
    "CheckScheduler",
    "Dialogue",
    "DialogueProbe",
    "HealthCounter",
    "Probe",
    "ProbeFactory",
    "ServerCheck",
    "Verdict",
    "make_probe",
    "run_check",
    "run_probe",
]
