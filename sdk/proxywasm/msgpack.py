"""A small MessagePack codec for typed shared-data values (nil, bool, int, float, str, bytes,
list, dict). Pure Python, so it runs inside the module; interoperable with other SDKs' msgpack."""

from __future__ import annotations

import struct

TYPE_CHECKING = False  # typing is not imported at run time: it would cost memory in every VM
if TYPE_CHECKING:
    from typing import Any


_B, _H, _I, _Q = struct.Struct(">B"), struct.Struct(">H"), struct.Struct(">I"), struct.Struct(">Q")


def packb(obj: Any) -> bytes:
    # The values shared data holds most (a counter, a short text) in one step: inside the VM each
    # operation costs tens of nanoseconds.
    kind = type(obj)
    if kind is int and 0 <= obj <= 0x7F:
        return bytes((obj,))
    if kind is str and len(obj) <= 31:
        raw: bytes = obj.encode()
        if len(raw) <= 31:
            return bytes((0xA0 | len(raw),)) + raw
    out = bytearray()
    _pack(obj, out)
    return bytes(out)


def _pack(obj: Any, out: bytearray) -> None:
    if obj is None:
        out.append(0xC0)
    elif obj is True or obj is False:
        out.append(0xC3 if obj else 0xC2)
    elif isinstance(obj, int):
        _pack_int(obj, out)
    elif isinstance(obj, float):
        out += b"\xcb" + struct.pack(">d", obj)
    elif isinstance(obj, str):
        raw = obj.encode()
        _pack_len(len(raw), out, fix=(0xA0, 31), codes=(0xD9, 0xDA, 0xDB))
        out += raw
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        raw = bytes(obj)
        _pack_len(len(raw), out, fix=None, codes=(0xC4, 0xC5, 0xC6))
        out += raw
    elif isinstance(obj, (list, tuple)):
        _pack_len(len(obj), out, fix=(0x90, 15), codes=(None, 0xDC, 0xDD))
        for item in obj:
            _pack(item, out)
    elif isinstance(obj, dict):
        _pack_len(len(obj), out, fix=(0x80, 15), codes=(None, 0xDE, 0xDF))
        for key, value in obj.items():
            _pack(key, out)
            _pack(value, out)
    else:
        raise TypeError(f"cannot msgpack {type(obj).__name__}")


def _pack_int(n: int, out: bytearray) -> None:
    if 0 <= n <= 0x7F:
        out.append(n)
    elif -32 <= n < 0:
        out.append(n & 0xFF)
    elif 0 <= n <= 0xFF:
        out += b"\xcc" + _B.pack(n)
    elif 0 <= n <= 0xFFFF:
        out += b"\xcd" + _H.pack(n)
    elif 0 <= n <= 0xFFFFFFFF:
        out += b"\xce" + _I.pack(n)
    elif 0 <= n <= 0xFFFFFFFFFFFFFFFF:
        out += b"\xcf" + _Q.pack(n)
    elif -(1 << 63) <= n < 0:
        for code, fmt, limit in ((0xD0, ">b", 1 << 7), (0xD1, ">h", 1 << 15), (0xD2, ">i", 1 << 31)):
            if n >= -limit:
                out += bytes([code]) + struct.pack(fmt, n)
                return
        out += b"\xd3" + struct.pack(">q", n)
    else:
        raise OverflowError("integer out of msgpack range")


def _pack_len(n: int, out: bytearray, fix: tuple[int, int] | None, codes: tuple[int | None, int, int]) -> None:
    if fix is not None and n <= fix[1]:
        out.append(fix[0] | n)
    elif codes[0] is not None and n <= 0xFF:
        out += bytes([codes[0], n])
    elif n <= 0xFFFF:
        out += bytes([codes[1]]) + struct.pack(">H", n)
    else:
        out += bytes([codes[2]]) + struct.pack(">I", n)


_FIXED = {
    0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",
    0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q",
    0xCA: ">f", 0xCB: ">d",
}  # fmt: skip
_SIZED = {0xD9: (">B", "str"), 0xDA: (">H", "str"), 0xDB: (">I", "str"),
          0xC4: (">B", "bin"), 0xC5: (">H", "bin"), 0xC6: (">I", "bin"),
          0xDC: (">H", "arr"), 0xDD: (">I", "arr"), 0xDE: (">H", "map"), 0xDF: (">I", "map")}  # fmt: skip


def unpackb(data: bytes) -> Any:
    if len(data) == 1:  # a positive or negative fixint (a small counter): no view, no walk
        code = data[0]
        if code <= 0x7F:
            return code
        if code >= 0xE0:
            return code - 0x100
    value, end = _unpack(memoryview(data), 0)
    if end != len(data):
        raise ValueError("extra bytes after the msgpack value")
    return value


def _unpack(buf: memoryview, pos: int) -> tuple[Any, int]:
    if pos >= len(buf):
        raise ValueError("truncated msgpack data")
    code = buf[pos]
    pos += 1
    if code <= 0x7F:
        return code, pos
    if code >= 0xE0:
        return code - 0x100, pos
    if 0xA0 <= code <= 0xBF:
        return _take(buf, pos, code & 0x1F, "str")
    if 0x90 <= code <= 0x9F:
        return _take(buf, pos, code & 0x0F, "arr")
    if 0x80 <= code <= 0x8F:
        return _take(buf, pos, code & 0x0F, "map")
    if code == 0xC0:
        return None, pos
    if code in (0xC2, 0xC3):
        return code == 0xC3, pos
    if code in _FIXED:
        fmt = _FIXED[code]
        size = struct.calcsize(fmt)
        if pos + size > len(buf):
            raise ValueError("truncated msgpack data")
        return struct.unpack_from(fmt, buf, pos)[0], pos + size
    if code in _SIZED:
        fmt, kind = _SIZED[code]
        size = struct.calcsize(fmt)
        if pos + size > len(buf):
            raise ValueError("truncated msgpack data")
        return _take(buf, pos + size, struct.unpack_from(fmt, buf, pos)[0], kind)
    raise ValueError(f"unsupported msgpack type 0x{code:02x}")


def _take(buf: memoryview, pos: int, n: int, kind: str) -> tuple[Any, int]:
    if kind in ("str", "bin"):
        if pos + n > len(buf):
            raise ValueError("truncated msgpack data")
        raw = bytes(buf[pos : pos + n])
        return (raw.decode() if kind == "str" else raw), pos + n
    if kind == "arr":
        items = []
        for _ in range(n):
            item, pos = _unpack(buf, pos)
            items.append(item)
        return items, pos
    mapping = {}
    for _ in range(n):
        key, pos = _unpack(buf, pos)
        mapping[key], pos = _unpack(buf, pos)
    return mapping, pos
