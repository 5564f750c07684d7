"""``time.sleep`` in a filter behaves one way everywhere: an Envoy worker cannot wait inside a
callback, so any sleep but ``sleep(0)`` raises UsageError saying how to wait instead; in real
Envoy (the failure policy answers 500, the log names it), in the local host's Wasm and native modes
(an author mistake: the test fails), and at module level (the build fails). Before, Envoy raised
``OSError: [Errno 58] Not supported`` or returned at once, and native mode really slept."""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm.vm import SLEEP_MESSAGE
from proxywasm_build.bundle import BuildError
from proxywasm_build.envoy import Envoy, WasmPlugin, http_bootstrap
from proxywasm_build.upstream import UpstreamServer
from proxywasm_host import AuthorMistake, Host, LoadError

SLEEPS = """
import time
from time import sleep

import proxywasm
from proxywasm import HttpContext


@proxywasm.register
class Backoff(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        time.sleep(0)  # a yield, harmless
        if headers.get("x-sleep") == "module":
            time.sleep(0.05)
        elif headers.get("x-sleep") == "imported":
            sleep(0.05)
"""

AT_MODULE_LEVEL = """
import time

import proxywasm
from proxywasm import HttpContext

time.sleep(0.01)


@proxywasm.register
class Slow(HttpContext):
    pass
"""


@pytest.mark.parametrize("mode", ["wasm", "native"])
@pytest.mark.parametrize("how", ["module", "imported"])
def test_sleep_in_a_callback_is_refused_in_the_host(load_filter: Callable[..., Host], mode: str, how: str) -> None:
    assert load_filter(SLEEPS, mode).request("GET", "/").status == 200  # sleep(0) is fine
    with pytest.raises(AuthorMistake, match="time.sleep\\(\\) in a filter: an Envoy worker cannot wait"):
        load_filter(SLEEPS, mode).request("GET", "/", headers=[("x-sleep", how)])
    host = load_filter(SLEEPS, mode, raise_on_mistake=False)
    assert host.request("GET", "/", headers=[("x-sleep", how)]).status == 500  # the failure policy


def test_sleep_at_module_level_fails_the_build(build_filter: Callable[[str], Path], tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="UsageError: time.sleep\\(\\) in a filter"):
        build_filter(AT_MODULE_LEVEL)
    source = tmp_path / "filter.py"
    source.write_text(AT_MODULE_LEVEL)
    with pytest.raises(LoadError, match=":7: importing the filter failed: .*UsageError: time.sleep\\(\\) in a filter"):
        Host.load(source, mode="native")


def test_sleep_in_a_callback_in_envoy(build_filter: Callable[[str], Path]) -> None:
    with UpstreamServer() as upstream:
        config = http_bootstrap(upstream_port=upstream.port, plugins=[WasmPlugin(build_filter(SLEEPS), name="s")])
        with Envoy(config) as envoy:
            for how, status in (("none", 200), ("module", 500), ("imported", 500)):
                connection = http.client.HTTPConnection("127.0.0.1", envoy.port(), timeout=10)
                connection.request("GET", "/", headers={"x-sleep": how})
                assert connection.getresponse().status == status
                connection.close()
            envoy.wait_for_log("UsageError: " + SLEEP_MESSAGE[:60].replace("(", "\\(").replace(")", "\\)"))


BUSY = """
import proxywasm
from proxywasm import HttpContext


@proxywasm.register
class Busy(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        total = 0
        for i in range(300_000):  # long enough for the test's thread to run meanwhile
            total += i
"""


def test_natively_only_the_filters_own_calls_are_refused(load_filter: Callable[..., Host]) -> None:
    # time.sleep and open are guarded process-wide while a native callback runs: another thread of
    # the test process (a stub server, a helper) and the test's own code keep the real ones.
    import threading

    failures: list[BaseException] = []
    calls = 0
    stop = threading.Event()

    def background() -> None:
        nonlocal calls
        while not stop.is_set():
            try:
                time.sleep(0.0005)
                with open(__file__, "rb") as f:
                    f.read(10)
                calls += 1
            except BaseException as err:  # recorded for the assertion
                failures.append(err)

    host = load_filter(BUSY, "native")
    thread = threading.Thread(target=background)
    thread.start()
    try:
        for _ in range(5):
            assert host.request("GET", "/").status == 200
    finally:
        stop.set()
        thread.join()
    assert failures == [] and calls > 0
