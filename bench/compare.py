"""Compare builds of the same filter side by side in real Envoy, interleaved: Envoy CPU per
request, start-to-ready time, RSS per extra worker (1 vs 8 workers) and module size. Used to
measure an optimisation: build the filter before and after, then

    .venv/bin/python bench/compare.py before.wasm after.wasm [--workload headers] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import WORKLOADS, Variant, cpu_seconds, direct_upstream, paired_ratios, start_envoy, wrk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="+", type=Path)
    parser.add_argument("--workload", default="headers", choices=[w.name for w in WORKLOADS])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0)
    args = parser.parse_args()
    workload = next(w for w in WORKLOADS if w.name == args.workload)
    variants = [Variant("no filter", None)] + [
        Variant(str(m), m, m.stat().st_size, configuration=workload.configuration) for m in args.modules
    ]
    lua = Path(tempfile.mkstemp(suffix=".lua")[1])
    lua.write_text(workload.wrk_lua)
    upstream = direct_upstream()
    starts: dict[str, list[float]] = {v.label: [] for v in variants}
    per_worker: dict[str, list[float]] = {v.label: [] for v in variants}
    vm_memory: dict[str, list[int]] = {v.label: [] for v in variants}
    try:
        for r in range(args.rounds):
            for v in variants[r % len(variants) :] + variants[: r % len(variants)]:
                rss = {}
                for workers in (1, 8):
                    envoy, seconds = start_envoy(v, upstream.port(), concurrency=workers)
                    try:
                        wrk(envoy.url, lua, 1.0, connections=workers * 4)
                        rss[workers] = envoy.rss_bytes()
                        vm_memory[v.label] += envoy.wasm_memory_rss()
                        if workers == 1:
                            starts[v.label].append(seconds)
                            before = cpu_seconds(envoy.pid)
                            requests, rps = wrk(envoy.url, lua, args.duration)
                            v.cpu_us.append((cpu_seconds(envoy.pid) - before) / requests * 1e6)
                            v.rps.append(rps)
                    finally:
                        envoy.stop()
                per_worker[v.label].append((rss[8] - rss[1]) / 7 / 1e6)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    finally:
        upstream.stop()
        lua.unlink()
    base = statistics.median(variants[0].cpu_us)
    print(f"{args.workload}: medians of {args.rounds} interleaved rounds")
    print("| module | MB | CPU us/req | overhead us/req | start-to-ready s | RSS MB/extra worker | Wasm memory MB/VM |")
    print("|---|---|---|---|---|---|---|")
    for v in variants:
        cpu = statistics.median(v.cpu_us)
        size = f"{v.module_bytes / 1e6:.2f}" if v.wasm else "-"
        overhead = f"{cpu - base:.1f}" if v.wasm else "-"
        vm_mb = f"{statistics.median(vm_memory[v.label]) / 1e6:.2f}" if vm_memory[v.label] else "-"
        print(
            f"| {v.label} | {size} | {cpu:.1f} | {overhead} | {statistics.median(starts[v.label]):.2f} "
            f"| {statistics.median(per_worker[v.label]):.2f} | {vm_mb} |"
        )
    # Rounds drift together (the machine's load, one Envoy's layout): each round's overhead ratio
    # to the first module, over that round's no filter, cancels what the round shares.
    for v in variants[2:]:
        paired = paired_ratios(variants, v.label, variants[1].label)
        if len(paired) > 1:
            q1, median, q3 = statistics.quantiles(paired, n=4)
            print(f"{v.label}: per-round overhead ratio to {variants[1].label}: median {median:.3f}, "
                  f"quartiles {q1:.3f}-{q3:.3f} ({len(paired)} rounds)")  # fmt: skip


if __name__ == "__main__":
    main()
