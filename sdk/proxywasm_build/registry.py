"""Push the images ``proxywasm package`` made to an OCI registry, and pull them back the way Istio does.

**Push** goes through the ORAS Python SDK (``oras``, PyPI): it uploads an OCI image layout's blobs and
then the manifest bytes unchanged, so the manifest digest, which is the ``sha256`` Istio checks for an
``oci://`` url, stays the one ``package`` computed. Registries on localhost/127.0.0.1/[::1] are spoken
to over plain HTTP, others over HTTPS unless ``plain_http`` says otherwise. Credentials come from the
docker config (``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``: ``auths``, ``credHelpers``,
``credsStore``), as ``docker login`` writes it; Basic and Bearer-token registries both work.

**Pull** follows istio-agent (istio/istio ``pkg/wasm/imagefetcher.go`` and ``cache.go``): the image
manifest's sha256 must equal the expected ``sha256``; an image index resolves to its linux/amd64 entry
(as go-containerregistry does); then exactly one of three layouts is accepted:

* a Docker v2 image (``application/vnd.docker.distribution.manifest.v2+json``) whose *last* layer is
  ``application/vnd.docker.image.rootfs.diff.tar.gzip`` and holds a file named ``plugin.wasm``;
* the "compat" OCI image: the same with a last layer of ``application/vnd.oci.image.layer.v1.tar+gzip``;
* the "oci" Wasm artifact: exactly two layers, one of them
  ``application/vnd.module.wasm.content.layer.v1+wasm`` holding the raw module.

and the module must start with ``\\0asm`` (8 bytes at least). Anything else raises
:class:`ImageRejected` saying which rule failed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import posixpath
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .package import IMAGE_INDEX, IMAGE_LAYER_GZIP, IMAGE_MANIFEST, PLUGIN_FILE, WASM_LAYER, Image, layout_files

__all__ = [
    "DOCKER_LAYER",
    "DOCKER_MANIFEST",
    "ImageRejected",
    "Pulled",
    "Reference",
    "RegistryError",
    "extract_module",
    "pull",
    "push",
]

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
_ACCEPT = ", ".join([IMAGE_MANIFEST, DOCKER_MANIFEST, IMAGE_INDEX, DOCKER_MANIFEST_LIST])
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")
_PROBE_TIMEOUT_S = 15.0


class RegistryError(RuntimeError):
    """The registry could not be reached, refused the credentials, or answered an error."""


class ImageRejected(ValueError):
    """Istio's agent would refuse this image; the message says which of its rules failed."""


@dataclass(frozen=True)
class Reference:
    """``HOST[:PORT]/REPOSITORY[:TAG|@sha256:HEX]`` (an ``oci://`` prefix is allowed)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Raises ValueError for a reference without a registry host or repository."""
        rest = text.removeprefix("oci://")
        rest, at, digest = rest.partition("@")
        host, slash, path = rest.partition("/")
        if not slash or not path or not ("." in host or ":" in host or host == "localhost"):
            raise ValueError(f"{text!r}: give the registry too, as HOST[:PORT]/NAME[:TAG] (e.g. ghcr.io/me/filter:1.0)")
        repository, colon, tag = path.rpartition(":") if ":" in path else (path, "", "")
        if at and not digest.startswith("sha256:"):
            raise ValueError(f"{text!r}: only sha256 digests are supported")
        return cls(host, repository if colon else path, tag or None, digest or None)

    @property
    def local(self) -> bool:
        """A registry on this machine, spoken to over plain HTTP by default."""
        host = self.registry.rsplit(":", 1)[0] if not self.registry.endswith("]") else self.registry
        return host in _LOCAL_HOSTS

    @property
    def identifier(self) -> str:
        return self.digest or self.tag or "latest"

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, tag)

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}" + (f"@{self.digest}" if self.digest else f":{self.tag or 'latest'}")


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _docker_configs() -> list[str]:
    directory = os.environ.get("DOCKER_CONFIG")
    return [str(Path(directory) / "config.json")] if directory else []


