"""Collect a filter, the SDK and the filter's pure-Python dependencies into one directory (the
bundle) that the runtime imports at build time."""

from __future__ import annotations

import ast
import hashlib
import importlib.machinery
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import proxywasm

from . import bytecode, compiled

MANIFEST = "proxywasm-bundle.txt"
RUNTIME_PYTHON = (3, 11)  # the CPython inside the runtime: its bytecode format
_EXTENSION_SUFFIXES = (*importlib.machinery.EXTENSION_SUFFIXES, ".so", ".pyd", ".dylib")
_SKIP_DIRS = {"__pycache__", ".git", ".venv", "node_modules", ".mypy_cache", ".pytest_cache", ".ruff_cache"}


class BuildError(Exception):
    """A problem with the filter or its dependencies, phrased for the filter's author."""


class RequirementsError(BuildError):
    """pip could not install the requirements (the index may be unreachable: worth another try)."""


@dataclass
class Bundle:
    root: Path
    entry: str
    entry_file: str
    dependencies: list[str] = field(default_factory=list)
    #: C extensions of dependencies left out (module name -> file): Envoy runs only pure Python. A
    #: dependency that falls back to pure Python without them works; an import of one that does
    #: not is explained at build time (``_bootstrap.NotBundled``).
    left_out: dict[str, str] = field(default_factory=dict)


#: A filter package's tests stay out of the module (they import pytest and never run in Envoy).
TEST_FILES = ("test_*.py", "*_test.py", "conftest.py")


def _copy_tree(src: Path, dst: Path, *, skip_tests: bool = False) -> None:
    skip = (*_SKIP_DIRS, "*.pyc", *(TEST_FILES if skip_tests else ()))
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*skip), dirs_exist_ok=True)


def is_test_file(path: Path) -> bool:
    """Whether ``path`` is one of a filter package's test files (:data:`TEST_FILES`)."""
    return any(path.match(pattern) for pattern in TEST_FILES)


def _python_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if not _SKIP_DIRS.intersection(p.relative_to(root).parts))


def _sibling(source: Path, name: str) -> Path | None:
    """The module ``name`` beside a single-file filter (``name.py`` or a package ``name/``), which
    the filter imports as its own; None for a package filter or when there is none."""
    if not source.is_file():
        return None
    for candidate in (source.parent / f"{name}.py", source.parent / name):
        if candidate.is_file() and not is_test_file(candidate):
            return candidate
        if candidate.is_dir() and (candidate / "__init__.py").exists():
            return candidate
    return None


def siblings(source: Path) -> list[Path]:
    """Every module a single-file filter may import from beside it (what :func:`_sibling` can bundle):
    its directory's other ``.py`` files and packages, tests left out. For build keys."""
    if not source.is_file():
        return []
    found: list[Path] = []
    for path in sorted(source.parent.iterdir()):
        if path == source or path.name in _SKIP_DIRS:
            continue
        if path.is_file() and path.suffix == ".py" and not is_test_file(path):
            found.append(path)
        elif path.is_dir() and (path / "__init__.py").exists():
            found.extend(_python_files(path))
    return [p for p in found if not is_test_file(p)]


def check_syntax(root: Path, display_root: Path) -> None:
    for path in _python_files(root):
        try:
            compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
        except SyntaxError as err:
            where = display_root / path.relative_to(root)
            raise BuildError(f"{where}:{err.lineno}:{err.offset or 0}: SyntaxError: {err.msg}") from None


def _imported_top_level(path: Path) -> set[str]:
    try:
        tree = ast.parse(path.read_bytes())
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _module_name(extension: Path, root: Path) -> str:
    """``yaml/_yaml.cpython-311-x86_64-linux-gnu.so`` under ``root`` -> ``yaml._yaml``."""
    parts = extension.relative_to(root).parts
    return ".".join((*parts[:-1], parts[-1].split(".")[0]))


def _drop_extensions(root: Path, left_out: dict[str, str], under: Path | None = None) -> None:
    """Remove the C extensions under ``under`` (default: all of ``root``), noting each by module name."""
    for path in sorted((under or root).rglob("*")):
        if path.name.endswith(_EXTENSION_SUFFIXES) and path.is_file():
            left_out[_module_name(path, root)] = path.name
            path.unlink()


