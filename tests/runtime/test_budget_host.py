"""The budget's configuration and the memory limit in the local host (a looping callback in
the host: test_budget_host_loops.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

import proxywasm
from proxywasm import budget
from proxywasm_host import ConfigureError, Host

FILTER = """
import proxywasm
from proxywasm import HttpContext, vm


@proxywasm.register
class Hungry(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        if headers[":path"] == "/bomb":
            blocks = []
            while True:
                blocks.append(bytearray(1 << 20))
        headers["x-memory"] = str(vm.memory_bytes())
"""


@pytest.fixture(scope="module")
def wasm(build_filter: Callable[[str], Path]) -> Path:
    return build_filter(FILTER)


def test_budget_exceeded_is_not_caught_by_except_exception() -> None:
    assert issubclass(proxywasm.BudgetExceeded, BaseException)
    assert not issubclass(proxywasm.BudgetExceeded, Exception)
    assert proxywasm.PluginContext.cpu_budget_ms == budget.DEFAULT_MS == 100


@pytest.mark.parametrize("value", ['"fast"', "-5", "1.5", "null", "[1]"])
def test_a_budget_that_is_not_a_number_of_milliseconds_rejects_the_configuration(wasm: Path, value: str) -> None:
    with pytest.raises(ConfigureError) as info:
        Host.load(wasm, plugin_config=f'{{"greeting": "hi", "{budget.CONFIG_KEY}": {value}}}')
    assert (
        f'the plugin configuration\'s "{budget.CONFIG_KEY}" must be a non-negative integer of milliseconds, '
        f"not {value}: the configuration is rejected"
    ) in str(info.value)


@pytest.mark.parametrize("value", ["0", "20", "20.0", "5000"])
def test_a_budget_of_milliseconds_is_accepted(wasm: Path, value: str) -> None:
    host = Host.load(wasm, plugin_config=f'{{"{budget.CONFIG_KEY}": {value}, "other": {{"x": [1, "}}"]}}}}')
    assert host.request("GET", "/").status == 200


def test_the_key_is_only_read_at_the_top_level_of_a_json_object(wasm: Path) -> None:
    nested = json.dumps({"inner": {budget.CONFIG_KEY: "fast"}, "text": f'"{budget.CONFIG_KEY}": "fast"'})
    assert Host.load(wasm, plugin_config=nested).request("GET", "/").status == 200
    assert Host.load(wasm, plugin_config=b"not json at all").request("GET", "/").status == 200


def test_the_memory_limit_turns_a_bomb_into_memory_error(wasm: Path) -> None:
    host = Host.load(wasm, env={budget.MEMORY_ENV_VAR: "24"})
    response = host.request("GET", "/bomb")
    assert response.status == 500
    assert any("MemoryError" in str(line) for line in host.logs)
    fine = host.request("GET", "/")
    assert fine.status == 200
    assert int(fine.upstream_request.header("x-memory")) <= 27 << 20  # 24 MiB and the SDK's 2 MiB reserve
