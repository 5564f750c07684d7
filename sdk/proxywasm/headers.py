"""Header maps as Python mappings.

A :class:`Headers` is a live view: every read and write goes to Envoy, so it always shows what
Envoy will forward. :class:`HeaderPairs` has the same reading API over a copy (the headers and
trailers of a callout's answer, gRPC metadata).

Text and bytes: a value read as ``str`` is decoded as UTF-8 with ``surrogateescape``, and every
``str`` written is encoded the same way, so a value read and written back keeps its exact bytes
(also when they are not UTF-8). ``get_bytes`` / ``items_bytes`` give the raw bytes.
"""

from __future__ import annotations

from . import hostcalls
from .abi import MapType, Status
from .errors import HeadersUnavailable, HostCallError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import (
        Callable,
        ItemsView,
        Iterable,
        Iterator,
        KeysView,
        Mapping,
        MutableMapping,
        ValuesView,
    )
    from typing import Any

    from .context import Context

    HeaderValue = str | bytes
    _MappingBase = MutableMapping[str, str]
    _ReadMappingBase = Mapping[str, str]
else:
    # The mapping methods are written out below: collections.abc (with its 30 classes) would
    # cost memory in every VM. If the filter imports it anyway, the classes are registered with it.
    _MappingBase = object
    _ReadMappingBase = object

_MISSING = object()


_raw = hostcalls.raw  # the methods below call the host directly (see hostcalls.raw)
# Header names as Envoy's keys (lower-case bytes), by the name a filter passed: filters name the
# same few headers on every request, and a dict lookup is cheaper than encode() and lower().
# Bounded, so a filter naming headers it read from requests cannot grow it without end.
_KEYS: dict[object, bytes] = {}
_KEYS_MAX = 128  # about 16 KiB at most per VM; filters name far fewer headers


def _key(name: HeaderValue) -> bytes:
    # Envoy stores header names in lower case; lookups are case-insensitive.
    key = (name.encode("utf-8", "surrogateescape") if isinstance(name, str) else name).lower()
    if len(_KEYS) < _KEYS_MAX and type(name) in (str, bytes):
        _KEYS[name] = key
    return key


def _value(value: HeaderValue) -> bytes:
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _first_values(pairs: list[tuple[bytes, bytes]]) -> dict[str, str]:
    first: dict[str, str] = {}
    for k, v in pairs:
        first.setdefault(_text(k), _text(v))
    return first


# What each map is and when Envoy holds it: the rule a HeadersUnavailable names.
_RULES = {
    MapType.HTTP_REQUEST_HEADERS: (
        "the request headers",
        "Envoy holds them only during on_request_headers and while the request stays paused "
        "(Action.PAUSE); it forwarded them when on_request_headers returned CONTINUE or the request "
        "was resumed. Read what you need in on_request_headers (e.g. self.path = headers[':path']).",
    ),
    MapType.HTTP_REQUEST_TRAILERS: (
        "the request trailers",
        "Envoy holds them only during on_request_trailers and while the request stays paused.",
    ),
    MapType.HTTP_RESPONSE_HEADERS: (
        "the response headers",
        "Envoy holds them only during on_response_headers and while the response stays paused "
        "(Action.PAUSE); it forwarded them when on_response_headers returned CONTINUE or the response "
        "was resumed.",
    ),
    MapType.HTTP_RESPONSE_TRAILERS: (
        "the response trailers",
        "Envoy holds them only during on_response_trailers and while the response stays paused.",
    ),
}
_CALLOUT_RULE = ("the callout's answer headers", "Envoy holds them only while it delivers the answer.")


def running_callback() -> str:
    """The Envoy callback being handled (``on_request_body``, ``on_http_call_response``, ...; the
    innermost one when Envoy calls in during a host call; "" outside one), as the runtime's C entry
    points record it."""
    return str(_raw.running_callback())


def unavailable(map_type: MapType, err: HostCallError) -> HostCallError:
    """The error to raise for ``err`` from a host call on ``map_type``: a :class:`HeadersUnavailable`
    saying which callback and which rule when Envoy answered BAD_ARGUMENT, else ``err`` itself."""
    if err.status != Status.BAD_ARGUMENT:
        return err
    what, rule = _RULES.get(map_type, _CALLOUT_RULE)
    callback = running_callback()
    if callback == "on_log":
        rule = "in on_log (Envoy's access-log phase) a filter may read the headers but not change them."
    where = f" in {callback}" if callback else ""
    return HeadersUnavailable(err.call, err.status, f"{what} are not available{where}: {rule}")


