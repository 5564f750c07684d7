"""What the CPU budget per callback costs: each bench workload's Python filter in real Envoy with
the budget on (the default) and off (``PROXYWASM_CPU_BUDGET_MS=0`` in the VM's environment: the
same module, so only the budget differs), and no filter, interleaved round by round.

    .venv/bin/python bench/budget_overhead.py [--rounds 5] [--duration 3] [--workload headers ...]
    .venv/bin/python bench/budget_overhead.py --model    # what one check and one clock read cost

On a noisy machine the A/B difference is within the noise; ``--model`` measures its parts instead:
the time one check adds (a Python loop's turn with the budget on vs off, in Envoy), what one read of
Envoy's clock costs, and how many checks and reads each workload's request makes (counted exactly
in the local host, the same module).

Prints Envoy CPU per request (median over the rounds) and what the budget adds: the median of each
round's on-minus-off difference (the two runs of a round are back to back, so slow drifts of a
shared machine cancel), with the range over the rounds, per request and as a share of Envoy's CPU
per request and of the filter's own cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import JSON_BODY, ROOT, WORKLOADS, cpu_seconds, direct_upstream, wrk
from proxywasm.budget import ENV_VAR
from proxywasm_build.build import build
from proxywasm_build.envoy import Envoy, WasmPlugin, http_bootstrap

VARIANTS = {"no filter": None, "budget off": {ENV_VAR: "0"}, "budget on": {}}

MICRO = """
import time

import _proxywasm
import proxywasm
from proxywasm import HttpContext

N = 200_000


