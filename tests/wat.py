"""Pieces of the hand-written WAT modules tests load, shared (importable as ``wat``: the root
conftest's folder is on sys.path): the probe guest of tests/host, the gRPC metadata module of
tests/runtime and the sparse-export modules of tests/differential."""

from __future__ import annotations

# malloc over a bump pointer, the global $heap the module declares: 8-byte aligned, growing the
# memory as it goes; 0 for a request over 64 MiB or when the memory cannot grow. Never frees.
MALLOC = (
    '  (func $malloc (export "malloc") (param $n i32) (result i32) (local $p i32)\n'
    "    (if (i32.gt_u (local.get $n) (i32.const 0x4000000)) (then (return (i32.const 0))))\n"
    "    (local.set $p (global.get $heap))\n"
    "    (global.set $heap (i32.and (i32.add (i32.add (local.get $p) (local.get $n)) (i32.const 7))"
    " (i32.const -8)))\n"
    "    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))\n"
    "      (then (if (i32.eq (memory.grow (i32.add (i32.shr_u (i32.sub (global.get $heap)"
    " (i32.mul (memory.size) (i32.const 65536))) (i32.const 16)) (i32.const 1))) (i32.const -1))"
    " (then (return (i32.const 0))))))\n"
    "    (local.get $p))"
)


def string(data: bytes) -> str:
    """``data`` as the contents of a WAT string literal (every byte escaped)."""
    return "".join(f"\\{b:02x}" for b in data)
