"""Side-by-side benchmark of filters doing the same work in real Envoy on 127.0.0.1: our Python SDK
and its anchors, what users would pick instead (Envoy's Lua filter, the AssemblyScript proxy-wasm
SDK, an ext_proc server in Python), hand-written WebAssembly making the same host calls with no
language runtime (the floor of any Wasm filter), and no filter at all.

    .venv/bin/python bench/bench.py                    # full run (about 16 minutes)
    .venv/bin/python bench/bench.py --quick            # under two minutes, no memory scan
    .venv/bin/python bench/bench.py --anchors none     # only Python against no filter
    .venv/bin/python bench/bench.py --anchors lua,assemblyscript --workload headers

Every number that is compared is measured in one run, interleaved round by round (this machine is
noisy), and reported as the median of the rounds. CPU per request is Envoy's own CPU time (user +
system, from /proc) divided by the requests wrk completed; the upstream is a second Envoy that
answers directly, so its cost is not counted. The ext_proc server's CPU is measured the same way
and reported on its own. Before timing, every variant must reject the workload's bad request.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import wasmtime

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "sdk"))

from proxywasm_build.build import build  # noqa: E402
from proxywasm_build.envoy import Cluster, Envoy, WasmPlugin, http_bootstrap  # noqa: E402

PYTHON_FILTERS = ROOT / "bench" / "filters" / "python"
LUA_FILTERS = ROOT / "bench" / "filters" / "lua"
WAT_FILTERS = ROOT / "bench" / "filters" / "wat"
EXT_PROC_SERVER = ROOT / "bench" / "ext_proc_server.py"
AS_DIR = ROOT / "tests" / "assemblyscript"
AS_OUT = ROOT / ".cache" / "as"
CLOCK_TICKS = 100  # USER_HZ on Linux
ANCHORS = ("lua", "wat", "assemblyscript", "ext_proc")  # the variants Python is compared with (besides no filter)
ORDER = ("no filter", "lua", "wat", "assemblyscript", "ext_proc", "python", "python-await")  # the tables' rows
CONCURRENCY = (1, 2, 4, 8, 16)  # the memory scan's --concurrency values (Istio's table goes 1 to 16)
LUA_LIMIT_LINE = "local LIMIT = 1000000000"  # in rate_limit.lua; the rejection check replaces it

JSON_BODY = '{"user": "alice", "items": [1, 2, 3], "note": "benchmark"}'
JsonDict = dict[str, Any]


@dataclass(frozen=True)
class Rejection:
    """A request every filter variant must answer with `status` (and no filter with 200): the proof
    that the variant does the workload's work rather than less.

    `limit` marks a rate limit: the check then starts a one-worker Envoy whose filter allows `limit`
    requests per one-second window and sends 2 x `limit` requests from one client within one window;
    the first `limit` must pass and the rest get `status`. One worker, because the Lua twin counts
    per worker."""

    method: str
    body: bytes
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    limit: int | None = None
    path: str = "/"


@dataclass
class Workload:
    name: str
    python: Path  # the Python filter (file or package)
    assemblyscript: str | None  # its twin, built by tests/assemblyscript/build.sh
    wrk_lua: str  # wrk's script: the request that is timed
    rejected: Rejection | None = None
    configuration: str | None = None
    python_await: Path | None = None  # the same filter written with await (variant "python-await")
    lua: str | None = None  # its envoy.filters.http.lua twin, in bench/filters/lua/
    wat: str | None = None  # its hand-written WebAssembly twin, in bench/filters/wat/
    ext_proc: bool = False  # bench/ext_proc_server.py serves it
    added_header: str | None = None  # a response header every variant must add to the timed request
    headers: tuple[tuple[str, str], ...] | None = None  # the timed request's headers, if not the default


def filter_workloads() -> list[Workload]:
    """jwt_auth verifying an RS256 token (2048-bit key, minted here with PyJWT) with its signature
    cache and without, and rate_limit keyed by a header with a bucket no timed run empties."""
    import jwt  # PyJWT and cryptography: dev dependencies, only the bench's process uses them
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="bench", alg="RS256", use="sig")
    token = jwt.encode({"iss": "bench", "sub": "u", "exp": int(time.time()) + 86400}, key, "RS256",
                       headers={"kid": "bench"})  # fmt: skip
    provider = {"issuer": "bench", "local_jwks": {"keys": [jwk]}}
    wrk = f'wrk.headers["authorization"] = "Bearer {token}"\n'
    bearer = (("authorization", f"Bearer {token}"),)
    jwt_auth = ROOT / "filters" / "jwt_auth" / "filter.py"
    return [
        Workload("jwt_rs256_cached", jwt_auth, None, wrk, Rejection("GET", b"", 401), headers=bearer,
                 configuration=json.dumps({"providers": {"bench": provider}})),
        Workload("jwt_rs256_uncached", jwt_auth, None, wrk, Rejection("GET", b"", 401), headers=bearer,
                 configuration=json.dumps({"providers": {"bench": provider}, "signature_cache_size": 0})),
        Workload("filter_rate_limit", ROOT / "filters" / "rate_limit" / "filter.py", None,
                 'wrk.headers["x-client"] = "c1"\n', headers=(("x-client", "c1"),),
                 added_header="x-ratelimit-remaining",
                 configuration=json.dumps({"key": "header", "header": "x-client",
                                           "token_bucket": {"max_tokens": 1_000_000_000,
                                                            "tokens_per_fill": 1_000_000_000}})),
    ]  # fmt: skip


WORKLOADS = [
    Workload(
        "headers",
        PYTHON_FILTERS / "headers.py",
        "bench_headers",
        'wrk.headers["x-api-key"] = "k"\n',
        Rejection("GET", b"", 401),
        lua="headers.lua",
        wat="headers.wat",
        ext_proc=True,
        added_header="x-filtered",
    ),
    Workload(
        "json_body",
        PYTHON_FILTERS / "json_body.py",
        "bench_json_body",
        f'wrk.method = "POST"\nwrk.body = {json.dumps(JSON_BODY)}\nwrk.headers["content-type"] = "application/json"\n',
        Rejection("POST", b'{"nobody": 1}', 400),
        lua="json_body.lua",
    ),
    Workload(
        "rate_limit",
        PYTHON_FILTERS / "rate_limit.py",
        "bench_rate_limit",
        'wrk.headers["x-client"] = "c1"\n',
        Rejection("GET", b"", 429, limit=3),
        lua="rate_limit.lua",
        wat="rate_limit.wat",
    ),
    # An authorisation callout per request, callback style vs await style (Python only): the
    # question is what await costs over callbacks. The callout goes to the direct upstream.
    Workload(
        "callout",
        PYTHON_FILTERS / "callout.py",
        None,
        'wrk.headers["x-api-key"] = "k"\n',
        Rejection("GET", b"", 403, path="/deny"),
        python_await=PYTHON_FILTERS / "callout_await.py",
    ),
    # Production filters from filters/ (Python only): what a day-2 filter costs per request.
    *filter_workloads(),
    # The examples issue 2 asks numbers for (Python only: no twins).
    Workload("helloworld", ROOT / "examples" / "helloworld", None, ""),
    Workload(
        "http_headers",
        ROOT / "examples" / "http_headers",
        None,
        "",
        configuration='{"header": "x-wasm-header", "value": "demo-wasm"}',
    ),
]


class ExtProcServer:
    """bench/ext_proc_server.py in a process of its own, on 127.0.0.1 (its CPU is read from /proc)."""

    def __init__(self) -> None:
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, str(EXT_PROC_SERVER), "--port", "0"],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "listening on <port>", or "" if it died
        match = re.fullmatch(r"listening on (\d+)\n", line)
        if match is None:
            self.stop()
            raise RuntimeError(f"ext_proc server did not start (exit code {self.proc.returncode}, said {line!r})")
        self.port = int(match.group(1))
        self.start_seconds = time.perf_counter() - started  # to serving: Python, grpcio and the stubs loaded

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("VmRSS not found")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Variant:
    """One way of doing a workload: no filter (wasm, lua and ext_proc all unset), a proxy-wasm module,
    a Lua script, or the ext_proc server. Collects every measurement taken of it."""

    label: str
    wasm: Path | None
    module_bytes: int = 0
    build_seconds: float | None = None
    envoy: Envoy | None = None
    start_seconds: float = 0.0  # the timed Envoy's start to ready
    cpu_us: list[float] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)
    configuration: str | None = None
    lua: str | None = None  # the Lua source
    ext_proc: ExtProcServer | None = None
    server_cpu_us: list[float] = field(default_factory=list)  # the ext_proc server's, per request
    starts: dict[int, list[float]] = field(default_factory=dict)  # --concurrency -> start-to-ready seconds
    rss: dict[int, list[int]] = field(default_factory=dict)  # --concurrency -> Envoy RSS bytes
    vm_memory: list[int] = field(default_factory=list)  # resident linear memory of each Wasm VM seen
    wasm_us: list[float] = field(default_factory=list)  # Envoy CPU per request in Wasm code (perf)

    @property
    def filtered(self) -> bool:
        return self.wasm is not None or self.lua is not None or self.ext_proc is not None

    def http_filters(self, limit: int | None = None) -> tuple[list[JsonDict], list[WasmPlugin], list[Cluster]]:
        """Envoy's http_filters before the router, the Wasm plugins, the extra clusters. `limit`
        configures a rate limit filter (see Rejection.limit)."""
        if self.wasm is not None:
            configuration = str(limit) if limit is not None else self.configuration
            return [], [WasmPlugin(self.wasm, name="bench", root_id="bench", configuration=configuration)], []
        if self.lua is not None:
            source = self.lua
            if limit is not None:
                if LUA_LIMIT_LINE not in source:
                    raise RuntimeError(f"lua {self.label}: no {LUA_LIMIT_LINE!r} line to set the limit in")
                source = source.replace(LUA_LIMIT_LINE, f"local LIMIT = {limit}")
            lua_type = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"
            lua = {"@type": lua_type, "default_source_code": {"inline_string": source}}
            return [{"name": "envoy.filters.http.lua", "typed_config": lua}], [], []
        if self.ext_proc is not None:
            ext_proc_type = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
            ext_proc = {
                "@type": ext_proc_type,
                "grpc_service": {"envoy_grpc": {"cluster_name": "ext_proc"}},
                "failure_mode_allow": False,
                # Generous: a stalled server fails the request (and the bench) rather than being hidden.
                "message_timeout": "5s",
                "processing_mode": {
                    "request_header_mode": "SEND",
                    "response_header_mode": "SEND",
                    "request_body_mode": "NONE",
                    "response_body_mode": "NONE",
                    "request_trailer_mode": "SKIP",
                    "response_trailer_mode": "SKIP",
                },
            }
            cluster = Cluster("ext_proc", self.ext_proc.port, http2=True)
            return [{"name": "envoy.filters.http.ext_proc", "typed_config": ext_proc}], [], [cluster]
        return [], [], []


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


def start_envoy(
    variant: Variant, upstream_port: int, concurrency: int = 1, limit: int | None = None
) -> tuple[Envoy, float]:
    """Envoy with the variant's filter in front of the upstream; returns it and its start to ready
    (from starting the process to admin /ready answering LIVE) in seconds."""
    http_filters, plugins, clusters = variant.http_filters(limit)
    config = http_bootstrap(upstream_port=upstream_port, plugins=plugins, http_filters=http_filters, clusters=clusters)
    started = time.perf_counter()
    envoy = Envoy(config, concurrency=concurrency).start()
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


def send(
    url: str, method: str, body: bytes, headers: Sequence[tuple[str, str]], path: str = "/"
) -> tuple[int, dict[str, str]]:
    """One request; returns its status and its response headers (names lower-cased)."""
    request = urllib.request.Request(url + path, data=body or None, method=method, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}


def in_one_window(burst: Callable[[], list[int]], tries: int = 5) -> list[int]:
    """Run `burst` (a few requests) so that it starts just after a second boundary of the wall clock
    and ends before the next one: within one of the rate limits' one-second windows (Envoy's clock is
    this machine's). Returns its statuses; raises RuntimeError if no try fitted in one window."""
    for _ in range(tries):
        time.sleep(1.01 - time.time() % 1)
        started = time.time()
        statuses = burst()
        if int(time.time()) == int(started):
            return statuses
    raise RuntimeError(f"{tries} bursts of requests each took more than a window: the machine is too busy")


