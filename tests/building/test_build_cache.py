"""What a build costs when nothing needs doing: a requirements.txt of comments only (as `proxywasm
new` writes it) runs no pip; one of exact pins is installed once and copied from the cache after
that (no pip, no index); and a build that failed is not run again for the same inputs in one
process (each wasm-mode test of a broken filter would otherwise rebuild it to fail the same way)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from proxywasm_build import bundle, cache
from proxywasm_build.build import build
from proxywasm_build.bundle import BuildError, RequirementsError
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

    monkeypatch.setattr(bundle, "subprocess", SimpleNamespace(run=run))  # bundle's pip runs only
    return calls


def _filter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, requirements: str, source: str = FILTER) -> None:
    """tmp_path/filter.py with its requirements.txt, built with a cache of its own."""
    monkeypatch.setenv("PROXYWASM_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "filter.py").write_text(source)
    (tmp_path / "requirements.txt").write_text(requirements)


def test_comments_only_requirements_run_no_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _filter(tmp_path, monkeypatch, "# pure-Python dependencies, one per line\n\n   # none yet\n")
    calls = _pip_calls(monkeypatch)
    build(tmp_path / "filter.py")
    assert calls == []
    for content in ("# a dependency\nsix==1.16.0  # pinned\n", "-r more.txt\n", "--index-url https://x/\n"):
        (tmp_path / "requirements.txt").write_text(content)
        with pytest.raises(RequirementsError, match="installing .*requirements.txt failed:\npip: no network here"):
            build(tmp_path / "filter.py")
        assert calls.pop()[-1] == str(tmp_path / "requirements.txt")
    (tmp_path / "requirements.txt").write_text("# only a comment\n", encoding="utf-16")  # pip reads this too
    with pytest.raises(RequirementsError):
        build(tmp_path / "filter.py")
    assert calls


def test_a_failed_requirements_install_is_tried_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _filter(tmp_path, monkeypatch, "six==1.16.0\n")
    calls = _pip_calls(monkeypatch)
    for _ in range(2):  # the index may answer next time
        with pytest.raises(RequirementsError):
            build_cached(tmp_path / "filter.py")
    assert len(calls) == 2


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


def test_a_read_only_cache_still_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXYWASM_CACHE_DIR", str(tmp_path / "cache"))
    source = tmp_path / "hello.py"
    source.write_text(FILTER)
    out = build_cached(source)

    def no_building(*args: object) -> None:
        raise AssertionError("a cached module whose times cannot be set is still a hit")

    def read_only(*args: object) -> None:
        raise PermissionError("read-only file system")

    monkeypatch.setattr(cache.compiled.os, "utime", read_only)  # times that cannot be set
    monkeypatch.setattr(cache.compiled, "IN_USE_S", 0)  # so touch tries to set them
    monkeypatch.setattr(cache, "build", no_building)
    assert build_cached(source) == out


def _installing_pip(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """A pip that installs ``tinydep`` (one module) into --target."""
    calls: list[list[str]] = []

    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        target = Path(command[command.index("--target") + 1])
        (target / "tinydep.py").write_text("VERSION = '1.0'\n")
        (target / "tinydep-1.0.dist-info").mkdir()
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(bundle, "subprocess", SimpleNamespace(run=run))
    return calls


USES_DEP = FILTER.replace("import proxywasm\n", "import proxywasm\nimport tinydep\n", 1)


def test_pinned_requirements_are_installed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _filter(tmp_path, monkeypatch, "# pinned\nTinyDep == 1.0\n", USES_DEP)
    calls = _installing_pip(monkeypatch)
    first = build(tmp_path / "filter.py").module
    (tmp_path / "requirements.txt").write_text("tinydep==1.0  # the same pin, written otherwise\n")
    assert build(tmp_path / "filter.py").module == first  # from the cache: the same bundle
    assert len(calls) == 1
    (folder,) = (tmp_path / "cache" / "requirements").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == [".proxywasm-installed", "tinydep.py"]
    (tmp_path / "requirements.txt").write_text("tinydep==1.1\n")  # another pin: another install
    build(tmp_path / "filter.py")
    assert len(calls) == 2


@pytest.mark.parametrize(
    "line", ["tinydep>=1.0", "tinydep", "-r more.txt", "./local/tinydep", "tinydep==1.0; os_name=='nt'"]
)
def test_other_requirements_run_pip_each_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str) -> None:
    _filter(tmp_path, monkeypatch, line + "\n", USES_DEP)
    calls = _installing_pip(monkeypatch)
    for _ in range(2):
        build(tmp_path / "filter.py")
    assert len(calls) == 2
    assert not list((tmp_path / "cache" / "requirements").glob("*"))


def test_pinned_requirements_without_a_usable_cache_still_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _filter(tmp_path, monkeypatch, "tinydep==1.0\n", USES_DEP)
    calls = _installing_pip(monkeypatch)
    monkeypatch.setenv("PROXYWASM_COMPILED_CACHE", "0")  # release builds: pip each time, nothing cached
    build(tmp_path / "filter.py")
    build(tmp_path / "filter.py")
    assert len(calls) == 2 and not list((tmp_path / "cache" / "requirements").glob("*"))
    monkeypatch.delenv("PROXYWASM_COMPILED_CACHE")
    (tmp_path / "cache").mkdir(exist_ok=True)
    (tmp_path / "cache" / "requirements").write_text("not a folder")  # a cache nothing can be put in
    build(tmp_path / "filter.py")
    assert len(calls) == 3


def test_a_failed_install_leaves_nothing_and_a_partial_folder_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _filter(tmp_path, monkeypatch, "tinydep==1.0\n", USES_DEP)
    failing = _pip_calls(monkeypatch)
    with pytest.raises(RequirementsError):
        build(tmp_path / "filter.py")
    assert failing and not list((tmp_path / "cache" / "requirements").glob("*"))  # no .tmp- folder left
    calls = _installing_pip(monkeypatch)
    first = build(tmp_path / "filter.py").module
    (folder,) = (tmp_path / "cache" / "requirements").iterdir()
    (folder / ".proxywasm-installed").unlink()  # as if its install or removal had been cut short
    (folder / "tinydep.py").write_text("broken = (\n")
    assert build(tmp_path / "filter.py").module == first  # installed again, not copied from the remains
    assert len(calls) == 2 and (folder / ".proxywasm-installed").is_file()
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]
