"""Fixtures for the envoy-configs/ tests: cached Python filter builds and config rendering."""

from __future__ import annotations

import hashlib
import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm_build.build import RUNTIME_DIR, build

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "envoy-configs"
CACHE = ROOT / ".cache" / "test-builds"


@pytest.fixture(scope="session")
def build_filter() -> Callable[[str], Path]:
    """Build a filter from source text once (cached by the runtime, SDK and source hashes)."""
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


@pytest.fixture
def render(tmp_path: Path) -> Callable[..., Path]:
    """Fill a config's @PLACEHOLDERS@ (ports default to 0: Envoy picks, we read them back)."""

    def fill(name: str, **values: object) -> Path:
        text = (CONFIGS / name).read_text()
        for key, value in {"LISTEN_ADDRESS": "127.0.0.1", "LISTEN_PORT": 0, "ADMIN_PORT": 0, **values}.items():
            text = text.replace(f"@{key}@", str(value))
        config_lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
        left = re.findall(r"@[A-Z0-9_]+@", "\n".join(config_lines))
        assert not left, f"unfilled placeholders in {name}: {left}"
        out = tmp_path / name
        out.write_text(text)
        return out

    return fill
