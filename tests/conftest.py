"""Shared fixtures: the AssemblyScript reference filters, Python filters built from source text,
and the examples, each built once per content and cached under .cache/."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from proxywasm_build import compiled
from proxywasm_build.build import RUNTIME_DIR, build
from proxywasm_build.bundle import BuildError
from proxywasm_build.cache import build_cached
from proxywasm_host import Host

ROOT = Path(__file__).resolve().parents[1]
AS_DIR = ROOT / "tests" / "assemblyscript"
AS_OUT = ROOT / ".cache" / "as"
BUILDS = ROOT / ".cache" / "test-builds"
EXAMPLES = ROOT / "examples"
PROXYWASM = Path(sys.executable).parent / "proxywasm"


def _toolchain_key() -> hashlib._Hash:
    """Everything a build's output depends on besides the filter: runtime, SDK and toolchain."""
    inputs = [
        RUNTIME_DIR / "python.wasm",
        RUNTIME_DIR / "builtin-modules.txt",
        *sorted((RUNTIME_DIR / "stdlib").rglob("*.py")),  # stdlib patches and stand-ins leave python.wasm as it was
        *sorted((ROOT / "sdk" / "proxywasm").glob("*.py")),
        *sorted((ROOT / "sdk" / "proxywasm_build").glob("*.py")),
    ]
    return hashlib.sha256(b"".join(p.read_bytes() for p in inputs))


@pytest.fixture(scope="session")
def build_filter() -> Callable[[str], Path]:
    """``build_filter(source)``: a Python filter from source text, built once per content."""
    base = _toolchain_key()

    def make(source: str) -> Path:
        text = textwrap.dedent(source)
        digest = base.copy()
        digest.update(text.encode())
        key = digest.hexdigest()[:16]
        out = BUILDS / f"{key}.wasm"
        if not out.exists():
            src = BUILDS / key / "filter.py"
            src.parent.mkdir(parents=True, exist_ok=True)
            src.write_text(text)
            out.write_bytes(build(src).module)
        return out

    return make


@pytest.fixture(scope="session")
def load_filter(build_filter: Callable[[str], Path]) -> Callable[..., Host]:
    """``load_filter(source, mode, **Host.load options)``: a Python filter from source text in the
    local host, natively (its source, the file build_filter wrote) or as the built module."""

    def load(source: str, mode: str, **options: Any) -> Host:
        wasm = build_filter(source)
        return Host.load(wasm.parent / wasm.stem / "filter.py" if mode == "native" else wasm, mode=mode, **options)

    return load


@pytest.fixture(scope="session")
def example_wasm() -> Callable[[str], Path]:
    """``example_wasm(name)``: examples/<name> built once per content, in the build cache that
    ``Host.load(..., mode="wasm")`` uses too (so the examples' own tests share the builds), with the
    stats_config ``proxywasm build`` writes beside it. Its own tests (test_filter.py) are not part of
    the module nor of its key."""
    built: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in built or not compiled.touch(built[name]):  # a use: eviction goes least recently used first
            try:
                built[name] = build_cached(EXAMPLES / name)
            except BuildError as err:
                pytest.fail(f"proxywasm build examples/{name} failed:\n{err}")
        return built[name]

    return make


@pytest.fixture(scope="session")
def as_modules() -> dict[str, Path]:
    """Build (or reuse) every AS filter and return {name: path to .wasm}.

    Fails (never skips) when node/npm are missing or the build breaks: these tests are the
    reference for real Envoy behaviour and must not disappear silently.
    """
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found on PATH: needed to build tests/assemblyscript", pytrace=False)
    result = subprocess.run(
        ["bash", str(AS_DIR / "build.sh")], capture_output=True, text=True, timeout=600, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"tests/assemblyscript/build.sh failed:\n{result.stdout}\n{result.stderr}", pytrace=False)
    names = sorted(p.stem for p in (AS_DIR / "assembly").glob("*.ts") if p.stem != "common")
    modules = {name: AS_OUT / f"{name}.wasm" for name in names}
    missing = [str(p) for p in modules.values() if not p.exists()]
    if missing:
        pytest.fail(f"build.sh did not produce {missing}", pytrace=False)
    return modules
