"""The Istio manifests `proxywasm package` writes, checked against Istio's published CRD schema.

The schema comes from the npm package ``@kubernetes-models/istio`` 3.0.1 (pinned in
``tests/istio/package-lock.json``): validators compiled from Istio 1.29.2's
``manifests/charts/base/files/crd-all.gen.yaml``, plus TypeScript declarations of every field.
``validate.mjs`` runs the validators; the field names come from the declarations, because the CRD
schema does not forbid unknown fields (Kubernetes would silently prune a misspelt one).

No package on PyPI or npm carries ``TrafficExtension`` (new in Istio 1.30): its ``spec.wasm`` holds
exactly WasmPlugin's Wasm fields (istio/api ``extensions/v1alpha1/traffic_extension.proto``,
``WasmConfig``), so each TrafficExtension is checked by validating the WasmPlugin it is equivalent
to (placement fields plus ``spec.wasm``) against the WasmPlugin schema. Its own top-level layout
(exactly one of ``wasm``/``lua``; the placement fields) is checked against that proto's field list,
which is not a published schema package.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxywasm_build.package import IstioOptions, TrafficSelector, istio_resource

HERE = Path(__file__).parent
DTS = HERE / "node_modules/@kubernetes-models/istio/extensions.istio.io/v1alpha1/WasmPlugin.d.ts"
DIGEST = "sha256:" + "0123456789abcdef" * 4
URL = "oci://registry.example:5000/team/auth-filter:1.2.0"
# traffic_extension.proto, message TrafficExtension: selector, targetRefs, phase, priority, match, oneof {wasm, lua}
TRAFFIC_EXTENSION_SPEC = {"selector", "targetRefs", "phase", "priority", "match", "wasm", "lua"}
PLACEMENT = ("selector", "targetRefs", "phase", "priority", "match")


@pytest.fixture(scope="session")
def validate() -> Any:
    """``validate(resources) -> [{"kind", "ok", "error"?}]`` through Istio's compiled CRD validators."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed for Istio's schema (./dev.sh setup installs them)", pytrace=False)
    setup = subprocess.run(["bash", str(HERE / "setup.sh")], capture_output=True, text=True, timeout=600, check=False)
    if setup.returncode != 0:
        pytest.fail(f"tests/istio/setup.sh failed:\n{setup.stdout}\n{setup.stderr}", pytrace=False)

    def run(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
        result = subprocess.run(
            ["node", str(HERE / "validate.mjs")],
            input=json.dumps(resources),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        results: list[dict[str, Any]] = json.loads(result.stdout)
        return results

    return run


def declared_fields() -> dict[str, set[str]]:
    """Field names the package declares for WasmPlugin, by path ("spec", "spec/vmConfig/env", ...)."""
    text = re.sub(r"/\*.*?\*/", "", DTS.read_text(), flags=re.S)
    fields: dict[str, set[str]] = {}
    stack: list[str] = []
    pending: str | None = None
    for token in re.finditer(r'"([A-Za-z0-9_]+)"\??:|[{}]', text):
        if token[1]:
            fields.setdefault("/".join(stack), set()).add(token[1])
            pending = token[1]
        elif token[0] == "{":
            stack.append(pending or "")
            pending = None
        else:
            stack.pop()
    return {path.removeprefix("/"): names for path, names in fields.items()}


def unknown_fields(value: Any, fields: dict[str, set[str]], path: str) -> list[str]:
    """Keys the schema does not declare (``pluginConfig`` is free-form)."""
    if isinstance(value, list):
        return [bad for item in value for bad in unknown_fields(item, fields, path)]
    if not isinstance(value, dict) or path.endswith(("pluginConfig", "matchLabels")):
        return []
    allowed = fields.get(path, set())
    bad = [f"{path}/{key}" for key in value if key not in allowed]
    return bad + [b for key, item in value.items() for b in unknown_fields(item, fields, f"{path}/{key}")]


def as_wasmplugin(extension: dict[str, Any]) -> dict[str, Any]:
    """The WasmPlugin a TrafficExtension with ``wasm`` is equivalent to."""
    spec = extension["spec"]
    assert set(spec) <= TRAFFIC_EXTENSION_SPEC, set(spec) - TRAFFIC_EXTENSION_SPEC
    assert ("wasm" in spec) != ("lua" in spec)  # the CRD's rule: exactly one of wasm or lua
    placement = {key: spec[key] for key in PLACEMENT if key in spec}
    return {**extension, "kind": "WasmPlugin", "spec": {**placement, **spec["wasm"]}}


EVERYTHING = IstioOptions(
    name="auth-filter",
    namespace="shop",
    selector={"app": "checkout", "version": "v2"},
    phase="AUTHZ",
    priority=-5,
    match=(TrafficSelector("SERVER", (8080, 8443)), TrafficSelector(None, (9090,)), TrafficSelector("CLIENT")),
    fail_strategy="FAIL_RELOAD",
    plugin_name="auth",
    plugin_config={"allow": ["alice", "bob"], "limits": {"rps": 10.5, "burst": None}, "yes": True, "": ""},
    env={"POD_NAME": None, "MODE": "strict", "EMPTY": ""},
    type="NETWORK",
    image_pull_policy="Always",
    image_pull_secret="regcred",
)
OPTIONS = {
    "defaults": IstioOptions(),
    "everything": EVERYTHING,
    "fail-open-http-stats": IstioOptions(phase="STATS", fail_strategy="FAIL_OPEN", type="HTTP", priority=0),
    "authn-client": IstioOptions(phase="AUTHN", match=(TrafficSelector("CLIENT_AND_SERVER"),), env={"A": "b"}),
}


@pytest.mark.parametrize("case", sorted(OPTIONS))
def test_both_kinds_pass_istios_schema(case: str, validate: Any) -> None:
    options = OPTIONS[case]
    plugin = istio_resource("WasmPlugin", "default-name", URL, DIGEST, options)
    extension = istio_resource("TrafficExtension", "default-name", URL, DIGEST, options)
    results = validate([plugin, as_wasmplugin(extension)])
    assert results == [{"kind": "WasmPlugin", "ok": True}] * 2, results
    fields = declared_fields()
    assert {"url", "sha256", "failStrategy", "vmConfig", "phase"} <= fields["spec"]  # the parser found the fields
    assert set(plugin) == set(extension) == {"apiVersion", "kind", "metadata", "spec"}
    assert unknown_fields(plugin["spec"], fields, "spec") == []
    assert unknown_fields(as_wasmplugin(extension)["spec"], fields, "spec") == []
    # One set of Wasm settings, two places.
    assert {k: v for k, v in plugin["spec"].items() if k not in PLACEMENT} == extension["spec"]["wasm"]
    assert plugin["spec"]["sha256"] == DIGEST.removeprefix("sha256:")


def test_the_validator_rejects_what_istio_rejects(validate: Any) -> None:
    good = istio_resource("WasmPlugin", "f", URL, DIGEST, EVERYTHING)
    broken = [
        ("spec", "failStrategy", "FAIL_CLOSED"),  # Envoy's spelling, not Istio's
        ("spec", "phase", "LATE"),
        ("spec", "sha256", "sha256:" + "0" * 64),  # Istio wants the bare hex
        ("spec", "type", "TCP"),
        ("spec", "imagePullPolicy", "Never"),
    ]
    resources = []
    for section, key, value in broken:
        resource = json.loads(json.dumps(good))
        resource[section][key] = value
        resources.append(resource)
    no_url = json.loads(json.dumps(good))
    del no_url["spec"]["url"]
    results = validate([*resources, no_url])
    assert [r["ok"] for r in results] == [False] * (len(broken) + 1), results
    assert "failStrategy" in results[0]["error"] and "sha256" in results[2]["error"]
    misspelt = json.loads(json.dumps(good))
    misspelt["spec"]["pluginConfigs"] = {}
    assert unknown_fields(misspelt["spec"], declared_fields(), "spec") == ["spec/pluginConfigs"]


def test_cli_writes_both_kinds_from_flags(tmp_path: Path, validate: Any) -> None:
    module = tmp_path / "auth.wasm"
    module.write_bytes(b"\0asm\x01\x00\x00\x00" + b"\x00" * 64)
    config = tmp_path / "config.json"
    config.write_text('{"allow": ["alice"], "nested": {"deep": [1, 2.5, null]}}')
    args = [
        *("package", str(module), "--image", "registry.example/team/auth:2", "--root-id", "auth"),
        *("--phase", "AUTHZ", "--priority", "10", "--match", "SERVER:8080,8443", "--match", ":9090"),
        *("--fail-strategy", "FAIL_RELOAD", "--plugin-config", str(config), "--env", "POD_NAME"),
        *("--env", "MODE=strict", "--type", "HTTP", "--selector", "app=checkout", "--namespace", "shop"),
    ]
    result = subprocess.run(
        [sys.executable, "-m", "proxywasm_build.cli", *args], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    plugin = yaml.safe_load((tmp_path / "auth.oci.wasmplugin.yaml").read_text())
    extension = yaml.safe_load((tmp_path / "auth.oci.trafficextension.yaml").read_text())
    assert validate([plugin, as_wasmplugin(extension)]) == [{"kind": "WasmPlugin", "ok": True}] * 2
    spec = plugin["spec"]
    assert spec["pluginConfig"] == json.loads(config.read_text())
    assert spec["match"] == [
        {"mode": "SERVER", "ports": [{"number": 8080}, {"number": 8443}]},
        {"ports": [{"number": 9090}]},
    ]
    assert spec["vmConfig"] == {"env": [{"name": "POD_NAME", "valueFrom": "HOST"}, {"name": "MODE", "value": "strict"}]}
    assert (spec["pluginName"], spec["failStrategy"], spec["phase"], spec["priority"]) == (
        "auth",
        "FAIL_RELOAD",
        "AUTHZ",
        10,
    )
    assert plugin["metadata"] == {"name": "auth", "namespace": "shop"}
    assert spec["selector"] == {"matchLabels": {"app": "checkout"}}
    assert extension["spec"]["wasm"]["url"] == spec["url"] == "oci://registry.example/team/auth:2"

    bad = subprocess.run(
        [sys.executable, "-m", "proxywasm_build.cli", "package", str(module), "--match", "INBOUND:80"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1 and "the mode is one of CLIENT, SERVER, CLIENT_AND_SERVER" in bad.stderr
    config.write_text("[1, 2]")
    bad = subprocess.run(
        [sys.executable, "-m", "proxywasm_build.cli", "package", str(module), "--plugin-config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1 and "pluginConfig is a JSON object" in bad.stderr
