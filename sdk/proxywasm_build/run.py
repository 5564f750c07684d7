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
``version_text`` readout to the new ``version_info``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from .build import build
from .bundle import BuildError
from .envoy import Cluster, Envoy, WasmPlugin, http_bootstrap, parse_log
from .upstream import UpstreamServer

FILTER_NAME = "python-filter"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
_ECDS_STAT = f"extension_config_discovery.http_filter.{FILTER_NAME}"
# Subscription counters: exactly one of them moves per update Envoy reads from the file.
# (config_reload/config_fail are per filter-chain provider and are not a reliable verdict.)
_OUTCOMES = ("update_success", "update_rejected", "update_failure")
_SETTLE_S = 0.2  # a save is complete once the sources have not changed for this long


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


def ecds_filter(config_path: Path) -> dict[str, Any]:
    """An HTTP filter whose configuration Envoy reads (and re-reads) from ``config_path``."""
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
            "type_urls": [WASM_TYPE],
        },
    }


def write_ecds(config_path: Path, plugin: WasmPlugin, version: str) -> None:
    """Replace the discovery file atomically (Envoy watches the directory for moves)."""
    resource = {
        "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        "name": FILTER_NAME,
        "typed_config": {"@type": WASM_TYPE, "config": plugin.plugin_config()},
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
        self.ecds_path = self.workdir / "ecds" / "filter.json"
        self.version = 0
        self.envoy: Envoy | None = None
        self.upstream: UpstreamServer | None = None
        self._log_offset = 0
        self.stats_tags: list[dict[str, str]] = []  # of the build Envoy started with

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
        if self.envoy is None:
            self.stats_tags = result.stats_tags
        elif any(tag not in self.stats_tags for tag in result.stats_tags):
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
            wasm, name=FILTER_NAME, root_id=self.options.root_id, configuration=self.options.configuration
        )

    # ---- Envoy ----

    def start(self) -> None:
        plugin = self.build()
        self.ecds_path.parent.mkdir(parents=True, exist_ok=True)
        self.version += 1
        write_ecds(self.ecds_path, plugin, str(self.version))
        if self.options.upstream:
            host, _, port = self.options.upstream.rpartition(":")
            upstream = Cluster("upstream", int(port), host=host or "127.0.0.1")
            description = f"upstream {self.options.upstream}"
        else:
            self.upstream = UpstreamServer().start()
            upstream = Cluster("upstream", self.upstream.port)
            description = f"demo echo upstream on 127.0.0.1:{self.upstream.port}"
        config = http_bootstrap(
            upstream_port=upstream.port,
            listen_port=self.options.port,
            admin_port=self.options.admin_port,
            http_filters=[ecds_filter(self.ecds_path)],
            stats_tags=self.stats_tags,  # labelled metrics become Prometheus labels
        )
        config["static_resources"]["clusters"][0] = upstream.to_dict()
        config["node"] = {"id": "proxywasm-run", "cluster": "proxywasm"}  # file-based discovery needs both
        self.envoy = Envoy(config, concurrency=self.options.concurrency, workdir=self.workdir / "envoy").start()
        self.say(f"Envoy is serving the filter on {self.envoy.url} ({description})")
        self.say(f"admin: {self.envoy.admin_url}   log: {self.envoy.log_path}   pid: {self.envoy.pid}")

    def _outcomes(self) -> dict[str, int]:
        assert self.envoy is not None
        stats = self.envoy.stats(f"^{_ECDS_STAT}\\.({'|'.join(_OUTCOMES)})$")
        return {name: stats.get(f"{_ECDS_STAT}.{name}", 0) for name in _OUTCOMES}

    def reload(self, changed_at: float | None = None) -> bool:
        """Rebuild and hot-swap; on any failure the previous filter keeps serving."""
        assert self.envoy is not None
        changed_at = time.monotonic() if changed_at is None else changed_at
        try:
            plugin = self.build()
        except BuildError as err:
            self.say(f"build failed, still serving the previous filter:\n{err}")
            return False
        written = time.monotonic()
        before = self._outcomes()
        log_offset = len(self.envoy.logs())
        self.version += 1
        write_ecds(self.ecds_path, plugin, str(self.version))
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
            f"  [{ln.level}] {ln.message}"
            for ln in parse_log(text)
            if ln.level in ("error", "critical") or "rejected" in ln.message
        ]
        return "\n".join(dict.fromkeys(lines)) or "  (no error in Envoy's log)"

    def echo_filter_logs(self) -> None:
        """Show the filter's own log lines (Envoy's `wasm` logger) as they arrive."""
        assert self.envoy is not None
        text = self.envoy.logs()
        new, self._log_offset = text[self._log_offset :], len(text)
        for line in new.splitlines():
            if "][wasm]" in line:
                self.say("  " + line.split("] ", 1)[-1])

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

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        if self.upstream is not None:
            self.upstream.stop()
        if self._own_workdir:
            # Envoy read the modules into memory; the logs stay for a look afterwards.
            for wasm in self.workdir.glob("filter-*.wasm"):
                wasm.unlink(missing_ok=True)


def run(options: RunOptions) -> int:
    runner = Runner(options, say=lambda text: print(f"proxywasm: {text}", flush=True))

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        runner.start()
        runner.serve()
    except KeyboardInterrupt:
        print("proxywasm: stopping", file=sys.stderr, flush=True)
    finally:
        runner.stop()
    return 0
