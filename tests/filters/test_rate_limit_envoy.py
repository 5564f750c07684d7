"""filters/rate_limit in real Envoy (two workers), served from its own envoy.yaml: concurrent load
from threads on one key stays within the token bucket's bound, the 429 and its headers, the
route that disables the limit, the missing-key policy, the metrics in /stats/prometheus."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from filters_support import Reply, filter_config, http, wait_until, wasm_errors

from proxywasm_build.envoy import Envoy
from proxywasm_build.upstream import UpstreamServer

# The /api route's bucket in filters/rate_limit/envoy.yaml.
MAX_TOKENS, TOKENS_PER_FILL, FILL_INTERVAL_S = 20, 10, 1.0


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture(scope="module")
def envoy(upstream: UpstreamServer) -> Iterator[Envoy]:
    with Envoy(filter_config("rate_limit", {"backend": upstream.port}), concurrency=2) as proxy:
        yield proxy


def stat(envoy: Envoy, descriptor: str, decision: str) -> int:
    return envoy.stat(f"wasmcustom.rate_limit_requests_total;descriptor={descriptor};decision={decision}") or 0


def worker_connections(envoy: Envoy) -> dict[str, int]:
    stats = envoy.stats(r"^listener\.127\.0\.0\.1_\d+\.worker_\d+\.downstream_cx_total$")
    return {name.split(".")[-2]: value for name, value in stats.items()}


def test_concurrent_load_on_one_key_stays_within_the_bucket(envoy: Envoy) -> None:
    before = worker_connections(envoy)
    requests = 240
    headers = {"x-api-key": "load-test"}
    with ThreadPoolExecutor(max_workers=8) as pool:
        started = time.monotonic()
        replies = list(pool.map(lambda _: http(envoy, "/api/items", headers=headers), range(requests)))
        elapsed = time.monotonic() - started
    statuses = [r.status for r in replies]
    allowed = statuses.count(200)
    assert statuses.count(429) == requests - allowed, sorted(set(statuses))
    # The bucket starts full (MAX_TOKENS) and its first fill is FILL_INTERVAL_S after its first
    # request, which came after `started`: at most floor(elapsed / interval) fills in the window.
    # Contention the filter gave up on (counted) is let through by default: it widens the bound.
    contention = envoy.stat("wasmcustom.rate_limit_contention_total;descriptor=api_key") or 0
    fills = int(elapsed // FILL_INTERVAL_S)
    assert MAX_TOKENS <= allowed <= MAX_TOKENS + TOKENS_PER_FILL * fills + contention, (allowed, elapsed, contention)
    assert allowed < requests, "the load never emptied the bucket: the test proves nothing"
    # Both workers served part of the load, so the bucket really was shared.
    after = worker_connections(envoy)
    served = {worker: after[worker] - before.get(worker, 0) for worker in after}
    assert len(served) == 2 and all(count > 0 for count in served.values()), served
    # The filter's counters saw what the clients saw.
    assert stat(envoy, "api_key", "allowed") == allowed
    assert stat(envoy, "api_key", "limited") == requests - allowed
    assert wasm_errors(envoy) == []


def test_the_429_and_the_headers_on_allowed_responses(envoy: Envoy, upstream: UpstreamServer) -> None:
    headers = {"x-api-key": "headers-test"}
    first = http(envoy, "/api/x", headers=headers)
    assert first.status == 200
    assert (first.header("x-ratelimit-limit"), first.header("x-ratelimit-remaining")) == (str(MAX_TOKENS), "19")
    assert first.header("x-ratelimit-reset") == "1"
    replies: list[Reply] = [http(envoy, "/api/x", headers=headers) for _ in range(MAX_TOKENS + 5)]
    limited = [r for r in replies if r.status == 429]
    assert limited, [r.status for r in replies]
    for reply in limited:
        assert reply.body == b"rate limited\n"
        assert reply.header("retry-after") == "1"
        assert (reply.header("x-ratelimit-limit"), reply.header("x-ratelimit-remaining")) == (str(MAX_TOKENS), "0")
        assert reply.header("x-ratelimit-reset") == "1"
    upstream.clear()
    assert http(envoy, "/api/x", headers={"x-api-key": "another-key"}).status == 200  # its own bucket
    assert len(upstream.requests) == 1


def test_a_request_without_the_api_key_is_denied(envoy: Envoy, upstream: UpstreamServer) -> None:
    upstream.clear()
    reply = http(envoy, "/api/x")
    assert reply.status == 429 and upstream.requests == []


def test_the_health_route_is_never_limited_while_the_default_route_is(envoy: Envoy) -> None:
    # The default route limits per client address (all of these come from 127.0.0.1): 100 at once,
    # 50 more per second. Batches of requests empty that bucket (on a loaded machine it may take a
    # few); /health, exempt by its route metadata, is answered and not even counted meanwhile.
    before = stat(envoy, "per_client", "allowed") + stat(envoy, "per_client", "limited")
    default: list[int] = []
    health: list[int] = []
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(10):
            batch = list(pool.map(lambda path: (path, http(envoy, path).status), ["/", "/", "/", "/health"] * 50))
            default += [status for path, status in batch if path == "/"]
            health += [status for path, status in batch if path == "/health"]
            if 429 in default:
                break
    assert 429 in default, "the batches never emptied the per-client bucket: the test proves nothing"
    assert set(health) == {200}
    after = stat(envoy, "per_client", "allowed") + stat(envoy, "per_client", "limited")
    assert after - before == len(default)  # /health requests were not counted


def test_prometheus_shows_the_labelled_series(envoy: Envoy) -> None:
    def text() -> str:
        return envoy.admin_get("/stats/prometheus")[1]

    allowed = 'rate_limit_requests_total{descriptor="api_key",decision="allowed"}'
    lines = wait_until(lambda: allowed in text() and text(), what="the counter in /stats/prometheus").splitlines()
    series = {line.rsplit(" ", 1)[0] for line in lines if line.startswith("rate_limit_")}
    for name in (
        'rate_limit_requests_total{descriptor="api_key",decision="allowed"}',
        'rate_limit_requests_total{descriptor="api_key",decision="limited"}',
        'rate_limit_requests_total{descriptor="per_client",decision="allowed"}',
        'rate_limit_evictions_total{reason="idle"}',
        'rate_limit_contention_total{descriptor="api_key"}',
    ):
        assert name in series, sorted(series)
