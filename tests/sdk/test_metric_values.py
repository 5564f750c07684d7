"""Metric values Envoy keeps as unsigned 64-bit integers: a negative gauge value or histogram
sample raises ValueError instead of wrapping to 18446744073709551615 in Envoy's /stats, and a
float is refused natively as the runtime's C refuses it (both host modes)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from proxywasm_host import Host

SOURCE = """
import proxywasm
from proxywasm import Counter, Gauge, Histogram, HttpContext, PluginContext, log

COUNT = Counter("values_count")
LEVEL = Gauge("values_level")
SIZE = Histogram("values_size")

TRIES = {
    "gauge_set_negative": lambda: LEVEL.set(-1),
    "histogram_negative": lambda: SIZE.record(-3),
    "counter_float": lambda: COUNT.increment(1.5),
    "histogram_float": lambda: SIZE.record(12.7),
    "gauge_fine": lambda: (LEVEL.set(5), LEVEL.add(-2)),
}


class Stream(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        for name, attempt in TRIES.items():
            try:
                attempt()
                log.info(f"{name}: ok")
            except Exception as exc:
                log.info(f"{name}: {type(exc).__name__}: {exc}")


@proxywasm.register
class Plugin(PluginContext):
    http_context = Stream
"""


@pytest.mark.parametrize("mode", ["native", "wasm"])
def test_negative_and_float_values_are_refused(load_filter: Callable[..., Host], mode: str) -> None:
    host = load_filter(SOURCE, mode)
    host.request("GET", "/")
    assert host.log_messages() == [
        "gauge_set_negative: ValueError: gauge 'values_level' holds an unsigned number in Envoy: set(-1) would read "
        "as 18446744073709551615",
        "histogram_negative: ValueError: histogram 'values_size' records unsigned numbers in Envoy: record(-3)",
        "counter_float: TypeError: 'float' object cannot be interpreted as an integer",
        "histogram_float: TypeError: an int is required, not float",
        "gauge_fine: ok",
    ]
    assert host.metric("values_level") == 3
