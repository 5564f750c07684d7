"""``proxywasm run``: build a filter and serve it through a real Envoy, optionally rebuilding and
hot-swapping it on every save.

The filter reaches Envoy through extension config discovery (ECDS) from a watched file: a new
build is written under a new name and the discovery file is replaced atomically, so Envoy swaps
the filter for new streams while in-flight ones finish on the old one. If the build fails, or
Envoy rejects the new filter (for example ``on_configure`` returns False), the previous filter
keeps serving.
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
from .envoy import Cluster, Envoy, WasmPlugin, http_bootstrap
from .upstream import UpstreamServer

FILTER_NAME = "python-filter"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
_ECDS_STAT = f"extension_config_discovery.http_filter.{FILTER_NAME}"


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
        self.workdir = options.workdir or Path(tempfile.mkdtemp(prefix="proxywasm-run-"))
        self.ecds_path = self.workdir / "ecds" / "filter.json"
        self.version = 0
        self.envoy: Envoy | None = None
        self.upstream: UpstreamServer | None = None
        self._log_offset = 0

    # ---- building ----

    def _sources(self) -> dict[Path, float]:
        src = self.options.source
        files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.suffix in (".py", ".txt"))
        return {p: p.stat().st_mtime for p in files if p.exists()}

    def build(self) -> WasmPlugin:
        started = time.perf_counter()
        result = build(self.options.source)
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
        )
        config["static_resources"]["clusters"][0] = upstream.to_dict()
        config["node"] = {"id": "proxywasm-run", "cluster": "proxywasm"}  # file-based discovery needs both
        self.envoy = Envoy(config, concurrency=self.options.concurrency, workdir=self.workdir / "envoy").start()
        self.say(f"Envoy is serving the filter on {self.envoy.url} ({description})")
        self.say(f"admin: {self.envoy.admin_url}   log: {self.envoy.log_path}")

    def reload(self) -> bool:
        """Rebuild and hot-swap; on any failure the previous filter keeps serving."""
        assert self.envoy is not None
        try:
            plugin = self.build()
        except BuildError as err:
            self.say(f"build failed, still serving the previous filter:\n{err}")
            return False
        before = self.envoy.stats(f"^{_ECDS_STAT}\\.config_(reload|fail)$")
        self.version += 1
        write_ecds(self.ecds_path, plugin, str(self.version))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = self.envoy.stats(f"^{_ECDS_STAT}\\.config_(reload|fail)$")
            if now.get(f"{_ECDS_STAT}.config_reload", 0) > before.get(f"{_ECDS_STAT}.config_reload", 0):
                self.say(f"reloaded: Envoy is serving version {self.version} of the filter")
                return True
            if now.get(f"{_ECDS_STAT}.config_fail", 0) > before.get(f"{_ECDS_STAT}.config_fail", 0):
                self.say(f"Envoy rejected the new filter, still serving the previous one:\n{self._rejection()}")
                return False
            time.sleep(0.1)
        self.say("Envoy did not take the new filter within 60s; still serving the previous one")
        return False

    def _rejection(self) -> str:
        assert self.envoy is not None
        lines = [ln for ln in self.envoy.logs().splitlines() if "[error]" in ln or "[critical]" in ln]
        return "\n".join(lines[-6:]) or "(no error in Envoy's log)"

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
                    seen = current
                    self.say("change detected, rebuilding")
                    self.reload()
        if self.envoy.proc is not None and not self.envoy.running:
            self.say(f"Envoy exited; see {self.envoy.log_path}")

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        if self.upstream is not None:
            self.upstream.stop()


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
