"""proxywasm run's upstream: a stream Envoy resets (a local reply, a body too large) prints no
traceback; a real error in the server still does."""

from __future__ import annotations

import pytest

from proxywasm_build.upstream import UpstreamServer


@pytest.mark.parametrize("error", [BrokenPipeError(32, "Broken pipe"), ConnectionResetError(104, "reset")])
def test_a_reset_stream_prints_nothing(error: OSError, capsys: pytest.CaptureFixture[str]) -> None:
    with UpstreamServer() as upstream:
        try:
            raise error
        except OSError:
            upstream._server.handle_error(None, ("127.0.0.1", 1))
    assert capsys.readouterr().err == ""


def test_another_error_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    with UpstreamServer() as upstream:
        try:
            raise ValueError("a bug in a responder")
        except ValueError:
            upstream._server.handle_error(None, ("127.0.0.1", 1))
    assert "ValueError: a bug in a responder" in capsys.readouterr().err
