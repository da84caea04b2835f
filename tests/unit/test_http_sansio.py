"""Sans-IO pieces of HTTP mode (loadstone.http): fed values, no sockets."""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import sys

import httptools
import pytest

from loadstone.config.model import (
    Address,
    CookiePersistence,
    ForwardFor,
    HeaderRule,
    ListenerConfig,
    LocationRewrite,
    RouteConfig,
)
from loadstone.http import message
from loadstone.http.cookie import CookieJar
from loadstone.http.request import (
    CHUNKED,
    EXPECT_CONTINUE,
    HAS_BODY,
    BadRequest,
    RequestPolicy,
    authority_differs,
)
from loadstone.http.response import (
    BODY_CHUNKED,
    BODY_CLOSE,
    BODY_LENGTH,
    BODY_NONE,
    ResponsePolicy,
    kept_open_head,
)
from loadstone.http.routing import Router, host_name, target_path
from loadstone.http.rules import HeaderRules, LocationRewriter

BASE = ListenerConfig(name="web", bind=(Address("127.0.0.1", 8080),), mode="http")


def listener(**changes: object) -> ListenerConfig:
    return dataclasses.replace(BASE, **changes)  # type: ignore[arg-type]


def test_sans_io_modules_import_no_event_loop() -> None:
    code = (
        "import sys\n"
        "import loadstone.http.request, loadstone.http.response, loadstone.http.rules\n"
        "import loadstone.http.cookie, loadstone.http.routing, loadstone.http.message\n"
        "bad = [m for m in ('asyncio', 'uvloop', 'socket') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# -- requests --------------------------------------------------------------------------


class Parsed:
    """What the data path hands RequestPolicy.prepare, from real httptools parsing."""

    def __init__(self, raw: bytes) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.target = b""
        self.parser = httptools.HttpRequestParser(self)
        with contextlib.suppress(httptools.HttpParserUpgrade):
            self.parser.feed_data(raw)

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def prepare(
        self, policy: RequestPolicy, extra: bytes = b""
    ) -> tuple[bytes, bytes | None, bytes | None, int]:
        p = self.parser
        return policy.prepare(
            p.get_method(),
            self.target,
            p.get_http_version(),
            self.headers,
            extra,
            p.should_upgrade(),
        )


def prepare(raw: bytes, config: ListenerConfig = BASE, extra: bytes = b"") -> bytes:
    return Parsed(raw).prepare(RequestPolicy(config), extra)[0]


def test_plain_request_is_rebuilt_without_hop_by_hop_fields() -> None:
    head = prepare(
        b"GET /a?b=1 HTTP/1.1\r\nHost: api\r\nConnection: keep-alive, X-Secret\r\n"
        b"Keep-Alive: 5\r\nX-Secret: 1\r\nProxy-Connection: close\r\nTE: trailers\r\n"
        b"Accept: */*\r\n\r\n"
    )
    assert head == b"GET /a?b=1 HTTP/1.1\r\nHost: api\r\nAccept: */*\r\n\r\n"


def test_forwarded_lines_come_from_the_connection() -> None:
    config = listener(forwardfor=ForwardFor(), forwarded_proto="https", forwarded_port=True)
    policy = RequestPolicy(config)
    extra = policy.connection_lines("192.0.2.7", 443)
    assert extra == (
        b"X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Port: 443\r\nX-Forwarded-Proto: https\r\n"
    )
    head = Parsed(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: 1\r\n"
        b"X-Forwarded-For: 10.0.0.1\r\n\r\n"
    ).prepare(policy, extra)[0]
    # The client's own XFF stays (HAProxy appends); proto and port are replaced.
    assert head == (
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\n"
        b"X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Port: 443\r\nX-Forwarded-Proto: https\r\n\r\n"
    )


def test_forwardfor_except_networks() -> None:
    policy = RequestPolicy(listener(forwardfor=ForwardFor(except_nets=("127.0.0.0/8",))))
    assert policy.connection_lines("127.0.0.5", 80) == b""
    assert policy.connection_lines("::ffff:127.0.0.5", 80) == b""
    assert policy.connection_lines("10.1.2.3", 80) == b"X-Forwarded-For: 10.1.2.3\r\n"
    named = RequestPolicy(listener(forwardfor=ForwardFor(header="X-Client-IP")))
    assert named.connection_lines("::1", 80) == b"X-Client-IP: ::1\r\n"


def test_request_rules_apply_in_order() -> None:
    rules = (
        HeaderRule("delete", "X-Forwarded-Proto"),
        HeaderRule("set", "X-Forwarded-Proto", "https"),
        HeaderRule("add", "Via", "loadstone"),
        HeaderRule("set", "user-agent", "probe"),
    )
    head = prepare(
        b"GET / HTTP/1.1\r\nHost: a\r\nx-forwarded-proto: http\r\nUser-Agent: curl\r\n"
        b"Via: 1.1 other\r\n\r\n",
        listener(request_headers=rules),
    )
    assert head == (
        b"GET / HTTP/1.1\r\nHost: a\r\nVia: 1.1 other\r\nX-Forwarded-Proto: https\r\n"
        b"Via: loadstone\r\nuser-agent: probe\r\n\r\n"
    )


def test_flags() -> None:
    policy = RequestPolicy(BASE)
    _, host, _, flags = Parsed(
        b"POST / HTTP/1.1\r\nHost: h:80\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
    ).prepare(policy)
    assert host == b"h:80"
    assert flags == HAS_BODY | EXPECT_CONTINUE
    _, _, _, flags = Parsed(
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).prepare(policy)
    assert flags == HAS_BODY | CHUNKED
    _, _, _, flags = Parsed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n").prepare(
        policy
    )
    assert flags == 0


