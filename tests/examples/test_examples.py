"""Every example in examples/, built with ``proxywasm build`` and served by a real Envoy started
from the example's own envoy.yaml (see conftest.py). One Envoy per example (class-scoped)."""

from __future__ import annotations

import json
import re
import socket
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]
from examples_support import http, wait_until, wasm_messages

from proxywasm_build.build import stats_config_path
from proxywasm_build.envoy import Envoy
from proxywasm_build.upstream import Response, UpstreamServer

pytestmark = pytest.mark.usefixtures("envoy")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def fnv1a_32(data: bytes) -> int:
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def fnv1a_128(data: bytes) -> str:
    value = 0x6C62272E07BB014262B821756295C58D
    for byte in data:
        value = ((value ^ byte) * 0x0000000001000000000000000000013B) & ((1 << 128) - 1)
    return f"{value:032x}"


def body_with_hash_parity(even: bool) -> bytes:
    for i in range(100):
        body = f"authorisation answer {i}\n".encode()
        if (fnv1a_32(body) % 2 == 0) == even:
            return body
    raise AssertionError("no body found")


class TestHelloworld:
    EXAMPLE = "helloworld"

    def test_logs_on_configure_and_ticks(self, envoy: Envoy) -> None:
        envoy.wait_for_log(r"wasm log: on_configure from Python!")
        envoy.wait_for_log(r"wasm log: It's \d{19}: random value: \d+\n", timeout_s=10)
        envoy.wait_for_log(r"wasm log: on_tick called")

    def test_requests_pass_through(self, envoy: Envoy) -> None:
        reply = http(envoy, "/")
        assert (reply.status, reply.body) == (200, b"example body\n")


class TestHttpHeaders:
    EXAMPLE = "http_headers"

    def test_headers_both_ways(self, envoy: Envoy, upstream: UpstreamServer) -> None:
        upstream.clear()
        reply = http(envoy, "/uuid", headers={"this-is-key": "this-is-value", "test": "worst"})
        assert reply.status == 200
        # Added on the response: the fixed header and the one from the plugin configuration.
        assert reply.header("x-wasm-header") == "demo-wasm"
        assert reply.header("x-proxy-wasm-python-example") == "http_headers"
        # The request header "test" was replaced before it reached the upstream.
        (seen,) = upstream.requests
        assert seen.header_values("test") == ["best"]
        assert seen.header("this-is-key") == "this-is-value"
        envoy.wait_for_log(r"header from config: x-wasm-header = demo-wasm")
        envoy.wait_for_log(r"request header --> this-is-key: this-is-value")
        envoy.wait_for_log(r"request header --> test: best")
        envoy.wait_for_log(r"adding header: x-wasm-header=demo-wasm")
        envoy.wait_for_log(r"response header <-- x-wasm-header: demo-wasm")
        envoy.wait_for_log(r"response header <-- :status: 200")
        envoy.wait_for_log(r"wasm log: \d+ finished")
        assert "request header --> test: worst" not in envoy.logs()


class TestHttpBody:
    EXAMPLE = "http_body"

    @pytest.mark.parametrize("mode", ["request", "response"])
    @pytest.mark.parametrize(
        ("operation", "expected"),
        [
            ("append", b"[original body][this is appended body]"),
            ("prepend", b"[this is prepended body][original body]"),
            ("replace", b"[this is replaced body]"),
            ("invalid", b"[this is replaced body]"),  # falls back to replace
        ],
    )
    def test_body_operations(self, envoy: Envoy, mode: str, operation: str, expected: bytes) -> None:
        headers = {"buffer-replace-at": mode, "buffer-operation": operation}
        reply = http(envoy, "/anything", method="PUT", headers=headers, body=b"[original body]")
        assert (reply.status, reply.body) == (200, expected)
        envoy.wait_for_log(rf"original {mode} body: \[original body\]")

    def test_request_without_content_length_is_refused(self, envoy: Envoy, upstream: UpstreamServer) -> None:
        reply = http(envoy, "/no-content-length", method="PUT", chunks=[b"[original body]"])
        assert (reply.status, reply.body) == (400, b"content must be provided")
        # (Its own path: a request of an earlier test may still be on its way to the upstream.)
        assert [r for r in upstream.requests if r.path == "/no-content-length"] == []


