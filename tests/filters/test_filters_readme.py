"""The configurations the filters' READMEs show (Envoy snippets and Istio resources) are ones the
filter accepts, and the Istio resources have the shape of their kind."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]
from filters_support import FILTERS

from proxywasm_host import Host

# istio/api extensions/v1alpha1: WasmPlugin.spec (wasm.proto) and TrafficExtension.spec
# (traffic_extension.proto), whose `wasm` holds WasmConfig.
PLACEMENT = {"selector", "targetRefs", "phase", "priority", "match"}
WASM_CONFIG = {"url", "sha256", "imagePullPolicy", "imagePullSecret", "pluginName", "pluginConfig", "failStrategy",
               "vmConfig", "type"}  # fmt: skip


def snippets() -> list[tuple[str, int, Any]]:
    found = []
    for readme in sorted(FILTERS.glob("*/README.md")):
        blocks = re.findall(r"```yaml\n(.*?)```", readme.read_text(), re.S)
        for i, block in enumerate(blocks):
            found.append((readme.parent.name, i, yaml.safe_load(block)))
    return found


def configurations(document: Any) -> list[Any]:
    """The plugin configurations a snippet holds: an Istio resource's pluginConfig, or the JSON
    string of an Envoy Wasm filter entry."""
    if isinstance(document, dict) and document.get("kind") == "WasmPlugin":
        return [document["spec"]["pluginConfig"]]
    if isinstance(document, dict) and document.get("kind") == "TrafficExtension":
        return [document["spec"]["wasm"]["pluginConfig"]]
    if isinstance(document, dict) and "http_filters" in document:
        entries = [e for e in document["http_filters"] if e["name"] == "envoy.filters.http.wasm"]
        return [json.loads(e["typed_config"]["config"]["configuration"]["value"]) for e in entries]
    return []


SNIPPETS = snippets()
ISTIO = [s for s in SNIPPETS if isinstance(s[2], dict) and "kind" in s[2]]


@pytest.mark.parametrize(("name", "index", "document"), SNIPPETS, ids=[f"{n}-{i}" for n, i, _ in SNIPPETS])
def test_readme_configurations_are_accepted(name: str, index: int, document: Any) -> None:
    found = configurations(document)
    assert found, f"{name}/README.md yaml block {index} holds no plugin configuration"
    for configuration in found:
        # Loads and configures the filter (natively): a ConfigureError would name the bad key.
        Host.load(FILTERS / name / "filter.py", mode="native", plugin_config=configuration)


@pytest.mark.parametrize(("name", "index", "document"), ISTIO, ids=[f"{n}-{i}" for n, i, _ in ISTIO])
def test_readme_istio_resources_have_their_kind_s_fields(name: str, index: int, document: Any) -> None:
    kind = document["kind"]
    assert document["apiVersion"] == "extensions.istio.io/v1alpha1"
    spec = document["spec"]
    if kind == "WasmPlugin":
        assert set(spec) <= PLACEMENT | WASM_CONFIG
    else:
        assert kind == "TrafficExtension"
        assert set(spec) <= PLACEMENT | {"wasm"} and set(spec["wasm"]) <= WASM_CONFIG
    wasm = spec if kind == "WasmPlugin" else spec["wasm"]
    assert wasm["url"].startswith("oci://") and wasm["failStrategy"] in ("FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD")