def _copy_from_environment(name: str, dest: Path, left_out: dict[str, str]) -> bool:
    """Copy the installed top-level module ``name`` into the bundle, without its C extensions
    (noted in ``left_out``); False if it is not installed or is one C extension itself."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None or spec.origin in ("built-in", "frozen"):
        return False
    origin = Path(spec.origin)
    if origin.name.endswith(_EXTENSION_SUFFIXES):
        left_out[name] = origin.name
        return False
    if spec.submodule_search_locations:
        _copy_tree(origin.parent, dest / name)
        _drop_extensions(dest, left_out, dest / name)
    else:
        shutil.copy2(origin, dest / origin.name)
    return True


# A requirement pinned to one version of a named distribution, with extras: what the cache of installs
# takes (options, files, URLs, markers and ranges run pip every time).
_PINNED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?==[A-Za-z0-9.!+_-]+")
_INSTALLED = ".proxywasm-installed"  # marks a finished install in the cache; its mtime is the last use


def _install_requirements(requirements: Path, dest: Path, left_out: dict[str, str]) -> None:
    """pip install ``requirements`` into ``dest``, without C extensions (noted in ``left_out``).
    A file of exact pins only (``name==1.2.3``) is installed once per Python, platform and pip
    settings and copied from the cache (``requirements`` under the cache root) after that: no pip,
    no index (not with ``PROXYWASM_COMPILED_CACHE=0``, nor when the cache cannot be written).
    Raises RequirementsError with pip's message."""
    # Only comments (as `proxywasm new` writes the file): no pip run, 0.4 s a build. Read as bytes:
    # pip also reads other encodings (UTF-16 has NUL bytes, which count as content here).
    lines = [line.split(b"#", 1)[0].strip() for line in requirements.read_bytes().splitlines()]
    if not any(lines):
        return
    cached = _cached_install(lines)
    if cached is None or not _copy_install(cached, dest):
        scratch = _scratch(cached)
        try:
            _pip_install(requirements, scratch or dest)
            if cached is not None and scratch is not None:
                (scratch / _INSTALLED).touch()
                os.chmod(scratch, 0o777 & ~compiled.UMASK)  # mkdtemp makes it 0700
                shutil.copytree(scratch, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(_INSTALLED))
                _publish(scratch, cached)
                compiled.evict()
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)  # gone already when it became the cache's
    _drop_extensions(dest, left_out)


def _pip_install(requirements: Path, target: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--disable-pip-version-check",
         "--target", str(target), "-r", str(requirements)],
        capture_output=True,
        text=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise RequirementsError(f"installing {requirements} failed:\n{result.stderr.strip()}")
    for junk in list(target.glob("*.dist-info")) + list(target.glob("bin")):
        shutil.rmtree(junk)


def _cached_install(lines: list[bytes]) -> Path | None:
    """Where the cache keeps the install of these requirement lines, or None when they are not all
    exact pins or there is no cache to use."""
    folder = compiled.build_folder("requirements")  # None for release builds, and with no cache
    if folder is None:
        return None
    try:
        pins = sorted(line.decode().replace(" ", "").lower() for line in lines if line)
    except UnicodeDecodeError:
        return None
    if not all(_PINNED.fullmatch(pin) for pin in pins):
        return None
    settings = sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith("PIP_"))
    inputs = [sys.version, sys.platform, platform.machine(), *settings, "", *pins]
    return folder / hashlib.sha256("\n".join(inputs).encode()).hexdigest()[:24]


def _copy_install(cached: Path, dest: Path) -> bool:
    """Copy a finished install from the cache into ``dest``; False (``dest`` untouched) when there
    is none, or when it went while being copied (eviction moves a folder aside before removing it)."""
    marker = cached / _INSTALLED
    if not compiled.touch(marker):
        return False
    copy = Path(tempfile.mkdtemp(dir=dest.parent)) / "copy"
    try:
        shutil.copytree(cached, copy, ignore=shutil.ignore_patterns(_INSTALLED))
        if not marker.is_file():
            return False
        shutil.copytree(copy, dest, dirs_exist_ok=True)
        return True
    except (OSError, shutil.Error):
        return False
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)


