"""Shared fixtures: the AssemblyScript reference filters, built once per session."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
AS_DIR = ROOT / "tests" / "assemblyscript"
AS_OUT = ROOT / ".cache" / "as"


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
