"""The import rules of the VM, applied to a filter running natively where they can be.

Inside Envoy a filter has only the stdlib modules the runtime carries (its C modules linked in,
its pure-Python stdlib), pure-Python dependencies, and, after the build, only what was imported
while the filter was built. Natively:

* at load, a stdlib module the runtime lacks fails the load with the build's message;
* a dependency's C extension module cannot be imported (:class:`NoExtensions`), as the build
  leaves it out: a package's pure-Python fallback is taken, an unguarded import fails;
* during a callback, importing a stdlib module that is not loaded yet fails with Envoy's message.

What cannot be enforced natively: a module the test process had already imported (pytest imports
many) is found in ``sys.modules`` without any import happening, so a late import of it passes
natively where the VM would refuse it. The Wasm mode is the judge.
"""

from __future__ import annotations

import builtins
import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import LoadError, hide_host_frames

__tracebackhide__ = hide_host_frames  # pytest leaves these frames out for the filter's errors

_EXTENSIONS = (*importlib.machinery.EXTENSION_SUFFIXES, ".so", ".pyd", ".dylib")


@cache
def runtime_modules() -> tuple[frozenset[str], frozenset[str]] | None:
    """(the runtime's linked C modules, its pure-Python stdlib top-level names), or ``None`` when
    the runtime is not built here."""
    try:
        from proxywasm_build.build import RUNTIME_DIR
    except ImportError:
        return None
    builtin = RUNTIME_DIR / "builtin-modules.txt"
    stdlib = RUNTIME_DIR / "stdlib"
    if not builtin.exists() or not stdlib.is_dir():
        return None
    names = frozenset(line.strip() for line in builtin.read_text().splitlines() if line.strip())
    pure = frozenset(p.stem if p.suffix == ".py" else p.name for p in stdlib.iterdir() if "." not in p.stem)
    return names, pure


def lacking(name: str) -> str | None:
    """Why the stdlib module ``name`` cannot be imported in the VM at all (the runtime lacks it:
    ``_bootstrap.missing_from_runtime``'s message), or None when it has it, when ``name`` is not
    stdlib, or when the runtime is not built here."""
    available = runtime_modules()
    top = name.partition(".")[0]
    if available is None or top not in sys.stdlib_module_names:
        return None
    linked, pure = available
    if top in linked or top in pure:
        return None
    # Loaded by then (the import hooks below load it before they are installed): _bootstrap itself
    # imports _proxywasm, which exists only while a native VM runs.
    from proxywasm._bootstrap import missing_from_runtime

    return missing_from_runtime(name, ", ".join(sorted(n for n in linked if n not in ("builtins", "sys"))))


class ImportRules:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.recorded: dict[str, bool] = {}  # top-level name -> imported by the filter's own code

    def is_filter_module(self, name: str, module: ModuleType) -> bool:
        """A module of the filter's own (its file under the filter's directory)."""
        file = getattr(module, "__file__", None)
        if not file:
            return False
        path = Path(file).resolve()
        return path.is_relative_to(self.base) and "site-packages" not in path.parts

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Record every absolute import made while the filter loads (even of modules loaded already)."""
        from proxywasm._bootstrap import missing_from_runtime  # noqa: F401 - loaded now, for lacking()

        original = builtins.__import__
        runtime_modules()  # read now: its own imports must not run through the hook below

        def record(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
            if level == 0:
                file = (globals or {}).get("__file__") or ""
                own = bool(file) and Path(file).resolve().is_relative_to(self.base)
                top = name.partition(".")[0]
                self.recorded[top] = self.recorded.get(top, False) or own
                why = lacking(top)
                if why is not None:
                    # As in the runtime: the import fails here, so code that guards it (hmac's
                    # `import _hashlib`) takes its fallback, and an unguarded one fails the load.
                    raise ModuleNotFoundError(why, name=name)
            return original(name, globals, locals, fromlist, level)

        builtins.__import__ = record
        try:
            yield
        finally:
            builtins.__import__ = original

    def check_loaded(self, new_modules: set[str]) -> None:
        """After the load: refuse stdlib modules the runtime lacks."""
        # The filter's own imports (a refused import its code caught is no excuse): the message
        # names what its code asked for.
        for top in sorted(name for name, own in self.recorded.items() if own):
            why = lacking(top)
            if why is not None:
                raise LoadError(why)

    def guarded_import(self, original: Callable[..., Any]) -> Callable[..., Any]:
        """``__import__`` during a callback: a stdlib module nobody loaded cannot be imported now."""

        from proxywasm._bootstrap import not_imported_at_build  # loaded now: also for lacking()

        runtime_modules()  # read now: its own imports must not run through the hook below

        def guarded(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
            if level == 0 and name.partition(".")[0] in sys.stdlib_module_names:
                # As in the VM, even if the test process has it: no import statement anywhere would
                # bring a module the runtime lacks (NotBundled.find_spec).
                why = lacking(name)
                if why is not None:
                    raise ModuleNotFoundError(why, name=name)
                if name not in sys.modules:
                    raise ModuleNotFoundError(not_imported_at_build(name), name=name)
            return original(name, globals, locals, fromlist, level)

        return guarded


class NoExtensions:
    """First on the meta path while a native VM's code runs: a dependency's C extension module
    cannot be imported, as the build leaves it out of the bundle (``_bootstrap.NotBundled``), so
    a package with a pure-Python fallback takes it here too, and one without fails the same way.
    (A module the test process had already loaded is found without asking: see above.)"""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname.partition(".")[0] in sys.stdlib_module_names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        origin = spec.origin if spec is not None else None
        if origin and origin.endswith(_EXTENSIONS):
            # The bundle keeps a pure-Python twin next to it (mypyc and Cython packages ship both):
            # the VM imports that one, and so does native mode.
            stem = Path(origin).parent / fullname.rpartition(".")[2]
            for twin in (stem.with_suffix(".py"), stem / "__init__.py"):
                if twin.is_file():
                    return importlib.util.spec_from_file_location(fullname, twin)
            from proxywasm._bootstrap import c_extension_left_out

            raise ModuleNotFoundError(c_extension_left_out(fullname, Path(origin).name))  # nameless: as NotBundled
        return None
