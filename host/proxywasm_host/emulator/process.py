"""What one Envoy process holds across all its Wasm VMs: the clock and its timers, the event loop's
posted work, shared data, shared queues, stats and foreign functions.

Several ``Host`` objects (plugins, VMs) may share one :class:`Envoy` to exercise shared data and
queues across VMs, as Envoy's workers share them.
"""

from __future__ import annotations

import heapq
import itertools
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from proxywasm.abi import LogLevel, MetricType, Status

from ..errors import hide_host_frames

__tracebackhide__ = hide_host_frames  # pytest leaves these frames out for the filter's errors

if TYPE_CHECKING:
    from .vm import Vm

ForeignFunction = Callable[[bytes], "bytes | tuple[int, bytes]"]

_I64_MASK = (1 << 64) - 1


def _uncompress(data: bytes) -> bytes | tuple[int, bytes]:
    try:
        return zlib.decompress(data)
    except zlib.error:
        return Status.SERIALIZATION_FAILURE, b""


#: The foreign functions Envoy 1.40 registers for every plugin (source/extensions/common/wasm/
#: foreign.cc): zlib's compress() at the default level (the foreign_call_on_tick example's Envoy
#: test checks the bytes), uncompress() (SERIALIZATION_FAILURE on bad input), clear_route_cache.
_ENVOY_FOREIGN_FUNCTIONS: dict[str, ForeignFunction] = {
    "compress": zlib.compress,
    "uncompress": _uncompress,
    "clear_route_cache": lambda _args: b"",
}


class Timer:
    """A callback due at a point of Envoy's monotonic clock; ``cancel()`` disarms it."""

    __slots__ = ("action", "cancelled", "due_ns")

    def __init__(self, due_ns: int, action: Callable[[], None]) -> None:
        self.due_ns = due_ns
        self.action = action
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class Queue:
    """A shared queue (cpp-host ``SharedQueue``): registered by one VM's root context, keyed by
    ``(vm_id, name)``; any VM may enqueue."""

    vm_id: str
    name: str
    token: int
    items: deque[bytes] = field(default_factory=deque)
    vm: Vm | None = None
    context_id: int = 0


