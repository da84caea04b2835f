"""Cookie persistence, HAProxy's `cookie SERVERID insert indirect nocache`.

    Cookie: SID=abc; SERVERID=ctl2; lang=en          (RFC 6265 section 4.2.1)
    cookie-string = cookie-pair *( ";" SP cookie-pair )

- A request whose persistence cookie names a server of the chosen pool that can
  take requests goes to that server; the response then sets nothing.
- Otherwise (no cookie, an unknown value, a server down, drained or in
  maintenance) the request is balanced as usual, and the response sets the
  cookie to the chosen server's value: the client sticks from then on, to the
  new server when its old one went down.
- `indirect`: the cookie is the proxy's business; it is removed from the request
  before the server sees it (other cookies of the header stay).
- `nocache`: a response that sets the cookie is marked `Cache-Control: private`,
  so a shared cache never hands one client's server cookie to another.
"""

from __future__ import annotations

from loadstone.config.model import CookiePersistence


class CookieJar:
    """The persistence cookie of one listener, compiled."""

    __slots__ = ("indirect", "name", "nocache", "prefix", "suffix")

    def __init__(self, config: CookiePersistence) -> None:
        self.name = config.name.encode("ascii")
        self.prefix = self.name + b"="
        self.indirect = config.indirect
        self.nocache = config.nocache
        suffix = b"; path=/"
        if config.httponly:
            suffix += b"; HttpOnly"
        if config.secure:
            suffix += b"; Secure"
        self.suffix = suffix

    def find(self, header: bytes) -> tuple[bytes | None, bytes | None]:
        """(our cookie's value or None, the header without it or None if unchanged).

        The second item is b"" when our cookie was the only one (drop the header).
        Without `indirect` the header is never changed.
        """
        prefix = self.prefix
        if prefix not in header:
            return None, None
        value: bytes | None = None
        kept: list[bytes] = []
        for pair in header.split(b";"):
            pair = pair.strip()
            if pair.startswith(prefix):
                if value is None:
                    value = pair[len(prefix) :].strip(b'"')
            elif pair:
                kept.append(pair)
        if value is None or not self.indirect:
            return value, None
        return value, b"; ".join(kept)

    def set_cookie(self, value: bytes) -> bytes:
        """The Set-Cookie field value that makes the client stick to `value`."""
        return self.prefix + value + self.suffix
