"""Targets for loadstone.http: request and response heads as the data path
parses them (llhttp through httptools) and rebuilds them, chunk framing,
the persistence cookie and routing.

Documented errors: parsing raises `httptools.HttpParserError` (a callback's
exception arrives wrapped in `HttpParserCallbackError`, with the original as
its context, as the data path sees it); `RequestPolicy.prepare` raises
`BadRequest`. `ResponsePolicy.prepare`, `close_head`, the cookie jar and the
router raise nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import httptools

from fuzz.source import Source
from loadstone.config.model import (
    Address,
    CookiePersistence,
    HeaderRule,
    ListenerConfig,
    RouteConfig,
)
from loadstone.http import message
from loadstone.http.cookie import CookieJar
from loadstone.http.request import CHUNKED, BadRequest, RequestPolicy
from loadstone.http.response import BODY_CHUNKED, BODY_CLOSE, BODY_NONE, ResponsePolicy, close_head
from loadstone.http.routing import Router, host_name, target_path

# A listener that exercises every branch of the request and response policies
# that keeps `prepare` idempotent (X-Forwarded-For would be added twice).
LISTENER = ListenerConfig(
    name="fuzz",
    bind=(Address("127.0.0.1", 8080),),
    mode="http",
    max_headers=40,
    max_head_size=4096,
    request_headers=(HeaderRule("set", "X-Set", "1"), HeaderRule("delete", "X-Del")),
    response_headers=(HeaderRule("set", "X-Frame-Options", "DENY"),),
    cookie=CookiePersistence(indirect=True, nocache=True),
    forwarded_proto="https",
    forwarded_port=True,
)
REQUESTS = RequestPolicy(LISTENER)
# The head sent on holds the lines the proxy adds: parsing it back must not
# meet the limits the client's head was held to.
FORWARDED = RequestPolicy(dataclasses.replace(LISTENER, max_headers=100, max_head_size=65536))
EXTRA = REQUESTS.connection_lines("192.0.2.1", 443)
RESPONSES = ResponsePolicy(LISTENER)


def summary(outcome: str, messages: list[Any]) -> tuple[Any, ...]:
    """What a stream comparison looks at. After a parser error, the message it
    cut short is left out: how many of its fields httptools had delivered
    before it met the error depends on the reads, and the data path refuses
    the whole message anyway."""
    if outcome.startswith("parser error") and messages and not messages[-1].complete:
        messages = messages[:-1]
    return (outcome, [vars(m) for m in messages])


# -- requests ---------------------------------------------------------------------------


@dataclass
class Request:
    """One request as the data path turns it into what the server gets."""

    head: bytes = b""
    host: bytes | None = None
    cookie: bytes | None = None
    flags: int = 0
    body: bytes = b""  # decoded: the data path re-frames it for the server
    complete: bool = False

    def forwarded(self) -> bytes:
        if not self.flags & CHUNKED:
            return self.head + self.body
        body = message.chunk(self.body) if self.body else b""
        return self.head + body + message.LAST_CHUNK


@dataclass
class RequestStream:
    """The requests of one connection, and how the stream ended."""

    requests: list[Request] = field(default_factory=list)
    outcome: str = "open"  # open | upgrade at N | 400 reason | parser error Name
    _target: bytes = b""
    _headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    _refusal: BadRequest | None = None
    policy: RequestPolicy = REQUESTS

    # httptools callbacks, as loadstone.datapath.http's
    def on_message_begin(self) -> None:
        self._target = b""
        self._headers = []
        self.requests.append(Request())

    def on_url(self, url: bytes) -> None:
        self._target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        p = self.parser
        request = self.requests[-1]
        try:
            if p.get_method() == b"CONNECT":
                raise BadRequest(501, "CONNECT is not supported")
            request.head, request.host, request.cookie, request.flags = self.policy.prepare(
                p.get_method(),
                self._target,
                p.get_http_version(),
                self._headers,
                EXTRA,
                p.should_upgrade(),
            )
        except BadRequest as exc:
            self._refusal = exc
            raise

    def on_body(self, data: bytes) -> None:
        self.requests[-1].body += data

    def on_message_complete(self) -> None:
        self.requests[-1].complete = True

    def feed(self, pieces: list[bytes]) -> RequestStream:
        self.parser = httptools.HttpRequestParser(self)
        offset = 0
        for piece in pieces:
            try:
                self.parser.feed_data(piece)
            except httptools.HttpParserUpgrade as exc:
                self.outcome = f"upgrade at {offset + exc.args[0]}"
                break
            except httptools.HttpParserCallbackError as exc:
                refusal = self._refusal
                assert refusal is not None and exc.__context__ is refusal, repr(exc.__context__)
                self.outcome = f"{refusal.status} {refusal.reason}"
                break
            except httptools.HttpParserError as exc:
                self.outcome = f"parser error {type(exc).__name__}"
                break
            offset += len(piece)
        return self

    def summary(self) -> tuple[Any, ...]:
        return summary(self.outcome, self.requests)


def request_head(data: bytes) -> None:
    """Requests fed whole and split agree; every request forwarded parses back
    to one request that `prepare` leaves as it is, with the same body."""
    whole = RequestStream().feed([data])
    split = RequestStream().feed(Source(data).pieces())
    assert whole.summary() == split.summary(), (whole.summary(), split.summary())
    for request in whole.requests:
        if not request.complete or not request.head:
            continue
        forwarded = request.forwarded()
        again = RequestStream(policy=FORWARDED).feed([forwarded])
        assert again.outcome in ("open", f"upgrade at {len(request.head)}"), again.outcome
        assert len(again.requests) == 1, (forwarded, again.summary())
        (copy,) = again.requests
        assert copy.head == request.head, (request.head, copy.head)
        assert copy.body == request.body and copy.flags == request.flags
        if again.outcome == "open":
            assert copy.complete, forwarded


def chunk_framing(data: bytes) -> None:
    """Bodies framed by message.chunk and LAST_CHUNK parse back to the same bytes."""
    pieces = [p for p in Source(data).pieces() if p]
    head = b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    framed = head + b"".join(map(message.chunk, pieces)) + message.LAST_CHUNK
    stream = RequestStream().feed([framed])
    assert stream.outcome == "open", stream.outcome
    assert [(r.body, r.complete) for r in stream.requests] == [(data, True)]


# -- responses --------------------------------------------------------------------------


@dataclass
class Response:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    complete: bool = False
    keep_alive: bool = True


class ResponseStream:
    def __init__(self) -> None:
        self.responses: list[Response] = []
        self.outcome = "open"
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.responses.append(Response())

    def on_header(self, name: bytes, value: bytes) -> None:
        self.responses[-1].headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.responses[-1].status = self.parser.get_status_code()
        self.responses[-1].keep_alive = self.parser.should_keep_alive()

    def on_body(self, data: bytes) -> None:
        self.responses[-1].body += data

    def on_message_complete(self) -> None:
        self.responses[-1].complete = True

    def feed(self, pieces: list[bytes]) -> ResponseStream:
        for piece in pieces:
            try:
                self.parser.feed_data(piece)
            except httptools.HttpParserUpgrade:
                self.outcome = "upgrade"
                break
            except httptools.HttpParserError as exc:
                self.outcome = f"parser error {type(exc).__name__}"
                break
        return self

    def summary(self) -> tuple[Any, ...]:
        return summary(self.outcome, self.responses)


SENTINEL = b"HTTP/1.1 204 No Content\r\nX-Sentinel: 1\r\n\r\n"


def response_head(data: bytes) -> None:
    """Responses fed whole and split agree; the head rebuilt for the client
    delimits the body so that the client reads the same body and finds the
    next response right after it when the connection is kept."""
    source = Source(data)
    whole = ResponseStream().feed([data])
    split = ResponseStream().feed(source.pieces())
    assert whole.summary() == split.summary(), (whole.summary(), split.summary())
    for response in whole.responses:
        if not response.status:
            continue
        http10 = source.flag()
        head, body, keep = RESPONSES.prepare(
            response.status,
            list(response.headers),
            head_request=False,
            client_keep_alive=source.flag(),
            client_http10=http10,
            set_cookie=b"s1" if source.flag() else None,
        )
        if response.status == 101 or response.status < 200:
            continue
        if not response.complete and body != BODY_CLOSE:
            continue  # a body cut short: nothing to compare yet
        if body == BODY_CHUNKED and not http10:
            framed = (message.chunk(response.body) if response.body else b"") + message.LAST_CHUNK
        else:
            framed = response.body
        client = ResponseStream().feed([head + framed + (SENTINEL if keep else b"")])
        if body == BODY_CLOSE or (http10 and body == BODY_CHUNKED):
            assert not keep
        got = client.responses
        assert got and got[0].status == response.status, (head, client.summary())
        assert got[0].body == response.body or body == BODY_NONE, (head, client.summary())
        if keep:
            assert client.outcome == "open" and len(got) == 2, (head, client.summary())
            assert got[1].headers == [(b"X-Sentinel", b"1")], client.summary()
        else:
            assert not got[0].keep_alive, head
    if whole.responses and whole.responses[0].status >= 200:
        closed = ResponseStream().feed([close_head(data)])
        first = closed.responses[0]
        assert first.status == whole.responses[0].status
        assert not first.keep_alive, close_head(data)


# -- cookie and routing -----------------------------------------------------------------

_COOKIE_OCTETS = bytes(
    b for b in range(0x21, 0x7F) if b not in (0x22, 0x2C, 0x3B, 0x5C)
)  # RFC 6265 section 4.1.1 cookie-octet
_JARS = (CookieJar(CookiePersistence()), CookieJar(CookiePersistence(indirect=True)))


def cookie(data: bytes) -> None:
    """find() never fails; with `indirect` our cookie is gone from what is kept;
    the value set_cookie() writes is read back."""
    for jar in _JARS:
        value, rest = jar.find(data)
        if jar.prefix not in data:
            assert (value, rest) == (None, None)
        if value is not None and jar.indirect:
            assert rest is not None
            assert not any(p.startswith(jar.prefix) for p in rest.split(b"; ")), rest
    value = bytes(b for b in data if b in _COOKIE_OCTETS)
    if value:
        header = b"lang=en; " + _JARS[1].set_cookie(value).split(b";")[0] + b"; x=1"
        assert _JARS[1].find(header) == (value, b"lang=en; x=1"), header


ROUTER = Router(
    (
        RouteConfig(pool="api", hosts=("api.example.com",), path_prefix="/v2"),
        RouteConfig(pool="wild", hosts=("*.example.com",)),
        RouteConfig(pool="exact", path_exact="/health"),
        RouteConfig(pool="regex", path_regex=r"/(images|css)/[a-z]+\.(png|css)$"),
    ),
    "default",
)
POOLS = frozenset({"api", "wild", "exact", "regex", "default"})


def routing(data: bytes) -> None:
    """Any Host and target route to a configured pool; the path of an
    absolute-form target routes as its origin form."""
    host, _, target = data.partition(b"\n")
    assert isinstance(host_name(host), str)
    path = target_path(target)
    assert ROUTER.route(host, target) in POOLS
    if target.startswith(b"/"):
        assert "?" not in path and "#" not in path
        authority = bytes(b for b in host if b not in b"/?#") or b"h"
        absolute = b"http://" + authority + target
        assert target_path(absolute) == path, (absolute, path)
