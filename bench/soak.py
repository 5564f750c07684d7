"""Soak: many requests through a Python filter in real Envoy; the VM's linear memory and Envoy's
RSS must not grow after warm-up, and no request may fail.

    .venv/bin/python bench/soak.py [--requests 100000]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "sdk"))
sys.path.insert(0, str(ROOT / "bench"))

from bench import direct_upstream  # noqa: E402
from proxywasm_build.build import build  # noqa: E402
from proxywasm_build.envoy import Envoy, WasmPlugin, http_bootstrap  # noqa: E402

LUA = 'wrk.headers["x-api-key"] = "k"\n'


def vm_memory(envoy: Envoy) -> int:
    request = urllib.request.Request(envoy.url + "/probe", headers={"x-api-key": "k"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.headers["x-vm-memory"])


def load(envoy: Envoy, lua: Path, requests: int) -> tuple[int, int]:
    """Send at least ``requests`` requests with wrk; returns (completed, failed)."""
    done = failed = 0
    while done < requests:
        out = subprocess.run(
            ["wrk", "-t1", "-c4", "-d5s", "-s", str(lua), envoy.url], capture_output=True, text=True, check=True
        ).stdout
        done += int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        for pattern in (
            r"Non-2xx or 3xx responses: (\d+)",
            r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
        ):
            match = re.search(pattern, out)
            if match:
                failed += sum(int(g) for g in match.groups())
    return done, failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000)
    args = parser.parse_args()
    wasm = ROOT / ".cache" / "bench" / "soak.wasm"
    wasm.parent.mkdir(parents=True, exist_ok=True)
    wasm.write_bytes(build(ROOT / "bench" / "filters" / "python" / "soak.py").module)
    lua = Path(tempfile.mkstemp(suffix=".lua")[1])
    lua.write_text(LUA)
    upstream = direct_upstream()
    try:
        config = http_bootstrap(upstream_port=upstream.port(), plugins=[WasmPlugin(wasm, name="soak")])
        with Envoy(config, concurrency=1) as envoy:
            start_memory, start_rss = vm_memory(envoy), envoy.rss_bytes()
            warm, warm_failed = load(envoy, lua, max(5_000, args.requests // 10))
            warm_memory, warm_rss = vm_memory(envoy), envoy.rss_bytes()
            started = time.perf_counter()
            done, failed = load(envoy, lua, args.requests)
            seconds = time.perf_counter() - started
            end_memory, end_rss = vm_memory(envoy), envoy.rss_bytes()
            counted = envoy.stat("wasmcustom.soak_requests")
    finally:
        upstream.stop()
        lua.unlink()
    mb = 1e6
    print("| phase | requests | failed | VM linear memory MB | Envoy RSS MB |")
    print("|---|---|---|---|---|")
    print(f"| start | 0 | 0 | {start_memory / mb:.2f} | {start_rss / mb:.1f} |")
    print(f"| after warm-up | {warm} | {warm_failed} | {warm_memory / mb:.2f} | {warm_rss / mb:.1f} |")
    print(f"| after soak | {done} | {failed} | {end_memory / mb:.2f} | {end_rss / mb:.1f} |")
    print(
        f"\n{done} requests in {seconds:.0f}s; filter counted {counted}; linear memory growth after warm-up: "
        f"{(end_memory - warm_memory) / mb:.2f} MB; RSS growth after warm-up: {(end_rss - warm_rss) / mb:.1f} MB"
    )
    ok = failed == 0 and warm_failed == 0 and end_memory == warm_memory
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