class TestHttpBodyChunk:
    EXAMPLE = "http_body_chunk"

    def test_pattern_is_rejected(self, envoy: Envoy, upstream: UpstreamServer) -> None:
        upstream.clear()
        chunks = [b"a" * 70_000, b"b" * 70_000 + b" pattern ", b"c" * 1000]
        reply = http(envoy, "/", method="POST", chunks=chunks)
        assert reply.status == 403
        assert re.fullmatch(rb"pattern found in chunk: \d+", reply.body), reply.body
        assert reply.header("powered-by") == "proxy-wasm-python"
        # The headers went on, but no byte of the body reached the upstream before the 403.
        assert all(r.body == b"" for r in upstream.requests)
        envoy.wait_for_log(r"local 403 response sent")
        assert f"wasm log: {reply.body.decode()}\n" in envoy.logs()

    def test_clean_body_reaches_upstream_whole(self, envoy: Envoy, upstream: UpstreamServer) -> None:
        upstream.clear()
        offset = len(envoy.logs())
        chunks = [bytes([65 + i % 26]) * 40_000 for i in range(5)]
        reply = http(envoy, "/upload", method="POST", chunks=chunks)
        assert reply.status == 200
        (seen,) = upstream.requests
        assert seen.body == b"".join(chunks)
        envoy.wait_for_log(r"pattern not found")
        # The chunks the filter read, one per call, add up to the whole body.
        sizes = [int(size) for size in re.findall(r"read chunk size: (\d+)", envoy.log_since(offset))]
        assert sizes and sum(sizes) == 200_000
        assert "read data does not match" not in envoy.logs()


class TestHttpAuthRandom:
    EXAMPLE = "http_auth_random"
    GRANT = body_with_hash_parity(even=True)
    DENY = body_with_hash_parity(even=False)
    UPSTREAM_ROUTES: ClassVar[dict[str, Response]] = {"/grant": Response(200, GRANT), "/deny": Response(200, DENY)}

    def test_even_hash_grants(self, envoy: Envoy, upstream: UpstreamServer) -> None:
        upstream.clear()
        reply = http(envoy, "/grant", headers={"this-is-key": "this-is-value"})
        assert (reply.status, reply.body) == (200, self.GRANT)
        # First the authorisation call (with the request's headers), then the request itself.
        call, proxied = upstream.requests
        assert call.path == proxied.path == "/grant"
        assert call.header("this-is-key") == "this-is-value"
        envoy.wait_for_log(r"response header from httpbin: :status: 200")
        envoy.wait_for_log(r"access granted")

    def test_odd_hash_forbids(self, envoy: Envoy, upstream: UpstreamServer) -> None:
        upstream.clear()
        reply = http(envoy, "/deny")
        assert (reply.status, reply.body) == (403, b"access forbidden")
        assert reply.header("powered-by") == "proxy-wasm-python"
        assert [r.path for r in upstream.requests] == ["/deny"]  # only the authorisation call
        envoy.wait_for_log(r"access forbidden")


class TestHttpRouting:
    EXAMPLE = "http_routing"

    def test_even_dice_go_to_canary(self, envoy: Envoy) -> None:
        bodies = [http(envoy, "/").body for _ in range(24)]
        assert set(bodies) == {b"hello from primary!\n", b"hello from canary!\n"}
        # Each request logged its dice; even values were routed to the canary, in order.
        wait_until(lambda: envoy.logs().count("wasm log: value: ") >= 24, what="24 dice logged")
        values = [int(v) for v in re.findall(r"wasm log: value: (\d+)", envoy.logs())]
        assert len(values) == 24
        assert [v % 2 == 0 for v in values] == [b == b"hello from canary!\n" for b in bodies]


class TestJsonValidation:
    EXAMPLE = "json_validation"

    def test_without_json_content_type(self, envoy: Envoy) -> None:
        reply = http(envoy, "/")
        assert (reply.status, reply.body) == (403, b"content-type must be provided")

    def test_valid_payload_passes(self, envoy: Envoy) -> None:
        body = json.dumps({"id": "abc123", "token": "xyz456"}).encode()
        reply = http(envoy, "/", method="POST", headers={"content-type": "application/json"}, body=body)
        assert (reply.status, reply.body) == (200, b"hello from the server\n")

    @pytest.mark.parametrize("body", [b'{"id": "abc123"}', b"not json", b'["id", "token"]'])
    def test_invalid_payload_is_refused(self, envoy: Envoy, body: bytes) -> None:
        reply = http(envoy, "/", method="POST", headers={"content-type": "application/json"}, body=body)
        assert (reply.status, reply.body) == (403, b"invalid payload")

    def test_missing_key_is_logged(self, envoy: Envoy) -> None:
        http(envoy, "/", method="POST", headers={"content-type": "application/json"}, body=b'{"id": 1}')
        envoy.wait_for_log(r"required key \(token\) is missing")


