"""Zeroes the deep-frozen stdlib objects that nothing references once the filter is imported.

CPython keeps the code of its frozen modules (importlib, os, codecs, ...) as static objects in
the runtime's data. The runtime lists where each one lies in a custom section (written by
``sdk/runtime/data_layout.py`` from the linker's map) and empties the frozen-module tables after
initialisation, so no import can reach these objects any more. What a conservative scan of the
initialised memory finds no pointer to (a module the filter never imported, the top-level code
that ran once) is dead: zeroed, it needs no data segment, and no Envoy worker copies it.

The scan is conservative: every aligned 32-bit word of writable memory outside the objects
counts as a possible pointer, and an object found live is scanned in turn (its pointer fields:
not bytecode, string or bytes contents). A word that happens to look like a pointer keeps an
object; nothing that is referenced is dropped. Pointers into an object's middle count for
strings, bytes and numbers only: Python objects are otherwise referenced by their start (a
frame's pointer into bytecode comes with one to its code object).
"""

from __future__ import annotations

import bisect
import struct
import sys
from array import array
from dataclasses import dataclass

SECTION = "proxywasm.frozen-objects"


@dataclass
class FrozenObjects:
    """The custom section: where the constant data lies (it cannot point to a deep-frozen
    object: only deepfreeze.c could, and its objects are all writable data), and the address
    and size of every deep-frozen object."""

    constant_data: tuple[int, int]
    objects: list[tuple[int, int]]

    @classmethod
    def parse(cls, payload: bytes) -> FrozenObjects:
        start, end = struct.unpack_from("<II", payload)
        return cls((start, end), sorted(struct.iter_unpack("<II", payload[8:])))

    def encode(self) -> bytes:
        pairs = (struct.pack("<II", address, size) for address, size in sorted(self.objects))
        return struct.pack("<II", *self.constant_data) + b"".join(pairs)


@dataclass
class Layout:
    """What the runtime reports about its objects (``proxywasm_frozen_layout`` in static_data.c)."""

    code_type: int
    code_header: int  # a code object's pointers end here; its bytecode follows
    tuple_type: int
    gc_header: int  # a deep-frozen tuple starts with a GC header: the object follows it
    leaf_types: frozenset[int]  # types whose objects point to no other object

    @classmethod
    def read(cls, memory: bytes, address: int) -> Layout:
        code_type, code_header, tuple_type, gc_header, count = struct.unpack_from("<5I", memory, address)
        leaf_types = frozenset(struct.unpack_from(f"<{count}I", memory, address + 20))
        return cls(code_type, code_header, tuple_type, gc_header, leaf_types)

    def object_offset(self, memory: bytes, address: int) -> int:
        """Where the Python object starts in the deep-frozen symbol at ``address``."""
        (word,) = struct.unpack_from("<I", memory, address + self.gc_header + 4)
        return self.gc_header if word == self.tuple_type else 0


def zero_unreferenced(memory: bytearray, frozen: FrozenObjects, layout: Layout) -> int:
    """Zero every object in ``memory`` no pointer reaches; returns the bytes zeroed."""
    objects = frozen.objects
    if not objects:
        return 0
    starts = [address for address, _ in objects]
    low = starts[0]
    high = objects[-1][0] + objects[-1][1]
    heads = [address + layout.object_offset(memory, address) for address in starts]
    types = [struct.unpack_from("<I", memory, head + 4)[0] for head in heads]
    # A pointer into an object's middle counts only for strings, bytes and numbers: C code may
    # keep a pointer to their contents. Anything else is referenced by its start (or its GC header's).
    interior_ok = bytes(t in layout.leaf_types for t in types)
    live = bytearray(len(objects))
    pending: list[int] = []

    def scan(start: int, end: int) -> None:
        start += -start % 4  # object pointers are 4-byte aligned
        end -= (end - start) % 4
        if end <= start:
            return
        words = array("I", memory[start:end])
        if sys.byteorder == "big":
            words.byteswap()
        for value in words:
            if low <= value < high:
                i = bisect.bisect_right(starts, value) - 1
                if not live[i] and (
                    value in (starts[i], heads[i]) or (interior_ok[i] and value < starts[i] + objects[i][1])
                ):
                    live[i] = 1
                    pending.append(i)

    # Roots: all writable memory outside the objects (static data, heap, stack, padding).
    constant_start, constant_end = frozen.constant_data
    end = 0
    for address, size in [(constant_start, constant_end - constant_start), *objects]:
        scan(end, address)
        end = max(end, address + size)
    scan(end, len(memory))
    # Then what live objects point to. Bytecode and the contents of strings, bytes and numbers
    # are not pointers: scanning them would only find false ones.
    while pending:
        i = pending.pop()
        address, size = objects[i]
        if types[i] == layout.code_type:
            scan(address, address + min(size, layout.code_header))
        elif not interior_ok[i]:
            scan(address, address + size)

    zeroed = 0
    for (address, size), keep in zip(objects, live, strict=False):
        if not keep:
            memory[address : address + size] = bytes(size)
            zeroed += size
    return zeroed