def check_same_work(variant: Variant, workload: Workload, upstream_port: int) -> None:
    """The variant answers the timed request (adding the workload's header) and rejects what the
    workload says it rejects; no filter accepts it (so the rejection is the filter's). Raises
    RuntimeError saying what differs."""
    assert variant.envoy is not None
    where = f"{variant.label} {workload.name}"
    timed = timed_request(workload)
    got, headers = send(variant.envoy.url, *timed)
    if got != 200:
        raise RuntimeError(f"{where}: the timed request got {got}, expected 200")
    if workload.added_header and variant.filtered and workload.added_header not in headers:
        raise RuntimeError(f"{where}: the response lacks {workload.added_header}: {headers}")
    rejected = workload.rejected
    if rejected is None:
        return
    if rejected.limit is None:
        got = send(variant.envoy.url, rejected.method, rejected.body, rejected.headers, rejected.path)[0]
        expected = rejected.status if variant.filtered else 200  # else the rejection is not the filter's
        if got != expected:
            raise RuntimeError(f"{where}: expected {expected} for {rejected.method} {rejected.body!r}, got {got}")
        return
    if not variant.filtered:
        return
    envoy, _ = start_envoy(variant, upstream_port, concurrency=1, limit=rejected.limit)
    try:
        limit, client = rejected.limit, (("x-client", "check"),)
        request = (envoy.url, rejected.method, rejected.body, client)
        statuses = in_one_window(lambda: [send(*request)[0] for _ in range(2 * limit)])
        if statuses != [200] * limit + [rejected.status] * limit:
            raise RuntimeError(f"{where}: with a limit of {limit} per window one client got {statuses}")
    finally:
        envoy.stop()


