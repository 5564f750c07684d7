"""canary in the local host, natively and as the built module: each kind of rule, the documented
sticky hash, the variant header (set, replaced, stripped), clear_route_cache, the cookie it sets,
per-route rules, metrics and configuration errors. (Routing itself, and the split over 1,000
requests, in real Envoy: tests/filters/test_canary_envoy.py.)"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]

from proxywasm_host import ConfigureError, Host, Response, Route, echo_upstream
from proxywasm_host.pytest_plugin import HostFactory

FILTER = Path(__file__).parent / "filter.py"
NAME = "canary"
RULES = [
    {"header": "x-canary", "values": {"always": "canary", "never": "stable"}},
    {"cookie": "canary_variant"},
    {"percentage": 10, "variant": "canary", "sticky": {"header": "x-user-id"}},
]


def fmix32(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def in_percentage(key: str, percentage: float, salt: str = "") -> bool:
    """The README's formula, written again here: the test does not import the filter's code."""
    return fmix32(zlib.crc32(f"{salt}\n{key}".encode())) % 10000 < percentage * 100


@pytest.fixture
def load(proxywasm_host: HostFactory, proxywasm_mode: str) -> Any:
    def make(config: dict[str, Any], **options: Any) -> Host:
        host = proxywasm_host(FILTER, mode=proxywasm_mode, plugin_name=NAME, plugin_config=json.dumps(config),
                              **options)  # fmt: skip
        return host

    return make


def get(host: Host, path: str = "/", source: str = "127.0.0.1:40000", headers: Any = ()) -> Response:
    return host.http_stream(source=source).run("GET", path, list(headers), None, None, echo_upstream)


def variant(response: Response) -> str | None:
    """The variant header the upstream (that is, the router) saw."""
    assert response.upstream_request is not None
    return response.upstream_request.header("x-variant")


def test_a_header_rule_maps_values_to_variants(load: Any) -> None:
    host = load({"rules": RULES, "response_header": "x-variant"})
    assert variant(get(host, headers=[("x-canary", "always")])) == "canary"
    assert variant(get(host, headers=[("x-canary", "never"), ("x-user-id", "anyone")])) == "stable"
    assert variant(get(host, headers=[("x-canary", "maybe")])) == "stable"  # no mapping: the next rules decide
    response = get(host, headers=[("x-canary", "always")])
    assert response.header("x-variant") == "canary"
    assert host.metric("canary_requests_total;variant=canary;reason=header") == 2
    assert host.metric("canary_requests_total;variant=stable;reason=default") == 1


def test_a_cookie_without_values_names_the_variant(load: Any) -> None:
    host = load({"rules": RULES})
    assert variant(get(host, headers=[("cookie", "a=1; canary_variant=canary; b=2")])) == "canary"
    assert variant(get(host, headers=[("cookie", "a=1"), ("cookie", "canary_variant=canary")])) == "canary"
    assert variant(get(host, headers=[("cookie", "canary_variant=nonsense")])) == "stable"  # not a variant


def test_a_sticky_percentage_follows_the_documented_hash(load: Any) -> None:
    host = load({"rules": RULES})
    users = [f"user-{i}" for i in range(2000)]
    picked = [variant(get(host, headers=[("x-user-id", u)])) for u in users]
    expected = ["canary" if in_percentage(u, 10) else "stable" for u in users]
    assert picked == expected
    # The hash spreads ids well: 10% +- 4 sigma of a binomial(2000, 0.1).
    count = expected.count("canary")
    assert abs(count - 200) <= 4 * math.sqrt(2000 * 0.1 * 0.9), count
    # Sticky: the same user, the same variant, every time (and on every worker).
    host2 = load({"rules": RULES}, workers=2)
    for user in users[:40]:
        assert {variant(get(host2, headers=[("x-user-id", user)])) for _ in range(3)} == {
            "canary" if in_percentage(user, 10) else "stable"
        }


def test_the_salt_reshuffles_users(load: Any) -> None:
    rules = [{"percentage": 50, "variant": "canary", "sticky": {"cookie": "session"}}]
    host = load({"rules": rules, "salt": "experiment-2"})
    users = [f"s{i}" for i in range(200)]
    picked = [variant(get(host, headers=[("cookie", f"session={u}")])) for u in users]
    assert picked == ["canary" if in_percentage(u, 50, "experiment-2") else "stable" for u in users]
    assert picked != ["canary" if in_percentage(u, 50) else "stable" for u in users]


def test_a_sticky_client_address_ignores_the_port(load: Any) -> None:
    host = load({"rules": [{"percentage": 50, "variant": "canary", "sticky": {"client_address": True}}]})
    for i in range(30):
        address = f"10.0.{i}.7"
        want = "canary" if in_percentage(address, 50) else "stable"
        assert {variant(get(host, source=f"{address}:{port}")) for port in (1000, 2000)} == {want}


def test_a_percentage_without_a_key_is_a_fresh_draw_per_request(load: Any) -> None:
    host = load({"rules": [{"percentage": 10, "variant": "canary"}]})
    picked = [variant(get(host)) for _ in range(2000)]
    count = picked.count("canary")
    assert abs(count - 200) <= 4 * math.sqrt(2000 * 0.1 * 0.9), count  # binomial bound, not exact


def test_without_the_sticky_key_the_next_rule_decides(load: Any) -> None:
    host = load({"default": "v1", "rules": [{"percentage": 100, "variant": "v2", "sticky": {"header": "x-user-id"}}]})
    assert variant(get(host, headers=[("x-user-id", "u")])) == "v2"
    assert variant(get(host)) == "v1"


def test_the_node_locality_and_metadata(load: Any) -> None:
    rules = [
        {"node": "zone", "values": {"eu-west1-b": "canary"}},
        {"node": "metadata.TIER", "values": {"edge": "beta"}},
    ]
    zone_b = load({"rules": rules}, properties={"xds.node.locality.zone": "eu-west1-b"})
    assert variant(get(zone_b)) == "canary"
    edge = load({"rules": rules}, properties={"xds.node.locality.zone": "eu-west1-a", "xds.node.metadata.TIER": "edge"})
    assert variant(get(edge)) == "beta"
    plain = load({"rules": rules})  # the host's node has neither
    assert variant(get(plain)) == "stable"
    assert plain.metric("canary_requests_total;variant=canary;reason=node") == 0


def test_the_client_cannot_pick_the_variant_by_sending_the_header(load: Any) -> None:
    calls: list[bytes] = []
    host = load({"rules": RULES})

    def clear_route_cache(argument: bytes) -> bytes:
        calls.append(argument)
        return b""

    host.register_foreign_function("clear_route_cache", clear_route_cache)
    assert variant(get(host, headers=[("x-variant", "canary")])) == "stable"
    assert len(calls) == 1  # the header changed: Envoy must match the route again
    assert variant(get(host, headers=[("x-variant", "stable")])) == "stable"
    assert len(calls) == 1  # unchanged: the route stands
    assert variant(get(host, headers=[("x-canary", "always")])) == "canary"
    assert len(calls) == 2


def test_the_cookie_it_sets_keeps_the_user_on_the_variant(load: Any) -> None:
    host = load({"rules": RULES, "set_cookie": {"name": "canary_variant", "max_age_s": 3600}})
    first = get(host, headers=[("x-canary", "always")])
    assert first.header("set-cookie") == "canary_variant=canary; Path=/; Max-Age=3600"
    again = get(host, headers=[("cookie", "canary_variant=canary")])
    assert variant(again) == "canary" and again.header("set-cookie") is None


ROUTES = [
    Route("/regional", "regional", {NAME: {"rules": [{"node": "region", "values": {"eu-west1": "canary"}}]}}),
    Route("/admin", "admin", {NAME: {"disabled": True}}),
    Route("/typo", "typo", {NAME: {"rules": [{"header": "x-a", "valeus": {}}]}}),
]


def test_routes_have_their_own_rules_or_none(load: Any) -> None:
    host = load({"rules": RULES}, routes=ROUTES, properties={"xds.node.locality.region": "eu-west1"})
    assert variant(get(host, "/regional/x")) == "canary"
    assert variant(get(host, "/other")) == "stable"
    admin = get(host, "/admin", headers=[("x-variant", "canary"), ("x-canary", "always")])
    assert variant(admin) is None  # stripped: no client picks a route through a disabled filter


def test_a_route_metadata_mistake_is_logged_once_and_the_plugin_rules_apply(load: Any) -> None:
    host = load({"rules": RULES}, routes=ROUTES)
    assert [variant(get(host, "/typo", headers=[("x-canary", "always")])) for _ in range(2)] == ["canary"] * 2
    assert [m for m in host.log_messages() if "metadata" in m] == [
        "canary: route typo metadata.rules[0].valeus: unknown key (did you mean 'values'?); "
        "using the plugin's rules on this route"
    ]


@pytest.mark.parametrize(
    ("config", "line"),
    [
        ({"rules": [{"header": "x-a", "cookie": "b"}]},
         "rules[0]: give exactly one of header, cookie, percentage, node (given: header, cookie)"),
        ({"rules": [{"values": {}}]}, "rules[0]: give exactly one of header, cookie, percentage, node (given: none)"),
        ({"rules": [{"node": "zone"}]}, "rules[0].values: missing: an object is required"),
        ({"rules": [{"node": "country", "values": {}}]},
         "rules[0].node: must be region, zone, sub_zone or metadata.<key>, not 'country'"),
        ({"rules": [{"percentage": 120, "variant": "b"}]}, "rules[0].percentage: must be at most 100, not 120.0"),
        ({"rules": [{"percentage": 5, "variant": "two words"}]},
         "rules[0].variant: a variant must be a name of letters, digits, '-', '_' or '.', not 'two words'"),
        ({"rules": [{"percentage": 5, "variant": "b", "sticky": {"header": "a", "cookie": "b"}}]},
         "rules[0].sticky: give exactly one of header, cookie, client_address"),
        ({"rules": [{"header": "x-a", "values": {"1": 2}}]}, "rules[0].values.1: must be a string, not the number 2"),
        ({"default": ""}, "default: a variant must be a name of letters, digits, '-', '_' or '.', not ''"),
        ({"set_cookie": {}}, "set_cookie.name: missing: a string is required"),
        ({"rulez": []}, "rulez: unknown key (did you mean 'rules'?)"),
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
                if "headers" in route["match"]:
                    continue  # the host matches routes by path prefix only
                metadata = route.get("metadata", {}).get("filter_metadata", {})
                routes.append(Route(route["match"]["prefix"], f"readme-{i}", metadata))
    assert len(configs) >= 3 and routes, "README.md lost its examples"
    for config in configs:
        host = load(config, routes=routes)
        for route in routes:
            assert get(host, route.prefix, headers=[("x-user-id", "u1")]).status == 200
        assert [m for m in host.log_messages() if "canary:" in m] == []
