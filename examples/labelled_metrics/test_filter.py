"""labelled_metrics' test: a counter, a gauge and a histogram with Prometheus labels.

The SDK encodes labels in the stat name (``http_responses_total;route=api;status_class=2xx``):
that name is what ``host.metric`` reads. A histogram reads as the list of values it recorded.
"""

from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm_host import Host


@pytest.fixture
def host(proxywasm_host: Callable[..., Host], proxywasm_mode: str) -> Host:
    return proxywasm_host(Path(__file__).parent, mode=proxywasm_mode)


def test_series_exist_before_any_request(host: Host) -> None:
    assert host.metric("http_responses_total;route=api;status_class=2xx") == 0
    assert host.metric("http_responses_total;route=other;status_class=5xx") == 0
    assert host.metric("http_requests_in_flight;route=static") == 0


def test_counts_responses_by_route_and_status_class(host: Host) -> None:
    for path in ("/api/users", "/api/items?x=1", "/static/app.js", "/nope"):
        assert host.request("GET", path).status == 200
    assert host.request("GET", "/api/broken", upstream=lambda _: 503).status == 503
    assert host.metric("http_responses_total;route=api;status_class=2xx") == 2
    assert host.metric("http_responses_total;route=api;status_class=5xx") == 1
    assert host.metric("http_responses_total;route=static;status_class=2xx") == 1
    assert host.metric("http_responses_total;route=other;status_class=2xx") == 1
    assert host.metric("http_requests_in_flight;route=api") == 0


def test_in_flight_and_upstream_time(host: Host) -> None:
    stream = host.http_stream()  # driven step by step: the test plays client and upstream
    stream.request_headers([(":method", "GET"), (":path", "/api/slow"), (":authority", "x")], end_of_stream=True)
    assert host.metric("http_requests_in_flight;route=api") == 1
    host.advance_time(250)  # the upstream takes 250 ms
    stream.response_headers([(":status", "200")], end_of_stream=True)
    assert host.metric("http_upstream_milliseconds;route=api") == [250]
    assert host.metric("http_requests_in_flight;route=api") == 0  # on_done ran
