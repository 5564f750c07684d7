"""``proxywasm run``: build a filter and serve it through a real Envoy, optionally rebuilding and
hot-swapping it on every save.

The filter reaches Envoy through extension config discovery (ECDS) from a watched file: a new
build is written under a new name and the discovery file is replaced atomically, so Envoy swaps
the filter for new streams (also on open keep-alive connections) while in-flight ones finish on
the old one. If the build fails, or Envoy rejects the new filter, the previous filter keeps
serving.

How Envoy 1.40 takes an ECDS update: it loads the module and runs ``on_vm_start`` and
``on_configure`` on the main thread first; if that fails (for example ``on_configure`` raises or
returns False) it logs "Filesystem config update rejected" and counts ``update_rejected``, and the
previous filter stays. Only a successful update counts ``update_success`` and sets the
``version_text`` readout to the new ``version_info``. The first version goes the same way: Envoy
becomes ready either way, and a rejected first version leaves the listener without its filter (every
request gets an empty 500), so ``run`` waits for the verdict and stops with Envoy's reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from .build import BuildResult, build
from .bundle import BuildError
from .envoy import Cluster, Envoy, EnvoyError, WasmPlugin, http_bootstrap, parse_log, tcp_bootstrap
from .upstream import UpstreamServer

FILTER_NAME = "python-filter"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
NETWORK_WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm"
# The discovery's counters: under http_filter for the HTTP listener, network_filter for the L4 one.
_ECDS_STATS = {
    WASM_TYPE: f"extension_config_discovery.http_filter.{FILTER_NAME}",
    NETWORK_WASM_TYPE: f"extension_config_discovery.network_filter.{FILTER_NAME}",
}
# Subscription counters: exactly one of them moves per update Envoy reads from the file.
# (config_reload/config_fail are per filter-chain provider and are not a reliable verdict.)
_OUTCOMES = ("update_success", "update_rejected", "update_failure")
_SETTLE_S = 0.2  # a save is complete once the sources have not changed for this long
_VERDICT_TIMEOUT_S = 120.0  # V8 compiles the module first: ~1.5 s per MB of code, slower on a busy machine
UPSTREAM = "upstream"
_CALLOUTS = ("http_call", "grpc_call", "grpc_stream", "dispatch_http_call")
# A callout error that names its cluster: "... cluster 'auth' ..." (or "cluster \"auth\"").
_CLUSTER_RE = re.compile(r"""cluster ['"]([^'"]+)['"]""")


class KindChanged(BuildError):
    """A rebuilt version serves the other kind of traffic (HTTP vs L4): the listener cannot change."""


class RunError(RuntimeError):
    """``proxywasm run`` cannot serve: bad options, or Envoy rejected the filter; the message says why."""


def parse_cluster(text: str) -> Cluster:
    """``NAME=HOST:PORT`` (HTTP/1.1) or ``NAME=h2c://HOST:PORT`` (HTTP/2 without TLS, for gRPC) -> Cluster."""
    name, sep, target = text.partition("=")
    http2 = target.startswith("h2c://")
    host, colon, port = target.removeprefix("h2c://").removeprefix("http://").rpartition(":")
    host = host.strip("[]")  # [::1]:8080
    if not sep or not name or not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RunError(f"--cluster {text!r}: expected NAME=HOST:PORT (or NAME=h2c://HOST:PORT for gRPC)")
    return Cluster(name, int(port), host=host, http2=http2)


@dataclass
class RunOptions:
    source: Path
    configuration: str | None = None
    port: int = 10000
    admin_port: int = 0
    upstream: str | None = None
    watch: bool = False
    root_id: str = ""
    concurrency: int = 1
    workdir: Path | None = None
    clusters: tuple[Cluster, ...] = ()  # callout targets next to the upstream
    stats_tags: bool = True  # put the build's stats_tags into Envoy's stats_config (labelled metrics)
    env: dict[str, str] = field(default_factory=dict)  # the VM's environment variables (os.environ in the filter)


