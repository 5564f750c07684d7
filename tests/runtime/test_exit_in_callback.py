"""A filter calling sys.exit() (SystemExit is not an Exception) meets the failure policy like
any other error, instead of escaping the dispatcher."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from proxywasm_host import Host

EXITING = """
import sys
import proxywasm
from proxywasm import HttpContext


@proxywasm.register
class Exiting(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        if headers[":path"] == "/exit":
            sys.exit(3)
"""


def test_sys_exit_fails_closed_and_the_vm_keeps_serving(build_filter: Callable[[str], Path]) -> None:
    host = Host.load(build_filter(EXITING))
    response = host.request("GET", "/exit")
    assert response.status == 500
    assert response.upstream_request is None
    assert any("SystemExit: 3" in message for _, message in host.logs)
    assert host.request("GET", "/fine").status == 200
