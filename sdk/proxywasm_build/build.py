"""``proxywasm build``: filter source in, one Envoy-loadable module out."""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .bundle import BuildError, Bundle, make_bundle
from .snapshot import SnapshotError, snapshot

RUNTIME_DIR = Path(__file__).parent / "_runtime"
_FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+)')


@dataclass
class BuildResult:
    module: bytes
    bundle: Bundle
    memory_bytes: int  # the linear memory's initial size
    resident_bytes: int  # what each VM makes resident in Envoy: the pages the snapshot fills
    seconds: float
    logs: list[str]


def runtime_path() -> Path:
    path = RUNTIME_DIR / "python.wasm"
    if not path.exists():
        raise BuildError(f"the Python runtime is missing ({path}); build it with sdk/runtime/build.sh")
    return path


def build(source: Path, requirements: Path | None = None) -> BuildResult:
    started = time.perf_counter()
    runtime = runtime_path().read_bytes()
    with tempfile.TemporaryDirectory(prefix="proxywasm-bundle-") as tmp:
        bundle = make_bundle(Path(source), Path(tmp) / "bundle", requirements)
        try:
            result = snapshot(runtime, {"/stdlib": RUNTIME_DIR / "stdlib", "/bundle": bundle.root})
        except SnapshotError as err:
            raise BuildError(_explain(err.output, Path(source))) from None
    seconds = time.perf_counter() - started
    return BuildResult(result.module, bundle, result.memory_bytes, result.resident_bytes, seconds, result.logs)


def _explain(output: str, source: Path) -> str:
    """Turn the guest's traceback into 'where: what', pointing into the filter's own files."""
    lines = [line for line in output.splitlines() if line.strip()]
    what = next((line.strip() for line in reversed(lines) if not line.startswith(" ")), "initialisation failed")
    where = None
    for line in lines:
        match = _FRAME.match(line)
        if match and not match.group(1).startswith(("/stdlib", "<frozen", "proxywasm/", "/bundle/proxywasm/")):
            where = f"{match.group(1)}:{match.group(2)}"
    base = source.parent  # bundle paths are relative to the folder holding the file or package
    prefix = f"{base / where}: " if where else f"{source}: "
    message = f"{prefix}importing the filter failed: {what}"
    if "registers no filter" in what:
        message = f"{source}: {what.split(': ', 1)[-1]}"
    return f"{message}\n\n{output}" if where else message + (f"\n\n{output}" if output else "")
