"""The WASI subset Envoy links (cpp-host ``exports.cc``): stdout/stderr to logs, env from vm_config,
clocks, random; no filesystem. Registered under both ``wasi_snapshot_preview1`` and ``wasi_unstable``."""

from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING

from . import hostcall

if TYPE_CHECKING:
    from ..vm import Vm

ESUCCESS, EBADF, EFAULT, EINVAL, ENOTDIR, ENOENT, ENOSYS, ENOTSUP = 0, 8, 21, 28, 20, 44, 52, 58
_RANDOM_MAX = 64 * 1024


@hostcall("fd_write", "iiii", module="wasi")
def fd_write(vm: Vm, fd: int, iovs: int, iovs_len: int, nwritten_ptr: int) -> int:
    if fd not in (1, 2):
        return EBADF
    chunks = []
    for i in range(iovs_len):
        iov = vm.mem.read(iovs + 8 * i, 8)
        if iov is None:
            return EFAULT
        buf, buf_len = struct.unpack("<II", iov)
        if buf_len:
            data = vm.mem.read(buf, buf_len)
            if data is None:
                return EFAULT
            chunks.append(data)
    text = b"".join(chunks)
    if text:
        message = text[:-1] if text.endswith(b"\n") else text
        vm.log(2 if fd == 1 else 4, message.decode("utf-8", "replace"))
    if not vm.mem.write_u32(nwritten_ptr, len(text)):
        return EFAULT
    return ESUCCESS


@hostcall("fd_read", "iiii", module="wasi")
def fd_read(vm: Vm, fd: int, iovs: int, iovs_len: int, nread_ptr: int) -> int:
    return ENOSYS


@hostcall("fd_seek", "iIii", module="wasi")
def fd_seek(vm: Vm, fd: int, offset: int, whence: int, newoffset_ptr: int) -> int:
    return ESUCCESS  # Envoy only logs "wasi_unstable fd_seek" at trace level


@hostcall("fd_close", "i", module="wasi")
def fd_close(vm: Vm, fd: int) -> int:
    return ESUCCESS


@hostcall("fd_fdstat_get", "ii", module="wasi")
def fd_fdstat_get(vm: Vm, fd: int, stat_ptr: int) -> int:
    if fd not in (1, 2):
        return EBADF
    # filetype/flags zero, rights_base = FD_WRITE; Envoy ignores a failed write here.
    vm.mem.write(stat_ptr, struct.pack("<QQQ", 0, 64, 0))
    return ESUCCESS


@hostcall("fd_fdstat_set_flags", "ii", module="wasi")
def fd_fdstat_set_flags(vm: Vm, fd: int, flags: int) -> int:
    return ENOSYS


def _std_only(fd: int) -> int:
    return ESUCCESS if fd in (1, 2) else EBADF


@hostcall("fd_fdstat_set_rights", "iII", module="wasi")
def fd_fdstat_set_rights(vm: Vm, fd: int, base: int, inheriting: int) -> int:
    return _std_only(fd)


@hostcall("fd_advise", "iIIi", module="wasi")
def fd_advise(vm: Vm, fd: int, offset: int, length: int, advice: int) -> int:
    return _std_only(fd)


@hostcall("fd_allocate", "iII", module="wasi")
def fd_allocate(vm: Vm, fd: int, offset: int, length: int) -> int:
    return _std_only(fd)


@hostcall("fd_datasync", "i", module="wasi")
def fd_datasync(vm: Vm, fd: int) -> int:
    return _std_only(fd)


@hostcall("fd_sync", "i", module="wasi")
def fd_sync(vm: Vm, fd: int) -> int:
    return _std_only(fd)


@hostcall("fd_filestat_set_size", "iI", module="wasi")
def fd_filestat_set_size(vm: Vm, fd: int, size: int) -> int:
    return _std_only(fd)


@hostcall("fd_filestat_set_times", "iIIi", module="wasi")
def fd_filestat_set_times(vm: Vm, fd: int, atim: int, mtim: int, flags: int) -> int:
    return _std_only(fd)


@hostcall("fd_filestat_get", "ii", module="wasi")
def fd_filestat_get(vm: Vm, fd: int, buf: int) -> int:
    return EBADF


