"""http_routing's test: an even dice sends the request to the canary (``:authority`` gets
``-canary``, which envoy.yaml routes to the canary cluster); a configuration byte fixes the dice."""

from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm_host import Host


@pytest.fixture
def load(proxywasm_host: Callable[..., Host], proxywasm_mode: str) -> Callable[[bytes], Host]:
    def load(plugin_config: bytes) -> Host:
        return proxywasm_host(Path(__file__).parent, mode=proxywasm_mode, plugin_config=plugin_config)

    return load


@pytest.mark.parametrize(("dice", "authority"), [(b"\x02", "example.com-canary"), (b"\x03", "example.com")])
def test_fixed_dice(load: Callable[[bytes], Host], dice: bytes, authority: str) -> None:
    response = load(dice).request("GET", "/", authority="example.com")
    assert response.upstream_request is not None
    assert response.upstream_request.header(":authority") == authority


def test_random_dice_picks_by_parity(load: Callable[[bytes], Host]) -> None:
    host = load(b"")
    authorities = []
    for _ in range(20):
        response = host.request("GET", "/", authority="example.com")
        assert response.upstream_request is not None
        authorities.append(response.upstream_request.header(":authority"))
    values = [int(m.removeprefix("value: ")) for m in host.log_messages() if m.startswith("value: ")]
    assert len(values) == 20
    assert authorities == ["example.com-canary" if v % 2 == 0 else "example.com" for v in values]
