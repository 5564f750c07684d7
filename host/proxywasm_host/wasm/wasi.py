"""The WASI subset Envoy links (cpp-host ``exports.cc``): stdout/stderr to logs, env from vm_config,
clocks, random; no filesystem. Registered under both ``wasi_snapshot_preview1`` and ``wasi_unstable``."""

from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING

from ..errors import hide_host_frames
from .imports import host_function

__tracebackhide__ = hide_host_frames  # pytest leaves these frames out for the filter's errors

if TYPE_CHECKING:
    from .guest import WasmGuest

ESUCCESS, EBADF, EFAULT, EINVAL, ENOTDIR, ENOENT, ENOSYS, ENOTSUP = 0, 8, 21, 28, 20, 44, 52, 58
_RANDOM_MAX = 64 * 1024


@host_function("fd_write", "iiii", module="wasi")
def fd_write(g: WasmGuest, fd: int, iovs: int, iovs_len: int, nwritten_ptr: int) -> int:
    if fd not in (1, 2):
        return EBADF
    chunks = []
    for i in range(iovs_len):
        iov = g.mem.read(iovs + 8 * i, 8)
        if iov is None:
            return EFAULT
        buf, buf_len = struct.unpack("<II", iov)
        if buf_len:
            data = g.mem.read(buf, buf_len)
            if data is None:
                return EFAULT
            chunks.append(data)
    text = b"".join(chunks)
    if text:
        message = text[:-1] if text.endswith(b"\n") else text
        g.vm.log(2 if fd == 1 else 4, message.decode("utf-8", "replace"))
    if not g.mem.write_u32(nwritten_ptr, len(text)):
        return EFAULT
    return ESUCCESS


@host_function("fd_read", "iiii", module="wasi")
def fd_read(g: WasmGuest, fd: int, iovs: int, iovs_len: int, nread_ptr: int) -> int:
    return ENOSYS


@host_function("fd_seek", "iIii", module="wasi")
def fd_seek(g: WasmGuest, fd: int, offset: int, whence: int, newoffset_ptr: int) -> int:
    return ESUCCESS  # Envoy only logs "wasi_unstable fd_seek" at trace level


@host_function("fd_close", "i", module="wasi")
def fd_close(g: WasmGuest, fd: int) -> int:
    return ESUCCESS


@host_function("fd_fdstat_get", "ii", module="wasi")
def fd_fdstat_get(g: WasmGuest, fd: int, stat_ptr: int) -> int:
    if fd not in (1, 2):
        return EBADF
    # filetype/flags zero, rights_base = FD_WRITE; Envoy ignores a failed write here.
    g.mem.write(stat_ptr, struct.pack("<QQQ", 0, 64, 0))
    return ESUCCESS


@host_function("fd_fdstat_set_flags", "ii", module="wasi")
def fd_fdstat_set_flags(g: WasmGuest, fd: int, flags: int) -> int:
    return ENOSYS


def _std_only(fd: int) -> int:
    return ESUCCESS if fd in (1, 2) else EBADF


@host_function("fd_fdstat_set_rights", "iII", module="wasi")
def fd_fdstat_set_rights(g: WasmGuest, fd: int, base: int, inheriting: int) -> int:
    return _std_only(fd)


@host_function("fd_advise", "iIIi", module="wasi")
def fd_advise(g: WasmGuest, fd: int, offset: int, length: int, advice: int) -> int:
    return _std_only(fd)


@host_function("fd_allocate", "iII", module="wasi")
def fd_allocate(g: WasmGuest, fd: int, offset: int, length: int) -> int:
    return _std_only(fd)


@host_function("fd_datasync", "i", module="wasi")
def fd_datasync(g: WasmGuest, fd: int) -> int:
    return _std_only(fd)


@host_function("fd_sync", "i", module="wasi")
def fd_sync(g: WasmGuest, fd: int) -> int:
    return _std_only(fd)


@host_function("fd_filestat_set_size", "iI", module="wasi")
def fd_filestat_set_size(g: WasmGuest, fd: int, size: int) -> int:
    return _std_only(fd)


@host_function("fd_filestat_set_times", "iIIi", module="wasi")
def fd_filestat_set_times(g: WasmGuest, fd: int, atim: int, mtim: int, flags: int) -> int:
    return _std_only(fd)


