"""Fixtures for the examples: each is built with ``proxywasm build`` (cached by content, once per
session) and served by a real Envoy started from the example's own envoy.yaml, with ports,
module paths and upstream addresses rewritten for the test.

A test class names its example (``EXAMPLE``) and may set ``CONCURRENCY``, ``LOG_LEVELS``
(Envoy component log levels) and ``UPSTREAM_ROUTES``; the ``envoy`` and ``upstream`` fixtures are
class-scoped, so each example starts one Envoy, stopped before the next example's starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]

from proxywasm_build.envoy import Envoy, free_port
from proxywasm_build.upstream import UpstreamServer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def example_config(name: str, wasm: Path, upstream_port: int) -> dict[str, Any]:
    """examples/<name>/envoy.yaml made runnable side by side with other tests: the admin and the
    listeners clients use bind port 0; a listener that a cluster targets (a stand-in service
    inside the same Envoy) gets a free port and the cluster follows it; every other cluster is
    pointed at the test's upstream server; ``filter.wasm`` becomes the built module."""
    config: dict[str, Any] = yaml.safe_load((EXAMPLES / name / "envoy.yaml").read_text())
    config["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}}
    resources = config.get("static_resources", {})
    listener_ports = {
        listener["address"]["socket_address"]["port_value"]: listener for listener in resources.get("listeners", [])
    }
    moved: dict[int, int] = {}
    for cluster in resources.get("clusters", []):
        for node in _walk(cluster.get("load_assignment", {})):
            address = node.get("socket_address")
            if not isinstance(address, dict):
                continue
            port = address["port_value"]
            if port in listener_ports:
                moved.setdefault(port, free_port())
                address.update(address="127.0.0.1", port_value=moved[port])
            else:
                address.update(address="127.0.0.1", port_value=upstream_port)
                cluster["type"] = "STATIC"
    for port, listener in listener_ports.items():
        listener["address"]["socket_address"].update(address="127.0.0.1", port_value=moved.get(port, 0))
    for node in _walk(config):
        local = node.get("local")
        if isinstance(local, dict) and str(local.get("filename", "")).endswith(".wasm"):
            local["filename"] = str(wasm)
    return config


@pytest.fixture(scope="class")
def upstream(request: pytest.FixtureRequest) -> Iterator[UpstreamServer]:
    with UpstreamServer(routes=getattr(request.cls, "UPSTREAM_ROUTES", None)) as server:
        yield server


@pytest.fixture(scope="class")
def envoy(
    request: pytest.FixtureRequest, upstream: UpstreamServer, example_wasm: Callable[[str], Path]
) -> Iterator[Envoy]:
    cls = request.cls
    name: str = cls.EXAMPLE
    config = example_config(name, example_wasm(name), upstream.port)
    with Envoy(
        config,
        concurrency=getattr(cls, "CONCURRENCY", 1),
        component_log_levels=getattr(cls, "LOG_LEVELS", None),
    ) as proxy:
        yield proxy
