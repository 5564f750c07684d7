"""Templates (proxywasm_host.wasm.template): builds that share their code share one compiled
artefact, and an instance of a template, once filled, is the instance of the module."""

from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime
from guest import probe_wasm

from proxywasm_build import wasm
from proxywasm_build.cache import build_cached
from proxywasm_host import Host, LoadError
from proxywasm_host.wasm import module as cache
from proxywasm_host.wasm.module import compile_module, engine
from proxywasm_host.wasm.template import PRIVATE_EXPORT, split

FILTER = """
import proxywasm
from proxywasm import Action, HttpContext


@proxywasm.register
class Tagged(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        headers["x-tag"] = {tag!r}
        return Action.CONTINUE
"""


def _built(tmp_path: Path, tag: str) -> Path:
    source = tmp_path / f"{tag}.py"
    source.write_text(FILTER.format(tag=tag))
    return build_cached(source)


def test_builds_with_the_same_code_share_one_artefact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = _built(tmp_path, "first"), _built(tmp_path, "second")
    assert first.read_bytes() != second.read_bytes()
    monkeypatch.setenv("PROXYWASM_CACHE_DIR", str(tmp_path / "cache"))  # the host's artefacts only
    replies = [Host.load(m).request() for m in (first, second)]
    assert [r.upstream_request.header("x-tag") for r in replies if r.upstream_request] == ["first", "second"]
    assert len(list((tmp_path / "cache" / "host").glob("*.cwasm"))) == 1


def _plain_instance(code: bytes) -> tuple[wasmtime.Store, wasmtime.Instance]:
    store = wasmtime.Store(engine())
    store.set_fuel(10**6)
    linker = wasmtime.Linker(engine())
    module = wasmtime.Module(engine(), code)
    linker.define_unknown_imports_as_traps(module)
    return store, linker.instantiate(store, module)


@pytest.mark.parametrize("which", ["python filter", "probe"])
def test_a_filled_template_is_the_module_instantiated(tmp_path: Path, which: str) -> None:
    code = _built(tmp_path, "same").read_bytes() if which == "python filter" else probe_wasm()
    store, plain = _plain_instance(code)
    prepared = compile_module(code, use_cache=False)
    assert prepared.fill is not None
    other = wasmtime.Store(engine())
    linker = wasmtime.Linker(engine())
    linker.define_unknown_imports_as_traps(prepared.module)
    filled = linker.instantiate(other, prepared.module)
    prepared.fill.apply(other, filled)

    plain_memory, filled_memory = plain.exports(store)["memory"], filled.exports(other)["memory"]
    assert isinstance(plain_memory, wasmtime.Memory) and isinstance(filled_memory, wasmtime.Memory)
    assert filled_memory.size(other) == plain_memory.size(store)
    assert filled_memory.read(other, 0, filled_memory.data_len(other)) == plain_memory.read(
        store, 0, plain_memory.data_len(store)
    )
    # The globals the template set to 0 hold the module's values again (the stack pointer among them).
    sections = wasm.parse_sections(code)
    globals_ = wasm.parse_globals(next(s for s in sections if s.id == wasm.GLOBAL).payload)
    expected = {f"{PRIVATE_EXPORT}global{i}": wasm.integer_const(g.init) for i, g in enumerate(globals_) if g.mutable}
    found = {name: item.value(other) for name, item in filled.exports(other).items() if name in expected}
    assert found == expected and any(expected.values())
    # The host's views leave the template's own exports out.
    assert not [e for e in prepared.exports if e.name.startswith(PRIVATE_EXPORT)]
    assert len(prepared.exports) == len(plain.exports(store))


START = """(module
  (memory (export "memory") 1)
  (global $seen (export "seen") (mut i32) (i32.const 0))
  (data (i32.const 64) "\\2a")
  (func $start (global.set $seen (i32.load8_u (i32.const 64))))
  (start $start)
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1")))"""


def test_a_start_function_sees_the_data_as_instantiating_runs_it() -> None:
    code = bytes(wasmtime.wat2wasm(START))
    assert split(code)[1] is None  # compiled whole: the start function runs before any fill could
    host = Host.load(code, use_cache=False)
    assert host.raw.global_value("seen") == 42


def test_a_data_segment_beyond_the_memory_fails_the_load_as_wasmtime_words_it() -> None:
    code = bytes(wasmtime.wat2wasm(START.replace("(i32.const 64) ", "(i32.const 65536) ")))
    assert split(code)[1] is None
    cache.forget()
    with pytest.raises(LoadError, match="Failed to create new Wasm instance: .*out of bounds"):
        Host.load(code, use_cache=False)


@pytest.mark.parametrize(
    "module",
    [
        '(module (import "env" "memory" (memory 1)) (data (i32.const 0) "x"))',
        '(module (memory 1) (data "passive")'
        ' (func (export "f") (memory.init 0 (i32.const 0) (i32.const 0) (i32.const 1))))',
        '(module (memory 1) (data (i32.const 0) "x"))',  # no exports: not a proxy-wasm module
        '(module (memory 100) (data (i32.const 0) "x") (data (i32.const 6000000) "y") (func (export "f")))',
    ],
    ids=["imported memory", "passive segment", "no exports", "data far apart"],
)
def test_modules_a_template_cannot_fill_are_compiled_whole(module: str) -> None:
    code = bytes(wasmtime.wat2wasm(module))
    assert split(code) == (code, None)