@host_function("fd_filestat_get", "ii", module="wasi")
def fd_filestat_get(g: WasmGuest, fd: int, buf: int) -> int:
    return EBADF


@host_function("fd_pread", "iiiIi", module="wasi")
def fd_pread(g: WasmGuest, fd: int, iovs: int, iovs_len: int, offset: int, nread_ptr: int) -> int:
    return ENOSYS


@host_function("fd_pwrite", "iiiIi", module="wasi")
def fd_pwrite(g: WasmGuest, fd: int, iovs: int, iovs_len: int, offset: int, nwritten_ptr: int) -> int:
    # Same as fd_write for stdout/stderr; the offset is meaningless for a log.
    return fd_write(g, fd, iovs, iovs_len, nwritten_ptr)


@host_function("fd_readdir", "iiiIi", module="wasi")
def fd_readdir(g: WasmGuest, fd: int, buf: int, buf_len: int, cookie: int, used_ptr: int) -> int:
    if not g.mem.write_u32(used_ptr, 0):
        return EFAULT
    return ENOTDIR


@host_function("fd_renumber", "ii", module="wasi")
def fd_renumber(g: WasmGuest, fd: int, to: int) -> int:
    return ENOTSUP if fd in (1, 2) and to in (1, 2) else EBADF


@host_function("fd_tell", "ii", module="wasi")
def fd_tell(g: WasmGuest, fd: int, offset_ptr: int) -> int:
    if fd not in (1, 2):
        return EBADF
    return ESUCCESS if g.mem.write_u64(offset_ptr, 0) else EFAULT


@host_function("fd_prestat_get", "ii", module="wasi")
def fd_prestat_get(g: WasmGuest, fd: int, buf: int) -> int:
    return EBADF  # no preopened directories


@host_function("fd_prestat_dir_name", "iii", module="wasi")
def fd_prestat_dir_name(g: WasmGuest, fd: int, path: int, path_len: int) -> int:
    return ENOSYS


@host_function("path_open", "iiiiiIIii", module="wasi")
def path_open(g: WasmGuest, fd: int, dirflags: int, path: int, path_len: int, oflags: int, base: int, inh: int,
              fdflags: int, fd_ptr: int) -> int:  # fmt: skip
    return ENOENT


@host_function("path_filestat_get", "iiiii", module="wasi")
def path_filestat_get(g: WasmGuest, fd: int, flags: int, path: int, path_len: int, buf: int) -> int:
    return ENOTSUP


@host_function("path_create_directory", "iii", module="wasi")
def path_create_directory(g: WasmGuest, fd: int, path: int, path_len: int) -> int:
    return ENOTSUP


@host_function("path_filestat_set_times", "iiiiIIi", module="wasi")
def path_filestat_set_times(g: WasmGuest, fd: int, flags: int, path: int, path_len: int, atim: int, mtim: int,
                            fst: int) -> int:  # fmt: skip
    return ENOTSUP


# Envoy 1.40 declares these two with one parameter too few (real WASI: 7 and 5), so a module
# importing them with the WASI signature fails to link, exactly as in Envoy.
@host_function("path_link", "iiiiii", module="wasi")
def path_link(g: WasmGuest, a: int, b: int, c: int, d: int, e: int, f: int) -> int:
    return ENOTSUP


@host_function("path_symlink", "iiii", module="wasi")
def path_symlink(g: WasmGuest, a: int, b: int, c: int, d: int) -> int:
    return ENOTSUP


@host_function("path_readlink", "iiiiii", module="wasi")
def path_readlink(g: WasmGuest, fd: int, path: int, path_len: int, buf: int, buf_len: int, used_ptr: int) -> int:
    if not g.mem.write_u32(used_ptr, 0):
        return EFAULT
    return ENOTSUP


@host_function("path_remove_directory", "iii", module="wasi")
def path_remove_directory(g: WasmGuest, fd: int, path: int, path_len: int) -> int:
    return ENOTSUP


@host_function("path_rename", "iiiiii", module="wasi")
def path_rename(g: WasmGuest, fd: int, op: int, ol: int, nfd: int, np_: int, nl: int) -> int:
    return ENOTSUP


@host_function("path_unlink_file", "iii", module="wasi")
def path_unlink_file(g: WasmGuest, fd: int, path: int, path_len: int) -> int:
    return ENOTSUP


