"""What the runtime and the snapshot do with CPython's static data: docstrings and start-up-only
data are zeroed, deep-frozen modules nothing references are zeroed, and what is referenced
keeps working (see sdk/runtime/static_data.c, data_layout.py and frozen_objects.py)."""

from __future__ import annotations

import importlib.util
import struct
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm_build import frozen_objects, wasm
from proxywasm_build.build import RUNTIME_DIR
from proxywasm_build.envoy import Envoy, WasmPlugin, http_bootstrap
from proxywasm_build.frozen_objects import FrozenObjects, Layout
from proxywasm_build.upstream import UpstreamServer
from proxywasm_host import Host

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sdk" / "runtime"))
import data_layout

# ---- the reachability scan, on a made-up memory ----

CODE, TUPLE, STR = 0x100, 0x104, 0x108
LAYOUT = Layout(code_type=CODE, code_header=16, tuple_type=TUPLE, gc_header=8, leaf_types=frozenset({STR}))


def _memory(objects: dict[int, bytes], words: dict[int, int]) -> bytearray:
    memory = bytearray(0x2000)
    for address, content in objects.items():
        memory[address : address + len(content)] = content
    for address, value in words.items():
        struct.pack_into("<I", memory, address, value)
    return memory


def _obj(type_: int, *fields: int, size: int = 32) -> bytes:
    return struct.pack(f"<II{len(fields)}I", 1, type_, *fields).ljust(size, b"\x01")


def _tuple(*items: int) -> bytes:  # a GC header, then the tuple
    return bytes(8) + struct.pack(f"<III{len(items)}I", 1, TUPLE, len(items), *items).ljust(24, b"\x01")


def test_scan_keeps_what_is_referenced_and_zeroes_the_rest() -> None:
    a, b, c, d, e, t, leaf, code, behind_code = 0x1000, 0x1020, 0x1040, 0x1060, 0x1080, 0x10A0, 0x10E0, 0x1100, 0x1140
    objects = {
        a: _obj(STR),  # referenced from the heap: live
        b: _obj(0x10C, c),  # referenced from the heap, points to c: both live
        c: _obj(STR),
        d: _obj(STR),  # referenced only from constant data: dead
        e: _obj(0x10C),  # a pointer into its middle, not a leaf: dead
        t: _tuple(leaf),  # referenced at its object, after the GC header: live, and so its item
        leaf: _obj(STR),
        code: _obj(CODE, 0, 0, size=64)[:16] + struct.pack("<I", behind_code) + bytes(44),  # live
        behind_code: _obj(STR),  # its address appears only in the code's bytecode: dead
    }
    memory = _memory(objects, {0x1800: a, 0x1804: b, 0x1808: e + 8, 0x180C: t + 8, 0x1810: code, 0x300: d})
    frozen = FrozenObjects(constant_data=(0x200, 0x400), objects=[(k, len(v)) for k, v in objects.items()])

    zeroed = frozen_objects.zero_unreferenced(memory, frozen, LAYOUT)

    def alive(address: int) -> bool:
        return any(memory[address : address + len(objects[address])])

    assert [alive(x) for x in (a, b, c, t, leaf, code)] == [True] * 6
    assert [alive(x) for x in (d, e, behind_code)] == [False] * 3
    assert zeroed == sum(len(objects[x]) for x in (d, e, behind_code))


def test_scan_counts_pointers_into_strings() -> None:
    s = 0x1000
    memory = _memory({s: _obj(STR, size=48)}, {0x1800: s + 24})  # e.g. a type's tp_name into its name
    frozen_objects.zero_unreferenced(memory, FrozenObjects((0, 0), [(s, 48)]), LAYOUT)
    assert any(memory[s : s + 48])


# ---- the runtime as built ----


def test_segments_are_grouped_by_what_becomes_of_them() -> None:
    modules = ["importlib__bootstrap_external", "importlib__bootstrap", "os"]
    assert data_layout.new_name("deepfreeze.o", ".data.os_toplevel", modules) == "pyfrozen.os.top"
    assert data_layout.new_name("deepfreeze.o", ".data.os_toplevel_consts_3", modules) == "pyfrozen.os.defs"
    assert (
        data_layout.new_name("deepfreeze.o", ".data.importlib__bootstrap_external_toplevel_names", modules)
        == "pyfrozen.importlib__bootstrap_external.top"
    )
    assert data_layout.new_name("deepfreeze.o", ".data.const_str_self", modules) == "pyfrozen.shared"
    assert data_layout.new_name("listobject.o", ".rodata.list_append__doc__", modules) == "pydoc"
    assert data_layout.new_name("listobject.o", ".rodata.list_doc", modules) == "pydoc"
    assert data_layout.new_name("listobject.o", ".data.PyList_Type", modules) == ".data.PyList_Type"
    assert data_layout.new_name("pystate.o", ".rodata.initial", modules) == "pyinit"


