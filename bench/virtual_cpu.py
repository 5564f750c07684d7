"""Deterministic per-request cost of the bench workloads on the local host (no timing, no Envoy).

    .venv/bin/python bench/virtual_cpu.py                      # every workload, Python and AS twins
    .venv/bin/python bench/virtual_cpu.py --workload rate_limit --calls

The local host runs the module on wasmtime with fuel metering; ``host.raw.cpu_ns()`` is a virtual
clock derived from the fuel the guest burnt (proxywasm_host.wasm.guest.NS_PER_FUEL), so the same
module and input give the same number on any machine, loaded or quiet. For each workload of
bench/bench.py (same filters, same requests) this prints the virtual microseconds of guest work
per request and the host calls (proxy_* imports the guest made) per request, after a few warm-up
requests. It counts only the guest's work: Envoy's own cost per host call and per callback is not
in the number, which is why host calls are counted separately.

The AssemblyScript twins (tests/assemblyscript/build.sh builds them into .cache/as) are measured
the same way when present, as an anchor: fuel is not V8 time, so compare their ratio with the
ratios bench/bench.py measures in Envoy rather than the absolute microseconds.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "host"))
sys.path.insert(0, str(ROOT / "bench"))

from bench import AS_OUT, WORKLOADS, Workload, host_options, timed_request  # noqa: E402
from proxywasm_host import Host  # noqa: E402
from proxywasm_host.emulator import host_functions, vm  # noqa: E402
from proxywasm_host.wasm import imports  # noqa: E402


class HostCallCounter:
    """Counts the proxy_* host functions the guest calls (wraps the emulator's HostFunctions) and
    the WASI ones (``wasi:clock_time_get``: the runtime's CPU budget reads the clock in longer
    callbacks), and the virtual CPU each outermost call into the guest (export) used (wraps the
    emulator's Vm.call). Install it before loading modules: WASI functions are bound at load."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.export_ns: collections.Counter[str] = collections.Counter()

    @contextmanager
    def installed(self) -> Iterator[None]:
        cls = host_functions.HostFunctions
        originals = {n: getattr(cls, n) for n in dir(cls) if n.startswith("proxy_")}
        for name, function in originals.items():
            setattr(cls, name, self._wrap(name, function))
        registry = imports._registry()  # loads the WASI functions into imports.REGISTRY
        wasi = {key: found for key, found in registry.items() if key[0] in imports.WASI_MODULES}
        for key, found in wasi.items():
            imports.REGISTRY[key] = dataclasses.replace(found, impl=self._wrap(f"wasi:{key[1]}", found.impl))
        call = vm.Vm.call
        export_ns = self.export_ns

        def timed_call(self: vm.Vm, name: str, ctx: Any, *args: int) -> int | None:
            if self._depth:
                return call(self, name, ctx, *args)
            start = self.cpu_ns()
            try:
                return call(self, name, ctx, *args)
            finally:
                export_ns[name] += self.cpu_ns() - start

        vm.Vm.call = timed_call  # type: ignore[method-assign]
        try:
            yield
        finally:
            for name, function in originals.items():
                setattr(cls, name, function)
            imports.REGISTRY.update(wasi)
            vm.Vm.call = call  # type: ignore[method-assign]

    def _wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        counts = self.counts

        def counted(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return function(*args, **kwargs)

        return counted


@dataclass
class Result:
    variant: str
    cpu_us: float  # virtual microseconds of guest work per request
    calls: dict[str, float]  # host function -> calls per request
    exports: dict[str, float]  # export (callback) -> virtual microseconds per request

    @property
    def total_calls(self) -> float:
        return sum(self.calls.values())


def measure(variant: str, module: Path, workload: Workload, counter: HostCallCounter, requests: int, warmup: int,
            env: dict[str, str]) -> Result:  # fmt: skip
    host = Host.load(module, mode="wasm", env=env, **host_options(workload))  # as bench.py's host column
    method, body, headers = timed_request(workload)

    def send() -> None:
        response = host.request(method, "/", headers=headers, body=body)
        if response.status != 200:
            raise SystemExit(f"{module.name}: {workload.name} answered {response.status} to the timed request, not 200")

    for _ in range(warmup):
        send()
    counter.counts.clear()
    counter.export_ns.clear()
    start = host.raw.cpu_ns()
    for _ in range(requests):
        send()
    cpu_us = (host.raw.cpu_ns() - start) / requests / 1000
    calls = {name: n / requests for name, n in counter.counts.most_common()}
    exports = {name: ns / requests / 1000 for name, ns in counter.export_ns.most_common()}
    return Result(variant, cpu_us, calls, exports)


def run(workloads: list[Workload], requests: int, warmup: int, anchors: bool,
        env: dict[str, str]) -> list[tuple[Workload, list[Result]]]:  # fmt: skip
    counter = HostCallCounter()
    out = []
    with counter.installed():
        for workload in workloads:
            results = []
            for variant, source in (("python", workload.python), ("python-await", workload.python_await)):
                if source is not None:  # bench.py's variant labels
                    results.append(measure(variant, source, workload, counter, requests, warmup, env))
            twin = AS_OUT / f"{workload.assemblyscript}.wasm" if workload.assemblyscript else None
            if anchors and twin is not None and twin.exists():
                results.append(measure("assemblyscript", twin, workload, counter, requests, warmup, env))
            out.append((workload, results))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", action="append", choices=[w.name for w in WORKLOADS],
                        help="measure only this workload (repeatable; default: all)")  # fmt: skip
    parser.add_argument("--requests", type=int, default=20, help="measured requests per variant (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="requests sent before measuring (default 3)")
    parser.add_argument("--no-anchors", action="store_true", help="skip the AssemblyScript twins")
    parser.add_argument("--calls", action="store_true", help="list the host calls per request by function")
    parser.add_argument("--exports", action="store_true", help="list the virtual us per request by callback")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable of the VM (e.g. PROXYWASM_CPU_BUDGET_MS=0)")  # fmt: skip
    args = parser.parse_args()
    chosen = [w for w in WORKLOADS if not args.workload or w.name in args.workload]
    print(f"{'workload':<20} {'variant':<16} {'virtual us/req':>14} {'host calls/req':>14}")
    env = dict(item.split("=", 1) for item in args.env)
    for workload, results in run(chosen, args.requests, args.warmup, not args.no_anchors, env):
        for result in results:
            print(f"{workload.name:<20} {result.variant:<16} {result.cpu_us:>14.2f} {result.total_calls:>14.1f}")
            if args.exports:
                for name, us in result.exports.items():
                    print(f"{'':<38}{us:>6.2f} us  {name}")
            if args.calls:
                for name, n in result.calls.items():
                    print(f"{'':<38}{n:>5.1f}  {name}")
    if not AS_OUT.exists() and not args.no_anchors:
        print("(no AssemblyScript twins: run tests/assemblyscript/build.sh to measure them too)")


if __name__ == "__main__":
    main()
