"""`proxywasm build` on bad input: each problem gets a message that says what and where."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from proxywasm_build.build import build
from proxywasm_build.bundle import BuildError
from proxywasm_build.cli import main
from proxywasm_host import Host, LoadError

GOOD = """
import proxywasm

@proxywasm.register
class Filter(proxywasm.HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        headers["x-built"] = "yes"
"""


def write(tmp_path: Path, source: str, name: str = "filter.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def build_error(path: Path) -> str:
    with pytest.raises(BuildError) as info:
        build(path)
    return str(info.value)


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "import proxywasm\n\ndef broken(:\n    pass\n")
    message = build_error(path)
    assert f"{path}:3:" in message
    assert "SyntaxError" in message


def test_syntax_error_in_a_package_module(tmp_path: Path) -> None:
    package = tmp_path / "myfilter"
    package.mkdir()
    (package / "__init__.py").write_text("from . import helpers\n")
    (package / "helpers.py").write_text("x = (1,\n")
    message = build_error(package)
    assert "helpers.py:1:" in message
    assert "SyntaxError" in message


def test_filter_that_registers_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, "import proxywasm\n\nclass Forgotten(proxywasm.HttpContext):\n    pass\n")
    message = build_error(path)
    assert "registers no filter" in message
    assert "@proxywasm.register" in message
    assert message.count("filter.py") == 1 and "Traceback" not in message  # the SDK's frames say nothing


def test_import_error_at_build_time_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "import proxywasm\nimport json\nimport no_such_module_anywhere\n")
    message = build_error(path)
    assert "filter.py:3" in message
    assert "No module named 'no_such_module_anywhere'" in message
    # The traceback starts at the filter's line: the bootstrap and importlib frames that led there are gone.
    trace = message.split("Traceback (most recent call last):\n", 1)[1].splitlines()
    assert trace[:2] == ['  File "filter.py", line 3, in <module>', "    import no_such_module_anywhere"], trace
    assert "/bundle/proxywasm/" not in message and "<frozen" not in message


def test_exception_while_importing_the_filter(tmp_path: Path) -> None:
    path = write(tmp_path, "import proxywasm\n\nCONFIG = {}\nLIMIT = CONFIG['limit']\n")
    message = build_error(path)
    assert "filter.py:4" in message
    assert "KeyError: 'limit'" in message


def test_host_call_at_build_time_says_where_to_move_it(tmp_path: Path) -> None:
    # Only logging works while the filter is built; natively the same (the import answers as the build).
    source = "import proxywasm\nfrom proxywasm import properties\n\nNAME = properties.plugin_name()\n"
    path = write(tmp_path, source)
    message = build_error(path)
    assert "filter.py:4" in message
    hint = "proxy_get_property failed: UNIMPLEMENTED: the filter called Envoy while it was built"
    assert hint in message
    assert "in on_vm_start or on_configure" in message
    with pytest.raises(LoadError) as native:
        Host.load(path, mode="native")
    assert f"{path}:4: importing the filter failed: proxywasm.errors.HostCallError: {hint}" in str(native.value)


def test_cli_shows_what_module_level_code_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, 'from proxywasm import log\nprint("printed")\nlog.warn("logged")\n' + GOOD)
    assert main(["build", str(path), "-o", str(tmp_path / "out.wasm")]) == 0
    err = capsys.readouterr().err
    assert "wrote this while it was built" in err and "will not be in Envoy's log" in err
    assert sorted(err.splitlines()[-2:]) == ["  [warn] logged", "  printed"]  # stdout comes after the log lines
    assert main(["build", str(write(tmp_path, GOOD, "quiet.py")), "-o", str(tmp_path / "q.wasm")]) == 0
    assert capsys.readouterr().err == ""


def _site_with(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    site = tmp_path / "site"
    for name, content in files.items():
        path = site / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)
    return site


SO = "cpython-311-x86_64-linux-gnu.so"


def test_a_c_extension_a_dependency_needs_fails_the_build_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _site_with(
        tmp_path, {"fastthing/__init__.py": "from ._speedups import go\n", f"fastthing/_speedups.{SO}": b"\x7fELF"}
    )
    monkeypatch.syspath_prepend(str(site))
    path = write(tmp_path, "import proxywasm\nimport fastthing\n" + GOOD)
    message = build_error(path)
    assert f"No module named 'fastthing._speedups': it is a C extension (_speedups.{SO}), left out" in message
    assert "only pure-Python code runs inside Envoy" in message
    with pytest.raises(LoadError, match="No module named 'fastthing._speedups': it is a C extension"):
        Host.load(path, mode="native")  # natively the same


def test_a_c_extension_with_a_pure_fallback_is_left_out_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # PyYAML's shape: its C speedups are optional; and PyJWT's: an optional dependency that is a C
    # extension, imported inside try/except ImportError.
    fallback = "try:\n    from ._speedups import go\nexcept ImportError:\n    def go():\n        return 'pure'\n"
    optional = "try:\n    import cextonly\nexcept ImportError:\n    cextonly = None\n"
    # And mypyc's: a compiled module with its pure-Python twin beside it (natively the twin too).
    site = _site_with(tmp_path, {
        "withfallback/__init__.py": fallback, f"withfallback/_speedups.{SO}": b"\x7fELF",
        "usesoptional/__init__.py": optional, f"cextonly.{SO}": b"\x7fELF",
        "twinned/__init__.py": "from .fast import go\n", "twinned/fast.py": "def go():\n    return 'twin'\n",
        f"twinned/fast.{SO}": b"\x7fELF",
    })  # fmt: skip
    monkeypatch.syspath_prepend(str(site))
    source = "import proxywasm\nimport usesoptional\nimport withfallback\nimport twinned\nWHICH = withfallback.go()\n"
    source += "TWIN = twinned.go()\n" + GOOD
    path = write(tmp_path, source)
    result = build(path)
    assert result.bundle.left_out == {
        "withfallback._speedups": f"_speedups.{SO}", "cextonly": f"cextonly.{SO}", "twinned.fast": f"fast.{SO}"
    }  # fmt: skip
    assert main(["build", str(path), "-o", str(tmp_path / "out.wasm")]) == 0
    err = capsys.readouterr().err
    assert f"note: left out withfallback._speedups (_speedups.{SO}), a C extension" in err
    assert f"note: left out cextonly (cextonly.{SO}), a C extension" in err
    for mode in ("wasm", "native"):
        host = Host.load(path, mode=mode)
        assert host.request("GET", "/").upstream_request is not None


def test_pure_python_dependency_from_the_environment_is_bundled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    (site / "tinydep").mkdir(parents=True)
    (site / "tinydep" / "__init__.py").write_text("GREETING = 'hello from tinydep'\n")
    monkeypatch.syspath_prepend(str(site))
    path = write(tmp_path, "import proxywasm\nimport tinydep\n" + GOOD)
    result = build(path)
    assert result.bundle.dependencies == ["tinydep"]
    assert b"hello from tinydep" in result.module


def test_missing_source(tmp_path: Path) -> None:
    message = build_error(tmp_path / "nope.py")
    assert "nope.py" in message and "no such file" in message


def test_same_inputs_give_the_same_bytes(tmp_path: Path) -> None:
    first = build(write(tmp_path, GOOD)).module
    other = tmp_path / "elsewhere"
    other.mkdir()
    second = build(write(other, GOOD)).module
    assert first == second


def test_cli_reports_errors_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "def f(:\n")
    assert main(["build", str(path), "-o", str(tmp_path / "out.wasm")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "Traceback" not in err
    assert not (tmp_path / "out.wasm").exists()


def test_errors_name_files_as_the_user_did(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A relative path stays relative in every message (a misnamed callback's did already).
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "def f(:\n", "syntax.py")
    misnamed = (
        "import proxywasm\n\n@proxywasm.register\nclass A(proxywasm.HttpContext):\n"
        "    def on_request_header(self, headers, end_of_stream):\n        pass\n"
    )
    write(tmp_path, misnamed, "misnamed.py")
    assert main(["build", "syntax.py", "-o", "out.wasm"]) == 1
    assert capsys.readouterr().err.startswith("error: syntax.py:1:")
    assert main(["build", "misnamed.py", "-o", "out.wasm"]) == 1
    assert capsys.readouterr().err.startswith("error: misnamed.py:5:")


def test_cli_writes_the_module(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD)
    out = tmp_path / "out.wasm"
    assert main(["build", str(path), "-o", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\0asm"
    assert "built" in capsys.readouterr().out


def _wheel(directory: Path, name: str, files: dict[str, bytes]) -> Path:
    """A minimal wheel made here, so requirements can be installed without a network."""
    import base64
    import hashlib
    import zipfile

    dist = f"{name}-1.0.dist-info"
    meta = {
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    entries = {**files, **meta}
    record = []
    for path, data in entries.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    wheel = directory / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in entries.items():
            archive.writestr(path, data)
        archive.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
    return wheel


def test_requirements_next_to_the_filter_are_bundled(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path, "greetings", {"greetings/__init__.py": b"WORD = 'bundled from requirements'\n"})
    (tmp_path / "requirements.txt").write_text(f"{wheel}\n")
    path = write(tmp_path, "import proxywasm\nimport greetings\n" + GOOD)
    result = build(path)
    assert b"bundled from requirements" in result.module


def test_c_extension_in_requirements_is_left_out(tmp_path: Path) -> None:
    wheel = _wheel(
        tmp_path,
        "speedy",
        {"speedy/__init__.py": b"from . import _core\n", f"speedy/_core.{SO}".encode().decode(): b"\x7fELF"},
    )
    (tmp_path / "requirements.txt").write_text(f"{wheel}\n")
    message = build_error(write(tmp_path, "import proxywasm\nimport speedy\n" + GOOD))
    assert f"No module named 'speedy._core': it is a C extension (_core.{SO}), left out" in message
