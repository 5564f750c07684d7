"""Helpers for the reliability suite: a fast upstream, a concurrent client that checks every
answer and counts the ones that never came, and the figures the suite reports.

A plain module (not conftest) so test files can import it: pytest puts this directory on sys.path.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxywasm_build.envoy import Envoy

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ROOT / ".cache" / "reliability" / "figures.json"
#: The long run (`./dev.sh soak`): a soak of a million requests instead of 100,000.
SOAK = os.environ.get("PROXYWASM_SOAK") == "1"
MiB = 1 << 20
RECORDED: list[str] = []  # sections recorded in this session


def direct_upstream() -> Envoy:
    """A plain Envoy that answers 200 itself (fast enough not to be the bottleneck); also the
    callout target. It reads and discards request bodies."""
    hcm_type = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    route = {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "upstream\n"}}}
    hcm = {
        "@type": f"type.googleapis.com/{hcm_type}",
        "stat_prefix": "upstream",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]},
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
    }
    address = {"socket_address": {"address": "127.0.0.1", "port_value": 0}}
    listener = {
        "name": "upstream",
        "address": address,
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }
    config = {"admin": {"address": address}, "static_resources": {"listeners": [listener]}}
    return Envoy(config, concurrency=1).start()


@dataclass
class Answer:
    path: str
    status: int  # 0: no answer (connection error or timeout: a hung request)
    headers: dict[str, str]
    body: bytes
    seconds: float
    error: str = ""


@dataclass
class Run:
    """What came back: every answer (or, with a ``check``, only those that failed it), and counts."""

    answers: list[Answer] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    count: int = 0
    slowest: float = 0.0
    seconds: float = 0.0

    @property
    def hung(self) -> list[Answer]:
        return [a for a in self.answers if a.status == 0]


Request = tuple[str, str, Sequence[tuple[str | bytes, str | bytes]], bytes | None]  # method, path, headers, body


def run(
    port: int,
    requests: Iterable[Request],
    *,
    connections: int = 8,
    timeout_s: float = 10.0,
    check: Callable[[Answer], bool] | None = None,
) -> Run:
    """Send ``requests`` over ``connections`` keep-alive connections (one thread each); an answer
    that does not come within ``timeout_s`` counts as hung (status 0). With ``check``, only the
    answers that fail it (hung ones included) are kept."""
    pending = list(requests)
    pending.reverse()
    lock = threading.Lock()
    result = Run()
    started = time.monotonic()

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
        while True:
            with lock:
                if not pending:
                    break
                method, path, headers, body = pending.pop()
            begun = time.monotonic()
            try:
                conn.putrequest(method, path, skip_accept_encoding=True)
                for name, value in headers:
                    conn.putheader(name, value)
                if body is not None:
                    conn.putheader("content-length", str(len(body)))
                conn.endheaders(body)
                response = conn.getresponse()
                data = response.read()
                headers_in = {k.lower(): v for k, v in response.getheaders()}
                answer = Answer(path, response.status, headers_in, data, time.monotonic() - begun)
                if response.will_close:
                    conn.close()
            except (OSError, http.client.HTTPException) as err:
                answer = Answer(path, 0, {}, b"", time.monotonic() - begun, repr(err))
                conn.close()
            keep = check is None or answer.status == 0 or not check(answer)
            with lock:
                result.count += 1
                result.statuses[answer.status] += 1
                result.slowest = max(result.slowest, answer.seconds)
                if keep:
                    result.answers.append(answer)
        conn.close()

    with ThreadPoolExecutor(connections) as pool:
        for future in [pool.submit(worker) for _ in range(connections)]:
            future.result()
    result.seconds = time.monotonic() - started
    return result


def vm_memory(envoy: Envoy) -> list[int]:
    """Resident bytes of each Wasm VM's linear memory (main thread's VM and one per worker)."""
    return sorted(envoy.wasm_memory_rss())


def record(section: str, figures: dict[str, Any]) -> None:
    """Keep figures for bench/README.md (in .cache/reliability/figures.json, printed at the end)."""
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    data[section] = {**figures, "recorded": time.strftime("%Y-%m-%d %H:%M")}
    FIGURES.write_text(json.dumps(data, indent=2, sort_keys=True))
    if section not in RECORDED:
        RECORDED.append(section)


def poll(check: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
