"""The native HTTP path (mode http over the C engine), by its name in the data-path grid.

Its code stays in datapath.native_http for now, where the engine's llhttp work
changes it; this module is the name the rest of the package uses.
"""

from loadstone.datapath.native_http import HttpFrontend, llhttp_status, refusal

__all__ = ["HttpFrontend", "llhttp_status", "refusal"]
