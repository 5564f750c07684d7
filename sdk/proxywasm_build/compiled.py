"""Compiled modules kept on disk: wasmtime's ``Module.serialize()`` output, loaded again with
``Module.deserialize_file`` in milliseconds where Cranelift takes seconds for CPython's code.

An artefact is valid only for the wasmtime version and engine configuration that made it, so
callers name both in its path (``wasmtime_version()``). The build's snapshot keeps the runtime
compiled (the same for every build); the local host keeps each module it loads.
"""

from __future__ import annotations

import os
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import wasmtime


def cache_root() -> Path:
    """``$PROXYWASM_CACHE_DIR``, else ``$XDG_CACHE_HOME/proxywasm`` (``~/.cache/proxywasm``)."""
    env = os.environ.get("PROXYWASM_CACHE_DIR")
    return Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "proxywasm"


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
        path.unlink(missing_ok=True)
        return None


def store(path: Path, module: wasmtime.Module) -> None:
    """Write ``module``'s artefact to ``path``; a cache that cannot be written is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, module.serialize())
    except OSError:
        pass


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step: concurrent test workers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
