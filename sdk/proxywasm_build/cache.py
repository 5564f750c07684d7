"""Built modules cached by content, so tests can start from a filter's source without a build step
of their own: the same filter, SDK, runtime and toolchain give the same bytes, built once."""

from __future__ import annotations

import hashlib
from pathlib import Path

import proxywasm

from . import compiled
from .build import RUNTIME_DIR, build, stats_config_path, stats_config_yaml
from .bundle import BuildError, RequirementsError, is_test_file, siblings

# Builds that failed in this process, by the module they would have been: the same error again
# without the build (a filter's wasm-mode tests each load it).
_FAILED: dict[Path, BuildError] = {}
_SKIP = {"__pycache__", ".git", ".venv", "node_modules", ".pytest_cache", ".mypy_cache", ".ruff_cache"}


def cache_dir() -> Path:
    return compiled.cache_root() / "builds"


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not _SKIP.intersection(p.relative_to(root).parts) and not is_test_file(p)
    )


def build_key(source: Path, requirements: Path | None = None) -> str:
    """A digest of everything the module depends on: the filter's files (and requirements), the SDK,
    the toolchain and the runtime."""
    source = source.resolve()
    digest = hashlib.sha256()
    toolchain = [RUNTIME_DIR / "python.wasm", *_files(Path(proxywasm.__file__).parent), *_files(Path(__file__).parent)]
    inputs = [p for p in toolchain if p.suffix in (".py", ".wasm")]
    neighbour = (source.parent if source.is_file() else source) / "requirements.txt"
    for path in [
        *_files(source),
        *siblings(source),  # modules beside a single-file filter that the build would bundle
        *([requirements] if requirements else []),
        *([neighbour] if neighbour.exists() else []),
    ]:
        inputs.append(path)
    for path in inputs:
        digest.update(str(path.name).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:24]


def build_cached(source: Path, requirements: Path | None = None) -> Path:
    """The module built from ``source`` (a ``.py`` file or a package directory), from the cache when
    nothing it depends on changed, with its stats_config beside it when it declares labelled metrics
    (``build.stats_config_path``). Raises ``BuildError`` as ``proxywasm build`` does, and
    ``compiled.CacheLimitError`` for a bad ``$PROXYWASM_CACHE_MAX_MB``."""
    compiled.max_bytes()  # a bad limit is named on every use
    out = cache_dir() / f"{Path(source).stem}-{build_key(Path(source), requirements)}.wasm"
    if compiled.touch(out):  # a use (eviction goes least recently used first)
        compiled.touch(stats_config_path(out))
        return out
    failed = _FAILED.get(out)
    if failed is not None:  # the same inputs failed before in this process: each test would rebuild
        raise BuildError(*failed.args)
    try:
        result = build(Path(source), requirements)
    except RequirementsError:
        raise  # pip and the index may do better next time
    except BuildError as err:
        _FAILED[out] = err
        raise
    out.parent.mkdir(parents=True, exist_ok=True)
    if result.labelled_metrics:  # beside the module, as `proxywasm build -o` writes it
        compiled.write_atomically(stats_config_path(out), stats_config_yaml(result, str(source)).encode())
    compiled.write_atomically(out, result.module)  # last: a module in the cache has its stats_config
    compiled.evict()
    return out
