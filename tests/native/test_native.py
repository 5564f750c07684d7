"""Native mode: a filter's Python runs in the test process against the same emulator as its module.
Debuggers and coverage see its code; the VM's import rules apply where they can; each VM keeps its
own copy of the SDK and of the filter."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys
import textwrap
from pathlib import Path
from types import FrameType
from typing import Any

import coverage
import pytest

from proxywasm_host import Host, LoadError

FILTER = """\
import proxywasm
from proxywasm import Action, HttpContext, log

hits = 0


@proxywasm.register
class Count(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        global hits
        hits += 1
        headers["x-hits"] = str(hits)
        if headers.get("x-deny"):
            self.send_response(403, "no\\n")
            return Action.PAUSE
        return Action.CONTINUE

    def on_response_headers(self, headers, end_of_stream):
        log.info(f"response {headers.get(':status')}")
        print("printed", headers.get(":status"))
"""


def _write(tmp_path: Path, source: str, name: str = "filter.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def test_a_filter_runs_natively(tmp_path: Path) -> None:
    host = Host.load(_write(tmp_path, FILTER))
    resp = host.request("GET", "/")
    assert resp.status == 200 and resp.upstream_request is not None
    assert resp.upstream_request.header("x-hits") == "1"
    assert host.request("GET", "/", headers=[("x-deny", "1")]).status == 403
    assert (2, "response 200") in host.logs and (2, "printed 200") in host.logs  # print goes to Envoy's log


def test_each_vm_keeps_its_own_state(tmp_path: Path) -> None:
    path = _write(tmp_path, FILTER)
    first, second = Host.load(path), Host.load(path)
    for _ in range(3):
        first.request()
    resp = second.request()
    assert resp.upstream_request is not None and resp.upstream_request.header("x-hits") == "1"
    workers = Host.load(path, workers=2)  # the main thread's VM and two workers'
    hits = [workers.request().upstream_request.header("x-hits") for _ in range(4)]  # type: ignore[union-attr]
    assert hits == ["1", "1", "2", "2"]  # round-robin over two workers, each counting alone
    import proxywasm._dispatch  # the test process's own copy of the SDK: no VM registered in it

    assert not proxywasm._dispatch.registry.plugins


def test_coverage_reports_the_filter_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, FILTER)
    cov = coverage.Coverage(data_file=None, include=[str(path)])
    cov.start()
    try:
        host = Host.load(path)
        host.request("GET", "/")
    finally:
        cov.stop()
    _, statements, _, missing, _ = cov.analysis2(str(path))
    source = path.read_text().splitlines()
    ran = set(statements) - set(missing)
    deny = source.index('            self.send_response(403, "no\\n")') + 1
    counted = source.index("        hits += 1") + 1
    printed = source.index('        print("printed", headers.get(":status"))') + 1
    assert {counted, printed} <= ran
    assert deny in missing  # the branch no request took


def test_a_callback_can_be_stepped_into(tmp_path: Path) -> None:
    path = _write(tmp_path, FILTER)
    host = Host.load(path)
    seen: list[tuple[str, str, int]] = []

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename == str(path):
            seen.append((frame.f_code.co_name, event, frame.f_lineno))
            return tracer
        return None

    sys.settrace(tracer)
    try:
        host.request("GET", "/")
    finally:
        sys.settrace(None)
    calls = [(name, line) for name, event, line in seen if event == "call"]
    lines = path.read_text().splitlines()
    assert ("on_request_headers", lines.index("    def on_request_headers(self, headers, end_of_stream):") + 1) in calls
    steps = {line for name, event, line in seen if name == "on_request_headers" and event == "line"}
    assert lines.index("        hits += 1") + 1 in steps


def test_late_stdlib_import_in_a_callback_is_refused(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        import proxywasm
        from proxywasm import HttpContext

        @proxywasm.register
        class Late(HttpContext):
            def on_request_headers(self, headers, end_of_stream):
                import xdrlib_not_loaded_yet_example  # noqa
        """,
    )
    # A module the VM never has is refused at load time; a stdlib one is refused late (see below).
    host = Host.load(path)
    assert host.request().status == 500  # the failure policy answers; the log says why
    assert any("No module named" in m for m in host.log_messages())


