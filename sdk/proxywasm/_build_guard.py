"""Build-time guards on the filter's module-level code. That code runs once, while ``proxywasm
build`` snapshots the filter, never in Envoy:

- randomness there is fixed (all zeros: builds are reproducible), so a key, salt, token or UUID
  made there would be the same zeros in every VM, in every deployment. While the filter is
  imported, ``os.urandom`` (and so ``secrets``, ``uuid.uuid4``, ``random.SystemRandom``) raises;
- no Envoy answers host calls there (only logging works; the rest answer UNIMPLEMENTED): such a
  failure says so and where to move the call.

The bootstrap drops this module after the build (it costs Envoy's VMs nothing); the local host's
native mode uses it the same way."""

from __future__ import annotations

import posix
import sys

from .abi import Status
from .errors import HostCallError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

MESSAGE = (
    "os.urandom() while the filter is built: module-level code runs once, at build time, where randomness is "
    "fixed (all zeros) so that builds are reproducible, and a key, salt, token or UUID made there would be the "
    "same zeros in every VM. Make it in on_vm_start or on_configure, or per request (secrets, uuid.uuid4 and "
    "os.urandom work there)"
)


HOST_CALL_HINT = (
    "the filter called Envoy while it was built: module-level code runs once, in proxywasm build, where no "
    "Envoy answers (only logging works there). Make the call where Envoy is: in on_vm_start or on_configure "
    "(plugin configuration, properties, shared data, tick period), or per request"
)


def _refuse(size: int) -> bytes:
    raise RuntimeError(MESSAGE)


class building:
    """Around the filter's import at build time. Within: ``os.urandom`` raises :data:`MESSAGE`; a
    :class:`HostCallError` UNIMPLEMENTED leaving it (or causing what leaves) gets :data:`HOST_CALL_HINT`. After: every
    module's reference to the refusing function (``os.urandom``, ``random._urandom``, a filter's
    ``from os import urandom``) is the real one again."""

    def __enter__(self) -> None:
        self.real: Callable[[int], bytes] = posix.urandom
        self.before = set(sys.modules)
        posix.urandom = _refuse
        for name, attribute in (("os", "urandom"), ("random", "_urandom")):
            module = sys.modules.get(name)
            if module is not None:
                setattr(module, attribute, _refuse)

    def __exit__(self, kind: object, exc: BaseException | None, trace: object) -> None:
        seen = 0
        while exc is not None and seen < 10:  # the error itself, or one the filter wrapped
            if isinstance(exc, HostCallError) and exc.status == Status.UNIMPLEMENTED and exc.args:
                exc.args = (f"{exc.args[0]}: {HOST_CALL_HINT}",)
                break
            exc, seen = exc.__cause__ or exc.__context__, seen + 1
        changed = (set(sys.modules) - self.before) | {"posix", "os", "random"}  # where the refusing one can be
        for module in [sys.modules.get(name) for name in changed]:
            names = getattr(module, "__dict__", None)
            if names is not None:
                for key, value in list(names.items()):
                    if value is _refuse:
                        names[key] = self.real
