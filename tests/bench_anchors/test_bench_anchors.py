"""The bench's anchors in real Envoy: the Lua twins (`envoy.filters.http.lua`), the hand-written
WebAssembly twins, the ext_proc server, the AssemblyScript and Python filters each do their
workload's work (bench.check_same_work, the check the bench runs before timing), the check catches
a twin that does less, the Lua JSON decoder answers as the Python filter's json.loads does, and the
Lua rate limit counts per worker."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from proxywasm_build.upstream import UpstreamServer

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import bench  # noqa: E402

WORKLOADS = {w.name: w for w in bench.WORKLOADS}


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture(scope="module")
def ext_proc() -> Iterator[bench.ExtProcServer]:
    server = bench.ExtProcServer()
    try:
        yield server
    finally:
        server.stop()


def variants_of(workload: bench.Workload, ext_proc: bench.ExtProcServer) -> list[bench.Variant]:
    found = [
        bench.Variant("no filter", None),
        bench.lua_variant(workload),
        bench.wat_variant(workload),
        bench.assemblyscript_variant(workload),
        bench.Variant("ext_proc", None, ext_proc=ext_proc) if workload.ext_proc else None,
        bench.build_python(workload),
    ]
    return [v for v in found if v is not None]


def checked(variant: bench.Variant, workload: bench.Workload, upstream: UpstreamServer) -> None:
    """Start the variant's Envoy and run the bench's check of it."""
    variant.envoy, _ = bench.start_envoy(variant, upstream.port)
    try:
        bench.check_same_work(variant, workload, upstream.port)
    finally:
        variant.envoy.stop()


@pytest.mark.parametrize("name", ["headers", "json_body", "rate_limit"])
def test_every_variant_does_the_workloads_work(
    name: str, upstream: UpstreamServer, ext_proc: bench.ExtProcServer, as_modules: dict[str, Path]
) -> None:
    workload = WORKLOADS[name]
    variants = variants_of(workload, ext_proc)
    expected = {"no filter", "lua", "assemblyscript", "python"} | ({"ext_proc"} if workload.ext_proc else set())
    expected |= {"wat"} if workload.wat else set()
    assert {v.label for v in variants} == expected
    for variant in variants:
        upstream.clear()
        checked(variant, workload, upstream)
        if name == "headers":
            # The timed request reached the upstream with the header the filter adds.
            first = upstream.requests[0]
            assert first.header("x-bench") == ("1" if variant.filtered else None), variant.label


def test_the_check_catches_a_twin_that_does_less(upstream: UpstreamServer) -> None:
    headers = WORKLOADS["headers"]
    lazy = bench.Variant("lua", None, lua="function envoy_on_request(h) end\n")
    with pytest.raises(RuntimeError, match="lacks x-filtered"):
        checked(lazy, headers, upstream)
    no_check = bench.lua_variant(headers)
    assert no_check is not None and no_check.lua is not None
    no_check.lua = no_check.lua.replace('headers:get("x-api-key") == nil', "false")
    with pytest.raises(RuntimeError, match="expected 401 .* got 200"):
        checked(no_check, headers, upstream)
    rate_limit = WORKLOADS["rate_limit"]
    unlimited = bench.lua_variant(rate_limit)
    assert unlimited is not None and unlimited.lua is not None
    unlimited.lua = unlimited.lua.replace("entry[2] >= LIMIT", "entry[2] >= 2 * LIMIT")
    with pytest.raises(
        RuntimeError, match=r"with a limit of 3 per window one client got \[200, 200, 200, 200, 200, 200\]"
    ):
        checked(unlimited, rate_limit, upstream)


def python_verdict(body: bytes) -> int:
    """What bench/filters/python/json_body.py answers, computed here with the same json.loads."""
    try:
        document = json.loads(body)
    except ValueError:
        return 400
    return 200 if isinstance(document, dict) and "user" in document else 400


AGREED = [
    b'{"user": "alice", "items": [1, 2, 3], "note": "benchmark"}',
    b'{"user": null}',
    b' \r\n\t{"user":1} \n',
    b'{"a": [1, 2, {"b": "c"}, [], {}], "user": true, "z": false}',
    b'{"user": "\\u00e9\\ud83d\\ude00 \\n\\t\\"\\\\\\/\\b\\f\\r"}',
    b'{"user": -0.5e+10, "n": 0, "m": -0, "k": 1E3, "j": 12.25e-2}',
    b'{"x": 1, "user": 2, "user": 3}',
    '{"user": "é ü 漢字"}'.encode(),
    b'{"nobody": 1}',
    b'[{"user": 1}]',
    b'"user"',
    b"null",
    b"42",
    b'{"user": 01}',
    b'{"user": 1.}',
    b'{"user": .5}',
    b'{"user": +1}',
    b'{"user": 1e}',
    b'{"user": -}',
    b'{"user": "a\nb"}',
    b'{"user": "\\x"}',
    b'{"user": "\\u12"}',
    b'{"user": "abc',
    b'{"user": 1,}',
    b'{"user": [1,]}',
    b'{"user" 1}',
    b"{user: 1}",
    b"{'user': 1}",
    b'{"user": tru}',
    b'{"user": 1} x',
    b'{"user": 1}{}',
    b"{",
    b" ",
]
# Where the Lua decoder and json.loads differ (bench/README.md says so): Lua does not check UTF-8,
# and json.loads accepts NaN/Infinity and a UTF-8 byte-order mark.
DIFFERENT = {
    b'{"user": "\xff"}': (200, 400),
    b'{"user": NaN}': (400, 200),
    b'\xef\xbb\xbf{"user": 1}': (400, 200),
}


def test_lua_json_decoder_agrees_with_the_python_filter(upstream: UpstreamServer) -> None:
    workload = WORKLOADS["json_body"]
    lua, python = bench.lua_variant(workload), bench.build_python(workload)
    assert lua is not None
    answers: dict[str, dict[bytes, int]] = {}
    for variant in (lua, python):
        envoy, _ = bench.start_envoy(variant, upstream.port)
        try:
            answers[variant.label] = {
                body: bench.send(envoy.url, "POST", body, ())[0] for body in [*AGREED, *DIFFERENT]
            }
        finally:
            envoy.stop()
    for body in AGREED:
        assert answers["lua"][body] == answers["python"][body] == python_verdict(body), body
    for body, (lua_status, python_status) in DIFFERENT.items():
        assert python_verdict(body) == python_status
        # (a body starting with a BOM: json.loads decodes it as utf-8-sig, which the snapshot keeps for
        # filters that import json; it answered 500 with LookupError before)
        assert (answers["lua"][body], answers["python"][body]) == (lua_status, python_status), body


def test_lua_rate_limit_counts_per_worker(upstream: UpstreamServer) -> None:
    """With two workers and a limit of 1 a client gets one request per worker and window: the Lua
    filter has no shared data (the Wasm twins count in Envoy's shared data, across workers)."""
    lua = bench.lua_variant(WORKLOADS["rate_limit"])
    assert lua is not None
    lua = replace(lua)
    lua.lua = (lua.lua or "").replace(bench.LUA_LIMIT_LINE, "local LIMIT = 1")
    envoy, _ = bench.start_envoy(lua, upstream.port, concurrency=2)
    served: list[int] = []  # workers that took one of the burst's connections

    def burst() -> list[int]:
        before = bench.worker_connections(envoy)
        # A new connection per request: the kernel spreads them over both workers by hash.
        statuses = [bench.send(envoy.url, "GET", b"", [("x-client", f"w{len(served)}")])[0] for _ in range(8)]
        after = bench.worker_connections(envoy)
        served.append(sum(after[w] > before.get(w, 0) for w in after))
        return statuses

    try:
        for _ in range(5):
            statuses = bench.in_one_window(burst)
            assert statuses.count(200) == served[-1], (statuses, served[-1])
            if served[-1] == 2:
                return
        pytest.fail("5 times all 8 connections went to one worker")
    finally:
        envoy.stop()
