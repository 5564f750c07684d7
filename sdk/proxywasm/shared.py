"""Shared data (a key-value store shared by every VM of an Envoy process, with compare-and-swap)
and shared queues (to hand work from stream contexts to a plugin, across workers)."""

from __future__ import annotations

from . import hostcalls, msgpack
from .abi import Status
from .errors import CasMismatch as CasMismatch  # defined in errors, importable from here as before
from .errors import HostCallError

_raw = hostcalls.raw

TYPE_CHECKING = False  # typing is not imported at run time: it would cost memory in every VM
if TYPE_CHECKING:
    from typing import Any


class SharedData:
    """``shared_data.get(key)`` gives ``(value, cas)`` or ``None``; ``set(key, value, cas)`` writes
    it if nobody has written since the read that returned ``cas`` (0 writes unconditionally).
    ``get_value`` / ``set_value`` do the same for msgpack-encoded Python values."""

    # get and set call the host directly (see hostcalls.raw): a rate limiter makes both per request.
    def get(self, key: str) -> tuple[bytes, int] | None:
        found: tuple[bytes, int] | None = _raw.get_shared_data(key)
        return found

    def set(self, key: str, value: bytes | str, cas: int = 0) -> None:
        try:
            _raw.set_shared_data(key, value if type(value) is bytes else hostcalls.to_bytes(value), cas)
        except HostCallError as err:
            if err.status == Status.CAS_MISMATCH:
                raise CasMismatch(key) from None
            raise

    def get_value(self, key: str, default: Any = None) -> tuple[Any, int]:
        found = self.get(key)
        if found is None:
            return default, 0
        return msgpack.unpackb(found[0]), found[1]

    def set_value(self, key: str, value: Any, cas: int = 0) -> None:
        self.set(key, msgpack.packb(value), cas)

    def setdefault(self, key: str, value: Any) -> Any:
        """Write ``value`` (msgpack) under ``key`` unless the key exists; returns the value stored.

        Call it from ``on_vm_start`` or ``on_configure`` for keys that :meth:`update` changes:
        Envoy runs those first in the main thread's VM, before the workers start serving, so the
        key exists before any worker updates it. (Envoy has no atomic create: a write to an absent
        key ignores its CAS, so two VMs that both find a key absent and write it can lose one of
        the two writes; proxy-wasm cpp-host ``SharedData::set``.)"""
        found = self.get(key)
        if found is not None:
            return msgpack.unpackb(found[0])
        self.set_value(key, value)
        return value

    def update(self, key: str, change: Any, default: Any = None, attempts: int = 16) -> Any:
        """Apply ``change(old_value) -> new_value`` atomically (retrying on CAS conflicts);
        returns the value written. Raises :class:`CasMismatch` after ``attempts`` conflicts.

        Atomic once the key exists: create it first with :meth:`setdefault` in ``on_vm_start``
        (when it is absent, ``default`` is changed and written without a CAS check, and two VMs
        doing that at the same instant lose one update)."""
        for _ in range(attempts):
            old, cas = self.get_value(key, default)
            new = change(old)
            try:
                self.set_value(key, new, cas)
            except CasMismatch:
                continue
            return new
        raise CasMismatch(key)


shared_data = SharedData()


class SharedQueue:
    """A named queue. The VM that :meth:`register` s it gets ``on_queue_ready``; any VM that
    :meth:`resolve` s it can enqueue."""

    def __init__(self, queue_id: int) -> None:
        self.queue_id = queue_id

    @classmethod
    def register(cls, name: str) -> SharedQueue:
        return cls(hostcalls.register_shared_queue(name))

    @classmethod
    def resolve(cls, vm_id: str, name: str) -> SharedQueue | None:
        queue_id = hostcalls.resolve_shared_queue(vm_id, name)
        return None if queue_id is None else cls(queue_id)

    def enqueue(self, data: bytes | str) -> None:
        hostcalls.enqueue_shared_queue(self.queue_id, hostcalls.to_bytes(data))

    def dequeue(self) -> bytes | None:
        """The oldest item, or ``None`` when the queue is empty."""
        return hostcalls.dequeue_shared_queue(self.queue_id)
