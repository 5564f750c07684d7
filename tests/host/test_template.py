"""Templates (proxywasm_host.wasm.template): builds that share their code share one compiled
artefact, and an instance of a template, once filled, is the instance of the module."""

from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime
from guest import probe_wasm

from proxywasm_build import wasm
from proxywasm_build.build import build
from proxywasm_host import Host, LoadError
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
    """The filter built into tmp_path (not into the build cache)."""
    source = tmp_path / f"{tag}.py"
    source.write_text(FILTER.format(tag=tag))
    out = tmp_path / f"{tag}.wasm"
    out.write_bytes(build(source).module)
    return out


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


def _filled_instance(code: bytes) -> tuple[wasmtime.Store, wasmtime.Instance]:
    prepared = compile_module(code, use_cache=False)
    assert prepared.fill is not None
    store = wasmtime.Store(engine())
    store.set_fuel(10**6)
    linker = wasmtime.Linker(engine())
    linker.define_unknown_imports_as_traps(prepared.module)
    instance = linker.instantiate(store, prepared.module)
    prepared.fill.apply(store, instance)
    return store, instance


def _memory(store: wasmtime.Store, instance: wasmtime.Instance, name: str = "memory") -> tuple[int, bytes]:
    memory = instance.exports(store)[name]
    assert isinstance(memory, wasmtime.Memory)
    return memory.size(store), memory.read(store, 0, memory.data_len(store))


@pytest.mark.parametrize("which", ["python filter", "probe"])
def test_a_filled_template_is_the_module_instantiated(tmp_path: Path, which: str) -> None:
    code = _built(tmp_path, "same").read_bytes() if which == "python filter" else probe_wasm()
    plain, filled = _plain_instance(code), _filled_instance(code)
    assert _memory(*filled) == _memory(*plain)
    assert [e.name for e in compile_module(code, use_cache=False).exports] == list(plain[1].exports(plain[0]))


TRAPS = """(module
  (memory $m {export} 2)
  (data (i32.const 100) "\\01\\02\\03\\04")
  (data (i32.const 65600) "second page")
  (func (export "load") (param i32) (result i32) (i32.load (local.get 0)))
  (func (export "proxy_abi_version_0_2_1")))"""


@pytest.mark.parametrize("export", ['(export "memory")', ""], ids=["memory exported", "memory not exported"])
def test_traps_and_reads_are_the_modules_own(export: str) -> None:
    code = bytes(wasmtime.wat2wasm(TRAPS.format(export=export)))
    plain, filled = _plain_instance(code), _filled_instance(code)
    answers = []
    for store, instance in (plain, filled):
        load = instance.exports(store)["load"]
        assert isinstance(load, wasmtime.Func)
        assert load(store, 100) == 0x04030201
        with pytest.raises(wasmtime.Trap) as trap:
            load(store, 2 * 65536 - 2)
        answers.append(str(trap.value))
    if export:  # the same bytes before the data section: backtraces name the module's own offsets
        assert answers[0] == answers[1] and "0x" in answers[0]
    else:
        assert _memory(*filled, name=PRIVATE_EXPORT)[0] == 2
        assert [e.name for e in compile_module(code, use_cache=False).exports] == ["load", "proxy_abi_version_0_2_1"]


def test_an_invalid_module_is_refused_as_wasmtime_refuses_it() -> None:
    # A global of type i32 initialised by an i64 constant: the template keeps the global as it is,
    # but wasmtime must still see the whole module to refuse it.
    wat = TRAPS.format(export='(export "memory")').replace(
        "(func (export", "(global (mut i32) (i32.const 7)) (func (export", 1
    )
    code = bytes(wasmtime.wat2wasm(wat))
    assert code.count(b"\x7f\x01\x41\x07\x0b") == 1
    bad = code.replace(b"\x7f\x01\x41\x07\x0b", b"\x7f\x01\x42\x07\x0b")
    assert split(bad)[1] is not None
    with pytest.raises(wasmtime.WasmtimeError) as whole:
        wasmtime.Module(engine(), bad)
    with pytest.raises(LoadError) as refused:
        Host.load(bad, use_cache=False)
    assert str(refused.value) == f"Failed to load Wasm code: {whole.value}"


@pytest.mark.parametrize(
    "change",
    ["data offset an expression", "bytes after the data", "data before the code", "minimum over maximum"],
)
def test_what_the_template_leaves_out_is_checked_before(change: str) -> None:
    """Modules whose data or memory the split does not read as a template: compiled whole, so
    wasmtime decides (an offset computed by an extended constant expression is valid; the others
    are refused as wasmtime refuses them)."""
    code = bytes(wasmtime.wat2wasm(TRAPS.format(export='(export "memory")')))
    assert split(code)[1] is not None
    sections = wasm.parse_sections(code)
    data = next(s for s in sections if s.id == wasm.DATA)
    if change == "data offset an expression":  # i32.const 100, i32.const 0, i32.add
        data.payload = data.payload.replace(b"\x00\x41\xe4\x00\x0b", b"\x00\x41\xe4\x00\x41\x00\x6a\x0b", 1)
    elif change == "bytes after the data":
        data.payload += b"\x00"
    elif change == "data before the code":
        sections.remove(data)
        sections.insert(next(i for i, s in enumerate(sections) if s.id == wasm.CODE), data)
    else:
        memory = next(s for s in sections if s.id == wasm.MEMORY)
        memory.payload = wasm.encode_memories([(2, 1)])
    changed = wasm.build_module(sections)
    assert split(changed) == (changed, None)
    if change == "data offset an expression":
        store, instance = _plain_instance(changed)
        load = instance.exports(store)["load"]
        assert isinstance(load, wasmtime.Func) and load(store, 100) == 0x04030201
        return
    with pytest.raises(wasmtime.WasmtimeError) as whole:
        wasmtime.Module(engine(), changed)
    with pytest.raises(LoadError) as refused:
        Host.load(changed, use_cache=False)
    assert str(refused.value) == f"Failed to load Wasm code: {whole.value}"


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
    with pytest.raises(LoadError, match="Failed to create new Wasm instance: .*out of bounds"):
        Host.load(code, use_cache=False)


@pytest.mark.parametrize(
    "module",
    [
        '(module (import "env" "memory" (memory 1)) (data (i32.const 0) "x"))',
        '(module (memory 1) (data "passive")'
        ' (func (export "f") (memory.init 0 (i32.const 0) (i32.const 0) (i32.const 1))))',
        '(module (memory 1) (data (i32.const 0) "x"))',  # neither memory nor any export to fill it by
        '(module (memory 100) (data (i32.const 0) "x") (data (i32.const 6000000) "y") (func (export "f")))',
    ],
    ids=["imported memory", "passive segment", "no exports", "data far apart"],
)
def test_modules_a_template_cannot_fill_are_compiled_whole(module: str) -> None:
    code = bytes(wasmtime.wat2wasm(module))
    assert split(code) == (code, None)


def test_a_module_exporting_the_templates_own_name_is_compiled_whole() -> None:
    # Its memory not exported, and the name a template would give it already the module's.
    code = bytes(wasmtime.wat2wasm(TRAPS.format(export="").replace('"load"', f'"{PRIVATE_EXPORT}"')))
    assert split(code) == (code, None)
    prepared = compile_module(code, use_cache=False)
    assert [e.name for e in prepared.exports] == [PRIVATE_EXPORT, "proxy_abi_version_0_2_1"]
