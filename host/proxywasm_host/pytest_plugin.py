"""pytest plugin (entry point ``pytest11``): a ``proxywasm_host`` factory fixture; on failure the logs of
every host the test loaded are attached to the report."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from .assertions import assert_logged, assert_response
from .errors import _format_logs
from .host import Host

__all__ = ["assert_logged", "assert_response"]

HostFactory = Callable[..., Host]


@pytest.fixture
def proxywasm_host(request: pytest.FixtureRequest) -> Iterator[HostFactory]:
    """``proxywasm_host(path_or_bytes, **Host.load options) -> Host``; hosts are shut down afterwards."""
    hosts: list[Host] = []
    request.node._proxywasm_hosts = hosts

    def load(module: str | Path | bytes | bytearray, **options: Any) -> Host:
        host = Host.load(module, **options)
        hosts.append(host)
        return host

    yield load
    for host in hosts:
        try:
            host.shutdown()
        except Exception:  # a failed VM at teardown must not hide the test's own result
            pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    hosts: list[Host] = getattr(item, "_proxywasm_hosts", [])
    if report.failed and hosts:
        text = "".join(_format_logs(h.logs + h.envoy_logs, limit=200) for h in hosts)
        report.sections.append(("proxywasm filter logs", text or "(no logs)"))
