"""The SDK's own traceback (it cannot afford the traceback module inside the VM) reads as
CPython's: a recursion shows three lines and a count, not a thousand lines in Envoy's log."""

from __future__ import annotations

import traceback

from proxywasm._dispatch import format_exception


def recurse(n: int) -> None:
    if n == 0:
        raise ValueError("deep")
    recurse(n - 1)


def test_a_recursion_is_collapsed_as_cpython_collapses_it() -> None:
    try:
        recurse(50)
    except ValueError as exc:
        ours = format_exception(exc).splitlines()
        theirs = [
            line
            for line in "".join(traceback.format_exception(exc)).splitlines()
            if line.startswith(("Traceback", '  File "', "  [Previous", "ValueError"))
        ]
    assert ours == theirs
    assert "  [Previous line repeated 47 more times]" in ours
    assert len(ours) < 10
