"""A filter package's own tests (test_*.py, *_test.py, conftest.py beside the filter) are not
bundled into the module, and editing them does not change the build key."""

from __future__ import annotations

from pathlib import Path

from proxywasm_build.bundle import is_test_file
from proxywasm_build.cache import build_key


def test_test_files_are_recognised() -> None:
    assert is_test_file(Path("pkg/test_filter.py"))
    assert is_test_file(Path("pkg/filter_test.py"))
    assert is_test_file(Path("pkg/conftest.py"))
    assert not is_test_file(Path("pkg/__init__.py"))
    assert not is_test_file(Path("pkg/testing.py"))


def test_editing_a_package_s_test_does_not_change_its_build_key(tmp_path: Path) -> None:
    package = tmp_path / "flt"
    package.mkdir()
    (package / "__init__.py").write_text("import proxywasm\n")
    (package / "test_filter.py").write_text("import pytest\n")
    before = build_key(package)
    (package / "test_filter.py").write_text("import pytest  # changed\n")
    assert build_key(package) == before
    (package / "__init__.py").write_text("import proxywasm  # changed\n")
    assert build_key(package) != before
