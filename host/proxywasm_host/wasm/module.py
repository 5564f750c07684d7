"""Compiled-module cache: ``Module.serialize()`` output keyed by the sha256 of what wasmtime compiled (a
module's template, :mod:`.template`, or the module itself) and by the wasmtime version.

Cranelift takes seconds for a CPython-sized module; deserialising the cached artefact takes milliseconds.
The engine counts fuel (one unit per Wasm operation, about): the guest's clocks advance with the work
it does (see :mod:`.guest`). Code compiled with fuel differs from code without, hence ``-fuel`` in
the artefact's name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import wasmtime

from proxywasm_build import compiled

from ..errors import hide_host_frames
from .template import Fill, public_exports, split

__tracebackhide__ = hide_host_frames  # pytest leaves these frames out for the filter's errors

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
    """``host`` in the cache root (``compiled.cache_root``: ``$PROXYWASM_CACHE_DIR``, else
    ``~/.cache/proxywasm``), beside the build's ``builds`` and ``snapshot``."""
    return compiled.cache_root() / "host"


# Compiled code already in this process, by artefact path (one Module serves many stores).
_LOADED: dict[str, wasmtime.Module] = {}
# Modules already prepared in this process, by cache directory and content hash or file (absolute
# path, inode, size, mtime and ctime): a file seen before is not read again. Bounded: each holds its module's data.
_PREPARED: dict[object, Compiled] = {}
_PREPARED_MAX = 64


@dataclass(frozen=True)
class Compiled:
    """A module ready to instantiate: wasmtime's compiled code, of the module itself or of its
    template, and then what fills each new instance of the template (:mod:`.template`)."""

    module: wasmtime.Module
    fill: Fill | None = None

    @property
    def exports(self) -> list[wasmtime.ExportType]:
        """The module's exports (a template's own are left out)."""
        return public_exports(self.module.exports, self.fill)

    @property
    def imports(self) -> list[wasmtime.ImportType]:
        """The module's imports (a template has the module's own)."""
        return self.module.imports

    def instantiate(self, store: wasmtime.Store, imports: list[wasmtime.Func]) -> wasmtime.Instance:
        """An instance as instantiating the module makes it (raises what ``wasmtime.Instance`` does)."""
        instance = wasmtime.Instance(store, self.module, imports)
        if self.fill is not None:
            self.fill.apply(store, instance)
        return instance


def _artefact(key: str) -> Path:
    return cache_dir() / f"{key}-wasmtime{compiled.wasmtime_version()}-fuel.cwasm"


def _remember(key: object, prepared: Compiled) -> Compiled:
    if len(_PREPARED) >= _PREPARED_MAX:
        _PREPARED.pop(next(iter(_PREPARED)), None)
    _PREPARED[key] = prepared
    return prepared


def load_path(path: Path, *, use_cache: bool = True) -> Compiled:
    """Compile a module file (see :func:`compile_module`). A file seen before in this process, with
    the same inode, size and times, is not read again."""
    if not use_cache:
        return compile_module(path.read_bytes(), use_cache=False)
    compiled.max_bytes()  # a bad limit is named on every use
    st = path.stat()
    stamp = (str(cache_dir()), str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    found = _PREPARED.get(stamp)
    return found if found is not None else _remember(stamp, compile_module(path.read_bytes()))


def forget() -> None:
    """Drop the in-process memos (the on-disk cache stays)."""
    _LOADED.clear()
    _PREPARED.clear()


def compile_module(code: bytes, *, use_cache: bool = True) -> Compiled:
    """Compile ``code`` (wasm bytes), its template when it has one (:mod:`.template`), going through
    the on-disk cache when allowed: every build of one runtime with the same code shares an artefact."""
    if not use_cache:
        body, fill = split(code)
        return Compiled(wasmtime.Module(engine(), body), fill)
    compiled.max_bytes()  # a bad limit is named on every use
    digest = hashlib.sha256(code).hexdigest()
    found = _PREPARED.get((str(cache_dir()), digest))
    if found is not None:
        return found
    body, fill = split(code)
    path = _artefact(hashlib.sha256(body).hexdigest() if fill is not None else digest)
    module = _LOADED.get(str(path)) or compiled.load_or_compile(engine(), body, path)
    _LOADED[str(path)] = module
    return _remember((str(cache_dir()), digest), Compiled(module, fill))
