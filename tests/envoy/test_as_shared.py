"""Shared data (proxy_get/set_shared_data with CAS) across two worker VMs (--concurrency 2)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from envoy_support import as_envoy, fetch

from proxywasm_build.envoy import Envoy
from proxywasm_build.upstream import UpstreamServer

HIT_RE = re.compile(r"wasm log p_shared shared vm_shared: shared hits=(\d+) vm_hits=(\d+)$")


@pytest.fixture(scope="module")
def env(as_modules: dict[str, Path]) -> Iterator[tuple[Envoy, UpstreamServer]]:
    with as_envoy(as_modules["shared"], name="p_shared", root_id="shared", vm_id="vm_shared", concurrency=2) as pair:
        yield pair


def _hits_by_thread(envoy: Envoy) -> dict[int, list[tuple[int, int]]]:
    result: dict[int, list[tuple[int, int]]] = {}
    for line in envoy.log_lines():
        match = HIT_RE.search(line.message)
        if match:
            result.setdefault(line.thread, []).append((int(match[1]), int(match[2])))
    return result


def test_counter_shared_across_workers(env: tuple[Envoy, UpstreamServer]) -> None:
    envoy, _ = env
    shared_seen: list[int] = []
    # New connection per request; the kernel spreads them over both workers. Keep going until
    # both workers have logged (bounded), so the test proves cross-VM sharing.
    for n in range(1, 201):
        reply = fetch(envoy.port(), "/s")
        shared_seen.append(int(reply.header("x-shared-hits") or 0))
        if n >= 10 and n % 10 == 0:
            envoy.wait_for_log(rf"shared hits={n} ")
            if len(_hits_by_thread(envoy)) >= 2:
                break
    by_thread = _hits_by_thread(envoy)
    assert len(by_thread) == 2, "requests never reached the second worker"
    total = len(shared_seen)
    # Every request saw a distinct shared count: 1..N with no lost update.
    assert sorted(shared_seen) == list(range(1, total + 1))
    # Each VM counts only its own requests, and those add up to the shared total.
    local_max = [max(v for _, v in hits) for hits in by_thread.values()]
    assert all(m < total for m in local_max)
    assert sum(local_max) == total


def test_get_missing_then_set_and_get(env: tuple[Envoy, UpstreamServer]) -> None:
    envoy, _ = env
    missing = fetch(envoy.port(), "/", headers={"x-shared-get": "nokey"})
    assert missing.header("x-shared-get-status") == "1"  # NOT_FOUND
    assert missing.header("x-shared-value") == ""
    fetch(envoy.port(), "/", headers={"x-shared-set": "color=blue"})
    # Read back on new connections, so likely from the other worker's VM as well.
    for _ in range(4):
        got = fetch(envoy.port(), "/", headers={"x-shared-get": "color"})
        assert got.header("x-shared-get-status") == "0"
        assert got.header("x-shared-value") == "blue"
