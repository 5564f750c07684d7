"""State one Envoy process holds across all its Wasm VMs: clock, shared data, shared queues, stats.

Several ``Host`` objects (plugins/VMs) may share one ``Envoy`` to exercise cross-VM shared data.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from proxywasm.abi import LogLevel, MetricType, Status

if TYPE_CHECKING:
    from .vm import Vm

ForeignFunction = Callable[[bytes], "bytes | tuple[int, bytes]"]


@dataclass
class Queue:
    vm_id: str
    name: str
    token: int
    items: deque[bytes] = field(default_factory=deque)
    vm: Vm | None = None
    context_id: int = 0


class Envoy:
    """Process-wide state, scoped like Envoy's: shared data and queues by ``vm_id``, stats by name."""

    def __init__(self, *, log_level: int = LogLevel.INFO, start_time_ns: int | None = None) -> None:
        self.log_level = int(log_level)
        self.time_ns = time.time_ns() if start_time_ns is None else start_time_ns
        self.monotonic_ns = 1_000_000_000
        self._shared: dict[str, dict[bytes, tuple[bytes, int]]] = {}
        self._cas = 1
        self._queues: dict[int, Queue] = {}
        self._queue_tokens: dict[tuple[str, bytes], int] = {}
        self._next_queue_token = 1
        self.counters: dict[str, int] = {}
        self.gauges: dict[str, int] = {}
        self.histograms: dict[str, list[int]] = {}
        self.foreign_functions: dict[str, ForeignFunction] = {"clear_route_cache": lambda _args: b""}
        self.vms: list[Vm] = []
        # Callbacks queued for "the event loop" (queue ready notifications from other VMs).
        self.posted: deque[Callable[[], None]] = deque()

    # -- clock -------------------------------------------------------------------------------------
    def advance(self, ms: float) -> None:
        delta = int(ms * 1_000_000)
        self.time_ns += delta
        self.monotonic_ns += delta

    # -- shared data (cpp-host SharedData) ---------------------------------------------------------
    def _next_cas(self) -> int:
        cas = self._cas
        self._cas = (self._cas + 1) & 0xFFFFFFFF or 1  # 0 is never a valid CAS
        return cas

    def get_shared(self, vm_id: str, key: bytes) -> tuple[bytes, int] | None:
        return self._shared.get(vm_id, {}).get(key)

    def set_shared(self, vm_id: str, key: bytes, value: bytes, cas: int) -> Status:
        data = self._shared.setdefault(vm_id, {})
        old = data.get(key)
        if old is not None and cas != 0 and cas != old[1]:
            return Status.CAS_MISMATCH
        data[key] = (bytes(value), self._next_cas())
        return Status.OK

    def shared_data(self, vm_id: str = "") -> dict[bytes, bytes]:
        return {k: v for k, (v, _) in self._shared.get(vm_id, {}).items()}

    # -- shared queues (cpp-host SharedQueue) ------------------------------------------------------
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

    def run_posted(self) -> None:
        while self.posted:
            self.posted.popleft()()

    # -- stats --------------------------------------------------------------------------------------
    def define_metric(self, kind: MetricType, name: str) -> None:
        if kind == MetricType.COUNTER:
            self.counters.setdefault(name, 0)
        elif kind == MetricType.GAUGE:
            self.gauges.setdefault(name, 0)
        else:
            self.histograms.setdefault(name, [])

    def metric(self, name: str) -> int | list[int] | None:
        # Envoy files Wasm stats under the "wasmcustom." namespace in /stats; accept both spellings.
        name = name.removeprefix("wasmcustom.")
        if name in self.counters:
            return self.counters[name]
        if name in self.gauges:
            return self.gauges[name]
        if name in self.histograms:
            return list(self.histograms[name])
        return None