class Envoy:
    """Process-wide state, scoped as Envoy scopes it: shared data and queues by ``vm_id``, stats by
    name (``wasmcustom.`` in Envoy's ``/stats``; this emulator stores the plain name).

    The clock does not move by itself: ``Host.advance_time`` moves it and runs the timers that fall
    due on the way (ticks, callout timeouts), in order.
    """

    def __init__(self, *, log_level: int = LogLevel.INFO, start_time_ns: int | None = None) -> None:
        self.log_level = int(log_level)
        self.time_ns = time.time_ns() if start_time_ns is None else start_time_ns
        self.monotonic_ns = 1_000_000_000
        self._timers: list[tuple[int, int, Timer]] = []
        self._timer_seq = itertools.count()
        # Work the event loop runs next (queue-ready notifications posted across VMs).
        self.posted: deque[Callable[[], None]] = deque()
        self._shared: dict[str, dict[bytes, tuple[bytes, int]]] = {}
        self._cas = 1
        self._queues: dict[int, Queue] = {}
        self._queue_tokens: dict[tuple[str, bytes], int] = {}
        self._next_queue_token = 1
        self.counters: dict[str, int] = {}
        self.gauges: dict[str, int] = {}
        self.histograms: dict[str, list[int]] = {}
        self.foreign_functions: dict[str, ForeignFunction] = dict(_ENVOY_FOREIGN_FUNCTIONS)
        self.vms: list[Vm] = []

    # -- clock and timers -----------------------------------------------------------------------------
    def schedule(self, delay_ms: float, action: Callable[[], None]) -> Timer:
        """Run ``action`` once the monotonic clock has moved ``delay_ms`` forward."""
        timer = Timer(self.monotonic_ns + int(delay_ms * 1_000_000), action)
        heapq.heappush(self._timers, (timer.due_ns, next(self._timer_seq), timer))
        return timer

    def next_due_ns(self) -> int | None:
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def advance(self, ms: float, settle: Callable[[], None] | None = None) -> int:
        """Move both clocks forward by ``ms``, running each timer that falls due on the way at its
        own time, and ``settle`` (what the event loop runs without the clock moving: posted work,
        callout answers) after each. Returns how many timers ran."""
        target = self.monotonic_ns + int(ms * 1_000_000)
        ran = 0
        while True:
            due = self.next_due_ns()
            if due is None or due > target:
                break
            _, _, timer = heapq.heappop(self._timers)
            self._move_to(max(due, self.monotonic_ns))
            timer.action()
            ran += 1
            if settle is not None:
                settle()
        self._move_to(target)
        return ran

    def _move_to(self, monotonic_ns: int) -> None:
        delta = monotonic_ns - self.monotonic_ns
        if delta > 0:
            self.time_ns += delta
            self.monotonic_ns = monotonic_ns

    def run_posted(self) -> bool:
        """Run the posted work (it may post more). Returns whether anything ran."""
        ran = bool(self.posted)
        while self.posted:
            self.posted.popleft()()
        return ran

    # -- shared data (cpp-host SharedData) ------------------------------------------------------------
    def _next_cas(self) -> int:
        cas = self._cas
        self._cas = (self._cas + 1) & 0xFFFFFFFF or 1  # 0 is never a valid CAS
        return cas

    def get_shared(self, vm_id: str, key: bytes) -> tuple[bytes, int] | None:
        return self._shared.get(vm_id, {}).get(key)

    def set_shared(self, vm_id: str, key: bytes, value: bytes, cas: int = 0) -> Status:
        """Write ``value`` if ``cas`` is 0 or still the entry's CAS (else ``CAS_MISMATCH``)."""
        data = self._shared.setdefault(vm_id, {})
        old = data.get(key)
        if old is not None and cas != 0 and cas != old[1]:
            return Status.CAS_MISMATCH
        data[key] = (bytes(value), self._next_cas())
        return Status.OK

    def shared_data(self, vm_id: str = "") -> dict[bytes, bytes]:
        return {k: v for k, (v, _) in self._shared.get(vm_id, {}).items()}

    # -- shared queues (cpp-host SharedQueue) ---------------------------------------------------------
    def register_queue(self, vm: Vm, name: bytes, context_id: int) -> int:
        key = (vm.vm_id, bytes(name))
        token = self._queue_tokens.get(key)
        if token is None:
            token = self._next_queue_token
            self._next_queue_token += 1
            self._queue_tokens[key] = token
            self._queues[token] = Queue(vm.vm_id, name.decode("utf-8", "replace"), token)
        queue = self._queues[token]
        queue.vm, queue.context_id = vm, context_id
        return token

    def resolve_queue(self, vm_id: str, name: bytes) -> int:
        return self._queue_tokens.get((vm_id, bytes(name)), 0)

    def dequeue(self, token: int) -> tuple[Status, bytes]:
        queue = self._queues.get(token)
        if queue is None:
            return Status.NOT_FOUND, b""
        if not queue.items:
            return Status.EMPTY, b""
        return Status.OK, queue.items.popleft()

    def enqueue(self, token: int, data: bytes) -> Status:
        queue = self._queues.get(token)
        if queue is None:
            return Status.NOT_FOUND
        queue.items.append(bytes(data))
        vm, context_id = queue.vm, queue.context_id
        if vm is not None:
            # Envoy posts proxy_on_queue_ready to the registering VM's thread: never re-entrant.
            self.posted.append(lambda: vm.on_queue_ready(context_id, token))
        return Status.OK

    # -- stats ----------------------------------------------------------------------------------------
    def define_metric(self, kind: MetricType, name: str) -> None:
        if kind == MetricType.COUNTER:
            self.counters.setdefault(name, 0)
        elif kind == MetricType.GAUGE:
            self.gauges.setdefault(name, 0)
        else:
            self.histograms.setdefault(name, [])

    def add_to_counter(self, name: str, value: int) -> None:
        self.counters[name] = (self.counters[name] + value) & _I64_MASK

    def add_to_gauge(self, name: str, value: int) -> None:
        self.gauges[name] = (self.gauges[name] + value) & _I64_MASK

    def metric(self, name: str) -> int | list[int] | None:
        """A stat by name (``wasmcustom.`` prefix optional); histograms give their recorded values."""
        name = name.removeprefix("wasmcustom.")
        if name in self.counters:
            return self.counters[name]
        if name in self.gauges:
            return self.gauges[name]
        if name in self.histograms:
            return list(self.histograms[name])
        return None
