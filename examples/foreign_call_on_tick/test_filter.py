"""foreign_call_on_tick's test: on every tick (1 ms) the plugin calls Envoy's ``compress``
foreign function, which the host registers as Envoy does (zlib; ``host.register_foreign_function``
adds or replaces one)."""

import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm_host import Host


@pytest.fixture
def host(proxywasm_host: Callable[..., Host], proxywasm_mode: str) -> Host:
    return proxywasm_host(Path(__file__).parent, mode=proxywasm_mode)


def test_compresses_on_every_tick(host: Host) -> None:
    assert host.advance_time(5) == 5
    result = zlib.compress(b"hello world!").hex()
    assert host.log_messages() == ["set tick period milliseconds: 1"] + [
        f"foreign function (compress) called: {n}, result: {result}" for n in range(1, 6)
    ]
