"""The cache stays under its size limit (proxywasm_build/compiled.py ``evict``): least recently used
entries go first, a built module with its stats_config, nothing used in the last ten minutes; a
cache hit counts as a use; what caches something new evicts; a bad limit is named on every use;
the files are as readable as the umask allows."""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

import pytest

from proxywasm_build import cli, compiled
from proxywasm_build.cache import build_cached
from proxywasm_build.compiled import CacheLimitError
from proxywasm_host import Host

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "host"))
from guest import probe_wasm

HOUR = 3600.0
MB = 1_000_000


def _file(path: Path, megabytes: float, used_hours_ago: float, now: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * int(megabytes * MB))
    os.utime(path, (now - used_hours_ago * HOUR, now - used_hours_ago * HOUR))
    return path


def test_least_recently_used_entries_go_until_the_cache_fits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXYWASM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PROXYWASM_CACHE_MAX_MB", "3")
    now = time.time()
    oldest = _file(tmp_path / "host" / "aaaa-wasmtime50.0.1-fuel.cwasm", 1, 5, now)
    module = _file(tmp_path / "builds" / "filter-1234.wasm", 1, 4, now)
    stats = _file(tmp_path / "builds" / "filter-1234.stats_config.yaml", 0.01, 3.5, now)  # used after its module
    newer = _file(tmp_path / "snapshot" / "bbbb-wasmtime50.0.1.cwasm", 1, 3.75, now)
    newest = _file(tmp_path / "builds" / "other-5678.wasm", 1, 2, now)
    elsewhere = _file(tmp_path / "not-ours" / "big.bin", 5, 9, now)
    dotted = _file(tmp_path / "builds" / "my.filter-9abc.wasm", 0, 0.5, now)  # an entry of its own,
    dotted_old = _file(tmp_path / "builds" / "my.filter-0000.wasm", 1, 6, now)  # not "my" with this one

    # 5.01 MB in the cache's parts, over 3: the least recently used entries go until it fits. The
    # module counts as used when its stats_config was (3.5 hours ago), after the snapshot's file.
    assert sorted(compiled.evict(now)) == sorted([dotted_old, oldest, newer])
    assert module.exists() and stats.exists() and newest.exists() and elsewhere.exists() and dotted.exists()
    assert compiled.evict(now) == []

    monkeypatch.setenv("PROXYWASM_CACHE_MAX_MB", "1")
    assert sorted(compiled.evict(now)) == sorted([module, stats])  # together
    assert newest.exists()


def test_an_installed_requirements_folder_goes_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXYWASM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PROXYWASM_CACHE_MAX_MB", "1")
    now = time.time()
    old = tmp_path / "requirements" / "aaaa"
    files = [_file(old / "pkg" / "__init__.py", 0.5, 3, now), _file(old / ".proxywasm-installed", 0, 3, now)]
    recent = _file(tmp_path / "requirements" / "bbbb" / "dep.py", 0.6, 0.01, now)  # minutes ago
    _file(tmp_path / "requirements" / "bbbb" / "old.py", 0.5, 5, now)  # an old file of a recent install
    assert sorted(compiled.evict(now)) == sorted(files)
    assert not old.exists() and recent.exists() and (recent.parent / "old.py").exists()


def test_files_used_in_the_last_ten_minutes_stay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXYWASM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PROXYWASM_CACHE_MAX_MB", "0")
    now = time.time()
    old = _file(tmp_path / "host" / "old.cwasm", 1, 1, now)
    recent = _file(tmp_path / "host" / "recent.cwasm", 1, (compiled.IN_USE_S - 60) / HOUR, now)
    assert compiled.evict(now) == [old]
    assert recent.exists()


FILTER = """
import proxywasm
from proxywasm import HttpContext


@proxywasm.register
class Hello(HttpContext):
    pass
"""


def test_a_cache_hit_is_a_use_and_files_are_readable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXYWASM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PROXYWASM_COMPILED_CACHE", raising=False)  # the snapshot's artefact is looked at
    source = tmp_path / "hello.py"
    source.write_text(FILTER)
    out = build_cached(source)
    (artefact,) = (tmp_path / "cache" / "snapshot").glob("*.cwasm")  # the compiled runtime the build ran
    for written in (out, artefact):
        mode = stat.S_IMODE(written.stat().st_mode)
        umask = os.umask(0o022)
        os.umask(umask)
        assert mode == 0o666 & ~umask
        if not umask & 0o044:  # as here (umask 022): readable by all, not mkstemp's 0600
            assert mode & 0o044 == 0o044
    long_ago = time.time() - 5 * HOUR
    os.utime(out, (long_ago, long_ago))
    assert build_cached(source) == out
    assert out.stat().st_mtime > long_ago + HOUR


def test_what_caches_something_new_evicts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXYWASM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PROXYWASM_COMPILED_CACHE", raising=False)
    monkeypatch.setenv("PROXYWASM_CACHE_MAX_MB", "0")
    now = time.time()
    stale = [_file(tmp_path / "cache" / part / f"old-{part}.bin", 0.1, 1, now) for part in compiled.PARTS]
    source = tmp_path / "hello.py"
    source.write_text(FILTER)
    build_cached(source)  # a new build (and the runtime's artefact for the snapshot): both evict
    assert not any(path.exists() for path in stale)
    old = _file(tmp_path / "cache" / "host" / "old.cwasm", 0.1, 1, now)
    Host.load(probe_wasm())  # a new host artefact
    assert not old.exists()


def test_a_bad_limit_is_named_on_every_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXYWASM_CACHE_DIR", str(tmp_path / "cache"))
    source = tmp_path / "hello.py"
    source.write_text(FILTER)
    build_cached(source)
    Host.load(probe_wasm())
    monkeypatch.setenv("PROXYWASM_CACHE_MAX_MB", "2G")
    message = "PROXYWASM_CACHE_MAX_MB must be a whole number of megabytes, not '2G'"
    for use in (lambda: build_cached(source), lambda: Host.load(probe_wasm())):  # cache hits, memo hits
        with pytest.raises(CacheLimitError, match=message):
            use()


def test_the_command_names_a_bad_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PROXYWASM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PROXYWASM_CACHE_MAX_MB", "-1")
    source = tmp_path / "hello.py"
    source.write_text(FILTER)
    assert cli.main(["build", str(source), "-o", str(tmp_path / "hello.wasm")]) == 1
    assert "error: PROXYWASM_CACHE_MAX_MB must be a whole number of megabytes, not '-1'" in capsys.readouterr().err
