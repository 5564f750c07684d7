"""Memory exhaustion in real Envoy: a filter that allocates without bound gets MemoryError at the
VM's memory limit, its stream meets the failure policy and the VM keeps serving; a VM whose memory
stays full (a leak) fails, and Envoy applies the plugin's failure policy to it (FAIL_RELOAD: a new
VM). Also what Envoy 1.40 itself allows a V8 VM: 1 GiB."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from runtime_support import status_of

from proxywasm_build.envoy import Envoy, WasmPlugin, http_bootstrap
from proxywasm_build.upstream import UpstreamServer

FILTER = """
import proxywasm
from proxywasm import HttpContext, vm

kept = []


@proxywasm.register
class Hungry(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        path = headers[":path"]
        if path == "/bomb":  # large blocks
            chunks = []
            try:
                while True:
                    chunks.append(bytearray(1 << 20))
            finally:
                print(f"bomb: {len(chunks)} MiB allocated, linear memory {vm.memory_bytes() >> 20} MiB")
        if path == "/small-bomb":  # many small objects
            items = []
            while True:
                items.append(str(len(items)) * 3)
        if path == "/leak":  # keeps what it allocates
            while True:
                kept.append(str(len(kept)) * 20)
        headers["x-memory"] = str(vm.memory_bytes())
"""

MiB = 1 << 20
# A small limit keeps these tests quick; the budget is raised so the limit, not the budget, stops them.
SMALL = {"PROXYWASM_MEMORY_LIMIT_MB": "32", "PROXYWASM_CPU_BUDGET_MS": "5000"}


@pytest.fixture(scope="module")
def wasm(build_filter: Callable[[str], Path]) -> Path:
    return build_filter(FILTER)


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


def start(wasm: Path, upstream: UpstreamServer, env: dict[str, str], policy: str | None = None) -> Envoy:
    plugin = WasmPlugin(wasm, name="hungry", environment_variables=env, failure_policy=policy)  # type: ignore[arg-type]
    return Envoy(http_bootstrap(upstream_port=upstream.port, plugins=[plugin]))


def test_allocating_without_bound_meets_memory_error_and_the_vm_keeps_serving(
    wasm: Path, upstream: UpstreamServer
) -> None:
    with start(wasm, upstream, SMALL) as envoy:
        for path in ("/bomb", "/small-bomb", "/bomb"):
            assert status_of(envoy.url + path, timeout=30) == 500
            upstream.clear()
            assert status_of(envoy.url + "/fine", timeout=30) == 200
            memory = int(upstream.requests[-1].header("x-memory") or 0)
            # Up to the limit (less what a last 1 MiB block needed), plus at most the SDK's 2 MiB reserve.
            assert 30 * MiB <= memory <= 35 * MiB
        envoy.wait_for_log(r"(MemoryError\n(.|\n)*){3}")  # one traceback each (the log is written asynchronously)
        logs = envoy.logs()
        assert 'File "filter.py", line' in logs
        assert "the VM's memory stays exhausted" not in logs


def test_a_vm_whose_memory_stays_full_fails_into_the_failure_policy(wasm: Path, upstream: UpstreamServer) -> None:
    with start(wasm, upstream, SMALL, policy="FAIL_RELOAD") as envoy:
        assert status_of(envoy.url + "/fine", timeout=30) == 200
        assert status_of(envoy.url + "/leak", timeout=30) == 503  # the VM trapped: Envoy answers for it
        envoy.wait_for_log(r"the VM's memory stays exhausted after a MemoryError \(limit 32 MiB")
        deadline = time.monotonic() + 30
        while status_of(envoy.url + "/fine", timeout=30) != 200:  # FAIL_RELOAD: a new VM after a back-off
            assert time.monotonic() < deadline, "the VM was not reloaded"
            time.sleep(0.2)


def test_the_default_limit_and_envoys_own(wasm: Path, upstream: UpstreamServer) -> None:
    """128 MiB by default; with the limit off, Envoy 1.40 lets a V8 VM grow to 1 GiB and MemoryError
    comes from there. (Each worker keeps the memory its VM grew to: linear memory never shrinks.)"""
    for env, limit_mib in (
        ({"PROXYWASM_CPU_BUDGET_MS": "10000"}, 128),
        ({"PROXYWASM_MEMORY_LIMIT_MB": "0", "PROXYWASM_CPU_BUDGET_MS": "30000"}, 1024),
    ):
        with start(wasm, upstream, env) as envoy:
            assert status_of(envoy.url + "/bomb", timeout=30) == 500
            match = envoy.wait_for_log(r"bomb: (\d+) MiB allocated, linear memory (\d+) MiB")
            assert limit_mib - 8 <= int(match[2]) <= limit_mib + 2, match[0]
            assert status_of(envoy.url + "/fine", timeout=30) == 200
