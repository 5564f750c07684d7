"""Envoy attributes (``request.path``, ``source.address``, ``plugin_name``, ...).

``get("request", "path")`` returns raw bytes as Envoy encodes them, or ``None``; the helpers
below decode the common ones (strings as UTF-8, integers as 8-byte little-endian)."""

from __future__ import annotations

from . import hostcalls
from .abi import decode_map, encode_property_path


def get(*path: str) -> bytes | None:
    return hostcalls.get_property(encode_property_path(path))


def set(*path: str, value: bytes | str) -> None:
    hostcalls.set_property(encode_property_path(path), hostcalls.to_bytes(value))


def get_str(*path: str) -> str | None:
    raw = get(*path)
    return None if raw is None else raw.decode(errors="surrogateescape")


def get_int(*path: str) -> int | None:
    raw = get(*path)
    return None if raw is None or len(raw) != 8 else int.from_bytes(raw, "little", signed=True)


def get_map(*path: str) -> list[tuple[bytes, bytes]] | None:
    raw = get(*path)
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
    return get_str("source", "address")


def destination_address() -> str | None:
    return get_str("destination", "address")


def route_name() -> str | None:
    # Envoy 1.40 serves xDS attributes under "xds"; older ones at the top level.
    return get_str("xds", "route_name") or get_str("route_name")


def cluster_name() -> str | None:
    return get_str("xds", "cluster_name") or get_str("cluster_name")
