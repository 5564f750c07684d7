"""Envoy attributes for ``proxy_get_property``: request.*, response.*, source/destination, connection,
upstream, plugin_* and values set by the filter (``set_property`` lands in filter state under its path).

Values are serialised like Envoy: strings/bytes raw, integers as 8-byte little-endian, booleans as one
byte, maps as the header-map wire format.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from proxywasm.abi import MapType, Status, encode_map

if TYPE_CHECKING:
    from .context import Context
    from .vm import Vm


def serialize(value: Any) -> bytes:
    if isinstance(value, bool):
        return b"\x01" if value else b"\x00"
    if isinstance(value, int):
        return struct.pack("<q", value) if value < (1 << 63) else struct.pack("<Q", value)
    if isinstance(value, float):
        return struct.pack("<d", value)
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, dict):
        return encode_map([(serialize(k), serialize(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return encode_map([(serialize(v), b"") for v in value])
    raise TypeError(f"cannot serialise property value {value!r}")


def normalize_path(key: str | bytes | tuple[str | bytes, ...]) -> tuple[bytes, ...]:
    """``"request.path"`` / ``("request", "path")`` / ``b"request\\0path"`` -> segment tuple."""
    if isinstance(key, tuple):
        return tuple(p.encode() if isinstance(p, str) else bytes(p) for p in key)
    raw = key.encode() if isinstance(key, str) else bytes(key)
    return tuple(raw.split(b"\0" if b"\0" in raw else b"."))


def _attributes(vm: Vm, ctx: Context) -> dict[str, Any]:
    root = vm.root_of(ctx)
    plugin = root.plugin
    attrs: dict[str, Any] = {
        "plugin_name": plugin.name if plugin else "",
        "plugin_root_id": plugin.root_id if plugin else "",
        "plugin_vm_id": vm.vm_id,
        "node": {"id": "proxywasm-host", "cluster": "proxywasm-host"},
        "listener_direction": 0,
    }
    stream = ctx.stream
    if stream is not None and hasattr(stream, "attributes"):
        attrs.update(stream.attributes())
    return attrs


def lookup(vm: Vm, ctx: Context, raw_path: bytes) -> tuple[Status, bytes]:
    segments = tuple(s for s in raw_path.split(b"\0")) if raw_path else ()
    if not segments or segments == (b"",):
        return Status.NOT_FOUND, b""
    overrides = vm.property_overrides
    if segments in overrides:
        value = overrides[segments]
        return (Status.NOT_FOUND, b"") if value is None else (Status.OK, serialize(value))
    # Values set by the filter live in filter state; Envoy resolves them by the first segment.
    state = ctx.filter_state.get(raw_path)
    if state is None and ctx.stream is None:
        state = None
    if state is not None:
        return Status.OK, state
    node: Any = _attributes(vm, ctx)
    for seg in segments:
        key = seg.decode("utf-8", "replace")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, (list, tuple)) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return Status.NOT_FOUND, b""
    if node is None:
        return Status.NOT_FOUND, b""
    try:
        return Status.OK, serialize(node)
    except TypeError:
        return Status.SERIALIZATION_FAILURE, b""


def headers_dict(ctx: Context, map_type: MapType) -> dict[str, str] | None:
    hmap = ctx.maps.get(map_type)
    if hmap is None:
        return None
    out: dict[str, str] = {}
    for k, v in hmap.items():
        # Envoy's header map attribute joins repeated values with commas.
        out[k] = f"{out[k]},{v}" if k in out else v
    return out
