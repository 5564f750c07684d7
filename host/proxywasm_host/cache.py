"""Compiled-module cache: ``Module.serialize()`` output keyed by sha256(bytes) and the wasmtime version.

Cranelift takes seconds for a CPython-sized module; deserialising the cached artefact takes milliseconds.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import wasmtime

_ENGINE: wasmtime.Engine | None = None


def engine() -> wasmtime.Engine:
    """One engine per process: modules compiled by it can be shared by every store."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = wasmtime.Engine(wasmtime.Config())
    return _ENGINE


def cache_dir() -> Path:
    env = os.environ.get("PROXYWASM_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "proxywasm" / "host"


def _wasmtime_version() -> str:
    try:
        from importlib.metadata import version

        return version("wasmtime")
    except Exception:  # pragma: no cover - metadata missing in odd installs
        return "unknown"


def compile_module(code: bytes, *, use_cache: bool = True) -> wasmtime.Module:
    """Compile ``code`` (wasm bytes), going through the on-disk cache when allowed."""
    eng = engine()
    if not use_cache:
        return wasmtime.Module(eng, code)
    key = hashlib.sha256(code).hexdigest()
    path = cache_dir() / f"{key}-wasmtime{_wasmtime_version()}.cwasm"
    if path.exists():
        try:
            return wasmtime.Module.deserialize_file(eng, str(path))
        except Exception:
            path.unlink(missing_ok=True)  # stale or truncated artefact: recompile below
    module = wasmtime.Module(eng, code)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(module.serialize())
        os.replace(tmp, path)  # atomic: concurrent test workers never see half a file
    except OSError:
        pass
    return module