class TestMetrics:
    EXAMPLE = "metrics"

    def test_counter_per_header_value_with_tags(self, envoy: Envoy) -> None:
        for value, count in (("foo", 3), ("bar", 5)):
            for _ in range(count):
                assert http(envoy, "/", headers={"my-custom-header": value}).status == 200
        assert http(envoy, "/").status == 200  # no header: nothing counted
        status, text = envoy.admin_get("/stats/prometheus")
        assert status == 200
        assert 'custom_header_value_counts{value="foo",reporter="wasmpythonsdk"} 3' in text
        assert 'custom_header_value_counts{value="bar",reporter="wasmpythonsdk"} 5' in text
        stats = envoy.stats("custom_header_value_counts")
        assert stats == {
            "wasmcustom.custom_header_value_counts_value=foo_reporter=wasmpythonsdk": 3,
            "wasmcustom.custom_header_value_counts_value=bar_reporter=wasmpythonsdk": 5,
        }


class TestProperties:
    EXAMPLE = "properties"

    @pytest.mark.parametrize(
        ("path", "headers", "status"),
        [
            ("/one", {}, 401),
            ("/one", {"cookie": "value"}, 200),
            ("/one", {"authorization": "token"}, 401),
            ("/two", {}, 401),
            ("/two", {"authorization": "token"}, 200),
            ("/three", {}, 200),
        ],
    )
    def test_route_metadata_names_required_header(
        self, envoy: Envoy, path: str, headers: dict[str, str], status: int
    ) -> None:
        reply = http(envoy, path, headers=headers)
        assert reply.status == status
        if status == 200:
            assert reply.body == b"example body\n"

    def test_logs(self, envoy: Envoy) -> None:
        http(envoy, "/one")
        http(envoy, "/two")
        http(envoy, "/three")
        envoy.wait_for_log(r'auth header is "cookie"')
        envoy.wait_for_log(r'auth header is "authorization"')
        envoy.wait_for_log(r"no auth header for route")
        envoy.wait_for_log(r"wasm log: \d+ finished")


class TestSharedData:
    EXAMPLE = "shared_data"
    CONCURRENCY = 2
    REQUESTS = 24

    def test_counter_shared_by_all_workers(self, envoy: Envoy) -> None:
        with ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(lambda _: http(envoy, "/"), range(self.REQUESTS)))
        assert all(r.status == 200 for r in replies)
        envoy.wait_for_log(rf"wasm log: shared value: {self.REQUESTS}\n")
        found = [(t, m) for t, m in wasm_messages(envoy) if m.startswith("shared value: ")]
        # Every increment landed exactly once, whichever worker made it...
        assert sorted(int(m.split(": ")[1]) for _, m in found) == list(range(1, self.REQUESTS + 1))
        # ...and both workers (each with its own VM) made some: new connections are spread over
        # the workers' sockets, so 24 on one worker alone would be a 1 in 8 million event.
        assert len({t for t, _ in found}) == 2


