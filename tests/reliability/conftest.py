"""The reliability suite: what a filter does must never hang a worker, crash Envoy or leak, in real
Envoy under load. It runs with the rest of the tests; `./dev.sh soak` runs its long version."""

from __future__ import annotations

import json

import pytest
from reliability_support import FIGURES, RECORDED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RECORDED:
        terminalreporter.section(f"reliability figures (kept in {FIGURES.relative_to(FIGURES.parents[2])})")
        figures = json.loads(FIGURES.read_text())
        for section in RECORDED:
            terminalreporter.write_line(f"{section}: {json.dumps(figures[section], sort_keys=True)}")
