"""Header fuzz in real Envoy: 10,000 requests with random header names and values (any byte Envoy's
HTTP/1 codec accepts in them) and sizes up to the codec's limits, through a filter that reads every
header through both the str and the bytes API, copies and logs each: Envoy never crashes, no request
hangs, and the filter never fails (no 500). Requests past the codec's limits are refused by Envoy
before the filter sees them."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from reliability_support import Answer, Request, record, run

from proxywasm_build.envoy import Envoy, WasmPlugin, http_bootstrap
from proxywasm_build.upstream import UpstreamServer

FILTER = """
import hashlib

import proxywasm
from proxywasm import Action, HttpContext, log


@proxywasm.register
class ReadCopyLog(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        text = headers.pairs()  # str (undecodable bytes as surrogates)
        raw = headers.items_bytes()  # bytes
        if len(text) != len(raw):
            raise AssertionError("the str and bytes views differ in length")
        copies = {}
        digest = hashlib.sha256()
        for (name, value), (raw_name, raw_value) in zip(text, raw):
            if (name.encode(errors="surrogateescape"), value.encode(errors="surrogateescape")) != (raw_name, raw_value):
                raise AssertionError(f"the str and bytes views differ for {raw_name!r}")
            log.debug(f"{name}: {value!r}")
            if raw_name.startswith(b"x-f-"):
                digest.update(raw_name + b":" + raw_value + b"\\n")
                copies[b"x-copy-" + raw_name[4:]] = raw_value
        for name, value in copies.items():
            headers.add(name, value)
        for name, value in copies.items():
            if headers.get_bytes(name) != value:
                raise AssertionError(f"the copy of {name!r} differs")
        self.send_response(200, digest.hexdigest(), [("x-copies", str(len(copies)))])
        return Action.PAUSE
"""

REQUESTS = 10_000
# Envoy's HTTP/1 codec defaults: 60 KiB of request headers, 100 headers.
MAX_HEADERS_KB = 60
MAX_HEADERS = 100
TCHAR = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
# Field values: visible ASCII, obs-text (0x80-0xff), and space / tab inside.
VALUE_BYTES = bytes([*range(0x21, 0x7F), *range(0x80, 0x100)])
INNER_BYTES = VALUE_BYTES + b" \t"


def random_bytes(rng: random.Random, alphabet: bytes, size: int) -> bytes:
    return bytes(rng.choices(alphabet, k=size))


def make_request(rng: random.Random, i: int) -> tuple[Request, bool, bytes]:
    """(the request, whether it stays within the codec's limits, the digest the filter must answer)."""
    over = rng.random() < 0.05
    if over and rng.random() < 0.5:
        count, total = MAX_HEADERS + rng.randint(1, 20), rng.randint(2000, 8000)
    elif over:
        count, total = rng.randint(1, 40), MAX_HEADERS_KB * 1024 + rng.randint(1024, 10 * 1024)
    else:
        count = rng.randint(1, 90)
        total = rng.choice([rng.randint(0, 1024), rng.randint(1024, 16 * 1024), rng.randint(16 * 1024, 56 * 1024)])
    headers: list[tuple[str | bytes, str | bytes]] = []
    digest = hashlib.sha256()
    for n in range(count):
        name = b"x-f-%d-%d-" % (i, n) + random_bytes(rng, TCHAR, rng.randint(0, 20))
        size = max(0, total // count + rng.randint(-20, 20) - len(name))
        value = b""
        if size:
            inner = random_bytes(rng, INNER_BYTES, max(0, size - 2))
            value = random_bytes(rng, VALUE_BYTES, 1) + inner + (random_bytes(rng, VALUE_BYTES, 1) if size > 1 else b"")
            value = value[:size]
        headers.append((name, value))
        digest.update(name + b":" + value + b"\n")
    return ("GET", f"/fuzz/{i}", headers, None), not over, digest.hexdigest().encode()


@pytest.fixture(scope="module")
def envoy(build_filter: Callable[[str], Path]) -> Iterator[Envoy]:
    with UpstreamServer() as upstream:
        # The CPU budget is wall-clock time (Envoy's monotonic clock): a 56 KiB request with 90
        # headers read, copied and logged takes a few ms, but twice on this 2-core machine, with other
        # work running beside the suite, one request in 10,000 got a 500. This test is about headers;
        # the budget has its own tests (test_failure_modes.py), so it gets 2 s here, and a failure
        # shows Envoy's error lines.
        budget = {"PROXYWASM_CPU_BUDGET_MS": "2000"}
        plugin = WasmPlugin(build_filter(FILTER), name="fuzz", environment_variables=budget)
        with Envoy(http_bootstrap(upstream_port=upstream.port, plugins=[plugin]), concurrency=2) as running:
            yield running


def test_header_fuzz(envoy: Envoy) -> None:
    rng = random.Random(11)
    made = [make_request(rng, i) for i in range(REQUESTS)]
    within = {request[1]: digest for request, ok, digest in made if ok}

    def answered_right(answer: Answer) -> bool:
        if answer.path in within:  # the filter's answer, with the digest of exactly what was sent
            return answer.status == 200 and answer.body == within[answer.path]
        return answer.status in (400, 431)  # refused by Envoy's codec: past its limits

    result = run(envoy.port(), [request for request, _, _ in made], check=answered_right, timeout_s=20)
    assert envoy.running
    assert not result.hung, result.hung[:3]
    if result.answers:
        lines = envoy.logs().splitlines()
        first = next((i for i, line in enumerate(lines) if "[error]" in line or "[critical]" in line), len(lines))
        wrong = [(a.path, a.status, a.body[:200]) for a in result.answers[:3]]
        pytest.fail(f"{len(result.answers)} wrong answers, e.g. {wrong}; Envoy's first error:\n" +
                    "\n".join(lines[first:first + 15]), pytrace=False)  # fmt: skip
    assert 500 not in result.statuses
    assert "exception in" not in envoy.logs()
    record(
        "header fuzz",
        {
            "requests": result.count,
            "within_limits_answered_by_the_filter": sum(1 for _, ok, _ in made if ok),
            "past_limits_refused_by_envoy": {str(k): v for k, v in result.statuses.items() if k != 200},
            "hung": len(result.hung),
            "answered_500": result.statuses[500],
            "seconds": round(result.seconds, 1),
        },
    )


STR_ROUND_TRIP = """
import proxywasm
from proxywasm import HttpContext, log


@proxywasm.register
class CopyAsText(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        value = headers["x-raw"]  # non-UTF-8 bytes come back as surrogates
        log.info(f"x-raw: {value}")
        headers["x-copy"] = value
"""


def test_non_utf8_header_values_round_trip_through_the_str_api(build_filter: Callable[[str], Path]) -> None:
    with UpstreamServer() as upstream:
        plugin = WasmPlugin(build_filter(STR_ROUND_TRIP), name="text")
        with Envoy(http_bootstrap(upstream_port=upstream.port, plugins=[plugin])) as proxy:
            answer = run(proxy.port(), [("GET", "/", [("x-raw", b"caf\xe9 \xff")], None)], connections=1).answers[0]
            assert answer.status == 200
            copied = upstream.requests[-1].header_values("x-copy")
            assert [v.encode("latin-1") for v in copied] == [b"caf\xe9 \xff"]