@proxywasm.register
class Micro(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        clock = time.monotonic_ns
        t0 = clock()
        for _ in range(N):
            pass
        t1 = clock()
        for _ in range(N // 10):
            clock()  # a builtin that reads Envoy's monotonic clock (WASI clock_time_get)
        t2 = clock()
        for _ in range(N // 10):
            len("")  # a builtin that does nothing
        t3 = clock()
        self.send_response(200, f"{(t1 - t0) / N} {(t2 - t1) / (N // 10)} {(t3 - t2) / (N // 10)}")
"""

PROBE = """

import _proxywasm as _budget_probe
_cls = next(
    c for c in list(globals().values()) if isinstance(c, type) and issubclass(c, HttpContext) and c is not HttpContext
)
_workload = _cls.__dict__.get("on_request_headers")


def _on_request_headers(self, headers, end_of_stream):
    if headers[":path"] == "/budget-probe":
        stats = _budget_probe.budget_stats()
        self.send_response(200, "%d %d" % (stats["checks"], stats["clock_reads"]))
        return 1
    return _workload(self, headers, end_of_stream) if _workload else 0


_cls.on_request_headers = _on_request_headers
"""


def model(names: list[str]) -> None:
    from proxywasm_host import Host

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "micro.py"
        source.write_text(MICRO)
        micro = Path(tmp) / "micro.wasm"
        micro.write_bytes(build(source).module)
        turns: dict[str, list[float]] = {"budget off": [], "budget on": []}
        reads: list[float] = []
        upstream = direct_upstream()
        try:
            for _round in range(3):
                for label in ("budget off", "budget on"):
                    plugin = WasmPlugin(micro, name="micro", environment_variables=VARIANTS[label] or {})
                    with Envoy(http_bootstrap(upstream_port=upstream.port(), plugins=[plugin])) as envoy:
                        for _ in range(5):
                            with urllib.request.urlopen(envoy.url + "/") as response:
                                turn, read, call = (float(x) for x in response.read().split())
                            turns[label].append(turn)
                            if label == "budget off":
                                reads.append(read - call)
        finally:
            upstream.stop()
        check_ns = min(turns["budget on"]) - min(turns["budget off"])
        read_ns = min(reads)
        print(f"a loop's turn: {min(turns['budget off']):.1f} ns with the budget off, "
              f"{min(turns['budget on']):.1f} ns on: one check costs {check_ns:.1f} ns")  # fmt: skip
        print(f"one read of Envoy's monotonic clock: {read_ns:.0f} ns (beyond a call of a builtin)\n")
        print("| workload | checks per request | clock reads per request | estimated cost us/req |")
        print("|---|---|---|---|")
        empty = "import proxywasm\nfrom proxywasm import HttpContext\n\n\n@proxywasm.register\n"
        empty += "class Empty(HttpContext):\n    pass\n"
        baseline = None
        for workload in [None, *(w for w in WORKLOADS if w.name in names)]:
            source = Path(tmp) / f"probe_{workload.name if workload else 'empty'}.py"
            source.write_text((workload.python.read_text() if workload else empty) + PROBE)
            host = Host.load(build(source).module)
            method, body, headers = "GET", None, [("x-api-key", "k"), ("x-client", "c1")]
            if workload is not None and workload.name == "json_body":
                method, body, headers = "POST", JSON_BODY.encode(), [("content-type", "application/json")]

            def probe(host: Host = host) -> list[int]:
                return [int(x) for x in host.request("GET", "/budget-probe").body.split()]

            for _ in range(5):
                host.request(method, "/", headers=headers, body=body)
            first = probe()
            second = probe()
            for _ in range(100):
                host.request(method, "/", headers=headers, body=body)
            third = probe()
            per = [(c - b - (b - a)) / 100 for a, b, c in zip(first, second, third, strict=True)]
            if workload is None:
                baseline = per  # what the probe's own path check adds to every request
                continue
            assert baseline is not None
            checks, clock = per[0] - baseline[0], per[1] - baseline[1]
            cost = (checks * check_ns + clock * read_ns) / 1000
            print(f"| {workload.name} | {checks:.0f} | {clock:.1f} | {cost:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--workload", action="append", choices=["headers", "json_body", "rate_limit"])
    parser.add_argument("--model", action="store_true", help="measure the parts instead of the A/B")
    args = parser.parse_args()
    names = args.workload or ["headers", "json_body", "rate_limit"]
    if args.model:
        model(names)
        return
    upstream = direct_upstream()
    rows = []
    try:
        for workload in (w for w in WORKLOADS if w.name in names):
            wasm = ROOT / ".cache" / "bench" / f"budget-{workload.name}.wasm"
            wasm.parent.mkdir(parents=True, exist_ok=True)
            wasm.write_bytes(build(workload.python).module)
            lua = Path(tempfile.mkstemp(suffix=".lua")[1])
            lua.write_text(workload.wrk_lua)
            cpu: dict[str, list[float]] = {label: [] for label in VARIANTS}
            for r in range(args.rounds):
                pair = ["budget off", "budget on"] if r % 2 == 0 else ["budget on", "budget off"]
                for label in ["no filter", *pair] if r % 3 == 0 else [*pair, "no filter"]:
                    env = VARIANTS[label]
                    plugins = [] if env is None else [WasmPlugin(wasm, name="bench", environment_variables=env)]
                    config = http_bootstrap(upstream_port=upstream.port(), plugins=plugins)
                    with Envoy(config, concurrency=1) as envoy:
                        wrk(envoy.url, lua, 1.0)  # warm-up
                        before = cpu_seconds(envoy.pid)
                        requests, _ = wrk(envoy.url, lua, args.duration)
                        cpu[label].append((cpu_seconds(envoy.pid) - before) / requests * 1e6)
                print(f"{workload.name}: round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
            lua.unlink()
            med = {label: statistics.median(values) for label, values in cpu.items()}
            diffs = [on - off for on, off in zip(cpu["budget on"], cpu["budget off"], strict=True)]
            added = statistics.median(diffs)
            filter_cost = med["budget off"] - med["no filter"]
            rows.append(
                f"| {workload.name} | {med['no filter']:.1f} | {med['budget off']:.1f} | {med['budget on']:.1f} "
                f"| {added:+.2f} ({min(diffs):+.1f}..{max(diffs):+.1f}) | {added / med['budget off'] * 100:+.1f}% "
                f"| {added / filter_cost * 100:+.1f}% |"
            )
    finally:
        upstream.stop()
    print(f"\n({args.rounds} interleaved rounds x {args.duration:.0f} s, wrk -c4, Envoy --concurrency 1; medians)\n")
    print("| workload | no filter us/req | budget off us/req | budget on us/req | budget adds us/req "
          "| of Envoy CPU/req | of the filter's cost |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
