"""The bank workload (tests/integration/galera/test_galera.py's Bank) run as a
client host's process of the namespace bed: transfers through HOST:PORT (the
VIP) until stdin closes, its acknowledged commits written to OUT as JSON
(rewritten every 0.2 s, so the test can follow the count).

    python -m tests.integration.ha.bank_client HOST PORT OUT
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

from tests.integration.galera.bank import Bank


def dump(bank: Bank, out: Path) -> None:
    with bank.lock:
        doc = {
            "committed": sorted(bank.committed),
            "times": list(bank.commit_times),  # CLOCK_MONOTONIC: one clock for all namespaces
            "ids": list(bank.commit_ids),  # the transfer acknowledged at each of those times
            "errors": {str(k): v for k, v in bank.errors.items()},
            "failure": repr(bank.failure) if bank.failure else None,
        }
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, out)


def main() -> None:
    host, port, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    bank = Bank(port, host=host)
    bank.start()
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    while not done.wait(0.2):
        dump(bank, out)
    bank.finish()
    dump(bank, out)


if __name__ == "__main__":
    main()
