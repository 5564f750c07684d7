"""Metrics with labels: encoded into Envoy stat names, and the stats_tags `proxywasm build` emits
turn them into real Prometheus labels in Envoy 1.40's /stats/prometheus."""

from __future__ import annotations

import re
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]
from filters import METRICS

from proxywasm import Counter
from proxywasm.abi import LogLevel
from proxywasm.metrics import stats_tags
from proxywasm_build.build import BuildResult, build
from proxywasm_build.cli import main
from proxywasm_build.envoy import Envoy, WasmPlugin, http_bootstrap
from proxywasm_build.upstream import UpstreamServer
from proxywasm_host import Host


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BuildResult]:
    source = tmp_path_factory.mktemp("metrics") / "filter.py"
    source.write_text(textwrap.dedent(METRICS))
    result = build(source)
    wasm = source.with_suffix(".wasm")
    wasm.write_bytes(result.module)
    return wasm, result


def test_build_reports_the_labels(built: tuple[Path, BuildResult]) -> None:
    _, result = built
    assert result.labelled_metrics == [
        ("requests_total", ("route", "code")),
        ("inflight_requests", ("route",)),
        ("upstream_ms", ("route",)),
    ]
    assert result.stats_tags == [
        {"tag_name": "route", "regex": "(;route=([^;]*))"},
        {"tag_name": "code", "regex": "(;code=([^;]*))"},
    ]
    assert not any("proxywasm-build" in line for line in result.logs)


def test_cli_writes_the_stats_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "filter.py"
    source.write_text(textwrap.dedent(METRICS))
    assert main(["build", str(source), "-o", str(tmp_path / "out.wasm")]) == 0
    written = tmp_path / "out.stats_config.yaml"
    assert f"wrote {written}" in capsys.readouterr().out
    assert yaml.safe_load(written.read_text()) == {"stats_config": {"stats_tags": stats_tags(["route", "code"])}}


def test_label_values_are_sanitised_and_checked() -> None:
    counter = Counter("c_total", labels=("a", "b"))
    assert counter.labels("x;y", "new\nline").name == "c_total;a=x_y;b=new_line"
    assert counter.labels(b="2", a=1).name == "c_total;a=1;b=2"
    assert counter.labels(1, 2) is counter.labels(a="1", b="2")
    with pytest.raises(TypeError):
        counter.labels("only one")
    # A misspelt label is named as such (not only as the missing one it also makes).
    with pytest.raises(TypeError, match=r"^labels\(\): metric 'c_total' has no label 'c' \(its labels: 'a', 'b'\)$"):
        counter.labels(a="1", c="2")
    with pytest.raises(TypeError, match=r"needs a value for 'b'"):
        counter.labels(a="1")
    with pytest.raises(ValueError):
        Counter("bad;name")
    with pytest.raises(ValueError):
        Counter("ok", labels=("not-a-label",))


def test_host_counts_per_series(built: tuple[Path, BuildResult]) -> None:
    host = Host.load(built[0])
    assert host.metric("requests_total;route=declared;code=200") == 0
    assert host.metric("unused_total") == 0
    host.request("GET", "/api/x")
    host.request("GET", "/api/y")
    host.request("GET", "/web")
    assert host.metric("requests_total;route=api;code=200") == 2
    assert host.metric("requests_total;route=web;code=200") == 1
    assert host.metric("inflight_requests;route=api") == 0
    assert host.metric("upstream_ms;route=web") == [7]
    assert host.metric("plain_total") == 0


@pytest.fixture(scope="module")
def envoy(built: tuple[Path, BuildResult]) -> Iterator[Envoy]:
    wasm, result = built
    with UpstreamServer() as upstream:
        config = http_bootstrap(
            upstream_port=upstream.port, plugins=[WasmPlugin(wasm, name="metrics")], stats_tags=result.stats_tags
        )
        with Envoy(config) as running:
            yield running


def prometheus(envoy: Envoy, *families: str) -> list[str]:
    _, text = envoy.admin_get("/stats/prometheus")

    def family(line: str) -> str:
        return line.split()[2] if line.startswith("# TYPE ") else line.split("{")[0]

    return [line for line in text.splitlines() if family(line) in families]


def test_envoy_defined_metrics_show_zero_before_use(envoy: Envoy) -> None:
    # Each family's TYPE line, then its series; the series defined in on_configure shows 0.
    assert prometheus(envoy, "requests_total", "unused_total", "plain_total") == [
        "# TYPE plain_total counter",
        "plain_total{} 0",
        "# TYPE requests_total counter",
        'requests_total{route="declared",code="200"} 0',
        "# TYPE unused_total counter",
        "unused_total{} 0",
    ]


