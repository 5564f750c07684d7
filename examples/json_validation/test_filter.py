"""json_validation's test: only JSON objects holding the configured keys reach the upstream;
everything else gets a 403 local reply."""

from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm_host import Host

JSON = [("content-type", "application/json")]


@pytest.fixture
def host(proxywasm_host: Callable[..., Host], proxywasm_mode: str) -> Host:
    return proxywasm_host(Path(__file__).parent, mode=proxywasm_mode, plugin_config={"requiredKeys": ["id", "token"]})


def test_valid_payload_passes(host: Host) -> None:
    body = b'{"id": "abc123", "token": "xyz456"}'
    response = host.request("POST", "/", headers=JSON, body=body)
    assert response.status == 200
    assert response.upstream_request is not None and response.upstream_request.body == body


def test_refuses_other_content_types(host: Host) -> None:
    response = host.request("POST", "/", headers=[("content-type", "text/plain")], body=b"{}")
    assert (response.status, response.body) == (403, b"content-type must be provided")
    assert response.upstream_request is None


@pytest.mark.parametrize("body", [b'{"id": "abc123"}', b"not json", b'["id", "token"]'])
def test_refuses_invalid_payloads(host: Host, body: bytes) -> None:
    response = host.request("POST", "/", headers=JSON, body=body)
    assert (response.status, response.body) == (403, b"invalid payload")
    assert response.local_reply


def test_logs_the_missing_key(host: Host) -> None:
    host.request("POST", "/", headers=JSON, body=b'{"id": 1}')
    assert 'required key (token) is missing: {"id": 1}' in host.log_messages()
