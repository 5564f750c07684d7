"""A deployment's envoy.yaml (an example's or a production filter's) made runnable beside other
tests: shared by tests/examples and tests/filters (importable as ``envoy_yaml``: the root
conftest's folder is on sys.path)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped,unused-ignore]

from proxywasm_build.envoy import free_port


def walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every dict in a parsed YAML/JSON tree, parents first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def wasm_config(config: dict[str, Any]) -> dict[str, Any]:
    """The PluginConfig (``config`` of the envoy.filters.http.wasm filter) of a bootstrap."""
    found = [node["typed_config"]["config"] for node in walk(config) if node.get("name") == "envoy.filters.http.wasm"]
    assert len(found) == 1, f"expected one Wasm HTTP filter, found {len(found)}"
    plugin: dict[str, Any] = found[0]
    return plugin


def runnable_config(path: Path, wasm: Path, upstreams: Mapping[str, int]) -> dict[str, Any]:
    """``path`` (an envoy.yaml) made runnable here: the admin and the listeners clients use bind
    port 0; a listener a cluster targets (a second hop inside the same Envoy) gets a free port and
    the cluster follows it; every other cluster is pointed at ``upstreams[cluster name]`` (or
    ``upstreams["*"]``; KeyError when neither is given) as a STATIC cluster on 127.0.0.1; every
    local ``*.wasm`` becomes ``wasm``."""
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    config["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}}
    resources = config.get("static_resources", {})
    listeners = {item["address"]["socket_address"]["port_value"]: item for item in resources.get("listeners", [])}
    moved: dict[int, int] = {}
    for cluster in resources.get("clusters", []):
        for node in walk(cluster.get("load_assignment", {})):
            address = node.get("socket_address")
            if not isinstance(address, dict):
                continue
            if address["port_value"] in listeners:
                port = moved.setdefault(address["port_value"], free_port())
            else:
                port = upstreams.get(cluster["name"], upstreams.get("*", 0))
                if not port:
                    raise KeyError(f"{path}: no upstream given for cluster {cluster['name']!r}")
                cluster["type"] = "STATIC"
            address.update(address="127.0.0.1", port_value=port)
    for port, listener in listeners.items():
        listener["address"]["socket_address"].update(address="127.0.0.1", port_value=moved.get(port, 0))
    for node in walk(config):
        local = node.get("local")
        if isinstance(local, dict) and str(local.get("filename", "")).endswith(".wasm"):
            local["filename"] = str(wasm)
    return config
