"""Fuzz harnesses of the sans-IO parsers and health-check dialogues.

    python -m fuzz list                          the targets
    python -m fuzz run --seconds 60              every target, 60 s each
    python -m fuzz run --seconds 600 request_head response_head
    python -m fuzz replay TARGET FILE...         run inputs once (a crash file)

Each target (fuzz/targets_http.py, fuzz/targets_checks.py, fuzz/targets_tls.py,
fuzz/targets_proxy.py, and fuzz/targets_config.py for the configuration loader)
is a function of one byte string that returns normally when the code under test
behaved and
raises otherwise: an exception the module does not document, or an
`AssertionError` from a property (a round trip that changes the message, a
different result when the same bytes arrive split at other points). The
split points and the options a target varies come from a checksum of the
input (fuzz/source.py), so a checked-in seed (fuzz/corpus/TARGET/) is plain
protocol bytes, readable in an editor, and every input replays the same way.

Engines (fuzz/engines.py): atheris (libFuzzer, coverage-guided, the default
where its wheel installs) runs each target in its own process for the given
time, starting from the seed corpus and keeping what it finds in a scratch
directory; without atheris, Hypothesis draws inputs for the same time. A
crash is saved to fuzz/crashes/ and becomes a reproducer test in
tests/unit/test_fuzz_reproducers.py. The pytest suite runs every target
briefly (tests/unit/test_fuzz_smoke.py).

Over the network: `python -m fuzz.net --path native|pure --seconds N`
(fuzz/net.py) sends mutated HTTP/1.1 streams and TLS ClientHellos to a running
loadstone; the C engine alone: fuzz/c (scripts/fuzz-c).
"""
