"""The served module's missing compiler, applied to a filter running natively.

The module Envoy loads leaves out CPython's parser and compiler (sdk/runtime/served_code.c): a
callback that compiles source (``eval``/``exec``/``compile`` of a string or an AST, so also
``ast.parse``, ``ast.literal_eval``, a new ``namedtuple`` or dataclass, ``typing.get_type_hints``
on string annotations) gets a RuntimeError naming its line, and the failure policy applies. While
a native callback runs, the builtins ``compile``, ``exec`` and ``eval`` refuse source the same way;
code objects compiled at import time run as before.
"""

from __future__ import annotations

import ast
import builtins
import sys
import sysconfig
from pathlib import Path
from typing import Any

from ..errors import hide_host_frames

__tracebackhide__ = hide_host_frames  # pytest leaves these frames out for the filter's errors

MESSAGE = "compiling Python source at run time is not available in the served module: do it at import time"

_STDLIB = tuple({str(Path(sysconfig.get_paths()[key]).resolve()) for key in ("stdlib", "platstdlib")})
_HERE = str(Path(__file__).resolve().parent.parent)  # proxywasm_host


def _is_source(value: object) -> bool:
    return isinstance(value, (str, bytes, bytearray, ast.AST))


class CompilerGuard:
    """Refuses source compilation in callbacks; ``sdk_dir`` and ``base`` place the message's line."""

    def __init__(self, sdk_dir: Path, base: Path) -> None:
        self.skip = (*_STDLIB, str(sdk_dir.resolve()), _HERE)
        self.base = base.resolve()
        self._guards = tuple(self._guard(real) for real in (builtins.compile, builtins.exec, builtins.eval))

    def _guard(self, real: Any) -> Any:
        """``real`` (compile, exec or eval), refusing source and ASTs as the served module does."""

        def refuse_source(source: Any, *args: Any, **kwargs: Any) -> Any:
            if _is_source(source):
                raise RuntimeError(f"{MESSAGE} ({self._where()})")
            return real(source, *args, **kwargs)

        return refuse_source

    def _where(self) -> str:
        """The innermost frame outside the stdlib, the SDK and the host: the filter's line ("?"
        when there is none: the SDK or the host called, not the filter)."""
        frame = sys._getframe(1)
        while frame is not None:
            file = frame.f_code.co_filename
            if not file.startswith("<") and not str(Path(file).resolve()).startswith(self.skip):
                path = Path(file).resolve()
                shown = path.relative_to(self.base) if path.is_relative_to(self.base) else path
                return f"{shown}:{frame.f_lineno}"
            frame = frame.f_back  # type: ignore[assignment]
        return "?"

    def install(self) -> tuple[Any, Any, Any]:
        """Guard the builtins (for one callback); returns what :meth:`uninstall` restores."""
        saved = builtins.compile, builtins.exec, builtins.eval
        builtins.compile, builtins.exec, builtins.eval = self._guards
        return saved

    @staticmethod
    def uninstall(saved: tuple[Any, Any, Any]) -> None:
        builtins.compile, builtins.exec, builtins.eval = saved
