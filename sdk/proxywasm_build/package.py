"""``proxywasm package``: an OCI image of a proxy-wasm module that Istio can pull, written without Docker.

Istio's agent (``pkg/wasm/imagefetcher.go``) accepts a ``WasmPlugin`` ``url: oci://...`` image in two
layouts from the Wasm image spec (github.com/solo-io/wasm, ``spec/``):

* **compat**: the last layer is ``application/vnd.oci.image.layer.v1.tar+gzip`` (or Docker's
  rootfs diff type) and its tar holds ``plugin.wasm``; the manifest carries the annotation
  ``module.wasm.image/variant: compat``. Ordinary registries and Docker tooling handle it.
* **oci**: exactly two layers, one ``application/vnd.module.wasm.config.v1+json`` (runtime metadata)
  and one ``application/vnd.module.wasm.content.layer.v1+wasm`` holding the raw module bytes.

Istio tries compat first, then oci. For ``oci://`` URLs ``WasmPlugin.spec.sha256`` is compared with
the hex digest of the image *manifest* (for ``http(s)://`` URLs it is the module's own sha256).

The output is an OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256/``), as a directory
or a tar of one, that ``crane push``, ``oras cp --from-oci-layout`` or ``skopeo copy oci:`` can push
unchanged (a push keeps manifest bytes, so the digest, and the ``sha256`` in the YAML, stay valid).
Everything is deterministic: sorted JSON, tar entries with mtime 0 and root ownership, a gzip header
without time or name.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "COMPAT_ANNOTATION",
    "IMAGE_CONFIG",
    "IMAGE_INDEX",
    "IMAGE_LAYER_GZIP",
    "IMAGE_MANIFEST",
    "WASM_CONFIG",
    "WASM_LAYER",
    "Blob",
    "Image",
    "Package",
    "compat_image",
    "oci_image",
    "package",
    "wasmplugin_yaml",
]

Format = Literal["compat", "oci", "both"]

IMAGE_INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
IMAGE_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
WASM_CONFIG = "application/vnd.module.wasm.config.v1+json"
WASM_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"
COMPAT_ANNOTATION = "module.wasm.image/variant"
REF_NAME = "org.opencontainers.image.ref.name"
TITLE = "org.opencontainers.image.title"
PLUGIN_FILE = "plugin.wasm"  # the name Istio looks for in a compat layer
RUNTIME_CONFIG_FILE = "runtime-config.json"
ABI_VERSION = "v0.2.1"


def _json(value: Any) -> bytes:
    """Canonical JSON: the bytes are what gets digested, so they must not vary."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Blob:
    """Content-addressed bytes with their media type."""

    media_type: str
    data: bytes
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return _sha256(self.data)

    def descriptor(self, **annotations: str) -> dict[str, Any]:
        """An OCI content descriptor for this blob."""
        desc: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}
        merged = {**self.annotations, **annotations}
        if merged:
            desc["annotations"] = merged
        return desc


@dataclass(frozen=True)
class Image:
    """One image: its manifest blob and every blob the manifest points to."""

    variant: str
    manifest: Blob
    blobs: tuple[Blob, ...]

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of the manifest: what registries and Istio identify the image by."""
        return self.manifest.digest


def runtime_config(root_ids: list[str]) -> bytes:
    """The Wasm image spec's runtime config (``module.wasm.config.Runtime`` as JSON)."""
    return _json({"type": "envoy_proxy", "abiVersions": [ABI_VERSION], "config": {"rootIds": root_ids}})


