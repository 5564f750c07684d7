"""Fixtures for the differential suite: filters built from source text, and driver pairs."""

from __future__ import annotations

import hashlib
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from differential import EnvoyDriver, HostDriver, Plugin

from proxywasm_build.build import RUNTIME_DIR, build

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "test-builds"


@pytest.fixture(scope="session")
def build_filter() -> Callable[[str], Path]:
    """Build a Python filter from source text, cached by content (as tests/runtime does)."""
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


@contextmanager
def drivers(plugin: Plugin, **load_options: Any) -> Iterator[tuple[EnvoyDriver, HostDriver]]:
    """The plugin in a real Envoy and in the host (``Host.load`` options), one Envoy per plugin."""
    host = HostDriver(plugin, **load_options)
    envoy = EnvoyDriver(plugin)
    try:
        yield envoy, host
    finally:
        envoy.close()


EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session")
def example_wasm() -> Callable[[str], Path]:
    """examples/<name> built as ``proxywasm build`` does, cached by the content of its sources."""
    inputs = [RUNTIME_DIR / "python.wasm", *sorted((ROOT / "sdk" / "proxywasm").glob("*.py"))]
    base = hashlib.sha256(b"".join(p.read_bytes() for p in inputs))

    def make(name: str) -> Path:
        source = EXAMPLES / name
        if not (source / "__init__.py").exists():
            pytest.skip(f"examples/{name} does not exist (yet)")
        digest = base.copy()
        for path in sorted(source.rglob("*.py")):
            digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes())
        out = CACHE / f"example-{name}-{digest.hexdigest()[:16]}.wasm"
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(build(source).module)
        return out

    return make
