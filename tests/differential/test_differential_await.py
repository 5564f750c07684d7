"""Await-style callouts (issue 10), real Envoy vs the host: the SDK's coroutine driver holds the
stream while a callout is in flight and resumes it, so what the client and the upstream see, and
what the filter logs, must be the same in both. The filter is tests/sdk/filters.py's AWAIT."""

from __future__ import annotations

import runpy
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from differential import Call, EnvoyDriver, HostDriver, Plugin, Reply, check, drivers

Pair = tuple[EnvoyDriver, HostDriver]
Build = Callable[[str], Path]

_FILTERS = runpy.run_path(str(Path(__file__).parents[1] / "sdk" / "filters.py"))
AWAIT: str = _FILTERS["AWAIT"]
ALLOW = AWAIT.replace(
    "class Auth(HttpContext):\n", "class Auth(HttpContext):\n    allow_on_headers_stop_iteration = True\n"
)
ALLOWED = Reply(200, (("x-auth-user", "alice"),), b"granted")
DENIED = Reply(401, (("content-type", "text/plain"),), b"who?")


@pytest.fixture(scope="module")
def allowing(build_filter: Build) -> Iterator[Pair]:
    # "broken" has no reachable host: Envoy answers the callout itself with 503.
    plugin = Plugin(build_filter(AWAIT), clusters={"auth": ALLOWED}, unreachable=("broken",), request_trailers=True)
    with drivers(plugin) as pair:
        yield pair


@pytest.fixture(scope="module")
def denying(build_filter: Build) -> Iterator[Pair]:
    # "broken" closes the connection before answering: Envoy delivers 503 (connection termination).
    plugin = Plugin(build_filter(AWAIT), clusters={"auth": DENIED, "broken": Reply(reset=True)})
    with drivers(plugin) as pair:
        yield pair


def test_awaited_answer_sets_a_header(allowing: Pair) -> None:
    check(allowing, Call("GET", "/plain", (("x-user", "bob"),)))


def test_gather_runs_two_callouts(allowing: Pair) -> None:
    check(allowing, Call("GET", "/gather"))


def test_awaited_body_then_callout(allowing: Pair) -> None:
    check(allowing, Call("POST", "/body", (), b"it is ok"))


def test_awaited_body_ended_by_trailers(allowing: Pair) -> None:
    check(allowing, Call("POST", "/body", (), b"it is ok", chunked=True, trailers=(("x-t", "1"),)))


def test_awaited_body_over_its_limit_is_413(allowing: Pair) -> None:
    check(allowing, Call("POST", "/body", (), b"x" * 100))


def test_exception_after_await_meets_the_failure_policy(allowing: Pair) -> None:
    check(allowing, Call("GET", "/boom"))


def test_unreachable_cluster_answers_503(allowing: Pair) -> None:
    check(allowing, Call("GET", "/reset"))


def test_synchronous_coroutine(allowing: Pair) -> None:
    check(allowing, Call("GET", "/sync"))


def test_denied_by_the_answer(denying: Pair) -> None:
    check(denying, Call("GET", "/plain"))


def test_denied_body(denying: Pair) -> None:
    check(denying, Call("POST", "/body", (), b"not this"))


def test_callout_connection_reset(denying: Pair) -> None:
    check(denying, Call("GET", "/reset"))


def test_allow_on_headers_stop_iteration_holds_everything(build_filter: Build) -> None:
    plugin = Plugin(build_filter(ALLOW), clusters={"auth": ALLOWED}, allow_on_headers_stop_iteration=True)
    with drivers(plugin) as pair:
        check(pair, Call("POST", "/body", (), b"it is ok"), Call("GET", "/plain"))
