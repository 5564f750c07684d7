"""Every config in envoy-configs/ loaded by real Envoy and exercised with real requests on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from http.client import HTTPConnection
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]

from proxywasm.metrics import stats_tags
from proxywasm_build.envoy import Envoy
from proxywasm_build.upstream import Response, UpstreamServer

HEADERS = """
import json
import proxywasm
from proxywasm import Counter, HttpContext, PluginContext

responses = Counter("sidecar_responses_total", labels=("code",))


class AddHeaders(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        headers["x-sidecar"] = "python"

    def on_response_headers(self, headers, end_of_stream):
        headers["x-greeting"] = self.plugin.greeting
        responses.labels(code=headers[":status"]).increment()


@proxywasm.register
class Plugin(PluginContext):
    http_context = AddHeaders

    def on_configure(self, configuration):
        self.greeting = json.loads(configuration or b"{}").get("greeting", "none")
        return True
"""

VERSION = """
import proxywasm
from proxywasm import HttpContext


@proxywasm.register
class Version(HttpContext):
    def on_response_headers(self, headers, end_of_stream):
        headers["x-version"] = "{version}"
"""

NETWORK = """
import proxywasm
from proxywasm import Counter, StreamContext

connections = Counter("py_l4_connections")
downstream = Counter("py_l4_downstream_bytes")
upstream = Counter("py_l4_upstream_bytes")


@proxywasm.register
class CountBytes(StreamContext):
    def on_new_connection(self):
        connections.increment()

    def on_downstream_data(self, data, end_of_stream):
        downstream.increment(len(data))

    def on_upstream_data(self, data, end_of_stream):
        upstream.increment(len(data))
"""

SHARED = """
import proxywasm
from proxywasm import HttpContext, shared_data

counted = 0  # a module global: common to every plugin running in this VM


@proxywasm.register(root_id="count")
class Count(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        global counted
        counted += 1
        shared_data.update("count", lambda n: n + 1, default=0)


@proxywasm.register(root_id="report")
class Report(HttpContext):
    def on_response_headers(self, headers, end_of_stream):
        headers["x-global"] = str(counted)
        headers["x-shared"] = str(shared_data.get_value("count", 0)[0])
"""

Reply = tuple[int, dict[str, str], bytes]


def get(port: int, path: str = "/", headers: dict[str, str] | None = None, conn: HTTPConnection | None = None) -> Reply:
    """One GET (on `conn` if given, kept alive; else a fresh connection)."""
    own = conn is None
    c = conn or HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        c.request("GET", path, headers=headers or {})
        response = c.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        if own:
            c.close()


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


def test_sidecar(build_filter: Callable[[str], Path], render: Callable[..., Path], upstream: UpstreamServer) -> None:
    config = render("sidecar.yaml", WASM=build_filter(HEADERS), UPSTREAM_PORT=upstream.port)
    upstream.clear()
    with Envoy(config) as envoy:
        status, headers, _ = get(envoy.port("ingress"), "/sidecar")
        assert status == 200
        assert headers["x-greeting"] == "hello from the sidecar"
        (seen,) = upstream.requests
        assert (seen.path, seen.header("x-sidecar")) == ("/sidecar", "python")
        # The config's stats_tags turn the filter's metric label into a Prometheus label.
        _, text = envoy.admin_get("/stats/prometheus")
        assert 'sidecar_responses_total{code="200"} 1' in text.splitlines()
    tags = yaml.safe_load(config.read_text())["stats_config"]["stats_tags"]
    assert all(tag in tags for tag in stats_tags(["code"]))  # what proxywasm build emits for this filter


def test_hot_reload(
    build_filter: Callable[[str], Path], render: Callable[..., Path], upstream: UpstreamServer, tmp_path: Path
) -> None:
    ecds = tmp_path / "ecds"
    ecds.mkdir()
    one, two = build_filter(VERSION.format(version="one")), build_filter(VERSION.format(version="two"))

    def publish(wasm: Path, version: int) -> None:
        # Write beside, then rename into the watched directory: Envoy sees one complete file.
        staged = render("hot-reload-filter.yaml", WASM=wasm, VERSION=version)
        os.replace(staged, ecds / "filter.yaml")

    publish(one, 1)
    config = render("hot-reload.yaml", ECDS_DIR=ecds, UPSTREAM_PORT=upstream.port)
    with Envoy(config) as envoy:
        conn = HTTPConnection("127.0.0.1", envoy.port("ingress"), timeout=15)
        assert get(0, conn=conn)[1]["x-version"] == "one"
        publish(two, 2)
        deadline = time.monotonic() + 60
        versions = []
        while time.monotonic() < deadline:
            status, headers, _ = get(0, conn=conn)  # the same keep-alive connection throughout
            assert status == 200
            versions.append(headers["x-version"])
            if versions[-1] == "two":
                break
            time.sleep(0.05)
        assert versions[-1] == "two", "the new filter did not arrive within 60s"
        conn.close()
        prefix = "extension_config_discovery.http_filter.python-filter."
        stats = envoy.stats(f"^{prefix}(update_success|update_rejected)$")
        assert (stats[prefix + "update_success"], stats[prefix + "update_rejected"]) == (2, 0)


def test_network_filter(
    build_filter: Callable[[str], Path], render: Callable[..., Path], upstream: UpstreamServer
) -> None:
    config = render("network-filter.yaml", WASM=build_filter(NETWORK), UPSTREAM_PORT=upstream.port)
    with Envoy(config) as envoy:
        request = b"GET /over-tcp HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        with socket.create_connection(("127.0.0.1", envoy.port("tcp")), timeout=10) as sock:
            sock.sendall(request)
            response = b"".join(iter(lambda: sock.recv(65536), b""))
        assert response.startswith(b"HTTP/1.1 200")
        deadline = time.monotonic() + 10  # counters land when the connection's callbacks have run
        while time.monotonic() < deadline:
            stats = envoy.stats("^wasmcustom\\.py_l4_")
            if stats.get("wasmcustom.py_l4_upstream_bytes") == len(response):
                break
            time.sleep(0.05)
        assert stats == {
            "wasmcustom.py_l4_connections": 1,
            "wasmcustom.py_l4_downstream_bytes": len(request),
            "wasmcustom.py_l4_upstream_bytes": len(response),
        }


def test_remote_fetch_with_sha256(
    build_filter: Callable[[str], Path], render: Callable[..., Path], upstream: UpstreamServer
) -> None:
    module = build_filter(HEADERS).read_bytes()
    digest = hashlib.sha256(module).hexdigest()
    with UpstreamServer(routes={"/filters/headers.wasm": Response(200, module)}) as server:
        values = {"UPSTREAM_PORT": upstream.port, "WASM_SERVER_PORT": server.port}
        url = f"{server.url}/filters/headers.wasm"
        with Envoy(render("remote-fetch.yaml", WASM_URL=url, WASM_SHA256=digest, **values)) as envoy:
            status, headers, _ = get(envoy.port("ingress"))
            assert (status, headers.get("x-greeting")) == (200, "fetched over http")
            assert [r.path for r in server.requests] == ["/filters/headers.wasm"]
            assert envoy.stat("wasm.remote_load_fetch_successes") == 1

        # A module whose bytes do not match sha256 is never loaded: Envoy fetches it (retrying once,
        # per retry_policy), gives up, and the plugin fails to load, so its failure_policy
        # (FAIL_CLOSED by default) answers every request with 503 and nothing reaches the service.
        server.clear()
        upstream.clear()
        wrong = hashlib.sha256(b"something else").hexdigest()
        with Envoy(render("remote-fetch.yaml", WASM_URL=url, WASM_SHA256=wrong, **values)) as envoy:
            status, headers, body = get(envoy.port("ingress"))
            assert (status, body, headers.get("x-greeting")) == (503, b"", None)
            assert upstream.requests == []
            assert [r.path for r in server.requests] == ["/filters/headers.wasm"] * 2
            assert envoy.stat("wasm.remote_load_fetch_failures") == 1
            assert envoy.stat("wasm.remote_load_fetch_successes") == 0
            envoy.wait_for_log(r"\[critical\]\[wasm\] Plugin python-remote failed to load")


def _recover(port: int, deadline_s: float) -> Reply:
    deadline = time.monotonic() + deadline_s
    reply = get(port)
    while reply[0] != 200 and time.monotonic() < deadline:
        assert reply[0] == 503
        time.sleep(0.2)
        reply = get(port)
    return reply


def test_failure_policies(as_modules: dict[str, Path], render: Callable[..., Path], upstream: UpstreamServer) -> None:
    """A VM that traps (the AssemblyScript trap filter aborts on `x-trap: abort`), under each policy."""
    config = render("failure-policy.yaml", WASM=as_modules["trap"], ROOT_ID="trap", UPSTREAM_PORT=upstream.port)
    with Envoy(config) as envoy:
        ports = {name: envoy.port(name) for name in ("fail_closed", "fail_open", "fail_reload")}
        for name, port in ports.items():
            healthy = get(port)
            assert (healthy[0], healthy[1].get("x-vm-requests")) == (200, "1"), name
            trapped = get(port, headers={"x-trap": "abort"})
            assert (trapped[0], trapped[2]) == (503, b""), name  # the trapping stream, whatever the policy

        # FAIL_CLOSED: the dead VM refuses everything after.
        assert [get(ports["fail_closed"])[0] for _ in range(3)] == [503, 503, 503]
        # FAIL_OPEN: the plugin is skipped (no x-vm-requests; a trap header is harmless now).
        passed = get(ports["fail_open"], headers={"x-trap": "abort"})
        assert (passed[0], passed[1].get("x-vm-requests")) == (200, None)
        # FAIL_RELOAD: a fresh VM after a back-off; its module globals start over.
        reloaded = _recover(ports["fail_reload"], 20)
        assert (reloaded[0], reloaded[1].get("x-vm-requests")) == (200, "1")
        assert envoy.stat("wasm.fail_reload.vm_reload_success", 0) >= 1
        # The other policies' VMs were not reloaded.
        assert envoy.stat("wasm.fail_closed.vm_reload_success", 0) == 0
        assert get(ports["fail_closed"])[0] == 503


def test_shared_vm(build_filter: Callable[[str], Path], render: Callable[..., Path], upstream: UpstreamServer) -> None:
    config = render("shared-vm.yaml", WASM=build_filter(SHARED), UPSTREAM_PORT=upstream.port)
    with Envoy(config) as envoy:  # one worker: one VM per vm_id
        for n in (1, 2, 3):
            _, headers, _ = get(envoy.port("shared"))
            # "report" sees what "count" did in the same VM: its module global and its shared data.
            assert (headers["x-global"], headers["x-shared"]) == (str(n), str(n))
        _, headers, _ = get(envoy.port("separate"))
        # Separate vm_ids: separate interpreters, and shared_data is scoped by vm_id.
        assert (headers["x-global"], headers["x-shared"]) == ("0", "0")
        assert envoy.stat("wasm.envoy.wasm.runtime.v8.active", 0) >= 3