def timed_request(workload: Workload) -> tuple[str, bytes, list[tuple[str, str]]]:
    """The request wrk sends (method, body, headers), for host_request_us and the checks."""
    if workload.name == "json_body":
        return "POST", JSON_BODY.encode(), [("content-type", "application/json")]
    if workload.headers is not None:
        return "GET", b"", list(workload.headers)
    return "GET", b"", [("x-api-key", "k"), ("x-client", "c1")]


def worker_connections(envoy: Envoy) -> dict[str, int]:
    """Downstream connections each worker accepted on the HTTP listener (Envoy's per-worker listener
    stats `listener.<address>.worker_<n>.downstream_cx_total`; the address is the configured one,
    port 0). The bench's Envoys have one listener besides the admin's."""
    stats = envoy.stats(r"^listener\.127\.0\.0\.1_\d+\.worker_\d+\.downstream_cx_total$")
    return {name.split(".")[-2]: value for name, value in stats.items()}


def serve_every_worker(envoy: Envoy, lua: Path, workers: int) -> None:
    """Load until every worker has served connections (the kernel spreads them over the workers'
    sockets by hash, so one short run may miss one)."""
    for _ in range(5):
        wrk(envoy.url, lua, 1.0, connections=workers * 4)
        served = worker_connections(envoy)
        if len(served) == workers and all(served.values()):
            return
    raise RuntimeError(f"after 5 runs of wrk only some of {workers} workers had connections: {served}")


