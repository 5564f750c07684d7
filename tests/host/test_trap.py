"""Guest traps: a clear exception, the VM marked failed, later streams fail closed (or open)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from guest import Act
from host_support import Probe

from proxywasm_host import WasmTrap


def test_trap_raises_and_fails_vm(probe: Probe) -> None:
    probe.act("proxy_on_request_headers", Act.TRAP)
    with pytest.raises(WasmTrap) as info:
        probe.host.request("GET", "/")
    assert "Function: proxy_on_request_headers failed: Uncaught RuntimeError: unreachable" in str(info.value)
    assert "on_request_headers" in str(info.value)  # the guest's logs are in the message
    assert probe.host.failed
    # Later requests fail closed with a bare 503 and never reach the upstream.
    resp = probe.host.request("GET", "/")
    assert resp.status == 503 and resp.body == b"" and resp.local_reply
    assert resp.upstream_request is None
    assert [k for k, _ in resp.headers] == ["date", "server", "content-length"]


def test_trap_without_raising_gives_503(load_probe: Callable[..., Probe]) -> None:
    p = load_probe(raise_on_trap=False)
    p.act("proxy_on_request_headers", Act.TRAP)
    resp = p.host.request("GET", "/")
    assert resp.status == 503 and resp.details == "wasm_fail_stream"
    assert any("Uncaught RuntimeError: unreachable" in m for _, m in p.host.envoy_logs)


def test_fail_open_lets_later_requests_through(load_probe: Callable[..., Probe]) -> None:
    p = load_probe(raise_on_trap=False, fail_open=True)
    p.act("proxy_on_request_headers", Act.TRAP)
    assert p.host.request("GET", "/").status == 503  # the trapping request itself still fails
    p.host.clear_logs()
    resp = p.host.request("GET", "/")
    assert resp.status == 200 and resp.upstream_request is not None
    assert p.callbacks() == []  # the filter is skipped


def test_out_of_bounds_trap_message() -> None:
    from guest import probe_wasm

    from proxywasm_host import Host

    host = Host.load(probe_wasm(extra='(func (export "oob") (param i32) (drop (i32.load (i32.const -1))))'))
    with pytest.raises(WasmTrap, match="memory access out of bounds"):
        host.raw.call("oob", 0)
    assert host.failed


def test_trap_in_initialize_is_load_error() -> None:
    from guest import probe_wasm

    from proxywasm_host import Host, LoadError

    code = probe_wasm(extra='(func (export "_initialize") unreachable)')
    with pytest.raises(LoadError, match="Failed to start base Wasm"):
        Host.load(code)


def test_fail_reload_brings_a_fresh_vm(load_probe: Callable[..., Probe]) -> None:
    p = load_probe(raise_on_trap=False, fail_reload=True)
    p.act("proxy_on_request_headers", Act.TRAP)
    assert p.host.request().status == 503
    assert p.host.request().status == 503  # still backing off
    p.host.advance_time(1000)
    p.host.clear_logs()
    resp = p.host.request()
    assert resp.status == 200 and p.host.reloads == 1
    # A new VM: start-up ran again and the probe's action table is back to its defaults.
    assert Probe(p.host).callbacks()[:3] == ["on_context_create", "on_vm_start", "on_configure"]
