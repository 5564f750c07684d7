"""fault_injection in the local host, natively and as the built module: aborts (HTTP and gRPC),
delays released by the tick on the host's clock, several held streams at once, a stream reset
while held, the opt-in fault headers, percentages, attempts, per-route faults, limits and
configuration errors. (Retries and route timeouts in real Envoy:
tests/filters/test_fault_injection_envoy.py.)"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]

from proxywasm_host import Action, ConfigureError, Host, Response, Route, echo_upstream
from proxywasm_host.pytest_plugin import HostFactory

FILTER = Path(__file__).parent / "filter.py"
NAME = "fault_injection"
HEADERS = {"abort": {"header_abort": True}, "delay": {"header_delay": True, "max_delay": "5s"}}


@pytest.fixture
def load(proxywasm_host: HostFactory, proxywasm_mode: str) -> Any:
    def make(config: dict[str, Any], **options: Any) -> Host:
        return proxywasm_host(FILTER, mode=proxywasm_mode, plugin_name=NAME, plugin_config=json.dumps(config),
                              **options)  # fmt: skip

    return make


def get(host: Host, path: str = "/", headers: Any = ()) -> Response:
    return host.http_stream().run("GET", path, list(headers), None, None, echo_upstream)


def clock_ms(host: Host) -> float:
    return host.envoy.monotonic_ns / 1e6


def test_an_abort_answers_with_the_status_and_the_upstream_never_sees_the_request(load: Any) -> None:
    host = load({"abort": {"http_status": 503}})
    response = get(host)
    assert (response.status, response.body, response.upstream_request) == (503, b"fault filter abort", None)
    assert response.details == "fault_filter_abort"
    assert host.metric("fault_injection_faults_total;fault=abort;route=unnamed") == 1


def test_a_grpc_request_gets_a_grpc_status(load: Any) -> None:
    host = load({"abort": {"http_status": 503, "grpc_status": 8, "body": "injected"}})
    response = get(host, headers=[("content-type", "application/grpc")])
    assert (response.status, response.header("grpc-status"), response.header("grpc-message")) == (200, "8", "injected")
    assert response.header("content-type") == "application/grpc"
    plain = get(host)  # the same fault on a plain HTTP request: the HTTP status
    assert plain.status == 503


def test_a_delay_holds_the_request_until_the_tick_after_its_due_time(load: Any) -> None:
    host = load({"delay": {"fixed_delay": "1.5s"}, "tick_interval": "10ms"})
    started = clock_ms(host)
    response = get(host)  # the host moves its clock to each timer (tick) while the stream waits
    waited = clock_ms(host) - started
    assert response.status == 200 and response.upstream_request is not None
    assert 1500 <= waited <= 1500 + 10 + 1, waited  # on the host's clock: due time plus at most one tick
    assert host.metric("fault_injection_faults_total;fault=delay;route=unnamed") == 1
    assert host.metric("fault_injection_active_delays") == 0


def test_a_delay_then_an_abort(load: Any) -> None:
    host = load({"delay": {"fixed_delay": "200ms"}, "abort": {"http_status": 500}})
    started = clock_ms(host)
    response = get(host)
    assert response.status == 500 and clock_ms(host) - started >= 200
    assert response.upstream_request is None


def test_several_held_streams_are_released_each_at_its_time_and_a_reset_one_is_forgotten(load: Any) -> None:
    host = load(HEADERS)
    streams = {ms: host.http_stream() for ms in (100, 300, 500, 700)}
    for ms, stream in streams.items():
        action = stream.request_headers([(":method", "GET"), (":path", "/"), (":authority", "a"),
                                         ("x-envoy-fault-delay-request", str(ms))], end_of_stream=True)  # fmt: skip
        assert action == Action.PAUSE
    assert host.metric("fault_injection_active_delays") == 4
    streams[300].complete()  # reset while held (the client went away): Envoy ends the stream
    assert host.metric("fault_injection_active_delays") == 3
    host.advance_time(150)
    assert [s.request_paused for s in streams.values()] == [False, False, True, True]
    host.advance_time(400)
    assert [s.request_paused for ms, s in streams.items() if ms != 300] == [False, False, True]
    host.advance_time(200)
    assert not streams[700].request_paused
    assert host.metric("fault_injection_active_delays") == 0
    # The tick stopped with nothing held, and a later delayed request works as before.
    assert get(host, headers=[("x-envoy-fault-delay-request", "50")]).status == 200
    assert not [m for m in host.log_messages() if "Traceback" in m]


def test_fault_headers_are_ignored_unless_enabled(load: Any) -> None:
    host = load({"delay": {"fixed_delay": "0s", "percentage": 0}})  # a plugin with neither header_* set
    response = get(host, headers=[("x-envoy-fault-abort-request", "500"), ("x-envoy-fault-delay-request", "900")])
    assert response.status == 200


def test_the_fault_headers(load: Any) -> None:
    host = load(HEADERS)
    assert get(host).status == 200  # no header, no fault
    assert get(host, headers=[("x-envoy-fault-abort-request", "418")]).status == 418
    grpc = get(host, headers=[("content-type", "application/grpc"), ("x-envoy-fault-abort-grpc-request", "14")])
    assert (grpc.status, grpc.header("grpc-status")) == (200, "14")
    assert get(host, headers=[("x-envoy-fault-abort-request", "nonsense")]).status == 200
    assert get(host, headers=[("x-envoy-fault-abort-request", "99")]).status == 200  # not an HTTP status
    assert host.metric("fault_injection_skipped_total;reason=bad_header") == 2
    started = clock_ms(host)
    assert get(host, headers=[("x-envoy-fault-delay-request", "60000")]).status == 200
    assert clock_ms(host) - started <= 5000 + 11  # capped at max_delay
    none = [("x-envoy-fault-abort-request", "503"), ("x-envoy-fault-abort-request-percentage", "0")]
    assert {get(host, headers=none).status for _ in range(20)} == {200}


def test_percentages_are_drawn_per_request(load: Any) -> None:
    host = load({"abort": {"http_status": 503, "percentage": 30}})
    aborted = sum(get(host).status == 503 for _ in range(1000))
    assert abs(aborted - 300) <= 4 * math.sqrt(1000 * 0.3 * 0.7), aborted  # binomial bound


def test_the_header_percentage_cannot_exceed_the_configured_one(load: Any) -> None:
    host = load({"abort": {"header_abort": True, "percentage": 0}})
    headers = [("x-envoy-fault-abort-request", "503"), ("x-envoy-fault-abort-request-percentage", "100")]
    assert {get(host, headers=headers).status for _ in range(20)} == {200}


def test_max_attempt_count_fails_only_the_first_attempts(load: Any) -> None:
    host = load({"abort": {"http_status": 503}, "max_attempt_count": 2})
    assert get(host).status == 503  # no header: the first attempt
    assert get(host, headers=[("x-envoy-attempt-count", "2")]).status == 503
    assert get(host, headers=[("x-envoy-attempt-count", "3")]).status == 200


def test_max_active_faults(load: Any) -> None:
    host = load({"delay": {"fixed_delay": "1s"}, "max_active_faults": 2})
    streams = [host.http_stream() for _ in range(3)]
    actions = [s.request_headers([(":method", "GET"), (":path", "/"), (":authority", "a")], True) for s in streams]
    assert actions == [Action.PAUSE, Action.PAUSE, Action.CONTINUE]
    assert host.metric("fault_injection_skipped_total;reason=max_active_faults") == 1


ROUTES = [
    Route("/flaky", "flaky", {NAME: {"abort": {"http_status": 502}}}),
    Route("/safe", "safe", {NAME: {"disabled": True}}),
    Route("/typo", "typo", {NAME: {"abort": {"http_stauts": 500}}}),
]


def test_routes_set_their_own_faults(load: Any) -> None:
    host = load({"abort": {"http_status": 503}}, routes=ROUTES)
    assert get(host, "/flaky").status == 502
    assert get(host, "/safe").status == 200
    assert get(host, "/other").status == 503
    assert host.metric("fault_injection_faults_total;fault=abort;route=flaky") == 1


def test_a_route_metadata_mistake_injects_nothing_there_and_is_logged_once(load: Any) -> None:
    host = load({"abort": {"http_status": 503}}, routes=ROUTES)
    assert [get(host, "/typo").status for _ in range(2)] == [200, 200]
    assert [m for m in host.log_messages() if "metadata" in m] == [
        "fault_injection: route typo metadata.abort.http_stauts: unknown key (did you mean 'http_status'?); "
        "injecting no faults on this route"
    ]


@pytest.mark.parametrize(
    ("config", "line"),
    [
        ({"abort": {"http_status": 99}}, "abort.http_status: must be at least 200, not 99"),
        ({"abort": {"grpc_status": 17}}, "abort.grpc_status: must be at most 16, not 17"),
        ({"abort": {"header_abort": True, "http_status": 500}},
         "abort: give http_status/grpc_status or header_abort, not both"),
        ({"abort": {"percentage": 101}}, "abort.percentage: must be at most 100, not 101.0"),
        ({"delay": {}}, "delay.fixed_delay: missing: a duration is required (or header_delay: true)"),
        ({"delay": {"fixed_delay": "-1s"}},
         "delay.fixed_delay: must be a duration such as \"1s\" or \"250ms\", not '-1s'"),
        ({"delay": {"fixed_delay": "1s", "header_delay": True}}, "delay: give fixed_delay or header_delay, not both"),
        ({"delay": {"fixed_dealy": "1s"}}, "delay.fixed_dealy: unknown key (did you mean 'fixed_delay'?)"),
        ({"abort": "503"}, "abort: must be an object, not the string '503'"),
    ],
)  # fmt: skip
def test_configuration_errors_name_the_key(load: Any, config: dict[str, Any], line: str) -> None:
    with pytest.raises(ConfigureError) as info:
        load(config)
    assert f"proxywasm: configuration rejected: {line}" in str(info.value)


def readme_blocks(language: str) -> list[str]:
    readme = (Path(__file__).parent / "README.md").read_text()
    return [block.split("```", 1)[0] for block in readme.split(f"```{language}\n")[1:]]


def test_the_readme_configurations_are_accepted(load: Any) -> None:
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
        host = load(config, routes=routes)
        for route in routes:
            get(host, route.prefix)
        assert [m for m in host.log_messages() if "fault_injection:" in m] == []
