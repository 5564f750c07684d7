"""Lays out CPython's static data by what becomes of it after initialisation (run by build.sh).

``regroup OBJECT...`` renames the data segments of libpython's members, in place, so that the
linker gathers them into output segments:

- ``pydoc``: C docstrings. The runtime zeroes them before Python starts, as if CPython were
  configured ``--without-doc-strings``, so no Python object copies them into the heap either.
- ``pyinit``: data read only while Python initialises (the runtime state's pristine copy, the
  frozen getpath code, the command-line usage text). Zeroed when initialisation ends.
- ``pyfrozen.<module>``: the deep-frozen stdlib modules, one contiguous group per module and
  the module's top-level code apart (it runs once, at import). The snapshotter zeroes what
  nothing references any more (proxywasm_build/frozen_objects.py).

Zeroed bytes need no data segment: a page that holds nothing else is a page no Envoy worker
copies. wasm-ld keeps segments of one name together and places names it does not know after
``.data``; names that are C identifiers get ``__start_``/``__stop_`` symbols (static_data.c).

``annotate MAP MODULE`` appends to the linked runtime the custom section listing the address and
size of every deep-frozen object, read from the linker's map (``parse_link_map``, which
build_only_code.py reads the map with too).
"""

from __future__ import annotations

import bisect
import re
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxywasm_build import frozen_objects, wasm

_LINKING = "linking"
_SEGMENT_INFO = 5

_DOC = re.compile(r"\.rodata\.(\w*(__doc__|_doc|_docstring)|(py)?doc_\w+)")
_INIT_ONLY = {
    "pystate.o": {".rodata.initial"},
    "getpath.o": {".rodata._Py_M__getpath"},
    "initconfig.o": {".rodata.usage_line", ".rodata.usage_help", ".rodata.usage_envvars", ".rodata.usage_xoptions"},
}
# The parts of a module's top-level code object itself, not of the functions and classes it defines.
_TOPLEVEL_PART = re.compile(r"_toplevel(_(consts|names|linetable|exceptiontable|localsplusnames|localspluskinds))?")


def frozen_group(symbol: str, modules: list[str]) -> str:
    """The output segment for a deep-frozen object: its module's group, or the shared constants'."""
    for module in modules:  # longest first: importlib__bootstrap_external before importlib__bootstrap
        if symbol.startswith(module + "_toplevel"):
            part = "top" if _TOPLEVEL_PART.fullmatch(symbol[len(module) :]) else "defs"
            return f"pyfrozen.{module}.{part}"
    return "pyfrozen.shared"


def new_name(obj: str, segment: str, frozen_modules: list[str]) -> str:
    if obj == "deepfreeze.o" and segment.startswith(".data."):
        return frozen_group(segment[len(".data.") :], frozen_modules)
    if segment in _INIT_ONLY.get(obj, ()):
        return "pyinit"
    if _DOC.fullmatch(segment):
        return "pydoc"
    return segment


def _rename_segments(linking: bytes, obj: str) -> bytes:
    """A linking section (after its name) with the segment-info subsection's names replaced."""
    r = wasm.Reader(linking)
    version = r.uleb()
    items = []
    for kind, body in wasm.subsections(linking[r.pos :]):
        if kind == _SEGMENT_INFO:
            s = wasm.Reader(body)
            entries = []
            for _ in range(s.uleb()):
                segment = s.name()
                start = s.pos
                s.uleb()  # alignment
                s.uleb()  # flags
                entries.append((segment, body[start : s.pos]))
            modules = sorted(
                (n[len(".data.") : -len("_toplevel")] for n, _ in entries if n.endswith("_toplevel")),
                key=len,
                reverse=True,
            )
            body = wasm.vec([wasm.name(new_name(obj, n, modules)) + rest for n, rest in entries])
        items.append((kind, body))
    return wasm.uleb(version) + wasm.encode_subsections(items)


def regroup(module: bytes, obj: str) -> bytes:
    sections = [
        wasm.custom_section(_LINKING, _rename_segments(wasm.custom_body(s), obj))
        if wasm.custom_name(s) == _LINKING
        else s
        for s in wasm.parse_sections(module)
    ]
    return wasm.build_module(sections)