def connect(ref: Reference, plain_http: bool | None = None) -> Any:
    """An ``oras.provider.Registry`` for ``ref``'s registry with credentials loaded.

    One probe of ``/v2/`` first: it fails fast with a clear message when the registry is not there
    (oras retries for about two minutes) and tells Basic from Bearer-token authentication.
    """
    import oras.provider
    import requests

    insecure = ref.local if plain_http is None else plain_http
    scheme = "http" if insecure else "https"
    try:
        probe = requests.get(f"{scheme}://{ref.registry}/v2/", timeout=_PROBE_TIMEOUT_S)
    except requests.exceptions.SSLError as err:
        raise RegistryError(
            f"{ref.registry}: TLS failed ({err}); for a registry without TLS add --plain-http"
        ) from None
    except requests.exceptions.RequestException as err:
        raise RegistryError(f"cannot reach the registry at {scheme}://{ref.registry}: {err}") from None
    challenge = probe.headers.get("Www-Authenticate", "")
    basic = probe.status_code == 401 and challenge.lower().startswith("basic")
    registry = oras.provider.Registry(
        hostname=ref.registry, insecure=insecure, auth_backend="basic" if basic else "token"
    )
    registry.auth.load_configs(registry.get_container(f"{ref.registry}/{ref.repository}"), configs=_docker_configs())
    if basic and not getattr(registry.auth, "_basic_auth", None):  # oras 0.2.43 keeps loaded credentials there
        raise RegistryError(
            f"{ref.registry} wants a user name and password: `docker login {ref.registry}` (or an auths entry in "
            "~/.docker/config.json, or $DOCKER_CONFIG/config.json)"
        )
    return registry


def _check(response: Any, what: str) -> Any:
    if response.status_code in (200, 201, 202):
        return response
    try:
        errors = "; ".join(e.get("message", "") for e in response.json().get("errors", []))
    except ValueError:
        errors = response.text[:200]
    if response.status_code in (401, 403):
        raise RegistryError(f"{what}: the registry refused the credentials ({response.status_code} {errors})")
    raise RegistryError(f"{what}: {response.status_code} {response.reason} {errors}".rstrip())


