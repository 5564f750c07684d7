"""The exceptions the SDK raises, all under :class:`ProxyWasmError` (re-exported by ``proxywasm``).

::

    ProxyWasmError
    ├── HostCallError            a host function answered with a status other than OK
    │   └── HeadersUnavailable   a header map Envoy no longer holds (it answered BAD_ARGUMENT)
    ├── CasMismatch              shared data changed since it was read
    ├── CalloutFailed            an awaited HTTP callout got no response at all (Envoy reset it)
    ├── BodyTooLarge             an awaited body went over its ``max_bytes``
    └── UsageError               the SDK was used in a way that cannot work
        ├── LocalReplyAlreadySent  a second local reply on one stream
        └── CallbackNameError    a method named like a callback that is none (raised at build time)

A :class:`UsageError` that escapes a callback is logged with
:data:`~proxywasm.abi.AUTHOR_MISTAKE_PREFIX` (the local host turns such lines into test failures).
"""

from __future__ import annotations

from .abi import Status

#: The directory of the SDK's own files (in a VM ``/bundle/proxywasm/``): the CPU budget and the
#: tracebacks in the filter's log tell the SDK's frames from the filter's by it.
SDK_DIR = (lambda: None).__code__.co_filename.rpartition("/")[0] + "/"


class ProxyWasmError(Exception):
    """Base of every exception the SDK raises."""


class HostCallError(ProxyWasmError):
    """A host function returned a status other than OK: ``call`` is the ABI function's name,
    ``status`` the :class:`~proxywasm.abi.Status` (or the raw int for an unknown one)."""

    def __init__(self, call: str, status: int, detail: str = "") -> None:
        self.call = call
        try:
            self.status: Status | int = Status(status)
        except ValueError:
            self.status = status
        name = self.status.name if isinstance(self.status, Status) else str(status)
        super().__init__(f"{call} failed: {name}" + (f": {detail}" if detail else ""))


class ConfigError(ProxyWasmError):
    """The plugin configuration is invalid (see :mod:`proxywasm.config`). ``path`` is the key's
    path (``""`` for the whole configuration, ``"rules[2].prefix"`` for a nested one), ``problem``
    what is wrong with it. Raised from ``on_configure`` it rejects the configuration and is
    logged as one line, without a traceback."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)


class HeadersUnavailable(HostCallError):
    """A header map was read or written when Envoy no longer holds it (Envoy answers
    BAD_ARGUMENT). Envoy drops its pointer to the request headers once ``on_request_headers``
    returns CONTINUE or the paused request is resumed (likewise trailers and the response side),
    and in ``on_log`` the maps are read-only. The message names the callback and the rule."""


class CasMismatch(ProxyWasmError):
    """Another worker changed the value since it was read: read again and retry."""


class CalloutFailed(ProxyWasmError):
    """An awaited HTTP callout got no response: Envoy reset it (for example the target closed
    the connection in the middle of the response) and delivered no headers at all.

    Timeouts and unreachable clusters are *not* failures: Envoy answers them with its own
    responses (504 ``upstream request timeout``, 503 ``upstream connect error ...``), which the
    ``await`` returns like any response."""

    def __init__(self, cluster: str, token: int, detail: str = "reset") -> None:
        self.cluster = cluster
        self.token = token
        super().__init__(f"the callout to cluster {cluster!r} (token {token}) got no response: {detail}")


class BodyTooLarge(ProxyWasmError):
    """An awaited request (or response) body grew over ``max_bytes``. The SDK has already
    answered the stream (413 for a request body; 500 for a response body, or a reset when the
    client already has the response headers); catch it to run clean-up or count it."""

    def __init__(self, what: str, size: int, max_bytes: int) -> None:
        self.size = size
        self.max_bytes = max_bytes
        super().__init__(f"the {what} body reached {size} bytes, over max_bytes={max_bytes}")


class UsageError(ProxyWasmError):
    """The filter used the SDK in a way that cannot work; the message says what to do instead."""


class LocalReplyAlreadySent(UsageError):
    """``send_response`` on a stream that already has a local reply (from the filter or from its
    failure policy). Envoy 1.40 crashes (SIGSEGV) on a second local reply in the response path,
    so the SDK refuses every second one before it reaches Envoy."""


class CallbackNameError(UsageError):
    """A context method is named like a callback but is none (``on_request_header``), is a
    callback of another kind of context, or is ``async def`` where the SDK cannot wait. Raised by
    :func:`proxywasm.register`, so ``proxywasm build`` fails with ``file:line`` and the nearest
    valid name."""
