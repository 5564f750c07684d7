"""Custom metrics defined by the filter, as they appear in Envoy's admin /stats."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from envoy_support import as_envoy, fetch

from proxywasm_build.envoy import Envoy
from proxywasm_build.upstream import UpstreamServer


@pytest.fixture(scope="module")
def env(as_modules: dict[str, Path]) -> Iterator[tuple[Envoy, UpstreamServer]]:
    with as_envoy(as_modules["metrics"], name="p_metrics", root_id="metrics") as pair:
        yield pair


def test_counter_and_gauge(env: tuple[Envoy, UpstreamServer]) -> None:
    envoy, _ = env
    before = envoy.stats()
    for _ in range(3):
        assert fetch(envoy.port(), "/m").status == 200
    assert fetch(envoy.port(), "/abcdef", headers={"x-count": "5"}).status == 200
    after = envoy.stats()
    # Metric names get the "wasmcustom." prefix in /stats.
    assert after["wasmcustom.as_requests_total"] - before.get("wasmcustom.as_requests_total", 0) == 4
    assert after["wasmcustom.as_units_total"] - before.get("wasmcustom.as_units_total", 0) == 5
    assert after["wasmcustom.as_last_path_len"] == len("/abcdef")
    assert "as_requests_total" not in after


def test_metric_names_in_text_and_prometheus(env: tuple[Envoy, UpstreamServer]) -> None:
    envoy, _ = env
    fetch(envoy.port(), "/")
    _, text = envoy.admin_get("/stats")
    assert "wasmcustom.as_requests_total: " in text
    assert "wasmcustom.as_path_len: " in text  # histogram
    _, prom = envoy.admin_get("/stats/prometheus")
    # Prometheus output drops the prefix (and adds no envoy_ prefix) for custom wasm metrics.
    assert "# TYPE as_requests_total counter" in prom
    assert "# TYPE as_last_path_len gauge" in prom
    assert "# TYPE as_path_len histogram" in prom
    assert "wasmcustom" not in prom


def test_plugin_stats(env: tuple[Envoy, UpstreamServer]) -> None:
    envoy, _ = env
    stats = envoy.stats()
    assert stats["wasm.p_metrics.vm_reload"] == 0
    # One VM per worker plus the base VM on the main thread.
    assert stats["wasm.envoy.wasm.runtime.v8.active"] >= 2