@dataclass
class LinkMap:
    """What wasm-ld's ``--Map`` says about where things come from and where they go."""

    function_objects: list[str]  # the object file of each defined function, in code-section order
    data: list[tuple[int, int, str, str]]  # (address, size, object file, output segment) of each data input
    symbols: list[tuple[str, int, int, str]]  # (name, address, size, output segment) of each data symbol
    segments: dict[str, tuple[int, int]]  # output segment in memory -> (address, size)

    def __post_init__(self) -> None:
        self._starts = [d[0] for d in self.data]

    def owner(self, address: int) -> int | None:
        """The position in ``data`` of the input section holding ``address``."""
        k = bisect.bisect_right(self._starts, address) - 1
        if k >= 0 and address < self.data[k][0] + max(self.data[k][1], 1):
            return k
        return None

    def symbol(self, name: str) -> int | None:
        """The address of the data symbol ``name`` (the first, if static symbols share it)."""
        return next((address for n, address, _, _ in self.symbols if n == name), None)


_MAP_LINE = re.compile(r"^\s*(\S+)\s+(\S+)\s+(\S+)( +)(.*)$")
_INPUT = re.compile(r"(?:\(([^()]+\.o)\)|([^/()]+\.o)|<internal>):\((.*)\)$")
_OUT, _IN, _SYMBOL = 1, 9, 17  # the map's columns: spaces after the size


def parse_link_map(text: str) -> LinkMap:
    functions: list[str] = []
    data: list[tuple[int, int, str, str]] = []
    symbols: list[tuple[str, int, int, str]] = []
    segments: dict[str, tuple[int, int]] = {}
    out = ""
    in_memory = False  # the output segments after DATA, before the custom sections
    for line in text.splitlines():
        m = _MAP_LINE.match(line)
        if m is None or line.lstrip().startswith("Addr"):
            continue
        address, _, size, column, name = m.groups()
        level = len(column)
        if level == _OUT:
            out = name
            in_memory = (in_memory or name == "DATA") and not name.startswith("CUSTOM")
            if in_memory and out != "DATA":
                segments[out] = (int(address, 16), int(size, 16))
            continue
        memory = in_memory and out != "DATA"
        if level == _IN:
            source = _INPUT.search(name)
            obj = (source.group(1) or source.group(2) or "<internal>") if source else name
            if out == "CODE":
                functions.append(obj)
            elif memory:
                data.append((int(address, 16), int(size, 16), obj, out))
        elif level == _SYMBOL and memory:
            symbols.append((name, int(address, 16), int(size, 16), out))
    data.sort()
    return LinkMap(functions, data, symbols, segments)


def frozen_objects_in(link_map: str) -> frozen_objects.FrozenObjects:
    """Each symbol the map places in a pyfrozen.* output segment, and where .rodata lies."""
    layout = parse_link_map(link_map)
    start, size = layout.segments.get(".rodata", (0, 0))
    objects = {(address, size) for _, address, size, out in layout.symbols if out.startswith("pyfrozen.")}
    return frozen_objects.FrozenObjects((start, start + size), sorted(objects))


def annotate(link_map: str, module: bytes) -> bytes:
    frozen = frozen_objects_in(link_map)
    if not frozen.objects or frozen.constant_data == (0, 0):
        raise SystemExit("data_layout: the link map lists no deep-frozen objects or no .rodata")
    section = wasm.custom_section(frozen_objects.SECTION, frozen.encode())
    return wasm.build_module([*wasm.parse_sections(module), section])


def main(argv: list[str]) -> None:
    if argv[:1] == ["regroup"]:
        for path in map(Path, argv[1:]):
            path.write_bytes(regroup(path.read_bytes(), path.name))
    elif argv[:1] == ["annotate"] and len(argv) == 3:
        module = Path(argv[2])
        module.write_bytes(annotate(Path(argv[1]).read_text(), module.read_bytes()))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
