"""bench/v8_guest.py: the bench's modules in node's V8 behind its minimal JavaScript host do the
workload's work (so its timings time that work): the callout variants apply the callout's answer,
the header filters add their response header, the JSON filter refuses a body without a user."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import v8_guest  # noqa: E402

import bench  # noqa: E402

WORKLOADS = {w.name: w for w in bench.WORKLOADS}

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is installed by ./dev.sh setup")


def run(name: str, *options: str) -> dict[str, object]:
    args = v8_guest.arguments().parse_args(["--rounds", "1", "--requests", "8", *options])
    return v8_guest.run(WORKLOADS[name], args)


def test_callout_variants_apply_the_answer() -> None:
    result = run("callout")
    checks: dict[str, dict[str, list[list[str]]]] = result["checks"]  # type: ignore[assignment]
    assert set(checks) == {"python", "python-await"}
    for check in checks.values():
        assert ["x-auth", "ok"] in check["request"]
    rows = result["results"]
    assert [row["label"] for row in rows] == ["python", "python-await"]  # type: ignore[index]
    assert all(row["us"] > 0 for row in rows)  # type: ignore[index]


def test_evicting_counts_only_the_callbacks_time_of_the_given_modules() -> None:
    callback = next(v for v in bench.python_variants(WORKLOADS["callout"]) if v.label == "python")
    result = run("callout", "--evict", "100000", "--module", str(callback.wasm), "--no-anchors")
    checks: dict[str, dict[str, list[list[str]]]] = result["checks"]  # type: ignore[assignment]
    assert list(checks) == [str(callback.wasm)]
    assert ["x-auth", "ok"] in checks[str(callback.wasm)]["request"]
    (row,) = result["results"]  # type: ignore[misc]
    assert row["us"] > 0


def test_header_filters_add_their_response_header() -> None:
    checks: dict[str, dict[str, list[list[str]]]] = run("headers")["checks"]  # type: ignore[assignment]
    assert "python" in checks
    for label, check in checks.items():
        assert ["x-filtered", label] in check["response"]


def test_json_filter_refuses_a_body_without_a_user(monkeypatch: pytest.MonkeyPatch) -> None:
    accepted = run("json_body")["checks"]
    assert all(check["replies"] == 0 for check in accepted.values())  # type: ignore[attr-defined]
    monkeypatch.setattr(v8_guest, "timed_request", lambda w: ("POST", b"{}", [("content-type", "application/json")]))
    refused = run("json_body")["checks"]
    assert all(check["replies"] == 1 for check in refused.values())  # type: ignore[attr-defined]
