"""dispatch_call_on_tick's test: every 100 ms the plugin calls the ``web_service`` cluster from
its tick (``/ok`` or ``/fail`` at random) and logs each answer's headers and trailers.

``advance_time`` runs the ticks (each sends a callout), and after each the event loop, in which the
cluster's handler answers the callout before the clock moves on. (envoy.yaml runs two such plugins
in one VM; a ``Host`` holds one plugin.)
"""

from collections.abc import Callable
from pathlib import Path

from proxywasm_host import Host, Request

STATUS_LINE = "response header for the dispatched call: :status: "
Answer = tuple[int, list[tuple[str, str]], bytes, list[tuple[str, str]]]  # status, headers, body, trailers


def test_calls_on_every_tick(proxywasm_host: Callable[..., Host], proxywasm_mode: str) -> None:
    calls: list[Request] = []

    def web_service(request: Request) -> Answer:
        calls.append(request)
        return (200 if request.path == "/ok" else 503), [], b"", [("x-trailer", "t")]

    host = proxywasm_host(Path(__file__).parent, mode=proxywasm_mode, clusters={"web_service": web_service})
    assert host.log_messages() == ["set tick period milliseconds: 100"]
    assert host.advance_time(500) == 5  # five ticks, each sending a callout that is answered at once
    assert host.pending_http_calls == [] and len(calls) == 5
    for call in calls:
        assert call.path in ("/ok", "/fail")
        assert (call.header(":authority"), call.header("accept")) == ("some_authority", "*/*")
    messages = host.log_messages()
    assert [m.split(" for ")[0] for m in messages if m.startswith("called ")] == [f"called {n}" for n in range(1, 6)]
    statuses = [m.removeprefix(STATUS_LINE) for m in messages if m.startswith(STATUS_LINE)]
    assert statuses == ["200" if call.path == "/ok" else "503" for call in calls]
    assert messages.count("response trailer for the dispatched call: x-trailer: t") == 5
