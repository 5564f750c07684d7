"""multiple_dispatches' test: the response waits for ten callouts to ``httpbin``.

With a handler the cluster answers by itself; with ``None`` the calls stay in
``host.pending_http_calls`` and the test answers them one by one.
"""

from collections.abc import Callable
from pathlib import Path

from proxywasm_host import Action, Host, Request

HERE = Path(__file__).parent


def test_response_carries_the_total(proxywasm_host: Callable[..., Host], proxywasm_mode: str) -> None:
    calls: list[Request] = []

    def httpbin(request: Request) -> int:
        calls.append(request)
        return 200

    host = proxywasm_host(HERE, mode=proxywasm_mode, clusters={"httpbin": httpbin})
    response = host.request("GET", "/original")
    assert (response.status, response.header("total-dispatched")) == (200, "10")
    assert [call.path for call in calls] == ["/"] * 10
    messages = host.log_messages()
    countdown = [m for m in messages if m.startswith("pending dispatched requests: ")]
    assert countdown == [f"pending dispatched requests: {n}" for n in range(9, 0, -1)]
    assert messages[-1] == "response resumed after processed 10 dispatched request"


def test_response_held_until_the_last_answer(proxywasm_host: Callable[..., Host], proxywasm_mode: str) -> None:
    host = proxywasm_host(HERE, mode=proxywasm_mode, clusters={"httpbin": None})  # None: calls stay pending
    stream = host.http_stream()
    stream.request_headers([(":method", "GET"), (":path", "/"), (":authority", "x")], end_of_stream=True)
    assert stream.response_headers([(":status", "200")], end_of_stream=True) == Action.PAUSE
    calls = host.pending_http_calls
    assert len(calls) == 10
    for call in calls[:-1]:
        call.respond(200)
    assert stream.response_paused and stream.paused_in == "on_response_headers"
    calls[-1].respond(200)
    assert stream.ended  # the response went on to the client, with the header added
    assert stream.response.header("total-dispatched") == "10"