@hostcall("fd_pread", "iiiIi", module="wasi")
def fd_pread(vm: Vm, fd: int, iovs: int, iovs_len: int, offset: int, nread_ptr: int) -> int:
    return ENOSYS


@hostcall("fd_pwrite", "iiiIi", module="wasi")
def fd_pwrite(vm: Vm, fd: int, iovs: int, iovs_len: int, offset: int, nwritten_ptr: int) -> int:
    # Same as fd_write for stdout/stderr; the offset is meaningless for a log.
    return fd_write(vm, fd, iovs, iovs_len, nwritten_ptr)


@hostcall("fd_readdir", "iiiIi", module="wasi")
def fd_readdir(vm: Vm, fd: int, buf: int, buf_len: int, cookie: int, used_ptr: int) -> int:
    if not vm.mem.write_u32(used_ptr, 0):
        return EFAULT
    return ENOTDIR


@hostcall("fd_renumber", "ii", module="wasi")
def fd_renumber(vm: Vm, fd: int, to: int) -> int:
    return ENOTSUP if fd in (1, 2) and to in (1, 2) else EBADF


@hostcall("fd_tell", "ii", module="wasi")
def fd_tell(vm: Vm, fd: int, offset_ptr: int) -> int:
    if fd not in (1, 2):
        return EBADF
    return ESUCCESS if vm.mem.write_u64(offset_ptr, 0) else EFAULT


@hostcall("fd_prestat_get", "ii", module="wasi")
def fd_prestat_get(vm: Vm, fd: int, buf: int) -> int:
    return EBADF  # no preopened directories


@hostcall("fd_prestat_dir_name", "iii", module="wasi")
def fd_prestat_dir_name(vm: Vm, fd: int, path: int, path_len: int) -> int:
    return ENOSYS


@hostcall("path_open", "iiiiiIIii", module="wasi")
def path_open(vm: Vm, fd: int, dirflags: int, path: int, path_len: int, oflags: int, base: int, inh: int,
              fdflags: int, fd_ptr: int) -> int:  # fmt: skip
    return ENOENT


@hostcall("path_filestat_get", "iiiii", module="wasi")
def path_filestat_get(vm: Vm, fd: int, flags: int, path: int, path_len: int, buf: int) -> int:
    return ENOTSUP


@hostcall("path_create_directory", "iii", module="wasi")
def path_create_directory(vm: Vm, fd: int, path: int, path_len: int) -> int:
    return ENOTSUP


@hostcall("path_filestat_set_times", "iiiiIIi", module="wasi")
def path_filestat_set_times(vm: Vm, fd: int, flags: int, path: int, path_len: int, atim: int, mtim: int,
                            fst: int) -> int:  # fmt: skip
    return ENOTSUP


# Envoy 1.40 declares these two with one parameter too few (real WASI: 7 and 5), so a module
# importing them with the WASI signature fails to link, exactly as in Envoy.
@hostcall("path_link", "iiiiii", module="wasi")
def path_link(vm: Vm, a: int, b: int, c: int, d: int, e: int, f: int) -> int:
    return ENOTSUP


@hostcall("path_symlink", "iiii", module="wasi")
def path_symlink(vm: Vm, a: int, b: int, c: int, d: int) -> int:
    return ENOTSUP


@hostcall("path_readlink", "iiiiii", module="wasi")
def path_readlink(vm: Vm, fd: int, path: int, path_len: int, buf: int, buf_len: int, used_ptr: int) -> int:
    if not vm.mem.write_u32(used_ptr, 0):
        return EFAULT
    return ENOTSUP


@hostcall("path_remove_directory", "iii", module="wasi")
def path_remove_directory(vm: Vm, fd: int, path: int, path_len: int) -> int:
    return ENOTSUP


@hostcall("path_rename", "iiiiii", module="wasi")
def path_rename(vm: Vm, fd: int, op: int, ol: int, nfd: int, np_: int, nl: int) -> int:
    return ENOTSUP


@hostcall("path_unlink_file", "iii", module="wasi")
def path_unlink_file(vm: Vm, fd: int, path: int, path_len: int) -> int:
    return ENOTSUP