def _scratch(cached: Path | None) -> Path | None:
    """A folder beside the cache's installs to install into, or None (no cache, or not writable)."""
    if cached is None:
        return None
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".tmp-", dir=cached.parent))
    except OSError:
        return None


def _publish(scratch: Path, cached: Path) -> None:
    """Make a finished install the cache's, whole or not at all (another build may have put one
    there first). A folder there without its mark is moved aside and removed first."""
    if cached.exists() and not (cached / _INSTALLED).is_file() and not compiled.remove_folder(cached):
        return
    try:
        scratch.rename(cached)
    except OSError:
        pass


def _precompile(staging: Path) -> None:
    """Compile the bundle to bytecode ahead, when this Python's bytecode is the runtime's (3.11):
    the SDK for the import system, the filter and its dependencies for the bundle importer."""
    if sys.version_info[:2] != RUNTIME_PYTHON:
        return
    for path in _python_files(staging):
        rel = path.relative_to(staging)
        sdk = rel.parts[0] == "proxywasm"
        source = path.read_bytes()
        pyc = importlib.util.cache_from_source(str(path), optimization=2 if sdk else "")
        bytecode.write_pyc(bytecode.compile_for_vm(source, str(rel), sdk=sdk), source, Path(pyc))


def make_bundle(source: Path, staging: Path, requirements: Path | None = None) -> Bundle:
    """Lay out ``source`` (a filter file or package directory) with its dependencies in ``staging``."""
    shown = source  # messages name files as the user named them (relative stays relative)
    source = source.resolve()
    if not source.exists():
        raise BuildError(f"{source}: no such file or directory")
    staging.mkdir(parents=True, exist_ok=True)
    if source.is_file():
        if source.suffix != ".py":
            raise BuildError(f"{source}: a filter is a .py file or a package directory")
        entry, entry_file = source.stem, source.name
        shutil.copy2(source, staging / source.name)
        check_syntax(staging, shown.parent)
        default_requirements = source.parent / "requirements.txt"
    elif (source / "__init__.py").exists():
        entry, entry_file = source.name, f"{source.name}/__init__.py"
        _copy_tree(source, staging / source.name, skip_tests=True)
        check_syntax(staging / source.name, shown)
        default_requirements = source / "requirements.txt"
    else:
        raise BuildError(f"{source}: a filter directory must be a package (contain __init__.py)")
    if not entry.isidentifier():
        raise BuildError(f"{source}: {entry!r} is not a valid module name")

    requirements = requirements or (default_requirements if default_requirements.exists() else None)
    left_out: dict[str, str] = {}
    if requirements is not None:
        _install_requirements(requirements, staging, left_out)

    # Dependencies found in the build environment, followed transitively.
    stdlib = set(sys.stdlib_module_names) | {"proxywasm", "_proxywasm"}
    dependencies: list[str] = []
    pending = [p for p in _python_files(staging)]
    seen: set[str] = set()
    while pending:
        for name in sorted(_imported_top_level(pending.pop())):
            if name in seen or name in stdlib:
                continue
            seen.add(name)
            if (staging / name).exists() or (staging / f"{name}.py").exists():
                continue
            sibling = _sibling(source, name)
            if sibling is not None:  # a module beside a single-file filter: part of the filter
                if sibling.is_dir():
                    _copy_tree(sibling, staging / name, skip_tests=True)
                    check_syntax(staging / name, sibling)
                    pending.extend(_python_files(staging / name))
                else:
                    shutil.copy2(sibling, staging / sibling.name)
                    check_syntax(staging, source.parent)
                    pending.append(staging / sibling.name)
                continue
            if _copy_from_environment(name, staging, left_out):
                dependencies.append(name)
                target = staging / name if (staging / name).is_dir() else staging / f"{name}.py"
                pending.extend(_python_files(target) if target.is_dir() else [target])

    _copy_tree(Path(proxywasm.__file__).parent, staging / "proxywasm")
    _precompile(staging)
    extensions = " ".join(f"{module}:{file}" for module, file in sorted(left_out.items()))
    (staging / MANIFEST).write_text(f"entry={entry}\nentry_file={entry_file}\nleft_out={extensions}\n")
    for path in [staging, *staging.rglob("*")]:
        os.utime(path, (0, 0))  # the snapshot must not depend on file times
    return Bundle(staging, entry, entry_file, dependencies, left_out)