def _tar(files: dict[str, bytes], dirs: frozenset[str] = frozenset()) -> bytes:
    """A reproducible tar: sorted names, files 0644 and directories 0755, owner root, mtime 0."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(dirs | set(files)):
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if name in dirs:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(files[name]), 0o644
                tar.addfile(info, io.BytesIO(files[name]))
    return buffer.getvalue()


def _manifest(config: Blob, layers: list[Blob], annotations: dict[str, str]) -> Blob:
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": IMAGE_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
    }
    if annotations:
        manifest["annotations"] = annotations
    return Blob(IMAGE_MANIFEST, _json(manifest))


def compat_image(module: bytes, root_ids: list[str]) -> Image:
    """One tar+gzip layer with ``plugin.wasm`` (and ``runtime-config.json``, which Istio ignores)."""
    tar = _tar({PLUGIN_FILE: module, RUNTIME_CONFIG_FILE: runtime_config(root_ids)})
    # mtime=0 and no file name: the gzip header is the same on every run.
    layer = Blob(IMAGE_LAYER_GZIP, gzip.compress(tar, compresslevel=9, mtime=0))
    config = Blob(
        IMAGE_CONFIG,
        _json(
            {
                "architecture": "wasm",
                "os": "wasip1",
                "config": {},
                # diff_ids name the *uncompressed* layer, as in any OCI image config.
                "rootfs": {"type": "layers", "diff_ids": [_sha256(tar)]},
            }
        ),
    )
    manifest = _manifest(config, [layer], {COMPAT_ANNOTATION: "compat"})
    return Image("compat", manifest, (config, layer))


def oci_image(module: bytes, root_ids: list[str]) -> Image:
    """The Wasm artifact variant: a runtime-config layer and the raw module layer (Istio wants exactly two).

    The runtime config is also the manifest's config, as ``wasme`` (oras) wrote these images.
    """
    config = Blob(WASM_CONFIG, runtime_config(root_ids), {TITLE: RUNTIME_CONFIG_FILE})
    layer = Blob(WASM_LAYER, module, {TITLE: PLUGIN_FILE})
    manifest = _manifest(Blob(WASM_CONFIG, config.data), [config, layer], {})
    return Image("oci", manifest, (config, layer))


@dataclass(frozen=True)
class Package:
    """What ``package()`` wrote: the images (first one is the one the YAML points at) and paths."""

    images: tuple[Image, ...]
    refs: tuple[str, ...]
    output: Path
    wasmplugin: Path


def split_image(image: str) -> tuple[str, str]:
    """``NAME[:TAG]`` -> (NAME, TAG); a ``:`` inside a registry host:port is not a tag."""
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return image, "latest"
    return name, tag


def layout_files(images: list[Image], refs: list[str]) -> dict[str, bytes]:
    """The files of an OCI image layout holding `images`, tagged `refs` (``index.json`` ref names)."""
    files: dict[str, bytes] = {"oci-layout": _json({"imageLayoutVersion": "1.0.0"})}
    manifests = []
    for image, ref in zip(images, refs, strict=True):
        for blob in (*image.blobs, image.manifest):
            files[f"blobs/sha256/{blob.digest.removeprefix('sha256:')}"] = blob.data
        manifests.append(image.manifest.descriptor(**{REF_NAME: ref}))
    files["index.json"] = _json({"schemaVersion": 2, "mediaType": IMAGE_INDEX, "manifests": manifests})
    return files


def wasmplugin_yaml(name: str, url: str, digest: str, root_id: str = "", variant: str = "") -> str:
    """An Istio ``WasmPlugin`` for the image; ``sha256`` is the manifest digest Istio checks."""
    q = json.dumps  # a JSON string is a valid YAML scalar
    lines = [
        f"# Istio pulls {url} ({variant} variant) and refuses it unless the image manifest's sha256 matches.",
        "# Push the layout unchanged (crane push DIR REF, oras cp --from-oci-layout, skopeo copy oci:DIR ...).",
        "apiVersion: extensions.istio.io/v1alpha1",
        "kind: WasmPlugin",
        "metadata:",
        f"  name: {q(name)}",
        "spec:",
        "  # selector:            # without one, every workload in the namespace gets the filter",
        "  #   matchLabels:",
        "  #     app: my-app",
        f"  url: {q(url)}",
        f"  sha256: {q(digest.removeprefix('sha256:'))}",
        "  imagePullPolicy: IfNotPresent",
        "  # phase: AUTHN | AUTHZ | STATS  (default: after Istio's own filters, before the router)",
        "  failStrategy: FAIL_CLOSE",
    ]
    if root_id:
        lines.append(f"  pluginName: {q(root_id)}  # the plugin's root_id")
    lines += ["  pluginConfig: {}  # what on_configure receives, as JSON", ""]
    return "\n".join(lines)


def _kubernetes_name(text: str) -> str:
    cleaned = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    return cleaned[:63] or "proxywasm-filter"


def package(
    module_path: Path,
    output: Path | None = None,
    image: str | None = None,
    fmt: Format = "compat",
    root_ids: list[str] | None = None,
) -> Package:
    """Write the OCI layout (a directory, or a tar when `output` ends in ``.tar``) and the WasmPlugin YAML.

    With ``fmt="both"`` the compat image is tagged TAG and the oci variant TAG-oci; the YAML points at
    the first.
    """
    module = module_path.read_bytes()
    if module[:4] != b"\0asm":
        raise ValueError(f"{module_path} is not a WebAssembly module (Istio checks the \\0asm magic too)")
    ids = list(root_ids or [])
    name, tag = split_image(image or f"{module_path.stem}:latest")
    images: list[Image] = []
    refs: list[str] = []
    if fmt in ("compat", "both"):
        images.append(compat_image(module, ids))
        refs.append(tag)
    if fmt in ("oci", "both"):
        images.append(oci_image(module, ids))
        refs.append(f"{tag}-oci" if fmt == "both" else tag)
    if not images:
        raise ValueError(f"unknown format {fmt!r}: compat, oci or both")
    files = layout_files(images, refs)

    out = output or module_path.with_name(f"{module_path.stem}.oci")
    if out.suffix == ".tar":
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(_tar(files, frozenset({"blobs", "blobs/sha256"})))
    else:
        if out.exists():
            shutil.rmtree(out)  # a stale blob would make the layout lie about its contents
        for rel, data in files.items():
            path = out / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    yaml_path = out.with_name(f"{out.stem if out.suffix == '.tar' else out.name}.wasmplugin.yaml")
    yaml_path.write_text(
        wasmplugin_yaml(
            _kubernetes_name(name.rsplit("/", 1)[-1]),
            f"oci://{name}:{refs[0]}",
            images[0].digest,
            ids[0] if ids else "",
            images[0].variant,
        )
    )
    return Package(tuple(images), tuple(refs), out, yaml_path)
