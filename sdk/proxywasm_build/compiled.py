"""Compiled modules kept on disk: wasmtime's ``Module.serialize()`` output, loaded again with
``Module.deserialize_file`` in milliseconds where Cranelift takes seconds for CPython's code.

An artefact is valid only for the wasmtime version that made it (its name says the version) and
the engine configuration (each caller keeps its own directory; wasmtime also refuses an artefact
made with another configuration, and ``load`` then drops it). Loading runs the artefact's machine
code: the cache must be as trusted as the installation itself. The build's snapshot keeps the
runtime compiled, unless ``PROXYWASM_COMPILED_CACHE=0`` (docs/deploying.md); the local host keeps
each module it loads. Nothing is evicted: remove the directory to reclaim it.
"""

from __future__ import annotations

import os
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import wasmtime


def cache_root() -> Path:
    """``$PROXYWASM_CACHE_DIR``, else ``$XDG_CACHE_HOME/proxywasm``, else ``~/.cache/proxywasm``.
    Raises RuntimeError when none is set and the home directory is unknown."""
    env = os.environ.get("PROXYWASM_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "proxywasm"


def wasmtime_version() -> str:
    try:
        return version("wasmtime")
    except PackageNotFoundError:  # pragma: no cover - metadata missing in odd installs
        return "unknown"


def load(engine: wasmtime.Engine, path: Path) -> wasmtime.Module | None:
    """The module compiled into ``path``, or None when there is none (a stale or truncated
    artefact is removed, so the caller compiles again)."""
    if not path.exists():
        return None
    try:
        return wasmtime.Module.deserialize_file(engine, str(path))
    except Exception:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass
        return None


def store(path: Path, module: wasmtime.Module) -> None:
    """Write ``module``'s artefact to ``path``; a cache that cannot be written is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, module.serialize())
    except (OSError, wasmtime.WasmtimeError):
        pass


def load_or_compile(engine: wasmtime.Engine, code: bytes, path: Path) -> wasmtime.Module:
    """``code`` compiled, from the artefact at ``path`` when there is a good one, else compiled
    and stored there."""
    module = load(engine, path)
    if module is None:
        module = wasmtime.Module(engine, code)
        store(path, module)
    return module


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step: concurrent test workers never see half a file,
    and a failed write leaves no temporary file behind."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