def ecds_filter(config_path: Path, type_url: str = WASM_TYPE) -> dict[str, Any]:
    """An HTTP filter (or, with ``NETWORK_WASM_TYPE``, a network filter) whose configuration Envoy
    reads (and re-reads) from ``config_path``."""
    return {
        "name": FILTER_NAME,
        "config_discovery": {
            "config_source": {
                "path_config_source": {
                    "path": str(config_path),
                    "watched_directory": {"path": str(config_path.parent)},
                },
                "resource_api_version": "V3",
            },
            "type_urls": [type_url],
        },
    }


def write_ecds(config_path: Path, plugin: WasmPlugin, version: str, type_url: str = WASM_TYPE) -> None:
    """Replace the discovery file atomically (Envoy watches the directory for moves)."""
    resource = {
        "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        "name": FILTER_NAME,
        "typed_config": {"@type": type_url, "config": plugin.plugin_config()},
    }
    tmp = config_path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"version_info": version, "resources": [resource]}))
    os.replace(tmp, config_path)


class Runner:
    def __init__(self, options: RunOptions, say: Callable[[str], None] = print) -> None:
        self.options = options
        self.say = say
        self._own_workdir = options.workdir is None
        self.workdir = options.workdir or Path(tempfile.mkdtemp(prefix="proxywasm-run-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ecds_path = self.workdir / "ecds" / "filter.json"
        self.version = 0
        self.envoy: Envoy | None = None
        self.upstream: UpstreamServer | None = None
        self._log_offset = 0
        self.last_build: BuildResult | None = None
        self._hinted: set[str] = set()
        self._envoy_tags: list[dict[str, Any]] = []  # the stats_tags Envoy was started with
        # What the listener runs the filter as: an HTTP filter, or a network filter for an L4-only
        # one (its plugins make only StreamContexts); chosen by the first build.
        self.type_url = WASM_TYPE

    # ---- building ----

    def _sources(self) -> dict[Path, float]:
        src = self.options.source
        files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.suffix in (".py", ".txt"))
        return {p: p.stat().st_mtime for p in files if p.exists()}

    def _settled(self, current: dict[Path, float]) -> dict[Path, float]:
        """Wait until a save is complete (editors may write a file in several steps)."""
        while True:
            time.sleep(_SETTLE_S)
            again = self._sources()
            if again == current:
                return current
            current = again

    def build(self) -> WasmPlugin:
        started = time.perf_counter()
        result = build(self.options.source)
        self.last_build = result
        if self.envoy is not None and self._type_url(result) != self.type_url:
            raise KindChanged(
                "this version is "
                + (
                    "an L4 filter (only StreamContexts)"
                    if self._type_url(result) == NETWORK_WASM_TYPE
                    else "an HTTP filter"
                )  # fmt: skip
                + ", the running Envoy serves the previous version on "
                + ("a TCP listener" if self.type_url == NETWORK_WASM_TYPE else "an HTTP listener")
                + ": restart proxywasm run to serve it"
            )
        if self.envoy is not None and any(tag not in self._envoy_tags for tag in self.stats_tags()):
            self.say(
                "this version declares metric labels the running Envoy has no stats_tags for (they are set when "
                "Envoy starts): restart proxywasm run to see them as Prometheus labels"
            )
        digest = hashlib.sha256(result.module).hexdigest()[:12]
        wasm = self.workdir / f"filter-{digest}.wasm"
        wasm.write_bytes(result.module)
        self.say(
            f"built {self.options.source} ({len(result.module) / 1e6:.1f} MB) in {time.perf_counter() - started:.1f}s"
        )
        return WasmPlugin(
            wasm,
            name=FILTER_NAME,
            root_id=self.options.root_id,
            configuration=self.options.configuration,
            environment_variables=self.options.env,
        )

    def _type_url(self, result: BuildResult) -> str:
        """The plugin ``--root-id`` selects runs as a network filter in front of tcp_proxy when it
        makes L4 contexts; anything else (HTTP contexts, or only a plugin context) as an HTTP filter."""
        return NETWORK_WASM_TYPE if result.serves(self.options.root_id) == ("stream",) else WASM_TYPE

    # ---- Envoy ----

    def stats_tags(self) -> list[dict[str, Any]]:
        """Envoy ``TagSpecifier``s for the filter's labelled metrics: the build's ``stats_tags``
        (a list of ``{"tag_name": ..., "regex": ...}``) when the build emits them, else none."""
        if not self.options.stats_tags or self.last_build is None:
            return []
        return [dict(tag) for tag in self.last_build.stats_tags]

    def _clusters(self) -> tuple[Cluster, str]:
        if self.options.upstream:
            target = self.options.upstream
            try:
                upstream = parse_cluster(f"{UPSTREAM}={'127.0.0.1' + target if target.startswith(':') else target}")
            except RunError:
                raise RunError(f"--upstream {target!r}: expected HOST:PORT or :PORT") from None
            description = f"upstream {self.options.upstream}"
        else:
            self.upstream = UpstreamServer().start()
            upstream = Cluster(UPSTREAM, self.upstream.port)
            description = f"demo echo upstream on 127.0.0.1:{self.upstream.port}"
        names = [UPSTREAM, *(c.name for c in self.options.clusters)]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise RunError(f"cluster {', '.join(duplicates)} given twice (the upstream cluster is named {UPSTREAM!r})")
        return upstream, description

    def start(self) -> None:
        upstream, description = self._clusters()
        plugin = self.build()
        assert self.last_build is not None
        self.type_url = self._type_url(self.last_build)
        l4 = self.type_url == NETWORK_WASM_TYPE
        self.ecds_path.parent.mkdir(parents=True, exist_ok=True)
        self.version += 1
        write_ecds(self.ecds_path, plugin, str(self.version), self.type_url)
        tags = self._envoy_tags = self.stats_tags()
        node = {"id": "proxywasm-run", "cluster": "proxywasm"}  # file-based discovery needs both
        if l4:
            config = tcp_bootstrap(
                upstream_port=upstream.port,
                listen_port=self.options.port,
                admin_port=self.options.admin_port,
                network_filters=[ecds_filter(self.ecds_path, NETWORK_WASM_TYPE)],
                clusters=self.options.clusters,
                node=node,
                stats_tags=tags,
            )
        else:
            config = http_bootstrap(
                upstream_port=upstream.port,
                listen_port=self.options.port,
                admin_port=self.options.admin_port,
                http_filters=[ecds_filter(self.ecds_path)],
                clusters=self.options.clusters,
                node=node,
                stats_tags=tags,  # labelled metrics become Prometheus labels
            )
        config["static_resources"]["clusters"][0] = upstream.to_dict()
        self.envoy = Envoy(config, concurrency=self.options.concurrency, workdir=self.workdir / "envoy")
        try:
            self.envoy.start()  # once Envoy has written a log, stop() keeps it (after a failure)
        except EnvoyError as err:
            hint = ""
            if "Address already in use" in str(err):
                hint = "\na port is taken: --port 0 lets Envoy pick one (or give another --port / --admin-port)"
            log = self.envoy.log_path
            raise RunError(f"Envoy could not serve the filter: {err}{hint}\nEnvoy's log: {log}") from None
        self._first_verdict()
        envoy = self.envoy
        if l4:
            self.say(
                f"Envoy is serving the L4 filter on tcp://127.0.0.1:{envoy.port()}, in front of a TCP proxy to the "
                f"{description}"
            )
        else:
            self.say(f"Envoy is serving the filter on {envoy.url} ({description})")
        if self.options.clusters:
            targets = ", ".join(f"{c.name} -> {c.host}:{c.port}" for c in self.options.clusters)
            self.say(f"callout clusters: {targets}")
        self.say(f"admin: {envoy.admin_url}   metrics: {envoy.admin_url}/stats/prometheus")
        if tags:
            self.say(f"stats tags: {', '.join(str(t.get('tag_name')) for t in tags)} (labels in /stats/prometheus)")
        self.say(f"log: {envoy.log_path}   pid: {envoy.pid}")

    def _first_verdict(self) -> None:
        """Wait until Envoy took or rejected the first version; a rejection raises RunError with the reason."""
        assert self.envoy is not None
        deadline = time.monotonic() + _VERDICT_TIMEOUT_S
        while self.envoy.running:
            outcome = self._outcomes()
            if outcome["update_success"]:
                return
            if outcome["update_rejected"] or outcome["update_failure"]:
                raise RunError(f"Envoy rejected the filter:\n{self._rejection(0)}\nEnvoy's log: {self.envoy.log_path}")
            if time.monotonic() > deadline:
                raise RunError(
                    f"Envoy did not load the filter within {_VERDICT_TIMEOUT_S:.0f}s; see {self.envoy.log_path}"
                )
            time.sleep(0.1)
        raise RunError(f"Envoy exited while loading the filter; see {self.envoy.log_path}")

    def _outcomes(self) -> dict[str, int]:
        assert self.envoy is not None
        prefix = _ECDS_STATS[self.type_url]
        stats = self.envoy.stats(f"^{prefix}\\.({'|'.join(_OUTCOMES)})$")
        return {name: stats.get(f"{prefix}.{name}", 0) for name in _OUTCOMES}

    def reload(self, changed_at: float | None = None) -> bool:
        """Rebuild and hot-swap; on any failure the previous filter keeps serving."""
        assert self.envoy is not None
        changed_at = time.monotonic() if changed_at is None else changed_at
        try:
            plugin = self.build()
        except KindChanged as err:
            self.say(f"built, but not served: {err}; still serving the previous version")
            return False
        except BuildError as err:
            self.say(f"build failed, still serving the previous filter:\n{err}")
            return False
        written = time.monotonic()
        before = self._outcomes()
        log_offset = len(self.envoy.logs())
        self.version += 1
        write_ecds(self.ecds_path, plugin, str(self.version), self.type_url)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.envoy.running:
            now = self._outcomes()
            if now["update_success"] > before["update_success"]:
                took, total = time.monotonic() - written, time.monotonic() - changed_at
                self.say(
                    f"reloaded: Envoy is serving version {self.version} of the filter "
                    f"(Envoy took {took:.1f}s; {total:.1f}s after the change)"
                )
                return True
            if now["update_rejected"] > before["update_rejected"] or now["update_failure"] > before["update_failure"]:
                reason = self._rejection(log_offset)
                self.say(f"Envoy rejected the new filter, still serving the previous one:\n{reason}")
                return False
            time.sleep(0.1)
        self.say("Envoy did not take the new filter within 60s; still serving the previous one")
        return False

    def _rejection(self, log_offset: int) -> str:
        """Envoy's errors since `log_offset`: the filter's own traceback and Envoy's verdict."""
        assert self.envoy is not None
        time.sleep(0.2)  # the log file is flushed every 50 ms
        text = self.envoy.log_since(log_offset)
        self._log_offset = log_offset + len(text)  # shown here; echo_filter_logs skips them
        lines = [
            f"  [{ln.level}] " + ln.message.replace("\n", "\n    ")
            for ln in parse_log(text)
            if ln.level in ("error", "critical") or "rejected" in ln.message
        ]
        return "\n".join(dict.fromkeys(lines)) or "  (no error in Envoy's log)"

    def echo_filter_logs(self) -> None:
        """Show the filter's own log lines (Envoy's `wasm` logger) as they arrive."""
        assert self.envoy is not None
        text = self.envoy.logs()
        end = text.rfind("\n") + 1  # a line still being written waits for the next round
        new, self._log_offset = text[self._log_offset : end], max(end, self._log_offset)
        for line in parse_log(new):
            if line.logger == "wasm":
                for i, part in enumerate(line.message.splitlines()):
                    self.say(("  " if i == 0 else "    ") + part)
                hint = self.callout_hint(line.message)
                if hint:
                    self.say(hint)

    def known_clusters(self) -> list[str]:
        """The clusters Envoy knows, from its admin ``/clusters``."""
        assert self.envoy is not None
        status, body = self.envoy.admin_get("/clusters?format=json")
        if status != 200:
            return []
        return sorted(c["name"] for c in json.loads(body).get("cluster_statuses", []) if "name" in c)

    def callout_hint(self, message: str) -> str | None:
        """For a callout that failed with BAD_ARGUMENT (Envoy's answer for a cluster it does not know):
        which cluster, and which ones Envoy knows. Said once per cluster."""
        if "BAD_ARGUMENT" not in message or not any(call in message for call in _CALLOUTS):
            return None
        found = _CLUSTER_RE.search(message)
        cluster = found.group(1) if found else None
        key = cluster or ""
        if key in self._hinted:
            return None
        self._hinted.add(key)
        known = self.known_clusters()
        if cluster is not None and cluster in known:
            return None  # a known cluster: BAD_ARGUMENT has another cause (headers, timeout)
        what = f"cluster {cluster!r}, which" if cluster is not None else "a cluster that"
        return (
            f"proxywasm: the filter called {what} Envoy does not know (a callout to an unknown cluster fails "
            f"with BAD_ARGUMENT). Envoy knows: {', '.join(known) or 'none'}. "
            "Add one with --cluster NAME=HOST:PORT."
        )

    def serve(self) -> None:
        assert self.envoy is not None
        if self.options.watch:
            self.say(f"watching {self.options.source} for changes (Ctrl-C to stop)")
        else:
            self.say("Ctrl-C to stop")
        seen = self._sources()
        while self.envoy.running:
            time.sleep(0.3)
            self.echo_filter_logs()
            if self.options.watch:
                current = self._sources()
                if current != seen:
                    changed_at = time.monotonic()
                    seen = self._settled(current)
                    self.say("change detected, rebuilding")
                    self.reload(changed_at)
        if self.envoy.proc is not None and not self.envoy.running:
            self.say(f"Envoy exited; see {self.envoy.log_path}")

    def stop(self, keep_logs: bool = True) -> None:
        """Stop Envoy and the upstream. A working directory of its own goes, unless ``keep_logs``
        (after a failure, whose message names the log) and Envoy ran: then only the modules go
        (Envoy read them into memory)."""
        if self.envoy is not None:
            self.envoy.stop()
        if self.upstream is not None:
            self.upstream.stop()
        log = self.envoy.log_path if self.envoy is not None and self.envoy.workdir is not None else None
        if self._own_workdir and (not keep_logs or log is None or not log.exists()):
            shutil.rmtree(self.workdir, ignore_errors=True)  # no log to keep when Envoy never ran
        elif self._own_workdir:
            for wasm in self.workdir.glob("filter-*.wasm"):
                wasm.unlink(missing_ok=True)


def run(options: RunOptions) -> int:
    """Serve until Ctrl-C/SIGTERM (0), or stop at once with the reason when Envoy rejects the first
    version of the filter or cannot start (1)."""
    runner = Runner(
        options, say=lambda text: print(text if text.startswith("proxywasm:") else f"proxywasm: {text}", flush=True)
    )

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    stopped = False  # by Ctrl-C or SIGTERM while serving: nothing to look at afterwards
    try:
        runner.start()
        runner.serve()
    except RunError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("proxywasm: stopping", file=sys.stderr, flush=True)
        stopped = True
    finally:
        runner.stop(keep_logs=not stopped)
    return 0
