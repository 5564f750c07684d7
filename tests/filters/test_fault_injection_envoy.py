"""filters/fault_injection in real Envoy, from its own envoy.yaml: a caller's proxy (listener "main",
with retry policies and timeouts) in front of a service's proxy (listener "service", with the
filter). Envoy's retry policy retries injected aborts; a route timeout fires on an injected delay;
several delays at once; a stream reset while delayed; gRPC aborts; percentages."""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from filters_support import filter_config, http, wait_until, wasm_errors

from proxywasm_build.envoy import Envoy
from proxywasm_build.upstream import UpstreamServer


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture(scope="module")
def envoy(upstream: UpstreamServer) -> Iterator[Envoy]:
    with Envoy(filter_config("fault_injection", {"backend": upstream.port}), concurrency=2) as proxy:
        yield proxy


def stat(envoy: Envoy, name: str) -> int:
    return envoy.stat(name) or 0


def active(envoy: Envoy) -> int:
    """Requests the filter holds now, over all workers (a gauge)."""
    value = envoy.stat("wasmcustom.fault_injection_active_delays")
    assert value is not None, "the gauge is missing"
    return value


def faults(envoy: Envoy, fault: str, route: str) -> int:
    return stat(envoy, f"wasmcustom.fault_injection_faults_total;fault={fault};route={route}")


def test_the_retry_policy_retries_injected_aborts_until_an_attempt_succeeds(
    envoy: Envoy, upstream: UpstreamServer
) -> None:
    # The service's /flaky route aborts attempts 1 and 2 (max_attempt_count); the caller's route
    # retries 5xx up to 3 times. Only a retried request can reach the upstream, on attempt 3.
    upstream.clear()
    retries, aborts = stat(envoy, "cluster.service.upstream_rq_retry"), faults(envoy, "abort", "flaky")
    reply = http(envoy, "/flaky/order")
    assert reply.status == 200
    (seen,) = upstream.requests
    assert seen.header("x-envoy-attempt-count") == "3"
    assert stat(envoy, "cluster.service.upstream_rq_retry") - retries == 2
    assert faults(envoy, "abort", "flaky") - aborts == 2


def test_retries_follow_the_policy_and_give_up(envoy: Envoy, upstream: UpstreamServer) -> None:
    # The caller's default route retries 503 (twice) but not 500: the fault header rides on every attempt.
    upstream.clear()
    aborts = faults(envoy, "abort", "default")
    retried = http(envoy, "/", headers={"x-envoy-fault-abort-request": "503"})
    assert (retried.status, retried.body) == (503, b"fault filter abort")
    assert faults(envoy, "abort", "default") - aborts == 3  # the first attempt and two retries
    not_retried = http(envoy, "/", headers={"x-envoy-fault-abort-request": "500"})
    assert not_retried.status == 500
    assert faults(envoy, "abort", "default") - aborts == 4
    assert upstream.requests == []


def test_a_route_timeout_fires_on_an_injected_delay(envoy: Envoy, upstream: UpstreamServer) -> None:
    # The service holds /slow for 2 s; the caller's /slow route times out after 0.5 s.
    upstream.clear()
    timeouts = stat(envoy, "cluster.service.upstream_rq_timeout")
    reply = http(envoy, "/slow/report")
    assert (reply.status, reply.body) == (504, b"upstream request timeout")
    assert stat(envoy, "cluster.service.upstream_rq_timeout") - timeouts == 1
    # The caller reset its request; the held stream is forgotten, never sent on.
    wait_until(lambda: active(envoy) == 0 or None, what="the held stream released",
               timeout_s=5)  # fmt: skip
    time.sleep(2.0)  # past the delay's due time: a stream resumed after its reset would reach the upstream now
    assert upstream.requests == []
    assert wasm_errors(envoy) == []


def test_several_delays_at_once_and_a_client_that_leaves_while_delayed(envoy: Envoy, upstream: UpstreamServer) -> None:
    upstream.clear()
    # A client that sends a delayed request and hangs up at once: its stream is reset while held.
    with socket.create_connection(("127.0.0.1", envoy.port("service"))) as sock:
        sock.sendall(b"GET /gone HTTP/1.1\r\nhost: x\r\nx-envoy-fault-delay-request: 1000\r\n\r\n")
        wait_until(lambda: active(envoy) >= 1 or None, what="the request held")
    # Eight delayed requests in flight together, on both workers, while the reset one is dropped.
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], active(envoy))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            replies = list(pool.map(
                lambda i: http(envoy, f"/delayed/{i}", headers={"x-envoy-fault-delay-request": "800"},
                               listener="service"), range(8)))  # fmt: skip
    finally:
        done.set()
        watcher.join()
    assert [r.status for r in replies] == [200] * 8
    assert peak[0] >= 2, "the delays did not overlap"
    assert sorted(r.path for r in upstream.requests) == sorted(f"/delayed/{i}" for i in range(8))  # not /gone
    assert active(envoy) == 0
    # Later delayed requests still work.
    started = time.monotonic()
    assert http(envoy, "/after", headers={"x-envoy-fault-delay-request": "100"}, listener="service").status == 200
    assert time.monotonic() - started >= 0.1  # it was held (a lower bound only: never faster than the delay)
    assert wasm_errors(envoy) == []


def test_a_delay_then_an_abort_sent_from_the_tick(envoy: Envoy, upstream: UpstreamServer) -> None:
    upstream.clear()
    headers = {"x-envoy-fault-delay-request": "200", "x-envoy-fault-abort-request": "502"}
    started = time.monotonic()
    reply = http(envoy, "/both", headers=headers, listener="service")
    assert (reply.status, reply.body) == (502, b"fault filter abort")
    assert time.monotonic() - started >= 0.2  # held first (a lower bound only)
    assert upstream.requests == []
    assert wasm_errors(envoy) == []


def test_a_grpc_request_gets_a_grpc_status(envoy: Envoy) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{envoy.port('service')}") as channel:
        call = channel.unary_unary("/shop.Orders/Get", request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as info:
            call(b"", metadata=[("x-envoy-fault-abort-grpc-request", "14")], timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert info.value.details() == "fault filter abort"
        # Only an HTTP status asked for: Envoy maps it to a gRPC status (403 -> PERMISSION_DENIED).
        with pytest.raises(grpc.RpcError) as mapped:
            call(b"", metadata=[("x-envoy-fault-abort-request", "403")], timeout=10)
        assert mapped.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_percentage_aborts_that_share_of_requests(envoy: Envoy) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda _: http(envoy, "/half", listener="service").status, range(200)))
    aborted = statuses.count(503)
    assert aborted + statuses.count(200) == 200
    assert abs(aborted - 100) <= 4 * math.sqrt(200 * 0.5 * 0.5), aborted  # binomial(200, 0.5), 4 sigma


def test_prometheus_shows_the_labelled_series(envoy: Envoy) -> None:
    _, text = envoy.admin_get("/stats/prometheus")
    names = {line.rsplit(" ", 1)[0] for line in text.splitlines() if line.startswith("fault_injection_")}
    for name in (
        'fault_injection_faults_total{fault="abort",route="flaky"}',
        'fault_injection_faults_total{fault="delay",route="slow"}',
        "fault_injection_active_delays{}",  # Envoy writes the braces for a stat without tags
    ):
        assert name in names, sorted(names)
