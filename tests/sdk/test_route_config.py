"""Per-route configuration from route metadata (self.route_config), in real Envoy 1.40 with routes
that behave differently, and in the local host with the bytes Envoy serves."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from filters import ROUTE_CONFIG

from proxywasm.properties import _filter_metadata
from proxywasm_build.envoy import Envoy, WasmPlugin, http_bootstrap
from proxywasm_build.upstream import UpstreamServer
from proxywasm_host import Host, Route

STRICT = {"mode": "strict", "limit": 1, "ratio": 0.5, "tags": ["a", 2, True, None], "nested": {"x": None}}
LENIENT = {"mode": "lenient", "limit": 3}
# What Envoy 1.40 answered proxy_get_property("xds\0route_metadata") on the /lenient route below:
# the route's envoy.config.core.v3.Metadata message in protobuf binary (captured from Envoy).
LENIENT_BYTES = bytes.fromhex(
    "0a310a066c696d69747312270a110a046d6f646512091a076c656e69656e740a120a056c696d69741209110000000000"
    "0008400a130a056f74686572120a0a080a016b12031a0176"
)


def routes() -> list[dict[str, Any]]:
    def route(prefix: str, metadata: dict[str, Any] | None) -> dict[str, Any]:
        entry: dict[str, Any] = {"match": {"prefix": prefix}, "route": {"cluster": "upstream"}}
        if metadata is not None:
            entry["metadata"] = {"filter_metadata": metadata}
        return entry

    return [
        route("/strict", {"limits": STRICT, "other-plugin": {"mode": "ignored"}}),
        route("/lenient", {"other": {"k": "v"}, "limits": LENIENT}),
        route("/foreign", {"other-plugin": {"mode": "strict"}}),
    ]


@pytest.fixture(scope="module")
def envoy(build_filter: Callable[[str], Path]) -> Iterator[tuple[Envoy, UpstreamServer]]:
    with UpstreamServer() as upstream:
        plugin = WasmPlugin(build_filter(ROUTE_CONFIG), name="limits")
        with Envoy(http_bootstrap(upstream_port=upstream.port, plugins=[plugin], routes=routes())) as running:
            yield running, upstream


def get(envoy: Envoy, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", envoy.port(), timeout=15)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def seen_config(upstream: UpstreamServer, path: str) -> dict[str, Any]:
    request = next(r for r in reversed(upstream.requests) if r.path == path)
    return json.loads(request.header("x-route-config") or "null")  # type: ignore[no-any-return]


def test_two_routes_behave_differently(envoy: tuple[Envoy, UpstreamServer]) -> None:
    proxy, upstream = envoy
    assert get(proxy, "/strict") == (401, b"this route needs a token")
    assert get(proxy, "/strict", {"x-token": "t"})[0] == 200
    assert seen_config(upstream, "/strict") == STRICT
    assert get(proxy, "/lenient")[0] == 200
    assert seen_config(upstream, "/lenient") == LENIENT
    served = next(r for r in reversed(upstream.requests) if r.path == "/lenient").header("x-route-metadata")
    # The Metadata message in protobuf binary; map entries may come in any order.
    assert _filter_metadata(bytes.fromhex(served or "")) == {"other": {"k": "v"}, "limits": LENIENT}


def test_routes_without_this_plugins_metadata(envoy: tuple[Envoy, UpstreamServer]) -> None:
    proxy, upstream = envoy
    assert get(proxy, "/foreign")[0] == 200  # metadata for another plugin only
    assert seen_config(upstream, "/foreign") == {}
    assert get(proxy, "/elsewhere")[0] == 200  # the catch-all route has no metadata: Envoy answers b""
    assert seen_config(upstream, "/elsewhere") == {}


def test_decoder_reads_envoys_bytes() -> None:
    assert _filter_metadata(LENIENT_BYTES) == {"other": {"k": "v"}, "limits": LENIENT}
    with pytest.raises(ValueError):
        _filter_metadata(LENIENT_BYTES[:-3])


def test_host_with_envoys_bytes(build_filter: Callable[[str], Path]) -> None:
    wasm = build_filter(ROUTE_CONFIG)
    host = Host.load(wasm, plugin_name="limits", properties={("xds", "route_metadata"): LENIENT_BYTES})
    response = host.request("GET", "/lenient")
    assert response.upstream_request is not None
    assert json.loads(response.upstream_request.header("x-route-config") or "") == LENIENT
    assert Host.load(wasm, plugin_name="limits").request("GET", "/x").status == 200  # no route metadata


def test_host_routes_behave_as_in_envoy(build_filter: Callable[[str], Path]) -> None:
    # The same route table as the Envoy test above, given to the host as Route entries.
    table = [Route(r["match"]["prefix"], metadata=r["metadata"]["filter_metadata"]) for r in routes()]
    host = Host.load(build_filter(ROUTE_CONFIG), plugin_name="limits", routes=table)
    assert (host.request("GET", "/strict").status, host.request("GET", "/strict").body) == (
        401,
        b"this route needs a token",
    )
    allowed = host.request("GET", "/strict", headers=[("x-token", "t")])
    assert allowed.status == 200 and allowed.upstream_request is not None
    assert json.loads(allowed.upstream_request.header("x-route-config") or "") == STRICT
    for path in ("/foreign", "/elsewhere"):
        upstream = host.request("GET", path).upstream_request
        assert upstream is not None and json.loads(upstream.header("x-route-config") or "") == {}
    lenient = host.request("GET", "/lenient").upstream_request
    assert lenient is not None
    assert _filter_metadata(bytes.fromhex(lenient.header("x-route-metadata") or "")) == {
        "other": {"k": "v"},
        "limits": LENIENT,
    }


FROM_TICK = """
import proxywasm
from proxywasm import Action, HttpContext, PluginContext


class Held(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        self.plugin.held.append(self)
        return Action.PAUSE


@proxywasm.register
class Plugin(PluginContext):
    http_context = Held

    def on_configure(self, configuration):
        self.held = []
        self.set_tick_period(10)
        return True

    def on_tick(self):
        while self.held:
            stream = self.held.pop()
            # the stream's route, read from the plugin's callback: the SDK acts on the stream's context
            stream.request_headers["x-mode"] = str(stream.route_config.get("mode"))
            stream.resume_request()
"""


def test_route_config_from_another_context_s_callback(build_filter: Callable[[str], Path]) -> None:
    table = [Route(r["match"]["prefix"], metadata=r["metadata"]["filter_metadata"]) for r in routes()]
    host = Host.load(build_filter(FROM_TICK), plugin_name="limits", routes=table)
    for path, mode in (("/strict", "strict"), ("/lenient", "lenient"), ("/foreign", "None"), ("/elsewhere", "None")):
        stream = host.http_stream()
        stream.request_headers([(":path", path), (":method", "GET")])
        assert stream.request_headers_map is not None and stream.request_headers_map.get("x-mode") is None
        host.tick()
        assert stream.request_headers_map.get("x-mode") == mode.encode(), path


def test_route_config_from_another_context_s_callback_in_envoy(build_filter: Callable[[str], Path]) -> None:
    with UpstreamServer() as upstream:
        plugin = WasmPlugin(build_filter(FROM_TICK), name="limits")
        with Envoy(http_bootstrap(upstream_port=upstream.port, plugins=[plugin], routes=routes())) as proxy:
            for path, mode in (("/strict", "strict"), ("/lenient", "lenient"), ("/elsewhere", "None")):
                assert get(proxy, path)[0] == 200
                request = next(r for r in reversed(upstream.requests) if r.path == path)
                assert request.header("x-mode") == mode, path
