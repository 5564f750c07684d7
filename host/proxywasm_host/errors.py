"""Exceptions raised by the local host. Each carries the filter's logs so a failing test shows them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _format_logs(logs: Sequence[tuple[int, str]], limit: int = 50) -> str:
    if not logs:
        return ""
    names = ["trace", "debug", "info", "warn", "error", "critical"]
    tail = list(logs)[-limit:]
    lines = [f"  [{names[lvl] if 0 <= lvl < len(names) else lvl}] {msg}" for lvl, msg in tail]
    return "\nfilter logs:\n" + "\n".join(lines)


def hide_host_frames(excinfo: Any) -> bool:
    """pytest's ``__tracebackhide__`` for the host's own modules: their frames are left out of a
    failing test's traceback when the error is about the filter (a :class:`ProxyWasmHostError`,
    whose message says what and where), and shown for anything else (a bug of the host).
    ``pytest --full-trace`` shows them all."""
    return bool(excinfo.errisinstance(ProxyWasmHostError))


class ProxyWasmHostError(Exception):
    """Base class; ``logs`` holds the (level, message) pairs the guest had logged so far."""

    def __init__(self, message: str, logs: Sequence[tuple[int, str]] = ()) -> None:
        self.reason = message
        self.logs = list(logs)
        super().__init__(message + _format_logs(self.logs))


class LoadError(ProxyWasmHostError):
    """The module cannot be loaded (bad bytes, missing import, no ABI version export, start trapped)."""


class ConfigureError(ProxyWasmHostError):
    """``proxy_on_vm_start`` or ``proxy_on_configure`` returned false (Envoy rejects the plugin)."""


class WasmTrap(ProxyWasmHostError):
    """The guest trapped (unreachable, out-of-bounds, stack overflow). Envoy marks the VM failed."""


class VmFailed(ProxyWasmHostError):
    """A call was made into a VM that had already failed."""


class StreamStalled(ProxyWasmHostError):
    """The stream cannot finish: the filter paused it and nothing pending could resume it, or it
    left a body shorter than its ``content-length``. In Envoy the stream would hang until a timeout."""


class BodyOverrun(ProxyWasmHostError):
    """The filter left more body than the message's ``content-length`` says. Envoy sends all of it
    (it does not fix the header); the peer reads ``content-length`` bytes and takes the rest as the
    start of the next message on that connection: request smuggling upstream, a corrupt response
    at the client (seen with Envoy 1.40). Raised as an author mistake is: with
    ``Host.load(raise_on_mistake=False)`` the host logs it and shows what the peer reads."""


class NotServed(ProxyWasmHostError):
    """The test drives the filter through a listener it does not serve: an HTTP request to a filter
    whose plugins make only L4 contexts (StreamContexts), or an L4 connection to an HTTP-only one.
    Envoy would never run it there (``proxywasm run`` and ``proxywasm package --type`` choose by the
    same build record), so the test would exercise nothing."""


class EnvoyCrash(ProxyWasmHostError):
    """What the filter did crashes real Envoy (the message says how); the host refuses to answer
    as if nothing happened."""


class AuthorMistake(ProxyWasmHostError):
    """The filter logged an author mistake: a line starting with
    :data:`proxywasm.abi.AUTHOR_MISTAKE_PREFIX`, for code Envoy runs without complaint that does not
    do what its author meant (a callout nothing waits for, ``on_configure`` returning ``None``, a
    second local reply...). Raised when the guest call that logged it returns; in Envoy the line is
    only logged. ``Host.load(raise_on_mistake=False)`` keeps such lines as log lines."""
