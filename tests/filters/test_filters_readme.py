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
        values = [e["typed_config"]["config"].get("configuration", {}).get("value", "") for e in entries]
        return [json.loads(value) if value else "" for value in values]  # none: the filter's defaults
    return []


# Blocks that hold a plugin configuration (others show route metadata, bootstrap parts...: the
# filters' own beside-tests load those).
SNIPPETS = [s for s in snippets() if configurations(s[2])]
ISTIO = [s for s in SNIPPETS if isinstance(s[2], dict) and "kind" in s[2]]


def test_every_filter_readme_shows_a_configuration() -> None:
    assert {name for name, _, _ in SNIPPETS} == {p.parent.name for p in FILTERS.glob("*/README.md")}


@pytest.mark.parametrize(("name", "index", "document"), SNIPPETS, ids=[f"{n}-{i}" for n, i, _ in SNIPPETS])
def test_readme_configurations_are_accepted(name: str, index: int, document: Any) -> None:
    found = configurations(document)
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
    assert wasm["url"].startswith("oci://")
    assert wasm.get("failStrategy", "FAIL_CLOSE") in ("FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD")  # Istio's default
