"""Load in real Envoy with two workers: an exception storm (every answer is the filter's or the
failure policy's; memory flat after warm-up), and a soak that mixes callouts, shared-data CAS
contention across the workers and exceptions (no request hangs, no increment is lost)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from reliability_support import SOAK, Answer, MiB, direct_upstream, record, run, vm_memory

from proxywasm_build.envoy import Envoy, WasmPlugin, http_bootstrap

FILTER = """
import proxywasm
from proxywasm import Action, HttpContext, shared_data

COUNTER = "reliability:count"


@proxywasm.register
class Storm(HttpContext):
    callout_status = None

    def on_request_headers(self, headers, end_of_stream):
        path = headers[":path"]
        if path == "/total":
            self.send_response(200, str(shared_data.get_value(COUNTER, 0)[0]))
            return Action.PAUSE
        if path.startswith("/raise"):
            raise ValueError("storm " + path)
        shared_data.update(COUNTER, lambda n: n + 1, default=0)  # CAS, contended by both workers
        if path.startswith("/callout"):
            self.http_call("upstream", self.on_answer, path="/target", timeout_ms=5000)
            return Action.PAUSE
        return Action.CONTINUE

    def on_answer(self, response):
        self.callout_status = response.status
        self.resume_request()

    def on_response_headers(self, headers, end_of_stream):
        headers["x-filter"] = "storm"
        if self.callout_status is not None:
            headers["x-callout"] = str(self.callout_status)
"""

POLICY_BODY = b"Internal Server Error\n"


def expected(answer: Answer) -> bool:
    """Is this the filter's answer (through the upstream) or the failure policy's?"""
    if answer.path.startswith("/raise"):
        return answer.status == 500 and answer.body == POLICY_BODY
    if answer.path.startswith("/callout"):
        return answer.status == 200 and answer.headers.get("x-callout") == "200" and answer.body == b"upstream\n"
    return answer.status == 200 and answer.headers.get("x-filter") == "storm" and answer.body == b"upstream\n"


@pytest.fixture(scope="module")
def upstream() -> Iterator[Envoy]:
    server = direct_upstream()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def envoy(build_filter: Callable[[str], Path], upstream: Envoy) -> Iterator[Envoy]:
    plugin = WasmPlugin(build_filter(FILTER), name="storm")
    with Envoy(http_bootstrap(upstream_port=upstream.port(), plugins=[plugin]), concurrency=2) as running:
        yield running


def requests(paths: list[str]) -> list[tuple[str, str, list[tuple[str, str]], None]]:
    return [("GET", path, [], None) for path in paths]


def total(envoy: Envoy) -> int:
    answers = run(envoy.port(), requests(["/total"]), connections=1).answers
    assert answers[0].status == 200
    return int(answers[0].body)


def test_exception_storm(envoy: Envoy) -> None:
    warm = run(envoy.port(), requests([f"/{'raise' if i % 2 else 'ok'}-w{i}" for i in range(400)]))
    assert not warm.hung
    memory_before, rss_before = vm_memory(envoy), envoy.rss_bytes()
    storm = run(envoy.port(), requests([f"/{'raise' if i % 2 else 'ok'}-{i}" for i in range(2000)]), check=expected)
    memory_after, rss_after = vm_memory(envoy), envoy.rss_bytes()

    assert not storm.answers, storm.answers[:3]  # none hung, none but the filter's or the policy's
    assert storm.statuses == {200: 1000, 500: 1000}
    # Both workers' VMs raised and went on serving.
    envoy.wait_for_log(r"(ValueError: storm /raise(.|\n)*){2}")
    threads = set(re.findall(r"\]\[(\d+)\]\[error\]\[wasm\].*exception in Storm", envoy.logs()))
    assert len(threads) == 2, threads
    assert len(memory_after) == len(memory_before) >= 3  # a VM per worker, the main thread's (and the base VM)
    growth = [after - before for before, after in zip(memory_before, memory_after, strict=True)]
    assert all(g <= 64 << 10 for g in growth), growth  # linear memory: flat (a page of stack at most)
    assert rss_after - rss_before <= 4 * MiB  # Envoy: flat within tcmalloc's noise
    record(
        "exception storm",
        {
            "requests": storm.count,
            "answered_200": storm.statuses[200],
            "answered_500_by_policy": storm.statuses[500],
            "hung": len(storm.hung),
            "slowest_answer_s": round(storm.slowest, 3),
            "seconds": round(storm.seconds, 1),
            "vm_memory_resident_kib_before": [m >> 10 for m in memory_before],
            "vm_memory_resident_kib_after": [m >> 10 for m in memory_after],
            "envoy_rss_mib_before": round(rss_before / MiB, 1),
            "envoy_rss_mib_after": round(rss_after / MiB, 1),
        },
    )


def test_soak_with_callouts_cas_contention_and_exceptions(envoy: Envoy) -> None:
    count = 1_000_000 if SOAK else 100_000
    kinds = ["raise", "callout", "callout", "callout", "ok", "ok", "ok", "ok", "ok", "ok"]
    warm = run(envoy.port(), requests([f"/{kinds[i % 10]}-w{i}" for i in range(2000)]))
    assert not warm.hung
    memory_before, rss_before = vm_memory(envoy), envoy.rss_bytes()
    soak = run(envoy.port(), requests([f"/{kinds[i % 10]}-{i}" for i in range(count)]), check=expected)
    memory_after, rss_after = vm_memory(envoy), envoy.rss_bytes()

    assert not soak.answers, soak.answers[:3]  # none hung, none but the filter's or the policy's
    assert soak.count == count
    counted = sum(1 for a in warm.answers if not a.path.startswith("/raise")) + soak.statuses[200]
    assert total(envoy) == counted  # no increment lost to the contention
    growth = [after - before for before, after in zip(memory_before, memory_after, strict=True)]
    assert all(g <= 64 << 10 for g in growth), growth
    assert rss_after - rss_before <= 8 * MiB
    record(
        "soak (./dev.sh soak)" if SOAK else "soak",
        {
            "requests": soak.count,
            "statuses": dict(soak.statuses),
            "hung": len(soak.hung),
            "slowest_answer_s": round(soak.slowest, 3),
            "cas_increments_counted": counted,
            "seconds": round(soak.seconds, 1),
            "requests_per_second": round(soak.count / soak.seconds),
            "vm_memory_resident_kib_before": [m >> 10 for m in memory_before],
            "vm_memory_resident_kib_after": [m >> 10 for m in memory_after],
            "envoy_rss_mib_before": round(rss_before / MiB, 1),
            "envoy_rss_mib_after": round(rss_after / MiB, 1),
        },
    )
