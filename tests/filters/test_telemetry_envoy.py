"""filters/telemetry in real Envoy, from its own envoy.yaml: the labelled series and the duration
histogram's buckets in /stats/prometheus, traceparent propagated and started, the access-log line
with Envoy's x-request-id."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from filters_support import filter_config, http, wait_until, wasm_errors

from proxywasm_build.envoy import Envoy
from proxywasm_build.upstream import Response, UpstreamServer

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
# (method, path, headers); the upstream answers /api/missing 404, /api/broken 503, /api/slow after 0.3 s
REQUESTS = [
    ("GET", "/api/users", {}),
    ("GET", "/api/users", {}),
    ("GET", "/api/slow", {}),
    ("POST", "/api/users", {}),
    ("GET", "/api/missing", {}),
    ("GET", "/api/broken", {}),
    ("PROPFIND", "/api/pot", {}),  # WebDAV: Envoy passes it (an unknown token gets a 400 from Envoy's codec)
    ("GET", "/health", {}),
    ("GET", "/health", {}),
    ("GET", "/teapot", {}),
    ("GET", "/index.html", {"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}),
]


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    routes = {"/api/missing": Response(404), "/api/broken": Response(503), "/api/slow": Response(200, delay_s=0.3)}
    with UpstreamServer(routes=routes) as server:
        yield server


@pytest.fixture(scope="module")
def envoy(upstream: UpstreamServer) -> Iterator[Envoy]:
    with Envoy(filter_config("telemetry", {"backend": upstream.port})) as proxy:
        for method, path, headers in REQUESTS:
            http(proxy, path, method=method, headers=headers)
        yield proxy


def prometheus(envoy: Envoy) -> dict[str, float]:
    _, text = envoy.admin_get("/stats/prometheus")
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("telemetry_")}  # fmt: skip


def test_requests_by_method_route_and_status_class(envoy: Envoy) -> None:
    expected = {
        'telemetry_requests_total{method="GET",route="api",status_class="2xx"}': 3,
        'telemetry_requests_total{method="POST",route="api",status_class="2xx"}': 1,
        'telemetry_requests_total{method="GET",route="api",status_class="4xx"}': 1,
        'telemetry_requests_total{method="GET",route="api",status_class="5xx"}': 1,
        'telemetry_requests_total{method="OTHER",route="api",status_class="5xx"}': 1,  # the upstream: 501
        'telemetry_requests_total{method="GET",route="teapot",status_class="4xx"}': 1,
        'telemetry_requests_total{method="GET",route="web",status_class="2xx"}': 1,
    }  # /health: metrics off by its route metadata

    def series() -> dict[str, float]:
        return {k: v for k, v in prometheus(envoy).items() if k.startswith("telemetry_requests_total{")}

    # The filter counts in on_log, which Envoy may run just after the client has read the response.
    try:
        wait_until(lambda: series() == expected, timeout_s=5, what="the counters of every request")
    except AssertionError:
        pass  # the comparison below shows the difference
    assert series() == expected


def test_the_duration_histogram_buckets_are_milliseconds(envoy: Envoy) -> None:
    def api_count() -> dict[str, float] | None:
        values = prometheus(envoy)
        return values if values.get('telemetry_request_duration_ms_count{route="api"}') == 7 else None

    values = wait_until(api_count, timeout_s=15, what="the histogram after Envoy's stats flush (1 s)")
    bucket = re.compile(r'telemetry_request_duration_ms_bucket\{route="api",le="([^"]+)"\}')
    buckets = {float(m[1]): v for k, v in values.items() if (m := bucket.fullmatch(k))}
    assert buckets[float("inf")] == 7
    bounds = sorted(buckets)
    assert [buckets[b] for b in bounds] == sorted(buckets[b] for b in bounds)  # cumulative
    # /api/slow took at least 300 ms: it is in no bucket up to 250 (ms; in seconds it would be in all).
    assert buckets[250.0] <= 6 and buckets[5000.0] == 7
    assert values['telemetry_request_duration_ms_sum{route="api"}'] >= 300
    assert 'telemetry_request_duration_ms_count{route="health"}' not in values


def test_traceparent_is_propagated_or_started(envoy: Envoy, upstream: UpstreamServer) -> None:
    seen = {r.path: r.header("traceparent") or "" for r in upstream.requests}
    kept = seen["/index.html"]
    assert re.fullmatch(f"00-{TRACE_ID}-[0-9a-f]{{16}}-01", kept) and "00f067aa0ba902b7" not in kept
    started = seen["/api/users"]
    assert re.fullmatch("00-[0-9a-f]{32}-[0-9a-f]{16}-01", started) and TRACE_ID not in started


def test_the_access_log_line_carries_envoys_request_id(envoy: Envoy, upstream: UpstreamServer) -> None:
    request = next(r for r in upstream.requests if r.path == "/index.html")
    request_id = request.header("x-request-id")
    assert request_id  # Envoy made it
    line = envoy.wait_for_log(r"telemetry: GET /index\.html 200 \d+ms route=web request_id=(\S+) trace_id=(\S+) "
                              r"span_id=(\S+) parent_id=00f067aa0ba902b7")  # fmt: skip
    assert line[1] == request_id and line[2] == TRACE_ID
    assert (request.header("traceparent") or "").split("-")[2] == line[3]
    envoy.wait_for_log(r"telemetry: GET /teapot 418 ")
    assert "telemetry: GET /health" not in envoy.logs()  # log off by its route metadata
    assert wasm_errors(envoy) == []
