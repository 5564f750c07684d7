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


def test_a_single_file_filter_bundles_the_modules_beside_it(tmp_path: Path) -> None:
    """filter.py importing helpers.py (and a package) from its directory: the build bundles them
    (not the test beside them), the module runs them, and editing one changes the build key."""
    from proxywasm_host import Host

    (tmp_path / "filter.py").write_text(
        "import proxywasm\n"
        "from helpers import greeting\n"
        "from rules.table import LIMIT\n\n"
        "@proxywasm.register\n"
        "class F(proxywasm.HttpContext):\n"
        "    def on_request_headers(self, headers, end_of_stream):\n"
        "        headers['x-greeting'] = greeting()\n"
        "        headers['x-limit'] = str(LIMIT)\n"
    )
    (tmp_path / "helpers.py").write_text("def greeting():\n    return 'hi'\n")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "__init__.py").write_text("")
    (tmp_path / "rules" / "table.py").write_text("LIMIT = 7\n")
    (tmp_path / "test_filter.py").write_text("import pytest\n")
    key = build_key(tmp_path / "filter.py")
    for mode in ("wasm", "native"):
        upstream = Host.load(tmp_path / "filter.py", mode=mode).request("GET", "/").upstream_request  # type: ignore[arg-type]
        assert upstream is not None
        assert (upstream.header("x-greeting"), upstream.header("x-limit")) == ("hi", "7"), mode
    (tmp_path / "test_filter.py").write_text("import pytest  # changed\n")
    assert build_key(tmp_path / "filter.py") == key
    (tmp_path / "rules" / "table.py").write_text("LIMIT = 8\n")
    assert build_key(tmp_path / "filter.py") != key
