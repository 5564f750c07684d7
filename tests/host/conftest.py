"""Shared helpers for host tests: the probe guest and a driver for it."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import guest
from host_support import AS_DIR, Probe  # noqa: F401 - AS_DIR re-exported for fixtures

from proxywasm_host import Host


@pytest.fixture
def load_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Probe]]:
    monkeypatch.setenv("PROXYWASM_CACHE_DIR", str(tmp_path / "cache"))

    def load(abi: str = "0_2_1", *, extra: str = "", imports: str = "", **options: Any) -> Probe:
        code = guest.probe_wasm(abi, extra=extra, imports=imports)
        return Probe(Host.load(code, **options))

    yield load


@pytest.fixture
def probe(load_probe: Callable[..., Probe]) -> Probe:
    return load_probe()
