"""Envoy's attributes for ``proxy_get_property``/``proxy_set_property`` (Envoy 1.40 names).

A path is its segments joined by NUL. The first segment names a top-level attribute (``request``,
``response``, ``source``, ``destination``, ``connection``, ``upstream``, ``xds``, ``plugin_name``,
``plugin_root_id``, ``plugin_vm_id``, ...); unknown names fall back to filter state written by
``proxy_set_property`` (stored under ``wasm.<path>``, as Envoy's ``CelState``). Values are serialised
as Envoy serialises CEL values: strings and bytes raw, integers 8-byte little-endian, booleans one
byte, maps and lists in the header-map wire format; a protobuf message (``xds.route_metadata``)
whole as its binary form, while a longer path looks into its fields as CEL does.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from google.protobuf import struct_pb2

from proxywasm.abi import Status, encode_map

from ..errors import hide_host_frames

__tracebackhide__ = hide_host_frames  # pytest leaves these frames out for the filter's errors

if TYPE_CHECKING:
    from .contexts import Context
    from .vm import Vm

#: What Envoy's own ``local_info`` (the node) shows; ``Host.load(properties=...)`` overrides any path.
NODE = {"id": "proxywasm-host", "cluster": "proxywasm-host"}
FILTER_STATE_PREFIX = b"wasm."


class Message:
    """A protobuf message attribute: ``serialized`` is what Envoy serves for the message itself,
    ``fields`` what CEL shows of it to a longer path (maps as maps, Struct numbers as doubles)."""

    def __init__(self, serialized: bytes, fields: dict[str, Any]) -> None:
        self.serialized = serialized
        self.fields = fields


class _Null:
    """CEL's null (a Struct's null_value): present, but Envoy cannot serialise it (SERIALIZATION_FAILURE)."""


NULL = _Null()


def _as_cel(value: Any) -> Any:
    """A google.protobuf.Value as CEL sees it: every number is a double, null is :data:`NULL`."""
    if value is None:
        return NULL
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _as_cel(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_cel(v) for v in value]
    raise TypeError(f"route metadata holds {value!r}: only JSON values fit a google.protobuf.Struct")


def _length_delimited(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (its tag, the payload's varint length, the payload)."""
    out, size = bytearray([number << 3 | 2]), len(payload)
    while size >= 0x80:
        out.append(size & 0x7F | 0x80)
        size >>= 7
    out.append(size)
    return bytes(out) + payload


def metadata_message(filter_metadata: Mapping[str, Mapping[str, Any]]) -> Message:
    """``envoy.config.core.v3.Metadata`` with ``filter_metadata`` (map<string, Struct>, field 1).
    The Structs are protobuf's own encoding; only the map's entry wrapper (key 1, value 2) is
    written here, to avoid depending on Envoy's generated protos for one map."""
    entries = []
    for name, fields in sorted(filter_metadata.items()):
        struct_bytes = struct_pb2.Struct()
        struct_bytes.update(dict(fields))
        entry = _length_delimited(1, name.encode()) + _length_delimited(
            2, struct_bytes.SerializeToString(deterministic=True)
        )
        entries.append(_length_delimited(1, entry))
    cel = {name: _as_cel(dict(fields)) for name, fields in filter_metadata.items()}
    return Message(b"".join(entries), {"filter_metadata": cel})


def serialize(value: Any) -> bytes:
    if isinstance(value, Message):
        return value.serialized
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


def _tree(vm: Vm, ctx: Context) -> dict[str, Any]:
    plugin = vm.root_of(ctx).plugin
    tree: dict[str, Any] = {
        "plugin_name": plugin.name if plugin else "",
        "plugin_root_id": plugin.root_id if plugin else "",
        "plugin_vm_id": vm.vm_id,
        "xds": {"node": dict(NODE)},
        "listener_direction": 0,
    }
    stream = ctx.stream
    if stream is not None:
        for key, value in stream.attributes().items():
            if isinstance(value, dict) and isinstance(tree.get(key), dict):
                tree[key] = {**tree[key], **value}
            else:
                tree[key] = value
    return tree


def lookup(vm: Vm, ctx: Context, raw_path: bytes) -> tuple[Status, bytes]:
    segments = tuple(raw_path.split(b"\0")) if raw_path else ()
    if not segments or segments == (b"",):
        return Status.NOT_FOUND, b""
    overrides = vm.property_overrides
    if segments in overrides:
        value = overrides[segments]
        return (Status.NOT_FOUND, b"") if value is None else (Status.OK, serialize(value))
    node: Any = _tree(vm, ctx)
    first = segments[0].decode("utf-8", "replace")
    if first not in node:
        # Envoy resolves unknown top-level names in filter state, by the first segment only.
        state = ctx.stream.filter_state.get(FILTER_STATE_PREFIX + segments[0]) if ctx.stream is not None else None
        if state is None or len(segments) > 1:
            return Status.NOT_FOUND, b""
        return Status.OK, state
    for seg in segments:
        key = seg.decode("utf-8", "replace")
        if isinstance(node, Message):
            node = node.fields
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


def store(vm: Vm, ctx: Context, raw_path: bytes, value: bytes) -> Status:
    """``proxy_set_property``: filter state ``wasm.<path>`` of the stream (NOT_FOUND without one)."""
    stream = ctx.stream
    if stream is None:
        return Status.NOT_FOUND
    stream.filter_state[FILTER_STATE_PREFIX + raw_path] = bytes(value)
    return Status.OK
