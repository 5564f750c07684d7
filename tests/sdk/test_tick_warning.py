"""A plugin that defines on_tick but sets no tick period by the end of on_configure is told so in
the log (Envoy would never call it: the fresh-user trial's housekeeping silently never ran)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from proxywasm_host import Host

TICKS = """
import json

import proxywasm
from proxywasm import PluginContext, log


@proxywasm.register
class Housekeeping(PluginContext):
    def on_configure(self, configuration):
        if json.loads(configuration or b"{}").get("tick"):
            self.set_tick_period(1000)
        return True

    def on_tick(self):
        log.info("tick")
"""

WARNING = (
    "proxywasm: Housekeeping defines on_tick, but no tick period was set in on_vm_start or on_configure: Envoy calls "
    "on_tick only after self.set_tick_period(ms)"
)


@pytest.mark.parametrize("mode", ["native", "wasm"])
def test_an_on_tick_without_a_tick_period_is_named(load_filter: Callable[..., Host], mode: str) -> None:
    assert load_filter(TICKS, mode).log_messages() == [WARNING]
    ticking = load_filter(TICKS, mode, plugin_config='{"tick": true}')
    assert ticking.log_messages() == []
    ticking.advance_time(1000)
    assert ticking.log_messages() == ["tick"]
