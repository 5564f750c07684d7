"""The wheel a filter author pip-installs carries every module of the SDK, the toolchain and the
test host (a subpackage missing from pyproject's package list once made `import proxywasm_host` fail
after a pip install), the prebuilt runtime, and the entry points (the `proxywasm` command, the pytest
plugin)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {"proxywasm": ROOT / "sdk" / "proxywasm", "proxywasm_build": ROOT / "sdk" / "proxywasm_build",
           "proxywasm_host": ROOT / "host" / "proxywasm_host"}  # fmt: skip


def _clean_tree(destination: Path) -> Path:
    """The repository's tracked files and the runtime dev.sh put in place, without a build/ left by
    an earlier `pip wheel` (setuptools would pack what it finds there)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    runtime = "sdk/proxywasm_build/_runtime"
    shutil.copytree(ROOT / runtime, destination / runtime, dirs_exist_ok=True)
    return destination


def test_the_wheel_has_every_module_the_runtime_and_the_entry_points(tmp_path: Path) -> None:
    tree = _clean_tree(tmp_path / "tree")
    command = [sys.executable, "-m", "pip", "wheel", str(tree), "--no-deps", "-q"]
    built = subprocess.run([*command, "-w", str(tmp_path)], capture_output=True, text=True, timeout=600, check=False)
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("proxywasm_python-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package, source in SOURCES.items():
        for path in source.rglob("*.py"):
            relative = path.relative_to(source)
            if "_runtime" in relative.parts or "__pycache__" in relative.parts:
                continue
            assert f"{package}/{relative.as_posix()}" in names, f"{package}/{relative} is not in the wheel"
    assert "proxywasm_build/_runtime/python.wasm" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "proxywasm = proxywasm_build.cli:main" in text
    assert "proxywasm_host = proxywasm_host.pytest_plugin" in text
