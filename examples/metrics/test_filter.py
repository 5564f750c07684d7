"""metrics' test: one counter per value of ``my-custom-header``, read back with ``host.metric``.

The tags live in the counter's name; envoy.yaml's ``stats_tags`` turn them into Prometheus labels,
which only a real Envoy shows (tests/examples).
"""

from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm_host import Host


@pytest.fixture
def host(proxywasm_host: Callable[..., Host], proxywasm_mode: str) -> Host:
    return proxywasm_host(Path(__file__).parent, mode=proxywasm_mode)


def counter(value: str) -> str:
    return f"custom_header_value_counts_value={value}_reporter=wasmpythonsdk"


def test_counts_requests_per_header_value(host: Host) -> None:
    for value, times in (("foo", 3), ("bar", 2)):
        for _ in range(times):
            assert host.request("GET", "/", headers=[("my-custom-header", value)]).status == 200
    assert host.request("GET", "/").status == 200  # no header: nothing counted
    assert host.metric(counter("foo")) == 3
    assert host.metric(counter("bar")) == 2
    assert host.metrics == {counter("foo"): 3, counter("bar"): 2}
