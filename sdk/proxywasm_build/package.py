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
import re
import shutil
import tarfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from .build import module_serves

__all__ = [
    "COMPAT_ANNOTATION",
    "IMAGE_CONFIG",
    "IMAGE_INDEX",
    "IMAGE_LAYER_GZIP",
    "IMAGE_MANIFEST",
    "ISTIO_KINDS",
    "WASM_CONFIG",
    "WASM_LAYER",
    "Blob",
    "Image",
    "IstioOptions",
    "Package",
    "TrafficSelector",
    "compat_image",
    "istio_resource",
    "istio_yaml",
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
    trafficextension: Path
    url: str  # what both manifests point at: oci://NAME:TAG of the first image
    notes: tuple[str, ...] = ()  # checks that could not be made (see check_plugin)


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


Phase = Literal["AUTHN", "AUTHZ", "STATS"]
FailStrategy = Literal["FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"]
PluginType = Literal["HTTP", "NETWORK"]
WorkloadMode = Literal["CLIENT", "SERVER", "CLIENT_AND_SERVER"]
PullPolicy = Literal["IfNotPresent", "Always"]
ISTIO_API = "extensions.istio.io/v1alpha1"
ISTIO_KINDS = ("WasmPlugin", "TrafficExtension")


@dataclass(frozen=True)
class TrafficSelector:
    """Which traffic gets the filter (Istio ``TrafficSelector``): a direction and destination ports."""

    mode: WorkloadMode | None = None
    ports: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        selected: dict[str, Any] = {}
        if self.mode:
            selected["mode"] = self.mode
        if self.ports:
            selected["ports"] = [{"number": port} for port in self.ports]
        return selected


@dataclass(frozen=True)
class IstioOptions:
    """The Wasm settings Istio's ``WasmPlugin`` and ``TrafficExtension`` share (istio/api
    ``extensions/v1alpha1/wasm.proto`` and ``traffic_extension.proto``).

    ``env`` maps a VM environment variable to its value, or to ``None`` for ``valueFrom: HOST``
    (the proxy's own variable of that name). ``plugin_config`` (a JSON object) is what
    ``on_configure`` receives, as JSON. ``fail_strategy``: FAIL_CLOSE answers 500s while the plugin
    cannot run, FAIL_OPEN skips it, FAIL_RELOAD (Istio 1.24+) starts a new VM after a crash.
    """

    name: str | None = None
    namespace: str | None = None
    selector: dict[str, str] = field(default_factory=dict)
    phase: Phase | None = None
    priority: int | None = None
    match: tuple[TrafficSelector, ...] = ()
    fail_strategy: FailStrategy = "FAIL_CLOSE"
    plugin_name: str = ""
    plugin_config: dict[str, Any] | None = None
    env: dict[str, str | None] = field(default_factory=dict)
    type: PluginType = "HTTP"
    image_pull_policy: PullPolicy = "IfNotPresent"
    image_pull_secret: str | None = None


def _wasm_settings(url: str, digest: str, options: IstioOptions) -> dict[str, Any]:
    """The fields WasmPlugin.spec and TrafficExtension.spec.wasm have in common."""
    wasm: dict[str, Any] = {"url": url, "sha256": digest.removeprefix("sha256:")}
    wasm["imagePullPolicy"] = options.image_pull_policy
    if options.image_pull_secret:
        wasm["imagePullSecret"] = options.image_pull_secret
    if options.plugin_name:
        wasm["pluginName"] = options.plugin_name
    wasm["pluginConfig"] = dict(options.plugin_config or {})
    wasm["failStrategy"] = options.fail_strategy
    if options.env:
        wasm["vmConfig"] = {
            "env": [
                {"name": key, "valueFrom": "HOST"} if value is None else {"name": key, "value": value}
                for key, value in options.env.items()
            ]
        }
    wasm["type"] = options.type
    return wasm


def istio_resource(kind: str, name: str, url: str, digest: str, options: IstioOptions) -> dict[str, Any]:
    """A ``WasmPlugin`` (Wasm settings in ``spec``) or ``TrafficExtension`` (Istio 1.30+, the same
    settings under ``spec.wasm``) for the module at ``url``; ``digest`` is what Istio checks: for an
    ``oci://`` url the image manifest's sha256, for ``http(s)://`` the module's own."""
    if kind not in ISTIO_KINDS:
        raise ValueError(f"unknown Istio kind {kind!r}: {' or '.join(ISTIO_KINDS)}")
    metadata: dict[str, Any] = {"name": options.name or name}
    if options.namespace:
        metadata["namespace"] = options.namespace
    placement: dict[str, Any] = {}
    if options.selector:
        placement["selector"] = {"matchLabels": dict(options.selector)}
    if options.phase:
        placement["phase"] = options.phase
    if options.priority is not None:
        placement["priority"] = options.priority
    if options.match:
        placement["match"] = [m.to_dict() for m in options.match]
    wasm = _wasm_settings(url, digest, options)
    spec = {**placement, **wasm} if kind == "WasmPlugin" else {**placement, "wasm": wasm}
    return {"apiVersion": ISTIO_API, "kind": kind, "metadata": metadata, "spec": spec}


_PLAIN_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_PLAIN_VALUE = re.compile(r"[A-Za-z][A-Za-z0-9_./-]*\Z")
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "true", "false", "on", "off", "null"})  # YAML 1.1 reads these


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for JSON-like data; strings are JSON-quoted (a JSON string is a YAML scalar)."""
    pad = " " * indent
    if isinstance(value, dict) and value:
        lines = []
        for key, item in value.items():
            name = key if _PLAIN_KEY.match(key) and key.lower() not in _YAML_WORDS else json.dumps(key)
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{name}:\n{to_yaml(item, indent + 2)}")
            else:
                lines.append(f"{pad}{name}: {to_yaml(item).strip()}")
        return "\n".join(lines)
    if isinstance(value, list) and value:
        lines = []
        for item in value:
            text = to_yaml(item, indent + 2)
            lines.append(f"{pad}- {text.lstrip()}")
        return "\n".join(lines)
    if isinstance(value, str) and _PLAIN_VALUE.match(value) and value.lower() not in _YAML_WORDS:
        return pad + value
    return pad + json.dumps(value)


def istio_yaml(resource: dict[str, Any], variant: str = "") -> str:
    """The resource as a commented YAML document."""
    wasm = resource["spec"].get("wasm", resource["spec"])
    what = f" ({variant} variant)" if variant else ""
    header = [
        f"# Istio pulls {wasm['url']}{what} and refuses it unless the image manifest's sha256 matches.",
        "# `proxywasm package --push` pushes it unchanged (so do crane push, oras cp --from-oci-layout, skopeo copy).",
    ]
    if resource["kind"] == "TrafficExtension":
        header.append(
            "# TrafficExtension needs Istio 1.30+; older Istio takes the WasmPlugin written next to this file."
        )
    else:
        header.append("# Istio 1.30+ also takes the TrafficExtension written next to this file (apply one of them).")
    if "selector" not in resource["spec"]:
        header.append("# No selector: every workload in the namespace gets the filter (add --selector app=NAME).")
    return "\n".join(header) + "\n" + to_yaml(resource) + "\n"


def wasmplugin_yaml(name: str, url: str, digest: str, root_id: str = "", variant: str = "") -> str:
    """An Istio ``WasmPlugin`` for the image; ``sha256`` is the manifest digest Istio checks."""
    return istio_yaml(istio_resource("WasmPlugin", name, url, digest, IstioOptions(plugin_name=root_id)), variant)


def _kubernetes_name(text: str) -> str:
    cleaned = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    return cleaned[:63] or "proxywasm-filter"


def check_plugin(
    module: bytes, module_path: Path, options: IstioOptions, *, resource: str = "", check_config: bool = True
) -> tuple[str, ...]:
    """What the manifests would make of the module, checked before they are written: a ``type``
    the module does not serve (Istio would attach an L4-only filter as an HTTP filter, where it
    never runs, or the reverse), and a ``plugin_config`` its ``on_configure`` rejects (loaded in the
    local host as the sidecar's Envoy would load it: root id ``pluginName``, plugin name
    ``NAMESPACE.NAME`` of the ``resource`` as Istio's pilot names it, ``default`` without a
    namespace, and the VM environment; Envoy would reject the plugin). Raises ValueError for either;
    returns notes on checks that could not be made or were inconclusive: the local host has none of
    the mesh's clusters, so an ``on_configure`` that failed on a host call (an ``http_call`` to a
    mesh cluster) is a note, not an error; a rejection with ``--env NAME`` values from the proxy
    (unset here) says so. ``check_config=False`` skips the configuration."""
    serves = module_serves(module, options.plugin_name)  # the plugin Envoy's root id (pluginName) selects
    if serves:
        if options.type == "HTTP" and "http" not in serves:
            raise ValueError(
                f"{module_path} (plugin {options.plugin_name!r}) serves only L4 connections (it makes StreamContexts): "
                "as an HTTP filter "
                "(--type HTTP, the default) Istio would attach it where it never runs; pass --type NETWORK"
            )
        if options.type == "NETWORK" and "stream" not in serves:
            raise ValueError(
                f"{module_path} (plugin {options.plugin_name!r}) serves only HTTP streams (it makes HttpContexts): "
                "as a network filter "
                "(--type NETWORK) it would never run; pass --type HTTP"
            )
    if options.plugin_config is None or not check_config:
        return ()
    from proxywasm_host import ConfigureError, Host, ProxyWasmHostError

    env = {key: value for key, value in options.env.items() if value is not None}
    from_proxy = sorted(key for key, value in options.env.items() if value is None)
    config = json.dumps(options.plugin_config, sort_keys=True)  # Istio hands pluginConfig over as JSON text
    envoy_name = f"{options.namespace or 'default'}.{options.name or resource}"  # istio pilot: Namespace + "." + Name
    try:
        Host.load(
            module,
            root_id=options.plugin_name,
            plugin_name=envoy_name,
            plugin_config=config,
            env=env,
            raise_on_mistake=False,
        )
    except ConfigureError as err:
        text = str(err)
        # The exception that ended on_configure, as the filter's traceback names it last.
        raised = [line for line in text.splitlines() if line and not line.startswith(" ") and "Error:" in line]
        if raised and "HostCallError: " in raised[-1]:
            return (
                "the plugin configuration was not confirmed: on_configure failed on a host call the local host "
                f"cannot answer as the mesh would (it has no mesh clusters): {raised[-1].strip()} "
                "(--no-config-check skips this check)",
            )
        hint = (
            f"\n(--env {', '.join(from_proxy)}: values from the proxy, unset here; if the rejection depends on them, "
            "pass --no-config-check)" if from_proxy else ""
        )  # fmt: skip
        raise ValueError(
            f"--plugin-config: the plugin does not start with this configuration (loaded in the local host as the "
            f"sidecar's Envoy would load it: root id {options.plugin_name!r} (pluginName), plugin name "
            f"{envoy_name!r} (namespace.name)), so Envoy would reject it "
            f"(--no-config-check skips this check):\n{text}{hint}"
        ) from None
    except ProxyWasmHostError as err:
        return (f"the plugin configuration was not checked: the local host could not run {module_path} ({err})",)
    return ()


def package(
    module_path: Path,
    output: Path | None = None,
    image: str | None = None,
    fmt: Format = "compat",
    root_ids: list[str] | None = None,
    istio: IstioOptions | None = None,
    *,
    check_config: bool = True,
) -> Package:
    """Write the OCI layout (a directory, or a tar when `output` ends in ``.tar``) and the Istio
    manifests next to it: ``<layout>.wasmplugin.yaml`` and ``<layout>.trafficextension.yaml``.

    With ``fmt="both"`` the compat image is tagged TAG and the oci variant TAG-oci; the manifests
    point at the first. ``istio.plugin_name`` defaults to the first root id. Before writing, the
    manifests are checked against the module (:func:`check_plugin`). Raises ValueError for a file
    that is not a Wasm module or fails those checks, OSError when a file cannot be read or written.
    """
    module = module_path.read_bytes()
    if module[:4] != b"\0asm":
        raise ValueError(f"{module_path} is not a WebAssembly module (Istio checks the \\0asm magic too)")
    ids = list(root_ids or [])
    options = istio or IstioOptions()
    if not options.plugin_name and ids:
        options = replace(options, plugin_name=ids[0])
    name, tag = split_image(image or f"{module_path.stem}:latest")
    resource = _kubernetes_name(name.rsplit("/", 1)[-1])
    notes = check_plugin(module, module_path, options, resource=resource, check_config=check_config)
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
    url = f"oci://{name}:{refs[0]}"
    base = out.stem if out.suffix == ".tar" else out.name
    written = {}
    for kind in ISTIO_KINDS:
        manifest = istio_resource(kind, resource, url, images[0].digest, options)
        path = out.with_name(f"{base}.{kind.lower()}.yaml")
        path.write_text(istio_yaml(manifest, images[0].variant))
        written[kind] = path
    return Package(tuple(images), tuple(refs), out, written["WasmPlugin"], written["TrafficExtension"], url, notes)
