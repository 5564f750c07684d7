"""Loading: import checks with Envoy's wording, ABI versions, the compiled-module cache, WASI."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import wasmtime
from guest import probe_wasm
from host_support import Probe

from proxywasm_host import Host, LoadError
from proxywasm_host.wasm import module as cache

MINIMAL = """(module
  {imports}
  (memory (export "memory") 1)
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  {body})"""


def _module(imports: str = "", body: str = "") -> bytes:
    return bytes(wasmtime.wat2wasm(MINIMAL.format(imports=imports, body=body)))


def test_missing_import_is_named() -> None:
    code = _module('(import "env" "proxy_does_not_exist" (func (param i32) (result i32)))')
    with pytest.raises(
        LoadError, match=r"Failed to load Wasm module due to a missing import: env\.proxy_does_not_exist"
    ):
        Host.load(code)


def test_wasi_path_link_with_real_signature_fails_like_envoy() -> None:
    imp = '(import "wasi_snapshot_preview1" "path_link" (func (param i32 i32 i32 i32 i32 i32 i32) (result i32)))'
    with pytest.raises(LoadError, match="import type mismatch: wasi_snapshot_preview1.path_link"):
        Host.load(_module(imp))


def test_get_log_level_is_not_offered_to_0_2_0_modules() -> None:
    code = bytes(
        wasmtime.wat2wasm(
            MINIMAL.format(
                imports='(import "env" "proxy_get_log_level" (func (param i32) (result i32)))', body=""
            ).replace("proxy_abi_version_0_2_1", "proxy_abi_version_0_2_0")
        )
    )
    with pytest.raises(LoadError, match="missing import: env.proxy_get_log_level"):
        Host.load(code)


def test_no_abi_version_export() -> None:
    code = bytes(wasmtime.wat2wasm(MINIMAL.format(imports="", body="").replace("proxy_abi_version_0_2_1", "x")))
    with pytest.raises(LoadError, match="ABI version"):
        Host.load(code)


def test_no_malloc() -> None:
    code = bytes(wasmtime.wat2wasm(MINIMAL.format(imports="", body="").replace('"malloc"', '"other"')))
    with pytest.raises(LoadError, match="missing malloc"):
        Host.load(code)


def test_garbage_bytes() -> None:
    with pytest.raises(LoadError):
        Host.load(b"\0asm garbage")


def test_abi_0_2_0_probe_runs_a_request(load_probe: Callable[..., Probe]) -> None:
    p = load_probe("0_2_0")
    assert p.host.raw.abi_version == "0_2_0"
    assert p.host.request("GET", "/").status == 200


def test_abi_0_1_0_legacy_imports(load_probe: Callable[..., Probe]) -> None:
    p = load_probe("0_1_0", plugin_config=b"cfg")
    assert p.call_out("proxy_get_configuration")[1] == b""  # outside on_configure: the VM config
    assert p.call("proxy_clear_route_cache") == 0


def test_compiled_module_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXYWASM_CACHE_DIR", str(tmp_path))
    code = probe_wasm()
    Host.load(code)
    files = list((tmp_path / "host").glob("*.cwasm"))
    assert len(files) == 1 and "wasmtime" in files[0].name
    cache.forget()  # as in a new process: from the artefact on disk

    def no_compiling(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached artefact should have been used, not a fresh compile")

    with monkeypatch.context() as patch:
        patch.setattr(wasmtime.Module, "__init__", no_compiling)
        Host.load(code)

    # A broken artefact is recompiled, not fatal. Replace it as a new file: loaded modules keep the
    # old one mapped (truncating a mapped artefact in place would SIGBUS, which is why the cache
    # itself only ever writes with an atomic rename).
    broken = tmp_path / "broken"
    broken.write_bytes(b"corrupt")
    broken.replace(files[0])
    cache.forget()
    Host.load(code)
    assert files[0].read_bytes() != b"corrupt"


def test_known_file_is_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXYWASM_CACHE_DIR", str(tmp_path / "cache"))
    wasm = tmp_path / "probe.wasm"
    wasm.write_bytes(probe_wasm())
    Host.load(wasm)
    calls: list[int] = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: calls.append(1) or real(self))
    Host.load(wasm)
    assert calls == []  # known in this process by its path, size and mtime
    wasm.write_bytes(probe_wasm(extra='(func (export "changed"))'))
    Host.load(wasm)
    assert calls == [1]  # a changed file is read again


def test_wasi_fd_write_goes_to_logs(probe: Probe) -> None:
    text = probe.put("hello stdout\n")
    iov = probe.put(struct.pack("<II", *text))
    nw = probe.slot()
    assert probe.call("fd_write", 1, iov[0], 1, nw) == 0
    assert probe.u32_at(nw) == 13
    assert probe.host.logs[-1] == (2, "hello stdout")
    assert probe.call("fd_write", 2, iov[0], 1, nw) == 0
    assert probe.host.logs[-1] == (4, "hello stdout")
    assert probe.call("fd_write", 3, iov[0], 1, nw) == 8  # EBADF
    assert probe.call("fd_write", 1, 0xFFFFFFF0, 1, nw) == 21  # EFAULT


def test_wasi_no_filesystem(probe: Probe) -> None:
    slot = probe.slot()
    assert probe.call("fd_prestat_get", 3, slot) == 8
    assert probe.call("path_open", 3, 0, *probe.put("x"), 0, 0, 0, 0, slot) == 44
    assert probe.call("fd_read", 0, slot, 0, slot) == 52


def test_wasi_environ_from_vm_config(load_probe: Callable[..., Probe]) -> None:
    p = load_probe(env={"A": "1", "BB": "two"})
    count, size = p.slot(), p.slot()
    assert p.call("environ_sizes_get", count, size) == 0
    assert (p.u32_at(count), p.u32_at(size)) == (2, len("A=1\0BB=two\0"))
    array, buf = p.put(b"\0" * 8)[0], p.put(b"\0" * 16)[0]
    assert p.call("environ_get", array, buf) == 0
    assert p.mem.read(buf, 11) == b"A=1\0BB=two\0"
    assert p.u32_at(array + 4) == buf + 4


def test_wasi_clock_and_random(probe: Probe) -> None:
    slot = probe.put(b"\0" * 8)[0]
    assert probe.call("clock_time_get", 0, 1, slot) == 0
    # Envoy's clock plus the virtual CPU time the guest has burnt (fuel): a few microseconds here
    ahead = struct.unpack("<Q", probe.mem.read(slot, 8) or b"")[0] - probe.host.envoy.time_ns
    assert 0 <= ahead <= probe.host.raw.cpu_ns() < 1_000_000
    assert probe.call("clock_time_get", 2, 1, slot) == 58  # cputime clocks: ENOTSUP
    buf = probe.put(b"\0" * 32)[0]
    assert probe.call("random_get", buf, 32) == 0
    assert probe.mem.read(buf, 32) != b"\0" * 32
    assert probe.call("random_get", buf, 65537) == 28  # EINVAL above 64 KiB


def test_exported_globals_are_read_through_raw_access() -> None:
    body = """(global $n (export "counter") (mut i32) (i32.const 41))
  (global (export "pi") f64 (f64.const 3.5))
  (func (export "bump") (global.set $n (i32.add (global.get $n) (i32.const 1))))"""
    host = Host.load(_module(body=body))
    assert sorted(host.raw.global_names()) == ["counter", "pi"]
    assert (host.raw.global_value("counter"), host.raw.global_value("pi")) == (41, 3.5)
    host.raw.call("bump")
    assert host.raw.global_value("counter") == 42
    with pytest.raises(KeyError):
        host.raw.global_value("missing")
