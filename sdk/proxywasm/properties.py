"""Envoy attributes (``request.path``, ``source.address``, ``plugin_name``, ...).

``get("request", "path")`` returns raw bytes as Envoy encodes them, or ``None``; the helpers
below decode the common ones (strings as UTF-8, integers as 8-byte little-endian)."""

from __future__ import annotations

import struct

from . import hostcalls
from .abi import decode_map, encode_property_path

TYPE_CHECKING = False  # typing is not imported at run time: it would cost memory in every VM
if TYPE_CHECKING:
    from typing import Any


_raw = hostcalls.raw  # called directly: each Python frame on this path costs ~1 us in Envoy (see _encoded)

# Encoded paths by their segments. Reading a property through four layers of Python (get_str, get,
# encode_property_path's generator, the typed wrapper) cost 14 us per read in Envoy against 3.3 us
# for the host call alone (bench/README.md, "Attribute reads"): a dict lookup replaces the encoding.
_encoded: dict[tuple[str | bytes, ...], bytes] = {}


def _path(path: tuple[str | bytes, ...]) -> bytes:
    try:
        encoded = _encoded.get(path)
    except TypeError:  # a bytearray segment: not a key, encoded each time
        return encode_property_path(path)
    if encoded is None:
        encoded = encode_property_path(path)
        # Paths written in the code are few and short. One built from request data (a filter-state
        # key per client) must not pin request text in every VM: long ones are not kept, and a full
        # table starts again (the fixed paths come back on their next read).
        if len(encoded) <= 128:
            if len(_encoded) >= 256:
                _encoded.clear()
            _encoded[path] = encoded
    return encoded


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "surrogateescape")


def get(*path: str) -> bytes | None:
    found: bytes | None = _raw.get_property(_path(path))
    return found


def set(*path: str, value: bytes | str) -> None:
    hostcalls.set_property(encode_property_path(path), hostcalls.to_bytes(value))


def get_str(*path: str) -> str | None:
    return _text(_raw.get_property(_path(path)))


def get_int(*path: str) -> int | None:
    raw = _raw.get_property(_path(path))
    return None if raw is None or len(raw) != 8 else int.from_bytes(raw, "little", signed=True)


def get_map(*path: str) -> list[tuple[bytes, bytes]] | None:
    raw = _raw.get_property(_path(path))
    return None if raw is None else decode_map(raw)


def plugin_name() -> str | None:
    return get_str("plugin_name")


def plugin_root_id() -> str:
    return get_str("plugin_root_id") or ""


def plugin_vm_id() -> str | None:
    return get_str("plugin_vm_id")


def request_path() -> str | None:
    return get_str("request", "path")


def request_method() -> str | None:
    return get_str("request", "method")


def request_protocol() -> str | None:
    return get_str("request", "protocol")


def response_code() -> int | None:
    return get_int("response", "code")


def source_address() -> str | None:
    """The downstream peer as ``"ip:port"`` (e.g. ``"10.0.0.7:51234"``): the port changes with every
    client connection, so key per-client state on the IP part (``rpartition(":")[0]``) or on an
    identity header, not on this whole value. ``None`` where Envoy has none."""
    return get_str("source", "address")


def destination_address() -> str | None:
    """The local address the connection arrived on, as ``"ip:port"``."""
    return get_str("destination", "address")


def route_name() -> str | None:
    """The matched route's ``name``; ``None`` when it has none or no route matched."""
    return _xds(_XDS_ROUTE_NAME, _ROUTE_NAME)


def cluster_name() -> str | None:
    """The upstream cluster of the matched route; ``None`` when there is none."""
    return _xds(_XDS_CLUSTER_NAME, _CLUSTER_NAME)


_XDS_ROUTE_NAME, _ROUTE_NAME = b"xds\0route_name", b"route_name"
_XDS_CLUSTER_NAME, _CLUSTER_NAME = b"xds\0cluster_name", b"cluster_name"


def _xds(path: bytes, old_path: bytes) -> str | None:
    # Envoy 1.40 serves xDS attributes under "xds" ("" for an unnamed route); older ones at the top
    # level. Only a path Envoy does not serve falls back: an unnamed route costs one read, not two.
    value = _raw.get_property(path)
    if value is None:
        value = _raw.get_property(old_path)
    return value.decode("utf-8", "surrogateescape") if value else None


