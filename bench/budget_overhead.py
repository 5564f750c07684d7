"""What the CPU budget per callback costs: each bench workload's Python filter in real Envoy with
the budget on (the default) and off (``PROXYWASM_CPU_BUDGET_MS=0`` in the VM's environment: the
same module, so only the budget differs), and no filter, interleaved round by round.

    .venv/bin/python bench/budget_overhead.py [--rounds 5] [--duration 3] [--workload headers ...]

Prints Envoy CPU per request (median over the rounds) and what the budget adds, per request and as
a share of Envoy's CPU per request and of the filter's own cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import ROOT, WORKLOADS, cpu_seconds, direct_upstream, wrk
from proxywasm.budget import ENV_VAR
from proxywasm_build.build import build
from proxywasm_build.envoy import Envoy, WasmPlugin, http_bootstrap

VARIANTS = {"no filter": None, "budget off": {ENV_VAR: "0"}, "budget on": {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--workload", action="append", choices=["headers", "json_body", "rate_limit"])
    args = parser.parse_args()
    names = args.workload or ["headers", "json_body", "rate_limit"]
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
            labels = list(VARIANTS)
            for r in range(args.rounds):
                for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
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
            added = med["budget on"] - med["budget off"]
            filter_cost = med["budget off"] - med["no filter"]
            rows.append(
                f"| {workload.name} | {med['no filter']:.1f} | {med['budget off']:.1f} | {med['budget on']:.1f} "
                f"| {added:+.2f} | {added / med['budget off'] * 100:+.1f}% | {added / filter_cost * 100:+.1f}% |"
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
