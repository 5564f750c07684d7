"""``proxywasm build``: filter source in, one Envoy-loadable module out."""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from proxywasm import metrics
from proxywasm.abi import BUILD_FACT_PREFIX, CONTEXTS_FACT

from . import wasm
from .bundle import BuildError, Bundle, make_bundle
from .snapshot import SnapshotError, snapshot

RUNTIME_DIR = Path(__file__).parent / "_runtime"
_FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+)')
_CALLBACK_NAME = re.compile(r"CallbackNameError: (?P<file>[^:\n]+):(?P<line>\d+): (?P<message>.*)$", re.MULTILINE)
_LABELS_FACT = f"{BUILD_FACT_PREFIX}metric-labels "


@dataclass
class BuildResult:
    module: bytes
    bundle: Bundle
    memory_bytes: int  # the linear memory's initial size
    resident_bytes: int  # what each VM makes resident in Envoy: the pages the snapshot fills
    seconds: float
    logs: list[str]
    #: (metric name, label names) of the metrics the filter declares with labels at module level
    labelled_metrics: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    compiler_kept: bool = False  # the filter called proxywasm.vm.keep_compiler()
    #: what each plugin makes contexts for, "ROOT:KIND" (see proxywasm._dispatch.Registry.serves)
    contexts: tuple[str, ...] = ()

    def serves(self, root_id: str | None = None) -> tuple[str, ...]:
        """What the plugin for ``root_id`` serves ("http", "stream"); all plugins' for None."""
        return kinds_for(self.contexts, root_id)

    @property
    def stats_tags(self) -> list[dict[str, str]]:
        """Envoy ``stats_config.stats_tags`` that turn those labels into Prometheus labels."""
        return metrics.stats_tags(label for _, labels in self.labelled_metrics for label in labels)


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
    logs, labelled, serves = _build_facts(result.logs)
    module = result.module + wasm.encode_section(wasm.custom_section(SERVES_SECTION, " ".join(serves).encode()))
    return BuildResult(
        module, bundle, result.memory_bytes, result.resident_bytes, seconds, logs, labelled, result.compiler_kept,
        serves,
    )  # fmt: skip


#: A custom section (Envoy and V8 ignore it) naming what each of the module's plugins serves
#: ("ROOT:KIND" pairs, space-separated): ``proxywasm run`` picks its listener and ``proxywasm
#: package`` checks ``--type`` by it, for the plugin the root id selects.
SERVES_SECTION = "proxywasm.serves"


def kinds_for(contexts: tuple[str, ...], root_id: str | None = None) -> tuple[str, ...]:
    """What the plugin Envoy's ``root_id`` selects serves, from "ROOT:KIND" pairs, found as the
    dispatcher finds the plugin (that root id, else the one for any root id, else the only one);
    for ``root_id`` None, every kind any plugin serves ("http" before "stream")."""
    kinds: dict[str, str] = {}
    for pair in contexts:
        root, _, kind = pair.rpartition(":")
        kinds[root or "*"] = kind
    if root_id is not None:
        only = next(iter(kinds.values())) if len(kinds) == 1 else ""
        chosen = kinds.get(root_id) or kinds.get("*") or only
        return (chosen,) if chosen in ("http", "stream") else ()
    return tuple(k for k in ("http", "stream") if k in kinds.values())


def serves_at_end(tail: bytes, root_id: str | None = None) -> tuple[str, ...] | None:
    """:func:`module_serves` from the last bytes of a module: ``build`` appends the section last,
    so the local host reads it without reading the whole module (None if the tail does not hold it)."""
    name = SERVES_SECTION.encode()
    at = tail.rfind(bytes([len(name)]) + name)
    if at < 0:
        return None
    return kinds_for(tuple(tail[at + 1 + len(name) :].decode("utf-8", "replace").split()), root_id)


def module_serves(module: bytes, root_id: str | None = None) -> tuple[str, ...] | None:
    """What a module built by ``proxywasm build`` serves (see :data:`SERVES_SECTION` and
    :func:`kinds_for`); ``None`` for another module (another SDK's, or an older build)."""
    try:
        for section in wasm.parse_sections(module):
            if wasm.custom_name(section) == SERVES_SECTION:
                return kinds_for(tuple(wasm.custom_body(section).decode().split()), root_id)
    except (ValueError, IndexError):  # not a well-formed module (WasmFormatError, a bad name's UTF-8)
        return None
    return None