def test_envoy_prometheus_labels(envoy: Envoy, build_filter: Callable[[str], Path]) -> None:
    for path in ("/api/x", "/api/y", "/web", "/odd"):
        with urllib.request.urlopen(envoy.url + path, timeout=10) as response:
            assert response.status == 200
    lines = prometheus(envoy, "requests_total", "inflight_requests")
    assert lines == [
        "# TYPE requests_total counter",
        'requests_total{route="a_b\\"c",code="x_y"} 1',
        'requests_total{route="api",code="200"} 2',
        'requests_total{route="declared",code="200"} 0',
        'requests_total{route="odd",code="200"} 1',
        'requests_total{route="web",code="200"} 1',
        "# TYPE inflight_requests gauge",
        'inflight_requests{route="api"} 0',
        'inflight_requests{route="odd"} 0',
        'inflight_requests{route="web"} 0',
    ]
    # Histograms reach the admin output at Envoy's next stats flush (every 5 s by default).
    deadline = time.monotonic() + 20
    while 'upstream_ms_count{route="api"} 2' not in prometheus(envoy, "upstream_ms_count"):
        assert time.monotonic() < deadline, prometheus(envoy, "upstream_ms_count")
        time.sleep(0.2)
    assert 'upstream_ms_bucket{route="web",le="10"} 1' in prometheus(envoy, "upstream_ms_bucket")
    # /stats keeps the encoded names.
    assert envoy.stat("wasmcustom.requests_total;route=api;code=200") == 2


def test_proxywasm_run_serves_the_labels(tmp_path: Path) -> None:
    from proxywasm_build.envoy import free_port
    from proxywasm_build.run import Runner, RunOptions

    source = tmp_path / "filter.py"
    source.write_text(textwrap.dedent(METRICS))
    said: list[str] = []
    (tmp_path / "run").mkdir()
    runner = Runner(RunOptions(source=source, port=free_port(), workdir=tmp_path / "run"), say=said.append)
    try:
        runner.start()
        assert runner.envoy is not None
        with urllib.request.urlopen(runner.envoy.url + "/api", timeout=10) as response:
            assert response.status == 200
        assert 'requests_total{route="api",code="200"} 1' in prometheus(runner.envoy, "requests_total")
    finally:
        runner.stop()


LATE = """
import proxywasm
from proxywasm import Counter, HttpContext, PluginContext

requests = Counter("requests_total", labels=("route",))


class Count(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        self.plugin.by_tenant.labels(tenant="acme").increment()
        self.plugin.by_route.labels(route="api").increment()
        return proxywasm.Action.CONTINUE


@proxywasm.register
class Plugin(PluginContext):
    http_context = Count

    def on_vm_start(self, vm_configuration):
        self.by_tenant = Counter("tenant_requests_total", labels=("tenant",))
        return True

    def on_configure(self, configuration):
        self.by_route = Counter("route_requests_total", labels=("route",))
        return True
"""
LATE_WARNING = (
    "proxywasm: metric 'tenant_requests_total' (created at {file}:20) has labels that no metric created at "
    "module level has (tenant): proxywasm build saw none of them, so its stats_config has no stats_tags for them and "
    "/stats/prometheus shows them inside the metric name (tenant_requests_total_tenant_VALUE{{}}). Create "
    "labelled metrics at module level, or add stats_tags for these labels to the bootstrap yourself"
)


def test_a_labelled_metric_the_build_did_not_see_is_warned_about(
    tmp_path: Path, proxywasm_host: Callable[..., Host], proxywasm_mode: str
) -> None:
    # Created in on_vm_start with a label no module-level metric has: no stats_tags for it, so the
    # SDK says so (once) with the line; created later with a label the build saw: nothing to say.
    source = tmp_path / "filter.py"
    source.write_text(LATE)
    host = proxywasm_host(source, mode=proxywasm_mode)
    host.request("GET", "/")
    host.request("GET", "/")
    expected = LATE_WARNING.format(file=source if proxywasm_mode == "native" else "filter.py")
    assert [(level, message) for level, message in host.logs if "metric" in message] == [(LogLevel.WARN, expected)]
    assert host.metric("tenant_requests_total;tenant=acme") == 2


def test_envoy_shows_what_the_warning_says(tmp_path: Path) -> None:
    source = tmp_path / "filter.py"
    source.write_text(LATE)
    result = build(source)
    wasm = tmp_path / "filter.wasm"
    wasm.write_bytes(result.module)
    assert result.stats_tags == stats_tags(["route"])
    with UpstreamServer() as upstream:
        config = http_bootstrap(upstream_port=upstream.port, plugins=[WasmPlugin(wasm)], stats_tags=result.stats_tags)
        with Envoy(config) as envoy:
            with urllib.request.urlopen(envoy.url + "/", timeout=10) as response:
                assert response.status == 200
            envoy.wait_for_log(re.escape(LATE_WARNING.format(file="filter.py")))
            assert prometheus(envoy, "tenant_requests_total_tenant_acme", "route_requests_total") == [
                "# TYPE route_requests_total counter",
                'route_requests_total{route="api"} 1',
                "# TYPE tenant_requests_total_tenant_acme counter",
                "tenant_requests_total_tenant_acme{} 1",
            ]
