"""VM start-up, configuration and context ordering as Envoy does them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from guest import Act, probe_wasm
from host_support import Probe

from proxywasm_host import Action, ConfigureError, Host, PeerType


def test_root_context_start_sequence(probe: Probe) -> None:
    assert probe.callbacks() == ["on_context_create", "on_vm_start", "on_configure"]
    assert probe.args("proxy_on_context_create")[:2] == (1, 0)
    assert probe.args("proxy_on_vm_start")[:2] == (1, 0)


def test_config_sizes_are_passed(load_probe: Callable[..., Probe]) -> None:
    p = load_probe(vm_config=b"vmcfg", plugin_config={"a": 1})
    assert p.args("proxy_on_vm_start")[:2] == (1, 5)
    assert p.args("proxy_on_configure")[:2] == (1, len(b'{"a": 1}'))


def test_http_stream_callback_order(probe: Probe) -> None:
    probe.host.clear_logs()
    resp = probe.host.request("POST", "/x", body=b"abc")
    assert resp.status == 200
    # Envoy's connection manager writes the access log before destroying filters: log, done, delete.
    assert probe.callbacks() == [
        "on_context_create",
        "on_request_headers",
        "on_request_body",
        "on_request_body",  # HTTP/1: the body, then an empty end-of-stream frame
        "on_response_headers",
        "on_response_body",
        "on_response_body",
        "on_log",
        "on_done",
        "on_delete",
    ]
    assert probe.args("proxy_on_context_create")[:2] == (2, 1)
    ctx, nheaders, eos, _ = probe.args("proxy_on_request_headers")
    assert (ctx, eos) == (2, 0)
    assert nheaders == len(resp.upstream_request.headers) - 1 if resp.upstream_request else False
    assert probe.args("proxy_on_request_body")[:3] == (2, 0, 1)


def test_headers_only_request_has_end_of_stream(probe: Probe) -> None:
    probe.host.request("GET", "/")
    assert probe.args("proxy_on_request_headers")[2] == 1


def test_second_stream_gets_next_id(probe: Probe) -> None:
    probe.host.request()
    probe.host.request()
    assert probe.args("proxy_on_context_create")[:2] == (3, 1)


def test_tcp_connection_order(probe: Probe) -> None:
    probe.host.clear_logs()
    conn = probe.host.connection()
    assert conn.new_connection() == Action.CONTINUE
    assert conn.downstream_data(b"hello") == Action.CONTINUE
    assert conn.upstream_data(b"world", end_of_stream=True) == Action.CONTINUE
    conn.close_downstream(PeerType.REMOTE)
    # L4 teardown is done, log, delete (unlike HTTP).
    assert probe.callbacks() == [
        "on_context_create",
        "on_new_connection",
        "on_downstream_data",
        "on_upstream_data",
        "on_upstream_connection_close",
        "on_downstream_connection_close",
        "on_done",
        "on_log",
        "on_delete",
    ]
    assert conn.upstream_sent == b"hello" and conn.downstream_sent == b"world"
    assert probe.args("proxy_on_downstream_connection_close")[:2] == (2, PeerType.REMOTE)


def test_tcp_pause_keeps_data_until_continue(probe: Probe) -> None:
    conn = probe.host.connection()
    probe.ret("proxy_on_downstream_data", 1)
    assert conn.downstream_data(b"held") == Action.PAUSE
    assert conn.upstream_sent == b""
    assert probe.call("proxy_continue_stream", 2, on=conn) == 0
    assert conn.upstream_sent == b"held"


def test_on_vm_start_false_is_configure_error() -> None:
    with pytest.raises(ConfigureError, match="proxy_on_vm_start returned false"):
        Host.load(probe_wasm(false=("proxy_on_vm_start",)))


def test_on_configure_false_at_load_is_configure_error() -> None:
    with pytest.raises(ConfigureError, match="proxy_on_configure returned false") as info:
        Host.load(probe_wasm(false=("proxy_on_configure",)))
    assert any(m == "on_configure" for _, m in info.value.logs)


def test_configure_false_is_reported_with_logs(probe: Probe) -> None:
    probe.ret("proxy_on_configure", 0)
    with pytest.raises(ConfigureError) as info:
        probe.host.configure(b"new")
    assert "proxy_on_configure returned false" in str(info.value)
    assert "on_configure" in str(info.value)  # the guest's own log line is part of the message


def test_reconfigure_passes_new_size(probe: Probe) -> None:
    probe.host.configure(b"twelve bytes")
    assert probe.args("proxy_on_configure")[:2] == (1, 12)


def test_shutdown_waits_for_proxy_done(probe: Probe) -> None:
    probe.ret("proxy_on_done", 0)
    probe.host.clear_logs()
    probe.host.shutdown()
    assert "on_delete" not in probe.callbacks()
    probe.act("proxy_on_tick", Act.DONE)
    probe.call("proxy_set_tick_period_milliseconds", 10)
    probe.host.tick()
    assert probe.result == 0
    assert probe.callbacks()[-1] == "on_delete"


def test_proxy_done_without_pending_shutdown_is_not_found(probe: Probe) -> None:
    assert probe.call("proxy_done") == 1
