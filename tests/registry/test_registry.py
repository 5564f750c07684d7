"""`proxywasm package --push` and `proxywasm pull` against a real registry: Debian's `docker-registry`
(distribution 2.8) started on 127.0.0.1 with a temporary config and storage, pulled back with `skopeo`
(an independent client) and with `proxywasm pull` (istio-agent's rules). Bytes and digests must
survive the round trip; every image layout Istio refuses is refused here with its reason."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import requests
import yaml

from proxywasm_build.package import IMAGE_CONFIG, IMAGE_INDEX, IMAGE_LAYER_GZIP, IMAGE_MANIFEST, WASM_CONFIG, WASM_LAYER
from proxywasm_build.registry import DOCKER_LAYER, DOCKER_MANIFEST, ImageRejected, Reference, RegistryError, pull

FILTER = """
import proxywasm
from proxywasm import HttpContext


@proxywasm.register
class Hello(HttpContext):
    def on_response_headers(self, headers, end_of_stream):
        headers["x-hello"] = "from the registry"
"""
START_TIMEOUT_S = 90.0  # the registry is usually up in well under a second; allow for a loaded machine


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    proc: subprocess.Popen[bytes]
    log: Path


def start_registry(root: Path, htpasswd: Path | None = None) -> Registry:
    if shutil.which("docker-registry") is None:
        pytest.fail("docker-registry is not installed (./dev.sh setup installs it from Debian)", pytrace=False)
    root.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}, "delete": {"enabled": True}},
        "http": {"addr": "127.0.0.1:0", "secret": "test-only"},  # port 0: the log names the port it got
    }
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "proxywasm-test", "path": str(htpasswd)}}
    (root / "config.yml").write_text(json.dumps(config))
    log = root / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["docker-registry", "serve", str(root / "config.yml")], stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    host = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"docker-registry exited with {proc.returncode}:\n{log.read_text()}", pytrace=False)
        if host is None:
            found = re.search(r"listening on (127\.0\.0\.1:\d+)", log.read_text())
            host = found.group(1) if found else None
        if host is not None:
            try:
                if requests.get(f"http://{host}/v2/", timeout=5).status_code in (200, 401):
                    return Registry(host, proc, log)
            except requests.RequestException:
                pass
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    pytest.fail(f"docker-registry did not answer within {START_TIMEOUT_S}s:\n{log.read_text()}", pytrace=False)


def stop_registry(registry: Registry) -> None:
    registry.proc.terminate()
    try:
        registry.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        registry.proc.kill()
        registry.proc.wait()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    started = start_registry(tmp_path_factory.mktemp("registry"))
    yield started
    stop_registry(started)


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("auth-registry")
    htpasswd = root / "htpasswd"
    htpasswd.write_bytes(b"alice:" + bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)) + b"\n")
    started = start_registry(root, htpasswd)
    yield started
    stop_registry(started)


@pytest.fixture(scope="module")
def module(build_filter: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("module") / "hello.wasm"
    path.write_bytes(build_filter(FILTER).read_bytes())
    return path


def proxywasm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxywasm_build.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, **(env or {})},
    )


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def skopeo(*args: str) -> bytes:
    if shutil.which("skopeo") is None:
        pytest.fail("skopeo is not installed (./dev.sh setup installs it from Debian)", pytrace=False)
    result = subprocess.run(["skopeo", *args], capture_output=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def test_push_round_trip_keeps_bytes_and_digests(registry: Registry, module: Path, tmp_path: Path) -> None:
    ref = f"{registry.host}/team/hello:1.0"
    out = tmp_path / "hello.oci"
    result = proxywasm("package", str(module), "-o", str(out), "--format", "both", "--push", ref)
    assert result.returncode == 0, result.stderr
    digests = dict(re.findall(r"^pushed \S+:(1\.0(?:-oci)?): (sha256:[0-9a-f]{64})$", result.stdout, re.M))
    assert set(digests) == {"1.0", "1.0-oci"}, result.stdout
    assert f"verified {ref} as Istio pulls it (compat layout, sha256 {digests['1.0'][7:]})" in result.stdout

    # The manifests point at what was pushed, with the digest the registry serves.
    plugin = yaml.safe_load((tmp_path / "hello.oci.wasmplugin.yaml").read_text())
    extension = yaml.safe_load((tmp_path / "hello.oci.trafficextension.yaml").read_text())
    assert plugin["spec"]["url"] == extension["spec"]["wasm"]["url"] == f"oci://{ref}"
    assert plugin["spec"]["sha256"] == extension["spec"]["wasm"]["sha256"] == digests["1.0"][7:]

    layout_blobs = {p.name: p.read_bytes() for p in (out / "blobs" / "sha256").iterdir()}
    for tag, digest in digests.items():
        source = f"docker://{registry.host}/team/hello:{tag}"
        raw = skopeo("inspect", "--raw", "--tls-verify=false", source)
        assert sha(raw) == digest
        assert raw == layout_blobs[digest[7:]]  # the registry serves our manifest bytes unchanged
        copy = tmp_path / f"skopeo-{tag}"
        skopeo("copy", "--src-tls-verify=false", source, f"oci:{copy}:{tag}")
        index = json.loads((copy / "index.json").read_text())
        assert [m["digest"] for m in index["manifests"]] == [digest]
        pulled = {p.name: p.read_bytes() for p in (copy / "blobs" / "sha256").iterdir()}
        manifest = json.loads(pulled[digest[7:]])
        for descriptor in [manifest["config"], *manifest["layers"]]:
            name = descriptor["digest"][7:]
            assert pulled[name] == layout_blobs[name]
            assert sha(pulled[name]) == descriptor["digest"]

        # istio-agent's rules, with the sha256 the YAML would carry.
        written = tmp_path / f"pulled-{tag}.wasm"
        back = proxywasm("pull", f"oci://{registry.host}/team/hello:{tag}", "--sha256", digest[7:], "-o", str(written))
        assert back.returncode == 0, back.stderr
        assert written.read_bytes() == module.read_bytes()
        assert ("compat layout" if tag == "1.0" else "oci layout") in back.stdout


def test_credentials_come_from_the_docker_config(auth_registry: Registry, module: Path, tmp_path: Path) -> None:
    ref = f"{auth_registry.host}/private/hello:1"
    docker_config = tmp_path / "docker"
    docker_config.mkdir()
    home = {"HOME": str(tmp_path), "DOCKER_CONFIG": str(docker_config)}

    anonymous = proxywasm("package", str(module), "-o", str(tmp_path / "a.oci"), "--push", ref, env=home)
    assert anonymous.returncode == 1
    assert (
        f"{auth_registry.host} wants a user name and password: `docker login {auth_registry.host}`" in anonymous.stderr
    )

    def login(password: str) -> None:
        token = base64.b64encode(f"alice:{password}".encode()).decode()
        (docker_config / "config.json").write_text(json.dumps({"auths": {auth_registry.host: {"auth": token}}}))

    login("wrong")
    refused = proxywasm("package", str(module), "-o", str(tmp_path / "b.oci"), "--push", ref, env=home)
    assert refused.returncode == 1
    assert "the registry refused the credentials" in refused.stderr

    login("s3cret")
    pushed = proxywasm("package", str(module), "-o", str(tmp_path / "c.oci"), "--push", ref, env=home)
    assert pushed.returncode == 0, pushed.stderr
    digest = re.search(r"^pushed \S+: (sha256:[0-9a-f]{64})$", pushed.stdout, re.M)
    assert digest
    os.environ["DOCKER_CONFIG"], saved = str(docker_config), os.environ.get("DOCKER_CONFIG")
    try:
        assert pull(ref, digest[1]).module == module.read_bytes()
    finally:
        if saved is None:
            del os.environ["DOCKER_CONFIG"]
        else:
            os.environ["DOCKER_CONFIG"] = saved


def test_unreachable_registry_and_bad_references() -> None:
    with pytest.raises(RegistryError, match="cannot reach the registry at http://127.0.0.1:1"):
        pull("127.0.0.1:1/team/hello:1")
    with pytest.raises(ValueError, match="give the registry too"):
        Reference.parse("hello:1")
    assert Reference.parse("oci://localhost:5000/a/b@sha256:" + "0" * 64).digest == "sha256:" + "0" * 64
    assert Reference.parse("ghcr.io/me/f").tag is None and not Reference.parse("ghcr.io/me/f").local


# ---- images Istio accepts or refuses, pushed as raw manifests ----


def put_image(
    registry: Registry, repository: str, tag: str, manifest: dict[str, Any], blobs: list[bytes], media_type: str = ""
) -> str:
    """Upload blobs and a manifest with plain registry API calls (test-only: any layout, even broken ones)."""
    base = f"http://{registry.host}/v2/{repository}"
    for blob in blobs:
        start = requests.post(f"{base}/blobs/uploads/", timeout=30)
        assert start.status_code == 202, start.text
        location = start.headers["Location"]
        location = location if location.startswith("http") else f"http://{registry.host}{location}"
        done = requests.put(location, params={"digest": sha(blob)}, data=blob, timeout=30)
        assert done.status_code == 201, done.text
    data = json.dumps(manifest).encode()
    content_type = media_type or manifest.get("mediaType", IMAGE_MANIFEST)
    put = requests.put(f"{base}/manifests/{tag}", data=data, headers={"Content-Type": content_type}, timeout=30)
    assert put.status_code == 201, put.text
    return sha(data)


def descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha(data), "size": len(data)}


def tar_gzip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), mtime=0)


WASM = b"\0asm\x01\x00\x00\x00" + b"\x01" * 32
CONFIG = b'{"architecture":"wasm","os":"wasip1"}'


def image(layers: list[tuple[str, bytes]], media_type: str = IMAGE_MANIFEST, config_type: str = IMAGE_CONFIG) -> Any:
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(config_type, CONFIG),
        "layers": [descriptor(t, d) for t, d in layers],
    }
    return manifest, [CONFIG, *(d for _, d in layers)]


ACCEPTED = {
    "docker": image([(DOCKER_LAYER, tar_gzip({"etc/x": b"x"})), (DOCKER_LAYER, tar_gzip({"./plugin.wasm": WASM}))],
                    DOCKER_MANIFEST, "application/vnd.docker.container.image.v1+json"),
    "compat": image([(IMAGE_LAYER_GZIP, tar_gzip({"plugin.wasm": WASM}))]),
    "oci": image([(WASM_CONFIG, b"{}"), (WASM_LAYER, WASM)], config_type=WASM_CONFIG),
}  # fmt: skip
REJECTED = {
    "single raw-wasm layer": (
        image([(WASM_LAYER, WASM)], config_type=WASM_CONFIG),
        "compat: the last layer is application/vnd.module.wasm.content.layer.v1+wasm, not "
        "application/vnd.oci.image.layer.v1.tar+gzip; oci: 1 layer(s), Istio wants exactly 2",
    ),
    "compat without plugin.wasm": (
        image([(IMAGE_LAYER_GZIP, tar_gzip({"filter.wasm": WASM}))]),
        "compat: no plugin.wasm in the layer; oci: 1 layer(s)",
    ),
    "plugin.wasm not in the last layer": (
        image([(IMAGE_LAYER_GZIP, tar_gzip({"plugin.wasm": WASM})), (IMAGE_LAYER_GZIP, tar_gzip({"x": b"x"}))]),
        "compat: no plugin.wasm in the layer; oci: no layer of type application/vnd.module.wasm.content.layer.v1+wasm",
    ),
    "uncompressed tar layer": (
        image([(IMAGE_LAYER_GZIP.removesuffix("+gzip"), b"not-gzip")]),
        "compat: the last layer is application/vnd.oci.image.layer.v1.tar, not",
    ),
    "three layers with wasm": (
        image([(WASM_CONFIG, b"{}"), (WASM_LAYER, WASM), (WASM_CONFIG, b"[]")], config_type=WASM_CONFIG),
        "oci: 3 layer(s), Istio wants exactly 2",
    ),
    "docker image with an OCI layer": (
        image([(IMAGE_LAYER_GZIP, tar_gzip({"plugin.wasm": WASM}))], DOCKER_MANIFEST),
        "Docker image: the last layer is application/vnd.oci.image.layer.v1.tar+gzip, Istio wants "
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    ),
    "not WebAssembly": (
        image([(IMAGE_LAYER_GZIP, tar_gzip({"plugin.wasm": b"print('hi')\n"}))]),
        "the module is not WebAssembly: it starts with b\"print('h\", not b'\\x00asm'",
    ),
    "corrupt gzip": (image([(IMAGE_LAYER_GZIP, b"\x1f\x8bnot really")]), "compat: the layer is not a tar+gzip archive"),
}


@pytest.mark.parametrize("variant", sorted(ACCEPTED))
def test_pull_accepts_istios_three_layouts(registry: Registry, variant: str) -> None:
    manifest, blobs = ACCEPTED[variant]
    digest = put_image(registry, "layouts/accepted", variant, manifest, blobs)
    pulled = pull(f"{registry.host}/layouts/accepted:{variant}", digest)
    assert (pulled.variant, pulled.module, pulled.digest) == (variant, WASM, digest)


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_pull_rejects_what_istio_rejects(registry: Registry, case: str) -> None:
    (manifest, blobs), reason = REJECTED[case]
    tag = re.sub(r"[^a-z0-9]+", "-", case)
    put_image(registry, "layouts/rejected", tag, manifest, blobs)
    with pytest.raises(ImageRejected) as rejected:
        pull(f"{registry.host}/layouts/rejected:{tag}")
    assert reason in str(rejected.value)
    cli = proxywasm("pull", f"{registry.host}/layouts/rejected:{tag}")
    assert cli.returncode == 1 and cli.stderr.startswith("Istio would reject this image: ")


def test_pull_checks_the_manifest_digest(registry: Registry) -> None:
    manifest, blobs = ACCEPTED["compat"]
    digest = put_image(registry, "layouts/digest", "v1", manifest, blobs)
    wrong = "f" * 64
    with pytest.raises(ImageRejected, match=f"manifest's sha256 is {digest[7:]}, the expected sha256 is {wrong}"):
        pull(f"{registry.host}/layouts/digest:v1", wrong)
    layer_digest = manifest["layers"][0]["digest"][7:]  # the layer's (module's) digest is not what Istio checks
    with pytest.raises(ImageRejected, match="does not match"):
        pull(f"{registry.host}/layouts/digest:v1", layer_digest)


def test_pull_resolves_an_index_to_linux_amd64(registry: Registry) -> None:
    manifest, blobs = ACCEPTED["oci"]
    child = put_image(registry, "layouts/index", "child", manifest, blobs)
    size = len(json.dumps(manifest).encode())

    def index(platform: dict[str, str] | None) -> dict[str, Any]:
        entry: dict[str, Any] = {"mediaType": IMAGE_MANIFEST, "digest": child, "size": size}
        if platform:
            entry["platform"] = platform
        return {"schemaVersion": 2, "mediaType": IMAGE_INDEX, "manifests": [entry]}

    put_image(registry, "layouts/index", "amd64", index({"os": "linux", "architecture": "amd64"}), [])
    put_image(registry, "layouts/index", "no-platform", index(None), [])
    put_image(registry, "layouts/index", "arm64", index({"os": "linux", "architecture": "arm64"}), [])
    for tag in ("amd64", "no-platform"):
        pulled = pull(f"{registry.host}/layouts/index:{tag}", child)  # Istio checks the image's digest
        assert (pulled.digest, pulled.module) == (child, WASM)
    with pytest.raises(ImageRejected, match="an image index without a linux/amd64 entry"):
        pull(f"{registry.host}/layouts/index:arm64")
