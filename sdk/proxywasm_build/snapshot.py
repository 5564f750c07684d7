"""Build-time initialisation: run the runtime's init export on wasmtime with the stdlib and the
bundle mapped in, then write the initialised memory and globals back into a new module.

Inside Envoy there is no filesystem, so Python must be initialised here, at build time; the
result instantiates in milliseconds. Random bytes and clocks are fixed during initialisation so
that the same inputs give the same module bytes.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import wasmtime

from proxywasm.abi import KEEP_COMPILER_FACT

from . import compiled, frozen_objects, served_code, wasm
from .buildfs import BuildFilesystem

INIT_EXPORT = "proxywasm_snapshot_init"
LAYOUT_EXPORT = "proxywasm_frozen_layout"
#: Exports the served module drops: they only serve initialisation.
REMOVED_EXPORTS = {"_initialize", INIT_EXPORT, LAYOUT_EXPORT}
_GLOBAL_EXPORT_PREFIX = "__proxywasm_snapshot_global_"
_ZERO_GAP = re.compile(rb"\0{32,}")
_LOG_LEVELS = ("trace", "debug", "info", "warn", "error", "critical")


class SnapshotError(Exception):
    """Initialisation failed inside the module; ``output`` holds what the guest printed."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.output = output


@dataclass
class SnapshotResult:
    module: bytes
    memory_bytes: int  # the linear memory's initial size
    resident_bytes: int  # the 4 KiB pages its data fills: what each VM in Envoy makes resident
    logs: list[str] = field(default_factory=list)
    compiler_kept: bool = False  # the filter called proxywasm.vm.keep_compiler()


def snapshot(runtime: bytes, mounts: dict[str, Path]) -> SnapshotResult:
    """Initialise ``runtime`` with ``mounts`` (guest dir -> host dir) visible and return the
    snapshotted module."""
    sections = wasm.parse_sections(runtime)
    by_id = {s.id: s for s in sections}
    if wasm.DATA_COUNT in by_id:
        raise wasm.WasmFormatError("modules with passive data segments are not supported")
    imported_globals = wasm.imported_count(by_id[wasm.IMPORT].payload, wasm.GLOBAL_KIND) if wasm.IMPORT in by_id else 0
    globals_ = wasm.parse_globals(by_id[wasm.GLOBAL].payload) if wasm.GLOBAL in by_id else []
    exports = wasm.parse_exports(by_id[wasm.EXPORT].payload)

    # Expose every mutable global (the stack pointer among them) so its final value can be read.
    probe_exports = exports + [
        wasm.Export(f"{_GLOBAL_EXPORT_PREFIX}{i}", wasm.GLOBAL_KIND, imported_globals + i)
        for i, g in enumerate(globals_)
        if g.mutable
    ]
    probe = [wasm.Section(s.id, wasm.encode_exports(probe_exports)) if s.id == wasm.EXPORT else s for s in sections]
    memory, values, layout, logs = _run_init(wasm.build_module(probe), mounts)
    _zero_free_stack(memory, sections, values, imported_globals)
    for s in sections:
        if wasm.custom_name(s) == frozen_objects.SECTION and layout is not None:
            frozen = frozen_objects.FrozenObjects.parse(wasm.custom_body(s))
            frozen_objects.zero_unreferenced(memory, frozen, layout)

    for i, g in enumerate(globals_):
        if g.mutable:
            g.init = wasm.const_expr(g.valtype, values[i])
    pages = len(memory) // 65536
    memories = [(pages, maximum) for _, maximum in wasm.parse_memories(by_id[wasm.MEMORY].payload)]
    kept_exports = [e for e in exports if e.name not in REMOVED_EXPORTS]

    segments = _segments(bytes(memory))
    compiler_kept = any(line.endswith(KEEP_COMPILER_FACT) for line in logs)  # "[info] proxywasm-build: ..."
    logs = [line for line in logs if not line.endswith(KEEP_COMPILER_FACT)]
    listed = [wasm.custom_body(s) for s in sections if wasm.custom_name(s) == served_code.SECTION]
    build_only = served_code.BuildOnlyCode.parse(listed[0]) if listed and not compiler_kept else None
    out: list[wasm.Section] = []
    for s in sections:
        if s.id == wasm.GLOBAL:
            out.append(wasm.Section(s.id, wasm.encode_globals(globals_)))
        elif s.id == wasm.MEMORY:
            out.append(wasm.Section(s.id, wasm.encode_memories(memories)))
        elif s.id == wasm.EXPORT:
            out.append(wasm.Section(s.id, wasm.encode_exports(kept_exports)))
        elif s.id == wasm.DATA:
            out.append(wasm.Section(s.id, wasm.encode_data(segments)))
        elif s.id == wasm.CODE and build_only is not None:
            out.append(served_code.strip(s, build_only, build_only.builtin_modules(memory)))
        elif wasm.custom_name(s) in (frozen_objects.SECTION, served_code.SECTION):
            continue
        elif wasm.custom_name(s) == "name":
            out.append(wasm.without_name_subsection(s, wasm.NAME_DATA_SEGMENTS))  # they name the old segments
        else:
            out.append(s)
    return SnapshotResult(wasm.build_module(out), len(memory), resident_bytes(segments), logs, compiler_kept)


