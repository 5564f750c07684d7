"""Fixtures for the envoy-configs/ tests: cached Python filter builds and config rendering."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "envoy-configs"
CACHE = ROOT / ".cache" / "test-builds"


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
