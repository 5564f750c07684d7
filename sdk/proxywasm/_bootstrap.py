"""Build-time initialisation, run once inside the module by the snapshotter.

Imports the filter with the bundle mapped in at ``/bundle``, keeps the code of bundled modules
that were not imported yet in memory (Envoy gives the module no filesystem), routes output to
Envoy's log, and hands the dispatcher to the runtime. Everything here ends up in the snapshot,
so it uses builtin modules only: os, importlib and types (with _collections_abc, posixpath, ...)
stay out of every VM unless the filter imports them.
"""

from __future__ import annotations

import builtins
import codecs
import gc
import io
import marshal
import posix
import sys
import time

import _proxywasm

from . import _dispatch, headers, log, metrics, vm
from .abi import BUILD_FACT_PREFIX, CONTEXTS_FACT, KEEP_COMPILER_FACT

TYPE_CHECKING = False
if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec
    from types import CodeType, ModuleType

_importlib = sys.modules["_frozen_importlib"]  # importlib._bootstrap, loaded by Python's start-up
_S_IFMT, _S_IFDIR = 0o170000, 0o040000

BUNDLE = "/bundle"
STDLIB = "/stdlib"  # mapped in at build time only (proxywasm_build.build)
MANIFEST = "proxywasm-bundle.txt"


class BundleImporter:
    """Serves modules compiled from the bundle at build time (a meta path finder and loader;
    importlib.abc would import far more than it is worth)."""

    def __init__(self, codes: dict[str, tuple[CodeType, bool]]) -> None:
        self.codes = codes

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        entry = self.codes.get(fullname)
        if entry is None:
            return None
        spec: ModuleSpec = _importlib.ModuleSpec(fullname, self, origin=entry[0].co_filename, is_package=entry[1])
        return spec

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        code, is_package = self.codes[module.__name__]
        module.__file__ = code.co_filename
        if is_package:
            module.__path__ = []
        exec(code, module.__dict__)


def missing_from_runtime(fullname: str, linked: str) -> str:
    """Why a stdlib module cannot be imported anywhere: the runtime lacks it (``linked``: the C
    modules it has, comma-separated). Also used by the local host's native mode."""
    top = fullname.partition(".")[0]
    return (
        f"No module named {fullname!r}: the stdlib module {top!r} is not part of the proxywasm runtime "
        f"(its C part is not linked, or it was left out). C modules linked: {linked}"
    )


def not_imported_at_build(fullname: str) -> str:
    """Why a stdlib module the runtime has cannot be imported inside Envoy after the build."""
    return (
        f"No module named {fullname!r} in this filter: the stdlib module was not imported while the filter "
        f"was built, and Envoy gives the module no files. Add `import {fullname}` at module level."
    )


def c_extension_left_out(name: str, file: str) -> str:
    """Why the C extension module ``name`` (``file``) of a dependency cannot be imported: the bundle
    leaves C extensions out (proxywasm_build/bundle.py); native mode refuses them the same way."""
    return (
        f"No module named {name!r}: it is a C extension ({file}), left out of the bundle because only "
        "pure-Python code runs inside Envoy. Use a pure-Python alternative, or the package's pure-Python "
        "fallback if it has one"
    )


class NotBundled:
    """Last on the meta path: explains why a module cannot be imported. While the filter is built it
    speaks only for stdlib modules the runtime lacks; inside Envoy (``frozen``) for every module."""

    def __init__(self, stdlib: str, left_out: str = "") -> None:
        self.stdlib = stdlib  # the runtime's pure-Python stdlib, space-separated: files exist at build time only
        self.frozen = False
        # C extensions of dependencies the bundle left out, "module:file" space-separated (bundle.py)
        self.left_out = dict(item.split(":", 1) for item in left_out.split())

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        top = fullname.partition(".")[0]
        if self.frozen and top in sys.builtin_module_names:
            # Linked into the runtime, but the snapshot keeps only the builtin modules the build
            # initialised (sdk/runtime/inittab.c): the served module leaves the others' code out.
            raise ModuleNotFoundError(not_imported_at_build(fullname), name=fullname)
        if top in sys.stdlib_module_names and top not in self.stdlib.split():
            linked = ", ".join(sorted(n for n in sys.builtin_module_names if n not in ("__main__", "builtins", "sys")))
            raise ModuleNotFoundError(missing_from_runtime(fullname, linked), name=fullname)
        if fullname in self.left_out:
            # A ModuleNotFoundError, which fallbacks catch (PyJWT's `except ModuleNotFoundError`), but
            # nameless: `from pkg import _ext` swallows one named after the module and says only
            # "cannot import name".
            raise ModuleNotFoundError(c_extension_left_out(fullname, self.left_out[fullname]))
        if not self.frozen:
            return None
        if top in sys.stdlib_module_names:
            raise ModuleNotFoundError(not_imported_at_build(fullname), name=fullname)
        raise ModuleNotFoundError(
            f"No module named {fullname!r} in this filter: only modules imported while the filter was "
            "built, and the filter's own bundled modules, exist inside Envoy. If it is one (the filter's "
            "own, or installed where proxywasm build runs), import it at module level.",
            name=fullname,
        )


