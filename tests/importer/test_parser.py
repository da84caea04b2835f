"""The HAProxy configuration parser: words, quoting, comments, sections, file:line."""

from __future__ import annotations

import pytest

from loadstone.importers.haproxy.parser import (
    Location,
    ParseError,
    parse_files,
    parse_text,
    split_words,
)

HERE = Location("t.cfg", 1)


def words(line: str, **env: str) -> list[str]:
    return split_words(line, HERE, env)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("  server  a   10.0.0.1:80\tcheck ", ["server", "a", "10.0.0.1:80", "check"]),
        ("stats realm Haproxy\\ Stats", ["stats", "realm", "Haproxy Stats"]),
        (
            'http-check send hdr User-Agent "osa haproxy" meth HEAD',
            ["http-check", "send", "hdr", "User-Agent", "osa haproxy", "meth", "HEAD"],
        ),
        ("acl x hdr(host) 'a b#c'", ["acl", "x", "hdr(host)", "a b#c"]),
        ("bind :80 # a comment", ["bind", ":80"]),
        ("tcp-check send info\\ replication\\r\\n", ["tcp-check", "send", "info replication\r\n"]),
        ("reqadd X-Forwarded-Proto:\\ https", ["reqadd", "X-Forwarded-Proto: https"]),
        ("path_reg ^/v2\\.1/[0-9]+$", ["path_reg", "^/v2\\.1/[0-9]+$"]),
        ('x "" y', ["x", "", "y"]),
        ("x \\#not-a-comment", ["x", "#not-a-comment"]),
        ("x \\x41\\x42", ["x", "AB"]),
        ("x 'single $HOME \\n'", ["x", "single $HOME \\n"]),
        ("# only a comment", []),
        ("", []),
    ],
)
def test_words(line: str, expected: list[str]) -> None:
    assert words(line) == expected


def test_environment_variables_expand_outside_single_quotes() -> None:
    assert words("bind \"${VIP}:5000\" $PORT '$VIP'", VIP="198.18.0.10", PORT="1") == [
        "bind",
        "198.18.0.10:5000",
        "1",
        "$VIP",
    ]
    assert words("x $UNSET.y") == ["x", ".y"]  # HAProxy: an unset variable is empty


@pytest.mark.parametrize("line", ["x 'open", 'x "open', "x 'a' \"b"])
def test_unterminated_quote_is_an_error_with_its_line(line: str) -> None:
    with pytest.raises(ParseError, match=r"^t\.cfg:1: unterminated"):
        words(line)


def test_sections_keep_file_and_line_of_each_directive() -> None:
    text = "global\n  daemon\n\n# c\ndefaults\n mode http\nlisten web 0.0.0.0:80\n  balance first\n"
    leading, sections = parse_text(text, "a.cfg")
    assert leading == []
    assert [(s.kind, s.name, s.args, s.location.line) for s in sections] == [
        ("global", "", (), 1),
        ("defaults", "", (), 5),
        ("listen", "web", ("0.0.0.0:80",), 7),
    ]
    balance = sections[2].directives[0]
    assert (balance.words, str(balance.location), balance.indented) == (
        ("balance", "first"),
        "a.cfg:8",
        True,
    )


def test_named_defaults_and_from() -> None:
    _, sections = parse_text("defaults base\ndefaults from base\nbackend b from base\n", "a")
    assert [(s.name, s.args) for s in sections] == [
        ("base", ()),
        ("", ("from", "base")),
        ("b", ("from", "base")),
    ]


def test_a_directive_before_any_section_is_an_error() -> None:
    with pytest.raises(ParseError, match=r"^a\.cfg:2: unknown keyword 'maxconn' out of section"):
        parse_files([("a.cfg", "# header\nmaxconn 10\nglobal\n")])


def test_each_file_starts_outside_any_section() -> None:
    with pytest.raises(ParseError, match=r"^b\.cfg:1: "):
        parse_files([("a.cfg", "backend x\n"), ("b.cfg", "  server s 1.2.3.4:5\n")])


def test_files_concatenate_in_order() -> None:
    sections = parse_files([("a.cfg", "defaults\n"), ("b.cfg", "backend x\nbackend y\n")])
    assert [(s.location.file, s.name) for s in sections] == [
        ("a.cfg", ""),
        ("b.cfg", "x"),
        ("b.cfg", "y"),
    ]


def test_a_proxy_needs_a_name() -> None:
    with pytest.raises(ParseError, match=r"^a:3: 'backend' needs a name"):
        parse_files([("a", "global\n\nbackend\n")])


def test_directive_text_requotes_for_the_report() -> None:
    _, sections = parse_text("listen a\n  stats realm Haproxy\\ Stats\n", "f")
    assert sections[0].directives[0].text == "stats realm 'Haproxy Stats'"


def test_parser_and_translation_do_no_io() -> None:
    """Sans-IO: only files.py opens files; the parser and the translation take text."""
    from pathlib import Path

    import loadstone.importers.haproxy as package

    root = Path(package.__file__).parent
    for name in ("parser.py", "proxy.py", "translate.py", "keywords.py", "report.py"):
        source = (root / name).read_text()
        assert "import asyncio" not in source and "open(" not in source, name


def test_conditional_blocks() -> None:
    text = (
        "global\n"
        ".if defined(PROD)\n  maxconn 1\n.elif streq(${SITE},a)\n  maxconn 2\n"
        ".else\n  maxconn 3\n.endif\n"
        ".if 0\n  .alert never read\n.endif\n"
        ".if !defined(PROD)\n  .notice a message\n  nbthread 4\n.endif\n"
    )
    for env, expected in (({"PROD": ""}, ["1"]), ({"SITE": "a"}, ["2", "4"]), ({}, ["3", "4"])):
        _, sections = parse_text(text, "c.cfg", env)
        assert [d.args[0] for d in sections[0].directives] == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (".if version_atleast(2.4)\n.endif\n", "c.cfg:2: cannot evaluate"),
        (".if 1\n", "c.cfg:2: '.if' without '.endif'"),
        (".endif\n", "c.cfg:2: '.endif' without '.if'"),
        (".if 1\n.alert stop here\n.endif\n", "c.cfg:3: the file stops HAProxy: stop here"),
    ],
)
def test_conditional_block_errors(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=f"^{message}"):
        parse_text("global\n" + text, "c.cfg")
