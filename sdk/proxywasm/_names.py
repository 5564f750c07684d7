"""Build-time check of a filter's context classes: methods named like callbacks that are none
(``on_request_header``), callbacks of another kind of context, ``async def`` where the SDK cannot
wait. :func:`proxywasm.register` runs it while ``proxywasm build`` imports the filter; the
bootstrap then drops this module, so it costs no memory in Envoy's VMs."""

from __future__ import annotations

from ._dispatch import _ASYNC_OK, _CO_ASYNC_GENERATOR, _CO_COROUTINE, _ROUTES
from .context import Context, HttpContext, PluginContext, StreamContext
from .errors import CallbackNameError

_KINDS = {PluginContext: "PluginContext", HttpContext: "HttpContext", StreamContext: "StreamContext"}
_A = {"PluginContext": "a PluginContext", "HttpContext": "an HttpContext", "StreamContext": "a StreamContext"}
_NAMES = {kind: tuple(dict.fromkeys(routes.values())) for kind, routes in _ROUTES.items()}
# Names from the ABI and other SDKs that a filter author may reach for, and what to use instead.
_ALIASES = {
    "on_http_request_headers": "on_request_headers", "on_http_request_body": "on_request_body",
    "on_http_request_trailers": "on_request_trailers", "on_http_response_headers": "on_response_headers",
    "on_http_response_body": "on_response_body", "on_http_response_trailers": "on_response_trailers",
    "on_http_stream_done": "on_done", "on_stream_done": "on_done", "on_delete": "on_done",
    "on_downstream_connection_close": "on_downstream_close", "on_upstream_connection_close": "on_upstream_close",
    "on_plugin_start": "on_configure", "on_configuration": "on_configure",
}  # fmt: skip
_NO_METHOD = (
    "on_http_call_response", "on_grpc_call_response", "on_grpc_receive", "on_grpc_close",
    "on_grpc_receive_initial_metadata", "on_grpc_receive_trailing_metadata",
)  # fmt: skip


def _distance(a: str, b: str) -> int:
    """Levenshtein distance (small strings only)."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ca != cb))
    return row[-1]


def _nearest(name: str, valid: tuple[str, ...]) -> str | None:
    """The valid callback name ``name`` looks like a slip of, or None for an unrelated name."""
    if name in _ALIASES:
        return _ALIASES[name] if _ALIASES[name] in valid else None
    plain = name.replace("_http_", "_")
    if plain in valid:
        return plain
    best: tuple[int, str] | None = None
    for order, callback in enumerate(valid):  # in callback order: headers before body
        distance = _distance(plain, callback)
        shorter = min(len(plain), len(callback))
        common = next((i for i in range(shorter) if plain[i] != callback[i]), shorter)
        if distance <= (1 if len(callback) <= 7 else 2):
            score = distance  # a typo: on_request_header, on_tik
        elif (len(plain) > 4 and callback.startswith(plain)) or (  # cut short: on_response, on_request
            len(callback) > 7  # (not on_log, on_done, on_tick: on_login, on_done_cleanup are fine)
            and (
                plain.startswith(callback + "_")  # a suffix added: on_response_body_chunk
                or (len(plain) >= len(callback) and common >= len(callback) - 2)  # on_configuration
            )
        ):
            score = 10 + order
        else:
            continue
        if best is None or score < best[0]:
            best = (score, callback)
    return best[1] if best else None


_CO_VARARGS = 0x04
_DESCRIPTORS = (staticmethod, classmethod, property)


def _signature(code: object) -> str:
    """``(self, headers, end_of_stream)`` from a code object's positional parameters."""
    names = code.co_varnames[: code.co_argcount]  # type: ignore[attr-defined]
    return f"({', '.join(names)}{', *args' if code.co_flags & _CO_VARARGS else ''})"  # type: ignore[attr-defined]


def _arity_problem(where: str, function: object, sdk_code: object) -> str:
    """A callback whose positional parameters cannot take what Envoy's callback passes (the SDK's
    own definition of it shows what: ``(self, headers, end_of_stream)``)."""
    code = function.__code__  # type: ignore[attr-defined]
    given = sdk_code.co_argcount  # type: ignore[attr-defined]
    required = code.co_argcount - len(getattr(function, "__defaults__", None) or ())
    if required <= given and (code.co_argcount >= given or code.co_flags & _CO_VARARGS):
        return ""
    return f"{where}{_signature(code)} cannot be called as Envoy calls it: {where.split('.')[-1]}{_signature(sdk_code)}"


