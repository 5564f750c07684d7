"""http_call in real Envoy: a POST's request headers forwarded to a callout (which carries no
body) must not hang the callout target on a stale content-length; a body sets its own."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from proxywasm_build.envoy import Cluster, Envoy, WasmPlugin, http_bootstrap
from proxywasm_build.upstream import UpstreamServer

FORWARDING = """
import proxywasm
from proxywasm import Action, HttpContext


@proxywasm.register
class Forward(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        body = b"payload!" if headers.get(":path") == "/with-body" else b""
        self.http_call("auth", self.on_answer, method="POST", headers=headers.pairs(), body=body, timeout_ms=5000)
        return Action.PAUSE

    def on_answer(self, response):
        self.send_response(response.status or 503, response.body)
"""


@pytest.fixture(scope="module")
def auth() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture(scope="module")
def envoy(build_filter: Callable[[str], Path], auth: UpstreamServer) -> Iterator[Envoy]:
    with UpstreamServer() as upstream:
        plugin = WasmPlugin(build_filter(FORWARDING), name="forward")
        config = http_bootstrap(upstream_port=upstream.port, plugins=[plugin], clusters=[Cluster("auth", auth.port)])
        with Envoy(config) as running:
            yield running


def post(url: str, body: bytes) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def test_forwarded_post_headers_do_not_hang_the_callout(envoy: Envoy, auth: UpstreamServer) -> None:
    status, echoed = post(envoy.url + "/forwarded", b'{"a": 1}')
    assert status == 200
    assert echoed["body"] == ""
    sent = auth.requests[-1]
    assert sent.header("content-length") in (None, "0")


def test_callout_body_sets_its_own_content_length(envoy: Envoy, auth: UpstreamServer) -> None:
    status, echoed = post(envoy.url + "/with-body", b'{"a": 1, "much": "longer than the callout body"}')
    assert status == 200
    assert echoed["body"] == "payload!"
    assert auth.requests[-1].header("content-length") == "8"
