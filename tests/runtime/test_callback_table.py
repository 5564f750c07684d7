"""One table lists the proxy-wasm callbacks (proxywasm.abi.CALLBACKS): the runtime's C
(runtime/callbacks.c), the SDK dispatcher and the native host follow it. This checks they agree:
the C list's names and mask bits, and the built module's exports (parameters and result)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import wasmtime

from proxywasm import _dispatch, abi

CALLBACKS_C = Path(__file__).resolve().parents[2] / "sdk" / "runtime" / "callbacks.c"


def test_the_c_runtime_lists_the_same_callbacks_in_the_same_bit_order() -> None:
    text = CALLBACKS_C.read_text()
    block = text[text.index("#define CALLBACKS(X)") : text.index("#define ENUM")]
    listed = [(int(bit), name) for bit, name in re.findall(r"X\((\d+), (\w+)\)", block)]
    assert listed == [(bit, method) for bit, (_, method, _, _) in enumerate(abi.CALLBACKS)]


def test_the_dispatcher_follows_the_table() -> None:
    assert _dispatch.CALLBACKS == tuple(method for _, method, _, _ in abi.CALLBACKS)


def test_the_built_module_exports_each_callback_with_the_table_s_signature(
    build_filter: Callable[[str], Path],
) -> None:
    wasm = build_filter("import proxywasm\n\n@proxywasm.register\nclass F(proxywasm.HttpContext):\n    pass\n")
    module = wasmtime.Module.from_file(wasmtime.Engine(), str(wasm))
    exports = {e.name: e.type for e in module.exports}
    for export, _, nargs, fallback in abi.CALLBACKS:
        ty = exports[export]
        assert isinstance(ty, wasmtime.FuncType), export
        assert len(ty.params) == nargs + 1, export  # the context id, then the arguments
        assert len(ty.results) == (0 if fallback is None else 1), export
