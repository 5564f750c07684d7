"""`proxywasm run` as a user runs it, in real Envoy: callout clusters from `--cluster`, the hint for a
callout to a cluster Envoy does not know, a first configuration Envoy rejects (exit 1 with Envoy's
reason instead of serving 500s), the admin and Prometheus URLs, stats tags in the bootstrap, and an
L4 filter served on a TCP listener."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxywasm_build.envoy import Cluster
from proxywasm_build.run import RunError, Runner, RunOptions, parse_cluster
from proxywasm_build.upstream import RecordedRequest, Response, UpstreamServer

CALLOUT_FILTER = """
import proxywasm
from proxywasm import Action, HttpContext


@proxywasm.register
class AskAuth(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        self.user = headers.get("x-user") or "nobody"
        cluster = headers.get("x-cluster") or "auth"
        self.http_call(cluster, self.on_answer, path="/check/" + self.user)
        return Action.PAUSE

    def on_answer(self, response):
        if response.status == 200:
            self.resume_request()
        else:
            self.send_response(403, "auth said " + str(response.status) + "\\n")
"""

CONFIGURE_FAILS = """
import proxywasm
from proxywasm import HttpContext, PluginContext


class Never(HttpContext):
    pass


@proxywasm.register
class Plugin(PluginContext):
    http_context = Never

    def on_configure(self, configuration):
        raise ValueError("threshold must be a number, got " + repr(bytes(configuration)))
"""

COUNTER_FILTER = """
import proxywasm
from proxywasm import Counter, HttpContext

hits = {}


@proxywasm.register
class CountRoutes(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        route = headers.get("x-route") or "none"
        if route not in hits:
            hits[route] = Counter("hits_route=" + route)
        hits[route].increment()
"""


class Output:
    """Lines printed by `proxywasm run` (stdout and stderr merged), read by a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 180) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    match = regex.search(line)
                    if match:
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"{pattern!r} not printed within {timeout}s; output:\n" + "\n".join(self.lines))
                self._cond.wait(remaining)


def start_run(*args: str) -> tuple[subprocess.Popen[str], Output]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxywasm_build.cli", "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    return proc, Output(proc)


