"""Helpers shared by the host tests (a module with its own name: test directories share the
name ``conftest``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import guest

from proxywasm_host import Connection, Host, HttpStream

Stream = HttpStream | Connection

AS_DIR = Path(__file__).resolve().parents[2] / ".cache" / "as"


class Probe:
    """Drives the probe guest: choose what each callback does, call host functions directly."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.mem = host.raw.memory
        self._cursor = guest.SCRATCH

    def act(self, callback: str, action: int) -> None:
        self.mem.write_u32(guest.ACTIONS + 4 * guest.INDEX[callback], action)

    def ret(self, callback: str, value: int) -> None:
        self.mem.write_u32(guest.RETS + 4 * guest.INDEX[callback], value)

    def args(self, callback: str) -> tuple[int, ...]:
        raw = self.mem.read(guest.ARGS + 16 * guest.INDEX[callback], 16)
        assert raw is not None
        return tuple(guest.u32(raw[i : i + 4]) for i in range(0, 16, 4))

    @property
    def result(self) -> int:
        value = self.mem.read_u32(guest.RESULT)
        assert value is not None
        return value

    @property
    def token(self) -> int:
        value = self.mem.read_u32(guest.TOKEN)
        assert value is not None
        return value

    def callbacks(self) -> list[str]:
        names = {n.removeprefix("proxy_") for n, _, _ in guest.CALLBACKS}
        return [m for _, m in self.host.logs if m in names]

    def put(self, data: bytes | str) -> tuple[int, int]:
        raw = data.encode() if isinstance(data, str) else data
        if self._cursor + len(raw) + 16 > guest.HEAP:
            self._cursor = guest.SCRATCH
        ptr = self._cursor
        self.mem.write(ptr, raw)
        self._cursor += (len(raw) + 7) & ~7 or 8
        return ptr, len(raw)

    def slot(self) -> int:
        return self.put(b"\0" * 8)[0]

    def u32_at(self, ptr: int) -> int:
        value = self.mem.read_u32(ptr)
        assert value is not None
        return value

    def bytes_at(self, ptr_ptr: int, size_ptr: int) -> bytes:
        ptr, size = self.u32_at(ptr_ptr), self.u32_at(size_ptr)
        data = self.mem.read(ptr, size)
        assert data is not None
        return data

    def call(self, name: str, *args: int, on: Stream | None = None) -> int:
        """Call host function ``name`` through the probe's trampoline, with the context of ``on``
        (default: the root context) current."""
        result = self.host.raw.call("t_" + name, *args, on=on)
        assert result is not None, f"t_{name} did not run"
        return result

    def call_out(self, name: str, *args: int, on: Stream | None = None) -> tuple[int, bytes]:
        """Call a host function whose last two parameters are (ptr_ptr, size_ptr); return status, data."""
        pp, sp = self.slot(), self.slot()
        status = self.call(name, *args, pp, sp, on=on)
        return status, (self.bytes_at(pp, sp) if status == 0 else b"")
