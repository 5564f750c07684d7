"""telemetry in the local host, natively and as the built module: the labelled counter and the
duration histogram, bounded label values, W3C traceparent kept or started, the access-log line
with x-request-id, per-route switches and configuration errors. (Envoy's /stats/prometheus:
tests/filters/test_telemetry_envoy.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]

from proxywasm_host import ConfigureError, Host, Request, Response, Route
from proxywasm_host.pytest_plugin import HostFactory

FILTER = Path(__file__).parent / "filter.py"
NAME = "telemetry"
ROUTES = [
    Route("/api", "api"),
    Route("/health", "health", {NAME: {"metrics": False, "log": False}}),
    Route("/quiet", "quiet", {NAME: {"log": False}}),
    Route("/opaque", "opaque", {NAME: {"disabled": True}}),
    Route("/typo", "typo", {NAME: {"lgo": False}}),
]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
LINE = re.compile(
    r"telemetry: (?P<method>\S+) (?P<path>\S+) (?P<status>\S+) (?P<ms>\d+)ms route=(?P<route>\S+) "
    r"request_id=(?P<request_id>\S+) trace_id=(?P<trace_id>\S+) span_id=(?P<span_id>\S+) parent_id=(?P<parent_id>\S+)$"
)


@pytest.fixture
def host(proxywasm_host: HostFactory, proxywasm_mode: str) -> Host:
    return proxywasm_host(FILTER, mode=proxywasm_mode, plugin_name=NAME, routes=ROUTES)


def lines(host: Host) -> list[dict[str, str]]:
    return [m.groupdict() for m in (LINE.match(text) for text in host.log_messages()) if m]


def upstream_status(status: int) -> Any:
    def answer(request: Request) -> Response:
        return Response(status, [("content-type", "text/plain")], b"x")

    return answer


def test_requests_are_counted_by_method_route_and_status_class(host: Host) -> None:
    host.request("GET", "/api/users")
    host.request("POST", "/api/users", body="{}")
    host.request("GET", "/api/missing", upstream=upstream_status(404))
    host.request("GET", "/other", upstream=upstream_status(503))
    host.request("PROPFIND", "/api/pot")  # not a standard method: counted as OTHER
    assert host.metric("telemetry_requests_total;method=GET;route=api;status_class=2xx") == 1
    assert host.metric("telemetry_requests_total;method=POST;route=api;status_class=2xx") == 1
    assert host.metric("telemetry_requests_total;method=GET;route=api;status_class=4xx") == 1
    assert host.metric("telemetry_requests_total;method=GET;route=unnamed;status_class=5xx") == 1
    assert host.metric("telemetry_requests_total;method=OTHER;route=api;status_class=2xx") == 1
    assert host.metric("telemetry_requests_total;method=PROPFIND;route=api;status_class=2xx") is None


def test_the_duration_histogram_in_milliseconds(host: Host) -> None:
    def slow(request: Request) -> Response:
        host.advance_time(250)  # the upstream takes 250 ms on the host's clock
        return Response(200, [], b"")

    host.request("GET", "/api/slow", upstream=slow)
    host.request("GET", "/api/fast")
    recorded = host.metric("telemetry_request_duration_ms;route=api")
    assert isinstance(recorded, list) and len(recorded) == 2
    assert 250 <= recorded[0] <= 260 and recorded[1] <= 10, recorded


def test_a_valid_traceparent_is_kept_with_a_new_span_id(host: Host) -> None:
    incoming = f"00-{TRACE_ID}-{PARENT_ID}-01"
    response = host.request("GET", "/api", headers=[("traceparent", incoming), ("tracestate", "vendor=1")])
    assert response.upstream_request is not None
    sent = response.upstream_request.header("traceparent") or ""
    version, trace_id, span_id, flags = sent.split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert re.fullmatch("[0-9a-f]{16}", span_id) and span_id != PARENT_ID
    assert response.upstream_request.header("tracestate") == "vendor=1"
    (line,) = lines(host)
    assert (line["trace_id"], line["span_id"], line["parent_id"]) == (TRACE_ID, span_id, PARENT_ID)


def test_a_later_version_is_read_and_sent_on_as_version_00(host: Host) -> None:
    response = host.request("GET", "/api", headers=[("traceparent", f"cc-{TRACE_ID}-{PARENT_ID}-00-more")])
    assert response.upstream_request is not None
    sent = response.upstream_request.header("traceparent") or ""
    assert sent.startswith(f"00-{TRACE_ID}-") and sent.endswith("-00")


@pytest.mark.parametrize(
    "bad",
    [
        None,
        f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",  # upper case
        f"00-{'0' * 32}-{PARENT_ID}-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{TRACE_ID}-{PARENT_ID}-01",  # version ff
        f"00-{TRACE_ID}-{PARENT_ID}-01-extra",  # version 00 has exactly four fields
        f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01",  # short
        f"00_{TRACE_ID}_{PARENT_ID}_01",
    ],
)
def test_an_invalid_or_missing_traceparent_starts_a_new_trace(host: Host, bad: str | None) -> None:
    headers = [("tracestate", "vendor=1")] + ([("traceparent", bad)] if bad else [])
    response = host.request("GET", "/api", headers=headers)
    assert response.upstream_request is not None
    sent = response.upstream_request.header("traceparent") or ""
    assert re.fullmatch("00-[0-9a-f]{32}-[0-9a-f]{16}-01", sent), sent
    assert TRACE_ID not in sent
    assert response.upstream_request.header("tracestate") is None  # it belonged to the unreadable context
    (line,) = lines(host)
    assert line["parent_id"] == "-" and sent == f"00-{line['trace_id']}-{line['span_id']}-01"


def test_new_traces_differ_per_request_and_per_worker(proxywasm_host: HostFactory, proxywasm_mode: str) -> None:
    host = proxywasm_host(FILTER, mode=proxywasm_mode, plugin_name=NAME, workers=2)
    ids = set()
    for _ in range(6):
        request = host.request("GET", "/").upstream_request
        assert request is not None
        ids.add(request.header("traceparent"))
    assert len(ids) == 6


def test_the_access_log_line(host: Host) -> None:
    host.request("GET", "/api/users?token=secret", headers=[("x-request-id", "req-1")], upstream=upstream_status(201))
    (line,) = lines(host)
    assert {k: line[k] for k in ("method", "path", "status", "route", "request_id")} == {
        "method": "GET", "path": "/api/users", "status": "201", "route": "api", "request_id": "req-1",
    }  # fmt: skip
    host.clear_logs()
    upstream = host.request("GET", "/api").upstream_request  # Envoy makes an x-request-id (a UUID) itself
    assert upstream is not None
    assert lines(host)[0]["request_id"] == upstream.header("x-request-id")


def test_log_query_keeps_the_query(proxywasm_host: HostFactory, proxywasm_mode: str) -> None:
    host = proxywasm_host(FILTER, mode=proxywasm_mode, plugin_config={"log_query": True, "sampled": False})
    response = host.request("GET", "/a?b=c")
    assert lines(host)[0]["path"] == "/a?b=c"
    assert response.upstream_request is not None
    assert (response.upstream_request.header("traceparent") or "").endswith("-00")  # sampled: false


def test_routes_switch_metrics_logs_and_tracing_off(host: Host) -> None:
    host.request("GET", "/health")
    assert host.metric("telemetry_requests_total;method=GET;route=health;status_class=2xx") is None
    host.request("GET", "/quiet")
    assert host.metric("telemetry_requests_total;method=GET;route=quiet;status_class=2xx") == 1
    opaque = host.request("GET", "/opaque").upstream_request
    assert opaque is not None and opaque.header("traceparent") is None
    assert lines(host) == []


def test_a_route_metadata_mistake_is_logged_once(host: Host) -> None:
    host.request("GET", "/typo")
    host.request("GET", "/typo")
    assert [m for m in host.log_messages() if "metadata" in m] == [
        "telemetry: route typo metadata.lgo: unknown key (did you mean 'log'?); "
        "using the plugin's settings on this route"
    ]
    assert len(lines(host)) == 2


@pytest.mark.parametrize(
    ("config", "line"),
    [
        ({"log": "yes"}, "log: must be true or false, not the string 'yes'"),
        ({"unnamed_route": ""}, "unnamed_route: must not be empty"),
        ({"sample": True}, "sample: unknown key (did you mean 'sampled'?)"),
    ],
)
def test_configuration_errors_name_the_key(
    proxywasm_host: HostFactory, proxywasm_mode: str, config: dict[str, Any], line: str
) -> None:
    with pytest.raises(ConfigureError) as info:
        proxywasm_host(FILTER, mode=proxywasm_mode, plugin_config=json.dumps(config))
    assert f"proxywasm: configuration rejected: {line}" in str(info.value)


def readme_blocks(language: str) -> list[str]:
    readme = (Path(__file__).parent / "README.md").read_text()
    return [block.split("```", 1)[0] for block in readme.split(f"```{language}\n")[1:]]


def test_the_readme_configurations_are_accepted(proxywasm_host: HostFactory, proxywasm_mode: str) -> None:
    configs = [json.loads(block) for block in readme_blocks("json")]
    routes: list[Route] = []
    for block in readme_blocks("yaml"):
        data = yaml.safe_load(block)
        if isinstance(data, dict) and data.get("kind") in ("WasmPlugin", "TrafficExtension"):
            configs.append(data["spec"].get("wasm", data["spec"])["pluginConfig"])
        elif isinstance(data, dict) and "routes" in data:
            for i, route in enumerate(data["routes"]):
                metadata = route.get("metadata", {}).get("filter_metadata", {})
                routes.append(Route(route["match"]["prefix"], f"readme-{i}", metadata))
    assert len(configs) >= 3 and routes, "README.md lost its examples"
    for config in configs:
        host = proxywasm_host(FILTER, mode=proxywasm_mode, plugin_name=NAME, plugin_config=config, routes=routes)
        for route in routes:
            host.request("GET", route.prefix)
        assert [m for m in host.log_messages() if "metadata" in m] == []


def test_ids_are_never_all_zeros(monkeypatch: pytest.MonkeyPatch) -> None:
    # W3C forbids an all-zero trace or span id: an all-zero draw is drawn again.
    import importlib.util

    spec = importlib.util.spec_from_file_location("telemetry_filter", FILTER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    draws = [bytes(8), b"\4" * 8, bytes(16), bytes(16), b"\5" * 16]
    monkeypatch.setattr(module.os, "urandom", lambda n: draws.pop(0)[:n])
    assert (module.random_hex(8), module.random_hex(16)) == ("04" * 8, "05" * 16)
    assert not draws
