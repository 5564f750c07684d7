"""postpone_requests' test: every request is held when its headers arrive and released on the
next tick (once a second). ``advance_time`` moves the clock and runs the ticks on the way."""

from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm_host import Action, Host

HEADERS = [(":method", "GET"), (":path", "/"), (":authority", "example.com")]


@pytest.fixture
def host(proxywasm_host: Callable[..., Host], proxywasm_mode: str) -> Host:
    return proxywasm_host(Path(__file__).parent, mode=proxywasm_mode)


def test_requests_wait_for_the_tick(host: Host) -> None:
    streams = [host.http_stream() for _ in range(2)]
    for stream in streams:
        assert stream.request_headers(HEADERS, end_of_stream=True) == Action.PAUSE
    host.advance_time(999)
    assert all(s.request_paused and s.upstream_request is None for s in streams)
    host.advance_time(1)  # the tick
    assert all(not s.request_paused and s.upstream_request is not None for s in streams)
    ids = [s.context_id for s in streams]
    assert host.log_messages() == [f"postpone request with context_id={i}" for i in ids] + [
        f"resume request with context_id={i}" for i in ids
    ]


def test_a_whole_request_is_answered_after_the_tick(host: Host) -> None:
    # host.request lets time pass while the request waits, as Envoy's event loop would.
    response = host.request("GET", "/")
    assert response.status == 200
    assert host.log_messages()[-1].startswith("resume request with context_id=")
