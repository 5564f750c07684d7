"""Helpers for the real-Envoy tests of filters/: each filter's own envoy.yaml, made runnable beside
other tests (``envoy_config``; ``filter_config`` for configs whose clusters lead back into the same
Envoy), plain HTTP requests on fresh connections, Prometheus series, the filter's error lines."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.client import HTTPConnection
from pathlib import Path
from typing import Any, TypeVar

import yaml  # type: ignore[import-untyped,unused-ignore]
from envoy_yaml import runnable_config
from envoy_yaml import walk as walk
from envoy_yaml import wasm_config as wasm_config

from proxywasm_build.cache import build_cached
from proxywasm_build.envoy import Envoy

ROOT = Path(__file__).resolve().parents[2]
FILTERS = ROOT / "filters"
T = TypeVar("T")


def filter_wasm(name: str) -> Path:
    """filters/<name>/filter.py built (cached by content, shared with the host tests' wasm mode)."""
    return Path(build_cached(FILTERS / name / "filter.py"))


def plugin_configuration(config: dict[str, Any]) -> dict[str, Any]:
    """The plugin configuration JSON of the bootstrap's Wasm filter, parsed."""
    value: dict[str, Any] = json.loads(wasm_config(config)["configuration"]["value"])
    return value


def envoy_config(
    name: str,
    *,
    clusters: Mapping[str, int],
    configuration: Mapping[str, Any] | None = None,
    change: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """filters/<name>/envoy.yaml ready to run: admin and listeners on port 0, every cluster's endpoint
    moved to 127.0.0.1 and the port ``clusters`` gives for its name (each must be given), the built
    module instead of ``filter.wasm``, and ``configuration`` (JSON) instead of the plugin's own when
    given. ``change(config)`` may edit the result further."""
    config: dict[str, Any] = yaml.safe_load((FILTERS / name / "envoy.yaml").read_text())
    config["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}}
    resources = config["static_resources"]
    for listener in resources["listeners"]:
        listener["address"]["socket_address"].update(address="127.0.0.1", port_value=0)
    for cluster in resources["clusters"]:
        assert cluster["name"] in clusters, f"{name}/envoy.yaml: no port given for cluster {cluster['name']!r}"
        for node in walk(cluster["load_assignment"]):
            if isinstance(node.get("socket_address"), dict):
                node["socket_address"].update(address="127.0.0.1", port_value=clusters[cluster["name"]])
    wasm = filter_wasm(name)
    plugin = wasm_config(config)
    plugin["vm_config"]["code"]["local"]["filename"] = str(wasm)
    if configuration is not None:
        plugin["configuration"] = {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": json.dumps(configuration),
        }
    if change is not None:
        change(config)
    return config


def filter_config(name: str, upstreams: Mapping[str, int]) -> dict[str, Any]:
    """filters/<name>/envoy.yaml made runnable here, its clusters leading back into the same Envoy
    kept there (envoy_yaml.runnable_config); the built module instead of ``filter.wasm``."""
    return runnable_config(FILTERS / name / "envoy.yaml", filter_wasm(name), upstreams)


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


def http(
    envoy: Envoy,
    path: str = "/",
    *,
    method: str = "GET",
    headers: Mapping[str, str] | Sequence[tuple[str, str]] = (),
    listener: str = "main",
    timeout: float = 15.0,
) -> Reply:
    """One request on a new connection to ``listener`` (Envoy spreads connections over workers)."""
    conn = HTTPConnection("127.0.0.1", envoy.port(listener), timeout=timeout)
    try:
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        conn.request(method, path, headers=dict(pairs))
        response = conn.getresponse()
        return Reply(response.status, response.getheaders(), response.read())
    finally:
        conn.close()


def wait_until(check: Callable[[], T | None], timeout_s: float = 10.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(0.1)


def prometheus(envoy: Envoy, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """The series of metric ``name`` in /stats/prometheus: {labels as (name, value) pairs: value}
    (Envoy orders labels by its stats_tags, so compare them as sets)."""
    _status, text = envoy.admin_get("/stats/prometheus")
    series: dict[frozenset[tuple[str, str]], float] = {}
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        labels, _, value = line[len(name) + 1 :].rpartition("} ")
        pairs = [item.split("=", 1) for item in labels.split(",") if item]
        series[frozenset((k, v.strip('"')) for k, v in pairs)] = float(value)
    return series


def wasm_errors(envoy: Envoy) -> list[str]:
    """Error-level lines the Wasm filter logged (a traceback would be one)."""
    return [line.message for line in envoy.iter_wasm_messages() if line.level in ("error", "critical")]