def test_late_import_of_an_unloaded_stdlib_module(tmp_path: Path) -> None:
    name = next(n for n in ("tabnanny", "pyclbr", "mailcap", "sndhdr") if n not in sys.modules)
    path = _write(
        tmp_path,
        f"""\
        import proxywasm
        from proxywasm import HttpContext

        @proxywasm.register
        class Late(HttpContext):
            def on_request_headers(self, headers, end_of_stream):
                import {name}
        """,
    )
    host = Host.load(path)
    assert host.request().status == 500
    assert any(f"Add `import {name}` at module level" in m for m in host.log_messages())


def test_late_import_of_a_stdlib_module_the_runtime_lacks_says_so(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        import proxywasm
        from proxywasm import HttpContext

        @proxywasm.register
        class Late(HttpContext):
            def on_request_headers(self, headers, end_of_stream):
                import sqlite3  # noqa: F401
        """,
    )
    for mode in ("native", "wasm"):  # the same advice: none helps, the runtime has no sqlite3
        host = Host.load(path, mode=mode)
        assert host.request().status == 500
        (line,) = [m for m in host.log_messages() if "No module named 'sqlite3'" in m]
        assert "the stdlib module 'sqlite3' is not part of the proxywasm runtime" in line, (mode, line)
        assert "at module level" not in line


def test_stdlib_module_missing_from_the_runtime_fails_the_load(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        import asyncio
        import proxywasm
        from proxywasm import HttpContext

        @proxywasm.register
        class F(HttpContext):
            pass
        """,
    )
    with pytest.raises(LoadError, match="'asyncio' is not part of the proxywasm runtime"):
        Host.load(path)


def test_a_guarded_import_of_a_module_the_runtime_lacks_takes_its_fallback(tmp_path: Path) -> None:
    """hmac's `import _hashlib` fails in the runtime and hmac falls back to hashlib: natively too,
    in a process that had not imported hmac yet (a fresh interpreter, so the test can fail)."""
    path = _write(
        tmp_path,
        """\
        import hashlib
        import hmac
        import proxywasm
        from proxywasm import HttpContext

        @proxywasm.register
        class F(HttpContext):
            def on_request_headers(self, headers, end_of_stream):
                headers["x-mac"] = hmac.new(b"k", b"m", hashlib.sha256).hexdigest()
        """,
    )
    script = (
        "import sys\n"
        "assert 'hmac' not in sys.modules\n"
        "from proxywasm_host import Host\n"
        f"response = Host.load({str(path)!r}).request('GET', '/')\n"
        "print(response.upstream_request.header('x-mac'))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == hmac.new(b"k", b"m", hashlib.sha256).hexdigest()


def test_import_errors_point_at_the_filter_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        import proxywasm
        CONFIG = {}
        value = CONFIG["missing"]
        """,
    )
    with pytest.raises(LoadError, match=rf"{path}:3: importing the filter failed: KeyError: 'missing'"):
        Host.load(path)


def test_a_filter_that_registers_nothing(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="registers no filter"):
        Host.load(_write(tmp_path, "import proxywasm\n"))


def test_print_of_text_that_is_not_utf8_is_logged_alike(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        import proxywasm
        from proxywasm import HttpContext


        @proxywasm.register
        class Show(HttpContext):
            def on_request_headers(self, headers, end_of_stream):
                print("printed", headers["x-raw"])  # bytes that are not UTF-8 read as surrogates
        """,
    )
    logs = []
    for mode in ("native", "wasm"):
        host = Host.load(path, mode=mode)
        host.request("GET", "/", headers=[("x-raw", b"caf\xe9 \xff")])
        logs.append([(int(level), text) for level, text in host.logs if text.startswith("printed")])
    assert logs[0] == logs[1] == [(2, "printed caf\\xe9 \\xff")]


def test_the_same_source_runs_as_wasm(tmp_path: Path) -> None:
    path = _write(tmp_path, FILTER)
    native, wasm = Host.load(path), Host.load(path, mode="wasm")
    for host in (native, wasm):
        resp = host.request("GET", "/")
        assert resp.status == 200 and resp.upstream_request is not None
        assert resp.upstream_request.header("x-hits") == "1"
