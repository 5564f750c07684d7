"""proxywasm.Headers behaves as a mutable mapping over Envoy's header map (run in the host)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from pathlib import Path

from proxywasm_build.envoy import Envoy, WasmPlugin, http_bootstrap
from proxywasm_build.upstream import UpstreamServer
from proxywasm_host import Host

FILTER = """
import json
import proxywasm
from proxywasm import Action, HttpContext, log


@proxywasm.register
class Filter(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        seen = {
            "keys": list(headers.keys()),
            "items": list(headers.items()),
            "values": list(headers.values()),
            "get": headers.get("x-a"),
            "get_missing": headers.get("x-missing", "fallback"),
            "get_all": headers.get_all("x-a"),
            "contains": ["X-A" in headers, "x-missing" in headers, 3 in headers],
            "len": len(headers),
            "equal_to_itself": headers == headers,
            "equal_dict": headers == dict(headers.items()),
            "popped": headers.pop("x-b"),
            "pop_default": headers.pop("x-missing", None),
            "setdefault_existing": headers.setdefault("x-a", "other"),
            "setdefault_new": headers.setdefault("x-new", "made"),
        }
        try:
            headers.pop("x-missing")
        except KeyError as e:
            seen["pop_missing"] = str(e)
        headers.update({"x-c": "3"}, x_d="4")
        headers.update([("x-e", "5")])
        log.info(json.dumps(seen))
        return Action.CONTINUE
"""


def test_mapping_methods_read_and_write_envoy_headers(build_filter: Callable[[str], Path]) -> None:
    host = Host.load(build_filter(FILTER))
    resp = host.request("GET", "/", headers=[("x-a", "1"), ("x-a", "2"), ("x-b", "b")])
    seen = json.loads(next(m for _, m in resp.logs if m.startswith("{")))
    names = [":authority", ":path", ":method", ":scheme", "x-a", "x-b"]
    assert seen["keys"][: len(names)] == names
    assert ("x-a", "1") in [tuple(p) for p in seen["items"]]  # the first value of a repeated name
    assert seen["values"][seen["keys"].index("x-b")] == "b"
    assert seen["get"] == "1" and seen["get_missing"] == "fallback"
    assert seen["get_all"] == ["1", "2"]
    assert seen["contains"] == [True, False, False]
    assert seen["equal_to_itself"] and seen["equal_dict"]
    assert seen["popped"] == "b" and seen["pop_default"] is None
    assert seen["pop_missing"] == "'x-missing'"
    assert seen["setdefault_existing"] == "1" and seen["setdefault_new"] == "made"
    assert resp.upstream_request is not None
    upstream = resp.upstream_request
    assert upstream.header("x-b") is None
    assert [upstream.header(n) for n in ("x-new", "x-c", "x_d", "x-e")] == ["made", "3", "4", "5"]


ABC_FILTER = """
from collections.abc import Mapping, MutableMapping
import proxywasm
from proxywasm import Action, HttpContext


@proxywasm.register
class Filter(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        headers["x-is-mapping"] = str(isinstance(headers, Mapping) and isinstance(headers, MutableMapping))
        return Action.CONTINUE
"""


def test_headers_are_a_mutable_mapping_for_filters_that_use_collections_abc(
    build_filter: Callable[[str], Path],
) -> None:
    resp = Host.load(build_filter(ABC_FILTER)).request("GET", "/")
    assert resp.upstream_request is not None and resp.upstream_request.header("x-is-mapping") == "True"


def test_mapping_methods_and_collections_abc_in_real_envoy(build_filter: Callable[[str], Path]) -> None:
    """Both filters in one chain in real Envoy: the same reads and writes on Envoy's own header map."""
    plugins = [
        WasmPlugin(build_filter(FILTER), name="mapping"),
        WasmPlugin(build_filter(ABC_FILTER), name="abc"),
    ]
    with UpstreamServer() as upstream:
        with Envoy(http_bootstrap(upstream_port=upstream.port, plugins=plugins)) as envoy:
            connection = http.client.HTTPConnection("127.0.0.1", envoy.port(), timeout=10)
            connection.putrequest("GET", "/")
            for name, value in (("x-a", "1"), ("x-a", "2"), ("x-b", "b")):
                connection.putheader(name, value)
            connection.endheaders()
            assert connection.getresponse().status == 200
            line = envoy.wait_for_log(r"\{.*\"get_all\".*\}").group(0)
            upstream_request = upstream.wait_for_requests(1)[0]
    seen = json.loads(line)
    assert seen["get_all"] == ["1", "2"] and seen["get"] == "1" and seen["popped"] == "b"
    assert seen["contains"] == [True, False, False] and seen["equal_to_itself"] and seen["equal_dict"]
    assert upstream_request.header("x-b") is None
    assert [upstream_request.header(n) for n in ("x-new", "x-c", "x_d", "x-e")] == ["made", "3", "4", "5"]
    assert upstream_request.header("x-is-mapping") == "True"
