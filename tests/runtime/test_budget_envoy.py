"""The CPU budget per callback in real Envoy: a callback that runs too long gets BudgetExceeded
raised inside it, the stream meets the failure policy, the log shows the filter's traceback, and the
VM keeps serving. The budget comes from the plugin configuration, the VM's environment or the
plugin class, in that order; 0 disables it."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxywasm_build.cache import build_cached
from proxywasm_build.envoy import Envoy, EnvoyError, WasmPlugin, http_bootstrap, tcp_bootstrap
from proxywasm_build.upstream import UpstreamServer

FILTER = Path(__file__).parent / "budget_filter.py"

MARGIN_S = 3.0  # generous: a shared 2-core machine; the point is "not hung", not a timing


def get(url: str) -> tuple[int, bytes, float]:
    """(status, body, seconds taken)."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            return response.status, response.read(), time.monotonic() - started
    except urllib.error.HTTPError as err:
        return err.code, err.read(), time.monotonic() - started


@pytest.fixture(scope="module")
def wasm() -> Path:
    return build_cached(FILTER)


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


def start(upstream: UpstreamServer, *plugins: WasmPlugin, **kwargs: object) -> Envoy:
    config = http_bootstrap(upstream_port=upstream.port, plugins=plugins)
    return Envoy(config, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def envoy(wasm: Path, upstream: UpstreamServer) -> Iterator[Envoy]:
    with start(upstream, WasmPlugin(wasm, name="budget")) as running:
        yield running


def budget_log(envoy: Envoy, since: int, callback: str, ms: int) -> str:
    """The first log entry after character ``since`` that reports a BudgetExceeded of ``callback``
    under a budget of ``ms`` (Envoy writes its log asynchronously: wait for it)."""
    line = f"BudgetExceeded: {callback} ran longer than its CPU budget of {ms} ms"
    deadline = time.monotonic() + 10
    while True:
        for entry in envoy.log_since(since).split("\n["):
            if line in entry:
                return entry
        if time.monotonic() > deadline:
            raise AssertionError(f"no {line!r} in the log:\n{envoy.log_since(since)[-3000:]}")
        time.sleep(0.05)


@pytest.mark.parametrize(
    "path", ["/loop", "/catch", "/bare"], ids=["endless-loop", "loop-catching-BudgetExceeded", "loop-with-bare-except"]
)
def test_a_looping_request_is_answered_by_the_failure_policy(envoy: Envoy, upstream: UpstreamServer, path: str) -> None:
    upstream.clear()
    since = len(envoy.logs())
    status, body, seconds = get(envoy.url + path)
    assert (status, body) == (500, b"Internal Server Error\n")
    assert seconds < 0.1 + MARGIN_S
    assert upstream.requests == []
    entry = budget_log(envoy, since, "on_request_headers", 100)
    assert "proxywasm: exception in Filter.on_request_headers" in entry
    assert re.search(r'File "budget_filter.py", line \d+, in on_request_headers\n', entry)
    # The same VM goes on serving.
    status, _, _ = get(envoy.url + "/fine")
    assert status == 200
    assert [r.header("x-filtered") for r in upstream.requests] == ["yes"]


def test_a_catastrophic_regex_is_stopped_inside_the_regex_engine(envoy: Envoy) -> None:
    since = len(envoy.logs())
    status, _, seconds = get(envoy.url + "/regex")
    assert status == 500
    assert seconds < 0.1 + MARGIN_S
    entry = budget_log(envoy, since, "on_request_headers", 100)
    assert "in match" in entry  # raised inside re.match: the engine checks every 4096 steps
    assert get(envoy.url + "/fine")[0] == 200


def test_sdk_code_that_runs_on_is_interrupted_after_a_second_budget(envoy: Envoy) -> None:
    """The SDK's frames are spared once the budget runs out, so it can apply the failure policy;
    if they run on for another budget, they are interrupted too, and the runtime fails the stream
    closed itself."""
    status, body, seconds = get(envoy.url + "/endless-headers")
    assert (status, body) == (500, b"Internal Server Error\n")
    assert seconds < 0.2 + MARGIN_S
    envoy.wait_for_log(
        "proxywasm runtime: on_request_headers failed: "
        "BudgetExceeded: on_request_headers ran longer than its CPU budget of 100 ms"
    )
    assert get(envoy.url + "/fine")[0] == 200


def test_work_within_the_budget_is_not_interrupted(envoy: Envoy) -> None:
    assert get(envoy.url + "/spin/10")[0] == 200


def test_a_looping_callout_response_fails_its_stream(envoy: Envoy) -> None:
    # The callout goes to the "upstream" cluster http_bootstrap defines.
    since = len(envoy.logs())
    status, _, seconds = get(envoy.url + "/callout")
    assert status == 500
    assert seconds < 0.1 + MARGIN_S
    entry = budget_log(envoy, since, "on_http_call_response", 100)
    assert "in on_answer" in entry
    assert get(envoy.url + "/fine")[0] == 200


def test_a_coroutine_looping_after_an_await_is_named(wasm: Path, upstream: UpstreamServer) -> None:
    with start(upstream, WasmPlugin(wasm, name="await", root_id="await")) as envoy:
        since = len(envoy.logs())
        assert get(envoy.url + "/await")[0] == 500
        entry = budget_log(
            envoy, since, "on_http_call_response (resuming the coroutine of AwaitingFilter.on_request_headers after an "
            "await)", 100,
        )  # fmt: skip
        assert "exception in AwaitingFilter.on_request_headers" in entry


def test_fail_open_lets_a_looping_request_continue(wasm: Path, upstream: UpstreamServer) -> None:
    plugin = WasmPlugin(wasm, name="budget", configuration=json.dumps({"policy": "open"}))
    with start(upstream, plugin) as envoy:
        upstream.clear()
        assert get(envoy.url + "/loop")[0] == 200
        assert [r.path for r in upstream.requests] == ["/loop"]
        budget_log(envoy, 0, "on_request_headers", 100)


def test_the_plugin_configuration_sets_the_budget_and_beats_the_environment(
    wasm: Path, upstream: UpstreamServer
) -> None:
    env = {"PROXYWASM_CPU_BUDGET_MS": "40"}
    # Two plugins in one VM (same vm_id, so the same environment): "attr" has a class attribute
    # of 30 ms, which the environment's 40 ms overrides; "cfg" sets 20 ms in its configuration.
    attr = WasmPlugin(wasm, name="attr", root_id="attr", vm_id="vm", environment_variables=env)
    cfg = WasmPlugin(
        wasm,
        name="cfg",
        root_id="cfg",
        vm_id="vm",
        environment_variables=env,
        configuration=json.dumps({"proxywasm_cpu_budget_ms": 20}),
    )
    with start(upstream, attr, cfg) as envoy:
        assert get(envoy.url + "/in/cfg/loop")[0] == 500
        budget_log(envoy, 0, "on_request_headers", 20)
        assert get(envoy.url + "/in/attr/loop")[0] == 500
        budget_log(envoy, 0, "on_request_headers", 40)
        assert "budget of 30 ms" not in envoy.logs()


def test_the_plugin_class_sets_the_budget_and_zero_disables_it(wasm: Path, upstream: UpstreamServer) -> None:
    attr = WasmPlugin(wasm, name="attr", root_id="attr", vm_id="vm")
    off = WasmPlugin(wasm, name="off", root_id="off", vm_id="vm")
    with start(upstream, attr, off) as envoy:
        assert get(envoy.url + "/in/attr/loop")[0] == 500
        budget_log(envoy, 0, "on_request_headers", 30)
        # 300 ms of work: stopped under a budget of 30 ms, done without one.
        assert get(envoy.url + "/in/attr/spin/300")[0] == 500
        assert get(envoy.url + "/in/off/spin/300")[0] == 200


def test_a_budget_that_is_not_a_number_rejects_the_configuration(wasm: Path, upstream: UpstreamServer) -> None:
    plugin = WasmPlugin(wasm, name="budget", configuration=json.dumps({"proxywasm_cpu_budget_ms": "fast"}))
    with pytest.raises(EnvoyError) as info:
        with start(upstream, plugin):
            pass
    assert (
        'the plugin configuration\'s "proxywasm_cpu_budget_ms" must be a non-negative integer of milliseconds, '
        'not "fast": the configuration is rejected' in str(info.value)
    )


def test_an_endless_on_configure_rejects_the_configuration(wasm: Path, upstream: UpstreamServer) -> None:
    plugin = WasmPlugin(wasm, name="budget", configuration=json.dumps({"loop_in_configure": True}))
    started = time.monotonic()
    with pytest.raises(EnvoyError) as info:
        with start(upstream, plugin):
            pass
    assert time.monotonic() - started < 60  # Envoy gave up on the configuration instead of hanging
    message = str(info.value)
    assert "exception in Plugin.on_configure (the configuration is rejected)" in message
    assert "BudgetExceeded: on_configure ran longer than its CPU budget of 1000 ms" in message


def test_an_endless_on_tick_is_interrupted_every_tick_and_requests_are_served(
    wasm: Path, upstream: UpstreamServer
) -> None:
    plugin = WasmPlugin(wasm, name="budget", configuration=json.dumps({"tick_ms": 200}))
    with start(upstream, plugin) as envoy:
        budget_log(envoy, 0, "on_tick", 100)
        for _ in range(3):
            status, _, seconds = get(envoy.url + "/fine")
            assert status == 200
            assert seconds < 0.1 + MARGIN_S
        assert envoy.logs().count("BudgetExceeded: on_tick ran longer") >= 2  # every tick, not once


def test_an_endless_l4_callback_closes_its_connection(wasm: Path, upstream: UpstreamServer) -> None:
    plugin = WasmPlugin(wasm, name="l4", root_id="l4")
    with Envoy(tcp_bootstrap(upstream_port=upstream.port, plugins=[plugin])) as envoy:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", envoy.port()), timeout=20) as sock:
            sock.sendall(b"LOOP\r\n\r\n")
            try:
                closed = sock.recv(1024) == b""
            except ConnectionResetError:
                closed = True
        assert closed
        assert time.monotonic() - started < 0.1 + MARGIN_S
        entry = budget_log(envoy, 0, "on_downstream_data", 100)
        assert "exception in Connection.on_downstream_data" in entry
        # The next connection goes through to the upstream.
        with socket.create_connection(("127.0.0.1", envoy.port()), timeout=20) as sock:
            sock.sendall(b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert sock.recv(1024).startswith(b"HTTP/1.")