def _runtime_ranges() -> dict[str, tuple[int, int]]:
    sections = wasm.parse_sections((RUNTIME_DIR / "python.wasm").read_bytes())
    data = wasm.parse_data(next(s for s in sections if s.id == wasm.DATA).payload)
    return {n: (data[i][0], data[i][0] + len(data[i][1])) for n, i in wasm.data_segment_names(sections).items()}


def _snapshot_bytes(module: Path, start: int, end: int) -> int:
    """How many bytes the module's data segments put into [start, end)."""
    data = wasm.parse_data(next(s for s in wasm.parse_sections(module.read_bytes()) if s.id == wasm.DATA).payload)
    return sum(max(0, min(end, o + len(d)) - max(start, o)) for o, d in data)


FILTER = """
import codecs
import os
import proxywasm
from proxywasm import Action, HttpContext


@proxywasm.register
class Filter(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        path = headers[":path"]
        if path == "/docs":
            headers["x-doc"] = repr(len.__doc__)
        elif path == "/os":
            headers["x-os"] = os.path.join("a", os.path.basename("/b/c.txt")) + os.sep
            headers["x-norm"] = os.path.normpath("/a/./b/../c") + os.path.splitext("f.tar.gz")[1]
        elif path == "/codecs":
            decoder = codecs.getincrementaldecoder("utf-8")()
            text = decoder.decode(b"\\xc3") + decoder.decode(b"\\xa9", final=True)
            headers["x-codecs"] = codecs.lookup("latin-1").name + " " + ascii(text)
        elif path == "/runpy":
            import runpy  # a frozen stdlib module not imported at build time
        return Action.CONTINUE
"""


@pytest.fixture(scope="module")
def stdlib_filter(build_filter: Callable[[str], Path]) -> Path:
    return build_filter(FILTER)


def test_docstrings_and_start_up_data_leave_the_snapshot(stdlib_filter: Path) -> None:
    ranges = _runtime_ranges()
    assert ranges["pydoc"][1] - ranges["pydoc"][0] > 100_000
    assert _snapshot_bytes(stdlib_filter, *ranges["pydoc"]) == 0
    assert _snapshot_bytes(stdlib_filter, *ranges["pyinit"]) == 0
    # C docstrings read as empty, as in a CPython built --without-doc-strings.
    resp = Host.load(stdlib_filter).request("GET", "/docs")
    assert resp.upstream_request is not None and resp.upstream_request.header("x-doc") == "None"


def test_unimported_frozen_modules_leave_the_snapshot_and_imported_ones_work(stdlib_filter: Path) -> None:
    ranges = _runtime_ranges()
    # A word in the heap that looks like a pointer keeps the string it points into: bytecode in heap
    # code objects is full of words like 0x00230053 (two instructions), which land in strings that
    # cross a 64 KiB boundary of the frozen data. One such string can be a tenth of a module (site's
    # 3 KB docstring kept 14% of site after a change elsewhere moved it), so the bound is over every
    # frozen module this filter never imports: together they keep a few strings, not more.
    unimported = ("runpy", "ntpath", "site", "zipimport", "importlib_util", "importlib_machinery", "_sitebuiltins",
                  "__hello__", "__phello__")  # fmt: skip
    spans = [ranges[f"pyfrozen.{name}.defs"] for name in unimported]
    size = sum(end - start for start, end in spans)
    assert size > 100_000
    kept = {name: _snapshot_bytes(stdlib_filter, *span) for name, span in zip(unimported, spans, strict=True)}
    assert sum(kept.values()) < size // 10, kept
    assert _snapshot_bytes(stdlib_filter, *ranges["pyfrozen.os.defs"]) > 10_000

    host = Host.load(stdlib_filter)
    resp = host.request("GET", "/os")
    assert resp.upstream_request is not None
    assert resp.upstream_request.header("x-os") == "a/c.txt/"
    assert resp.upstream_request.header("x-norm") == "/a/c.gz"
    resp = host.request("GET", "/codecs")  # UTF-8 and Latin-1 are looked up while the filter is built
    assert resp.upstream_request is not None and resp.upstream_request.header("x-codecs") == "iso8859-1 '\\xe9'"
    resp = host.request("GET", "/runpy")
    assert resp.status == 500
    assert any("No module named 'runpy' in this filter" in m for _, m in resp.logs)


