"""`proxywasm new NAME`: the generated tests pass as generated (pytest in a subprocess, as a user runs
them), and the generated envoy.yaml serves the built filter in real Envoy."""

from __future__ import annotations

import http.client
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from proxywasm_build.envoy import Envoy
from proxywasm_build.upstream import UpstreamServer


def proxywasm(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxywasm_build.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=cwd,
    )


def get(port: int, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request("GET", "/", headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_generated_tests_pass_as_generated(tmp_path: Path) -> None:
    created = proxywasm("new", "hello_auth", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    directory = tmp_path / "hello_auth"
    assert sorted(p.name for p in directory.iterdir()) == [
        "README.md",
        "envoy.yaml",
        "filter.py",
        "requirements.txt",
        "test_filter.py",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=directory,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8 passed" in result.stdout  # four tests, natively and against the built module


def test_generated_envoy_yaml_serves_the_filter(tmp_path: Path) -> None:
    assert proxywasm("new", "edge_guard", cwd=tmp_path).returncode == 0
    directory = tmp_path / "edge_guard"
    built = proxywasm("build", "filter.py", "-o", "edge_guard.wasm", cwd=directory)  # as the README says
    assert built.returncode == 0, built.stderr
    config: dict[str, Any] = yaml.safe_load((directory / "envoy.yaml").read_text())
    # Same config, with ports Envoy picks and the module's path made absolute (Envoy runs elsewhere here).
    listener = config["static_resources"]["listeners"][0]
    listener["address"]["socket_address"]["port_value"] = 0
    config["admin"]["address"]["socket_address"]["port_value"] = 0
    wasm = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]["typed_config"]
    code = wasm["config"]["vm_config"]["code"]["local"]
    assert code["filename"] == "edge_guard.wasm"
    code["filename"] = str(directory / "edge_guard.wasm")
    with UpstreamServer() as upstream:
        cluster = config["static_resources"]["clusters"][0]
        cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"][
            "port_value"
        ] = upstream.port
        with Envoy(config) as envoy:
            status, _, body = get(envoy.port(), {})
            assert (status, body) == (403, b"missing header x-api-key\n")
            status, headers, _ = get(envoy.port(), {"x-api-key": "k"})
            assert status == 200
            assert headers["x-edge-guard"] == "hello from edge_guard"
            assert [r.header("x-api-key") for r in upstream.requests] == ["k"]
            assert envoy.stats("edge_guard_refused") == {"wasmcustom.edge_guard_refused": 1}


def test_new_refuses_bad_names_and_existing_directories(tmp_path: Path) -> None:
    bad = proxywasm("new", "my-filter", cwd=tmp_path)
    assert bad.returncode == 1 and "a filter name is a Python identifier" in bad.stderr
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "filter.py").write_text("# mine\n")
    busy = proxywasm("new", "taken", cwd=tmp_path)
    assert busy.returncode == 1 and "exists and is not empty" in busy.stderr
    assert (tmp_path / "taken" / "filter.py").read_text() == "# mine\n"
