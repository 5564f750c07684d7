"""Build-time initialisation, run once inside the module by the snapshotter.

Imports the filter with the bundle mapped in at ``/bundle``, keeps the code of bundled modules
that were not imported yet in memory (Envoy gives the module no filesystem), routes output to
Envoy's log, and hands the dispatcher to the runtime. Everything here ends up in the snapshot.
"""

from __future__ import annotations

import gc
import importlib.machinery
import marshal
import os
import sys
from types import CodeType, ModuleType

import _proxywasm

from . import _dispatch, log

BUNDLE = "/bundle"
MANIFEST = "proxywasm-bundle.txt"


class BundleImporter:
    """Serves modules compiled from the bundle at build time (a meta path finder and loader;
    importlib.abc would import far more than it is worth)."""

    def __init__(self, codes: dict[str, tuple[CodeType, bool]]) -> None:
        self.codes = codes

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        entry = self.codes.get(fullname)
        if entry is None:
            return None
        spec = importlib.machinery.ModuleSpec(fullname, self, origin=entry[0].co_filename, is_package=entry[1])  # type: ignore[arg-type]
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        code, is_package = self.codes[module.__name__]
        module.__file__ = code.co_filename
        if is_package:
            module.__path__ = []
        exec(code, module.__dict__)


class NotBundled:
    """Last on the meta path: explains why a module cannot be imported inside Envoy."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        raise ModuleNotFoundError(
            f"No module named {fullname!r} in this filter: only modules imported while the filter was "
            "built, and the filter's own bundled modules, exist inside Envoy. Import it at module level.",
            name=fullname,
        )


def _load_code(path: str, display: str) -> CodeType:
    """The module's code: bytecode the build compiled ahead if there is some, else the source
    compiled here (which leaves more garbage in the snapshot's heap)."""
    directory, filename = os.path.split(path)
    cached = os.path.join(directory, "__pycache__", f"{filename[:-3]}.{sys.implementation.cache_tag}.pyc")
    if os.path.exists(cached):
        with open(cached, "rb") as f:
            code = marshal.loads(f.read()[16:])  # after the 16-byte pyc header
        if isinstance(code, CodeType):
            return code
    with open(path, "rb") as f:
        return compile(f.read(), display, "exec", dont_inherit=True, optimize=0)


def _compile_bundle(root: str, skip: set[str]) -> dict[str, tuple[CodeType, bool]]:
    codes: dict[str, tuple[CodeType, bool]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        rel = os.path.relpath(dirpath, root)
        package = "" if rel == "." else rel.replace(os.sep, ".")
        if package.split(".")[0] in skip:
            continue
        for filename in sorted(filenames):
            if not filename.endswith(".py"):
                continue
            stem = filename[:-3]
            is_package = stem == "__init__"
            name = package if is_package else (f"{package}.{stem}" if package else stem)
            if not name:
                continue
            path = os.path.join(dirpath, filename)
            codes[name] = (_load_code(path, os.path.relpath(path, root)), is_package)
    return codes


def _freeze_imports(importer: BundleImporter) -> None:
    """No filesystem inside Envoy: only builtin, frozen and bundled modules remain importable."""
    importer.codes = {n: c for n, c in importer.codes.items() if n not in sys.modules}
    sys.meta_path[:] = [
        f for f in sys.meta_path if f in (importlib.machinery.BuiltinImporter, importlib.machinery.FrozenImporter)
    ]
    sys.meta_path.insert(0, importer)
    sys.meta_path.append(NotBundled())
    sys.path[:] = []
    sys.path_hooks[:] = []
    sys.path_importer_cache.clear()


def initialize() -> None:
    with open(os.path.join(BUNDLE, MANIFEST)) as f:
        manifest = dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)
    importer = BundleImporter(_compile_bundle(BUNDLE, skip={"proxywasm"}))
    sys.meta_path.insert(0, importer)
    for module in manifest.get("preload", "").split():
        __import__(module)
    __import__(manifest["entry"])
    if not _dispatch.registry.plugins:
        raise RuntimeError(
            f"{manifest['entry_file']} registers no filter: decorate an HttpContext, StreamContext or "
            "PluginContext subclass with @proxywasm.register"
        )
    _freeze_imports(importer)
    log.install_stdio()
    log.route_logging()
    _proxywasm.set_dispatcher(_dispatch.dispatcher, _dispatch.dispatcher.contexts)
    gc.collect()
    gc.freeze()  # objects from the snapshot are never collected: skip them in every GC pass
