"""Helpers for tests that drive real Envoy with the AssemblyScript reference filters.

A plain module (not conftest) so test files can import it: pytest puts this directory on sys.path.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxywasm_build.envoy import Envoy, WasmPlugin, http_bootstrap
from proxywasm_build.upstream import UpstreamServer


@dataclass
class Reply:
    """A response as the downstream client saw it (header names lower-cased, order kept)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str, raw: bool = False) -> Any:
        """First value of `name`; with raw=True as the bytes on the wire."""
        for key, value in self.headers:
            if key == name:
                return value.encode("latin-1") if raw else value
        return None

    def names(self) -> list[str]:
        return [key for key, _ in self.headers]


def fetch(
    port: int,
    path: str = "/",
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> Reply:
    """One request on a fresh connection to 127.0.0.1:port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        data = response.read()
        return Reply(response.status, [(k.lower(), v) for k, v in response.getheaders()], data)
    finally:
        conn.close()


@contextmanager
def as_envoy(
    wasm: Path,
    *,
    name: str,
    root_id: str,
    vm_id: str | None = None,
    configuration: str | bytes | None = None,
    failure_policy: Any = None,
    upstream: UpstreamServer | None = None,
    clusters: Any = (),
    **envoy_kwargs: Any,
) -> Iterator[tuple[Envoy, UpstreamServer]]:
    """Start an upstream (unless given) and an Envoy running one AS plugin in front of it."""
    own = upstream is None
    server = upstream or UpstreamServer().start()
    try:
        plugin = WasmPlugin(
            wasm,
            name=name,
            root_id=root_id,
            vm_id=vm_id,
            configuration=configuration,
            failure_policy=failure_policy,
        )
        config = http_bootstrap(upstream_port=server.port, plugins=[plugin], clusters=clusters)
        with Envoy(config, **envoy_kwargs) as envoy:
            yield envoy, server
    finally:
        if own:
            server.stop()
