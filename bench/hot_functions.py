"""Which of the runtime's functions the filters run per request: sdk/runtime/hot_functions.txt.

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

The production filters the bench does not time (telemetry, canary, fault_injection,
identity_policy, ext_authz: their request paths read properties, metrics and callouts that
v8_guest.js only stubs) are profiled the same way in the local host (``HOST_WORKLOADS``): each
runs with the configuration its ``envoy.yaml`` serves, 20 rounds of its requests to warm up, then
50 more counted, and must answer the same instrumented as built.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sdk" / "runtime"))
sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))  # envoy_yaml, the tests' reader
from indirect_calls import hot_names
from v8_guest import SCRIPT, spec

from bench import ROOT, WORKLOADS, Workload, python_variants
from proxywasm_build import served_code, wasm

HOT_FUNCTIONS = ROOT / "sdk" / "runtime" / "hot_functions.txt"
PREFIX = "proxywasm_profile_"  # bench/v8_guest.js reads the exported globals named so
HEADER = """\
# The runtime's functions the bench's workloads and the production filters run per request, one name
# a line (sorted).
# Measured by bench/hot_functions.py (which rewrites this file); read by the runtime's build
# (sdk/runtime/indirect_calls.py): these keep their direct calls, so V8 inlines into them.
"""


def instrumented(module: bytes) -> bytes:
    """``module`` with a mutable i32 global per defined function, exported as PREFIX + its function
    index and incremented when the function is entered."""
    sections = wasm.parse_sections(module)
    by_id = {s.id: s for s in sections}
    imported = wasm.imported_functions(sections)
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


def envoy_yaml_configuration(filter_dir: Path) -> str:
    """The plugin configuration ``filter_dir/envoy.yaml`` gives the filter (its Wasm filter's)."""
    import yaml  # a dev dependency (mkdocs needs it): only this tool's process reads the file
    from envoy_yaml import wasm_config  # the tests' reader of a deployment's envoy.yaml

    return str(wasm_config(yaml.safe_load((filter_dir / "envoy.yaml").read_text()))["configuration"]["value"])


Answer = tuple[int, tuple[str, ...], bytes]


@dataclass(frozen=True)
class HostWorkload:
    """A production filter's requests, run in the local host with its envoy.yaml configuration."""

    name: str  # filters/<name>
    requests: Callable[[Any], list[Any]]  # Host -> the Responses of one round of requests
    clusters: dict[str, Any] = field(default_factory=dict)


def _telemetry(host: Any) -> list[Any]:
    traceparent = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    headers = [("user-agent", "curl/8"), ("x-request-id", "r1"), ("traceparent", traceparent)]
    return [host.request("GET", "/api/items?page=2", headers=headers), host.request("POST", "/api/items", body=b"{}")]


def _canary(host: Any) -> list[Any]:
    return [
        host.request("GET", "/", headers=[("x-user-id", "user-7")]),
        host.request("GET", "/", headers=[("cookie", "a=1; canary_variant=canary")]),
        host.request("GET", "/", headers=[("x-canary", "always")]),
    ]


def _fault_injection(host: Any) -> list[Any]:
    return [host.request("GET", "/"), host.request("GET", "/", headers=[("x-envoy-fault-abort-request", "503")])]


def _identity_policy(host: Any) -> list[Any]:
    host.set_property("connection.mtls", True)
    host.set_property("connection.uri_san_peer_certificate", "spiffe://cluster.local/ns/web/sa/frontend")
    return [host.request("GET", "/api/items"), host.request("DELETE", "/api/items")]


def _ext_authz(host: Any) -> list[Any]:
    headers = [("authorization", "Bearer t"), ("cookie", "c=1")]
    return [host.request("POST", "/items", headers=headers, body=b"payload")]


HOST_WORKLOADS = [
    HostWorkload("telemetry", _telemetry),
    HostWorkload("canary", _canary),
    HostWorkload("fault_injection", _fault_injection),
    HostWorkload("identity_policy", _identity_policy),
    HostWorkload(
        "ext_authz", _ext_authz, {"authz": lambda request: (200, [("x-auth-user", "alice"), ("set-cookie", "s=1")], "")}
    ),
]


def measure_in_host(workload: HostWorkload, warmup: int = 20, rounds: int = 50) -> dict[str, float]:
    """Name -> entries per round of ``workload``'s requests, of each function they run."""
    from proxywasm_build.cache import build_cached
    from proxywasm_host import Host

    filter_dir = ROOT / "filters" / workload.name
    built = build_cached(filter_dir / "filter.py").read_bytes()
    config = envoy_yaml_configuration(filter_dir)
    answers: dict[str, list[Answer]] = {}
    counts: dict[int, int] = {}
    for label, module in (("instrumented", instrumented(built)), ("as built", built)):
        host = Host.load(module, plugin_name=workload.name, plugin_config=config, clusters=dict(workload.clusters),
                         use_cache=False)  # fmt: skip
        for _ in range(warmup):
            workload.requests(host)
        counters = [n for n in host.raw.global_names() if n.startswith(PREFIX)]
        before = {n: host.raw.global_value(n) for n in counters}
        seen: list[Answer] = []
        for _ in range(rounds):
            seen += [(r.status, tuple(sorted(k for k, _ in r.headers)), r.body) for r in workload.requests(host)]
        answers[label] = seen
        if label == "instrumented":
            counts = {int(n[len(PREFIX) :]): int(host.raw.global_value(n) - before[n]) for n in counters}
    if answers["instrumented"] != answers["as built"]:
        raise SystemExit(f"{workload.name}: the instrumented build answered differently")
    names = wasm.function_names(wasm.parse_sections(built))
    return {names[i]: n / rounds for i, n in counts.items() if n}


def listed() -> set[str]:
    return set(hot_names(HOT_FUNCTIONS.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", action="append", choices=[w.name for w in WORKLOADS], help="default: all")
    parser.add_argument("--filter", action="append", choices=[w.name for w in HOST_WORKLOADS], help="default: all")
    parser.add_argument("--check", action="store_true", help="compare with the list instead of rewriting it")
    args = parser.parse_args()
    everything = not args.workload and not args.filter
    if not everything and not args.check:
        raise SystemExit("the list is written from every workload: measure a subset only with --check")
    if (everything or args.workload) and shutil.which("node") is None:
        raise SystemExit("node is not installed: ./dev.sh setup installs it")
    hot: set[str] = set()
    for workload in (w for w in WORKLOADS if everything or w.name in (args.workload or ())):
        for label, names in measure(workload).items():
            print(f"{workload.name} ({label}): {len(names)} functions", file=sys.stderr)
            hot |= set(names)
    for host_workload in (w for w in HOST_WORKLOADS if everything or w.name in (args.filter or ())):
        found = measure_in_host(host_workload)
        print(f"{host_workload.name} (local host): {len(found)} functions, {len(set(found) - listed())} not listed",
              file=sys.stderr)  # fmt: skip
        hot |= set(found)
    if args.check:
        missing = sorted(hot - listed())
        if missing:
            raise SystemExit(f"{len(missing)} hot functions missing from {HOT_FUNCTIONS}: {', '.join(missing)}")
        return
    HOT_FUNCTIONS.write_text(HEADER + "".join(f"{name}\n" for name in sorted(hot)))
    print(f"{HOT_FUNCTIONS}: {len(hot)} functions", file=sys.stderr)


if __name__ == "__main__":
    main()