@hostcall("sock_accept", "iii", module="wasi")
def sock_accept(vm: Vm, fd: int, flags: int, fd_ptr: int) -> int:
    return ENOTSUP if vm.mem.write_u32(fd_ptr, 0) else EFAULT


@hostcall("sock_recv", "iiiiii", module="wasi")
def sock_recv(vm: Vm, fd: int, data: int, data_len: int, flags: int, size_ptr: int, oflags_ptr: int) -> int:
    if not (vm.mem.write_u32(size_ptr, 0) and vm.mem.write_u32(oflags_ptr, 0)):
        return EFAULT
    return ENOTSUP


@hostcall("sock_send", "iiiii", module="wasi")
def sock_send(vm: Vm, fd: int, data: int, data_len: int, flags: int, size_ptr: int) -> int:
    return ENOTSUP if vm.mem.write_u32(size_ptr, 0) else EFAULT


@hostcall("sock_shutdown", "ii", module="wasi")
def sock_shutdown(vm: Vm, fd: int, how: int) -> int:
    return ENOTSUP


def _environ(vm: Vm) -> list[bytes]:
    return [f"{k}={v}".encode() + b"\0" for k, v in vm.env.items()]


@hostcall("environ_sizes_get", "ii", module="wasi")
def environ_sizes_get(vm: Vm, count_ptr: int, size_ptr: int) -> int:
    entries = _environ(vm)
    if not vm.mem.write_u32(count_ptr, len(entries)):
        return EFAULT
    if not vm.mem.write_u32(size_ptr, sum(len(e) for e in entries)):
        return EFAULT
    return ESUCCESS


@hostcall("environ_get", "ii", module="wasi")
def environ_get(vm: Vm, array_ptr: int, buf_ptr: int) -> int:
    for entry in _environ(vm):
        if not vm.mem.write_u32(array_ptr, buf_ptr) or not vm.mem.write(buf_ptr, entry):
            return EFAULT
        buf_ptr += len(entry)
        array_ptr += 4
    return ESUCCESS


@hostcall("args_sizes_get", "ii", module="wasi")
def args_sizes_get(vm: Vm, argc_ptr: int, size_ptr: int) -> int:
    if not (vm.mem.write_u32(argc_ptr, 0) and vm.mem.write_u32(size_ptr, 0)):
        return EFAULT
    return ESUCCESS


@hostcall("args_get", "ii", module="wasi")
def args_get(vm: Vm, argv: int, argv_buf: int) -> int:
    return ESUCCESS


@hostcall("clock_time_get", "iIi", module="wasi")
def clock_time_get(vm: Vm, clock_id: int, precision: int, result_ptr: int) -> int:
    if clock_id == 0:
        value = vm.envoy.time_ns
    elif clock_id == 1:
        value = vm.envoy.monotonic_ns
    else:
        return ENOTSUP
    return ESUCCESS if vm.mem.write_u64(result_ptr, value) else EFAULT


@hostcall("clock_res_get", "ii", module="wasi")
def clock_res_get(vm: Vm, clock_id: int, result_ptr: int) -> int:
    if clock_id not in (0, 1):
        return ENOTSUP
    return ESUCCESS if vm.mem.write_u64(result_ptr, 1) else EFAULT


@hostcall("random_get", "ii", module="wasi")
def random_get(vm: Vm, buf: int, buf_len: int) -> int:
    if buf_len > _RANDOM_MAX:
        return EINVAL
    if buf_len == 0:
        return ESUCCESS
    return ESUCCESS if vm.mem.write(buf, os.urandom(buf_len)) else EFAULT


@hostcall("sched_yield", "", module="wasi")
def sched_yield(vm: Vm) -> int:
    return ESUCCESS


@hostcall("poll_oneoff", "iiii", module="wasi")
def poll_oneoff(vm: Vm, in_ptr: int, out_ptr: int, nsubs: int, nevents_ptr: int) -> int:
    # Go's runtime needs success here (cpp-host #497); nothing is ever ready.
    return ESUCCESS if vm.mem.write_u32(nevents_ptr, 0) else EFAULT


@hostcall("proc_exit", "i", "", module="wasi")
def proc_exit(vm: Vm, code: int) -> None:
    # Envoy only records the call; the guest's own code usually traps right after.
    vm.log(0, f"wasi proc_exit({code})", internal=True)
