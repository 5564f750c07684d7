"""Every HTTP example answers the same natively and as its built module: status, headers, body, what
the upstream and the callout clusters received, log lines and metrics (the differential suite's
outcome, with native mode in the place of real Envoy)."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from proxywasm_host import Envoy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "differential"))

from differential import EXAMPLES, Call, HostDriver, Outcome, Reply, assert_same
from test_differential_examples import JSON, _auth_reply, example_plugin

Build = Callable[[str], Path]

CASES: dict[str, tuple[dict[str, Reply], list[Call]]] = {
    "helloworld": ({}, [Call("GET", "/"), Call("GET", "/", wait_ms=1500)]),
    "http_headers": ({}, [Call("GET", "/", (("user-agent", "diff"), ("x-a", "1"))), Call("POST", "/p", JSON, b"{}")]),
    "vm_plugin_configuration": ({}, [Call("GET", "/")]),
    "http_body": (
        {},
        [
            Call("POST", "/", (("buffer-operation", "append"),), b"hello"),
            Call("PUT", "/", (), b"replace me"),
            Call("POST", "/", (("buffer-replace-at", "response"),), b"x", Reply(201, JSON, b'{"a": 1}')),
        ],
    ),
    "http_body_chunk": ({}, [Call("POST", "/", (), b"a body with a pattern in it"), Call("POST", "/", (), b"ok")]),
    "json_validation": (
        {},
        [Call("POST", "/", JSON, b'{"id": 1}'), Call("POST", "/", JSON, b'{"id": 1, "token": "t"}')],
    ),
    "metrics": ({}, [Call("GET", "/", (("my-custom-header", "foo"),)), Call("GET", "/")]),
    "http_auth_random": ({"httpbin": _auth_reply(True)}, [Call("GET", "/", (("x-a", "1"),))]),
    "multiple_dispatches": ({"httpbin": Reply(200, JSON, b"{}")}, [Call("GET", "/")]),
    "properties": ({}, [Call("GET", "/"), Call("GET", "/", (("authorization", "x"),))]),
    "shared_data": ({}, [Call("GET", "/"), Call("GET", "/"), Call("POST", "/", (), b"x")]),
    "postpone_requests": ({}, [Call("GET", "/")]),
    "dispatch_call_on_tick": ({"httpbin": Reply(200, JSON, b"{}")}, [Call("GET", "/", wait_ms=2500)]),
    "foreign_call_on_tick": ({}, [Call("GET", "/", wait_ms=2500)]),
    "shared_queue": ({}, [Call("GET", "/"), Call("GET", "/", wait_ms=1500)]),
}


# The random module's state is frozen into the module's snapshot; natively it is the process's.
_RANDOM = re.compile(r"random value: \d+")
_CLOCK = re.compile(r"\b\d{19}\b")


def _same_randomness(outcome: Outcome) -> Outcome:
    # and the same clock to the millisecond: a Wasm guest's clock also runs ahead by its virtual CPU time
    outcome.logs = [
        (level, _CLOCK.sub(lambda m: m[0][:-6], _RANDOM.sub("random value: <n>", message)))
        for level, message in outcome.logs
    ]
    return outcome


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_answers_the_same_natively_and_as_wasm(example_wasm: Build, name: str) -> None:
    clusters, calls = CASES[name]
    as_wasm = example_plugin(name, example_wasm(name), clusters)
    start = 1_796_000_000_000_000_000  # both hosts read the same clock
    native = HostDriver(replace(as_wasm, module=EXAMPLES / name), mode="native", envoy=Envoy(start_time_ns=start))
    wasm = HostDriver(as_wasm, envoy=Envoy(start_time_ns=start))
    assert_same(_same_randomness(wasm.run(calls)), _same_randomness(native.run(calls)))
    assert wasm.startup_logs == native.startup_logs