def _attribute_line(klass: type, name: str) -> tuple[str, int]:
    """Where the class sets ``name`` (build time only: inspect reads the source)."""
    import inspect

    try:
        lines, start = inspect.getsourcelines(klass)
        filename = inspect.getsourcefile(klass) or "?"
    except (OSError, TypeError):
        return "?", 0
    for offset, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(name) and stripped[len(name) :].lstrip()[:1] in (":", "="):
            return filename, start + offset
    return filename, start


# The class attributes a filter sets on a context (the SDK's ClassVar declarations in context.py;
# listed here because the VM that runs this check keeps no annotations; tests/sdk/test_callback_names.py
# checks the two agree).
SETTINGS: dict[type, tuple[str, ...]] = {
    PluginContext: ("http_context", "stream_context", "failure_policy", "cpu_budget_ms"),
    HttpContext: ("allow_on_headers_stop_iteration",),
    StreamContext: (),
}


def callback_name_problems(cls: type) -> list[tuple[str, int, str]]:
    """(file, line, message) for each method of ``cls`` (and its own bases up to the SDK's) that
    is named like a callback but is none, is a callback of another kind of context, or is an
    ``async def`` where the SDK cannot await."""
    kind = next((b for b in _ROUTES if issubclass(cls, b)), None)
    if kind is None:
        return []
    valid = _NAMES[kind]
    others = {n: _KINDS[k] for k, names in _NAMES.items() if k is not kind for n in names if n not in valid}
    settings = SETTINGS[kind]
    problems: list[tuple[str, int, str]] = []
    seen: set[str] = set()
    for klass in cls.__mro__:
        if klass in _ROUTES or klass is Context or klass is object:
            break
        for name, function in vars(klass).items():
            code = getattr(function, "__code__", None)
            if name in seen:
                continue
            if code is None:
                if not name.startswith("_") and name not in settings and not isinstance(function, _DESCRIPTORS):
                    nearest = min(settings, key=lambda setting: _distance(name, setting), default=None)
                    if nearest is not None and len(nearest) > 6 and _distance(name, nearest) <= 2:
                        filename, line = _attribute_line(klass, name)
                        what = f"{klass.__name__}.{name} is not a setting {_A[_KINDS[kind]]} has"
                        problems.append((filename, line, f"{what}, so it changes nothing: did you mean {nearest}?"))
                continue
            seen.add(name)
            where = f"{klass.__name__}.{name}"
            message = ""
            if name in valid:
                flags = code.co_flags
                sdk_code = getattr(getattr(kind, name, None), "__code__", None)
                arity = _arity_problem(where, function, sdk_code) if sdk_code is not None else ""
                if arity:
                    message = arity
                elif flags & _CO_ASYNC_GENERATOR:
                    message = f"{where} is an async generator: a callback returns (or awaits), it does not yield"
                elif flags & _CO_COROUTINE and name not in _ASYNC_OK[kind]:
                    allowed = ", ".join(_ASYNC_OK[kind]) or "none of them"
                    message = (
                        f"{where} is async def, but the SDK cannot wait in {name} (Envoy needs its answer at once); "
                        f"{_A[_KINDS[kind]]} may await in: {allowed}"
                    )
            elif not name.startswith(("on_", "validate_")):
                continue
            elif name in others or _ALIASES.get(name) in others:
                callback = name if name in others else _ALIASES[name]
                named = "" if callback == name else f" (named {callback} in this SDK)"
                message = (
                    f"{where} is {_A[others[callback]]} callback{named}: Envoy never calls it on "
                    f"{_A[_KINDS[kind]]}; define it on {_A[others[callback]]} subclass"
                )
            elif name in _NO_METHOD:
                message = (
                    f"{where} is never called: a callout's answer goes to the callback passed to "
                    "http_call/grpc_call, or is awaited (response = await self.http_call(...))"
                )
            else:
                nearest = _nearest(name, valid)
                if nearest is not None:
                    message = (
                        f"{where} is not {_A[_KINDS[kind]]} callback, so Envoy never calls it: did you mean {nearest}? "
                        "(if it is your own method, e.g. a callout's callback, give it a name that does not look "
                        "like a callback's)"
                    )
            if message:
                problems.append((code.co_filename, code.co_firstlineno, message))
    return problems


def check_callback_names(cls: type) -> None:
    """Raise :class:`CallbackNameError` (``file:line: message``) for the first problem found."""
    problems = callback_name_problems(cls)
    if problems:
        filename, line, message = problems[0]
        raise CallbackNameError(f"{filename}:{line}: {message}")
