"""rate_limit in the local host, natively and as the built module: the token bucket and its
headers, the keys, the missing-key policies, buckets shared by workers, the bounded table and its
eviction, CAS contention, per-route limits and configuration errors. (Real Envoy:
tests/filters/test_rate_limit_envoy.py.)"""

from __future__ import annotations

import binascii
import json
import struct
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
    host = load({"key": "header", "header": "x-user", "token_bucket": BUCKET})
    assert ratelimit_headers(get(host, x_user="alice"))[1] == "2"  # alice has a bucket
    writes: list[bytes] = []

    def always_changed(vm_id: str, key: bytes, value: bytes, cas: int = 0) -> Status:
        writes.append(key)
        return Status.CAS_MISMATCH  # another worker wrote the slot since every read

    monkeypatch.setattr(host.envoy, "set_shared", always_changed)
    # No update can be made: each request is let through after eight rounds, and counted.
    assert [get(host, x_user="alice").status for _ in range(3)] == [200, 200, 200]
    assert len(writes) == 3 * 8 and len(set(writes)) == 1  # eight rounds per request, on alice's slot
    assert host.metric("rate_limit_contention_total;descriptor=default") == 3
    monkeypatch.undo()
    assert [get(host, x_user="alice").status for _ in range(3)] == [200, 200, 429]  # 2 tokens were left


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


RECORD = struct.Struct("<qqq")  # a bucket's slot: tokens, last fill, full at (ns); then its key
LOCK = f"rate_limit/{NAME}.lock"


def clock(host: Host) -> int:
    """The serving VM's wall clock (Envoy's, plus the virtual CPU it has used)."""
    return host.envoy.time_ns + host.raw.cpu_ns()


def bucket(host: Host, user: str) -> list[tuple[bytes, int]]:
    """The slots holding ``user``'s bucket, with its tokens."""
    key = f"default\n{user}".encode()
    return [(k, RECORD.unpack_from(v)[0]) for k, v in slots(host).items() if v[RECORD.size :] == key]


def test_one_key_placed_by_two_workers_at_once_gets_one_bucket(load: Any, monkeypatch: Any) -> None:
    # u1 and u3 share their home slot (max_buckets 4); u1's bucket there is idle one second after its
    # request. Worker A probes for u3 while u1's is still refilling, so it would take the next slot;
    # before A writes, worker B (whose clock is later: u1's idle for B) places u3 in the home slot.
    # A places u3 under the table's lock, reading the slots again there: it finds B's bucket.
    host = load({"key": "header", "header": "x-user", "max_buckets": 4, "sweep_interval": "3600s",
                 "token_bucket": BUCKET}, workers=2)  # fmt: skip
    home = binascii.crc32(b"default\nu1") % 4
    assert home == binascii.crc32(b"default\nu3") % 4
    assert get(host, x_user="u1").status == 200
    host.advance_time(990)
    original = host.envoy.get_shared
    home_slot = f"rate_limit/{NAME}/{home}".encode()
    placed_by_b = [False]

    def b_places_u3_first(vm: str, key: bytes) -> tuple[bytes, int] | None:
        if key == LOCK.encode() and not placed_by_b[0]:  # A has probed and goes for the lock
            placed_by_b[0] = True
            u1 = original(vm, home_slot)
            assert u1 is not None
            now_b = RECORD.unpack_from(u1[0])[2]  # B's clock: u1's bucket is full, idle
            assert host.envoy.set_shared(vm, home_slot, RECORD.pack(2, now_b, now_b + 10**9) + b"default\nu3",
                                         u1[1]) == Status.OK  # fmt: skip
        entry: tuple[bytes, int] | None = original(vm, key)
        return entry

    monkeypatch.setattr(host.envoy, "get_shared", b_places_u3_first)
    assert ratelimit_headers(get(host, x_user="u3"))[1] == "1"  # A took from B's bucket
    assert placed_by_b[0]
    assert bucket(host, "u3") == [(home_slot, 1)]
    monkeypatch.undo()
    assert [get(host, x_user="u3").status for _ in range(2)] == [200, 429]


def test_a_busy_lock_is_waited_for(load: Any, monkeypatch: Any) -> None:
    host = load({"key": "header", "header": "x-user", "token_bucket": BUCKET})
    assert host.shared_data[LOCK.encode()] == b""  # made at configure, free
    original = host.envoy.get_shared
    reads = [0]

    def held_for_twelve_reads(vm_id: str, key: bytes) -> tuple[bytes, int] | None:
        if key == LOCK.encode():
            reads[0] += 1
            if reads[0] == 1:  # another worker places a key now (stamped by our clock)
                host.set_shared_data(LOCK, clock(host).to_bytes(8, "little"))
            elif reads[0] == 12:  # ... and is done: more reads than a request's eight rounds
                host.set_shared_data(LOCK, b"")
        entry: tuple[bytes, int] | None = original(vm_id, key)
        return entry

    monkeypatch.setattr(host.envoy, "get_shared", held_for_twelve_reads)
    assert ratelimit_headers(get(host, x_user="alice"))[1] == "2"
    assert host.metric("rate_limit_contention_total;descriptor=default") == 0
    assert bucket(host, "alice") and host.shared_data[LOCK.encode()] == b""  # placed, released


