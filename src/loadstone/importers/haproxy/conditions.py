"""HAProxy conditions (`if`/`unless` and the ACLs they name) -> the `if`/`unless`
of a loadstone request rule.

    condition := term { term }            every term must hold (no `||` here)
    term      := [!] ( "{" criterion [flags] values "}" | acl-name )

A term becomes one key of a loadstone condition (config.model.RequestMatch):

    path_beg V / path -m beg V     path_prefix    (-i: path_regex "(?i)V")
    path V                         path_exact
    path_reg R / path -m reg R     path_regex     (HAProxy searches: ".*R" unless "^R")
    hdr(host) / req.hdr(host) V    host           (hdr_dom(host): V and *.V)
    src / dst CIDR...              src / dst
    method M...                    method

Positive terms make `if`, one key each. Negated terms make `unless`, which
loadstone reads as "not all of these": so the negated terms must all be of one
list-valued kind (src, dst, host, method), whose values are then merged:
`!{ src A } !{ src B }` is "not in A and not in B", `unless: {src: [A, B]}`.
HAProxy's `unless C` with positive terms only is loadstone's `unless: C`.

What has no equivalent raises `Untranslatable` with the reason the report
prints; `Untranslatable.kind` names a family the caller may translate itself
(`ssl_fc`: TLS, `sc_`: the rate counters).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from loadstone.importers.haproxy.parser import Directive

__all__ = ["Condition", "Untranslatable", "condition", "split_condition"]

Condition = dict[str, Any]

_LISTS = ("src", "dst", "host", "method")
_HOST_FETCHES = ("hdr(host)", "req.hdr(host)", "hdr(Host)", "req.hdr(Host)")


class Untranslatable(Exception):
    def __init__(self, reason: str, kind: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


def split_condition(words: Sequence[str]) -> tuple[list[str], str | None, list[str]]:
    """The words of a rule before `if`/`unless`, the keyword, and the words after."""
    for i, word in enumerate(words):
        if word in ("if", "unless"):
            return list(words[:i]), word, list(words[i + 1 :])
    return list(words), None, []


def condition(
    keyword: str,
    words: Sequence[str],
    acls: Mapping[str, list[Directive]],
    used: set[str],
    rates: Mapping[str, str] | None = None,
) -> tuple[Condition | None, Condition | None]:
    """The (`if`, `unless`) of a rule whose HAProxy condition is `keyword words`;
    `rates`: the periods of the counters `track-sc0 src` keeps ("http_req_rate" -> "10s")."""
    terms = _terms(words, acls, used, rates or {})
    positive = [m for negated, m in terms if not negated]
    negative = [m for negated, m in terms if negated]
    if keyword == "unless":
        if negative:
            raise Untranslatable("'unless' with negated terms has no loadstone equivalent")
        return None, _all_of(positive)
    when = _all_of(positive) if positive else None
    unless = _any_of(negative) if negative else None
    return when, unless


def _all_of(matches: list[Condition]) -> Condition:
    out: Condition = {}
    for match in matches:
        for key, value in match.items():
            if key in out or (key.startswith("path_") and any(k.startswith("path_") for k in out)):
                raise Untranslatable(f"two conditions on {key} in one rule")
            out[key] = value
    return out


def _any_of(matches: list[Condition]) -> Condition:
    if len(matches) == 1:
        return matches[0]
    keys = {key for match in matches for key in match}
    if len(keys) != 1 or not keys <= set(_LISTS):
        raise Untranslatable(
            "negated terms of different kinds (only several !{ src ... } and the like merge)"
        )
    (key,) = keys
    merged: list[str] = []
    for match in matches:
        merged += match[key]
    return {key: merged}


def _terms(
    words: Sequence[str],
    acls: Mapping[str, list[Directive]],
    used: set[str],
    rates: Mapping[str, str],
) -> list[tuple[bool, Condition]]:
    terms: list[tuple[bool, Condition]] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("||", "or"):
            raise Untranslatable("conditions with '||' (or) are not translated")
        negated = word.startswith("!")
        word = word[1:] if negated else word
        if word == "" and i + 1 < len(words):  # "!" then "{"
            i += 1
            word = words[i]
        if word == "{":
            try:
                end = list(words).index("}", i + 1)
            except ValueError:
                raise Untranslatable("an anonymous ACL without its closing '}'") from None
            terms.append((negated, _criterion(list(words[i + 1 : end]), rates)))
            i = end + 1
            continue
        lines = acls.get(word)
        if not lines:
            raise Untranslatable(f"no acl named '{word}' before this rule")
        used.add(word)
        # Lines of one name are ORed: loadstone can say that for one criterion's values.
        matches = [_criterion(list(line.args[1:]), rates) for line in lines]
        terms.append((negated, matches[0] if len(matches) == 1 else _same_kind(word, matches)))
        i += 1
    if not terms:
        raise Untranslatable("an empty condition")
    return terms


def _same_kind(name: str, matches: list[Condition]) -> Condition:
    keys = {key for match in matches for key in match}
    if all(key.startswith("path_") for key in keys):
        return _any_path(name, matches)
    if len(keys) != 1 or not keys <= set(_LISTS):
        raise Untranslatable(f"acl '{name}' ORs criteria loadstone cannot combine")
    (key,) = keys
    return {key: [v for match in matches for v in match[key]]}


def _any_path(name: str, matches: list[Condition]) -> Condition:
    """Path conditions ORed: one regular expression of the alternatives."""
    alternatives: list[str] = []
    for match in matches:
        ((key, value),) = match.items()
        if key == "path_regex" and value.startswith("(?i)"):
            raise Untranslatable(f"acl '{name}' ORs case-insensitive paths with others")
        alternatives.append(
            value
            if key == "path_regex"
            else re.escape(value) + ("$" if key == "path_exact" else "")
        )
    return {"path_regex": "(?:" + "|".join(alternatives) + ")"}


_RATE_FETCH = re.compile(r"sc_(http_req_rate|http_err_rate)\(0\)|sc0_(http_req_rate|http_err_rate)")
_RATE_KEYS = {"http_req_rate": "request_rate", "http_err_rate": "error_rate"}


def _rate(fetch: str, rest: list[str], rates: Mapping[str, str]) -> Condition:
    """`sc_http_req_rate(0) gt N` (and ge, and sc0_...) -> request_rate/error_rate."""
    m = _RATE_FETCH.fullmatch(fetch)
    if m is None:
        raise Untranslatable("stick-table counters other than the request and error rates", "sc_")
    counter = m[1] or m[2]
    period = rates.get(counter)
    if period is None:
        raise Untranslatable(
            f"{counter} needs 'http-request track-sc0 src' and a stick-table storing it", "sc_"
        )
    if len(rest) != 2 or rest[0] not in ("gt", "ge") or not rest[1].isdigit():
        raise Untranslatable(f"'{fetch} {' '.join(rest)}': only 'gt N' or 'ge N' is translated")
    above = int(rest[1]) - (1 if rest[0] == "ge" else 0)
    return {_RATE_KEYS[counter]: {"above": above, "per": period}}


def _criterion(words: list[str], rates: Mapping[str, str]) -> Condition:
    if not words:
        raise Untranslatable("an empty ACL")
    fetch, rest = words[0], words[1:]
    if fetch.startswith(("sc_", "sc0_")):
        return _rate(fetch, rest, rates)
    flags: list[str] = []
    method: str | None = None
    values: list[str] = []
    j = 0
    while j < len(rest):
        word = rest[j]
        if word == "-m" and j + 1 < len(rest):
            method = rest[j + 1]
            j += 2
        elif word in ("-i", "--"):
            flags.append(word)
            j += 1
        elif word.startswith("-") and not values:
            raise Untranslatable(f"ACL flag {word} is not translated")
        else:
            values.append(word)
            j += 1
    ignore_case = "-i" in flags
    if fetch == "ssl_fc" or fetch.startswith("ssl_"):
        raise Untranslatable("TLS conditions", kind="ssl_fc")
    if fetch.startswith(("sc1_", "sc2_", "src_")):
        raise Untranslatable("stick-table counters", kind="sc_")
    if not values:
        raise Untranslatable(f"'{fetch}' without a value to match")
    if fetch == "path_beg" or (fetch == "path" and method == "beg"):
        return _path("prefix", values, ignore_case)
    if fetch == "path" and method in (None, "str"):
        return _path("exact", values, ignore_case)
    if fetch == "path_reg" or (fetch == "path" and method == "reg"):
        regexes = [v if v.startswith("^") else f".*{v}" for v in values]
        regex = regexes[0] if len(regexes) == 1 else "(?:" + "|".join(regexes) + ")"
        return {"path_regex": f"(?i){regex}" if ignore_case else regex}
    if fetch in _HOST_FETCHES and method in (None, "str"):
        return {"host": [v.lower() for v in values]}
    if fetch in ("hdr_dom(host)", "req.hdr_dom(host)") or (
        fetch in _HOST_FETCHES and method == "dom"
    ):
        return {"host": [h for v in values for h in (v.lower(), f"*.{v.lower()}")]}
    if fetch in ("src", "dst") and method is None:
        return {fetch: values}
    if fetch == "method" and method is None:
        return {"method": [v.upper() for v in values]}
    shown = " ".join((fetch, *(f"-m {method}",) * (method is not None)))
    raise Untranslatable(f"ACL criterion '{shown}' has no loadstone condition")


def _path(kind: str, values: list[str], ignore_case: bool) -> Condition:
    if len(values) == 1 and not ignore_case:
        return {f"path_{kind}": values[0]}
    # Several values (ORed) or a case-insensitive match: one regular expression.
    tail = "" if kind == "prefix" else "$"
    alternatives = "|".join(re.escape(v) + tail for v in values)
    regex = alternatives if len(values) == 1 else f"(?:{alternatives})"
    return {"path_regex": f"(?i){regex}" if ignore_case else regex}
