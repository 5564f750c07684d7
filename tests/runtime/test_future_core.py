"""What ``await`` does with a proxywasm Future: in the VM the runtime's C (``sdk/runtime/futures.c``,
``_proxywasm.FutureCore``), natively its Python twin (``proxywasm.tasks._FutureAwait``). Both must
behave alike: the awaited value, the exception and its traceback, claiming a callout that was
stored before it was awaited, and refusing to resume a coroutine whose future is still pending."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm.abi import AUTHOR_MISTAKE_PREFIX
from proxywasm_host import Host, Request

FILTER = """
import proxywasm
from proxywasm import Action, HttpContext
from proxywasm.errors import CalloutFailed, UsageError
from proxywasm import tasks


@proxywasm.register
class Await(HttpContext):
    async def on_request_headers(self, headers, end_of_stream):
        path = headers[":path"]
        if path == "/stored":
            call = self.http_call("auth", path="/ok")  # stored first: counted as unwaited until awaited
            proxywasm.log.info(f"in the VM's C: {type(call).__mro__[-2].__name__}")
            answer = await call
            headers["x-answer"] = answer.body.decode()
        elif path == "/failed":
            try:
                await self.http_call("down", path="/")
            except CalloutFailed as err:
                frames = []
                tb = err.__traceback__
                while tb is not None:
                    frames.append(tb.tb_frame.f_code.co_name)
                    tb = tb.tb_next
                self.send_response(502, f"{type(err).__name__} {','.join(frames)}")
        elif path == "/done":
            body = tasks.Future(self)
            body.set_result("already")
            headers["x-done"] = await body
        elif path == "/twice":
            call = self.http_call("auth", path="/ok")
            first = await call
            second = await call  # a done future answers again at once
            headers["x-same"] = str(first is second)
        elif path == "/iterated":
            call = self.http_call("auth", path="/ok")
            steps = call.__await__()
            pending = next(steps) is call  # iterated by hand: yields the future while it is pending
            answer = await call
            try:
                next(steps)
            except StopIteration as stop:  # then ends with the result, as an await does
                headers["x-iterated"] = f"{pending} {stop.value is answer}"
        elif path == "/caught":
            try:
                await Foreign()
            except UsageError:  # thrown into the coroutine by the driver; it goes on and returns
                headers["x-caught"] = "UsageError"
            return Action.CONTINUE


class Foreign:
    def __await__(self):
        yield "not a proxywasm future"
"""


def auth(request: Request) -> tuple[int, list[tuple[str, str]], bytes]:
    return 200, [], b"fine"


@pytest.fixture(params=["wasm", "native"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def host(mode: str, build_filter: Callable[[str], Path]) -> Host:
    wasm = build_filter(FILTER)
    module = wasm if mode == "wasm" else wasm.with_suffix("") / "filter.py"
    loaded = Host.load(module, mode=mode, clusters={"auth": auth})  # type: ignore[arg-type]
    loaded.add_cluster("down")
    return loaded


def test_a_stored_callout_awaited_later_is_claimed(host: Host, mode: str) -> None:
    response = host.request("GET", "/stored")
    assert response.status == 200
    assert response.upstream_request is not None
    assert response.upstream_request.header("x-answer") == "fine"
    assert not [m for m in host.log_messages() if AUTHOR_MISTAKE_PREFIX in m]
    core = "FutureCore" if mode == "wasm" else "_FutureAwait"
    assert f"in the VM's C: {core}" in host.log_messages()


def test_a_failed_callout_raises_at_the_await_with_the_filters_frame(host: Host) -> None:
    stream = host.http_stream()
    stream.request_headers([(":path", "/failed"), (":method", "GET")])
    (call,) = host.pending_http_calls
    call.cut_off()  # no response: an awaited call raises CalloutFailed
    assert stream.local_reply is not None
    assert stream.local_reply.status == 502
    # the traceback starts in the coroutine that awaited (nothing of the SDK's above it)
    assert stream.local_reply.body.startswith(b"CalloutFailed on_request_headers")


def test_awaiting_a_done_future_returns_at_once(host: Host) -> None:
    response = host.request("GET", "/done")
    assert response.upstream_request is not None
    assert response.upstream_request.header("x-done") == "already"


def test_a_done_callout_awaited_twice_answers_the_same(host: Host) -> None:
    response = host.request("GET", "/twice")
    assert response.upstream_request is not None
    assert response.upstream_request.header("x-same") == "True"


def test_the_awaitable_iterated_by_hand_yields_then_stops_with_the_result(host: Host) -> None:
    response = host.request("GET", "/iterated")
    assert response.upstream_request is not None
    assert response.upstream_request.header("x-iterated") == "True True"


def test_a_coroutine_that_catches_what_the_driver_throws_returns_its_action(host: Host) -> None:
    response = host.request("GET", "/caught")
    assert response.status == 200
    assert response.upstream_request is not None
    assert response.upstream_request.header("x-caught") == "UsageError"
