"""Compiled-module cache: ``Module.serialize()`` output keyed by sha256(bytes) and the wasmtime version.

Cranelift takes seconds for a CPython-sized module; deserialising the cached artefact takes milliseconds.
The engine counts fuel (one unit per Wasm operation, about): the guest's clocks advance with the work
it does (see :mod:`.guest`). Code compiled with fuel differs from code without, hence ``-fuel`` in
the artefact's name.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import wasmtime

from proxywasm_build import compiled

_ENGINE: wasmtime.Engine | None = None


def engine() -> wasmtime.Engine:
    """One engine per process: modules compiled by it can be shared by every store."""
    global _ENGINE
    if _ENGINE is None:
        config = wasmtime.Config()
        config.consume_fuel = True
        _ENGINE = wasmtime.Engine(config)
    return _ENGINE


def cache_dir() -> Path:
    """``$PROXYWASM_CACHE_DIR`` itself when set (the build keeps its own files in subdirectories
    of it), else ``~/.cache/proxywasm/host``."""
    env = os.environ.get("PROXYWASM_CACHE_DIR")
    return Path(env) if env else compiled.cache_root() / "host"


# Compiled modules already in this process, by artefact path (a Module is shared by many stores).
_LOADED: dict[str, wasmtime.Module] = {}
# (absolute path, size, mtime_ns) -> content hash, so a known file is not re-read and re-hashed.
_PATH_HASHES: dict[tuple[str, int, int], str] = {}


def _artefact(key: str) -> Path:
    return cache_dir() / f"{key}-wasmtime{compiled.wasmtime_version()}-fuel.cwasm"


def load_path(path: Path, *, use_cache: bool = True) -> wasmtime.Module:
    """Compile a module file. A file whose path, size and mtime were seen before (in this process or,
    through a small index in the cache directory, in an earlier one) is neither read nor hashed."""
    if not use_cache:
        return wasmtime.Module(engine(), path.read_bytes())
    st = path.stat()
    stamp = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    key = _PATH_HASHES.get(stamp)
    index = cache_dir() / "index" / hashlib.sha256(repr(stamp).encode()).hexdigest()
    if key is None:
        try:
            key = index.read_text().strip() or None
        except OSError:
            key = None
    if key is not None and (str(_artefact(key)) in _LOADED or _artefact(key).exists()):
        module = _from_cache(key)
        if module is not None:
            _PATH_HASHES[stamp] = key
            return module
    code = path.read_bytes()
    key = hashlib.sha256(code).hexdigest()
    module = compile_module(code, key=key)
    _PATH_HASHES[stamp] = key
    try:
        index.parent.mkdir(parents=True, exist_ok=True)
        index.write_text(key)
    except OSError:
        pass
    return module


def _from_cache(key: str) -> wasmtime.Module | None:
    path = _artefact(key)
    module = _LOADED.get(str(path))
    if module is not None:
        return module
    module = compiled.load(engine(), path)
    if module is None:
        return None
    _LOADED[str(path)] = module
    return module


def forget() -> None:
    """Drop the in-process memo (the on-disk cache stays)."""
    _LOADED.clear()
    _PATH_HASHES.clear()


def compile_module(code: bytes, *, use_cache: bool = True, key: str | None = None) -> wasmtime.Module:
    """Compile ``code`` (wasm bytes), going through the on-disk cache when allowed."""
    eng = engine()
    if not use_cache:
        return wasmtime.Module(eng, code)
    path = _artefact(key or hashlib.sha256(code).hexdigest())
    module = _LOADED.get(str(path)) or compiled.load_or_compile(eng, code, path)
    _LOADED[str(path)] = module
    return module
