"""The bench's callout workload works (no timing here): its callback-style and await-style filters
give the same answers, in real Envoy behind the bench's own direct upstream and in the local host."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import bench  # noqa: E402
from proxywasm_host import Host  # noqa: E402


def status_of(url: str, headers: dict[str, str]) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


@pytest.fixture(scope="module")
def variants() -> list[bench.Variant]:
    workload = next(w for w in bench.WORKLOADS if w.name == "callout")
    built = bench.python_variants(workload)
    assert [v.label for v in built] == ["python", "python-await"]
    return built


def test_both_styles_answer_alike_in_envoy(variants: list[bench.Variant]) -> None:
    workload = next(w for w in bench.WORKLOADS if w.name == "callout")
    upstream = bench.direct_upstream()
    try:
        for variant in variants:
            variant.envoy, _ = bench.start_envoy(variant, upstream.port())
            try:
                bench.check_same_work(variant, workload, upstream.port())  # /deny -> 403 through the callout
                assert status_of(variant.envoy.url + "/", {"x-api-key": "k"}) == 200
                lines = [m for m in variant.envoy.iter_wasm_messages() if m.level in ("error", "critical")]
                assert lines == []
            finally:
                variant.envoy.stop()
    finally:
        upstream.stop()


def test_both_styles_answer_alike_in_the_host(variants: list[bench.Variant]) -> None:
    workload = next(w for w in bench.WORKLOADS if w.name == "callout")
    for variant in variants:
        assert variant.wasm is not None
        assert bench.host_request_us(variant.wasm, workload, 1) is not None
        host = Host.load(variant.wasm, clusters={"upstream": lambda r: (403 if "deny" in r.path else 200, [], b"")})
        allowed = host.request("GET", "/", headers=[("x-api-key", "k")])
        assert allowed.status == 200
        assert allowed.upstream_request is not None and allowed.upstream_request.header("x-auth") == "ok"
        assert host.request("GET", "/deny").status == 403
