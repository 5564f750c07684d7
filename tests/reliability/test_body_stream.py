"""A 5 MB request body streamed through a filter that inspects every chunk without buffering: every
byte is seen once, the upstream gets the whole body, and the VM's memory does not grow with it."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from reliability_support import MiB, record, run, vm_memory

from proxywasm_build.envoy import Envoy, WasmPlugin, http_bootstrap
from proxywasm_build.upstream import UpstreamServer

FILTER = """
import hashlib

import proxywasm
from proxywasm import Action, HttpContext, vm


@proxywasm.register
class Inspect(HttpContext):
    def __init__(self):
        self.digest = hashlib.sha256()
        self.seen = 0
        self.chunks = 0
        self.largest = 0

    def on_request_body(self, body, end_of_stream):
        chunk = body.read()  # only this chunk: CONTINUE lets Envoy forward it and forget it
        self.digest.update(chunk)
        self.seen += len(chunk)
        self.chunks += 1
        self.largest = max(self.largest, len(chunk))
        return Action.CONTINUE

    def on_response_headers(self, headers, end_of_stream):
        headers["x-seen"] = str(self.seen)
        headers["x-sha256"] = self.digest.hexdigest()
        headers["x-chunks"] = str(self.chunks)
        headers["x-largest-chunk"] = str(self.largest)
        headers["x-vm-memory"] = str(vm.memory_bytes())
"""

SIZE = 5 * 1000 * 1000


@pytest.fixture(scope="module")
def envoy(build_filter: Callable[[str], Path]) -> Iterator[tuple[Envoy, UpstreamServer]]:
    with UpstreamServer() as upstream:
        plugin = WasmPlugin(build_filter(FILTER), name="inspect")
        with Envoy(http_bootstrap(upstream_port=upstream.port, plugins=[plugin])) as running:
            yield running, upstream


def test_a_5_mb_body_streams_through_in_bounded_memory(envoy: tuple[Envoy, UpstreamServer]) -> None:
    proxy, upstream = envoy
    small = run(proxy.port(), [("POST", "/small", [], b"x" * 1000)], connections=1).answers[0]
    assert small.status == 200
    memory_before, vm_before = vm_memory(proxy), int(small.headers["x-vm-memory"])
    body = os.urandom(SIZE)
    upstream.clear()
    answer = run(proxy.port(), [("POST", "/big", [], body)], connections=1, timeout_s=60).answers[0]
    memory_after, vm_after = vm_memory(proxy), int(answer.headers["x-vm-memory"])

    assert answer.status == 200
    assert int(answer.headers["x-seen"]) == SIZE
    assert answer.headers["x-sha256"] == hashlib.sha256(body).hexdigest()  # every byte, once, in order
    assert upstream.requests[-1].body == body
    chunks, largest = int(answer.headers["x-chunks"]), int(answer.headers["x-largest-chunk"])
    # Streamed, not buffered: Envoy hands over at most its 1 MiB connection buffer at a time.
    assert chunks >= 5
    assert largest <= MiB
    assert vm_after - vm_before <= 3 * largest  # linear memory: a few chunks' worth, not the body
    growth = [after - before for before, after in zip(memory_before, memory_after, strict=True)]
    assert all(g <= 3 * largest for g in growth), growth
    # And it stays there: a second 5 MB body needs no more.
    again = run(proxy.port(), [("POST", "/again", [], body)], connections=1, timeout_s=60).answers[0]
    assert again.status == 200
    assert again.headers["x-sha256"] == answer.headers["x-sha256"]
    assert int(again.headers["x-vm-memory"]) == vm_after
    record(
        "5 MB body streamed",
        {
            "body_bytes": SIZE,
            "chunks": chunks,
            "largest_chunk_bytes": largest,
            "vm_linear_memory_mib_before": round(vm_before / MiB, 2),
            "vm_linear_memory_mib_after": round(vm_after / MiB, 2),
            "seconds": round(answer.seconds, 2),
        },
    )
