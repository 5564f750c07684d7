"""A read-only WASI filesystem for build-time initialisation.

The runtime reads the stdlib and the bundle through it. Unlike wasmtime's own WASI, it reports
the same inode numbers, times and directory order on every machine, so the memory that ends up
in the snapshot (and so the module's bytes) depends only on the files' contents.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wasmtime

WASI = "wasi_snapshot_preview1"

# errno values
SUCCESS, EACCES, EBADF, EINVAL, EISDIR, ENOENT, ENOSYS, ENOTDIR, ESPIPE = 0, 2, 8, 28, 31, 44, 52, 54, 70
# file types
CHARACTER_DEVICE, DIRECTORY, REGULAR_FILE = 2, 3, 4
O_CREAT, O_DIRECTORY, O_TRUNC = 1, 2, 8


@dataclass
class _Open:
    host: Path
    guest: str
    data: bytes | None = None  # file contents, read on open
    position: int = 0


class BuildFilesystem:
    """Serves ``mounts`` (guest directory -> host directory) read-only; fd 1 and 2 go to ``output``."""

    def __init__(self, mounts: dict[str, Path], output: Callable[[str], None]) -> None:
        self.output = output
        self.fds: dict[int, _Open] = {}
        self.preopens: list[int] = []
        for guest, host in mounts.items():
            fd = 3 + len(self.fds)
            self.fds[fd] = _Open(Path(host), guest)
            self.preopens.append(fd)
        self._inodes: dict[str, int] = {}

    # ---- helpers ----

    def _ino(self, guest: str) -> int:
        return self._inodes.setdefault(guest, len(self._inodes) + 1)

    def _resolve(self, dirfd: int, path: str) -> tuple[Path, str] | int:
        base = self.fds.get(dirfd)
        if base is None:
            return EBADF
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if ".." in parts:
            return EACCES
        return base.host.joinpath(*parts), "/".join([base.guest.rstrip("/"), *parts])

    def _filestat(self, mem: _Mem, ptr: int, host: Path, guest: str) -> int:
        if not host.exists():
            return ENOENT
        kind = DIRECTORY if host.is_dir() else REGULAR_FILE
        size = 0 if kind == DIRECTORY else host.stat().st_size
        mem.write(ptr, struct.pack("<QQB7xQQQQQ", 0, self._ino(guest), kind, 1, size, 0, 0, 0))
        return SUCCESS

    # ---- WASI functions ----

    def fd_prestat_get(self, mem: _Mem, fd: int, out: int) -> int:
        if fd not in self.preopens:
            return EBADF
        mem.write(out, struct.pack("<BxxxI", 0, len(self.fds[fd].guest.encode())))
        return SUCCESS

    def fd_prestat_dir_name(self, mem: _Mem, fd: int, ptr: int, size: int) -> int:
        if fd not in self.preopens:
            return EBADF
        mem.write(ptr, self.fds[fd].guest.encode()[:size])
        return SUCCESS

    def fd_fdstat_get(self, mem: _Mem, fd: int, out: int) -> int:
        if fd in (0, 1, 2):
            kind = CHARACTER_DEVICE
        elif fd in self.fds:
            kind = DIRECTORY if self.fds[fd].data is None else REGULAR_FILE
        else:
            return EBADF
        mem.write(out, struct.pack("<BxHxxxxQQ", kind, 0, (1 << 64) - 1, (1 << 64) - 1))
        return SUCCESS

    def fd_fdstat_set_flags(self, mem: _Mem, fd: int, flags: int) -> int:
        return SUCCESS if fd in self.fds or fd in (0, 1, 2) else EBADF

    def path_open(
        self, mem: _Mem, dirfd: int, dirflags: int, ptr: int, size: int, oflags: int,
        rights: int, inheriting: int, fdflags: int, out: int,
    ) -> int:  # fmt: skip
        resolved = self._resolve(dirfd, mem.read(ptr, size).decode())
        if isinstance(resolved, int):
            return resolved
        host, guest = resolved
        if oflags & (O_CREAT | O_TRUNC):
            return EACCES
        if not host.exists():
            return ENOENT
        if oflags & O_DIRECTORY and not host.is_dir():
            return ENOTDIR
        fd = max([*self.fds, 2]) + 1
        self.fds[fd] = _Open(host, guest, None if host.is_dir() else host.read_bytes())
        mem.write(out, struct.pack("<I", fd))
        return SUCCESS

    def fd_close(self, mem: _Mem, fd: int) -> int:
        if fd not in self.fds or fd in self.preopens:
            return EBADF
        del self.fds[fd]
        return SUCCESS

    def _read_into(self, mem: _Mem, data: bytes, iovs: int, count: int) -> int:
        done = 0
        for i in range(count):
            buf, length = struct.unpack("<II", mem.read(iovs + 8 * i, 8))
            chunk = data[done : done + length]
            mem.write(buf, chunk)
            done += len(chunk)
            if len(chunk) < length:
                break
        return done

    def fd_read(self, mem: _Mem, fd: int, iovs: int, count: int, out: int) -> int:
        f = self.fds.get(fd)
        if f is None:
            return EBADF if fd != 0 else self._zero(mem, out)
        if f.data is None:
            return EISDIR
        n = self._read_into(mem, f.data[f.position :], iovs, count)
        f.position += n
        mem.write(out, struct.pack("<I", n))
        return SUCCESS

    def _zero(self, mem: _Mem, out: int) -> int:
        mem.write(out, struct.pack("<I", 0))
        return SUCCESS

    def fd_pread(self, mem: _Mem, fd: int, iovs: int, count: int, offset: int, out: int) -> int:
        f = self.fds.get(fd)
        if f is None or f.data is None:
            return EBADF
        mem.write(out, struct.pack("<I", self._read_into(mem, f.data[offset:], iovs, count)))
        return SUCCESS

    def fd_seek(self, mem: _Mem, fd: int, offset: int, whence: int, out: int) -> int:
        f = self.fds.get(fd)
        if f is None:
            return ESPIPE if fd in (0, 1, 2) else EBADF
        if f.data is None:
            return EISDIR
        base = {0: 0, 1: f.position, 2: len(f.data)}.get(whence)
        if base is None or base + offset < 0:
            return EINVAL
        f.position = base + offset
        mem.write(out, struct.pack("<Q", f.position))
        return SUCCESS

    def fd_tell(self, mem: _Mem, fd: int, out: int) -> int:
        f = self.fds.get(fd)
        if f is None:
            return EBADF
        mem.write(out, struct.pack("<Q", f.position))
        return SUCCESS

    def fd_filestat_get(self, mem: _Mem, fd: int, out: int) -> int:
        if fd in (0, 1, 2):
            mem.write(out, struct.pack("<QQB7xQQQQQ", 0, 0, CHARACTER_DEVICE, 1, 0, 0, 0, 0))
            return SUCCESS
        f = self.fds.get(fd)
        if f is None:
            return EBADF
        return self._filestat(mem, out, f.host, f.guest)

    def path_filestat_get(self, mem: _Mem, dirfd: int, flags: int, ptr: int, size: int, out: int) -> int:
        resolved = self._resolve(dirfd, mem.read(ptr, size).decode())
        if isinstance(resolved, int):
            return resolved
        return self._filestat(mem, out, *resolved)

    def fd_readdir(self, mem: _Mem, fd: int, buf: int, size: int, cookie: int, out: int) -> int:
        f = self.fds.get(fd)
        if f is None:
            return EBADF
        if f.data is not None:
            return ENOTDIR
        names = [".", "..", *sorted(p.name for p in f.host.iterdir())]
        blob = bytearray()
        for index in range(cookie, len(names)):
            name = names[index].encode()
            child = f.host / names[index]
            kind = DIRECTORY if child.is_dir() else REGULAR_FILE
            blob += struct.pack("<QQIB3x", index + 1, self._ino(f"{f.guest}/{names[index]}"), len(name), kind) + name
            if len(blob) >= size:
                break
        mem.write(buf, bytes(blob[:size]))
        mem.write(out, struct.pack("<I", min(len(blob), size)))
        return SUCCESS

    def fd_write(self, mem: _Mem, fd: int, iovs: int, count: int, out: int) -> int:
        if fd not in (1, 2):
            return EBADF
        total = bytearray()
        for i in range(count):
            buf, length = struct.unpack("<II", mem.read(iovs + 8 * i, 8))
            total += mem.read(buf, length)
        self.output(total.decode(errors="replace"))
        mem.write(out, struct.pack("<I", len(total)))
        return SUCCESS

    def random_get(self, mem: _Mem, ptr: int, size: int) -> int:
        mem.write(ptr, bytes(size))  # fixed "randomness": reproducible snapshots
        return SUCCESS

    def clock_time_get(self, mem: _Mem, clock_id: int, precision: int, out: int) -> int:
        mem.write(out, struct.pack("<Q", 0))
        return SUCCESS

    def define(self, linker: wasmtime.Linker, module: wasmtime.Module) -> None:
        """Define every WASI import of ``module``: ours where we have one, EACCES/ENOSYS otherwise."""
        for imp in module.imports:
            if imp.module != WASI or imp.name is None or not isinstance(imp.type, wasmtime.FuncType):
                continue
            method = getattr(self, imp.name, None)
            if imp.name in ("environ_sizes_get", "args_sizes_get"):
                method = self._empty_sizes
            elif imp.name in ("environ_get", "args_get", "sched_yield"):
                method = self._nothing
            elif imp.name == "proc_exit":
                method = self._exit
            linker.define_func(WASI, imp.name, imp.type, self._bind(imp.name, method), access_caller=True)

    def _empty_sizes(self, mem: _Mem, count_out: int, size_out: int) -> int:
        mem.write(count_out, struct.pack("<I", 0))
        mem.write(size_out, struct.pack("<I", 0))
        return SUCCESS

    def _nothing(self, mem: _Mem, *args: int) -> int:
        return SUCCESS

    def _exit(self, mem: _Mem, code: int) -> None:
        raise RuntimeError(f"the runtime exited with status {code} during initialisation")

    def _bind(self, name: str, method: Callable[..., Any] | None) -> Callable[..., Any]:
        def call(caller: wasmtime.Caller, *args: int) -> Any:
            if method is None:
                return EACCES if name.startswith(("path_", "fd_")) else ENOSYS
            return method(_Mem(caller), *args)

        return call


class _Mem:
    def __init__(self, caller: wasmtime.Caller) -> None:
        self.caller = caller
        memory = caller["memory"]
        assert isinstance(memory, wasmtime.Memory)
        self.memory = memory

    def read(self, ptr: int, size: int) -> bytes:
        return bytes(self.memory.read(self.caller, ptr, ptr + size))

    def write(self, ptr: int, data: bytes) -> None:
        self.memory.write(self.caller, data, ptr)
