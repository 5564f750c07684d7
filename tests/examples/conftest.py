"""Fixtures for the examples: each is built with ``proxywasm build`` (cached by content, once per
session) and served by a real Envoy started from the example's own envoy.yaml, with ports,
module paths and upstream addresses rewritten for the test.

A test class names its example (``EXAMPLE``) and may set ``CONCURRENCY``, ``LOG_LEVELS``
(Envoy component log levels) and ``UPSTREAM_ROUTES``; the ``envoy`` and ``upstream`` fixtures are
class-scoped, so each example starts one Envoy, stopped before the next example's starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from envoy_yaml import runnable_config

from proxywasm_build.envoy import Envoy
from proxywasm_build.upstream import UpstreamServer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def example_config(name: str, wasm: Path, upstream_port: int) -> dict[str, Any]:
    """examples/<name>/envoy.yaml made runnable side by side with other tests, every cluster that
    does not lead back into the same Envoy pointed at the test's upstream server, ``filter.wasm``
    the built module (envoy_yaml.runnable_config)."""
    return runnable_config(EXAMPLES / name / "envoy.yaml", wasm, {"*": upstream_port})


@pytest.fixture(scope="class")
def upstream(request: pytest.FixtureRequest) -> Iterator[UpstreamServer]:
    with UpstreamServer(routes=getattr(request.cls, "UPSTREAM_ROUTES", None)) as server:
        yield server


@pytest.fixture(scope="class")
def envoy(
    request: pytest.FixtureRequest, upstream: UpstreamServer, example_wasm: Callable[[str], Path]
) -> Iterator[Envoy]:
    cls = request.cls
    name: str = cls.EXAMPLE
    config = example_config(name, example_wasm(name), upstream.port)
    with Envoy(
        config,
        concurrency=getattr(cls, "CONCURRENCY", 1),
        component_log_levels=getattr(cls, "LOG_LEVELS", None),
    ) as proxy:
        yield proxy
