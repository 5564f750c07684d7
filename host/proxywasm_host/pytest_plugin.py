"""pytest plugin (entry point ``pytest11``), active wherever the package is installed:

* ``proxywasm_host``: a factory, ``proxywasm_host(module_or_source, **Host.load options) -> Host``;
  the hosts are shut down after the test, and a failing test's report shows every log line their
  filters wrote.
* ``proxywasm_mode``: ``"native"`` then ``"wasm"``; a test (or fixture) that asks for it runs once
  per mode, like proxy-wasm-go-sdk's ``vmTest``::

      @pytest.fixture
      def host(proxywasm_host, proxywasm_mode):
          return proxywasm_host(Path(__file__).parent / "filter.py", mode=proxywasm_mode)
"""

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


@pytest.fixture(params=["native", "wasm"])
def proxywasm_mode(request: pytest.FixtureRequest) -> str:
    """Run the test natively (the filter's Python in this process), then against its built module."""
    return str(request.param)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    hosts: list[Host] = getattr(item, "_proxywasm_hosts", [])
    if report.failed and hosts:
        text = "".join(_format_logs(h.logs + h.envoy_logs, limit=200) for h in hosts)
        report.sections.append(("proxywasm filter logs", text or "(no logs)"))
