"""Where each variant's memory per extra Envoy worker goes, by kind of mapping.

    .venv/bin/python bench/memory_map.py [--workload headers] [--rounds 2] [--python a.wasm --python b.wasm]

For no filter, Lua, the WAT twin, AssemblyScript and Python, Envoy starts at ``--concurrency`` 1 and 8, serves
until every worker has had connections (bench.serve_every_worker), and each mapping in
``/proc/<pid>/smaps`` is classified: a Wasm VM's linear memory (a read-write region followed by
V8's guard reservation of 4 GiB or more), a thread's stack (8 MiB after a guard page), other
anonymous memory (V8's heaps and code, Envoy's per-worker state, malloc), the rest (files, the
main stack, the kernel's). The table
gives each kind's resident MB per extra worker ((8 workers - 1 worker) / 7, medians over rounds),
the split of bench.py's "RSS MB per extra worker". ``--python`` measures built modules (before and
after a change) instead of building the workload's filter from this tree; ``--no-anchors`` leaves
Lua, WAT and AssemblyScript out.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import (
    WORKLOADS,
    Variant,
    assemblyscript_variant,
    build_python,
    direct_upstream,
    lua_variant,
    serve_every_worker,
    start_envoy,
    wat_variant,
)
from proxywasm_build.envoy import Envoy, MemoryMapping, is_wasm_memory

_STACK = 8 << 20


def classify(envoy: Envoy) -> collections.Counter[str]:
    """Resident bytes of Envoy's mappings, by kind."""
    return classify_mappings(envoy.smaps())


def classify_mappings(maps: list[MemoryMapping]) -> collections.Counter[str]:
    """Resident bytes of ``maps`` (``parse_smaps``), by kind (see the module docstring)."""
    kinds: collections.Counter[str] = collections.Counter()
    for i, m in enumerate(maps):
        after = maps[i + 1] if i + 1 < len(maps) else None
        before = maps[i - 1] if i else None
        if m.name and m.name != "[heap]":
            kind = "files, main stack, kernel"  # the binary and libraries, [stack], [vdso], ...
        elif is_wasm_memory(m, after):
            kind = "Wasm linear memory"
        elif (
            m.permissions == "rw-p"
            and before is not None
            and before.permissions == "---p"
            and before.high == m.low
            and before.high - before.low <= 65536
            and m.high - m.low in (_STACK, _STACK - 4096)
        ):
            kind = "thread stack"
        else:
            kind = "other anonymous"  # V8's heaps and code, Envoy's state, malloc ([heap] too)
        kinds[kind] += m.resident
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="headers", choices=[w.name for w in WORKLOADS])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--python", type=Path, action="append", help="a built module (repeat to compare)")
    parser.add_argument("--no-anchors", action="store_true", help="leave Lua, WAT and AssemblyScript out")
    args = parser.parse_args()
    workload = next(w for w in WORKLOADS if w.name == args.workload)
    found = [Variant("no filter", None)]
    if not args.no_anchors:
        found += [lua_variant(workload), wat_variant(workload), assemblyscript_variant(workload)]
    if args.python:
        found += [Variant(str(m), m, m.stat().st_size, configuration=workload.configuration) for m in args.python]
    else:
        found.append(build_python(workload))
    present = [v for v in found if v is not None]
    lua = Path(tempfile.mkstemp(suffix=".lua")[1])
    lua.write_text(workload.wrk_lua)
    upstream = direct_upstream()
    seen: dict[tuple[str, str, int], list[int]] = collections.defaultdict(list)
    try:
        for r in range(args.rounds):
            for v in present:
                for workers in (1, 8):
                    envoy, _ = start_envoy(v, upstream.port(), concurrency=workers)
                    try:
                        serve_every_worker(envoy, lua, workers)
                        for kind, resident in classify(envoy).items():
                            seen[v.label, kind, workers].append(resident)
                    finally:
                        envoy.stop()
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    finally:
        upstream.stop()
        lua.unlink()
    kinds = sorted({kind for _, kind, _ in seen})
    print(f"{workload.name}: resident MB per extra worker by kind of mapping, medians of {args.rounds} rounds")
    print("| variant | " + " | ".join(kinds) + " | total |")
    print("|---" * (len(kinds) + 2) + "|")
    for v in present:
        row = []
        for kind in kinds:
            one, eight = (statistics.median(seen.get((v.label, kind, n)) or [0]) for n in (1, 8))
            row.append((eight - one) / 7 / 1e6)
        print(f"| {v.label} | " + " | ".join(f"{x:.2f}" for x in row) + f" | {sum(row):.2f} |")


if __name__ == "__main__":
    main()
