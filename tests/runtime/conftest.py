"""Fixtures to build small filters from source text, cached by content so each builds once."""

from __future__ import annotations

import hashlib
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm_build.build import RUNTIME_DIR, build

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "test-builds"


@pytest.fixture(scope="session")
def build_filter() -> Callable[[str], Path]:
    inputs = [RUNTIME_DIR / "python.wasm", *sorted((ROOT / "sdk" / "proxywasm").glob("*.py"))]
    inputs_key = hashlib.sha256(b"".join(p.read_bytes() for p in inputs)).hexdigest()[:16]

    def make(source: str) -> Path:
        text = textwrap.dedent(source)
        key = hashlib.sha256(f"{inputs_key}{text}".encode()).hexdigest()[:16]
        out = CACHE / f"{key}.wasm"
        if not out.exists():
            src = CACHE / key / "filter.py"
            src.parent.mkdir(parents=True, exist_ok=True)
            src.write_text(text)
            out.write_bytes(build(src).module)
        return out

    return make
