"""The SDK's own traceback (it cannot afford the traceback module inside the VM) reads as
CPython's: a recursion shows three lines and a count, not a thousand lines in Envoy's log; it
starts at the filter's own code, not in the SDK's dispatcher."""

from __future__ import annotations

import functools
import traceback
from typing import Any

from proxywasm._dispatch import format_exception
from proxywasm.errors import SDK_DIR


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


# Functions whose code claims to be the SDK's (as the dispatcher's and the coroutine driver's is):
# dispatch() catches what a callback raises, as the dispatcher does.
_SDK_CODE = compile(
    "import json\n"
    "def dispatch(callback):\n"
    "    try:\n"
    "        callback()\n"
    "    except Exception as exc:\n"
    "        return exc\n"
    "def parse(text):\n"
    "    return json.loads(text)\n",
    SDK_DIR + "fake_dispatch.py",
    "exec",
)
_sdk: dict[str, Any] = {}
exec(_SDK_CODE, _sdk)


def filter_callback() -> None:
    raise KeyError("x-user")


def frames(exc: BaseException) -> list[str]:
    return [line for line in format_exception(exc).splitlines() if line.startswith('  File "')]


def test_the_traceback_starts_at_the_filters_first_frame() -> None:
    shown = frames(_sdk["dispatch"](filter_callback))
    assert len(shown) == 1 and "in filter_callback" in shown[0], shown  # the SDK's dispatch frame left out


def test_the_sdks_frames_stay_where_the_sdk_called_the_standard_library() -> None:
    shown = frames(_sdk["dispatch"](lambda: _sdk["parse"]("{")))
    # The filter's lambda comes first; the SDK frame it called and json's frames stay below it.
    assert "in <lambda>" in shown[0] and "in parse" in shown[1] and "json" in shown[-1], shown
    # No frame of the filter's: the SDK frames that called json stay.
    shown = frames(_sdk["dispatch"](functools.partial(_sdk["parse"], "{")))  # partial: a C call, no frame
    assert "in dispatch" in shown[0] and "in parse" in shown[1] and "json" in shown[-1], shown
