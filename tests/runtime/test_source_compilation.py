"""The served module leaves out the code only the build-time snapshot runs (CPython's parser and
compiler, its start-up): the bodies are replaced, indices and data stay, and compiling source at
run time raises a RuntimeError naming the filter's line (sdk/runtime/build_only_code.py,
served_code.c, proxywasm_build/served_code.py). In the local host; Envoy: *_envoy.py."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm_build import served_code, wasm
from proxywasm_build.build import RUNTIME_DIR
from proxywasm_host import Host

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sdk" / "runtime"))
import build_only_code

FILTER = Path(__file__).with_name("compile_filter.py")
MESSAGE = (
    "RuntimeError: compiling Python source at run time is not available in the served module: do it at import time"
)


@pytest.fixture(scope="module")
def module(build_filter: Callable[[str], Path]) -> Path:
    return build_filter(FILTER.read_text())


def _sections(module: bytes) -> dict[int | str | None, wasm.Section]:
    return {s.id if s.id else wasm.custom_name(s): s for s in wasm.parse_sections(module)}


def _bodies(module: bytes) -> tuple[list[bytes], dict[str, int]]:
    sections = wasm.parse_sections(module)
    imported = wasm.imported_functions(sections)
    names = {name: i - imported for i, name in build_only_code.function_names(sections).items() if i >= imported}
    return served_code.code_bodies(next(s for s in sections if s.id == wasm.CODE).payload), names


def served_memory(module: bytes) -> bytearray:
    """The linear memory a served module starts with (its data segments)."""
    return wasm.initial_memory(wasm.parse_data(_sections(module)[wasm.DATA].payload))


def replaced(module: bytes) -> tuple[served_code.BuildOnlyCode, dict[int, int]]:
    """The runtime's list, and what it replaces in ``module``: its build-only code and the code
    only builtin modules the snapshot did not keep reach."""
    runtime = (RUNTIME_DIR / "python.wasm").read_bytes()
    listed = served_code.BuildOnlyCode.parse(wasm.custom_body(_sections(runtime)[served_code.SECTION]))
    needed = {i for m in listed.builtin_modules(served_memory(module)) for i in listed.modules.get(m, ())}
    return listed, {i: kind for i, kind in listed.functions.items() if i not in needed}


def test_the_served_module_replaces_only_the_listed_bodies(module: Path) -> None:
    runtime = (RUNTIME_DIR / "python.wasm").read_bytes()
    listed, functions = replaced(module.read_bytes())
    before, names = _bodies(runtime)
    after, _ = _bodies(module.read_bytes())
    assert served_code.SECTION not in _sections(module.read_bytes())
    assert len(after) == len(before)  # function indices unchanged
    for i, (old, new) in enumerate(zip(before, after, strict=True)):
        assert new == (listed.stub(functions[i]) if i in functions else old)
    stubbed = {name for name, i in names.items() if i in functions}
    # The compiler's entry points raise; the parser, AST conversion, compiler and the start-up
    # configuration are gone; the interpreter and what traceback printing uses stay.
    assert {n for n in stubbed if functions[names[n]] == served_code.UNAVAILABLE} == set(build_only_code.UNAVAILABLE)
    assert {"obj2ast_stmt", "compiler_visit_stmt", "_PyPegen_parse", "symtable_visit_stmt", "_PyConfig_Read"} <= stubbed
    assert not stubbed & {"_PyEval_EvalFrameDefault", "builtin_exec", "PyEval_EvalCode", "_PyTraceBack_Print_Indented"}
    assert not stubbed & {"_PyTokenizer_FindEncodingFilename", "ast_type_init", "_Py_Mangle", "malloc"}
    assert "proxy_on_request_headers" not in stubbed
    code = [len(s.payload) for m in (runtime, module.read_bytes()) for s in wasm.parse_sections(m) if s.id == wasm.CODE]
    assert code[1] < code[0] * 0.85


def test_v8_counts_at_most_a_quarter_of_the_served_functions_as_small(module: Path) -> None:
    """V8 lets every function inline more (and Envoy start later) when more than a quarter of a
    module's bodies are under 50 bytes (served_code.V8_SMALL_FUNCTION): the stubs must not count."""
    listed, _ = replaced(module.read_bytes())
    assert all(len(listed.stub(kind)) == served_code.V8_SMALL_FUNCTION for kind in range(3))
    bodies, _ = _bodies(module.read_bytes())
    assert served_code.v8_small_share(bodies) <= 0.25


