"""Helpers for the real-Envoy tests of filters/: each filter is built from its ``filter.py`` (cached
by content) and served by an Envoy started from the filter's own ``envoy.yaml``, rewritten to run
beside other tests (admin and client-facing listeners on port 0, clusters pointed at the test's
servers, ``filter.wasm`` replaced by the built module)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.client import HTTPConnection
from pathlib import Path
from typing import Any, TypeVar

import yaml  # type: ignore[import-untyped,unused-ignore]

from proxywasm_build.build import build
from proxywasm_build.cache import build_cached
from proxywasm_build.envoy import Envoy, free_port

ROOT = Path(__file__).resolve().parents[2]
FILTERS = ROOT / "filters"
T = TypeVar("T")


def built(name: str) -> Path:
    """filters/<name>/filter.py built (once per content)."""
    return build_cached(FILTERS / name / "filter.py")


def stats_tags_match_the_build(name: str) -> None:
    """filters/<name>/envoy.yaml carries the stats_tags `proxywasm build` emits for the filter's labels."""
    emitted = build(FILTERS / name / "filter.py").stats_tags
    configured = yaml.safe_load((FILTERS / name / "envoy.yaml").read_text())["stats_config"]["stats_tags"]
    assert configured == emitted


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def filter_config(name: str, upstreams: Mapping[str, int]) -> dict[str, Any]:
    """filters/<name>/envoy.yaml made runnable here: the admin and the listeners clients use bind
    port 0; a listener a cluster targets (a second hop inside the same Envoy) gets a free port and
    the cluster follows it; every other cluster is pointed at ``upstreams[cluster name]`` (or
    ``upstreams["*"]``); ``filter.wasm`` becomes the built module."""
    config: dict[str, Any] = yaml.safe_load((FILTERS / name / "envoy.yaml").read_text())
    config["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}}
    resources = config["static_resources"]
    listeners = {item["address"]["socket_address"]["port_value"]: item for item in resources["listeners"]}
    moved: dict[int, int] = {}
    for cluster in resources.get("clusters", []):
        for node in _walk(cluster.get("load_assignment", {})):
            address = node.get("socket_address")
            if not isinstance(address, dict):
                continue
            if address["port_value"] in listeners:
                port = moved.setdefault(address["port_value"], free_port())
            else:
                port = upstreams.get(cluster["name"], upstreams.get("*", 0))
                if not port:
                    raise KeyError(f"no upstream given for cluster {cluster['name']!r}")
            address.update(address="127.0.0.1", port_value=port)
    for port, listener in listeners.items():
        listener["address"]["socket_address"].update(address="127.0.0.1", port_value=moved.get(port, 0))
    wasm = built(name)
    for node in _walk(config):
        local = node.get("local")
        if isinstance(local, dict) and str(local.get("filename", "")).endswith(".wasm"):
            local["filename"] = str(wasm)
    return config


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
    """One request on a new connection to ``listener``."""
    conn = HTTPConnection("127.0.0.1", envoy.port(listener), timeout=timeout)
    try:
        conn.request(method, path, headers=dict(headers.items() if isinstance(headers, Mapping) else headers))
        response = conn.getresponse()
        return Reply(response.status, response.getheaders(), response.read())
    finally:
        conn.close()


def wait_until(check: Callable[[], T], timeout_s: float = 10.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy (returned); fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s}s (last: {value!r})")
        time.sleep(0.05)


def wasm_errors(envoy: Envoy) -> list[str]:
    """Error-level lines of the wasm logger (tracebacks, author mistakes)."""
    return [line.message for line in envoy.log_lines() if line.logger == "wasm" and line.level in ("error", "critical")]
