"""`proxywasm run --watch` as a user runs it: a real subprocess serving a filter through real Envoy,
edited while a bounded load loop runs on 127.0.0.1.

One Envoy start covers the whole story: a good edit swaps in with zero failed requests, a syntax
error and an ``on_configure`` that raises are reported while the previous filter keeps serving,
a fixed edit swaps in again, and SIGTERM stops everything (Envoy included) cleanly.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path

import pytest

FILTER = """
import proxywasm
from proxywasm import HttpContext


@proxywasm.register
class Version(HttpContext):
    def on_response_headers(self, headers, end_of_stream):
        headers["x-version"] = "{version}"
"""

SYNTAX_ERROR = FILTER.replace('"{version}"', '"broken') + "\n"

CONFIGURE_FAILS = """
import proxywasm
from proxywasm import HttpContext, PluginContext


class Version(HttpContext):
    def on_response_headers(self, headers, end_of_stream):
        headers["x-version"] = "never-served"


@proxywasm.register
class Plugin(PluginContext):
    http_context = Version

    def on_configure(self, configuration):
        raise RuntimeError("configure exploded on purpose")
"""

THREADS = 3
MAX_REQUESTS_PER_THREAD = 20_000
MAX_LOAD_SECONDS = 240.0


class RunOutput:
    """Lines printed by `proxywasm run` (stdout and stderr), collected by a reader thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def text(self, start: int = 0) -> str:
        with self._cond:
            return "\n".join(self.lines[start:])

    def wait_for(self, pattern: str, start: int, timeout: float) -> tuple[int, re.Match[str]]:
        """First line at index >= start matching `pattern`; fails with the output so far."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index in range(start, len(self.lines)):
                    match = regex.search(self.lines[index])
                    if match:
                        return index, match
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"{pattern!r} not printed within {timeout}s; output:\n" + "\n".join(self.lines))
                self._cond.wait(remaining)


class Load:
    """A few threads sending GET / on keep-alive connections; every response is recorded.

    Bounded by request count and time. A failure is anything but a complete 200 response.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.responses: list[list[str | None]] = [[] for _ in range(THREADS)]
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(THREADS)]

    def _loop(self, index: int) -> None:
        deadline = time.monotonic() + MAX_LOAD_SECONDS
        conn = HTTPConnection("127.0.0.1", self.port, timeout=10)
        mine = self.responses[index]
        while not self.stop.is_set() and len(mine) < MAX_REQUESTS_PER_THREAD and time.monotonic() < deadline:
            try:
                conn.request("GET", f"/load/{index}")
                response = conn.getresponse()
                response.read()
                version = response.getheader("x-version")
                with self.lock:
                    mine.append(version)
                    if response.status != 200:
                        self.failures.append(f"thread {index}: status {response.status}")
            except Exception as err:  # any broken request counts
                with self.lock:
                    self.failures.append(f"thread {index}: {err!r}")
                conn.close()
                conn = HTTPConnection("127.0.0.1", self.port, timeout=10)
            time.sleep(0.01)  # leave CPU for the rebuild on a 2-core machine
        conn.close()

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def count(self) -> int:
        with self.lock:
            return sum(len(r) for r in self.responses)

    def versions_after(self, marks: list[int]) -> set[str | None]:
        """Versions of the responses recorded since `marks` (from mark())."""
        with self.lock:
            return {v for r, m in zip(self.responses, marks, strict=True) for v in r[m:]}

    def mark(self) -> list[int]:
        with self.lock:
            return [len(r) for r in self.responses]

    def wait_for_version(self, version: str, timeout: float) -> float:
        """Seconds until some thread got `version`; fails if none did within `timeout`."""
        started = time.monotonic()
        marks = self.mark()
        while time.monotonic() - started < timeout:
            if version in self.versions_after(marks):
                return time.monotonic() - started
            time.sleep(0.02)
        pytest.fail(f"no response with x-version {version!r} within {timeout}s")

    def wait_for_more(self, count: int, timeout: float = 30) -> list[int]:
        """Let every thread complete `count` more requests; returns the marks from before."""
        marks = self.mark()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(n - m >= count for n, m in zip(self.mark(), marks, strict=True)):
                return marks
            time.sleep(0.02)
        pytest.fail(f"the load threads did not complete {count} more requests within {timeout}s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


@pytest.fixture
def run_proc(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], RunOutput, Path]]:
    source = tmp_path / "version_filter.py"
    source.write_text(FILTER.format(version="one"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxywasm_build.cli", "run", str(source), "--watch", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # our own session: SIGTERM goes to it alone
    )
    output = RunOutput(proc)
    try:
        yield proc, output, source
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        match = re.search(r"pid: (\d+)", output.text())
        if match and _alive(int(match.group(1))):
            os.kill(int(match.group(1)), signal.SIGKILL)


def test_edit_while_serving(run_proc: tuple[subprocess.Popen[str], RunOutput, Path]) -> None:
    proc, output, source = run_proc
    _, served = output.wait_for(r"serving the filter on http://127\.0\.0\.1:(\d+)", 0, timeout=180)
    _, pid_match = output.wait_for(r"pid: (\d+)", 0, timeout=10)
    port, envoy_pid = int(served.group(1)), int(pid_match.group(1))
    output.wait_for(r"watching .* for changes", 0, timeout=10)

    with Load(port) as load:
        assert load.wait_for_version("one", timeout=30) >= 0

        # 1. A good edit: the new behaviour appears, nothing fails on the way.
        start = len(output.lines)
        source.write_text(FILTER.format(version="two"))
        switched_after = load.wait_for_version("two", timeout=90)
        _, reloaded = output.wait_for(r"reloaded: .*; ([\d.]+)s after the change\)", start, timeout=60)
        print("\n" + output.text(start))
        print(f"switch seen by clients {switched_after:.1f}s after the edit; run reported {reloaded.group(1)}s")
        marks = load.wait_for_more(5)
        assert load.versions_after(marks) == {"two"}

        # 2. A syntax error: reported with file:line, the previous filter keeps serving.
        start = len(output.lines)
        source.write_text(SYNTAX_ERROR)
        output.wait_for(r"build failed, still serving the previous filter", start, timeout=60)
        output.wait_for(rf"{re.escape(str(source))}:\d+:\d+: SyntaxError", start, timeout=10)
        marks = load.wait_for_more(5)
        assert load.versions_after(marks) == {"two"}

        # 3. on_configure raises: Envoy rejects the update, the reason is shown, "two" keeps serving.
        start = len(output.lines)
        source.write_text(CONFIGURE_FAILS)
        output.wait_for(r"Envoy rejected the new filter, still serving the previous one", start, timeout=90)
        output.wait_for(r"RuntimeError: configure exploded on purpose", start, timeout=10)
        output.wait_for(r"config update rejected", start, timeout=10)
        marks = load.wait_for_more(5)
        assert load.versions_after(marks) == {"two"}

        # 4. Fixed again: swaps in as usual.
        source.write_text(FILTER.format(version="three"))
        load.wait_for_version("three", timeout=90)
        marks = load.wait_for_more(5)
        assert load.versions_after(marks) == {"three"}

    total = load.count()
    print(f"{total} requests on {THREADS} keep-alive connections, {len(load.failures)} failed")
    assert load.failures == []
    everything = {v for r in load.responses for v in r}
    assert everything == {"one", "two", "three"}  # the rejected and broken builds never served
    for responses in load.responses:
        # Each connection moves forward only: no response from an older filter after a newer one.
        order = [v for i, v in enumerate(responses) if i == 0 or responses[i - 1] != v]
        assert order in (["one", "two", "three"], ["two", "three"], ["three"]), order

    # SIGTERM: the command stops Envoy and exits 0.
    assert _alive(envoy_pid)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    deadline = time.monotonic() + 10
    while _alive(envoy_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(envoy_pid), "Envoy outlived proxywasm run"
    output.wait_for(r"stopping", 0, timeout=5)
