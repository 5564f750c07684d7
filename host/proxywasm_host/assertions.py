"""Assertion helpers whose failure messages carry the filter's logs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .errors import _format_logs
from .messages import Response


def _fail(message: str, logs: Sequence[tuple[int, str]]) -> None:
    raise AssertionError(message + _format_logs(logs))


def assert_response(
    response: Response,
    *,
    status: int | None = None,
    body: bytes | str | None = None,
    headers: dict[str, str | None] | Iterable[tuple[str, str]] | None = None,
    local_reply: bool | None = None,
    upstream_called: bool | None = None,
) -> Response:
    """Check a :class:`Response`; ``headers`` maps names to expected values (``None``: must be absent)."""
    problems: list[str] = []
    if status is not None and response.status != status:
        problems.append(f"status {response.status} != expected {status}")
    if body is not None:
        want = body.encode() if isinstance(body, str) else body
        if response.body != want:
            problems.append(f"body {response.body!r} != expected {want!r}")
    if headers is not None:
        items: Iterable[tuple[str, Any]] = headers.items() if isinstance(headers, dict) else headers
        for name, value in items:
            got = response.header(name)
            if got != value:
                problems.append(f"header {name!r} is {got!r}, expected {value!r}")
    if local_reply is not None and response.local_reply != local_reply:
        problems.append(f"local_reply is {response.local_reply}, expected {local_reply}")
    if upstream_called is not None and (response.upstream_request is not None) != upstream_called:
        problems.append("upstream was " + ("not " if upstream_called else "") + "called")
    if problems:
        _fail(
            "response mismatch:\n  " + "\n  ".join(problems) + f"\n  got headers: {response.headers}",
            response.logs,
        )
    return response


def assert_logged(logs: Sequence[tuple[int, str]], text: str, *, level: int | None = None) -> None:
    """The filter logged a message containing ``text`` (at ``level`` if given)."""
    for lvl, msg in logs:
        if text in msg and (level is None or lvl == level):
            return
    _fail(f"no log message containing {text!r}" + (f" at level {level}" if level is not None else ""), logs)
