"""Request rules (`request_rules`, HAProxy's `http-request`): allow, deny,
redirect, set_header and del_header, each under optional conditions.

Theory of operation
-------------------
The rules of a listener are compiled once (`RequestRules`) and run on every
request head as the parser delivers it, before the head is checked and rebuilt
for the server (http.request.RequestPolicy), in the order written:

- a header rule whose condition holds edits the request's header list and the
  walk goes on (a later rule's Host condition sees the edited head, as in HAProxy);
- the first allow, deny or redirect whose condition holds ends the walk: allow
  sends the request on, deny and redirect make it a `Verdict`, the answer the
  data path gives instead of forwarding;
- no rule applying sends the request on.

An allow-list is "allow if ..." rules followed by an unconditional deny.

Conditions take the host and path keys of the routes (http.routing.HostPath,
one matcher for both) plus the method and the client and local addresses
(`src`, `dst`; the client address is a PROXY header's when the listener
accepted one). Host and path are computed only when a rule asks for them.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from loadstone.config.model import RequestMatch, RequestRule
from loadstone.http import message
from loadstone.http.rates import ERRORS, REQUESTS, RateTable, is_error
from loadstone.http.routing import HostPath, host_name, target_path

Headers = list[tuple[bytes, bytes]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_HEADER: Final = 0  # set_header / del_header: edit and go on
_ALLOW: Final = 1
_DENY: Final = 2
_REDIRECT: Final = 3


@dataclass(frozen=True, slots=True)
class Verdict:
    """A request answered by the proxy itself: the bytes to send, and the
    status and end reason its access-log line shows."""

    status: int
    data: bytes
    end: str
    quiet: bool = False  # not logged nor counted by status (monitor: polled every second)


class _Facts:
    """What conditions look at, computed once per request when first asked."""

    __slots__ = (
        "_host", "_path", "client_ip", "headers", "local_ip", "method", "now", "rates", "target",
    )  # fmt: skip

    def __init__(
        self,
        method: bytes,
        target: bytes,
        headers: Headers,
        client_ip: str | None,
        local_ip: str | None,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.client_ip = client_ip
        self.local_ip = local_ip
        self._host: str | None = None
        self._path: str | None = None
        self.rates: RateTable | None = None
        self.now = 0.0

    def raw_host(self) -> bytes | None:
        for name, value in self.headers:
            if name.lower() == b"host":
                return value.strip()
        return None

    @property
    def host(self) -> str:
        if self._host is None:
            self._host = host_name(self.raw_host())
        return self._host

    @property
    def path(self) -> str:
        if self._path is None:
            self._path = target_path(self.target)
        return self._path


def _address(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if text is None:
        return None
    try:
        ip = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # a dual-stack listener's view of an IPv4 client
    return ip


class Condition:
    """One compiled `if`/`unless` mapping."""

    __slots__ = ("dst", "error_rate", "host_path", "methods", "request_rate", "src")

    def __init__(self, match: RequestMatch) -> None:
        self.host_path = HostPath(match)
        self.methods = frozenset(m.encode("ascii") for m in match.methods)
        self.src: tuple[Network, ...] = tuple(ipaddress.ip_network(n) for n in match.src)
        self.dst: tuple[Network, ...] = tuple(ipaddress.ip_network(n) for n in match.dst)
        rq, er = match.request_rate, match.error_rate
        self.request_rate = None if rq is None else (rq.above, rq.per)
        self.error_rate = None if er is None else (er.above, er.per)

    def periods(self) -> list[float]:
        return [r[1] for r in (self.request_rate, self.error_rate) if r is not None]

    def holds(self, facts: _Facts) -> bool:
        if self.methods and facts.method not in self.methods:
            return False
        if self.src and not _within(facts.client_ip, self.src):
            return False
        if self.dst and not _within(facts.local_ip, self.dst):
            return False
        for kind, limit in ((REQUESTS, self.request_rate), (ERRORS, self.error_rate)):
            if limit is not None:
                rates = facts.rates
                above, per = limit
                if rates is None or rates.rate(facts.client_ip, kind, per, facts.now) <= above:
                    return False
        hp = self.host_path
        if hp.needs_host or hp.path_prefix or hp.path_exact or hp.path_regex:
            return hp.matches(facts.host if hp.needs_host else "", facts.path)
        return True


def _within(text: str | None, networks: tuple[Network, ...]) -> bool:
    ip = _address(text)
    return ip is not None and any(ip in n for n in networks)


class _Rule:
    __slots__ = ("action", "lower", "name", "rule", "sets", "unless", "value", "when")

    def __init__(self, rule: RequestRule) -> None:
        self.rule = rule
        self.when = Condition(rule.when) if rule.when is not None else None
        self.unless = Condition(rule.unless) if rule.unless is not None else None
        self.name = self.lower = self.value = b""
        self.sets = rule.set_header is not None
        if rule.set_header is not None:
            self.action = _HEADER
            self.name = rule.set_header.name.encode("ascii")
            self.value = rule.set_header.value.encode("latin-1")
        elif rule.del_header is not None:
            self.action = _HEADER
            self.name = rule.del_header.encode("ascii")
        elif rule.deny is not None:
            self.action = _DENY
        elif rule.redirect is not None:
            self.action = _REDIRECT
        else:
            self.action = _ALLOW
        self.lower = self.name.lower()

    def applies(self, facts: _Facts) -> bool:
        if self.when is not None and not self.when.holds(facts):
            return False
        return self.unless is None or not self.unless.holds(facts)


class RequestRules:
    """A listener's compiled rules; `needs_local` says whether `dst` is used."""

    __slots__ = ("needs_local", "rates", "rules")

    def __init__(self, rules: Sequence[RequestRule]) -> None:
        self.rules = tuple(_Rule(r) for r in rules)
        periods = [p for r in self.rules for c in (r.when, r.unless) if c for p in c.periods()]
        # Rate conditions: every request of every source is counted (HAProxy's
        # `track-sc0 src` ahead of the rules); the table lives as long as these rules.
        self.rates = RateTable(periods) if periods else None
        self.needs_local = any(
            c is not None and c.dst for r in self.rules for c in (r.when, r.unless)
        )

    def run(
        self,
        method: bytes,
        target: bytes,
        headers: Headers,
        client_ip: str | None,
        local_ip: str | None,
    ) -> Verdict | None:
        """Apply the rules to one request head (`headers` edited in place); the
        proxy's own answer, or None to send the request on."""
        facts = _Facts(method, target, headers, client_ip, local_ip)
        rates = self.rates
        if rates is not None:
            facts.rates = rates
            facts.now = now = time.monotonic()
            rates.count(client_ip, REQUESTS, now)
        for rule in self.rules:
            if not rule.applies(facts):
                continue
            action = rule.action
            if action == _HEADER:
                lower = rule.lower
                headers[:] = [h for h in headers if h[0].lower() != lower]
                if rule.sets:
                    headers.append((rule.name, rule.value))
                facts._host = None  # a later condition sees the edited head
                continue
            if action == _ALLOW:
                return None
            if action == _DENY:
                status = rule.rule.deny
                assert status is not None
                return Verdict(
                    status, message.ANSWERS.get(status) or message.answer(status), "denied"
                )
            return _redirect(rule.rule, facts)
        return None

    def answered(self, client_ip: str | None, status: int) -> None:
        """A request of `client_ip` got `status` (error_rate counts the 4xx)."""
        if self.rates is not None and is_error(status):
            self.rates.count(client_ip, ERRORS, time.monotonic())


def _redirect(rule: RequestRule, facts: _Facts) -> Verdict:
    redirect = rule.redirect
    assert redirect is not None
    if redirect.location is not None:
        location = redirect.location.encode("latin-1")
    elif redirect.prefix is not None:
        # HAProxy's `redirect prefix`: the prefix, then the request's path and query.
        target = facts.target
        if not target.startswith(b"/"):
            target = target_path(target).encode("latin-1")
        location = redirect.prefix.rstrip("/").encode("latin-1") + target
    else:
        host = facts.raw_host()
        if not host:  # HTTP/1.0 without Host: there is no URL to redirect to
            return Verdict(400, message.ANSWERS[400], "bad-request")
        assert redirect.scheme is not None
        location = b"%s://%s%s" % (redirect.scheme.encode(), host, facts.target)
    return Verdict(redirect.code, message.redirect(redirect.code, location), "redirect")
