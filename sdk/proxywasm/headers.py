"""Header maps as Python mappings. A :class:`Headers` is a live view: every read and write goes
to Envoy, so it always shows what Envoy will forward."""

from __future__ import annotations

from . import hostcalls
from .abi import MapType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, MutableMapping, ValuesView

    HeaderValue = str | bytes
    _MappingBase = MutableMapping[str, str]
else:
    # The mapping methods are written out below: collections.abc (with its 30 classes) would
    # cost memory in every VM. If the filter imports it anyway, Headers is registered with it.
    _MappingBase = object

_MISSING = object()


def _key(name: HeaderValue) -> bytes:
    # Envoy stores header names in lower case; lookups are case-insensitive.
    return (name.encode() if isinstance(name, str) else name).lower()


def _value(value: HeaderValue) -> bytes:
    return value.encode() if isinstance(value, str) else value


class Headers(_MappingBase):
    """Request or response headers (or trailers) of the current stream.

    ``headers["x-user"]`` gives the first value as ``str`` (``KeyError`` if absent),
    ``headers.get_all(name)`` every value, ``headers["x"] = "v"`` replaces all values,
    ``headers.add(name, value)`` appends one, ``del headers["x"]`` removes all.
    Names are case-insensitive; pseudo-headers (``:path``, ``:method``, ``:authority``,
    ``:status``) work like any other. Bytes are accepted wherever ``str`` is, and
    :meth:`get_bytes` / :meth:`items_bytes` return raw values for non-UTF-8 data.
    """

    __slots__ = ("map_type",)

    def __init__(self, map_type: MapType) -> None:
        self.map_type = map_type

    def __getitem__(self, name: HeaderValue) -> str:
        value = hostcalls.get_map_value(self.map_type, _key(name))
        if value is None:
            raise KeyError(name)
        return value.decode(errors="surrogateescape")

    def get_bytes(self, name: HeaderValue) -> bytes | None:
        """The first value of ``name`` as bytes, or ``None``."""
        return hostcalls.get_map_value(self.map_type, _key(name))

    def get_all(self, name: HeaderValue) -> list[str]:
        key = _key(name)
        return [v.decode(errors="surrogateescape") for k, v in hostcalls.get_map(self.map_type) if k == key]

    def __setitem__(self, name: HeaderValue, value: HeaderValue) -> None:
        hostcalls.replace_map_value(self.map_type, _key(name), _value(value))

    def add(self, name: HeaderValue, value: HeaderValue) -> None:
        """Append a value, keeping any existing ones (a repeated header)."""
        hostcalls.add_map_value(self.map_type, _key(name), _value(value))

    def __delitem__(self, name: HeaderValue) -> None:
        hostcalls.remove_map_value(self.map_type, _key(name))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, (str, bytes)):
            return False
        return hostcalls.get_map_value(self.map_type, _key(name)) is not None

    def items_bytes(self) -> list[tuple[bytes, bytes]]:
        """Every (name, value) pair in order, repeated names included."""
        return hostcalls.get_map(self.map_type)

    def pairs(self) -> list[tuple[str, str]]:
        """Every (name, value) pair in order as text, repeated names included."""
        return [
            (k.decode(errors="surrogateescape"), v.decode(errors="surrogateescape"))
            for k, v in hostcalls.get_map(self.map_type)
        ]

    def __iter__(self) -> Iterator[str]:
        seen: dict[str, None] = {}
        for k, _ in hostcalls.get_map(self.map_type):
            seen.setdefault(k.decode(errors="surrogateescape"))
        return iter(seen)

    def __len__(self) -> int:
        """The number of pairs (a repeated name counts once per value)."""
        return hostcalls.get_map_size(self.map_type)

    def get(self, name: HeaderValue, default: str | None = None) -> str | None:  # type: ignore[override]
        value = hostcalls.get_map_value(self.map_type, _key(name))
        return default if value is None else value.decode(errors="surrogateescape")

    def _first_values(self) -> dict[str, str]:
        first: dict[str, str] = {}
        for k, v in hostcalls.get_map(self.map_type):
            first.setdefault(k.decode(errors="surrogateescape"), v.decode(errors="surrogateescape"))
        return first

    def keys(self) -> KeysView[str]:
        """The names, each once, in order (a snapshot taken by one host call)."""
        return self._first_values().keys()

    def items(self) -> ItemsView[str, str]:
        """(name, first value) per name, in order (a snapshot); see :meth:`pairs` for all values."""
        return self._first_values().items()

    def values(self) -> ValuesView[str]:
        """The first value of each name, in order (a snapshot)."""
        return self._first_values().values()

    def pop(self, name: HeaderValue, default: object = _MISSING) -> object:  # type: ignore[override]
        """Remove ``name`` (every value) and return its first value."""
        key = _key(name)
        value = hostcalls.get_map_value(self.map_type, key)
        if value is None:
            if default is _MISSING:
                raise KeyError(name)
            return default
        hostcalls.remove_map_value(self.map_type, key)
        return value.decode(errors="surrogateescape")

    def popitem(self) -> tuple[str, str]:
        pairs = hostcalls.get_map(self.map_type)
        if not pairs:
            raise KeyError("popitem(): headers are empty")
        name = pairs[0][0]
        hostcalls.remove_map_value(self.map_type, name)
        return name.decode(errors="surrogateescape"), pairs[0][1].decode(errors="surrogateescape")

    def clear(self) -> None:
        hostcalls.set_map(self.map_type, [])

    def setdefault(self, name: HeaderValue, default: HeaderValue = "") -> str:
        value = hostcalls.get_map_value(self.map_type, _key(name))
        if value is None:
            self[name] = default
            return default.decode(errors="surrogateescape") if isinstance(default, bytes) else default
        return value.decode(errors="surrogateescape")

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
        if isinstance(other, Headers):
            return self.items_bytes() == other.items_bytes()
        if isinstance(other, dict):
            return dict(self.items()) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def replace_all(self, pairs: Iterable[tuple[HeaderValue, HeaderValue]]) -> None:
        """Replace the whole map with ``pairs`` in one host call."""
        hostcalls.set_map(self.map_type, [(_key(k), _value(v)) for k, v in pairs])

    def __repr__(self) -> str:
        return f"Headers({self.pairs()!r})"


request_headers = Headers(MapType.HTTP_REQUEST_HEADERS)
request_trailers = Headers(MapType.HTTP_REQUEST_TRAILERS)
response_headers = Headers(MapType.HTTP_RESPONSE_HEADERS)
response_trailers = Headers(MapType.HTTP_RESPONSE_TRAILERS)
