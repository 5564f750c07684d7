"""Callbacks a filter does not define must not enter Python: in real Envoy and in the local host,
a filter with only on_request_headers costs exactly two Python entries per request (creating its
context, and the callback itself). An await-style filter receives on_done only while a coroutine
waits (to close it if the stream ends first): a stream whose coroutine finished costs three
(context, headers callback, the callout's answer), not four."""

from __future__ import annotations

import itertools
import urllib.request
from collections.abc import Callable
from pathlib import Path

from proxywasm_build.envoy import Envoy, WasmPlugin, http_bootstrap
from proxywasm_build.upstream import UpstreamServer
from proxywasm_host import Host

ONLY_REQUEST_HEADERS = """
import proxywasm
from proxywasm import HttpContext


@proxywasm.register
class Counting(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        headers["x-python-entries"] = str(proxywasm.vm.python_entries())
"""

AWAITS_A_CALLOUT = """
import proxywasm
from proxywasm import HttpContext


@proxywasm.register
class CountingAwait(HttpContext):
    async def on_request_headers(self, headers, end_of_stream):
        await self.http_call("upstream", path="/auth")
        headers["x-python-entries"] = str(proxywasm.vm.python_entries())
"""

EVERYTHING = (
    ONLY_REQUEST_HEADERS
    + """
    def on_response_headers(self, headers, end_of_stream):
        pass

    def on_log(self):
        pass
"""
)


def steps(values: list[int]) -> set[int]:
    return {b - a for a, b in itertools.pairwise(values)}


def steps_in_envoy(wasm: Path) -> set[int]:
    """Python entries between consecutive requests, as the filter saw them in real Envoy (the
    requests a callout sends to the same upstream carry no count)."""
    with UpstreamServer() as upstream:
        with Envoy(http_bootstrap(upstream_port=upstream.port, plugins=[WasmPlugin(wasm, name="masks")])) as envoy:
            for _ in range(4):
                with urllib.request.urlopen(envoy.url + "/", timeout=10) as response:
                    assert response.status == 200
        seen = [int(r.header("x-python-entries") or -1) for r in upstream.requests]
    return steps([n for n in seen if n != -1])


def steps_in_the_host(host: Host) -> set[int]:
    return steps([int(dict(host.request("GET", "/").upstream_request.headers)["x-python-entries"]) for _ in range(4)])


def test_undefined_callbacks_stay_out_of_python_in_envoy(build_filter: Callable[[str], Path]) -> None:
    assert steps_in_envoy(build_filter(ONLY_REQUEST_HEADERS)) == {2}


def test_the_count_does_see_defined_callbacks(build_filter: Callable[[str], Path]) -> None:
    # The same measurement with two more callbacks defined: four entries per request.
    assert steps_in_the_host(Host.load(build_filter(EVERYTHING))) == {4}


def test_undefined_callbacks_stay_out_of_python_in_the_host(build_filter: Callable[[str], Path]) -> None:
    assert steps_in_the_host(Host.load(build_filter(ONLY_REQUEST_HEADERS))) == {2}


def test_a_finished_coroutine_leaves_on_done_out_of_python_in_envoy(build_filter: Callable[[str], Path]) -> None:
    assert steps_in_envoy(build_filter(AWAITS_A_CALLOUT)) == {3}


def test_a_finished_coroutine_leaves_on_done_out_of_python_in_the_host(build_filter: Callable[[str], Path]) -> None:
    host = Host.load(build_filter(AWAITS_A_CALLOUT), clusters={"upstream": lambda request: 200})
    assert steps_in_the_host(host) == {3}


def test_a_waiting_coroutine_still_gets_on_done(build_filter: Callable[[str], Path]) -> None:
    # The stream ends while its coroutine waits: on_done reaches Python and closes it.
    source = AWAITS_A_CALLOUT.replace(
        '        await self.http_call("upstream", path="/auth")',
        '        try:\n            await self.http_call("upstream", path="/auth")\n'
        '        finally:\n            proxywasm.log.info("closed")',
    )
    host = Host.load(build_filter(source))
    host.add_cluster("upstream")
    stream = host.http_stream()
    stream.request_headers([(":path", "/"), (":method", "GET")])
    stream.complete()
    assert "closed" in host.log_messages()
