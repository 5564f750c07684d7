"""Compiled modules kept on disk: wasmtime's ``Module.serialize()`` output, loaded again with
``Module.deserialize_file`` in milliseconds where Cranelift takes seconds for CPython's code.

An artefact is valid only for the wasmtime version that made it (its name says the version) and
the engine configuration (each caller keeps its own directory; wasmtime also refuses an artefact
made with another configuration, and ``load`` then drops it). Loading runs the artefact's machine
code: the cache must be as trusted as the installation itself. The build's snapshot keeps the
runtime compiled, unless ``PROXYWASM_COMPILED_CACHE=0`` (docs/deploying.md); the local host keeps
each module it loads (one artefact serves every build with the same code).

The whole cache (``builds``, ``host``, ``snapshot`` and ``requirements`` under :func:`cache_root`)
is brought back under ``$PROXYWASM_CACHE_MAX_MB`` (default 2048, in millions of bytes) by
:func:`evict` whenever something new is cached, least recently used first; a file used in the last
ten minutes stays.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import wasmtime

#: The cache's default size limit, in MB (``$PROXYWASM_CACHE_MAX_MB`` sets another).
DEFAULT_MAX_MB = 2048
#: The cache's parts under the root: built modules, the host's and the snapshot's compiled code,
#: installed requirements (a folder each: one entry).
PARTS = ("builds", "host", "snapshot", "requirements")
_FOLDER_ENTRIES = "requirements"
#: A file used less than this long ago (seconds) is never evicted: another process may be about
#: to open it. The cache can stay over its limit for that long.
IN_USE_S = 600


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (since 4.7)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: set and put back
    os.umask(mask)
    return mask


#: The process's umask: the cache's files are as readable as it allows, as any other file (mkstemp
#: makes them 0600).
UMASK = _umask()


def cache_root() -> Path:
    """``$PROXYWASM_CACHE_DIR``, else ``$XDG_CACHE_HOME/proxywasm``, else ``~/.cache/proxywasm``.
    Raises RuntimeError when none is set and the home directory is unknown."""
    env = os.environ.get("PROXYWASM_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "proxywasm"


def build_folder(part: str) -> Path | None:
    """``part`` under the cache root, for what a build takes from the cache into the module it
    makes (the compiled runtime, pinned requirements); None with ``PROXYWASM_COMPILED_CACHE=0``
    (release builds on shared or restored caches, docs/deploying.md) or no home directory."""
    if os.environ.get("PROXYWASM_COMPILED_CACHE", "1") == "0":
        return None
    try:
        return cache_root() / part
    except RuntimeError:
        return None


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
        module = wasmtime.Module.deserialize_file(engine, str(path))
        touch(path)
        return module
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
        return
    evict()


def load_or_compile(engine: wasmtime.Engine, code: bytes, path: Path) -> wasmtime.Module:
    """``code`` compiled, from the artefact at ``path`` when there is a good one, else compiled
    and stored there. Raises CacheLimitError for a bad ``$PROXYWASM_CACHE_MAX_MB``."""
    max_bytes()  # named on every use, not only when something new is stored
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
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class CacheLimitError(RuntimeError):
    """``$PROXYWASM_CACHE_MAX_MB`` is not a whole number of megabytes."""


def touch(path: Path) -> bool:
    """Mark a cache file as just used (eviction goes by the time of last use, the file's mtime) and
    answer whether it is there: a hit. One whose times cannot be set (a read-only or shared cache)
    is still a hit. A file marked in the last half of :data:`IN_USE_S` is left as it is (its times
    stay, so memos keyed by them still hold)."""
    try:
        if time.time() - path.stat().st_mtime < IN_USE_S / 2:
            return True
        os.utime(path)
        return True
    except OSError:
        return path.is_file()


def max_bytes() -> int:
    """The cache's size limit in bytes: ``$PROXYWASM_CACHE_MAX_MB`` or :data:`DEFAULT_MAX_MB`.
    Raises CacheLimitError when the variable is not a whole number of megabytes. What uses the
    cache calls it before anything else, so a bad value is named on every use, not only when
    something new is cached."""
    text = os.environ.get("PROXYWASM_CACHE_MAX_MB", str(DEFAULT_MAX_MB))
    try:
        megabytes = int(text)
    except ValueError:
        megabytes = -1
    if megabytes < 0:
        raise CacheLimitError(f"PROXYWASM_CACHE_MAX_MB must be a whole number of megabytes, not {text!r}")
    return megabytes * 1_000_000


def remove_folder(folder: Path) -> bool:
    """Remove ``folder`` whole at once: renamed aside (``.gone-<name>-<pid>`` beside it), then
    deleted, so a reader copying it sees it there or not, never half of it. False when the rename
    fails (the folder stays as it was)."""
    aside = folder.with_name(f".gone-{folder.name}-{os.getpid()}")
    try:
        folder.rename(aside)
    except OSError:
        return False
    shutil.rmtree(aside, ignore_errors=True)
    return True


def _entry(name: str) -> str:
    """The entry a cache file belongs to: its name without its suffix (a built module and its
    ``.stats_config.yaml`` are one entry)."""
    return os.path.splitext(name.removesuffix(".stats_config.yaml"))[0]


def evict(now: float | None = None) -> list[Path]:
    """Remove the least recently used entries of the cache until its parts (:data:`PARTS`) hold no
    more than :func:`max_bytes`, and return the files removed. An entry is a file with its
    companions (:func:`_entry`), or in ``requirements`` one install's whole folder; its last use is
    its files' latest. None used in the last :data:`IN_USE_S` seconds is removed, and each is looked
    at again just before it goes (another process may have used it since). What cannot be read or
    removed is left as it is. Raises CacheLimitError as :func:`max_bytes`."""
    now = time.time() if now is None else now
    limit = max_bytes()
    try:
        root = cache_root()
    except RuntimeError:  # no home directory: no cache
        return []
    # An entry: the folder removed whole (None for entries of single files), and a name in its folder.
    groups: dict[tuple[Path | None, Path, str], tuple[float, int, list[Path]]] = {}
    for part in PARTS:
        for folder, _, names in os.walk(root / part):
            inside = Path(folder).relative_to(root / part).parts
            for name in names:
                path = Path(folder, name)
                try:
                    st = path.stat()
                except OSError:  # gone meanwhile (a temporary file renamed, another eviction)
                    continue
                if part == _FOLDER_ENTRIES and inside:
                    key: tuple[Path | None, Path, str] = (root / part / inside[0], root / part, inside[0])
                else:
                    key = (None, Path(folder), _entry(name))
                used, size, files = groups.get(key, (0.0, 0, []))
                groups[key] = (max(used, st.st_mtime), size + st.st_size, [*files, path])
    total = sum(size for _, size, _ in groups.values())
    removed: list[Path] = []
    for (whole, _, _), (used, size, files) in sorted(groups.items(), key=lambda g: g[1][0]):
        if total <= limit or now - used < IN_USE_S:
            break
        total -= size
        if whole is not None:
            try:
                if all(now - path.stat().st_mtime >= IN_USE_S for path in files) and remove_folder(whole):
                    removed.extend(files)
            except OSError:
                pass
            continue
        for path in files:
            try:
                if now - path.stat().st_mtime >= IN_USE_S:
                    path.unlink()
                    removed.append(path)
            except OSError:
                pass
    return removed
