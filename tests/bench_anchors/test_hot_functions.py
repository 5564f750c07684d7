"""sdk/runtime/hot_functions.txt still names every function the main bench workloads run per
request (bench/hot_functions.py measures it), so the runtime's build leaves their calls direct
and V8 inlines into them (sdk/runtime/indirect_calls.py), and every function the production
filters the bench does not time run per request in the local host: a change to the SDK's hot
paths that reaches new functions fails here until the list is measured again."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import hot_functions  # noqa: E402

import bench  # noqa: E402

WORKLOADS = {w.name: w for w in bench.WORKLOADS}

needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is installed by ./dev.sh setup")


@needs_node
@pytest.mark.parametrize("name", ["headers", "json_body", "rate_limit", "callout"])
def test_the_list_names_what_the_workload_runs(name: str) -> None:
    measured = hot_functions.measure(WORKLOADS[name], requests=20)
    listed = hot_functions.listed()
    for label, entries in measured.items():
        # the counters count entries: the host's callbacks, once a request (v8_guest.js's host)
        assert entries["proxy_on_context_create"] == entries["proxy_on_log"] == entries["proxy_on_delete"] == 1
        assert entries["_PyEval_EvalFrameDefault"] >= 1
        missing = sorted(set(entries) - listed)
        assert not missing, f"{label} runs {missing}: measure the list again (.venv/bin/python bench/hot_functions.py)"


@pytest.mark.parametrize("workload", hot_functions.HOST_WORKLOADS, ids=lambda w: w.name)
def test_the_list_names_what_each_production_filter_runs(workload: hot_functions.HostWorkload) -> None:
    entries = hot_functions.measure_in_host(workload, rounds=5)  # after the 20 rounds that warm it up
    # the counters count entries: one stream context per request of a round, created and deleted once
    assert entries["proxy_on_context_create"] == entries["proxy_on_delete"] >= 1
    assert entries["_PyEval_EvalFrameDefault"] >= 1
    missing = sorted(set(entries) - hot_functions.listed())
    again = "measure the list again (.venv/bin/python bench/hot_functions.py)"
    assert not missing, f"{workload.name} runs {missing}: {again}"
