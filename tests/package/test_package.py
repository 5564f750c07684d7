"""`proxywasm package`: unpack the OCI image layout and check it the way a registry and Istio read it."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxywasm_build.package import package

# A small valid module header plus a body, so the test does not depend on a build.
MODULE = b"\0asm\x01\x00\x00\x00" + bytes(range(256)) * 64


@pytest.fixture
def module(tmp_path: Path) -> Path:
    path = tmp_path / "my_filter.wasm"
    path.write_bytes(MODULE)
    return path


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Layout:
    """An OCI image layout read from a directory or a tar, every blob checked against its name."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
        self.index = json.loads(files["index.json"])
        assert self.index["schemaVersion"] == 2
        assert self.index["mediaType"] == "application/vnd.oci.image.index.v1+json"
        for name, data in files.items():
            if name.startswith("blobs/"):
                assert name == "blobs/" + sha(data).replace(":", "/"), f"{name} does not hold what it names"

    @classmethod
    def from_dir(cls, root: Path) -> Layout:
        return cls({str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()})

    @classmethod
    def from_tar(cls, data: bytes) -> Layout:
        files = {}
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                assert member.mtime == 0 and member.uid == 0 and member.gid == 0
                if member.isfile():
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    files[member.name] = extracted.read()
        return cls(files)

    def blob(self, descriptor: dict[str, Any]) -> bytes:
        """The blob a descriptor points at; its digest and size must match."""
        data = self.files[f"blobs/sha256/{descriptor['digest'].removeprefix('sha256:')}"]
        assert sha(data) == descriptor["digest"]
        assert len(data) == descriptor["size"]
        return data

    def manifest(self, ref: str) -> tuple[dict[str, Any], str]:
        (desc,) = [d for d in self.index["manifests"] if d["annotations"]["org.opencontainers.image.ref.name"] == ref]
        assert desc["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
        manifest = json.loads(self.blob(desc))
        assert manifest["schemaVersion"] == 2
        assert manifest["mediaType"] == desc["mediaType"]
        return manifest, desc["digest"]


def check_compat(layout: Layout, ref: str) -> str:
    """Istio's extractOCIStandardImage: last layer tar+gzip, `plugin.wasm` inside."""
    manifest, digest = layout.manifest(ref)
    assert manifest["annotations"] == {"module.wasm.image/variant": "compat"}
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    config = json.loads(layout.blob(manifest["config"]))
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    compressed = layout.blob(layer)
    assert compressed[:2] == b"\x1f\x8b" and compressed[4:8] == b"\0\0\0\0"  # gzip, mtime 0
    tar_bytes = gzip.decompress(compressed)
    assert config["rootfs"] == {"type": "layers", "diff_ids": [sha(tar_bytes)]}
    assert (config["architecture"], config["os"]) == ("wasm", "wasip1")
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        assert sorted(tar.getnames()) == ["plugin.wasm", "runtime-config.json"]
        plugin = tar.extractfile("plugin.wasm")
        runtime = tar.extractfile("runtime-config.json")
        assert plugin is not None and runtime is not None
        assert plugin.read() == MODULE
        assert json.loads(runtime.read())["type"] == "envoy_proxy"
    return digest


def check_oci(layout: Layout, ref: str, root_ids: list[str]) -> str:
    """Istio's extractOCIArtifactImage: exactly two layers, the wasm one holding the raw module."""
    manifest, digest = layout.manifest(ref)
    assert manifest["config"]["mediaType"] == "application/vnd.module.wasm.config.v1+json"
    runtime = json.loads(layout.blob(manifest["config"]))
    assert runtime == {"type": "envoy_proxy", "abiVersions": ["v0.2.1"], "config": {"rootIds": root_ids}}
    assert [layer["mediaType"] for layer in manifest["layers"]] == [
        "application/vnd.module.wasm.config.v1+json",
        "application/vnd.module.wasm.content.layer.v1+wasm",
    ]
    assert [layer["annotations"]["org.opencontainers.image.title"] for layer in manifest["layers"]] == [
        "runtime-config.json",
        "plugin.wasm",
    ]
    assert json.loads(layout.blob(manifest["layers"][0])) == runtime
    assert layout.blob(manifest["layers"][1]) == MODULE
    return digest


def yaml_sha(path: Path) -> tuple[str, str]:
    """(url, sha256) of a WasmPlugin file, and the TrafficExtension next to it must agree."""
    plugin = yaml.safe_load(path.read_text())
    assert (plugin["apiVersion"], plugin["kind"]) == ("extensions.istio.io/v1alpha1", "WasmPlugin")
    extension = yaml.safe_load(path.with_name(path.name.replace(".wasmplugin.", ".trafficextension.")).read_text())
    assert (extension["apiVersion"], extension["kind"]) == ("extensions.istio.io/v1alpha1", "TrafficExtension")
    wasm = extension["spec"]["wasm"]
    assert (wasm["url"], wasm["sha256"]) == (plugin["spec"]["url"], plugin["spec"]["sha256"])
    assert re.fullmatch("[0-9a-f]{64}", plugin["spec"]["sha256"])
    return plugin["spec"]["url"], plugin["spec"]["sha256"]


def test_both_variants_in_a_directory(module: Path, tmp_path: Path) -> None:
    out = tmp_path / "image"
    result = package(module, out, "registry.local:5000/team/my-filter:1.2.3", "both", ["my_root"])
    layout = Layout.from_dir(out)
    assert {d["annotations"]["org.opencontainers.image.ref.name"] for d in layout.index["manifests"]} == {
        "1.2.3",
        "1.2.3-oci",
    }
    compat_digest = check_compat(layout, "1.2.3")
    oci_digest = check_oci(layout, "1.2.3-oci", ["my_root"])
    # Every blob in the layout is referenced (no strays).
    referenced = {
        d["digest"]
        for ref in ("1.2.3", "1.2.3-oci")
        for m, md in [layout.manifest(ref)]
        for d in [m["config"], *m["layers"], {"digest": md}]
    }
    assert {n.removeprefix("blobs/sha256/") for n in layout.files if n.startswith("blobs/")} == {
        d.removeprefix("sha256:") for d in referenced
    }
    # The WasmPlugin points at the compat image, with the manifest digest Istio compares.
    assert result.wasmplugin == tmp_path / "image.wasmplugin.yaml"
    assert yaml_sha(result.wasmplugin) == ("oci://registry.local:5000/team/my-filter:1.2.3", compat_digest[7:])
    assert yaml.safe_load(result.wasmplugin.read_text())["spec"]["pluginName"] == "my_root"
    assert compat_digest != oci_digest


def test_tarball_is_deterministic_and_matches_the_directory(module: Path, tmp_path: Path) -> None:
    first = package(module, tmp_path / "a.tar", "my-filter:v1", "oci")
    again = package(module, tmp_path / "b.tar", "my-filter:v1", "oci")
    assert first.output.read_bytes() == again.output.read_bytes()
    package(module, tmp_path / "dir", "my-filter:v1", "oci")
    from_tar = Layout.from_tar(first.output.read_bytes())
    assert from_tar.files == Layout.from_dir(tmp_path / "dir").files
    digest = check_oci(from_tar, "v1", [])
    assert yaml_sha(tmp_path / "a.wasmplugin.yaml") == ("oci://my-filter:v1", digest[7:])
    # The compat layer (gzip included) is byte-identical on every run, too.
    c1 = package(module, tmp_path / "c1", "x:1", "compat").images[0]
    c2 = package(module, tmp_path / "c2", "x:1", "compat").images[0]
    assert c1.digest == c2.digest


def test_cli(module: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli-image"
    run = subprocess.run(
        [sys.executable, "-m", "proxywasm_build.cli", "package", str(module), "-o", str(out), "--image", "f:2"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    # "f:2" names no registry Istio could pull from: said, not an error (the layout can be pushed later).
    assert "note: the manifests point at oci://f:2, which names no registry" in run.stderr
    layout = Layout.from_dir(out)
    digest = check_compat(layout, "2")
    assert f"compat image 2: {digest}" in run.stdout
    assert yaml_sha(tmp_path / "cli-image.wasmplugin.yaml")[1] == digest[7:]

    not_wasm = tmp_path / "not.wasm"
    not_wasm.write_bytes(b"hello")
    bad = subprocess.run(
        [sys.executable, "-m", "proxywasm_build.cli", "package", str(not_wasm)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1 and "not a WebAssembly module" in bad.stderr


# ---- what the manifests would make of the module, checked before they are written ----

NEEDS_LIMIT = """
import json

import proxywasm
from proxywasm import HttpContext, PluginContext


class Stream(HttpContext):
    pass


@proxywasm.register
class Limits(PluginContext):
    http_context = Stream

    def on_configure(self, configuration):
        self.limit = int(json.loads(configuration)["limit"])
        return True
"""

L4_ONLY = """
import proxywasm
from proxywasm import StreamContext


@proxywasm.register
class Guard(StreamContext):
    pass
"""


def test_a_plugin_config_the_filter_rejects_is_refused(
    build_filter: Any, as_modules: dict[str, Path], tmp_path: Path
) -> None:
    from proxywasm_build.package import IstioOptions

    wasm = build_filter(NEEDS_LIMIT)
    with pytest.raises(ValueError, match="the plugin does not start with this configuration") as refused:
        package(wasm, tmp_path / "bad", istio=IstioOptions(plugin_config={"limt": 3}))
    assert "KeyError: 'limit'" in str(refused.value)  # the filter's own traceback says why
    assert not (tmp_path / "bad").exists()  # nothing written
    result = package(wasm, tmp_path / "good", istio=IstioOptions(plugin_config={"limit": 3}))
    assert result.notes == ()
    # Another SDK's module (AssemblyScript), loaded with its root id as Istio's pluginName gives it.
    options = IstioOptions(plugin_name="config", plugin_config={"a": 1})
    assert package(as_modules["config"], tmp_path / "as", istio=options).notes == ()


def test_a_module_the_host_cannot_run_is_packaged_with_a_note(module: Path, tmp_path: Path) -> None:
    from proxywasm_build.package import IstioOptions

    result = package(module, tmp_path / "fake", istio=IstioOptions(plugin_config={"limit": 3}))
    (note,) = result.notes
    assert note.startswith("the plugin configuration was not checked: the local host could not run")


def test_the_type_must_be_what_the_module_serves(build_filter: Any, tmp_path: Path) -> None:
    from proxywasm_build.build import module_serves
    from proxywasm_build.package import IstioOptions

    l4, http = build_filter(L4_ONLY), build_filter(NEEDS_LIMIT)
    assert (module_serves(l4.read_bytes()), module_serves(http.read_bytes())) == (("stream",), ("http",))
    with pytest.raises(ValueError, match="serves only L4 connections .* pass --type NETWORK"):
        package(l4, tmp_path / "a")
    with pytest.raises(ValueError, match="serves only HTTP streams .* pass --type HTTP"):
        package(http, tmp_path / "b", istio=IstioOptions(type="NETWORK"))
    package(l4, tmp_path / "c", istio=IstioOptions(type="NETWORK"))
    assert module_serves(MODULE) is None  # not ours: nothing to check


NEEDS_THE_MESH = """
import json
import os

import proxywasm
from proxywasm import HttpContext, PluginContext


class Stream(HttpContext):
    pass


@proxywasm.register
class Jwks(PluginContext):
    http_context = Stream

    def on_configure(self, configuration):
        config = json.loads(configuration)
        if config.get("fetch"):  # a JWKS fetch from a mesh cluster the local host does not have
            self.http_call("outbound|443||idp.example.com", lambda response: None, path="/jwks")
        if config.get("needs_pod") and not os.environ.get("POD_NAME"):
            return False
        return bool(config.get("ok", True))
"""


def test_a_configuration_that_needs_the_mesh_is_noted_not_refused(build_filter: Any, tmp_path: Path) -> None:
    from proxywasm_build.package import IstioOptions

    wasm = build_filter(NEEDS_THE_MESH)
    (note,) = package(wasm, tmp_path / "a", istio=IstioOptions(plugin_config={"fetch": True})).notes
    assert note.startswith("the plugin configuration was not confirmed: on_configure failed on a host call")
    assert "HostCallError: proxy_http_call failed: BAD_ARGUMENT" in note
    options = IstioOptions(plugin_config={"needs_pod": True}, env={"POD_NAME": None})
    with pytest.raises(ValueError, match="--env POD_NAME: values from the proxy, unset here"):
        package(wasm, tmp_path / "b", istio=options)
    # A plain rejection is still refused, unless the check is skipped.
    with pytest.raises(ValueError, match="the plugin does not start with this configuration"):
        package(wasm, tmp_path / "c", istio=IstioOptions(plugin_config={"ok": False}))
    unchecked = package(wasm, tmp_path / "d", istio=IstioOptions(plugin_config={"ok": False}), check_config=False)
    assert unchecked.notes == ()


NAMED = """
import proxywasm
from proxywasm import HttpContext, PluginContext


class Stream(HttpContext):
    pass


@proxywasm.register(root_id="named")
class Named(PluginContext):
    http_context = Stream

    def on_configure(self, configuration):
        return self.plugin_name == "prod.edge-limits"  # route metadata and shared data are keyed by it
"""


def test_the_config_check_names_the_plugin_as_istio_does(build_filter: Any, tmp_path: Path) -> None:
    # Istio's pilot: PluginConfig.name is "<namespace>.<WasmPlugin name>", root_id is pluginName.
    from proxywasm_build.package import IstioOptions

    wasm = build_filter(NAMED)
    options = IstioOptions(name="edge-limits", namespace="prod", plugin_name="named", plugin_config={})
    assert package(wasm, tmp_path / "a", istio=options).notes == ()
    with pytest.raises(ValueError) as refused:
        package(wasm, tmp_path / "b", image="registry.local/edge:1", istio=IstioOptions(plugin_config={}))
    assert "root id '' (pluginName), plugin name 'default.edge' (namespace.name)" in str(refused.value)
