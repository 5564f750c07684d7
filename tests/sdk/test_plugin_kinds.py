"""What a plugin serves, decided in one place (``_dispatch.makes_stream_contexts``) for the
dispatcher (which kind of context each new one is: Envoy's on_context_create does not say) and for
the build fact ``proxywasm run`` and ``proxywasm package`` read. A plugin that makes its L4
contexts with ``new_stream_context`` serves connections; one that says both kinds serves HTTP."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm_build.build import module_serves
from proxywasm_host import Host, NotServed

BY_METHOD = """
import proxywasm
from proxywasm import PluginContext, StreamContext, log


class Guard(StreamContext):
    def on_new_connection(self):
        log.info(f"guard for {self.plugin.label}")


@proxywasm.register
class Plugin(PluginContext):
    label = "tcp"

    def new_stream_context(self):
        return Guard()
"""

BOTH = """
import proxywasm
from proxywasm import HttpContext, PluginContext, StreamContext


class Stream(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        headers["x-kind"] = "http"


@proxywasm.register
class Plugin(PluginContext):
    http_context = Stream
    stream_context = StreamContext
"""


@pytest.mark.parametrize("mode", ["wasm", "native"])
def test_a_plugin_making_stream_contexts_by_method_serves_connections(
    load_filter: Callable[..., Host], build_filter: Callable[[str], Path], mode: str
) -> None:
    assert module_serves(build_filter(BY_METHOD).read_bytes()) == ("stream",)
    host = load_filter(BY_METHOD, mode)
    host.connection().new_connection()
    assert host.log_messages() == ["guard for tcp"]


@pytest.mark.parametrize("mode", ["wasm", "native"])
def test_a_plugin_saying_both_serves_http(
    load_filter: Callable[..., Host], build_filter: Callable[[str], Path], mode: str
) -> None:
    assert module_serves(build_filter(BOTH).read_bytes()) == ("http",)
    response = load_filter(BOTH, mode).request("GET", "/")
    assert response.upstream_request is not None and response.upstream_request.header("x-kind") == "http"


@pytest.mark.parametrize("mode", ["wasm", "native"])
def test_driving_a_filter_through_a_listener_it_does_not_serve_is_refused(
    load_filter: Callable[..., Host], mode: str
) -> None:
    # Envoy would never run it there: a test doing so would pass while exercising nothing (trial).
    with pytest.raises(NotServed, match="serves only L4 connections .* drive it with host.connection"):
        load_filter(BY_METHOD, mode).request("GET", "/")
    with pytest.raises(NotServed, match="serves only HTTP streams .* host.request"):
        load_filter(BOTH, mode).connection()


MIXED = """
import proxywasm
from proxywasm import HttpContext, PluginContext, StreamContext, log


class Web(HttpContext):
    pass


class Tcp(StreamContext):
    def on_new_connection(self):
        log.info("tcp plugin saw a connection")


@proxywasm.register(root_id="web")
class WebPlugin(PluginContext):
    http_context = Web


@proxywasm.register(root_id="tcp")
class TcpPlugin(PluginContext):
    stream_context = Tcp
"""


@pytest.mark.parametrize("mode", ["wasm", "native"])
def test_what_is_served_is_the_selected_plugins(
    load_filter: Callable[..., Host], build_filter: Callable[[str], Path], mode: str, tmp_path: Path
) -> None:
    # One module, an HTTP plugin and an L4 one: the root id (Istio's pluginName, run's --root-id)
    # selects which, and so the listener (trial: the L4 plugin was attached as an HTTP filter).
    module = build_filter(MIXED).read_bytes()
    served = [module_serves(module, root) for root in ("tcp", "web", None)]
    assert served == [("stream",), ("http",), ("http", "stream")]
    tcp = load_filter(MIXED, mode, root_id="tcp")
    with pytest.raises(NotServed):
        tcp.request("GET", "/")
    tcp.connection().new_connection()
    assert tcp.log_messages() == ["tcp plugin saw a connection"]
    with pytest.raises(NotServed):
        load_filter(MIXED, mode, root_id="web").connection()
    if mode == "wasm":
        from proxywasm_build.package import IstioOptions, package

        (tmp_path / "m.wasm").write_bytes(module)
        with pytest.raises(ValueError, match="plugin 'tcp'.* pass --type NETWORK"):
            package(tmp_path / "m.wasm", tmp_path / "a", istio=IstioOptions(plugin_name="tcp"))
        package(tmp_path / "m.wasm", tmp_path / "b", istio=IstioOptions(plugin_name="tcp", type="NETWORK"))