def test_http10_request_keeps_the_clients_keep_alive_choice() -> None:
    assert prepare(b"GET / HTTP/1.0\r\n\r\n") == b"GET / HTTP/1.0\r\n\r\n"
    assert prepare(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n") == (
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    )


def test_upgrade_request_keeps_upgrade() -> None:
    head = prepare(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Key: x\r\n\r\n"
    )
    assert head == (
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nSec-WebSocket-Key: x\r\n"
        b"Connection: upgrade\r\n\r\n"
    )
    # Upgrade without Connection: upgrade is not an upgrade: the field goes.
    assert prepare(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n") == (
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET /\r\n\r\n", 400),  # HTTP/0.9
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400),
    ],
)
def test_refused_heads(raw: bytes, status: int) -> None:
    with pytest.raises(BadRequest) as info:
        prepare(raw)
    assert info.value.status == status


def test_header_limits() -> None:
    small = listener(max_headers=3, max_head_size=1024)
    prepare(b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n", small)
    with pytest.raises(BadRequest) as info:
        prepare(b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", small)
    assert info.value.status == 431
    with pytest.raises(BadRequest) as info:
        prepare(b"GET / HTTP/1.1\r\nHost: a\r\nA: " + b"x" * 1100 + b"\r\n\r\n", small)
    assert info.value.status == 431


# -- cookies ---------------------------------------------------------------------------


def test_cookie_find_and_strip() -> None:
    jar = CookieJar(CookiePersistence(name="SERVERID", indirect=True))
    assert jar.find(b"SID=1; SERVERID=ctl2; lang=en") == (b"ctl2", b"SID=1; lang=en")
    assert jar.find(b"SERVERID=ctl2") == (b"ctl2", b"")
    assert jar.find(b"SID=1") == (None, None)
    assert jar.find(b"XSERVERID=1") == (None, None)
    direct = CookieJar(CookiePersistence(name="SERVERID"))
    assert direct.find(b"a=b; SERVERID=ctl1") == (b"ctl1", None)


def test_set_cookie() -> None:
    jar = CookieJar(CookiePersistence(name="SERVERID", httponly=True, secure=True))
    assert jar.set_cookie(b"ctl1") == b"SERVERID=ctl1; path=/; HttpOnly; Secure"


def test_indirect_cookie_is_removed_from_the_request() -> None:
    config = listener(cookie=CookiePersistence(name="SERVERID", indirect=True))
    policy = RequestPolicy(config)
    head, _, cookie, _ = Parsed(
        b"GET / HTTP/1.1\r\nHost: a\r\nCookie: SERVERID=s2; sid=9\r\n\r\n"
    ).prepare(policy)
    assert cookie == b"s2"
    assert head == b"GET / HTTP/1.1\r\nHost: a\r\nCookie: sid=9\r\n\r\n"
    head, _, cookie, _ = Parsed(
        b"GET / HTTP/1.1\r\nHost: a\r\nCookie: SERVERID=s2\r\n\r\n"
    ).prepare(policy)
    assert (head, cookie) == (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"s2")


# -- responses -------------------------------------------------------------------------


def respond(
    status: int,
    headers: list[tuple[bytes, bytes]],
    config: ListenerConfig = BASE,
    **kw: object,
) -> tuple[bytes, int, bool]:
    options: dict[str, object] = {
        "head_request": False,
        "client_keep_alive": True,
        "client_http10": False,
        "set_cookie": None,
    }
    options.update(kw)
    return ResponsePolicy(config).prepare(status, headers, **options)  # type: ignore[arg-type]


def test_response_framing() -> None:
    assert respond(200, [(b"Content-Length", b"3")])[1:] == (BODY_LENGTH, True)
    assert respond(200, [(b"Transfer-Encoding", b"chunked")])[1:] == (BODY_CHUNKED, True)
    assert respond(200, [])[1:] == (BODY_CLOSE, False)
    assert respond(204, [])[1:] == (BODY_NONE, True)
    assert respond(304, [(b"Content-Length", b"9")])[1:] == (BODY_NONE, True)
    assert respond(200, [(b"Content-Length", b"9")], head_request=True)[1:] == (BODY_NONE, True)
    # An HTTP/1.0 client cannot read chunks: the body goes raw, ended by our close.
    head, body, keep = respond(200, [(b"Transfer-Encoding", b"chunked")], client_http10=True)
    assert (body, keep) == (BODY_CHUNKED, False)
    assert b"Transfer-Encoding" not in head and b"Connection: close" in head


def test_response_head_rewritten() -> None:
    head, _, keep = respond(
        200,
        [
            (b"Content-Length", b"3"),
            (b"Connection", b"close, X-Hop"),
            (b"X-Hop", b"1"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Server", b"nginx"),
        ],
    )
    assert keep
    assert head == b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nServer: nginx\r\n\r\n"
    head, _, keep = respond(200, [(b"Content-Length", b"3")], client_keep_alive=False)
    assert head.endswith(b"Connection: close\r\n\r\n") and not keep
    head, _, _ = respond(200, [(b"Content-Length", b"3")], client_http10=True)
    assert head.endswith(b"Connection: keep-alive\r\n\r\n")


def test_location_rewrite_rules_and_cookie_insert() -> None:
    config = listener(
        rewrite_location=LocationRewrite(),
        response_headers=(
            HeaderRule("delete", "Server"),
            HeaderRule("add", "Strict-Transport-Security", "max-age=63072000"),
        ),
        cookie=CookiePersistence(name="SERVERID", nocache=True),
    )
    head, _, _ = respond(
        302,
        [
            (b"Location", b"http://api.example.com:5000/v3"),
            (b"Content-Length", b"0"),
            (b"Server", b"x"),
        ],
        config,
        set_cookie=b"ctl2",
    )
    assert head == (
        b"HTTP/1.1 302 Found\r\nLocation: https://api.example.com:5000/v3\r\n"
        b"Content-Length: 0\r\nStrict-Transport-Security: max-age=63072000\r\n"
        b"Set-Cookie: SERVERID=ctl2; path=/\r\nCache-Control: private\r\n\r\n"
    )


def test_upgrade_response() -> None:
    head, body, _ = respond(101, [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")])
    assert (
        head
        == b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
    )
    assert body == BODY_NONE


def test_rules_and_location_helpers() -> None:
    rules = HeaderRules([HeaderRule("set", "X-A", "1"), HeaderRule("delete", "x-b")])
    headers = [(b"x-a", b"0"), (b"X-B", b"2"), (b"Y", b"3")]
    rules.apply(headers)
    assert headers == [(b"Y", b"3"), (b"X-A", b"1")]
    assert not HeaderRules([])
    loc = LocationRewriter(LocationRewrite())
    assert loc.rewrite(b"HTTP://a/b") == b"https://a/b"
    assert loc.rewrite(b"/relative") == b"/relative"
    assert loc.rewrite(b"https://a/") == b"https://a/"


# -- routing ---------------------------------------------------------------------------


def test_host_and_path_helpers() -> None:
    assert host_name(b"API.Example.com:5000") == "api.example.com"
    assert host_name(b"example.com.") == "example.com"
    assert host_name(b"[::1]:80") == "[::1]"
    assert host_name(None) == ""
    assert target_path(b"/v2/images?limit=1") == "/v2/images"
    assert target_path(b"http://h:1/v2/x?y") == "/v2/x"
    assert target_path(b"http://h") == "/"


def test_router() -> None:
    router = Router(
        [
            RouteConfig("images", hosts=("glance.example.com", "*.img.example")),
            RouteConfig("compute", path_prefix="/compute/"),
            RouteConfig("exact", path_exact="/healthcheck"),
            RouteConfig("rx", path_regex=r"/v[0-9]+/volumes"),
            RouteConfig("both", hosts=("api",), path_prefix="/identity"),
        ],
        "default",
    )
    assert router.route(b"Glance.Example.com:9292", b"/v2/images") == "images"
    assert router.route(b"a.img.example", b"/") == "images"
    assert router.route(b"img.example", b"/") == "default"
    assert router.route(b"x", b"/compute/v2.1/servers") == "compute"
    assert router.route(b"x", b"/healthcheck") == "exact"
    assert router.route(b"x", b"/healthcheck/x") == "default"
    assert router.route(b"x", b"/v3/volumes/1?a") == "rx"
    assert router.route(b"api", b"/identity/v3") == "both"
    assert router.route(b"other", b"/identity/v3") == "default"


def test_answers() -> None:
    data = message.ANSWERS[503]
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"content-length: %d" % len(body) in head
    assert b"connection: close" in head
    assert message.chunk(b"abc") == b"3\r\nabc\r\n"


def test_close_head() -> None:
    from loadstone.http.response import close_head

    data = (
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
        b"Content-Length: 2\r\n\r\nok"
    )
    assert close_head(data) == (
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    )
    assert close_head(b"HTTP/1.1 200 OK\r\nContent-Le") == b"HTTP/1.1 200 OK\r\nContent-Le"
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"
    assert close_head(interim) == interim


def test_kept_open_head() -> None:
    """A server's close after a framed response is its own (HAProxy's way)."""
    framed = b"HTTP/1.0 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    assert kept_open_head(framed, False, False) == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    assert kept_open_head(framed, True, False) == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
    )
    close_delimited = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok"
    assert kept_open_head(close_delimited, False, False) is None
    assert kept_open_head(close_delimited, False, True) == b"HTTP/1.1 200 OK\r\n\r\nok"
    assert kept_open_head(b"HTTP/1.1 200 OK\r\nContent-Le", False, False) is None


@pytest.mark.parametrize(
    ("target", "host", "differs"),
    [
        (b"/x", b"t", False),
        (b"*", b"t", False),
        (b"/redirect?to=http://evil.example/", b"t", False),
        (b"http://evil.example/x", b"t", True),
        (b"http://T:8080/x?q", b" t:8080 ", False),
        (b"http://t", b"t", False),
        (b"http:///x", b"t", True),
    ],
)
def test_absolute_form_authority_must_be_the_host(
    target: bytes, host: bytes, differs: bool
) -> None:
    assert authority_differs(target, host) is differs