class TestSharedQueue:
    EXAMPLE = "shared_queue"

    def test_http_headers_reach_the_receiver(self, envoy: Envoy) -> None:
        reply = http(envoy, "/", listener="http", headers={"x-queued": "yes"})
        assert (reply.status, reply.body) == (200, b"example body\n")
        envoy.wait_for_log(r'queue "http_request_headers" registered as queue_id=\d+')
        envoy.wait_for_log(r'enqueued data: \{"key": ":method", "value": "GET"\}')
        envoy.wait_for_log(
            r'dequeued data from http_request_headers\(queue_id=\d+\): \{"key": "x-queued", "value": "yes"\}'
        )
        envoy.wait_for_log(
            r'dequeued data from http_response_headers\(queue_id=\d+\): \{"key": ":status", "value": "200"\}'
        )

    def test_tcp_hashes_reach_the_receiver(self, envoy: Envoy, upstream: UpstreamServer) -> None:
        with socket.create_connection(("127.0.0.1", envoy.port("tcp")), timeout=10) as sock:
            sock.sendall(b"GET /tcp HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        assert received.startswith(b"HTTP/1.0 200") or received.startswith(b"HTTP/1.1 200")
        assert upstream.requests[-1].path == "/tcp"

        def covered() -> bool | None:
            """How much of the data the dequeued hashes cover, as consecutive pieces in order."""
            offset = 0
            for digest in re.findall(
                r"dequeued data from tcp_data_hashes\(queue_id=\d+\): ([0-9a-f]{32})", envoy.logs()
            ):
                ends = (e for e in range(offset + 1, len(received) + 1) if fnv1a_128(received[offset:e]) == digest)
                end = next(ends, None)
                if end is None:
                    raise AssertionError(f"hash {digest} matches no piece of the data after byte {offset}")
                offset = end
            return offset == len(received) or None

        wait_until(covered, what="hashes of all the upstream data dequeued")


class TestVmPluginConfiguration:
    EXAMPLE = "vm_plugin_configuration"

    def test_both_configurations_logged(self, envoy: Envoy) -> None:
        envoy.wait_for_log(r'vm config: \{\n  "name": "vm configuration"\n\}')
        envoy.wait_for_log(r'plugin config: \{\n  "name": "plugin configuration"\n\}')
        assert http(envoy, "/").status == 200


class TestDispatchCallOnTick:
    EXAMPLE = "dispatch_call_on_tick"

    def test_each_plugin_calls_on_its_ticks(self, envoy: Envoy) -> None:
        envoy.wait_for_log(r"set tick period milliseconds: 100")
        # Two plugins (two root contexts in one VM), each counting its own answers.
        wait_until(
            lambda: len(set(re.findall(r"called 5 for context_id=(\d+)", envoy.logs()))) == 2,
            timeout_s=15,
            what="five answers for each plugin",
        )
        envoy.wait_for_log(r"response header for the dispatched call: :status: 200")
        envoy.wait_for_log(r"response header for the dispatched call: :status: 503")
        assert len(set(re.findall(r"called \d+ for context_id=(\d+)", envoy.logs()))) == 2

    def test_requests_pass_through_both_plugins(self, envoy: Envoy) -> None:
        assert http(envoy, "/ok").status == 200
        assert http(envoy, "/fail").status == 503


class TestForeignCallOnTick:
    EXAMPLE = "foreign_call_on_tick"

    def test_compress_called_on_every_tick(self, envoy: Envoy) -> None:
        expected = zlib.compress(b"hello world!").hex()
        match = envoy.wait_for_log(r"foreign function \(compress\) called: 5, result: ([0-9a-f]*)\n")
        assert match[1] == expected
        for n in range(1, 5):
            assert f"foreign function (compress) called: {n}, result: {expected}\n" in envoy.logs()


class TestPostponeRequests:
    EXAMPLE = "postpone_requests"
    LOG_LEVELS: ClassVar[dict[str, str]] = {"http": "debug"}

    def test_requests_held_until_the_tick(self, envoy: Envoy) -> None:
        for n in range(2):
            path = f"/held-{n}"
            reply = http(envoy, path)
            assert (reply.status, reply.body) == (200, b"example body\n")
            # Envoy's debug log tags each stream's lines with its connection id.
            started = envoy.wait_for_log(
                rf'"ConnectionId":"(\d+)".*\] request headers complete[^\n]*\n(.+\n)*?.*{path}'
            )
            answered = envoy.wait_for_log(rf'"ConnectionId":"{started[1]}".*\] encoding headers via codec')
            text = envoy.logs()
            postponed = re.compile(r"postpone request with context_id=(\d+)").search(text, started.end())
            assert postponed, text[started.start() :]
            resumed = re.compile(rf"resume request with context_id={postponed[1]}\n").search(text, postponed.end())
            assert resumed, text[postponed.start() :]
            # Envoy answered only after the tick resumed the request, not when its headers arrived.
            assert started.end() < postponed.start() < resumed.start() < answered.start()

    def test_concurrent_requests_all_released(self, envoy: Envoy) -> None:
        with ThreadPoolExecutor(3) as pool:
            replies = list(pool.map(lambda _: http(envoy, "/"), range(3)))
        assert [(r.status, r.body) for r in replies] == [(200, b"example body\n")] * 3


class TestMultipleDispatches:
    EXAMPLE = "multiple_dispatches"

    def test_response_held_until_ten_calls_answer(self, envoy: Envoy, upstream: UpstreamServer) -> None:
        upstream.clear()
        reply = http(envoy, "/original")
        assert reply.status == 200
        assert reply.header("total-dispatched") == "10"
        paths = [r.path for r in upstream.requests]
        assert paths.count("/original") == 1 and paths.count("/") == 10
        envoy.wait_for_log(r"response resumed after processed 10 dispatched request")
        logs = envoy.logs()
        for pending in range(1, 10):
            assert f"pending dispatched requests: {pending}\n" in logs


class TestNetwork:
    EXAMPLE = "network"

    def test_connection_logged_both_ways(self, envoy: Envoy) -> None:
        before = envoy.stat("wasmcustom.proxy_wasm_python.connection_counter", 0)
        with socket.create_connection(("127.0.0.1", envoy.port("main")), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nThis-Is-Key: this-is-value\r\nConnection: close\r\n\r\n")
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        assert received.startswith(b"HTTP/1.1 200 OK")
        assert received.endswith(b"example body\n")
        envoy.wait_for_log(r"connection complete!")
        logs = envoy.logs()
        assert "new connection!" in logs
        # (the log is read as text: its CRLFs come back as LFs)
        assert ">>>>>> downstream data received >>>>>>\nGET / HTTP/1.1\n" in logs
        assert "This-Is-Key: this-is-value" in logs
        assert "<<<<<< upstream data received <<<<<<\nHTTP/1.1 200 OK" in logs
        assert "downstream connection close!" in logs
        staticreply = envoy.port("staticreply")
        assert f"remote address: 127.0.0.1:{staticreply}\n" in logs
        assert "upstream cluster metadata location[region]=ap-northeast-1\n" in logs
        assert "upstream cluster metadata location[cloud_provider]=aws\n" in logs
        assert "upstream cluster metadata location[az]=ap-northeast-1a\n" in logs
        assert envoy.stat("wasmcustom.proxy_wasm_python.connection_counter") == before + 1


class TestHttpAuthAwait:
    EXAMPLE = "http_auth_await"

    @pytest.mark.parametrize(
        ("path", "headers", "status", "user"),
        [
            ("/", {}, 401, None),
            ("/", {"authorization": "Bearer alice-token"}, 200, "alice"),
            ("/data", {"authorization": "Bearer bob-token"}, 200, "bob"),
            ("/", {"authorization": "Bearer mallory"}, 403, None),
            ("/public/page", {}, 200, ""),
        ],
    )
    def test_auth_by_awaited_callout(
        self, envoy: Envoy, upstream: UpstreamServer, path: str, headers: dict[str, str], status: int, user: str | None
    ) -> None:
        upstream.clear()
        reply = http(envoy, path, headers=headers)
        assert reply.status == status
        if status == 200:
            (seen,) = upstream.requests
            assert seen.header("x-auth-user") == (user or None)
        else:
            assert upstream.requests == []
        if status == 403:
            assert reply.body == b"unknown token\n"

    def test_concurrent_requests_wait_independently(self, envoy: Envoy, upstream: UpstreamServer) -> None:
        tokens = ["alice-token", "bob-token", "mallory"] * 4
        with ThreadPoolExecutor(max_workers=6) as pool:
            replies = list(pool.map(lambda t: http(envoy, "/", headers={"authorization": f"Bearer {t}"}), tokens))
        assert [r.status for r in replies] == [200, 200, 403] * 4
        errors = [m for _, m in wasm_messages(envoy) if "author mistake" in m or "Traceback" in m]
        assert errors == []


class TestLabelledMetrics:
    EXAMPLE = "labelled_metrics"

    def test_prometheus_labels(self, envoy: Envoy, example_wasm: Callable[[str], Path]) -> None:
        # The series picked in on_configure read 0 before any request.
        _, text = envoy.admin_get("/stats/prometheus")
        assert 'http_responses_total{route="api",status_class="2xx"} 0' in text.splitlines()
        assert 'http_requests_in_flight{route="other"} 0' in text.splitlines()
        for path in ("/api/users", "/api/items?x=1", "/static/app.js", "/nope"):
            assert http(envoy, path).status == 200
        _, text = envoy.admin_get("/stats/prometheus")
        lines = text.splitlines()
        for line in (
            'http_responses_total{route="api",status_class="2xx"} 2',
            'http_responses_total{route="static",status_class="2xx"} 1',
            'http_responses_total{route="other",status_class="2xx"} 1',
            'http_responses_total{route="api",status_class="5xx"} 0',
            'http_requests_in_flight{route="api"} 0',
        ):
            assert line in lines
        assert envoy.stat("wasmcustom.http_responses_total;route=api;status_class=2xx") == 2
        wait_until(
            lambda: 'http_upstream_milliseconds_count{route="api"} 2' in envoy.admin_get("/stats/prometheus")[1],
            timeout_s=20,
            what="the histogram after Envoy's stats flush",
        )

    def test_envoy_yaml_carries_what_the_build_emits(self, example_wasm: Callable[[str], Path]) -> None:
        emitted = yaml.safe_load(stats_config_path(example_wasm(self.EXAMPLE)).read_text())
        configured = yaml.safe_load((EXAMPLES / self.EXAMPLE / "envoy.yaml").read_text())
        assert configured["stats_config"] == emitted["stats_config"]