# ---- route metadata: Envoy has no per-route Wasm config; route metadata stands in for it ----

_XDS_ROUTE_METADATA = b"xds\0route_metadata"  # HttpContext.route_config reads it too
_route_cache: dict[bytes, dict[str, Any]] = {}
_ROUTE_CACHE_SIZE = 64


def route_metadata(filter_name: str) -> dict[str, Any]:
    """The current route's ``metadata.filter_metadata[filter_name]`` as a dict ({} when the route
    has none, or no route matched).

    Envoy 1.40 serves ``xds.route_metadata`` as the route's ``envoy.config.core.v3.Metadata``
    message in protobuf binary form (b"" for a route without metadata); deeper paths
    (``xds.route_metadata.filter_metadata.<name>``) come as the ABI's pair encoding, which loses
    value types and fails (SERIALIZATION_FAILURE) on a null anywhere inside. So the SDK reads the
    whole message and decodes it here, without a protobuf library: Struct values map to JSON
    types (numbers are doubles in protobuf; whole ones within 2**53 become ``int``). The dict is
    cached by the message's bytes and shared by the streams of the route: read it, do not change it.
    """
    return _for_filter(_raw.get_property(_XDS_ROUTE_METADATA), filter_name)


def _for_filter(raw: bytes | None, filter_name: str) -> dict[str, Any]:
    """``filter_metadata[filter_name]`` of ``raw``, the ``xds.route_metadata`` Envoy served (see
    :func:`route_metadata`); ``{}`` for none."""
    if not raw:
        return {}
    cached = _route_cache.get(raw)
    if cached is None:
        if len(_route_cache) >= _ROUTE_CACHE_SIZE:
            _route_cache.clear()
        cached = _route_cache[raw] = _filter_metadata(raw)
    value = cached.get(filter_name)
    return value if isinstance(value, dict) else {}


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) of a protobuf message: ints for varints and fixed,
    bytes for length-delimited fields. Raises ValueError on malformed data."""
    out: list[tuple[int, int, Any]] = []
    pos, end = 0, len(data)
    try:
        while pos < end:
            key, pos = _varint(data, pos)
            number, wire = key >> 3, key & 7
            value: Any
            if wire == 0:
                value, pos = _varint(data, pos)
            elif wire == 1:
                value, pos = data[pos : pos + 8], pos + 8
            elif wire == 2:
                size, pos = _varint(data, pos)
                value, pos = data[pos : pos + size], pos + size
            elif wire == 5:
                value, pos = data[pos : pos + 4], pos + 4
            else:
                raise ValueError(f"unsupported protobuf wire type {wire}")
            if pos > end:
                raise ValueError("protobuf field runs past the end")
            out.append((number, wire, value))
    except IndexError:
        raise ValueError("truncated protobuf varint") from None
    return out


def _map_entry(entry: bytes) -> tuple[str, bytes]:
    key, value = "", b""
    for number, wire, field in _fields(entry):
        if number == 1 and wire == 2:
            key = field.decode("utf-8", "surrogateescape")
        elif number == 2 and wire == 2:
            value = field
    return key, value


def _filter_metadata(raw: bytes) -> dict[str, Any]:
    """``Metadata.filter_metadata`` (field 1: map<string, Struct>) as {filter name: dict}."""
    return {key: _struct(value) for key, value in (_map_entry(f) for n, w, f in _fields(raw) if n == 1 and w == 2)}


def _struct(data: bytes) -> dict[str, Any]:
    return {key: _value(value) for key, value in (_map_entry(f) for n, w, f in _fields(data) if n == 1 and w == 2)}


def _value(data: bytes) -> Any:
    """google.protobuf.Value: null 1, number 2 (double), string 3, bool 4, struct 5, list 6."""
    result: Any = None
    for number, _wire, field in _fields(data):
        if number == 2:
            number_value = struct.unpack("<d", field)[0]
            whole = number_value.is_integer() and abs(number_value) <= 2**53
            result = int(number_value) if whole else number_value
        elif number == 3:
            result = field.decode("utf-8", "surrogateescape")
        elif number == 4:
            result = bool(field)
        elif number == 5:
            result = _struct(field)
        elif number == 6:
            result = [_value(f) for n, w, f in _fields(field) if n == 1 and w == 2]
        elif number == 1:
            result = None
    return result