def scan_memory(variants: list[Variant], upstream_port: int, lua: Path, concurrency: Sequence[int]) -> None:
    """One pass of the memory scan, interleaved: for each --concurrency, each variant's Envoy starts
    (start to ready is recorded), serves on every worker, and its RSS and Wasm VMs' resident linear
    memory are read."""
    for workers in concurrency:
        for v in variants:
            envoy, seconds = start_envoy(v, upstream_port, concurrency=workers)
            try:
                v.starts.setdefault(workers, []).append(seconds)
                serve_every_worker(envoy, lua, workers)
                v.rss.setdefault(workers, []).append(envoy.rss_bytes())
                v.vm_memory += envoy.wasm_memory_rss()
            finally:
                envoy.stop()


def slope(points: dict[int, float]) -> float | None:
    """Least-squares slope of y over x (None with fewer than two points)."""
    if len(points) < 2:
        return None
    mean_x = statistics.mean(points)
    mean_y = statistics.mean(points.values())
    return sum((x - mean_x) * (y - mean_y) for x, y in points.items()) / sum((x - mean_x) ** 2 for x in points)


def rss_mb(v: Variant) -> dict[int, float]:
    """Median Envoy RSS in MB at each --concurrency scanned."""
    return {n: statistics.median(values) / 1e6 for n, values in sorted(v.rss.items())}