def resident_bytes(segments: list[tuple[int, bytes]], page: int = 4096) -> int:
    """Bytes of the pages that ``segments`` write to (instantiating copies them in)."""
    pages: set[int] = set()
    for offset, data in segments:
        pages.update(range(offset // page, (offset + len(data) - 1) // page + 1))
    return len(pages) * page


def _zero_free_stack(
    memory: bytearray, sections: list[wasm.Section], values: dict[int, int | float], imported_globals: int
) -> None:
    """The stack below the final stack pointer holds only dead frames. When the stack lies
    below all static data (wasm-ld's --stack-first, as the runtime links), zero it."""
    index = wasm.global_names(sections).get("__stack_pointer")
    data = [s for s in sections if s.id == wasm.DATA]
    if index is None or index < imported_globals or not data:
        return
    stack_pointer = int(values.get(index - imported_globals, 0))
    if 0 < stack_pointer <= min(offset for offset, _ in wasm.parse_data(data[0].payload)):
        memory[:stack_pointer] = bytes(stack_pointer)


def _segments(memory: bytes) -> list[tuple[int, bytes]]:
    """Non-zero stretches of memory; zero runs shorter than 32 bytes stay inside a segment."""
    segments = []
    start = 0
    for gap in _ZERO_GAP.finditer(memory):
        if gap.start() > start:
            segments.append((start, memory[start : gap.start()]))
        start = gap.end()
    if start < len(memory):
        tail = memory[start:].rstrip(b"\0")
        if tail:
            segments.append((start, tail))
    return [(off + len(data) - len(data.lstrip(b"\0")), data.lstrip(b"\0")) for off, data in segments]


def _compile_runtime(engine: wasmtime.Engine, code: bytes) -> wasmtime.Module:
    """The runtime compiled by Cranelift: about 2 s (its cold calls are indirect, which Cranelift
    compiles more slowly: 1.4 s without them), and the same for every build of one
    installation, so its artefact is kept in the cache (keyed by the bytes and wasmtime's
    version) unless ``PROXYWASM_COMPILED_CACHE=0`` or there is no home directory to keep it in."""
    folder = compiled.build_folder("snapshot")
    if folder is None:
        return wasmtime.Module(engine, code)
    key = hashlib.sha256(code).hexdigest()[:32]
    return compiled.load_or_compile(engine, code, folder / f"{key}-wasmtime{compiled.wasmtime_version()}.cwasm")


def _run_init(
    module_bytes: bytes, mounts: dict[str, Path]
) -> tuple[bytearray, dict[int, int | float], frozen_objects.Layout | None, list[str]]:
    engine = wasmtime.Engine()
    module = _compile_runtime(engine, module_bytes)
    store = wasmtime.Store(engine)
    logs: list[str] = []
    output: list[str] = []

    linker = wasmtime.Linker(engine)
    BuildFilesystem(mounts, output.append).define(linker, module)
    _define_env_stubs(linker, module, logs)
    instance = linker.instantiate(store, module)
    ext = instance.exports(store)

    def failure(message: str) -> SnapshotError:
        return SnapshotError(message, "\n".join([*logs, "".join(output).rstrip("\n")]).strip("\n"))

    try:
        init = ext["_initialize"]
        assert isinstance(init, wasmtime.Func)
        init(store)
        run = ext[INIT_EXPORT]
        assert isinstance(run, wasmtime.Func)
        status = run(store)
    except (wasmtime.Trap, wasmtime.WasmtimeError, RuntimeError) as trap:
        raise failure(f"the runtime trapped during initialisation: {trap}") from None
    if status != 0:
        raise failure("initialisation failed")

    mem = ext["memory"]
    assert isinstance(mem, wasmtime.Memory)
    memory = bytearray(mem.read(store, 0, mem.data_len(store)))
    layout_fn = ext.get(LAYOUT_EXPORT)
    layout = frozen_objects.Layout.read(memory, layout_fn(store)) if isinstance(layout_fn, wasmtime.Func) else None
    values: dict[int, int | float] = {}
    for export in module.exports:
        if export.name.startswith(_GLOBAL_EXPORT_PREFIX):
            item = ext[export.name]
            assert isinstance(item, wasmtime.Global)
            values[int(export.name[len(_GLOBAL_EXPORT_PREFIX) :])] = item.value(store)
    text = "".join(output)
    if text.strip():
        logs.extend(text.rstrip("\n").splitlines())
    return memory, values, layout, logs


def _define_env_stubs(linker: wasmtime.Linker, module: wasmtime.Module, logs: list[str]) -> None:
    """Envoy allows only logging during initialisation; every other host call answers UNIMPLEMENTED."""
    for imp in module.imports:
        if imp.module != "env" or imp.name is None or not isinstance(imp.type, wasmtime.FuncType):
            continue
        if imp.name == "proxy_log":

            def proxy_log(caller: wasmtime.Caller, level: int, ptr: int, size: int) -> int:
                memory = caller["memory"]
                assert isinstance(memory, wasmtime.Memory)
                text = bytes(memory.read(caller, ptr, ptr + size)).decode(errors="replace")
                name = _LOG_LEVELS[level] if 0 <= level < len(_LOG_LEVELS) else str(level)
                logs.append(f"[{name}] {text}")
                return 0

            linker.define_func("env", imp.name, imp.type, proxy_log, access_caller=True)
        else:
            results = imp.type.results

            def unimplemented(*args: object, _n: int = len(results)) -> int | None:
                return 12 if _n else None  # Status.UNIMPLEMENTED

            linker.define_func("env", imp.name, imp.type, unimplemented)
