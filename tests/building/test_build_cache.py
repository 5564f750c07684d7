"""What a build costs when nothing needs doing: a requirements.txt of comments only (as `proxywasm
new` writes it) runs no pip, and a build that failed is not run again for the same inputs in one
process (each wasm-mode test of a broken filter would otherwise rebuild it to fail the same way)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from proxywasm_build import bundle, cache
from proxywasm_build.build import build
from proxywasm_build.bundle import BuildError
from proxywasm_build.cache import build_cached

FILTER = """
import proxywasm
from proxywasm import HttpContext


@proxywasm.register
class Hello(HttpContext):
    pass
"""


def _pip_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []

    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        return subprocess.CompletedProcess(command, 1, "", "pip: no network here")

    monkeypatch.setattr(bundle.subprocess, "run", run)
    return calls


def test_comments_only_requirements_run_no_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "filter.py").write_text(FILTER)
    (tmp_path / "requirements.txt").write_text("# pure-Python dependencies, one per line\n\n   # none yet\n")
    calls = _pip_calls(monkeypatch)
    build(tmp_path / "filter.py")
    assert calls == []
    (tmp_path / "requirements.txt").write_text("# a dependency\nsix==1.16.0  # pinned\n")
    with pytest.raises(BuildError, match="installing .*requirements.txt failed:\npip: no network here"):
        build(tmp_path / "filter.py")
    assert len(calls) == 1 and calls[0][-1] == str(tmp_path / "requirements.txt")


def test_a_failed_build_is_not_run_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXYWASM_CACHE_DIR", str(tmp_path / "cache"))
    source = tmp_path / "broken.py"
    source.write_text(FILTER.replace("pass", "def on_request_header(self, headers, end_of_stream):\n        pass"))
    with pytest.raises(BuildError) as first:
        build_cached(source)
    assert "on_request_header" in str(first.value)

    def no_building(*args: object) -> None:
        raise AssertionError("the same inputs failed already: no second build")

    with monkeypatch.context() as patch:
        patch.setattr(cache, "build", no_building)
        with pytest.raises(BuildError) as again:
            build_cached(source)
    assert str(again.value) == str(first.value)
    source.write_text(FILTER)  # fixed: new inputs, a new build
    assert build_cached(source).exists()