def start_to_ready(v: Variant, workers: int = 1) -> float | None:
    """Median start to ready at a --concurrency over every start of the variant."""
    return statistics.median(v.starts[workers]) if v.starts.get(workers) else None


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
    if not wasm.exists():
        raise RuntimeError(f"{wasm} is missing: run tests/assemblyscript/build.sh")
    return Variant("assemblyscript", wasm, wasm.stat().st_size)


def wat_variant(workload: Workload) -> Variant | None:
    """The workload's WAT twin, assembled (by wasmtime's wat2wasm) into .cache/bench."""
    if workload.wat is None:
        return None
    module = bytes(wasmtime.wat2wasm((WAT_FILTERS / workload.wat).read_text()))
    out = ROOT / ".cache" / "bench" / f"{workload.name}-wat.wasm"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(module)
    return Variant("wat", out, len(module))


def lua_variant(workload: Workload) -> Variant | None:
    if workload.lua is None:
        return None
    source = (LUA_FILTERS / workload.lua).read_text()
    return Variant("lua", None, len(source.encode()), lua=source)


def host_options(workload: Workload) -> dict[str, Any]:
    """``Host.load`` options that give the local host what Envoy has for this workload: the plugin
    configuration and, for the callout workload, the authorisation service it calls."""
    options: dict[str, Any] = {"root_id": "bench"}
    if workload.configuration:
        options["plugin_config"] = workload.configuration
    if workload.name == "callout":
        options["clusters"] = {"upstream": lambda request: (403 if "deny" in request.path else 200, [], b"ok\n")}
    return options


def host_request_us(wasm: Path, workload: Workload, rounds: int) -> float | None:
    try:
        from proxywasm_host import Host
    except ImportError:
        return None
    host = Host.load(wasm, **host_options(workload))
    method, body, headers = timed_request(workload)
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


def parse_anchors(text: str) -> tuple[str, ...]:
    if text == "all":
        return ANCHORS
    if text == "none":
        return ()
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in ANCHORS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown anchor {', '.join(unknown)}: choose from {', '.join(ANCHORS)}")
    return names


def run(args: argparse.Namespace) -> str:
    say: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    workloads = [w for w in WORKLOADS if not args.workload or w.name in args.workload]
    if "assemblyscript" in args.anchors and any(w.assemblyscript for w in workloads):
        subprocess.run([str(AS_DIR / "build.sh")], check=True, stdout=sys.stderr)
    upstream = direct_upstream()
    ext_proc: ExtProcServer | None = None
    sections: list[str] = []
    results: dict[str, list[Variant]] = {}
    try:
        if "ext_proc" in args.anchors and any(w.ext_proc for w in workloads):
            ext_proc = ExtProcServer()
            say(f"   ext_proc server serving on 127.0.0.1:{ext_proc.port} after {ext_proc.start_seconds:.2f}s")
        upstream_port = upstream.port()
        for workload in workloads:
            say(f"== {workload.name}")
            found: list[Variant | None] = [Variant("no filter", None), *python_variants(workload)]
            if "lua" in args.anchors:
                found.append(lua_variant(workload))
            if "wat" in args.anchors:
                found.append(wat_variant(workload))
            if "assemblyscript" in args.anchors:
                found.append(assemblyscript_variant(workload))
            if ext_proc is not None and workload.ext_proc:
                found.append(Variant("ext_proc", None, ext_proc=ext_proc))
            variants = sorted((v for v in found if v is not None), key=lambda v: ORDER.index(v.label))
            results[workload.name] = variants
            with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
                f.write(workload.wrk_lua)
            lua = Path(f.name)
            try:
                time_cpu(variants, workload, upstream_port, lua, args, say)
                for r in range(args.memory_rounds):
                    scan_memory(variants, upstream_port, lua, args.concurrency)
                    say(f"   memory scan {r + 1}/{args.memory_rounds} done")
            finally:
                lua.unlink()
            sections.append(cpu_table(workload, variants, args))
            if args.memory_rounds:
                sections.append(memory_table(workload, variants, args))
        if ext_proc is not None:
            sections.append(
                f"ext_proc server (bench/ext_proc_server.py, grpcio {grpc_version()} asyncio, one process): "
                f"start to serving {ext_proc.start_seconds:.2f} s, RSS {ext_proc.rss_bytes() / 1e6:.1f} MB "
                "at the end; its CPU is in the `ext_proc server us/req` column, not in Envoy's."
            )
    finally:
        upstream.stop()
        if ext_proc is not None:
            ext_proc.stop()
    sections.insert(0, summary_table(results, args))
    return "\n\n".join(sections)


