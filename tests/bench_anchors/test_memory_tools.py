"""bench/memory_map.py and bench/snapshot_memory.py read what they claim to: smaps mappings by kind
(a Wasm memory by its guard reservation, a thread stack by its guard page), and dlmalloc's chunks
(live when the next chunk's PINUSE bit says so)."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import memory_map  # noqa: E402
import snapshot_memory  # noqa: E402

from proxywasm_build.envoy import parse_smaps  # noqa: E402

KIB = 1024


def _mapping(low: int, size: int, perm: str, rss_kib: int, name: str = "") -> str:
    return f"{low:x}-{low + size:x} {perm} 00000000 00:00 0 {name}\nSize: {size // KIB} kB\nRss: {rss_kib} kB\n"


def test_smaps_mappings_by_kind() -> None:
    text = "".join(
        [
            _mapping(0x1000_0000, 4 * KIB * KIB, "r-xp", 900, "/usr/bin/envoy"),
            _mapping(0x2000_0000, 64 * KIB * KIB, "rw-p", 1856),  # a VM's linear memory ...
            _mapping(0x2400_0000, 8 << 30, "---p", 0),  # ... and V8's guard reservation after it
            _mapping(0x3000_0000, 4 * KIB, "---p", 0),  # a thread's guard page ...
            _mapping(0x3000_1000, 8 << 20, "rw-p", 40),  # ... and its stack
            _mapping(0x4000_0000, 2 * KIB * KIB, "rw-p", 700),  # anything else anonymous
            _mapping(0x5000_0000, 132 * KIB, "rw-p", 100, "[heap]"),
            _mapping(0x6000_0000, 132 * KIB, "rw-p", 12, "[stack]"),
        ]
    )
    kinds = memory_map.classify_mappings(parse_smaps(text))
    assert kinds == {
        "Wasm linear memory": 1856 * KIB,
        "thread stack": 40 * KIB,
        "other anonymous": 800 * KIB,
        "files, main stack, kernel": 912 * KIB,
    }


def _chunk(size: int, previous_in_use: bool, in_use: bool = True) -> bytes:
    """A dlmalloc chunk of ``size`` bytes (header: prev_foot, head with PINUSE=1 CINUSE=2)."""
    head = size | (1 if previous_in_use else 0) | (2 if in_use else 0)
    return struct.pack("<II", 0, head) + bytes(size - 8)


def test_dlmalloc_chunks_live_and_free() -> None:
    heap = _chunk(16, True) + _chunk(32, True, in_use=False) + _chunk(48, False) + _chunk(24, True)
    memory = bytes(40) + heap + struct.pack("<II", 0, 64 | 1) + bytes(64)  # then the top chunk
    live, free, free_chunks = snapshot_memory.chunks(memory, 40)
    assert live == [(48, 16), (96, 48), (144, 24)]  # user address = chunk + 8
    assert (free, free_chunks) == (32 + 64, 2)  # the free one, and the top chunk (nothing after it)
    assert snapshot_memory.first_chunk(memory, 33) == 40  # the start whose chain runs longest
    junk = struct.pack("<II", 0, 8 | 1) + bytes(8)  # a 16-byte run that parses as a lone chunk
    shifted = bytes(24) + junk + memory[40:]
    assert snapshot_memory.first_chunk(shifted, 17) == 40  # past the junk, not the first aligned offset
