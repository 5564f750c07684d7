"""Facts about the VM the filter runs in (each Envoy worker thread has its own VM)."""

from __future__ import annotations

from . import hostcalls


def memory_bytes() -> int:
    """Size of this VM's linear memory. It only grows: watch it to find a leak."""
    return hostcalls.memory_bytes()


def python_entries() -> int:
    """How many of Envoy's callbacks have run Python code in this VM. Callbacks a filter does
    not define are answered by the runtime without entering Python, and do not count."""
    return hostcalls.python_entries()
