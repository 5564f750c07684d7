"""What fills a built module's linear memory: the snapshot's heap by object type, and its static data
by output section, from the module and the runtime's link map.

    PROXYWASM_LINK_MAP=/tmp/link.map PYTHON=.venv/bin/python bash sdk/runtime/build.sh   # a map
    .venv/bin/proxywasm build bench/filters/python/headers.py -o /tmp/headers.wasm
    .venv/bin/python bench/snapshot_memory.py /tmp/headers.wasm /tmp/link.map

(the runtime build must be the one the module was built with; build.sh reuses a cached runtime
without linking, so give it an empty ``PROXYWASM_CACHE`` with the downloads copied in to get a map.)

The heap is read as wasi-libc's dlmalloc leaves it (8-byte chunk headers: size with PINUSE and
CINUSE bits; a chunk is in use when the next one's PINUSE bit is set). A live chunk's type is the
static type object its ``ob_type`` points to (at offset 4; 12 behind a GC header; 20 behind the GC
header and the two pointers CPython 3.11 puts before objects with a managed ``__dict__``), named by
the link map; "heap type instance" when it points to a type allocated in the heap; "untyped" for
blocks that are no object (dict key tables, arrays, buffers). Pages are 4 KiB pages with a non-zero
byte: what each Envoy worker's VM makes resident.
"""

from __future__ import annotations

import argparse
import collections
import re
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sdk"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sdk" / "runtime"))

from data_layout import parse_link_map  # the runtime build's reader of the map

from proxywasm_build import wasm

PAGE = 4096
_TYPE_SIZE = 0xCC  # sizeof(PyTypeObject) on wasm32 (3.11)
_SECTIONS = (".rodata", ".data", ".bss", "pydoc", "pyinit")


def link_map(path: Path) -> tuple[dict[int, str], list[tuple[int, int, str]]]:
    """Static type objects by address, and the output sections (start, size, name) of the data."""
    layout = parse_link_map(path.read_text())
    types = {address: name for name, address, size, _ in layout.symbols
             if size == _TYPE_SIZE and re.fullmatch(r"\w+", name)}  # fmt: skip
    sections = [(address, size, name) for name, (address, size) in layout.segments.items()
                if name in _SECTIONS or name.startswith("pyfrozen.")]  # fmt: skip
    return types, sections


def chunks(memory: bytes, start: int) -> tuple[list[tuple[int, int]], int, int]:
    """(user address, chunk size) of each live chunk from ``start``, the free bytes and free chunks."""
    live: list[tuple[int, int]] = []
    free = free_chunks = 0
    at = start
    while at + 8 <= len(memory):
        size = struct.unpack_from("<I", memory, at + 4)[0] & ~7
        following = at + size
        if size == 0 or following + 8 > len(memory):
            break
        if struct.unpack_from("<I", memory, following + 4)[0] & 1:
            live.append((at + 8, size))
        else:
            free += size
            free_chunks += 1
        at = following
    return live, free, free_chunks


def first_chunk(memory: bytes, heap_base: int) -> int:
    """The first chunk: the offset after the heap base whose chain of chunks runs longest."""
    candidates = range((heap_base + 7) & ~7, (heap_base + 7 & ~7) + 256, 8)
    return max(candidates, key=lambda at: len(chunks(memory, at)[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("module", type=Path)
    parser.add_argument("link_map", type=Path)
    args = parser.parse_args()
    sections = wasm.parse_sections(args.module.read_bytes())
    data = next(s for s in sections if s.id == wasm.DATA)
    memory = bytes(wasm.initial_memory(wasm.parse_data(data.payload))) + bytes(PAGE)
    types, static = link_map(args.link_map)
    resident = {p for p in range(len(memory) // PAGE) if any(memory[p * PAGE : (p + 1) * PAGE])}

    print("| static data | KiB | non-zero KiB | resident pages |")
    print("|---|---|---|---|")
    for start, size, name in static:
        pages = set(range(start // PAGE, (start + size - 1) // PAGE + 1)) & resident
        nonzero = sum(1 for b in memory[start : start + size] if b)
        if pages:
            print(f"| {name} | {size / 1024:.1f} | {nonzero / 1024:.1f} | {len(pages)} |")

    bss = next(start + size for start, size, name in static if name == ".bss")
    live, free, free_chunks = chunks(memory, first_chunk(memory, bss))
    heap_pages = {p for p in resident if p * PAGE >= bss}
    in_use = sum(size for _, size in live)
    print(f"\nheap: {in_use:,} bytes in {len(live):,} live chunks, {free:,} bytes in {free_chunks} free chunks;")
    print(f"{len(heap_pages)} resident pages, {in_use / PAGE:.0f} if the live chunks were packed")
    type_type = next(address for address, name in types.items() if name == "PyType_Type")
    heap_types = {user + 8 for user, _ in live if struct.unpack_from("<I", memory, user + 12)[0] == type_type}
    by_type: collections.Counter[str] = collections.Counter()
    count: collections.Counter[str] = collections.Counter()
    for user, size in live:
        plain, behind_gc, managed = (struct.unpack_from("<I", memory, user + at)[0] for at in (4, 12, 20))
        if plain in types:
            kind = types[plain]
        elif behind_gc in types:
            kind = types[behind_gc]
        elif behind_gc in heap_types or managed in heap_types:
            kind = "heap type instance"
        elif managed in types:
            kind = types[managed]
        else:
            kind = "untyped"
        by_type[kind] += size
        count[kind] += 1
    print("\n| heap chunks of | KiB | chunks |")
    print("|---|---|---|")
    for kind, size in by_type.most_common(15):
        print(f"| {kind} | {size / 1024:.0f} | {count[kind]:,} |")


if __name__ == "__main__":
    main()