class Headers(_MappingBase):
    """Request or response headers (or trailers) of the current stream.

    ``headers["x-user"]`` gives the first value as ``str`` (``KeyError`` if absent),
    ``headers.get_all(name)`` every value, ``headers["x"] = "v"`` replaces all values,
    ``headers.add(name, value)`` appends one, ``del headers["x"]`` removes all.
    Names are case-insensitive; pseudo-headers (``:path``, ``:method``, ``:authority``,
    ``:status``) work like any other. Bytes are accepted wherever ``str`` is, and
    :meth:`get_bytes` / :meth:`items_bytes` return raw values. A write raises ``ValueError`` for
    a header Envoy cannot send: a name that is not an HTTP token, a value with a control character
    other than HT (Envoy answers such a request 503 and writes such a response header to the
    client as it is: header injection).

    The ``headers`` a callback receives act on the stream whose callback runs;
    ``self.request_headers`` (and the other three) act on their own stream from any callback,
    e.g. on a held stream from the plugin's ``on_tick``. Envoy holds a map only while the stream
    is in (or paused in) the matching callback: outside that, access raises
    :class:`~proxywasm.errors.HeadersUnavailable`.
    """

    __slots__ = ("map_type",)

    def __init__(self, map_type: MapType) -> None:
        self.map_type = map_type

    # The hot methods look the key up in _KEYS inline and call the host directly: in the VM each
    # Python-level call costs about 70 ns, a third of a host call's.
    def __getitem__(self, name: HeaderValue) -> str:
        try:
            key = _KEYS[name]
        except (KeyError, TypeError):
            key = _key(name)
        try:
            value: bytes | None = _raw.get_header_map_value(self.map_type, key)
        except HostCallError as err:
            raise unavailable(self.map_type, err) from None
        if value is None:
            raise KeyError(name)
        try:
            return value.decode()  # as _text(), a third cheaper: no error handler to look up
        except UnicodeDecodeError:
            return value.decode("utf-8", "surrogateescape")

    def get_bytes(self, name: HeaderValue) -> bytes | None:
        """The first value of ``name`` as bytes, or ``None``."""
        try:
            key = _KEYS[name]
        except (KeyError, TypeError):
            key = _key(name)
        try:
            value: bytes | None = _raw.get_header_map_value(self.map_type, key)
        except HostCallError as err:
            raise unavailable(self.map_type, err) from None
        return value

    def get_all(self, name: HeaderValue) -> list[str]:
        key = _key(name)
        return [_text(v) for k, v in self.items_bytes() if k == key]

    def __setitem__(self, name: HeaderValue, value: HeaderValue) -> None:
        try:
            key = _KEYS[name]
        except (KeyError, TypeError):
            key = _key(name)
        if type(value) is str:
            try:
                raw_value = value.encode()  # as _value(), a third cheaper: no error handler to look up
            except UnicodeEncodeError:
                raw_value = value.encode("utf-8", "surrogateescape")
        else:
            raw_value = _value(value)
        try:
            _raw.replace_header_map_value(self.map_type, key, raw_value)
        except HostCallError as err:
            raise unavailable(self.map_type, err) from None

    def add(self, name: HeaderValue, value: HeaderValue) -> None:
        """Append a value, keeping any existing ones (a repeated header)."""
        try:
            key = _KEYS[name]
        except (KeyError, TypeError):
            key = _key(name)
        if type(value) is str:
            try:
                raw_value = value.encode()  # as _value(), a third cheaper: no error handler to look up
            except UnicodeEncodeError:
                raw_value = value.encode("utf-8", "surrogateescape")
        else:
            raw_value = _value(value)
        try:
            _raw.add_header_map_value(self.map_type, key, raw_value)
        except HostCallError as err:
            raise unavailable(self.map_type, err) from None

    def __delitem__(self, name: HeaderValue) -> None:
        try:
            key = _KEYS[name]
        except (KeyError, TypeError):
            key = _key(name)
        try:
            _raw.remove_header_map_value(self.map_type, key)
        except HostCallError as err:
            raise unavailable(self.map_type, err) from None

    def __contains__(self, name: object) -> bool:
        try:
            key = _KEYS[name]
        except (KeyError, TypeError):
            if not isinstance(name, (str, bytes)):
                return False
            key = _key(name)
        try:
            return _raw.get_header_map_value(self.map_type, key) is not None
        except HostCallError as err:
            raise unavailable(self.map_type, err) from None

    def items_bytes(self) -> list[tuple[bytes, bytes]]:
        """Every (name, value) pair in order, repeated names included."""
        try:
            return hostcalls.get_map(self.map_type)
        except HostCallError as err:
            raise unavailable(self.map_type, err) from None

    def pairs(self) -> list[tuple[str, str]]:
        """Every (name, value) pair in order as text, repeated names included."""
        return [(_text(k), _text(v)) for k, v in self.items_bytes()]

    def __iter__(self) -> Iterator[str]:
        return iter(_first_values(self.items_bytes()))

    def __len__(self) -> int:
        """The number of pairs (a repeated name counts once per value)."""
        try:
            return hostcalls.get_map_count(self.map_type)
        except HostCallError as err:
            raise unavailable(self.map_type, err) from None

    def get(self, name: HeaderValue, default: str | None = None) -> str | None:  # type: ignore[override]
        try:
            key = _KEYS[name]
        except (KeyError, TypeError):
            key = _key(name)
        try:
            value: bytes | None = _raw.get_header_map_value(self.map_type, key)
        except HostCallError as err:
            raise unavailable(self.map_type, err) from None
        if value is None:
            return default
        try:
            return value.decode()  # as in __getitem__
        except UnicodeDecodeError:
            return value.decode("utf-8", "surrogateescape")

    def keys(self) -> KeysView[str]:
        """The names, each once, in order (a snapshot taken by one host call)."""
        return _first_values(self.items_bytes()).keys()

    def items(self) -> ItemsView[str, str]:
        """(name, first value) per name, in order (a snapshot); see :meth:`pairs` for all values."""
        return _first_values(self.items_bytes()).items()

    def values(self) -> ValuesView[str]:
        """The first value of each name, in order (a snapshot)."""
        return _first_values(self.items_bytes()).values()

    def pop(self, name: HeaderValue, default: object = _MISSING) -> object:  # type: ignore[override]
        """Remove ``name`` (every value) and return its first value."""
        value = self.get_bytes(name)
        if value is None:
            if default is _MISSING:
                raise KeyError(name)
            return default
        del self[name]
        return _text(value)

    def popitem(self) -> tuple[str, str]:
        pairs = self.items_bytes()
        if not pairs:
            raise KeyError("popitem(): headers are empty")
        name = pairs[0][0]
        del self[name]
        return _text(name), _text(pairs[0][1])

    def clear(self) -> None:
        self.replace_all(())

    def setdefault(self, name: HeaderValue, default: HeaderValue = "") -> str:
        value = self.get_bytes(name)
        if value is None:
            self[name] = default
            return _text(default) if isinstance(default, bytes) else default
        return _text(value)

    def update(  # type: ignore[override]
        self,
        other: Mapping[HeaderValue, HeaderValue] | Iterable[tuple[HeaderValue, HeaderValue]] = (),
        /,
        **kwargs: HeaderValue,
    ) -> None:
        """Set each name to its value, like ``dict.update`` (replacing any values it had)."""
        pairs = other.items() if hasattr(other, "items") else other
        for name, value in pairs:
            self[name] = value
        for name, value in kwargs.items():
            self[name] = value

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Headers, HeaderPairs)):
            return self.items_bytes() == other.items_bytes()
        if isinstance(other, dict):
            return dict(self.items()) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def replace_all(self, pairs: Iterable[tuple[HeaderValue, HeaderValue]]) -> None:
        """Replace the whole map with ``pairs`` in one host call."""
        try:
            hostcalls.set_map(self.map_type, [(_key(k), _value(v)) for k, v in pairs])
        except HostCallError as err:
            raise unavailable(self.map_type, err) from None

    def __repr__(self) -> str:  # never raises: help(), pydoc and debuggers call it anywhere
        try:
            return f"Headers({self.pairs()!r})"
        except (HostCallError, RuntimeError):  # outside its callback, or outside a VM
            return f"<Headers {self.map_type.name}: not readable here>"


