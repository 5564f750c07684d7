"""Bounds-checked access to guest linear memory, and guest allocation through ``malloc``.

Mirrors cpp-host's ``getMemory``/``setMemory``/``setWord``/``copyToPointerSize``: every access is checked
against the current memory size and reports failure (``None``/``False``) instead of raising, so host
functions can turn it into ``Status.INVALID_MEMORY_ACCESS``.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable

import wasmtime

from ..errors import hide_host_frames

__tracebackhide__ = hide_host_frames  # pytest leaves these frames out for the filter's errors

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class GuestMemory:
    def __init__(self, store: wasmtime.Store, memory: wasmtime.Memory | None) -> None:
        self._store = store
        self._memory = memory
        # Set by the VM once the exports are known; returns 0 on allocation failure.
        self.malloc: Callable[[int], int] | None = None
        self._cached = (0, 0)  # (size, base) as last seen

    def _base(self) -> tuple[int, int]:
        if self._memory is None:
            return 0, 0
        # Memory may have grown (and moved) during the last guest call. It only moves when it
        # grows, so an unchanged size means an unchanged base address.
        size = self._memory.data_len(self._store)
        if size == self._cached[0]:
            return self._cached[1], size
        if size == 0:
            return 0, 0
        base = ctypes.addressof(self._memory.data_ptr(self._store).contents)
        self._cached = (size, base)
        return base, size

    def size(self) -> int:
        return self._base()[1]

    def read(self, ptr: int, size: int) -> bytes | None:
        base, length = self._base()
        if ptr < 0 or size < 0 or ptr + size > length:
            return None
        if size == 0:
            return b""
        return ctypes.string_at(base + ptr, size)

    def write(self, ptr: int, data: bytes) -> bool:
        base, length = self._base()
        if ptr < 0 or ptr + len(data) > length:
            return False
        if data:
            ctypes.memmove(base + ptr, data, len(data))
        return True

    def read_u32(self, ptr: int) -> int | None:
        raw = self.read(ptr, 4)
        return None if raw is None else int(_U32.unpack(raw)[0])

    def write_u32(self, ptr: int, value: int) -> bool:
        return self.write(ptr, _U32.pack(value & 0xFFFFFFFF))

    def write_u64(self, ptr: int, value: int) -> bool:
        return self.write(ptr, _U64.pack(value & 0xFFFFFFFFFFFFFFFF))

    def alloc(self, size: int) -> int | None:
        """Allocate ``size`` bytes in the guest; ``None`` when malloc fails or returns a bad pointer."""
        if self.malloc is None:
            return None
        ptr = self.malloc(size) & 0xFFFFFFFF
        if ptr == 0 or ptr + size > self.size():
            return None
        return ptr

    def copy_to_pointer_size(self, data: bytes, ptr_ptr: int, size_ptr: int) -> bool:
        """Allocate guest memory for ``data`` and store its address/size at the two pointers."""
        address = 0
        if data:
            got = self.alloc(len(data))
            if got is None:
                return False
            address = got
            self.write(address, data)
        return self.write_u32(ptr_ptr, address) and self.write_u32(size_ptr, len(data))
