"""Randomness and the build-time snapshot: module-level code that makes a secret fails the build
with a message (it would be the same zeros in every VM), and ``random`` is reseeded from Envoy's
randomness when each VM starts (the snapshot's state is the same everywhere). Local host (both
modes) and real Envoy."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm_build.bundle import BuildError
from proxywasm_build.envoy import Envoy, WasmPlugin, http_bootstrap
from proxywasm_build.upstream import UpstreamServer
from proxywasm_host import Host, LoadError

SECRET_AT_BUILD = """
import secrets

import proxywasm
from proxywasm import HttpContext

KEY = secrets.token_hex(16)  # would be 32 zeros in every VM


@proxywasm.register
class Sign(HttpContext):
    pass
"""

PER_VM = """
import random
import secrets
import uuid

import proxywasm
from proxywasm import PluginContext, log


@proxywasm.register
class Plugin(PluginContext):
    def on_configure(self, configuration):
        self.key = secrets.token_hex(16)
        log.info(f"vm random={random.random()} key={self.key} uuid={uuid.uuid4()}")
        return True
"""

REFUSED = "os.urandom() while the filter is built: module-level code runs once, at build time"


def test_a_secret_made_at_module_level_fails_the_build(build_filter: Callable[[str], Path], tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=re.escape(REFUSED)) as failure:
        build_filter(SECRET_AT_BUILD)
    # The filter's line (KEY = secrets.token_hex(16), line 7 of the source): in the headline and as
    # the traceback's first frame. ("line 6" matched the SDK bootstrap's "line 61" here before.)
    assert "filter.py:7: importing the filter failed: RuntimeError" in str(failure.value)
    assert '  File "filter.py", line 7, in <module>\n    KEY = secrets.token_hex(16)' in str(failure.value)
    source = tmp_path / "filter.py"
    source.write_text(SECRET_AT_BUILD)
    with pytest.raises(LoadError, match=re.escape(REFUSED)):
        Host.load(source, mode="native")


def _values(lines: list[str]) -> list[str]:
    return [line.split("vm ", 1)[1] for line in lines if "vm random=" in line]


@pytest.mark.parametrize("mode", ["native", "wasm"])
def test_host_each_vm_has_its_own_random_state(load_filter: Callable[..., Host], mode: str) -> None:
    seen = [_values(load_filter(PER_VM, mode).log_messages()) for _ in range(2)]
    assert len(seen[0]) == len(seen[1]) == 1 and seen[0][0].split()[0] != seen[1][0].split()[0], seen
    assert "key=" + "0" * 32 not in seen[0][0]


def test_envoy_each_vm_has_its_own_random_state(build_filter: Callable[[str], Path]) -> None:
    with UpstreamServer() as upstream:
        config = http_bootstrap(upstream_port=upstream.port, plugins=[WasmPlugin(build_filter(PER_VM), name="rnd")])
        with Envoy(config, concurrency=2) as envoy:  # the main thread's VM and one per worker
            deadline = time.monotonic() + 20
            while len(seen := _values([line.message for line in envoy.log_lines()])) < 3:
                assert time.monotonic() < deadline, seen
                time.sleep(0.1)
    randoms = {value.split()[0] for value in seen}  # "random=0.123..."
    assert len(randoms) == len(seen) >= 3, seen  # every VM its own (Envoy starts one more than the workers)
    assert not any("key=" + "0" * 32 in value for value in seen)
