"""Facts about the VM the filter runs in (each Envoy worker thread has its own VM)."""

from __future__ import annotations

from . import hostcalls
from .errors import UsageError

_keep_compiler = False  # set by keep_compiler(); read by the build (a build fact) and by native mode


def keep_compiler() -> None:
    """Keep CPython's parser and compiler in the module Envoy loads. Call it at module level.

    The module Envoy loads normally leaves them out: filters run bytecode compiled at build time,
    and V8 compiles every function of a module before the first request, so the compiler would
    cost start-up time (about a fifth more code) in every Envoy for code that never runs. Without
    it, compiling Python source inside a callback (``on_configure`` included) raises
    ``RuntimeError: compiling Python source at run time is not available in the served module``:
    ``eval``/``exec``/``compile`` of a string, ``ast.parse``, ``ast.literal_eval``, creating a
    ``namedtuple`` or a dataclass, ``typing.get_type_hints`` on string annotations, a template
    engine compiling a template from the configuration. A filter that must do that calls this
    and pays the longer start.
    """
    global _keep_compiler
    _keep_compiler = True


def memory_bytes() -> int:
    """Size of this VM's linear memory. It only grows: watch it to find a leak."""
    return hostcalls.memory_bytes()


def python_entries() -> int:
    """How many of Envoy's callbacks have run Python code in this VM. Callbacks a filter does
    not define are answered by the runtime without entering Python, and do not count."""
    return hostcalls.python_entries()


SLEEP_MESSAGE = (
    "time.sleep() in a filter: an Envoy worker cannot wait (in a callback every stream and connection of that "
    "worker would wait with it; module-level code runs once, at build time, where there is nothing to wait "
    "for). Wait without blocking: hold the stream (return Action.PAUSE) and resume it from on_tick "
    "(set_tick_period) or from a callout's answer (timeout_ms bounds the wait)"
)


def refuse_sleep(seconds: float) -> None:
    """What ``time.sleep`` is in a filter, inside Envoy and in the local host alike: ``sleep(0)``
    returns, any other raises :class:`~proxywasm.errors.UsageError` (:data:`SLEEP_MESSAGE`).
    Installed over ``time.sleep`` by the runtime's bootstrap (before the filter is imported) and by
    the local host's native mode while the filter runs."""
    if seconds != 0:
        raise UsageError(SLEEP_MESSAGE)


NO_FILES = (
    "a filter has no files inside Envoy (its VM has no filesystem): ship data as a Python module bundled with "
    "the filter, or pass it in the plugin configuration (on_configure)"
)


def refuse_open(file: object, *args: object, **kwargs: object) -> None:
    """Raise what ``open`` raises in a filter, inside Envoy and in the local host alike: a
    :class:`PermissionError` saying why (:data:`NO_FILES`) instead of WASI's "Capabilities
    insufficient". The runtime's bootstrap wraps ``builtins.open`` with it before the filter is
    imported (at build time too); native mode refuses the filter's own calls with it."""
    raise PermissionError(f"open({file!r}): {NO_FILES}")