def test_a_lock_held_throughout_fails_open_counted_and_a_stale_one_is_taken_over(load: Any) -> None:
    host = load({"key": "header", "header": "x-user", "token_bucket": BUCKET})
    # Another worker holds the lock, stamped after our clock (its clock read came later).
    stamp = clock(host) + 50_000_000
    host.set_shared_data(LOCK, stamp.to_bytes(8, "little"))
    assert get(host, x_user="alice").status == 200  # could not place alice: the contention policy
    assert host.metric("rate_limit_contention_total;descriptor=default") == 1
    assert slots(host) == {} and host.shared_data[LOCK.encode()] == stamp.to_bytes(8, "little")  # not taken over
    host.advance_time(990)
    assert get(host, x_user="alice").status == 200
    assert host.metric("rate_limit_contention_total;descriptor=default") == 2
    host.advance_time(70)  # held for a second: its holder died or stalled; taken over
    assert ratelimit_headers(get(host, x_user="alice"))[1] == "2"
    assert host.metric("rate_limit_contention_total;descriptor=default") == 2
    assert len(slots(host)) == 1 and host.shared_data[LOCK.encode()] == b""  # released


def test_a_lock_from_a_clock_that_stepped_back_is_taken_over(load: Any) -> None:
    host = load({"key": "header", "header": "x-user", "token_bucket": BUCKET})
    future = host.envoy.time_ns + 3600 * 10**9  # written before the wall clock stepped back an hour
    host.set_shared_data(LOCK, future.to_bytes(8, "little"))
    assert ratelimit_headers(get(host, x_user="alice"))[1] == "2"
    assert host.metric("rate_limit_contention_total;descriptor=default") == 0


def test_a_lock_taken_between_our_read_and_our_write_is_not_overwritten(load: Any, monkeypatch: Any) -> None:
    host = load({"key": "header", "header": "x-user", "token_bucket": BUCKET})
    original = host.envoy.set_shared
    theirs = clock(host).to_bytes(8, "little")
    raced = [False]

    def b_takes_it_first(vm_id: str, key: bytes, value: bytes, cas: int = 0) -> Status:
        if key == LOCK.encode() and value and not raced[0]:  # our take: B's CAS lands first
            raced[0] = True
            entry = host.envoy.get_shared(vm_id, key)
            assert entry is not None and original(vm_id, key, theirs, entry[1]) == Status.OK
        status: Status = original(vm_id, key, value, cas)
        return status

    monkeypatch.setattr(host.envoy, "set_shared", b_takes_it_first)
    get(host, x_user="alice")
    assert raced[0]
    assert host.shared_data[LOCK.encode()] == theirs and slots(host) == {}  # B still holds it; we placed nothing


def test_a_holder_taken_over_leaves_the_new_holders_lock(load: Any, monkeypatch: Any) -> None:
    host = load({"key": "header", "header": "x-user", "token_bucket": BUCKET})
    original = host.envoy.get_shared
    theirs = (host.envoy.time_ns + 7).to_bytes(8, "little")
    done = [False]

    def taken_over_meanwhile(vm_id: str, key: bytes) -> tuple[bytes, int] | None:
        entry: tuple[bytes, int] | None = original(vm_id, key)
        if key.startswith(f"rate_limit/{NAME}/".encode()) and entry is None and not done[0]:
            lock = original(vm_id, LOCK.encode())
            if lock is not None and lock[0]:  # our read under the lock: C takes the lock over now
                done[0] = True
                host.envoy.set_shared(vm_id, LOCK.encode(), theirs, lock[1])
        return entry

    monkeypatch.setattr(host.envoy, "get_shared", taken_over_meanwhile)
    get(host, x_user="alice")
    assert done[0] and host.shared_data[LOCK.encode()] == theirs


def test_a_reconfigure_leaves_a_held_lock_alone(load: Any) -> None:
    config = {"key": "header", "header": "x-user", "token_bucket": BUCKET}
    host = load(config)
    held = host.envoy.time_ns.to_bytes(8, "little")
    host.set_shared_data(LOCK, held)
    host.configure(json.dumps({**config, "status": 503}))
    assert host.shared_data[LOCK.encode()] == held


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