def time_cpu(
    variants: list[Variant],
    workload: Workload,
    upstream_port: int,
    lua: Path,
    args: argparse.Namespace,
    say: Callable[[str], None],
) -> None:
    """Start every variant's Envoy (one worker), check it does the work, then time them in
    interleaved rounds (each round starts with the next variant). With ``--restart-every N``
    every variant gets a fresh Envoy after each N rounds: a process keeps its memory layout (where
    V8 put the code, the heap), which can favour one variant by a few per cent for its whole
    life; fresh processes average that out."""

    def start_all() -> None:
        for v in variants:
            v.envoy, v.start_seconds = start_envoy(v, upstream_port)
            v.starts.setdefault(1, []).append(v.start_seconds)
            check_same_work(v, workload, upstream_port)
            wrk(v.envoy.url, lua, 1.0)  # warm up
            v.vm_memory += v.envoy.wasm_memory_rss()

    try:
        start_all()
        for r in range(args.rounds):
            if args.restart_every and r and r % args.restart_every == 0:
                for v in variants:
                    assert v.envoy is not None
                    v.envoy.stop()
                start_all()
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for v in order:
                assert v.envoy is not None
                server = v.ext_proc.pid if v.ext_proc else None
                before = cpu_seconds(v.envoy.pid)
                server_before = cpu_seconds(server) if server else 0.0
                requests, rps = wrk(v.envoy.url, lua, args.duration)
                v.cpu_us.append((cpu_seconds(v.envoy.pid) - before) / requests * 1e6)
                if server:
                    v.server_cpu_us.append((cpu_seconds(server) - server_before) / requests * 1e6)
                v.rps.append(rps)
            say(f"   round {r + 1}/{args.rounds} done")
        time_wasm_code(variants, lua, args)
    finally:
        for v in variants:
            if v.envoy is not None:
                v.envoy.stop()
                v.envoy = None


