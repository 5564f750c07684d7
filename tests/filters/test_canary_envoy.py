"""filters/canary in real Envoy (two workers), from its own envoy.yaml with two upstream clusters:
the split over 1,000 users, stickiness, the header and cookie overrides, the route picked by the
Envoy's zone, a client sending the variant header itself, the metrics."""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from filters_support import Reply, filter_config, http, wasm_errors

from proxywasm_build.envoy import Envoy
from proxywasm_build.upstream import UpstreamServer

PERCENTAGE = 10  # the sticky rule of filters/canary/envoy.yaml


def fmix32(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def expected(user: str) -> str:
    """The README's formula: fmix32(crc32("" + "\\n" + key)) % 10000 < percentage * 100."""
    return "canary" if fmix32(zlib.crc32(f"\n{user}".encode())) % 10000 < PERCENTAGE * 100 else "stable"


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, UpstreamServer]]:
    with UpstreamServer() as stable, UpstreamServer() as canary:
        yield {"stable": stable, "canary": canary}


@pytest.fixture(scope="module")
def envoy(upstreams: dict[str, UpstreamServer]) -> Iterator[Envoy]:
    config = filter_config("canary", {name: server.port for name, server in upstreams.items()})
    with Envoy(config, concurrency=2) as proxy:
        yield proxy


def served_by(upstreams: dict[str, UpstreamServer], reply: Reply) -> str:
    """Which cluster answered: the echo body carries the request id the upstream saw."""
    assert reply.status == 200, reply
    request_id = next(v for k, v in json.loads(reply.body)["headers"] if k == "x-request-id")
    found = [name for name, server in upstreams.items() if any(r.header("x-request-id") == request_id
                                                               for r in server.requests)]  # fmt: skip
    assert len(found) == 1, found
    return found[0]


def test_the_split_over_1000_users(envoy: Envoy, upstreams: dict[str, UpstreamServer]) -> None:
    for server in upstreams.values():
        server.clear()
    users = [f"user-{i}" for i in range(1000)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(lambda u: http(envoy, "/shop", headers={"x-user-id": u}), users))
    assert {r.status for r in replies} == {200}
    canary = upstreams["canary"].requests
    stable = upstreams["stable"].requests
    assert len(canary) + len(stable) == 1000
    # 10% of users, within 4 sigma of binomial(1000, 0.1): 100 +- 38.
    assert abs(len(canary) - 100) <= 4 * math.sqrt(1000 * 0.1 * 0.9), len(canary)
    # Exactly the users the documented hash puts in the 10%, each on the cluster its variant names.
    assert sorted(r.header("x-user-id") or "" for r in canary) == sorted(u for u in users if expected(u) == "canary")
    assert {r.header("x-variant") for r in canary} == {"canary"}
    assert {r.header("x-variant") for r in stable} == {"stable"}
    for user, reply in zip(users, replies, strict=True):
        assert reply.header("x-variant") == expected(user)


def test_users_stick_to_their_variant_on_both_workers(envoy: Envoy, upstreams: dict[str, UpstreamServer]) -> None:
    users = [f"sticky-{i}" for i in range(40)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(lambda u: (u, http(envoy, "/", headers={"x-user-id": u})), users * 3))
    seen: dict[str, set[str | None]] = {}
    for user, reply in replies:
        seen.setdefault(user, set()).add(reply.header("x-variant"))
    assert seen == {user: {expected(user)} for user in users}
    assert {expected(u) for u in users} == {"canary", "stable"}, "pick users on both sides"


def test_the_header_rule_overrides_the_percentage(envoy: Envoy, upstreams: dict[str, UpstreamServer]) -> None:
    stable_user = next(u for u in (f"u{i}" for i in range(100)) if expected(u) == "stable")
    canary_user = next(u for u in (f"u{i}" for i in range(100)) if expected(u) == "canary")
    always = http(envoy, "/", headers={"x-user-id": stable_user, "x-canary": "always"})
    never = http(envoy, "/", headers={"x-user-id": canary_user, "x-canary": "never"})
    assert served_by(upstreams, always) == "canary"
    assert served_by(upstreams, never) == "stable"


def test_the_cookie_it_sets_keeps_the_user_there(envoy: Envoy, upstreams: dict[str, UpstreamServer]) -> None:
    first = http(envoy, "/", headers={"x-canary": "always"})
    assert first.header("set-cookie") == "canary_variant=canary; Path=/; Max-Age=86400"
    again = http(envoy, "/", headers={"cookie": "canary_variant=canary"})  # no other signal
    assert served_by(upstreams, again) == "canary" and again.header("set-cookie") is None


def test_the_regional_route_picks_by_the_envoy_zone(envoy: Envoy, upstreams: dict[str, UpstreamServer]) -> None:
    # envoy.yaml: node.locality.zone is eu-west1-b; the /regional route's rules send that zone to canary.
    assert served_by(upstreams, http(envoy, "/regional/page")) == "canary"
    assert served_by(upstreams, http(envoy, "/page")) == "stable"  # the plugin's rules: default


def test_a_client_cannot_pick_the_canary_itself(envoy: Envoy, upstreams: dict[str, UpstreamServer]) -> None:
    reply = http(envoy, "/", headers={"x-variant": "canary"})
    assert served_by(upstreams, reply) == "stable"
    assert wasm_errors(envoy) == []


def test_prometheus_counts_by_variant_and_reason(envoy: Envoy) -> None:
    _, text = envoy.admin_get("/stats/prometheus")
    counts = {line.rsplit(" ", 1)[0]: int(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("canary_requests_total{")}  # fmt: skip
    split = sum(expected(f"user-{i}") == "canary" for i in range(1000))
    assert counts['canary_requests_total{variant="canary",reason="percentage"}'] >= split
    assert counts['canary_requests_total{variant="canary",reason="header"}'] >= 2
    assert counts['canary_requests_total{variant="canary",reason="node"}'] >= 1
    assert counts['canary_requests_total{variant="stable",reason="default"}'] >= 1000 - split
