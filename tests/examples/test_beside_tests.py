"""Every example has its own test beside it (examples/<name>/test_filter.py, collected through
``testpaths``) that runs natively and as the built module (the ``proxywasm_mode`` fixture)."""

from __future__ import annotations

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_every_example_has_a_test_run_in_both_modes() -> None:
    examples = sorted(p for p in EXAMPLES.iterdir() if (p / "__init__.py").exists())
    assert len(examples) >= 19
    missing = [p.name for p in examples if not (p / "test_filter.py").exists()]
    assert missing == [], f"examples without test_filter.py: {missing}"
    one_mode = [p.name for p in examples if "proxywasm_mode" not in (p / "test_filter.py").read_text()]
    assert one_mode == [], f"test_filter.py not using the proxywasm_mode fixture: {one_mode}"
