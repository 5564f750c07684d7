"""The build compiles the runtime once per installation: the snapshot keeps Cranelift's artefact
in the cache (proxywasm_build/compiled.py), so later builds skip the seconds that compile costs
and give the same module; a broken artefact is compiled again, not fatal; and
``PROXYWASM_COMPILED_CACHE=0`` keeps the build off the cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime

from proxywasm_build.build import build

FILTER = """
import proxywasm
from proxywasm import HttpContext


@proxywasm.register
class Hello(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        headers["x-hello"] = "1"
"""


def test_later_builds_use_the_compiled_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXYWASM_CACHE_DIR", str(tmp_path / "cache"))
    source = tmp_path / "hello.py"
    source.write_text(FILTER)
    first = build(source).module
    (artefact,) = (tmp_path / "cache" / "snapshot").glob("*.cwasm")
    assert "wasmtime" in artefact.name

    def no_compiling(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached runtime should have been used, not a fresh compile")

    with monkeypatch.context() as patch:
        patch.setattr(wasmtime.Module, "__init__", no_compiling)
        assert build(source).module == first

    broken = tmp_path / "broken"  # replaced as a new file, as the cache itself writes
    broken.write_bytes(b"corrupt")
    broken.replace(artefact)
    assert build(source).module == first
    assert artefact.read_bytes() != b"corrupt"

    monkeypatch.setenv("PROXYWASM_CACHE_DIR", str(tmp_path / "unused"))
    monkeypatch.setenv("PROXYWASM_COMPILED_CACHE", "0")  # docs/deploying.md: release builds on shared caches
    assert build(source).module == first
    assert not (tmp_path / "unused" / "snapshot").exists()
