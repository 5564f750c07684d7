"""Which of the runtime's functions the bench's workloads run per request: sdk/runtime/hot_functions.txt.

    .venv/bin/python bench/hot_functions.py            # measure every workload, rewrite the list
    .venv/bin/python bench/hot_functions.py --check    # exit 1 if a workload runs one it lacks

The runtime's build keeps the direct calls of the functions listed, so V8 inlines into them, and
makes the other functions' calls to larger callees indirect, so Envoy starts sooner
(sdk/runtime/indirect_calls.py). This measures the list: each workload's Python builds (bench.py's,
with both styles where a workload has two) get one exported counter per function, incremented on
entry; node runs them behind bench/v8_guest.js's host for the workload's timed request (after 200
warm-up requests, 100 more, 4 streams at a time), next to the builds as they are, which must answer
the same; a function is hot when its counter moved. Function indices are the runtime's (a build
changes bodies, never indices), named from its name section. The list is data for the build:
measure it again when the SDK's or the runtime's hot paths change
(tests/bench_anchors/test_hot_functions.py checks it still covers the main workloads).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sdk" / "runtime"))
from indirect_calls import hot_names
from v8_guest import SCRIPT, spec

from bench import ROOT, WORKLOADS, Workload, python_variants
from proxywasm_build import served_code, wasm

HOT_FUNCTIONS = ROOT / "sdk" / "runtime" / "hot_functions.txt"
PREFIX = "proxywasm_profile_"  # bench/v8_guest.js reads the exported globals named so
HEADER = """\
# The runtime's functions the bench's workloads run per request, one name a line (sorted).
# Measured by bench/hot_functions.py (which rewrites this file); read by the runtime's build
# (sdk/runtime/indirect_calls.py): these keep their direct calls, so V8 inlines into them.
"""


def instrumented(module: bytes) -> bytes:
    """``module`` with a mutable i32 global per defined function, exported as PREFIX + its function
    index and incremented when the function is entered."""
    sections = wasm.parse_sections(module)
    by_id = {s.id: s for s in sections}
    imported = wasm.imported_count(by_id[wasm.IMPORT].payload, wasm.FUNC_KIND)
    first = wasm.imported_count(by_id[wasm.IMPORT].payload, wasm.GLOBAL_KIND) + len(
        wasm.parse_globals(by_id[wasm.GLOBAL].payload)
    )
    bodies = served_code.code_bodies(by_id[wasm.CODE].payload)
    counted = []
    for i, body in enumerate(bodies):
        at, g = wasm.body_locals_end(body), wasm.uleb(first + i)
        # global.get g; i32.const 1; i32.add; global.set g
        counted.append(body[:at] + b"\x23" + g + b"\x41\x01\x6a\x24" + g + body[at:])
    counters = [wasm.Global(wasm.I32, True, wasm.const_expr(wasm.I32, 0))] * len(bodies)
    exports = [wasm.Export(f"{PREFIX}{imported + i}", wasm.GLOBAL_KIND, first + i) for i in range(len(bodies))]
    out = []
    for s in sections:
        if s.id == wasm.GLOBAL:
            s = wasm.Section(s.id, wasm.encode_globals(wasm.parse_globals(s.payload) + counters))
        elif s.id == wasm.EXPORT:
            s = wasm.Section(s.id, wasm.encode_exports(wasm.parse_exports(s.payload) + exports))
        elif s.id == wasm.CODE:
            s = wasm.Section(s.id, served_code.encode_code(counted))
        out.append(s)
    return wasm.build_module(out)


def measure(workload: Workload, requests: int = 100) -> dict[str, dict[str, float]]:
    """Variant label -> name -> entries per request, of each function its timed request runs."""
    modules = {v.label: v.wasm for v in python_variants(workload) if v.wasm is not None}
    with tempfile.TemporaryDirectory() as tmp:
        variants = []
        for label, path in modules.items():
            counted = Path(tmp) / f"{label}.wasm"
            counted.write_bytes(instrumented(path.read_bytes()))
            variants += [{"label": label, "path": str(counted)}, {"label": f"{label} as built", "path": str(path)}]
        args = argparse.Namespace(anchors=False, rounds=1, requests=requests, concurrent=4, evict=0)
        job = spec(workload, args, variants) | {"profile": True}
        job_file = Path(tmp) / "spec.json"
        job_file.write_text(json.dumps(job))
        out = subprocess.run(["node", str(SCRIPT), str(job_file)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{workload.name}: node failed:\n{out.stderr}")
    result = json.loads(out.stdout)
    for label in modules:  # the counters must not change what the filter does
        if result["checks"][label] != result["checks"][f"{label} as built"]:
            raise SystemExit(f"{workload.name}: the instrumented {label} build answered differently")
    names = {label: wasm.function_names(wasm.parse_sections(path.read_bytes())) for label, path in modules.items()}
    return {label: {names[label][int(i)]: n for i, n in result["profiles"][label].items()} for label in modules}


def listed() -> set[str]:
    return set(hot_names(HOT_FUNCTIONS.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", action="append", choices=[w.name for w in WORKLOADS], help="default: all")
    parser.add_argument("--check", action="store_true", help="compare with the list instead of rewriting it")
    args = parser.parse_args()
    if shutil.which("node") is None:
        raise SystemExit("node is not installed: ./dev.sh setup installs it")
    hot: set[str] = set()
    for workload in (w for w in WORKLOADS if w.name in (args.workload or [w.name for w in WORKLOADS])):
        for label, names in measure(workload).items():
            print(f"{workload.name} ({label}): {len(names)} functions", file=sys.stderr)
            hot |= set(names)
    if args.check:
        missing = sorted(hot - listed())
        if missing:
            raise SystemExit(f"{len(missing)} hot functions missing from {HOT_FUNCTIONS}: {', '.join(missing)}")
        return
    HOT_FUNCTIONS.write_text(HEADER + "".join(f"{name}\n" for name in sorted(hot)))
    print(f"{HOT_FUNCTIONS}: {len(hot)} functions", file=sys.stderr)


if __name__ == "__main__":
    main()