def test_scan_reads_calls_and_padded_function_addresses() -> None:
    # no locals; i32.const 5 (padded: a relocated function address); i32.const 5 (plain); call 7;
    # i32.const 900 (padded, not a table slot); block i32 ... end; drop; end
    body = bytes([0, 0x41, 0x85, 0x80, 0x80, 0x80, 0, 0x41, 5, 0x10, 7, 0x41, 0x84, 0x87, 0x80, 0x80, 0])
    body += bytes([0x02, 0x7F, 0x41, 1, 0x0B, 0x1A, 0x0B])
    assert build_only_code.scan(body, range(1, 10)) == ([7], [5])


@pytest.mark.parametrize("mode", ["wasm", "native"])
def test_compiled_code_runs_and_run_time_compilation_raises_with_the_line(module: Path, mode: str) -> None:
    # Natively the builtins compile/exec/eval refuse source while a callback runs, as the served
    # module does (host/proxywasm_host/native/compiler.py); the line names the real file.
    host = Host.load(module) if mode == "wasm" else Host.load(FILTER, mode="native")
    shown = "filter.py" if mode == "wasm" else FILTER.name
    response = host.request("GET", "/bytecode")
    assert response.upstream_request is not None
    assert response.upstream_request.header("x-answer") == "42 Point(x=1, y=2) Settings(limit=3)"
    lines = FILTER.read_text().splitlines()
    for path, call in [("/eval", 'eval("1 + 1")'), ("/exec", "exec(\"y"), ("/compile", "compile(\"pass"),
                       ("/namedtuple", "namedtuple(\"Late\""), ("/ast", "ast.parse(")]:  # fmt: skip
        host.logs.clear()
        response = host.request("GET", path)
        assert response.status == 500 and response.upstream_request is None  # the failure policy: fail closed
        line = next(i for i, text in enumerate(lines, 1) if call in text and "elif" not in text)
        assert any(f"{MESSAGE} ({shown}:{line})" in message for _, message in host.logs), (path, host.logs)
    assert host.request("GET", "/bytecode").status == 200  # the VM goes on serving


def test_only_the_parser_takes_the_address_of_code_it_leaves_out() -> None:
    """build_only_code.py assumes the code behind the compiler's entry points keeps no function
    pointer beyond the compilation. The parser hands its rules to its lookahead helpers and the
    tokenizer its reader to its own state: that must stay all (checked again on every runtime)."""
    runtime = (RUNTIME_DIR / "python.wasm").read_bytes()
    sections = wasm.parse_sections(runtime)
    listed = served_code.BuildOnlyCode.parse(wasm.custom_body(_sections(runtime)[served_code.SECTION]))
    bodies, positions = _bodies(runtime)
    name_at = {position: name for name, position in positions.items()}
    always_left_out = listed.replaced(list(listed.modules))
    imported = wasm.imported_functions(sections)
    slots = wasm.element_slots(next(s for s in sections if s.id == wasm.ELEMENT).payload)
    taken = set()
    for i, body in enumerate(bodies):
        for slot in build_only_code.scan(body, range(min(slots), max(slots) + 1))[1]:
            if slots[slot] - imported in always_left_out:
                taken.add((name_at[i], name_at[slots[slot] - imported]))
    assert taken  # the scan finds the parser's lookaheads
    for taker, target in taken:
        assert taker.endswith("_rule") or taker == "_PyTokenizer_FromString", (taker, target)
        assert target.endswith("_rule") or target.startswith("_PyPegen_") or target == "buf_setreadl", (taker, target)


KEEPING = FILTER.read_text().replace("import proxywasm\n", "import proxywasm\n\nproxywasm.vm.keep_compiler()\n", 1)


@pytest.mark.parametrize("mode", ["wasm", "native"])
def test_a_filter_that_keeps_the_compiler_compiles_at_run_time(
    build_filter: Callable[[str], Path], tmp_path: Path, mode: str
) -> None:
    if mode == "wasm":
        module = build_filter(KEEPING)
        before, _ = _bodies(module.read_bytes())
        runtime, _ = _bodies((RUNTIME_DIR / "python.wasm").read_bytes())
        assert before == runtime  # no body replaced
        host = Host.load(module)
    else:
        source = tmp_path / "filter.py"
        source.write_text(KEEPING)
        host = Host.load(source, mode="native")
    for path in ("/eval", "/exec", "/compile", "/namedtuple", "/ast"):
        assert host.request("GET", path).status == 200, (path, host.logs)
    assert host.request("GET", "/eval").upstream_request.header("x-answer") == "2"  # type: ignore[union-attr]