def run_to_end(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``proxywasm run ARGS`` that is expected to stop by itself (a refusal, a failed build)."""
    command = [sys.executable, "-m", "proxywasm_build.cli", "run", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, env=env)


def get(port: int, path: str = "/", headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture
def auth_server() -> Iterator[UpstreamServer]:
    def decide(request: RecordedRequest) -> Response:
        return Response(200 if request.path == "/check/alice" else 401, b"")

    with UpstreamServer(decide) as server:
        yield server


@pytest.fixture
def cleanup() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_cluster_flag_serves_callouts_and_names_unknown_clusters(
    tmp_path: Path, auth_server: UpstreamServer, cleanup: list[subprocess.Popen[str]]
) -> None:
    source = tmp_path / "ask_auth.py"
    source.write_text(CALLOUT_FILTER)
    proc, out = start_run(str(source), "--port", "0", "--cluster", f"auth=127.0.0.1:{auth_server.port}")
    cleanup.append(proc)
    port = int(out.wait_for(r"Envoy is serving the filter on http://127\.0\.0\.1:(\d+)")[1])
    out.wait_for(rf"callout clusters: auth -> 127\.0\.0\.1:{auth_server.port}")
    admin = out.wait_for(r"admin: (http://127\.0\.0\.1:\d+)   metrics: (http://127\.0\.0\.1:\d+/stats/prometheus)")
    assert admin[2] == admin[1] + "/stats/prometheus"
    with urllib.request.urlopen(admin[2], timeout=10) as prometheus:
        assert prometheus.status == 200
        assert b"# TYPE envoy_" in prometheus.read()

    status, body = get(port, "/hello", {"x-user": "alice"})
    assert status == 200, body  # the demo echo upstream answered, after the auth cluster said yes
    assert b'"path": "/hello"' in body
    status, body = get(port, "/hello", {"x-user": "mallory"})
    assert (status, body) == (403, b"auth said 401\n")
    assert [r.path for r in auth_server.requests] == ["/check/alice", "/check/mallory"]

    status, _ = get(port, "/", {"x-cluster": "billing"})
    assert status == 500  # the callback raised HostCallError: FAIL_CLOSED
    hint = out.wait_for(r"the filter called .* Envoy does not know .*Envoy knows: (.*)\. Add one with --cluster")
    assert hint[1] == "auth, upstream"
    assert "BAD_ARGUMENT" in out.text()

    log = Path(out.wait_for(r"log: (\S+)   pid")[1])
    workdir = next(p for p in log.parents if p.name.startswith("proxywasm-run-"))
    assert workdir.is_dir()
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert "proxywasm: stopping" in out.text()
    assert not workdir.exists()  # a clean stop leaves no temporary directory behind


def test_rejected_first_configuration_exits_with_envoys_reason(
    tmp_path: Path, cleanup: list[subprocess.Popen[str]]
) -> None:
    source = tmp_path / "strict.py"
    source.write_text(CONFIGURE_FAILS)
    proc, out = start_run(str(source), "--port", "0", "--config", '{"threshold": "high"}')
    cleanup.append(proc)
    assert proc.wait(timeout=300) == 1, out.text()
    time.sleep(0.2)  # the reader thread drains the pipe
    text = out.text()
    assert "error: Envoy rejected the filter:" in text
    assert 'ValueError: threshold must be a number, got b\'{"threshold": "high"}\'' in text
    assert "Filesystem config update rejected" in text
    assert "serving" not in text  # no claim to serve, and no Envoy left behind
    assert not re.search(r"pid: \d+", text)
    log = Path(re.findall(r"Envoy's log: (\S+)", text)[-1])  # kept for a look afterwards
    assert "Filesystem config update rejected" in log.read_text()
    shutil.rmtree(log.parents[1])


def test_bad_cluster_flag_is_refused_before_anything_starts(tmp_path: Path) -> None:
    source = tmp_path / "ask_auth.py"
    source.write_text(CALLOUT_FILTER)
    result = run_to_end(str(source), "--cluster", "auth:9000")
    assert result.returncode == 1
    assert "--cluster 'auth:9000': expected NAME=HOST:PORT" in result.stderr


def test_a_first_build_that_fails_leaves_no_folder(tmp_path: Path) -> None:
    source = tmp_path / "broken.py"
    source.write_text("import proxywasm\n\ndef oops(:\n")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    result = run_to_end(str(source), "--port", "0", env={**os.environ, "TMPDIR": str(scratch)})
    assert result.returncode == 1 and "broken.py:3" in result.stderr, result.stderr
    assert not list(scratch.glob("proxywasm-run-*"))  # Envoy never ran: no log to keep


def test_parse_cluster() -> None:
    assert parse_cluster("auth=127.0.0.1:9000") == Cluster("auth", 9000, host="127.0.0.1")
    assert parse_cluster("grpc=h2c://localhost:50051") == Cluster("grpc", 50051, host="localhost", http2=True)
    assert parse_cluster("v6=[::1]:80") == Cluster("v6", 80, host="::1")
    assert Cluster("a", 1, host="127.0.0.1").to_dict()["type"] == "STATIC"
    assert Cluster("a", 1, host="auth.internal").to_dict()["type"] == "STRICT_DNS"
    for bad in ("auth", "=1.2.3.4:80", "auth=1.2.3.4", "auth=1.2.3.4:http", "auth=:80", "auth=1.2.3.4:70000"):
        with pytest.raises(RunError, match="expected NAME=HOST:PORT"):
            parse_cluster(bad)


def test_upstream_option_takes_host_port_or_port(tmp_path: Path) -> None:
    for given, expected in (
        ("10.1.2.3:8080", Cluster("upstream", 8080, host="10.1.2.3")),
        (":9000", Cluster("upstream", 9000)),
    ):
        runner = Runner(RunOptions(tmp_path / "f.py", upstream=given, workdir=tmp_path / "w"), say=lambda _: None)
        assert runner._clusters()[0] == expected
    with pytest.raises(RunError, match="--upstream .nowhere.: expected HOST:PORT or :PORT"):
        Runner(
            RunOptions(tmp_path / "f.py", upstream="nowhere", workdir=tmp_path / "w"), say=lambda _: None
        )._clusters()


def test_duplicate_cluster_names_are_refused(tmp_path: Path) -> None:
    source = tmp_path / "f.py"
    source.write_text(CALLOUT_FILTER)
    runner = Runner(RunOptions(source, clusters=(Cluster("upstream", 1),), workdir=tmp_path / "w"), say=lambda _: None)
    with pytest.raises(RunError, match="cluster upstream given twice"):
        runner.start()
    runner.stop()


LABELLED_FILTER = """
import proxywasm
from proxywasm import Counter, HttpContext

hits = Counter("hits", labels=("route",))


@proxywasm.register
class CountRoutes(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        hits.labels(route=headers.get("x-route") or "none").increment()
"""


@pytest.mark.parametrize("enabled", [True, False])
def test_stats_tags_reach_envoys_stats_config(tmp_path: Path, enabled: bool) -> None:
    source = tmp_path / "count_routes.py"
    source.write_text(LABELLED_FILTER)
    said: list[str] = []
    runner = Runner(RunOptions(source, port=0, stats_tags=enabled, workdir=tmp_path / "w"), said.append)
    try:
        runner.start()
        assert runner.envoy is not None
        assert get(runner.envoy.port(), "/", {"x-route": "api"})[0] == 200
        status, text = runner.envoy.admin_get("/stats/prometheus")
        assert status == 200
        line = next(ln for ln in text.splitlines() if ln.startswith("hits") and not ln.startswith("#"))
        if enabled:
            assert line == 'hits{route="api"} 1'
            assert any(s.startswith("stats tags: route") for s in said)
        else:
            assert line == "hits_route_api{} 1"  # the raw name, sanitised, no labels
    finally:
        runner.stop()


L4_FILTER = """
import os

import proxywasm
from proxywasm import Action, StreamContext, log


@proxywasm.register
class Tag(StreamContext):
    def on_downstream_data(self, data, end_of_stream):
        if data.read().startswith(b"GET "):
            log.info("VERSION saw a request line, TAG=" + os.environ.get("TAG", "unset"))
        return Action.CONTINUE
"""


def test_an_l4_filter_is_served_on_a_tcp_listener_and_reloads(tmp_path: Path) -> None:
    # A filter whose plugins make only StreamContexts runs as a network filter in front of
    # tcp_proxy (an HTTP listener would never call it); its new versions arrive over the network
    # filter's discovery, and a version that turned into an HTTP filter asks for a restart.
    source = tmp_path / "tag.py"
    source.write_text(L4_FILTER.replace("VERSION", "v1"))
    said: list[str] = []
    runner = Runner(RunOptions(source, port=0, workdir=tmp_path / "w", env={"TAG": "t1"}), said.append)
    try:
        runner.start()
        assert runner.envoy is not None
        port = runner.envoy.port()
        assert any(s.startswith(f"Envoy is serving the L4 filter on tcp://127.0.0.1:{port}") for s in said)
        assert get(port, "/through")[0] == 200  # HTTP through the TCP proxy to the echo upstream
        runner.envoy.wait_for_log("v1 saw a request line, TAG=t1")  # --env reaches os.environ

        source.write_text(L4_FILTER.replace("VERSION", "v2"))
        assert runner.reload()
        assert get(port, "/again")[0] == 200
        runner.envoy.wait_for_log("v2 saw a request line")

        source.write_text(CALLOUT_FILTER)
        said.clear()
        assert not runner.reload()
        assert any(s.startswith("built, but not served: this version is an HTTP filter") for s in said)
        assert get(port, "/still")[0] == 200  # the L4 version keeps serving
    finally:
        runner.stop()


def test_a_taken_port_says_so_and_keeps_envoys_log(tmp_path: Path) -> None:
    import socket

    source = tmp_path / "filter.py"
    source.write_text(CALLOUT_FILTER)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_to_end(str(source), "--port", str(port), env={**os.environ, "TMPDIR": str(scratch)})
    assert result.returncode == 1, result.stderr
    assert "error: Envoy could not serve the filter: Envoy exited with code 1 before becoming ready" in result.stderr
    assert f"cannot bind '127.0.0.1:{port}': Address already in use" in result.stderr
    assert "a port is taken: --port 0 lets Envoy pick one" in result.stderr
    # The log it names is still there, with the reason in it (the folder keeps only the logs).
    log = Path(re.findall(r"Envoy's log: (\S+)", result.stderr)[-1])
    assert log.is_relative_to(scratch) and "Address already in use" in log.read_text()
    assert not list(scratch.glob("proxywasm-run-*/filter-*.wasm"))
