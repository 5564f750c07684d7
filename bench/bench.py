"""Side-by-side benchmark of filters doing the same work: our Python SDK, the AssemblyScript SDK,
and no filter at all, in real Envoy on 127.0.0.1.

    .venv/bin/python bench/bench.py            # full run (several minutes)
    .venv/bin/python bench/bench.py --quick    # under two minutes

Every number that is compared is measured in one run, interleaved round by round (this machine is
noisy), and reported as the median of the rounds. CPU per request is Envoy's own CPU time (user +
system, from /proc) divided by the requests wrk completed; the upstream is a second Envoy that
answers directly, so its cost is not counted.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "sdk"))

from proxywasm_build.build import build  # noqa: E402
from proxywasm_build.envoy import Envoy, WasmPlugin, http_bootstrap  # noqa: E402

PYTHON_FILTERS = ROOT / "bench" / "filters" / "python"
AS_DIR = ROOT / "tests" / "assemblyscript"
AS_OUT = ROOT / ".cache" / "as"
CLOCK_TICKS = 100  # USER_HZ on Linux

JSON_BODY = '{"user": "alice", "items": [1, 2, 3], "note": "benchmark"}'


@dataclass
class Workload:
    name: str
    python: Path  # the Python filter (file or package)
    assemblyscript: str | None  # its twin, built by tests/assemblyscript/build.sh
    wrk_lua: str
    rejected: tuple[str, str, bytes, int] | None = None  # (method, path, body, status) every filter must give
    configuration: str | None = None
    python_await: Path | None = None  # the same filter written with await (variant "python-await")


WORKLOADS = [
    Workload(
        "headers",
        PYTHON_FILTERS / "headers.py",
        "bench_headers",
        'wrk.headers["x-api-key"] = "k"\n',
        ("GET", "/", b"", 401),
    ),
    Workload(
        "json_body",
        PYTHON_FILTERS / "json_body.py",
        "bench_json_body",
        f'wrk.method = "POST"\nwrk.body = {json.dumps(JSON_BODY)}\nwrk.headers["content-type"] = "application/json"\n',
        ("POST", "/", b'{"nobody": 1}', 400),
    ),
    Workload(
        "rate_limit",
        PYTHON_FILTERS / "rate_limit.py",
        "bench_rate_limit",
        'wrk.headers["x-client"] = "c1"\n',
    ),
    # An authorisation callout per request, callback style vs await style (Python only): the
    # question is what await costs over callbacks. The callout goes to the direct upstream.
    Workload(
        "callout",
        PYTHON_FILTERS / "callout.py",
        None,
        'wrk.headers["x-api-key"] = "k"\n',
        ("GET", "/deny", b"", 403),
        python_await=PYTHON_FILTERS / "callout_await.py",
    ),
    # The examples issue 2 asks numbers for (Python only: no AssemblyScript twin).
    Workload("helloworld", ROOT / "examples" / "helloworld", None, ""),
    Workload(
        "http_headers",
        ROOT / "examples" / "http_headers",
        None,
        "",
        configuration='{"header": "x-wasm-header", "value": "demo-wasm"}',
    ),
]


@dataclass
class Variant:
    label: str
    wasm: Path | None
    module_bytes: int = 0
    build_seconds: float | None = None
    envoy: Envoy | None = None
    start_seconds: float = 0.0
    cpu_us: list[float] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)
    configuration: str | None = None


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def direct_upstream() -> Envoy:
    """A plain Envoy answering 200 itself (403 for /auth-deny, the callout workload's refusal):
    a fast upstream whose CPU is not measured."""
    route = {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}
    deny = {"match": {"prefix": "/auth-deny"}, "direct_response": {"status": 403}}
    hcm_type = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    hcm = {
        "@type": f"type.googleapis.com/{hcm_type}",
        "stat_prefix": "upstream",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [deny, route]}]},
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
    }
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "upstream",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
                    ],
                }
            ]
        },
    }
    return Envoy(config, concurrency=1).start()


def start_envoy(variant: Variant, upstream_port: int, concurrency: int = 1) -> tuple[Envoy, float]:
    plugins = (
        [WasmPlugin(variant.wasm, name="bench", root_id="bench", configuration=variant.configuration)]
        if variant.wasm
        else []
    )
    started = time.perf_counter()
    envoy = Envoy(http_bootstrap(upstream_port=upstream_port, plugins=plugins), concurrency=concurrency).start()
    return envoy, time.perf_counter() - started


def wrk(url: str, lua: Path, seconds: float, connections: int = 4) -> tuple[int, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", str(lua), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} failed responses under load:\n{out}")
    return requests, float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def check_same_work(variant: Variant, workload: Workload) -> None:
    """Every filter variant must reject what the workload says it rejects (else it does less work)."""
    if variant.wasm is None or workload.rejected is None or variant.envoy is None:
        return
    method, path, body, status = workload.rejected
    request = urllib.request.Request(variant.envoy.url + path, data=body or None, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            got = response.status
    except urllib.error.HTTPError as err:
        got = err.code
    if got != status:
        raise RuntimeError(f"{variant.label} {workload.name}: expected {status} for {method} {path}, got {got}")


def build_python(workload: Workload, source: Path | None = None, label: str = "python") -> Variant:
    result = build(source or workload.python)
    out = ROOT / ".cache" / "bench" / f"{workload.name}-{label}.wasm"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(result.module)
    return Variant(label, out, len(result.module), result.seconds, configuration=workload.configuration)


def python_variants(workload: Workload) -> list[Variant]:
    variants = [build_python(workload)]
    if workload.python_await is not None:
        variants.append(build_python(workload, workload.python_await, "python-await"))
    return variants


def assemblyscript_variant(workload: Workload) -> Variant | None:
    if workload.assemblyscript is None:
        return None
    wasm = AS_OUT / f"{workload.assemblyscript}.wasm"
    return Variant("assemblyscript", wasm, wasm.stat().st_size) if wasm.exists() else None


@dataclass
class Memory:
    per_worker_mb: float  # least-squares slope of Envoy's RSS over 1, 2, 4 and 8 workers
    vm_memory_mb: float | None  # resident linear memory of one Wasm VM (median over the VMs)


def rss_per_worker(variant: Variant, upstream_port: int, lua: Path) -> Memory:
    """Envoy RSS with 1, 2, 4 and 8 workers (after traffic reached every worker); the least-squares
    slope is the memory each extra worker costs. Also the resident linear memory of each Wasm VM:
    the part of that cost the module itself decides, measured exactly rather than by difference."""
    rss: dict[int, int] = {}
    vm_memory: list[int] = []
    for workers in (1, 2, 4, 8):  # 8 widens the span: one Envoy's RSS moves by a few hundred KB run to run
        envoy, _ = start_envoy(variant, upstream_port, concurrency=workers)
        try:
            wrk(envoy.url, lua, 1.0, connections=workers * 4)
            rss[workers] = envoy.rss_bytes()
            vm_memory += envoy.wasm_memory_rss()
        finally:
            envoy.stop()
    mean_n = statistics.mean(rss)
    mean_rss = statistics.mean(rss.values())
    slope = sum((n - mean_n) * (r - mean_rss) for n, r in rss.items()) / sum((n - mean_n) ** 2 for n in rss)
    return Memory(slope / 1e6, statistics.median(vm_memory) / 1e6 if vm_memory else None)


def host_request_us(wasm: Path, workload: Workload, rounds: int) -> float | None:
    try:
        from proxywasm_host import Host
    except ImportError:
        return None
    options: dict[str, Any] = {"plugin_config": workload.configuration} if workload.configuration else {}
    if workload.name == "callout":  # the authorisation service the filter calls
        options["clusters"] = {"upstream": lambda request: (403 if "deny" in request.path else 200, [], b"ok\n")}
    host = Host.load(wasm, root_id="bench", **options)
    method, body, headers = "GET", b"", [("x-api-key", "k"), ("x-client", "c1")]
    if workload.name == "json_body":
        method, body = "POST", JSON_BODY.encode()
    for _ in range(50):
        host.request(method, "/", headers=headers, body=body)
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(200):
            host.request(method, "/", headers=headers, body=body)
        samples.append((time.perf_counter() - started) / 200 * 1e6)
    return statistics.median(samples)


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def run(args: argparse.Namespace) -> str:
    say: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    if not args.no_assemblyscript:
        subprocess.run([str(AS_DIR / "build.sh")], check=True, stdout=sys.stderr)
    upstream = direct_upstream()
    tables: list[str] = []
    try:
        upstream_port = upstream.port()
        workloads = [w for w in WORKLOADS if not args.workload or w.name in args.workload]
        for workload in workloads:
            say(f"== {workload.name}")
            variants = [Variant("no filter", None), *python_variants(workload)]
            as_variant = None if args.no_assemblyscript else assemblyscript_variant(workload)
            if as_variant is not None:
                variants.append(as_variant)
            with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
                f.write(workload.wrk_lua)
            lua = Path(f.name)
            for v in variants:
                v.envoy, v.start_seconds = start_envoy(v, upstream_port)
                check_same_work(v, workload)
                wrk(v.envoy.url, lua, 1.0)  # warm up
            try:
                for r in range(args.rounds):
                    order = variants[r % len(variants) :] + variants[: r % len(variants)]
                    for v in order:
                        assert v.envoy is not None
                        before = cpu_seconds(v.envoy.pid)
                        requests, rps = wrk(v.envoy.url, lua, args.duration)
                        v.cpu_us.append((cpu_seconds(v.envoy.pid) - before) / requests * 1e6)
                        v.rps.append(rps)
                    say(f"   round {r + 1}/{args.rounds} done")
            finally:
                for v in variants:
                    if v.envoy is not None:
                        v.envoy.stop()
            memory = {v.label: rss_per_worker(v, upstream_port, lua) for v in variants} if not args.quick else {}
            tables.append(table(workload, variants, memory, args))
            lua.unlink()
    finally:
        upstream.stop()
    return "\n\n".join(tables)


def table(workload: Workload, variants: list[Variant], memory: dict[str, Memory], args: Any) -> str:
    base = statistics.median(variants[0].cpu_us)
    as_v = next((v for v in variants if v.label == "assemblyscript"), None)
    as_overhead = statistics.median(as_v.cpu_us) - base if as_v else None
    lines = [
        f"### {workload.name} ({args.rounds} rounds x {args.duration}s, wrk -c4, Envoy --concurrency 1)",
        "",
        "| variant | CPU us/req | overhead us/req | overhead vs AS | req/s | start-to-ready s | module MB "
        "| RSS MB/extra worker | Wasm memory MB/VM | build s | host us/req |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        cpu = statistics.median(v.cpu_us)
        overhead = cpu - base
        ratio = overhead / as_overhead if as_overhead and v.wasm else None
        mem = memory.get(v.label)
        host_us = host_request_us(v.wasm, workload, 5) if v.wasm is not None else None
        lines.append(
            f"| {v.label} | {cpu:.1f} | {fmt(overhead if v.wasm else None, '.1f')} | {fmt(ratio, '.2f')}x "
            f"| {statistics.median(v.rps):.0f} | {v.start_seconds:.2f} "
            f"| {fmt(v.module_bytes / 1e6 if v.wasm else None, '.2f')} "
            f"| {fmt(mem.per_worker_mb if mem else None, '.2f')} | {fmt(mem.vm_memory_mb if mem else None, '.2f')} "
            f"| {fmt(v.build_seconds, '.2f')} | {fmt(host_us, '.0f')} |"
        )
    by_label = {v.label: statistics.median(v.cpu_us) - base for v in variants}
    if "python-await" in by_label and by_label.get("python"):
        ratio = by_label["python-await"] / by_label["python"]
        lines += ["", f"await-style overhead / callback-style overhead: {ratio:.3f}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds; no memory scan (< 2 min)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--duration", type=float, default=None, help="seconds of load per variant per round")
    parser.add_argument("--workload", action="append", help="only this workload (repeatable)")
    parser.add_argument("--no-assemblyscript", action="store_true")
    args = parser.parse_args()
    args.rounds = args.rounds or (3 if args.quick else 7)
    args.duration = args.duration or (1.0 if args.quick else 4.0)
    print(run(args))


if __name__ == "__main__":
    main()