def _on_own_stream(method: Callable[..., Any]) -> Callable[..., Any]:
    def call(self: StreamHeaders, *args: Any, **kwargs: Any) -> Any:
        context = self.context
        if context.context_id == _raw.effective_context():  # in the stream's own callback (Context._act's test)
            return method(self, *args, **kwargs)
        return context._act(method, self, *args, **kwargs)

    call.__name__ = method.__name__
    call.__doc__ = method.__doc__
    return call


class StreamHeaders(Headers):
    """A :class:`Headers` bound to one stream (``self.request_headers`` and friends): every access
    acts on that stream's map, also from another context's callback."""

    __slots__ = ("context",)

    def __init__(self, map_type: MapType, context: Context) -> None:
        super().__init__(map_type)
        self.context = context


for _name in (
    "__getitem__", "get_bytes", "get_all", "__setitem__", "add", "__delitem__", "__contains__", "items_bytes",
    "pairs", "__iter__", "__len__", "get", "keys", "items", "values", "pop", "popitem", "clear", "setdefault",
    "update", "__eq__", "replace_all", "__repr__",
):  # fmt: skip
    setattr(StreamHeaders, _name, _on_own_stream(getattr(Headers, _name)))
del _name


class HeaderPairs(_ReadMappingBase):
    """Headers received with a callout's answer (or gRPC metadata): the reading API of
    :class:`Headers` over a copy, so it stays usable after the callback. ``pairs["content-type"]``
    gives the first value as ``str``; ``get_bytes`` / ``items_bytes`` the raw bytes; iterating gives
    each name once; ``len()`` is the number of pairs."""

    __slots__ = ("_pairs",)

    def __init__(self, pairs: Iterable[tuple[bytes, bytes]] = ()) -> None:
        self._pairs = list(pairs)

    def get_bytes(self, name: HeaderValue) -> bytes | None:
        try:
            key = _KEYS[name]
        except (KeyError, TypeError):
            key = _key(name)
        for k, v in self._pairs:
            if k == key:
                return v
        return None

    def __getitem__(self, name: HeaderValue) -> str:
        value = self.get_bytes(name)
        if value is None:
            raise KeyError(name)
        return _text(value)

    def get(self, name: HeaderValue, default: str | None = None) -> str | None:  # type: ignore[override]
        value = self.get_bytes(name)
        return default if value is None else _text(value)

    def get_all(self, name: HeaderValue) -> list[str]:
        key = _key(name)
        return [_text(v) for k, v in self._pairs if k == key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, (str, bytes)) and self.get_bytes(name) is not None

    def items_bytes(self) -> list[tuple[bytes, bytes]]:
        """Every (name, value) pair in order, repeated names included."""
        return list(self._pairs)

    def pairs(self) -> list[tuple[str, str]]:
        """Every (name, value) pair in order as text, repeated names included."""
        return [(_text(k), _text(v)) for k, v in self._pairs]

    def __iter__(self) -> Iterator[str]:
        return iter(_first_values(self._pairs))

    def __len__(self) -> int:
        """The number of pairs (a repeated name counts once per value)."""
        return len(self._pairs)

    def keys(self) -> KeysView[str]:
        return _first_values(self._pairs).keys()

    def items(self) -> ItemsView[str, str]:
        """(name, first value) per name, in order; see :meth:`pairs` for all values."""
        return _first_values(self._pairs).items()

    def values(self) -> ValuesView[str]:
        return _first_values(self._pairs).values()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Headers, HeaderPairs)):
            return self._pairs == other.items_bytes()
        if isinstance(other, dict):
            return dict(self.items()) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"HeaderPairs({self.pairs()!r})"


request_headers = Headers(MapType.HTTP_REQUEST_HEADERS)
request_trailers = Headers(MapType.HTTP_REQUEST_TRAILERS)
response_headers = Headers(MapType.HTTP_RESPONSE_HEADERS)
response_trailers = Headers(MapType.HTTP_RESPONSE_TRAILERS)
