"""Bytecode compiled ahead for the VM: future imports become compiler flags, the SDK loses its
annotations, the filter keeps its own (proxywasm_build/bytecode.py)."""

from __future__ import annotations

import importlib.util
import marshal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm_build import bytecode
from proxywasm_host import Host

SOURCE = b"""from __future__ import annotations

class Box:
    size: int = 3
    label: str

    def __init__(self) -> None:
        self.items: list[Undefined] = []

def f(x: Undefined, *, y: AlsoUndefined = 1) -> Nowhere:
    return x
"""


def _run(code: object) -> dict[str, object]:
    namespace: dict[str, object] = {}
    exec(code, namespace)
    return namespace


def test_sdk_code_runs_without_annotations_or_the_future_module() -> None:
    ns = _run(bytecode.compile_for_vm(SOURCE, "sdk.py", sdk=True))
    box = ns["Box"]()  # type: ignore[operator]
    assert box.size == 3 and box.items == []
    assert ns["f"].__annotations__ == {}  # type: ignore[attr-defined]
    assert "annotations" not in ns


def test_filter_code_keeps_its_annotations_as_the_future_import_says() -> None:
    ns = _run(bytecode.compile_for_vm(SOURCE, "filter.py", sdk=False))
    assert ns["f"].__annotations__ == {"x": "Undefined", "y": "AlsoUndefined", "return": "Nowhere"}  # type: ignore[attr-defined]
    assert ns["Box"].__annotations__ == {"size": "int", "label": "str"}  # type: ignore[attr-defined]
    assert "annotations" not in ns


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="pycs are written for the runtime's 3.11")
def test_pyc_is_hash_based_and_loads(tmp_path: Path) -> None:
    code = bytecode.compile_for_vm(SOURCE, "filter.py", sdk=False)
    pyc = tmp_path / "filter.pyc"
    bytecode.write_pyc(code, SOURCE, pyc)
    data = pyc.read_bytes()
    assert data[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(data[4:8], "little") == 0b01  # hash-based, unchecked
    assert data[8:16] == importlib.util.source_hash(SOURCE)
    assert marshal.loads(data[16:]) == code


DATACLASS_FILTER = """
from __future__ import annotations

from dataclasses import dataclass

import proxywasm
from proxywasm import Action, HttpContext


@dataclass
class Limits:
    burst: int = 5
    name: str = "default"


@proxywasm.register
class Filter(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        headers["x-limits"] = repr(Limits())
        return Action.CONTINUE
"""


def test_a_dataclass_filter_with_future_annotations_works_in_the_vm(build_filter: Callable[[str], Path]) -> None:
    resp = Host.load(build_filter(DATACLASS_FILTER)).request("GET", "/")
    assert resp.upstream_request is not None
    assert resp.upstream_request.header("x-limits") == "Limits(burst=5, name='default')"
