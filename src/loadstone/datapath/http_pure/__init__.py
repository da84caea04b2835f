"""The pure HTTP data path (mode http): HTTP/1.1 on both sides, parsed by httptools.

See datapath.http_pure.frontend for how a connection is served.
"""

from loadstone.datapath.http_pure.frontend import HttpFrontend

__all__ = ["HttpFrontend"]
