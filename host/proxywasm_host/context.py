"""Per-context state: header maps, body buffers and the pieces of Envoy's ``Context`` the ABI reaches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from proxywasm.abi import Status

HeaderInput = Iterable[tuple[str | bytes, str | bytes]]


def _b(value: str | bytes) -> bytes:
    if type(value) is bytes:
        return value
    return value.encode() if isinstance(value, str) else bytes(value)


class HeaderMap:
    """An ordered multimap with Envoy's rules: lower-case keys, pseudo headers kept before the rest,
    get returns the first value, replace drops every old value and appends one."""

    def __init__(self, pairs: HeaderInput = ()) -> None:
        self._pairs: list[tuple[bytes, bytes]] = []
        if isinstance(pairs, HeaderMap):  # already in Envoy's order and case
            self._pairs[:] = pairs._pairs
            return
        for key, value in pairs:
            self.add(key, value)

    def pairs(self) -> list[tuple[bytes, bytes]]:
        return list(self._pairs)

    def items(self) -> list[tuple[str, str]]:
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self._pairs]

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(list(self._pairs))

    def __len__(self) -> int:
        return len(self._pairs)

    def byte_size(self) -> int:
        """Envoy's ``HeaderMap::byteSize()``: the sum of key and value lengths."""
        return sum(len(k) + len(v) for k, v in self._pairs)

    def get(self, key: str | bytes) -> bytes | None:
        k = _b(key).lower()
        for name, value in self._pairs:
            if name == k:
                return value
        return None

    def get_all(self, key: str | bytes) -> list[bytes]:
        k = _b(key).lower()
        return [v for name, v in self._pairs if name == k]

    def add(self, key: str | bytes, value: str | bytes) -> None:
        # Called for every header of every simulated request: the common cases stay inline.
        k = (key if type(key) is bytes else _b(key)).lower()
        v = value if type(value) is bytes else _b(value)
        if k[:1] == b":" and self._pairs and self._pairs[-1][0][:1] != b":":
            # Envoy's HeaderList inserts pseudo headers after the last pseudo header.
            pos = 0
            while pos < len(self._pairs) and self._pairs[pos][0].startswith(b":"):
                pos += 1
            self._pairs.insert(pos, (k, v))
        else:
            self._pairs.append((k, v))

    def remove(self, key: str | bytes) -> None:
        k = _b(key).lower()
        self._pairs = [(n, v) for n, v in self._pairs if n != k]

    def replace(self, key: str | bytes, value: str | bytes) -> None:
        self.remove(key)
        self.add(key, value)

    def set_in_place(self, key: str | bytes, value: str | bytes) -> None:
        """Overwrite the first value where it stands (drop the rest); add if absent."""
        k, v = _b(key).lower(), _b(value)
        for i, (name, _) in enumerate(self._pairs):
            if name == k:
                self._pairs[i] = (k, v)
                self._pairs = self._pairs[: i + 1] + [p for p in self._pairs[i + 1 :] if p[0] != k]
                return
        self.add(k, v)

    def set_pairs(self, pairs: Iterable[tuple[bytes, bytes]]) -> None:
        self._pairs = []
        for k, v in pairs:
            self.add(k, v)

    def __repr__(self) -> str:
        return f"HeaderMap({self.items()!r})"


@dataclass
class Plugin:
    name: str
    root_id: str
    configuration: bytes
    fail_open: bool = False


@dataclass
class Context:
    """One proxy-wasm context. Root contexts have ``parent_id == id``."""

    id: int
    parent_id: int
    kind: str  # "vm" | "root" | "http" | "tcp"
    plugin: Plugin | None = None
    created_in_vm: bool = False
    # HTTP state, visible through the header-map and buffer host functions.
    maps: dict[int, HeaderMap | None] = field(default_factory=dict)
    buffers: dict[int, bytearray | None] = field(default_factory=dict)
    # Set while a body/data callback runs at end of stream: trailers may then be added.
    end_of_stream: bool = False
    stream: Any = None  # HttpStream or Connection owning this context
    filter_state: dict[bytes, bytes] = field(default_factory=dict)
    tick_period_ms: int = 0
    next_tick_ns: int = 0
    status_code: int = 0
    status_message: bytes = b""
    # Transient data for callbacks (http call response, grpc message, foreign function args).
    call_data: bytes | None = None

    @property
    def is_root(self) -> bool:
        return self.kind in ("root", "vm")

    def header_map(self, map_type: int) -> HeaderMap | None:
        return self.maps.get(map_type)


@dataclass
class Outcome:
    status: Status
    value: bytes = b""
