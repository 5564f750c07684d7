"""Buffering and replacing request and response bodies."""

from __future__ import annotations

import json
from pathlib import Path

from envoy_support import as_envoy, fetch


def test_body_replaced_without_content_length(as_modules: dict[str, Path]) -> None:
    with as_envoy(as_modules["body"], name="p_body", root_id="body") as (envoy, upstream):
        reply = fetch(envoy.port(), "/b", method="POST", body=b"hello body")
        (seen,) = upstream.requests
        # Request body: buffered to end of stream, replaced; sent upstream chunked.
        assert seen.body == b"request:HELLO BODY"
        assert seen.header("content-length") is None
        assert seen.header("transfer-encoding") == "chunked"
        # Response body: wrapped; downstream gets it chunked as content-length was removed.
        assert reply.status == 200
        assert reply.body.startswith(b"<<") and reply.body.endswith(b">>")
        echoed = json.loads(reply.body[2:-2])
        assert echoed["body"] == "request:HELLO BODY"
        assert reply.header("content-length") is None
        assert reply.header("transfer-encoding") == "chunked"

        # A bodiless GET: no request body callback, response still rewritten.
        reply = fetch(envoy.port(), "/get")
        assert json.loads(reply.body[2:-2])["path"] == "/get"

        # The response body callback saw the whole body twice: once with eos=0 (buffered), then
        # with the same accumulated size and eos=1.
        log = envoy.wait_for_log(r"response body chunk size=\d+ eos=1")
        assert log
        lines = [ln.message for ln in envoy.log_lines() if "request body chunk" in ln.message]
        assert [ln.split(": ", 1)[1] for ln in lines[:2]] == [
            "request body chunk size=10 eos=0",
            "request body chunk size=10 eos=1",
        ]


def test_replaced_body_keeps_stale_content_length(as_modules: dict[str, Path]) -> None:
    """Envoy does not fix content-length after proxy_set_buffer_bytes: bodies get cut to it."""
    with as_envoy(as_modules["body"], name="p_body", root_id="body", configuration="keep-content-length") as (
        envoy,
        upstream,
    ):
        reply = fetch(envoy.port(), "/b", method="POST", body=b"hello body")
        (seen,) = upstream.requests
        assert seen.header("content-length") == "10"
        assert seen.body == b"request:HE"
        length = int(reply.header("content-length") or -1)
        assert len(reply.body) == length
        assert reply.body.startswith(b"<<") and not reply.body.endswith(b">>")