@host_function("sock_accept", "iii", module="wasi")
def sock_accept(g: WasmGuest, fd: int, flags: int, fd_ptr: int) -> int:
    return ENOTSUP if g.mem.write_u32(fd_ptr, 0) else EFAULT


@host_function("sock_recv", "iiiiii", module="wasi")
def sock_recv(g: WasmGuest, fd: int, data: int, data_len: int, flags: int, size_ptr: int, oflags_ptr: int) -> int:
    if not (g.mem.write_u32(size_ptr, 0) and g.mem.write_u32(oflags_ptr, 0)):
        return EFAULT
    return ENOTSUP


@host_function("sock_send", "iiiii", module="wasi")
def sock_send(g: WasmGuest, fd: int, data: int, data_len: int, flags: int, size_ptr: int) -> int:
    return ENOTSUP if g.mem.write_u32(size_ptr, 0) else EFAULT


@host_function("sock_shutdown", "ii", module="wasi")
def sock_shutdown(g: WasmGuest, fd: int, how: int) -> int:
    return ENOTSUP


def _environ(g: WasmGuest) -> list[bytes]:
    return [f"{k}={v}".encode() + b"\0" for k, v in g.vm.env.items()]


@host_function("environ_sizes_get", "ii", module="wasi")
def environ_sizes_get(g: WasmGuest, count_ptr: int, size_ptr: int) -> int:
    entries = _environ(g)
    if not g.mem.write_u32(count_ptr, len(entries)):
        return EFAULT
    if not g.mem.write_u32(size_ptr, sum(len(e) for e in entries)):
        return EFAULT
    return ESUCCESS


@host_function("environ_get", "ii", module="wasi")
def environ_get(g: WasmGuest, array_ptr: int, buf_ptr: int) -> int:
    for entry in _environ(g):
        if not g.mem.write_u32(array_ptr, buf_ptr) or not g.mem.write(buf_ptr, entry):
            return EFAULT
        buf_ptr += len(entry)
        array_ptr += 4
    return ESUCCESS


@host_function("args_sizes_get", "ii", module="wasi")
def args_sizes_get(g: WasmGuest, argc_ptr: int, size_ptr: int) -> int:
    if not (g.mem.write_u32(argc_ptr, 0) and g.mem.write_u32(size_ptr, 0)):
        return EFAULT
    return ESUCCESS


@host_function("args_get", "ii", module="wasi")
def args_get(g: WasmGuest, argv: int, argv_buf: int) -> int:
    return ESUCCESS


@host_function("clock_time_get", "iIi", module="wasi")
def clock_time_get(g: WasmGuest, clock_id: int, precision: int, result_ptr: int) -> int:
    if clock_id == 0:
        value = g.vm.envoy.time_ns + g.cpu_ns()
    elif clock_id == 1:
        value = g.vm.envoy.monotonic_ns + g.cpu_ns()
    else:
        return ENOTSUP
    return ESUCCESS if g.mem.write_u64(result_ptr, value) else EFAULT


@host_function("clock_res_get", "ii", module="wasi")
def clock_res_get(g: WasmGuest, clock_id: int, result_ptr: int) -> int:
    if clock_id not in (0, 1):
        return ENOTSUP
    return ESUCCESS if g.mem.write_u64(result_ptr, 1) else EFAULT


@host_function("random_get", "ii", module="wasi")
def random_get(g: WasmGuest, buf: int, buf_len: int) -> int:
    if buf_len > _RANDOM_MAX:
        return EINVAL
    if buf_len == 0:
        return ESUCCESS
    return ESUCCESS if g.mem.write(buf, os.urandom(buf_len)) else EFAULT


@host_function("sched_yield", "", module="wasi")
def sched_yield(g: WasmGuest) -> int:
    return ESUCCESS


@host_function("poll_oneoff", "iiii", module="wasi")
def poll_oneoff(g: WasmGuest, in_ptr: int, out_ptr: int, nsubs: int, nevents_ptr: int) -> int:
    # Go's runtime needs success here (cpp-host #497); nothing is ever ready.
    return ESUCCESS if g.mem.write_u32(nevents_ptr, 0) else EFAULT


@host_function("proc_exit", "i", "", module="wasi")
def proc_exit(g: WasmGuest, code: int) -> None:
    # Envoy only records the call; the guest's own code usually traps right after.
    g.vm.log(0, f"wasi proc_exit({code})", internal=True)