def _load_code(path: str, display: str) -> CodeType:
    """The module's code: bytecode the build compiled ahead if there is some, else the source
    compiled here (which leaves more garbage in the snapshot's heap)."""
    directory, _, filename = path.rpartition("/")
    cached = f"{directory}/__pycache__/{filename[:-3]}.{sys.implementation.cache_tag}.pyc"
    try:
        with open(cached, "rb") as f:
            code = marshal.loads(f.read()[16:])  # after the 16-byte pyc header
    except FileNotFoundError:
        code = None
    if code is not None and type(code) is type(_load_code.__code__):
        return code  # type: ignore[no-any-return]
    with open(path, "rb") as f:
        return compile(f.read(), display, "exec", dont_inherit=True, optimize=0)


def _compile_bundle(root: str, skip: set[str], package: str = "") -> dict[str, tuple[CodeType, bool]]:
    """Code for every .py file under ``root``, keyed by module name, packages first."""
    codes: dict[str, tuple[CodeType, bool]] = {}
    subdirs = []
    for entry in sorted(posix.listdir(root)):
        path = f"{root}/{entry}"
        if posix.stat(path).st_mode & _S_IFMT == _S_IFDIR:
            if entry != "__pycache__" and not (not package and entry in skip):
                subdirs.append((path, f"{package}.{entry}" if package else entry))
        elif entry.endswith(".py"):
            stem = entry[:-3]
            is_package = stem == "__init__"
            name = package if is_package else (f"{package}.{stem}" if package else stem)
            if name:
                codes[name] = (_load_code(path, path[len(BUNDLE) + 1 :]), is_package)
    for path, name in subdirs:
        codes.update(_compile_bundle(path, skip, name))
    return codes


def _freeze_imports(importer: BundleImporter, missing: NotBundled) -> None:
    """No filesystem inside Envoy: only builtin and bundled modules remain importable (the runtime
    empties the frozen-module tables after initialisation, see runtime/static_data.c)."""
    importer.codes = {n: c for n, c in importer.codes.items() if n not in sys.modules}
    missing.frozen = True
    sys.meta_path[:] = [importer, _importlib.BuiltinImporter, missing]
    sys.path[:] = []
    sys.path_hooks[:] = []
    sys.path_importer_cache.clear()


_real_open = io.open
_ENOTCAPABLE = 76  # WASI's errno for a path outside the VM's preopened directories (Envoy gives none)


def _open_or_say_why(file: object, *args: object, **kwargs: object) -> object:
    """``open`` in a filter: the real one, but a path the VM has no capability for (every path
    inside Envoy, and the filter's own at build time) raises :func:`vm.refuse_open`'s
    PermissionError saying why, instead of WASI's "Capabilities insufficient"."""
    try:
        return _real_open(file, *args, **kwargs)  # type: ignore[call-overload]
    except PermissionError as err:
        if err.errno == _ENOTCAPABLE:
            vm.refuse_open(file)
        raise


def initialize() -> None:
    with open(f"{BUNDLE}/{MANIFEST}") as f:
        manifest = dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)
    importer = BundleImporter(_compile_bundle(BUNDLE, skip={"proxywasm"}))
    sys.meta_path.insert(0, importer)
    stdlib = " ".join(
        sorted({e.removesuffix(".py") for e in posix.listdir(STDLIB) if "." not in e.removesuffix(".py")})
    )
    missing = NotBundled(stdlib, manifest.get("left_out", ""))
    sys.meta_path.append(missing)
    for module in manifest.get("preload", "").split():
        __import__(module)
    from . import _build_guard

    time.sleep = vm.refuse_sleep  # a worker cannot wait: see vm.SLEEP_MESSAGE
    builtins.open = io.open = _open_or_say_why  # type: ignore[assignment]  # also what `OPEN = open` keeps
    with _build_guard.building():
        __import__(manifest["entry"])
    if not _dispatch.registry.plugins:
        raise RuntimeError(
            f"{manifest['entry_file']} registers no filter: decorate an HttpContext, StreamContext or "
            "PluginContext subclass with @proxywasm.register"
        )
    encodings = ["utf-8", "latin-1"]  # inside Envoy, codecs.lookup() finds only codecs looked up by now
    if "json" in sys.modules:  # json.loads(bytes) picks these by the body's first bytes (RFC 8259 8.1, a BOM)
        encodings += ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]
    for encoding in encodings:
        codecs.lookup(encoding)
    abcs = sys.modules.get("_collections_abc")
    if abcs is not None:  # the filter uses collections.abc: Headers is a MutableMapping for it too
        abcs.MutableMapping.register(headers.Headers)
        abcs.Mapping.register(headers.HeaderPairs)
    for name, labels in metrics.labelled():  # proxywasm build emits their stats_tags
        _proxywasm.log(2, f"{BUILD_FACT_PREFIX}metric-labels {','.join(labels)}\t{name}")
    metrics.built()
    _proxywasm.log(2, " ".join([CONTEXTS_FACT, *_dispatch.registry.serves()]))  # proxywasm run's listener
    if vm._keep_compiler:  # the snapshotter keeps the compiler's code (proxywasm_build/served_code.py)
        _proxywasm.log(2, KEEP_COMPILER_FACT)
    # Build-time only: register()'s callback-name check; freed here, it costs Envoy's VMs nothing.
    package = sys.modules["proxywasm"]
    for name in ("_names", "_build_guard"):
        sys.modules.pop(f"proxywasm.{name}", None)
        if hasattr(package, name):
            delattr(package, name)
    _freeze_imports(importer, missing)
    log.install_stdio()
    log.route_logging()
    _proxywasm.set_dispatcher(_dispatch.dispatcher, _dispatch.dispatcher.contexts)
    gc.collect()
    gc.freeze()  # objects from the snapshot are never collected: skip them in every GC pass