def _build_facts(logs: list[str]) -> tuple[list[str], list[tuple[str, tuple[str, ...]]], tuple[str, ...]]:
    """Split the lines the bootstrap logs for the build (metric labels, what the filter serves)
    from the filter's own logs."""
    kept: list[str] = []
    labelled: list[tuple[str, tuple[str, ...]]] = []
    serves: tuple[str, ...] = ()
    for line in logs:
        _, found, fact = line.partition(_LABELS_FACT)
        _, contexts, kinds = line.partition(CONTEXTS_FACT)
        if found:
            labels, _, name = fact.partition("\t")
            labelled.append((name, tuple(labels.split(","))))
        elif contexts:
            serves = tuple(kinds.split())
        else:
            kept.append(line)
    return kept, labelled, serves


STATS_CONFIG_HEADER = "# Envoy bootstrap stats_config for the labelled metrics of "


def stats_config_path(module: Path) -> Path:
    """Where ``proxywasm build -o filter.wasm`` writes the stats_config: ``filter.stats_config.yaml``."""
    return module.with_name(module.stem + ".stats_config.yaml")


def stats_config_yaml(result: BuildResult, source: str) -> str:
    """The ``stats_config`` to merge into an Envoy bootstrap, as YAML text (what ``proxywasm build``
    writes next to the module when the filter declares labelled metrics at module level)."""
    lines = [
        f"{STATS_CONFIG_HEADER}{source} (written by proxywasm build):",
        "# merge it into the bootstrap so /stats/prometheus shows the labels as Prometheus labels.",
    ]
    lines += [f"#   {name}: {', '.join(labels)}" for name, labels in result.labelled_metrics]
    lines += ["stats_config:", "  stats_tags:"]
    for tag in result.stats_tags:
        lines += [f"  - tag_name: {tag['tag_name']}", f"    regex: '{tag['regex']}'"]
    return "\n".join(lines) + "\n"


def _explain(output: str, source: Path) -> str:
    """Turn the guest's traceback into 'where: what', pointing into the filter's own files."""
    base = source.parent  # bundle paths are relative to the folder holding the file or package
    misnamed = _CALLBACK_NAME.search(output)
    if misnamed:  # register() refused a method: it knows the method's own file and line
        return f"{base / misnamed['file']}:{misnamed['line']}: {misnamed['message']}"
    lines = [line for line in output.splitlines() if line.strip()]
    what = next((line.strip() for line in reversed(lines) if not line.startswith(" ")), "initialisation failed")
    where = None
    for line in lines:
        match = _FRAME.match(line)
        if match and not match.group(1).startswith(("/stdlib", "<frozen", "proxywasm/", "/bundle/proxywasm/")):
            where = f"{match.group(1)}:{match.group(2)}"
    if "registers no filter" in what:  # the bootstrap's own check: its message names the file
        return what.split(": ", 1)[-1]
    prefix = f"{base / where}: " if where else f"{source}: "
    message = f"{prefix}importing the filter failed: {what}"
    trace = _without_sdk_frames(output)
    return f"{message}\n\n{trace}" if trace else message


def _without_sdk_frames(output: str) -> str:
    """The guest's traceback without the frames that led into the filter's import (the SDK's
    bootstrap and importer, importlib's) and the importer's own anywhere (its message says what it
    refused): each a ``File`` line and the indented lines under it. From the first frame of the
    filter's (or a dependency's) on, the other frames stay."""
    kept: list[str] = []
    leading_in = skipping = False
    for line in output.splitlines():
        frame = _FRAME.match(line)
        if frame:
            file = frame.group(1)
            skipping = leading_in and file.startswith(("/bundle/proxywasm/", "proxywasm/", "<frozen "))
            leading_in = skipping
            skipping = skipping or file.endswith("proxywasm/_bootstrap.py")
        elif not line.startswith("    "):  # "Traceback ...", the exception line, a chained one's header
            leading_in, skipping = line.startswith("Traceback"), False
        if not skipping:
            kept.append(line)
    return "\n".join(kept).strip("\n")
