"""The CPU budget in the local host, both modes: a looping callback fails fast with the budget's
message and the policy's answer instead of hanging the test run, as in real Envoy
(tests/runtime/test_budget_envoy.py).

The Wasm host runs the module with fuel and advances the guest's clocks by the fuel it burns (a
fixed rate, so a looping test fails the same way on every run); native mode runs a watchdog thread
on the wall clock (see ``proxywasm_host.native.budget``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from proxywasm_host import ConfigureError, Host, WasmTrap
from proxywasm_host.pytest_plugin import HostFactory

FILTER = Path(__file__).parent / "budget_filter.py"  # the one test_budget_envoy.py runs in Envoy

# Generous: the point is "fails fast instead of hanging", not a timing. A 100 ms budget runs out
# after ~100 ms of virtual time in the Wasm host (a few seconds of wasmtime on a busy machine)
# and after 100 ms of wall time natively.
FAST_S = 30.0


@pytest.fixture(scope="module")
def source() -> Path:
    return FILTER


def load(factory: HostFactory, source: Path, mode: str, config: object = None, **options: object) -> Host:
    plugin_config = json.dumps(config) if config is not None else ""
    clusters = {"upstream": lambda request: 200}
    return factory(source, mode=mode, plugin_config=plugin_config, clusters=clusters, **options)


def budget_entries(host: Host, callback: str, ms: int) -> list[str]:
    line = f"BudgetExceeded: {callback} ran longer than its CPU budget of {ms} ms"
    return [message for _, message in host.logs if line in message]


@pytest.mark.parametrize("path", ["/loop", "/catch"], ids=["endless-loop", "loop-catching-BudgetExceeded"])
def test_a_looping_request_is_answered_by_the_failure_policy(
    proxywasm_host: HostFactory, proxywasm_mode: str, source: Path, path: str
) -> None:
    host = load(proxywasm_host, source, proxywasm_mode)
    started = time.monotonic()
    response = host.request("GET", path)
    assert time.monotonic() - started < FAST_S
    assert (response.status, response.body) == (500, b"Internal Server Error\n")
    assert response.upstream_request is None
    [entry] = budget_entries(host, "on_request_headers", 100)
    assert "proxywasm: exception in Filter.on_request_headers" in entry
    assert 'File "budget_filter.py", line ' in entry or f'File "{source}", line ' in entry
    # the same VM goes on serving
    fine = host.request("GET", "/fine")
    assert fine.status == 200
    assert fine.upstream_request is not None and fine.upstream_request.header("x-filtered") == "yes"


def test_work_within_the_budget_is_not_interrupted(
    proxywasm_host: HostFactory, proxywasm_mode: str, source: Path
) -> None:
    host = load(proxywasm_host, source, proxywasm_mode)
    response = host.request("GET", "/count/10000")
    assert response.status == 200
    assert response.upstream_request is not None
    assert response.upstream_request.header("x-total") == str(sum(range(10000)))
    assert budget_entries(host, "on_request_headers", 100) == []


def test_the_wasm_host_stops_a_loop_at_the_same_point_every_run(
    proxywasm_host: HostFactory, source: Path, build_filter: object
) -> None:
    """Fuel is deterministic: the budget runs out after the same work, so the guest's clock shows
    the same virtual CPU time (a test of a looping filter gives the same log every run)."""
    spent = []
    for _ in range(2):
        host = load(proxywasm_host, source, "wasm")
        before = host.raw.cpu_ns()
        assert host.request("GET", "/loop").status == 500
        spent.append(host.raw.cpu_ns() - before)
    assert spent[0] == spent[1]
    assert 100_000_000 <= spent[0] < 150_000_000  # the budget, and the SDK reporting it


def test_a_looping_callout_response_fails_its_stream(
    proxywasm_host: HostFactory, proxywasm_mode: str, source: Path
) -> None:
    host = load(proxywasm_host, source, proxywasm_mode)
    response = host.request("GET", "/callout")
    assert response.status == 500
    [entry] = budget_entries(host, "on_http_call_response", 100)
    assert "in on_answer" in entry
    assert host.request("GET", "/fine").status == 200


def test_a_coroutine_looping_after_an_await_is_named(
    proxywasm_host: HostFactory, proxywasm_mode: str, source: Path
) -> None:
    host = load(proxywasm_host, source, proxywasm_mode, root_id="await")
    assert host.request("GET", "/await").status == 500
    [entry] = [m for _, m in host.logs if "ran longer than its CPU budget" in m]
    assert "exception in AwaitingFilter.on_request_headers" in entry
    assert (
        "BudgetExceeded: on_http_call_response (resuming the coroutine of AwaitingFilter.on_request_headers after an "
        "await) ran longer than its CPU budget of 100 ms"
    ) in entry


def test_fail_open_lets_a_looping_request_continue(
    proxywasm_host: HostFactory, proxywasm_mode: str, source: Path
) -> None:
    host = load(proxywasm_host, source, proxywasm_mode, {"policy": "open"})
    response = host.request("GET", "/loop")
    assert response.status == 200
    assert response.upstream_request is not None and response.upstream_request.path == "/loop"
    assert len(budget_entries(host, "on_request_headers", 100)) == 1


def test_the_plugin_configuration_sets_the_budget(
    proxywasm_host: HostFactory, proxywasm_mode: str, source: Path
) -> None:
    host = load(proxywasm_host, source, proxywasm_mode, {"proxywasm_cpu_budget_ms": 20})
    assert host.request("GET", "/loop").status == 500
    assert len(budget_entries(host, "on_request_headers", 20)) == 1


def test_an_endless_on_configure_rejects_the_configuration(
    proxywasm_host: HostFactory, proxywasm_mode: str, source: Path
) -> None:
    with pytest.raises(ConfigureError) as info:
        load(proxywasm_host, source, proxywasm_mode, {"loop_in_configure": True})
    message = str(info.value)
    assert "exception in Plugin.on_configure (the configuration is rejected)" in message
    assert "BudgetExceeded: on_configure ran longer than its CPU budget of 1000 ms" in message


def test_an_endless_on_tick_is_interrupted_every_tick(
    proxywasm_host: HostFactory, proxywasm_mode: str, source: Path
) -> None:
    host = load(proxywasm_host, source, proxywasm_mode, {"tick_ms": 200})
    assert host.advance_time(600) == 3
    assert len(budget_entries(host, "on_tick", 100)) == 3
    assert host.request("GET", "/fine").status == 200


def test_a_loop_without_a_budget_traps_instead_of_hanging_the_test_run(
    proxywasm_host: HostFactory, source: Path
) -> None:
    """Budget 0: in Envoy the worker would spin for good. The Wasm host stops the callback after
    seconds of virtual CPU time (the module runs out of fuel) and reports it as a trap."""
    host = load(proxywasm_host, source, "wasm", {"proxywasm_cpu_budget_ms": 0})
    with pytest.raises(WasmTrap) as info:
        host.request("GET", "/loop")
    assert "Function: proxy_on_request_headers failed: Uncaught RuntimeError: the callback ran for seconds" in str(
        info.value
    )
    assert "the CPU budget is 0" in str(info.value)


DEBUGGED = """
import proxywasm
from proxywasm import HttpContext


@proxywasm.register
class Filter(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        breakpoint()
        headers["x-after-breakpoint"] = "yes"
"""


def test_natively_the_budget_waits_while_a_debugger_has_the_callback_stopped(
    proxywasm_host: HostFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone at the pdb prompt for longer than the budget: the callback is not interrupted."""
    import bdb
    import sys

    class SlowReader(bdb.Bdb):
        stops = 0

        def user_line(self, frame: object) -> None:
            SlowReader.stops += 1
            time.sleep(0.4)  # four budgets of 100 ms "at the prompt"
            self.set_continue()

    def hook(*args: object, **kwargs: object) -> None:
        SlowReader().set_trace(sys._getframe(1))

    monkeypatch.setattr(sys, "breakpointhook", hook)
    (tmp_path / "filter.py").write_text(DEBUGGED)
    host = proxywasm_host(tmp_path / "filter.py", mode="native")
    response = host.request("GET", "/")
    assert SlowReader.stops >= 1
    assert response.status == 200
    assert response.upstream_request is not None and response.upstream_request.header("x-after-breakpoint") == "yes"
    assert budget_entries(host, "on_request_headers", 100) == []
