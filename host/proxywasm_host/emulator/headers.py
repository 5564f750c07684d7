"""Envoy's header map (``Http::HeaderMapImpl``) over bytes: the rules every map the ABI reaches follows."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ..errors import hide_host_frames

__tracebackhide__ = hide_host_frames  # pytest leaves these frames out for the filter's errors

HeaderInput = Iterable[tuple[str | bytes, str | bytes]]


_SPACE = b" \t\n\v\f\r"  # absl::ascii_isspace


def response_status(headers: HeaderMap) -> int | None:
    """The response's status as Envoy reads ``:status`` (``Utility::getResponseStatusOrNullopt``:
    ``absl::SimpleAtoi`` into a uint64: ASCII spaces around it and a leading ``+`` are allowed,
    anything else but decimal digits is not), or ``None`` when Envoy finds none: it then answers 502
    ``missing required header: :status`` instead (checked in Envoy 1.40 by the differential suite).
    Any number passes, 0 and 1000 too (seen in Envoy by hand: the differential suite's client
    cannot read such a status line): Envoy writes the number it read on the status line."""
    raw = headers.get(b":status")
    if raw is None:
        return None
    digits = raw.strip(_SPACE)
    if digits[:1] == b"+":
        digits = digits[1:]
    if not digits or not digits.isdigit():  # bytes.isdigit: ASCII digits only
        return None
    digits = digits.lstrip(b"0") or b"0"
    if len(digits) > 20:  # past any uint64 (and int() refuses more than 4300 digits)
        return None
    value = int(digits)
    return value if value < 1 << 64 else None


def to_bytes(value: str | bytes) -> bytes:
    """Header names and values travel as bytes; text is taken as UTF-8."""
    if type(value) is bytes:
        return value
    return value.encode() if isinstance(value, str) else bytes(value)


class HeaderMap:
    """An ordered multimap with Envoy's rules: keys are lower-cased, pseudo headers stay before the
    others (a late ``:x`` is inserted after the last pseudo header, as Envoy's ``HeaderList`` does),
    ``get`` returns the first value, ``replace`` drops every old value and appends one."""

    __slots__ = ("_pairs",)

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
        """The pairs as text (Latin-1, so any byte survives)."""
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self._pairs]

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(list(self._pairs))

    def __len__(self) -> int:
        return len(self._pairs)

    def __bool__(self) -> bool:
        return bool(self._pairs)

    def byte_size(self) -> int:
        """Envoy's ``HeaderMap::byteSize()``: the sum of key and value lengths."""
        return sum(len(k) + len(v) for k, v in self._pairs)

    def get(self, key: str | bytes) -> bytes | None:
        # On every emulated request's path: no helper call.
        k = key.lower() if type(key) is bytes else key.encode().lower()  # type: ignore[union-attr]
        for name, value in self._pairs:
            if name == k:
                return value
        return None

    def text(self, key: str | bytes, default: str = "") -> str:
        value = self.get(key)
        return default if value is None else value.decode("latin-1")

    def get_all(self, key: str | bytes) -> list[bytes]:
        k = to_bytes(key).lower()
        return [v for name, v in self._pairs if name == k]

    def add(self, key: str | bytes, value: str | bytes) -> None:
        # Called for every header of every emulated request: the common cases stay inline.
        k = (key if type(key) is bytes else key.encode() if type(key) is str else to_bytes(key)).lower()
        v = value if type(value) is bytes else value.encode() if type(value) is str else to_bytes(value)
        if k[:1] == b":" and self._pairs and self._pairs[-1][0][:1] != b":":
            pos = 0
            while pos < len(self._pairs) and self._pairs[pos][0][:1] == b":":
                pos += 1
            self._pairs.insert(pos, (k, v))
        else:
            self._pairs.append((k, v))

    def remove(self, key: str | bytes) -> None:
        k = to_bytes(key).lower()
        self._pairs = [(n, v) for n, v in self._pairs if n != k]

    def replace(self, key: str | bytes, value: str | bytes) -> None:
        """Envoy's ``setCopy``: every old value goes, the new one is appended."""
        self.remove(key)
        self.add(key, value)

    def set_in_place(self, key: str | bytes, value: str | bytes) -> None:
        """Overwrite the first value where it stands (drop the rest); add if absent."""
        k, v = to_bytes(key).lower(), to_bytes(value)
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

    def joined(self) -> dict[str, str]:
        """Name -> value with repeated names joined by commas (how Envoy's attributes show a map)."""
        out: dict[str, str] = {}
        for k, v in self._pairs:
            key, value = k.decode("latin-1"), v.decode("latin-1")
            out[key] = f"{out[key]},{value}" if key in out else value
        return out

    def __eq__(self, other: object) -> bool:
        if isinstance(other, HeaderMap):
            return self._pairs == other._pairs
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"HeaderMap({self.items()!r})"
