"""helloworld's test: the plugin logs when it is configured and then on every tick.

Shows the ``proxywasm_host`` and ``proxywasm_mode`` fixtures (each test runs natively, then against
the built module) and ``advance_time``, which moves the host's clock and fires the ticks on the way.
"""

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm_host import Host


@pytest.fixture
def host(proxywasm_host: Callable[..., Host], proxywasm_mode: str) -> Host:
    # The example's directory is the filter's source: wasm mode builds it once (cached by content).
    return proxywasm_host(Path(__file__).parent, mode=proxywasm_mode)


def test_logs_when_configured(host: Host) -> None:
    assert host.log_messages() == ["on_configure from Python!"]


def test_logs_on_every_tick(host: Host) -> None:
    host.clear_logs()
    assert host.advance_time(3000) == 3  # a tick a second
    messages = host.log_messages()
    assert messages[1::2] == ["on_tick called"] * 3
    for line in messages[0::2]:
        assert re.fullmatch(r"It's \d{19}: random value: \d+", line), line


def test_requests_pass_through(host: Host) -> None:
    response = host.request("GET", "/", headers=[("x-a", "1")])
    assert response.status == 200
    assert response.upstream_request is not None
    assert response.upstream_request.header("x-a") == "1"
