"""An endless loop, a deep recursion (Python and C) and a memory bomb, in one run with the default
budget (100 ms) and memory limit (128 MiB): each request is answered by the failure policy within
the budget plus a margin, and the next request is served."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from reliability_support import MiB, poll, record, run, vm_memory

from proxywasm_build.envoy import Envoy, WasmPlugin, http_bootstrap
from proxywasm_build.upstream import UpstreamServer

FILTER = """
import json

import proxywasm
from proxywasm import HttpContext


def recurse(n):
    return recurse(n + 1) + 1


@proxywasm.register
class Failing(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        path = headers[":path"]
        if path == "/loop":
            while True:
                pass
        if path == "/recursion":
            recurse(0)
        if path == "/c-recursion":
            nested = []
            for _ in range(100_000):
                nested = [nested]
            json.dumps(nested)
        if path == "/memory-bomb":
            blocks = []
            while True:
                blocks.append(bytearray(1 << 20))
"""

BUDGET_S = 0.1
MARGIN_S = 2.0  # generous: a shared 2-core machine; the point is "not hung", not a timing
# What stops each: the memory bomb reaches the 128 MiB limit in ~45 ms here, but on a loaded
# machine the budget may stop it first; either way the policy answers.
EXPECTED = {
    "/loop": ("BudgetExceeded",),
    "/recursion": ("RecursionError",),
    "/c-recursion": ("RecursionError",),
    "/memory-bomb": ("MemoryError", "BudgetExceeded"),
}


def test_loop_recursion_and_memory_bomb_in_one_run(build_filter: Callable[[str], Path]) -> None:
    with UpstreamServer() as upstream:
        plugin = WasmPlugin(build_filter(FILTER), name="failing")
        with Envoy(http_bootstrap(upstream_port=upstream.port, plugins=[plugin])) as envoy:
            assert run(envoy.port(), [("GET", "/fine", [], None)]).answers[0].status == 200
            rss_before, memory_before = envoy.rss_bytes(), max(vm_memory(envoy))
            times: dict[str, float] = {}
            errors: dict[str, str] = {}
            for path in ("/loop", "/recursion", "/c-recursion", "/memory-bomb", "/loop"):
                since = len(envoy.logs())
                answer = run(envoy.port(), [("GET", path, [], None)], connections=1).answers[0]
                assert (answer.status, answer.body) == (500, b"Internal Server Error\n"), (path, answer)
                assert answer.seconds < BUDGET_S + MARGIN_S, (path, answer.seconds)
                times[path] = max(times.get(path, 0.0), answer.seconds)
                # The traceback's last line names what stopped it (the log is written asynchronously).
                stopped = re.compile(rf"\n({'|'.join(EXPECTED[path])})\b")
                assert poll(lambda s=since, r=stopped: r.search(envoy.log_since(s)) is not None), path
                errors[path] = stopped.findall(envoy.log_since(since))[0]
                after = run(envoy.port(), [("GET", "/fine", [], None)]).answers[0]
                assert after.status == 200, (path, after)
            assert envoy.running
            rss_after, memory_after = envoy.rss_bytes(), max(vm_memory(envoy))
    record(
        "failure modes (default budget and memory limit)",
        {
            "seconds_to_answer": {path: round(s, 3) for path, s in times.items()},
            "stopped_by": errors,
            "vm_linear_memory_resident_mib_before": round(memory_before / MiB, 1),
            "vm_linear_memory_resident_mib_after": round(memory_after / MiB, 1),
            "envoy_rss_mib_before": round(rss_before / MiB, 1),
            "envoy_rss_mib_after": round(rss_after / MiB, 1),
        },
    )
