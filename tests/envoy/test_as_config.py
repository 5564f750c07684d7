"""Plugin configuration delivered to on_configure, and a rejected configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy_support import as_envoy, fetch

from proxywasm_build.envoy import EnvoyError


# str goes as google.protobuf.StringValue, bytes as BytesValue: the module sees the same bytes.
@pytest.mark.parametrize("configuration", ['{"a": 1}', b"bytes:\xc3\xa9"])
def test_configuration_reaches_filter(as_modules: dict[str, Path], configuration: str | bytes) -> None:
    with as_envoy(as_modules["config"], name="p_config", root_id="config", configuration=configuration) as (
        envoy,
        _,
    ):
        reply = fetch(envoy.port(), "/")
        text = configuration if isinstance(configuration, str) else configuration.decode()
        assert reply.status == 200
        # http.client decodes header values as latin-1.
        assert reply.header("x-plugin-config", raw=True) == text.encode()
        envoy.wait_for_log("on_configure: config=" + text)


def test_rejected_configuration_stops_envoy_start(as_modules: dict[str, Path]) -> None:
    with pytest.raises(EnvoyError) as info:
        with as_envoy(as_modules["config"], name="p_config", root_id="config", configuration="reject"):
            pass
    message = str(info.value)
    assert "exited with code 1" in message
    assert "Failed to configure base Wasm plugin" in message
    assert "Unable to create Wasm plugin p_config" in message