WORKOUT = """
from __future__ import annotations

import base64, codecs, collections, dataclasses, datetime, enum, functools, hashlib, itertools, json
import logging, random, re, string, textwrap, typing, urllib.parse, uuid


class Color(enum.Enum):
    RED = 1
    BLUE = 2


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: typing.Optional[int] = None


# String annotations are compiled when evaluated: at import time, as the served module has no
# compiler (tests/runtime/test_source_compilation.py).
HINTS = typing.get_type_hints(Point)


def workout(seed):
    rng = random.Random(seed)
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(5)) for _ in range(20)]
    counts = collections.Counter(w[0] for w in words)
    parsed = urllib.parse.urlsplit("https://example.com:8443/a/b?x=1&y=%20z#frag")
    return json.dumps({
        "re": re.findall(r"(\\w)(\\d+)", "a1 b22 c333"),
        "counts": sorted(counts.most_common(3)),
        "sha": hashlib.sha256(b"proxy").hexdigest(),
        "b64": base64.b64encode(b"\\x00\\xff envoy").decode(),
        "date": (datetime.date(2026, 11, 29) + datetime.timedelta(days=40)).isoformat(),
        "enum": [c.name for c in Color] + [Color(2).name],
        "point": repr(dataclasses.replace(Point(1), y=2)),
        "url": [parsed.hostname, parsed.port, urllib.parse.parse_qs(parsed.query)],
        "chain": list(itertools.islice(itertools.chain("ab", "cd"), 3)),
        "product": functools.reduce(lambda a, b: a * b, range(1, 8)),
        "wrap": textwrap.wrap("the quick brown fox jumps over the lazy dog", 12),
        "uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "level": logging.getLevelName(logging.WARNING),
        "hints": HINTS == {"x": int, "y": typing.Optional[int]} and typing.get_origin(HINTS["y"]) is typing.Union,
        "codecs": [codecs.lookup("utf-8").name, codecs.getincrementaldecoder("latin-1")().decode(b"\\xe9")],
    }, sort_keys=True)
"""

STDLIB_FILTER = (
    WORKOUT
    + """
import proxywasm
from proxywasm import Action, HttpContext

AT_BUILD = workout(7)


@proxywasm.register
class Filter(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        again = workout(7)
        self.send_response(200, again if again == AT_BUILD else "differs from the build: " + again)
        return Action.PAUSE
"""
)


def test_a_filter_using_much_of_the_stdlib_works_after_zeroing(
    build_filter: Callable[[str], Path], tmp_path: Path
) -> None:
    """The stdlib code a filter imports at build time still runs in the VM, and computes what the
    same code computes here (and what it computed at build time)."""
    source = tmp_path / "workout_here.py"
    source.write_text(WORKOUT)
    spec = importlib.util.spec_from_file_location("workout_here", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # typing.get_type_hints looks the module up
    try:
        spec.loader.exec_module(module)
        expected = module.workout(7)
    finally:
        del sys.modules[spec.name]
    resp = Host.load(build_filter(STDLIB_FILTER)).request("GET", "/")
    assert resp.status == 200, resp.body
    assert resp.body.decode() == expected


def test_the_stdlib_filter_works_in_real_envoy(build_filter: Callable[[str], Path]) -> None:
    """The same module in V8: Envoy instantiates the zeroed snapshot in every worker."""
    with UpstreamServer() as upstream:
        plugin = WasmPlugin(build_filter(STDLIB_FILTER), name="stdlib")
        with Envoy(http_bootstrap(upstream_port=upstream.port, plugins=[plugin]), concurrency=2) as envoy:
            for _ in range(4):
                with urllib.request.urlopen(envoy.url + "/", timeout=10) as response:
                    body = response.read().decode()
                    assert response.status == 200 and not body.startswith("differs"), body