def wasm_code_share(pid: int, run: Callable[[], object]) -> float | None:
    """The share of ``pid``'s CPU samples in JIT-compiled code (V8's Wasm code: Envoy runs no
    JavaScript) while ``run()`` runs, from ``perf record``; None without a working perf."""
    if shutil.which("perf") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "perf.data"
        recorder = subprocess.Popen(
            ["perf", "record", "-q", "-F", "1999", "-o", str(data), "-p", str(pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)  # perf attaches
        try:
            run()
        finally:
            recorder.send_signal(signal.SIGINT)
            recorder.wait(timeout=30)
        report = subprocess.run(
            ["perf", "report", "-i", str(data), "--sort", "dso", "--stdio", "-q"],
            capture_output=True,
            text=True,
        ).stdout
    rows = [line.split() for line in report.splitlines()]
    shares = [(float(row[0].rstrip("%")), row[1]) for row in rows if len(row) > 1 and row[0].endswith("%")]
    return sum(share for share, dso in shares if dso == "[JIT]") / 100 if shares else None


def time_wasm_code(variants: list[Variant], lua: Path, args: argparse.Namespace) -> None:
    """Envoy CPU per request spent in Wasm code (the filter's own, as V8 runs it), by perf: its
    share of Envoy's samples times Envoy CPU per request in the same run. Interleaved rounds."""
    for r in range(args.perf_rounds):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for v in order:
            if v.wasm is None or v.envoy is None:
                continue
            envoy, done = v.envoy, []
            before = cpu_seconds(envoy.pid)
            share = wasm_code_share(envoy.pid, lambda e=envoy, d=done: d.append(wrk(e.url, lua, args.duration)[0]))
            if share is None or not done:
                return
            v.wasm_us.append(share * (cpu_seconds(envoy.pid) - before) / done[0] * 1e6)


def grpc_version() -> str:
    try:
        import grpc
    except ImportError:
        return "?"
    return str(grpc.__version__)


def overheads(variants: list[Variant]) -> dict[str, float]:
    """Median Envoy CPU per request over no filter's, by label (filtered variants only)."""
    if not variants[0].cpu_us:
        return {}
    base = statistics.median(variants[0].cpu_us)
    return {v.label: statistics.median(v.cpu_us) - base for v in variants if v.filtered and v.cpu_us}


def paired_ratios(variants: list[Variant], label: str, anchor: str) -> list[float]:
    """Per round, ``label``'s overhead over ``anchor``'s, each over that round's no filter."""
    by_label = {v.label: v.cpu_us for v in variants}
    base, top, bottom = by_label.get("no filter"), by_label.get(label), by_label.get(anchor)
    if not base or not top or not bottom:
        return []
    return [(t - b) / (a - b) for b, t, a in zip(base, top, bottom, strict=True) if a - b > 0.5]


def ratio(value: float | None, anchor: float | None) -> str:
    # An anchor's overhead can be within the noise of zero: a ratio to it then means nothing.
    if value is None or anchor is None or anchor <= 0.5:
        return "-"
    return f"{value / anchor:.2f}x"


def cpu_table(workload: Workload, variants: list[Variant], args: argparse.Namespace) -> str:
    over = overheads(variants)
    lines = [
        f"### {workload.name} ({args.rounds} rounds x {args.duration}s, wrk -c4, Envoy --concurrency 1)",
        "",
        "| variant | overhead us/req | vs Lua | vs AS | RSS MB/extra worker | start-to-ready s | CPU us/req "
        "| req/s | ext_proc server us/req | Wasm code us/req (perf) | Wasm memory MB/VM | module MB | build s "
        "| host us/req |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        overhead = over.get(v.label)
        per_worker = slope(rss_mb(v))
        host_us = host_request_us(v.wasm, workload, 5) if v.wasm is not None else None
        vm_mb = statistics.median(v.vm_memory) / 1e6 if v.vm_memory else None
        module_mb = v.module_bytes / 1e6 if v.wasm is not None else None
        lines.append(
            f"| {v.label} | {fmt(overhead, '.1f')} | {ratio(overhead, over.get('lua'))} "
            f"| {ratio(overhead, over.get('assemblyscript'))} | {fmt(per_worker, '.2f')} "
            f"| {fmt(start_to_ready(v), '.2f')} | {fmt(statistics.median(v.cpu_us) if v.cpu_us else None, '.1f')} "
            f"| {fmt(statistics.median(v.rps) if v.rps else None, '.0f')} "
            f"| {fmt(statistics.median(v.server_cpu_us) if v.server_cpu_us else None, '.1f')} "
            f"| {fmt(statistics.median(v.wasm_us) if v.wasm_us else None, '.1f')} "
            f"| {fmt(vm_mb, '.2f')} | {fmt(module_mb, '.2f')} | {fmt(v.build_seconds, '.2f')} | {fmt(host_us, '.0f')} |"
        )
    if over.get("python-await") is not None and over.get("python"):
        lines += ["", f"await-style overhead / callback-style overhead: {over['python-await'] / over['python']:.3f}"]
        paired = paired_ratios(variants, "python-await", "python")
        if paired:
            quartiles = statistics.quantiles(paired, n=4) if len(paired) > 1 else [paired[0]] * 3
            lines.append(
                f"the same ratio per round (the three variants of a round ran back to back, so the machine's "
                f"drift cancels): median {statistics.median(paired):.3f}, quartiles {quartiles[0]:.3f}-"
                f"{quartiles[2]:.3f}, {len(paired)} rounds"
            )
        by_label = {v.label: statistics.median(v.wasm_us) for v in variants if v.wasm_us}
        if "python" in by_label and "python-await" in by_label:
            callback, awaiting = by_label["python"], by_label["python-await"]
            lines.append(
                f"in Wasm code (perf): callback style {callback:.1f} us, await style {awaiting:.1f} us per request "
                f"(+{awaiting - callback:.1f} us)"
            )
    return "\n".join(lines)


def memory_table(workload: Workload, variants: list[Variant], args: argparse.Namespace) -> str:
    levels = list(args.concurrency)
    rounds = f"median of {args.memory_rounds} scans" if args.memory_rounds > 1 else "one scan"
    lines = [
        f"#### {workload.name}: Envoy RSS MB by --concurrency ({rounds}, after traffic on every worker)",
        "",
        "| variant | " + " | ".join(str(n) for n in levels) + " | MB per extra worker | "
        f"start-to-ready s at {levels[0]} | at {levels[-1]} |",
        "|---|" + "---|" * (len(levels) + 3),
    ]
    for v in variants:
        rss = rss_mb(v)
        cells = " | ".join(fmt(rss.get(n), ".1f") for n in levels)
        lines.append(
            f"| {v.label} | {cells} | {fmt(slope(rss), '.2f')} | {fmt(start_to_ready(v, levels[0]), '.2f')} "
            f"| {fmt(start_to_ready(v, levels[-1]), '.2f')} |"
        )
    return "\n".join(lines)


def summary_table(results: dict[str, list[Variant]], args: argparse.Namespace) -> str:
    """Variants as rows, the anchored workloads' overheads as columns: the table for README.md."""
    anchored = [name for name, variants in results.items() if len(variants) > 2]
    if not anchored:
        return "(no anchors run: see the tables below)"
    labels = [label for label in ORDER if any(v.label == label for name in anchored for v in results[name])]
    header = "| | " + " | ".join(f"{name} us/req over no filter (vs Lua, vs AS)" for name in anchored)
    header += f" | start-to-ready s ({anchored[0]}) | RSS MB/extra worker ({anchored[0]}) |"
    lines = [
        f"### Summary ({args.rounds} interleaved rounds x {args.duration}s; Envoy CPU only, ext_proc server apart)",
        "",
        header,
        "|---|" + "---|" * (len(anchored) + 2),
    ]
    for label in labels:
        cells = []
        for name in anchored:
            over = overheads(results[name])
            value = over.get(label)
            lua, assemblyscript = ratio(value, over.get("lua")), ratio(value, over.get("assemblyscript"))
            cell = "-" if value is None else f"{value:.1f} ({lua}, {assemblyscript})"
            server = next((v.server_cpu_us for v in results[name] if v.label == label and v.server_cpu_us), None)
            cells.append(cell + (f" + {statistics.median(server):.0f} in the server" if server else ""))
        first = results[anchored[0]]
        v = next((v for v in first if v.label == label), None)
        start = fmt(start_to_ready(v), ".2f") if v else "-"
        per_worker = fmt(slope(rss_mb(v)), ".2f") if v else "-"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {start} | {per_worker} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 rounds of 1 s, no memory scan (< 2 min)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved CPU rounds (default 7; quick 3)")
    parser.add_argument("--duration", type=float, default=None, help="seconds of load per variant per round")
    parser.add_argument("--workload", action="append", help="only this workload (repeatable)")
    parser.add_argument(
        "--anchors",
        type=parse_anchors,
        default=ANCHORS,
        help=f"comma-separated variants to run next to Python and no filter, from {', '.join(ANCHORS)}; "
        "or all (default) or none",
    )
    parser.add_argument("--no-assemblyscript", action="store_true", help="leave the AssemblyScript anchor out")
    parser.add_argument(
        "--memory-rounds",
        type=int,
        default=None,
        help="passes of the memory scan (RSS at each --concurrency; median taken); default 3, quick 0",
    )
    parser.add_argument(
        "--concurrency",
        type=lambda text: tuple(int(n) for n in text.split(",")),
        default=CONCURRENCY,
        help="the memory scan's Envoy --concurrency values (default 1,2,4,8,16)",
    )
    parser.add_argument(
        "--restart-every",
        type=int,
        default=0,
        help="start every variant's Envoy afresh after this many CPU rounds (0: one Envoy per variant for "
        "the whole run); averages out what one process's memory layout favours",
    )
    parser.add_argument(
        "--perf-rounds",
        type=int,
        default=None,
        help="interleaved passes under `perf record` that split Envoy's CPU per request into its Wasm code "
        "(the filter as V8 runs it) and the rest; default 3, quick 0; needs perf",
    )
    args = parser.parse_args()
    if args.no_assemblyscript:
        args.anchors = tuple(a for a in args.anchors if a != "assemblyscript")
    args.rounds = args.rounds if args.rounds is not None else (3 if args.quick else 7)
    args.duration = args.duration or (1.0 if args.quick else 4.0)
    args.memory_rounds = args.memory_rounds if args.memory_rounds is not None else (0 if args.quick else 3)
    args.perf_rounds = args.perf_rounds if args.perf_rounds is not None else (0 if args.quick else 3)
    print(run(args))


if __name__ == "__main__":
    main()