def push(images: Sequence[Image], tags: Sequence[str], target: Reference, plain_http: bool | None = None) -> list[str]:
    """Push each image under ``target``'s repository with its tag; returns the pushed references.

    Raises RegistryError when the registry is unreachable, refuses the credentials, or stores a
    manifest whose digest is not the one computed here.
    """
    import oras.layout

    registry = connect(target, plain_http)
    pushed = []
    with tempfile.TemporaryDirectory(prefix="proxywasm-push-") as tmp:
        for rel, data in layout_files(list(images), list(tags)).items():
            path = Path(tmp, rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        layout = oras.layout.Layout(tmp)
        for image, tag in zip(images, tags, strict=True):
            ref = target.with_tag(tag)
            try:
                response = layout.push_to_registry(registry, target=str(ref), tag=tag)
            except ValueError as err:  # oras reports a refused upload as ValueError
                if "UNAUTHORIZED" in str(err) or "DENIED" in str(err):
                    raise RegistryError(
                        f"pushing {ref}: the registry refused the credentials from the docker config ({err})"
                    ) from None
                raise RegistryError(f"pushing {ref}: {err}") from None
            _check(response, f"pushing {ref}")
            stored = response.headers.get("Docker-Content-Digest")
            if stored and stored != image.digest:
                raise RegistryError(f"{ref}: the registry stored manifest {stored}, not {image.digest}")
            pushed.append(str(ref))
    return pushed


# ---- pulling the way istio-agent does ----


@dataclass(frozen=True)
class Pulled:
    """A module Istio would accept: where from, the manifest digest it checks, and which layout held it."""

    reference: str
    digest: str
    variant: str  # "docker", "compat" or "oci"
    module: bytes


def _plugin_from_tar_gzip(data: bytes) -> bytes:
    """The first entry whose base name is plugin.wasm (Istio: extractWasmPluginBinary)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), mode="r:") as tar:
            for member in tar:
                if posixpath.basename(member.name) == PLUGIN_FILE:
                    extracted = tar.extractfile(member)
                    if extracted is None:
                        raise ImageRejected(f"{member.name} in the layer is not a regular file")
                    return extracted.read()
    except (OSError, EOFError, tarfile.TarError) as err:
        raise ImageRejected(f"the layer is not a tar+gzip archive ({err})") from None
    raise ImageRejected(f"no {PLUGIN_FILE} in the layer")


def extract_module(manifest: dict[str, Any], blob: Callable[[dict[str, Any]], bytes]) -> tuple[bytes, str]:
    """(module, variant) from an image manifest by istio-agent's rules; ``blob(descriptor)`` fetches a
    layer. Raises ImageRejected naming the rule each layout broke."""
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise ImageRejected("the manifest has no layers list")
    if manifest.get("mediaType") == DOCKER_MANIFEST:
        if not layers:
            raise ImageRejected("Docker image: it has no layers (Istio reads plugin.wasm from the last one)")
        if layers[-1].get("mediaType") != DOCKER_LAYER:
            raise ImageRejected(
                f"Docker image: the last layer is {layers[-1].get('mediaType')}, Istio wants {DOCKER_LAYER}"
            )
        return _plugin_from_tar_gzip(blob(layers[-1])), "docker"
    reasons = []
    if not layers:
        reasons.append("compat: no layers")
    elif layers[-1].get("mediaType") != IMAGE_LAYER_GZIP:
        reasons.append(f"compat: the last layer is {layers[-1].get('mediaType')}, not {IMAGE_LAYER_GZIP}")
    else:
        try:
            return _plugin_from_tar_gzip(blob(layers[-1])), "compat"
        except ImageRejected as err:
            reasons.append(f"compat: {err}")
    if len(layers) != 2:
        reasons.append(f"oci: {len(layers)} layer(s), Istio wants exactly 2")
    else:
        wasm = [layer for layer in layers if layer.get("mediaType") == WASM_LAYER]
        if wasm:
            return blob(wasm[0]), "oci"
        reasons.append(f"oci: no layer of type {WASM_LAYER}")
    raise ImageRejected("not a Wasm image Istio accepts: " + "; ".join(reasons))


def check_module(module: bytes) -> None:
    """Istio's last check (``isValidWasmBinary``): the \\0asm magic and 8 header bytes."""
    if len(module) < 8 or module[:4] != b"\0asm":
        raise ImageRejected(f"the module is not WebAssembly: it starts with {module[:8]!r}, not b'\\x00asm'")


def _platform_child(index: dict[str, Any]) -> dict[str, Any]:
    """go-containerregistry's choice from an index: linux/amd64 (an entry without platform counts as it)."""
    for child in index.get("manifests", []):
        platform = child.get("platform") or {"os": "linux", "architecture": "amd64"}
        if (platform.get("os"), platform.get("architecture")) == ("linux", "amd64"):
            return dict(child)
    raise ImageRejected("an image index without a linux/amd64 entry: Istio resolves an index to that platform's image")


def pull(reference: str, expected_sha256: str | None = None, plain_http: bool | None = None) -> Pulled:
    """Fetch ``reference`` and return the module Istio would run, checking ``expected_sha256`` (hex, as
    in ``WasmPlugin.spec.sha256``) against the image manifest's digest. Raises ImageRejected for what
    Istio would refuse and RegistryError for transport and credential failures."""
    ref = Reference.parse(reference)
    registry = connect(ref, plain_http)
    base = f"{registry.prefix}://{ref.registry}/v2/{ref.repository}"

    def manifest_at(identifier: str) -> tuple[bytes, str]:
        response = _check(
            registry.do_request(f"{base}/manifests/{identifier}", "GET", headers={"Accept": _ACCEPT}),
            f"fetching the manifest of {ref}",
        )
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return bytes(response.content), media_type

    data, media_type = manifest_at(ref.identifier)
    try:
        manifest = json.loads(data)
    except ValueError:
        raise ImageRejected(f"{ref}: the manifest is not JSON") from None
    media_type = manifest.get("mediaType") or media_type
    if media_type in DOCKER_SCHEMA1:
        raise ImageRejected(f"{ref}: a Docker schema 1 manifest, which Istio does not read")
    if media_type in (IMAGE_INDEX, DOCKER_MANIFEST_LIST):
        child = _platform_child(manifest)
        data, _ = manifest_at(child["digest"])
        manifest = json.loads(data)
    digest = _sha256(data)
    if expected_sha256 is not None and digest.removeprefix("sha256:") != expected_sha256.removeprefix("sha256:"):
        raise ImageRejected(
            f"{ref}: the image manifest's sha256 is {digest.removeprefix('sha256:')}, the expected sha256 is "
            f"{expected_sha256.removeprefix('sha256:')} (Istio: 'has checksum ..., which does not match')"
        )

    def blob(descriptor: dict[str, Any]) -> bytes:
        response = _check(
            registry.get_blob(f"{ref.registry}/{ref.repository}", descriptor["digest"]),
            f"fetching {descriptor['digest']}",
        )
        content = bytes(response.content)
        if _sha256(content) != descriptor["digest"]:
            raise RegistryError(f"blob {descriptor['digest']} of {ref} does not hash to its digest")
        return content

    module, variant = extract_module(manifest, blob)
    check_module(module)
    return Pulled(str(ref), digest, variant, module)
