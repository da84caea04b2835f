"""HTTP mode's protocol logic, with no I/O (h11's discipline).

Every module here takes bytes, header lists and configuration objects and
returns bytes or decisions; none imports asyncio or touches a socket, so each
is tested by feeding it values (tests/unit/test_http_*.py), and a test asserts
that importing them loads no event loop. The thin asyncio Protocol layer that
drives them is `loadstone.datapath.http_pure`.

    message   canned answers (400, 408, 502, 503, 504, ...), status lines, chunk framing
    request   request-head checks (smuggling defences) and the head sent to a server
    response  response-head rewriting (hop-by-hop, Location, cookie insert, rules)
    rules     header rules (set/add/delete) and Location rewriting
    cookie    cookie persistence: read, strip (indirect) and insert the server cookie
    routing   host and path rules choosing a pool
"""
