"""A VM that traps (AS abort -> proc_exit, or `unreachable`) under each failure_policy."""

from __future__ import annotations

import time
from pathlib import Path

from envoy_support import Reply, as_envoy, fetch

from proxywasm_build.envoy import Envoy

TRAP_LOG = "wasm log p_trap trap vm_trap: trap requested at: assembly/trap.ts("
UNCAUGHT = "Function: proxy_on_request_headers failed: Uncaught RuntimeError: unreachable"


def _trap(envoy: Envoy) -> Reply:
    healthy = fetch(envoy.port(), "/t")
    assert healthy.status == 200 and healthy.header("x-vm-requests") == "1"
    return fetch(envoy.port(), "/t", headers={"x-trap": "abort"})


def _assert_trap_reply(reply: Reply, envoy: Envoy) -> None:
    # The request that trapped gets a bare 503 whatever the policy.
    assert reply.status == 503
    assert reply.body == b""
    assert reply.names() == ["date", "server", "content-length"]
    assert reply.header("content-length") == "0"
    envoy.wait_for_log(UNCAUGHT)
    logs = [ln for ln in envoy.log_lines() if ln.logger == "wasm"]
    # AS abort logs at critical first; proc_exit does not stop execution, so the following
    # `unreachable` is what V8 reports.
    assert any(ln.level == "critical" and ln.message.startswith(TRAP_LOG) for ln in logs)
    assert any(ln.level == "error" and ln.message == UNCAUGHT for ln in logs)


def test_fail_closed_default(as_modules: dict[str, Path]) -> None:
    with as_envoy(as_modules["trap"], name="p_trap", root_id="trap", vm_id="vm_trap") as (envoy, upstream):
        _assert_trap_reply(_trap(envoy), envoy)
        # The VM stays dead: every later request is refused without reaching the upstream.
        for _ in range(3):
            later = fetch(envoy.port(), "/t")
            assert later.status == 503 and later.body == b""
        assert [r.path for r in upstream.requests] == ["/t"]


def test_fail_open(as_modules: dict[str, Path]) -> None:
    with as_envoy(as_modules["trap"], name="p_trap", root_id="trap", vm_id="vm_trap", failure_policy="FAIL_OPEN") as (
        envoy,
        upstream,
    ):
        _assert_trap_reply(_trap(envoy), envoy)
        # Later requests skip the failed filter entirely (no x-vm-requests; a trap header is harmless).
        later = fetch(envoy.port(), "/t", headers={"x-trap": "unreachable"})
        assert later.status == 200
        assert later.header("x-vm-requests") is None
        assert len(upstream.requests) == 2


def test_fail_reload(as_modules: dict[str, Path]) -> None:
    with as_envoy(as_modules["trap"], name="p_trap", root_id="trap", vm_id="vm_trap", failure_policy="FAIL_RELOAD") as (
        envoy,
        _,
    ):
        _assert_trap_reply(_trap(envoy), envoy)
        # Envoy reloads the VM after a back-off (about 1 s); until then requests get 503.
        deadline = time.monotonic() + 20
        reply = fetch(envoy.port(), "/t")
        while reply.status != 200 and time.monotonic() < deadline:
            assert reply.status == 503
            time.sleep(0.2)
            reply = fetch(envoy.port(), "/t")
        assert reply.status == 200
        # A fresh VM: module globals start over.
        assert reply.header("x-vm-requests") == "1"
        stats = envoy.stats()
        assert stats["wasm.p_trap.vm_reload_success"] >= 1
        assert stats["wasm.p_trap.vm_reload_backoff"] >= 1
