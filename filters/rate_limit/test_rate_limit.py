"""rate_limit in the local host, natively and as the built module: the token bucket and its
headers, the keys, the missing-key policies, buckets shared by workers, the bounded table and its
eviction, CAS contention, per-route limits and configuration errors. (Real Envoy:
tests/filters/test_rate_limit_envoy.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]

from proxywasm.abi import Status
from proxywasm_host import ConfigureError, Host, Response, Route, echo_upstream
from proxywasm_host.pytest_plugin import HostFactory

FILTER = Path(__file__).parent / "filter.py"
NAME = "rate_limit"  # the plugin's name: route metadata is read under it
BUCKET = {"max_tokens": 3, "tokens_per_fill": 1, "fill_interval": "1s"}


@pytest.fixture
def load(proxywasm_host: HostFactory, proxywasm_mode: str) -> Any:
    def make(config: dict[str, Any], **options: Any) -> Host:
        return proxywasm_host(FILTER, mode=proxywasm_mode, plugin_name=NAME, plugin_config=json.dumps(config),
                              **options)  # fmt: skip

    return make


def get(host: Host, path: str = "/", source: str = "127.0.0.1:40000", **headers: str) -> Response:
    stream = host.http_stream(source=source)
    pairs = [(k.replace("_", "-"), v) for k, v in headers.items()]
    return stream.run("GET", path, pairs, None, None, echo_upstream)


def ratelimit_headers(response: Response) -> tuple[str | None, ...]:
    return tuple(response.header(f"x-ratelimit-{h}") for h in ("limit", "remaining", "reset"))


def test_the_bucket_allows_max_tokens_then_answers_429_until_the_next_fill(load: Any) -> None:
    host = load({"key": "header", "header": "x-user", "token_bucket": BUCKET})
    for remaining in ("2", "1", "0"):
        response = get(host, x_user="alice")
        assert response.status == 200 and response.upstream_request is not None
        assert ratelimit_headers(response) == ("3", remaining, "1")
    limited = get(host, x_user="alice")
    assert (limited.status, limited.body, limited.upstream_request) == (429, b"rate limited\n", None)
    assert limited.header("retry-after") == "1"
    assert ratelimit_headers(limited) == ("3", "0", "1")
    host.advance_time(1000)  # one fill: one token
    assert get(host, x_user="alice").status == 200
    assert get(host, x_user="alice").status == 429
    host.advance_time(10_000)  # ten fills, capped at max_tokens
    assert [get(host, x_user="alice").status for _ in range(4)] == [200, 200, 200, 429]
    assert host.metric("rate_limit_requests_total;descriptor=default;decision=allowed") == 7
    assert host.metric("rate_limit_requests_total;descriptor=default;decision=limited") == 3


def test_tokens_per_fill_and_a_long_fill_interval(load: Any) -> None:
    host = load({"key": "path", "token_bucket": {"max_tokens": 4, "tokens_per_fill": 2, "fill_interval": "60s"}})
    assert [get(host, "/a").status for _ in range(5)] == [200, 200, 200, 200, 429]
    assert get(host, "/a").header("retry-after") == "60"
    host.advance_time(30_000)
    assert get(host, "/a").header("retry-after") == "30"
    host.advance_time(30_000)
    assert [get(host, "/a").status for _ in range(3)] == [200, 200, 429]


def test_each_key_has_its_own_bucket(load: Any) -> None:
    host = load({"key": "header", "header": "x-user", "token_bucket": {**BUCKET, "max_tokens": 1}})
    assert get(host, x_user="alice").status == 200
    assert get(host, x_user="bob").status == 200
    assert get(host, x_user="alice").status == 429
    assert get(host, x_user="bob").status == 429


def test_the_client_address_key_ignores_the_port(load: Any) -> None:
    host = load({"token_bucket": {**BUCKET, "max_tokens": 2}})  # key: client_address is the default
    assert get(host, source="10.0.0.1:1000").status == 200
    assert get(host, source="10.0.0.1:2000").status == 200
    assert get(host, source="10.0.0.1:3000").status == 429
    assert get(host, source="10.0.0.2:1000").status == 200
    assert get(host, source="[2001:db8::1]:1000").status == 200
    assert get(host, source="[2001:db8::1]:2000").status == 200
    assert get(host, source="[2001:db8::1]:3000").status == 429


def test_the_path_key_ignores_the_query(load: Any) -> None:
    host = load({"key": "path", "token_bucket": {**BUCKET, "max_tokens": 1}})
    assert get(host, "/a?x=1").status == 200
    assert get(host, "/a?x=2").status == 429
    assert get(host, "/b").status == 200


def test_a_jwt_claim_header_keys_the_bucket(load: Any) -> None:
    # jwt_authn's claim_to_headers (or this repository's jwt_auth) copies the claim into a header.
    host = load({"descriptor": "per_subject", "key": "header", "header": "X-JWT-Sub",
                 "token_bucket": {**BUCKET, "max_tokens": 1}})  # fmt: skip
    assert get(host, x_jwt_sub="user-1").status == 200
    assert get(host, x_jwt_sub="user-1").status == 429
    assert get(host, x_jwt_sub="user-2").status == 200
    assert host.metric("rate_limit_requests_total;descriptor=per_subject;decision=limited") == 1


@pytest.mark.parametrize(
    ("policy", "statuses"),
    [("shared", [200, 429, 429]), ("allow", [200, 200, 200]), ("deny", [429, 429, 429])],
)
def test_requests_without_the_key(load: Any, policy: str, statuses: list[int]) -> None:
    host = load(
        {"key": "header", "header": "x-user", "missing_key": policy, "token_bucket": {**BUCKET, "max_tokens": 1}}
    )
    assert [get(host).status for _ in range(3)] == statuses
    assert get(host, x_user="").status == statuses[-1]  # an empty value is no key either
    assert get(host, x_user="alice").status == 200  # requests with the key have their own buckets


def test_the_headers_can_be_left_off_allowed_responses(load: Any) -> None:
    host = load({"x_ratelimit_headers": False, "status": 503, "body": "slow down",
                 "token_bucket": {**BUCKET, "max_tokens": 1}})  # fmt: skip
    allowed = get(host)
    assert allowed.status == 200 and ratelimit_headers(allowed) == (None, None, None)
    limited = get(host)
    assert (limited.status, limited.body, limited.header("x-ratelimit-remaining")) == (503, b"slow down", "0")


def test_workers_share_the_buckets(load: Any) -> None:
    host = load({"key": "header", "header": "x-user", "token_bucket": {**BUCKET, "max_tokens": 5}}, workers=2)
    assert host.vm_count == 3  # the main thread's VM and two workers; streams alternate between the workers
    statuses = [get(host, x_user="alice").status for _ in range(8)]
    assert statuses == [200] * 5 + [429] * 3


def slots(host: Host) -> dict[bytes, bytes]:
    return {k: v for k, v in host.shared_data.items() if k.startswith(f"rate_limit/{NAME}/".encode())}


def test_the_table_is_bounded_and_full_buckets_are_evicted_on_tick(load: Any) -> None:
    host = load({"key": "header", "header": "x-user", "max_buckets": 8, "sweep_interval": "5s",
                 "token_bucket": {**BUCKET, "max_tokens": 2}})  # fmt: skip
    for i in range(50):  # 50 users through an 8-slot table
        assert get(host, x_user=f"user-{i}").status == 200
    assert len(slots(host)) <= 8
    overflow = host.metric("rate_limit_evictions_total;reason=overflow")
    assert isinstance(overflow, int) and overflow >= 50 - 8
    # A user whose bucket is still in the table is limited as usual.
    assert get(host, x_user="user-49").status == 200
    assert get(host, x_user="user-49").status == 429
    # Two fills later every bucket is full again: the sweep empties the slots.
    host.advance_time(5000)
    live = [v for v in slots(host).values() if v]
    assert live == [], f"{len(live)} slots still hold buckets"
    assert host.metric("rate_limit_evictions_total;reason=idle") == len(slots(host))


def test_persistent_cas_contention_allows_by_default_and_counts_it(load: Any, monkeypatch: Any) -> None:
    host = load({"key": "header", "header": "x-user", "token_bucket": {**BUCKET, "max_tokens": 1}})
    writes: list[bytes] = []

    def always_changed(vm_id: str, key: bytes, value: bytes, cas: int = 0) -> Status:
        writes.append(key)
        return Status.CAS_MISMATCH  # another worker wrote the slot since every read

    monkeypatch.setattr(host.envoy, "set_shared", always_changed)
    # One token, three requests: all allowed, because no update could be made.
    assert [get(host, x_user="alice").status for _ in range(3)] == [200, 200, 200]
    assert len(writes) == 3 * 8  # eight rounds per request, then the policy decides
    assert host.metric("rate_limit_contention_total;descriptor=default") == 3


def test_failure_mode_deny_limits_on_persistent_contention(load: Any, monkeypatch: Any) -> None:
    host = load({"failure_mode_deny": True, "token_bucket": BUCKET})
    monkeypatch.setattr(host.envoy, "set_shared", lambda *args: Status.CAS_MISMATCH)
    response = get(host)
    assert (response.status, response.header("retry-after")) == (429, "1")


def test_a_write_lost_to_another_worker_is_retried(load: Any, monkeypatch: Any) -> None:
    host = load({"key": "header", "header": "x-user", "token_bucket": {**BUCKET, "max_tokens": 2}})
    original = host.envoy.set_shared
    lost = [True]

    def once_changed(vm_id: str, key: bytes, value: bytes, cas: int = 0) -> Status:
        if lost[0]:
            lost[0] = False
            return Status.CAS_MISMATCH
        status: Status = original(vm_id, key, value, cas)
        return status

    monkeypatch.setattr(host.envoy, "set_shared", once_changed)
    assert [get(host, x_user="alice").status for _ in range(3)] == [200, 200, 429]
    assert host.metric("rate_limit_contention_total;descriptor=default") == 0


def test_a_slot_two_workers_saw_missing_is_created_once(load: Any, monkeypatch: Any) -> None:
    # Shared data has no "create if absent": the first write of a slot replaces whatever is there.
    # Worker B reads alice's slot as missing (before worker A's first write reached it), then writes:
    # it must not replace A's bucket, or the token A took is lost (Envoy would allow one extra).
    host = load({"key": "header", "header": "x-user", "token_bucket": {**BUCKET, "max_tokens": 5}}, workers=2)
    assert ratelimit_headers(get(host, x_user="alice"))[1] == "4"  # worker A created the bucket
    (slot,) = slots(host)
    original = host.envoy.get_shared
    stale = [True]

    def read_before_a_wrote(vm_id: str, key: bytes) -> tuple[bytes, int] | None:
        if key == slot and stale[0]:
            stale[0] = False
            return None
        entry: tuple[bytes, int] | None = original(vm_id, key)
        return entry

    monkeypatch.setattr(host.envoy, "get_shared", read_before_a_wrote)
    assert ratelimit_headers(get(host, x_user="alice"))[1] == "3"  # worker B: A's token is still taken
    assert not stale[0]
    assert [get(host, x_user="alice").status for _ in range(4)] == [200, 200, 200, 429]


LOCK = f"rate_limit/{NAME}.lock"


def test_a_busy_create_lock_fails_open_counted_and_a_stale_one_is_taken_over(load: Any) -> None:
    host = load({"key": "header", "header": "x-user", "token_bucket": BUCKET})
    assert host.shared_data[LOCK.encode()] == b""  # made at configure, free
    held_since = host.envoy.time_ns
    host.set_shared_data(LOCK, held_since.to_bytes(8, "little") + b"pid1")  # a worker is creating a slot
    assert get(host, x_user="alice").status == 200  # could not create alice's slot: the contention policy
    assert host.metric("rate_limit_contention_total;descriptor=default") == 1
    assert slots(host) == {}
    host.advance_time(999)
    assert get(host, x_user="alice").status == 200
    assert host.metric("rate_limit_contention_total;descriptor=default") == 2
    host.advance_time(1)  # held for a second: its holder died or stalled; taken over
    assert ratelimit_headers(get(host, x_user="alice"))[1] == "2"
    assert host.metric("rate_limit_contention_total;descriptor=default") == 2
    assert len(slots(host)) == 1 and host.shared_data[LOCK.encode()] == b""  # released


def test_a_create_lock_from_a_clock_that_stepped_back_is_taken_over(load: Any) -> None:
    host = load({"key": "header", "header": "x-user", "token_bucket": BUCKET})
    future = host.envoy.time_ns + 3600 * 10**9  # written before the wall clock stepped back an hour
    host.set_shared_data(LOCK, future.to_bytes(8, "little") + b"pid1")
    assert ratelimit_headers(get(host, x_user="alice"))[1] == "2"
    assert host.metric("rate_limit_contention_total;descriptor=default") == 0


ROUTES = [
    Route("/health", "health", {NAME: {"disabled": True}}),
    Route("/api", "api", {NAME: {"descriptor": "api", "token_bucket": {"max_tokens": 1, "fill_interval": "1s"}}}),
    Route("/typo", "typo", {NAME: {"descriptor": "typo", "mising_key": "deny"}}),
]


def test_routes_disable_the_limit_or_set_their_own(load: Any) -> None:
    host = load({"token_bucket": {**BUCKET, "max_tokens": 2}}, routes=ROUTES)
    assert [get(host, "/health").status for _ in range(5)] == [200] * 5
    assert [get(host, "/api/x").status for _ in range(2)] == [200, 429]
    assert get(host, "/other").header("x-ratelimit-limit") == "2"
    assert host.metric("rate_limit_requests_total;descriptor=api;decision=limited") == 1


def test_a_route_metadata_mistake_is_logged_and_the_plugin_limit_applies(load: Any) -> None:
    host = load({"token_bucket": {**BUCKET, "max_tokens": 1}}, routes=ROUTES, raise_on_mistake=False)
    assert [get(host, "/typo").status for _ in range(2)] == [200, 429]
    errors = [m for m in host.log_messages() if "metadata" in m]
    assert errors == [
        "rate_limit: route typo metadata.mising_key: unknown key (did you mean 'missing_key'?); "
        "using the plugin's limit on this route"
    ]  # once per route, not once per request


@pytest.mark.parametrize(
    ("config", "line"),
    [
        ({}, "token_bucket: missing: an object is required"),
        ({"token_bucket": {"max_tokens": 0}}, "token_bucket.max_tokens: must be at least 1, not 0"),
        ({"token_bucket": {"max_tokens": 1, "fill_interval": "soon"}},
         'token_bucket.fill_interval: must be a positive duration such as "1s" or "250ms", not \'soon\''),
        ({"token_bucket": {"max_tokens": 1, "fill_intreval": "1s"}},
         "token_bucket.fill_intreval: unknown key (did you mean 'fill_interval'?)"),
        ({"key": "header", "token_bucket": BUCKET}, 'header: missing: a header name is required with "key": "header"'),
        ({"key": "ip", "token_bucket": BUCKET},
         "key: must be one of 'client_address', 'header', 'path', not 'ip'"),
        ({"max_buckets": 2, "token_bucket": BUCKET}, "max_buckets: must be at least 4, not 2"),
        ({"burst": 5, "token_bucket": BUCKET}, "burst: unknown key"),
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
                routes.append(
                    Route(route["match"]["prefix"], f"readme-{i}", route.get("metadata", {}).get("filter_metadata", {}))
                )
    assert len(configs) >= 3 and routes, "README.md lost its examples"
    for config in configs:
        host = load(config, routes=routes)
        for route in routes:
            assert get(host, route.prefix, x_api_key="k", x_jwt_sub="s").status == 200
        assert [m for m in host.log_messages() if "rate_limit:" in m] == []
