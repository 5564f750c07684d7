"""Build-time guard on randomness the filter's module-level code makes. That code runs once, while
``proxywasm build`` snapshots the filter, where randomness is fixed (all zeros: builds are
reproducible), so a key, salt, token or UUID made there would be the same zeros in every VM, in
every deployment. While the filter is imported, ``os.urandom`` (and so ``secrets``,
``uuid.uuid4``, ``random.SystemRandom``) raises instead. The bootstrap drops this module after the
build (it costs Envoy's VMs nothing); the local host's native mode uses it the same way."""

from __future__ import annotations

import posix
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

MESSAGE = (
    "os.urandom() while the filter is built: module-level code runs once, at build time, where randomness is "
    "fixed (all zeros) so that builds are reproducible, and a key, salt, token or UUID made there would be the "
    "same zeros in every VM. Make it in on_vm_start or on_configure, or per request (secrets, uuid.uuid4 and "
    "os.urandom work there)"
)


def _refuse(size: int) -> bytes:
    raise RuntimeError(MESSAGE)


class no_randomness:
    """Within: ``os.urandom`` raises :data:`MESSAGE`. After: every module's reference to the refusing
    function (``os.urandom``, ``random._urandom``, a filter's ``from os import urandom``) is the real
    one again."""

    def __enter__(self) -> None:
        self.real: Callable[[int], bytes] = posix.urandom
        self.before = set(sys.modules)
        posix.urandom = _refuse
        for name, attribute in (("os", "urandom"), ("random", "_urandom")):
            module = sys.modules.get(name)
            if module is not None:
                setattr(module, attribute, _refuse)

    def __exit__(self, *exc: object) -> None:
        changed = (set(sys.modules) - self.before) | {"posix", "os", "random"}  # where the refusing one can be
        for module in [sys.modules.get(name) for name in changed]:
            names = getattr(module, "__dict__", None)
            if names is not None:
                for key, value in list(names.items()):
                    if value is _refuse:
                        names[key] = self.real
