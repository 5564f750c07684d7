"""The runtime's stdlib patches (sdk/runtime/stdlib_patches.py) give the same results as CPython's
own code: json.loads of bytes and str, with and without surrounding whitespace, BOMs, UTF-16/32,
extra data and invalid documents (the same value, or the same exception and message, which
carries the position), and json.dumps and the pure-Python fallbacks with json importing no ``re``;
base64 and urllib.parse without ``re`` too. Run in the VM (the local host on the built module)
against the test process's unpatched modules, and in real Envoy against the local host."""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from proxywasm_build.build import RUNTIME_DIR
from proxywasm_host import Host

RUNTIME_SOURCE = Path(__file__).resolve().parents[2] / "sdk" / "runtime"

FILTER = """
import json

import proxywasm
from proxywasm import HttpContext


@proxywasm.register
class Decode(HttpContext):
    async def on_request_headers(self, headers, end_of_stream):
        as_str = headers.get("x-as-str") == "1"
        body = await self.request_body(max_bytes=65536)
        data = body.decode("latin-1") if as_str else body
        try:
            answer = repr(json.loads(data))
        except Exception as exc:
            answer = f"{type(exc).__name__}: {exc}"
        self.send_response(200, answer)
"""

DOCUMENTS = [
    b'{"a": 1}',
    b'{"a":[1,2,{"b":null}],"c":"\\u00e9"}',
    b'  {"a": 1}  ',
    b"\n[1, 2]\t",
    b"[]",
    b"7",
    b"12",
    b'"x"',
    b"{",
    b"",
    b" ",
    b'{"a": 1} x',
    b'{"a": 1}  x',
    b'{"a": 1}\n\n',
    b"[1] [2]",
    b"nul",
    b'{"a": 1}\x00',
    codecs.BOM_UTF8 + b'{"a": 1}',
    '{"a": "é"}'.encode("utf-16"),
    '{"a": "é"}'.encode("utf-16-le"),
    '{"a": "é"}'.encode("utf-16-be"),
    '{"a": "é"}'.encode("utf-32"),
    '{"a": "é"}'.encode("utf-32-le"),
    "[1]".encode("utf-32-be"),
    b"1\x00",
    b"\x00\x00\x00",
    b'{"\xff": 1}',
    b'["\xed\xa0\x80"]',
    # json.loads's inline path: no whitespace around, so the scanner runs from json.loads itself
    b'{"a":1}x',
    b"[1]]",
    b"x",
    b'"unterminated',
    b"[1,]",
    b"NaN",
    b"-",
    b"1e5x",
    b'{"a" 1}',
    # whitespace runs around the document, shorter and longer than _lazy_re's 64-character strips
    b" " * 200 + b"[1]" + b"\n" * 130,
    b"\n" * 64,
    b"\n" * 64 + b"1",
    b"1" + b" " * 63,
    b"1" + b" " * 64,
    b"1" + b" " * 65 + b"2",
    b" \t\n\r",
    b"\t" * 129,
]


def expected(data: bytes | str) -> str:
    try:
        return repr(json.loads(data))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def test_the_runtime_stdlib_is_patched() -> None:
    assert "proxywasm:" in (RUNTIME_DIR / "stdlib" / "json" / "decoder.py").read_text()
    assert "proxywasm:" in (RUNTIME_DIR / "stdlib" / "json" / "__init__.py").read_text()


@pytest.mark.parametrize("as_str", [False, True], ids=["bytes", "str"])
def test_json_loads_answers_as_cpython_does(build_filter: Callable[[str], Path], as_str: bool) -> None:
    host = Host.load(build_filter(FILTER))
    for document in DOCUMENTS:
        data: bytes | str = document.decode("latin-1") if as_str else document
        response = host.request("POST", "/", headers=[("x-as-str", "1" if as_str else "0")], body=document)
        assert response.body.decode() == expected(data), document


NO_RE = """
import sys

import json

import proxywasm
from proxywasm import HttpContext

IMPORTED_RE = "re" in sys.modules  # at build time, when the snapshot is taken


@proxywasm.register
class Encode(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        lines = [f"re at build: {IMPORTED_RE}"]
        lines.append(json.dumps({"a": ["x\\"\\n\\u00e9", 1.5, None, True]}))
        lines.append(json.dumps("\\u00e9\\ud800") + json.dumps("\\u00e9", ensure_ascii=False))
        # the pure-Python fallbacks compile their patterns when first used
        try:
            lines.append(repr(json.decoder.py_scanstring('a b"c', 0)))
            lines.append(repr(json.scanner.py_make_scanner(json.JSONDecoder())("-12.5e3]", 0)))
            lines.append(json.encoder.py_encode_basestring('a"\\x01'))
            lines.append(json.encoder.py_encode_basestring_ascii("\\u00e9\\U0001f600"))
        except ModuleNotFoundError as exc:
            lines.append(str(exc))
        self.send_response(200, "\\n".join(lines))
        return proxywasm.Action.PAUSE
"""


@pytest.mark.parametrize("filter_imports_re", [False, True])
def test_json_imports_no_re(build_filter: Callable[[str], Path], filter_imports_re: bool) -> None:
    # Importing re cost every Envoy worker's VM 0.77 MB (sdk/runtime/stdlib_stubs/_lazy_re.py).
    source = ("import re\n" if filter_imports_re else "") + NO_RE
    answer = Host.load(build_filter(source)).request("GET", "/").body.decode().split("\n")
    dumped = [
        json.dumps({"a": ['x"\n\u00e9', 1.5, None, True]}),
        json.dumps("\u00e9\ud800") + json.dumps("\u00e9", ensure_ascii=False),
    ]
    assert answer[:3] == [f"re at build: {filter_imports_re}", *dumped]
    if filter_imports_re:
        assert answer[3:] == [
            repr(json.decoder.py_scanstring('a b"c', 0)),  # type: ignore[attr-defined]
            repr(json.scanner.py_make_scanner(json.JSONDecoder())("-12.5e3]", 0)),  # type: ignore[attr-defined]
            json.encoder.py_encode_basestring('a"\x01'),
            json.encoder.py_encode_basestring_ascii("\u00e9\U0001f600"),
        ]
    else:  # a module the build did not import cannot be imported in Envoy: the usual message
        assert answer[3].startswith("No module named 're' in this filter"), answer


# A call's answer as text, the same from the VM and from CPython: its repr, or the exception it
# raised. The filters below carry it, and the tests run it with the test process's modules.
ANSWER = """
def answer(call):
    try:
        return repr(call())
    except (ValueError, TypeError) as exc:  # binascii.Error is a ValueError
        return f"{type(exc).__name__}: {exc}"
"""

# The calls the base64 filter makes, also run here with CPython's base64 for the expected answers.
BASE64_CALLS = (
    ANSWER
    + """

def base64_answers(base64):
    lines = []
    for data in [b"", b"00ff", b"00FF", b"0G", b"abc", b"ABC", b"12 3", b"\\xff\\xfe", bytearray(b"CAFE"), "C0DE"]:
        for casefold in (False, True):
            lines.append(answer(lambda: base64.b16decode(data, casefold)))
    lines.append(answer(lambda: base64.b64decode(b"dXNlcjpwYXNz")))
    lines.append(answer(lambda: base64.urlsafe_b64decode(b"-_8=")))
    lines.append(answer(lambda: base64.b32decode(b"MFRGG===")))
    return lines
"""
)


def answering_filter(module: str, calls: str, answers: str) -> str:
    """A filter that imports ``module`` and answers every request with whether the build imported
    ``re``, then the lines ``answers`` (an expression over the functions of ``calls``) gives."""
    return f"""
import sys
import {module}

import proxywasm
from proxywasm import HttpContext

IMPORTED_RE = "re" in sys.modules
{calls}

@proxywasm.register
class Answer(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        lines = [f"re: {{IMPORTED_RE}}", *{answers}]
        self.send_response(200, "\\n".join(lines))
        return proxywasm.Action.PAUSE
"""


BASE64 = answering_filter("base64", BASE64_CALLS, "base64_answers(base64)")


def test_base64_imports_no_re_and_answers_as_cpython_does(build_filter: Callable[[str], Path]) -> None:
    import base64

    calls: dict[str, Any] = {}
    exec(BASE64_CALLS, calls)
    expected = ["re: False", *calls["base64_answers"](base64)]
    assert Host.load(build_filter(BASE64)).request("GET", "/").body.decode().split("\n") == expected


def test_the_whitespace_stand_in_matches_as_re_does() -> None:
    # sdk/runtime/stdlib_stubs/_lazy_re.py's whitespace against re's [ \t\n\r]* for any pos and
    # endpos, runs shorter and longer than its 64-character strips, and other space characters.
    import copy
    import importlib.util
    import random
    import re

    spec = importlib.util.spec_from_file_location("_lazy_re", RUNTIME_SOURCE / "stdlib_stubs" / "_lazy_re.py")
    assert spec is not None and spec.loader is not None
    lazy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lazy)
    pattern = re.compile(r"[ \t\n\r]*")
    assert lazy.whitespace.pattern == pattern.pattern
    rng = random.Random(14)
    for _ in range(20000):
        text = "".join(rng.choice(" \t\n\rab\x0b\u3000") for _ in range(rng.randint(0, 150)))
        pos, endpos = rng.randint(-3, len(text) + 3), rng.choice([None, rng.randint(-3, len(text) + 3)])
        args = (text, pos) if endpos is None else (text, pos, endpos)
        ours, theirs = lazy.whitespace.match(*args), pattern.match(*args)
        assert (None if ours is None else ours.end()) == (None if theirs is None else theirs.end()), args
    assert copy.copy(lazy.compile("a+")).pattern == "a+"  # copying a lazy pattern does not recurse


# The calls the filter makes, also run here with CPython's urllib.parse for the expected answers.
URL_CALLS = (
    ANSWER
    + """

def url_answers(parse, quoted, urls):
    lines = []
    for text in quoted:
        lines.append(answer(lambda: parse.unquote(text)))
        lines.append(answer(lambda: parse.unquote(text, "latin-1", "surrogateescape")))
        lines.append(answer(lambda: parse.unquote_plus(text)))
        lines.append(answer(lambda: parse.parse_qsl("k=" + text + "&j=" + text, keep_blank_values=True)))
    lines += [answer(lambda: parse.urlsplit(url)) for url in urls]
    lines += [answer(lambda: parse._splittype(url)) for url in urls + ["x", ":a", "a/b:c", "MAILTO:x\\n:y"]]
    lines.append(answer(lambda: parse.quote("caf\\u00e9 /?&")))
    lines.append(answer(lambda: parse.urlencode({"q": "a b", "n": "\\u00e9"})))
    return lines
"""
)
QUOTED = ["", "abc", "a%20b", "%C3%A9t%C3%A9", "%zz%4", "%E2%82", "caf\u00e9%20%C3%A9", "\u00e9%C3", "%C3\u00e9",
          "\u6f22%2F\U0001f600%41x", "a+b%2Bc", "\ud800%41"]  # fmt: skip
URLS = ["http://[v1.x]/p", "http://[v1.]/", "http://[vg.x]/", "http://[v.x]/", "http://[::1]:80/p?q=1#f",
        "http://[1.2.3.4]/", "https://user:pw@example.com:8443/a/b;p?x=1&y=%C3%A9#frag", "http://[vAf.:]/"]  # fmt: skip
URL_FILTER = answering_filter("urllib.parse", URL_CALLS, f"url_answers(urllib.parse, {QUOTED!r}, {URLS!r})")


def test_urllib_parse_imports_no_re_and_answers_as_cpython_does(build_filter: Callable[[str], Path]) -> None:
    # Importing re cost every Envoy worker's VM 0.35 MB more with urllib.parse.
    import urllib.parse

    calls: dict[str, Any] = {}
    exec(URL_CALLS, calls)
    expected = ["re: False", *calls["url_answers"](urllib.parse, QUOTED, URLS)]
    assert Host.load(build_filter(URL_FILTER)).request("GET", "/").body.decode().split("\n") == expected


def test_the_urllib_parse_helpers_answer_as_re_does() -> None:
    # The runtime's patched urllib/parse.py, loaded here: its unquote (the split into ASCII runs),
    # _splittype and IPvFuture check against CPython's, which use re, on random strings.
    import importlib.util
    import random
    import re
    import sys
    import urllib.parse

    def load(name: str, path: Path) -> object:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    sys.modules["_lazy_re"] = load("_lazy_re", RUNTIME_SOURCE / "stdlib_stubs" / "_lazy_re.py")  # type: ignore[assignment]
    try:
        patched: Any = load("patched_urllib_parse", RUNTIME_DIR / "stdlib" / "urllib" / "parse.py")
    finally:
        del sys.modules["_lazy_re"]
    assert "_is_ipvfuture" in vars(patched)

    def outcome(call: Callable[[], object]) -> object:
        try:
            return call()
        except Exception as exc:  # the same exception, whatever it is
            return type(exc), str(exc)

    rng = random.Random(14)
    alphabet = "%%%0123456789abcdefABCDEFgG \x7f\x80\u00e9\u00ff\u0100\ud800\u6f22\U0001f600\n+&=;/"
    for _ in range(20000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert patched._split_ascii_runs(text) == re.split("([\x00-\x7f]+)", text), text
        for encoding, errors in (("utf-8", "replace"), ("latin-1", "strict"), ("utf-8", "surrogateescape")):
            ours = outcome(lambda: patched.unquote(text, encoding, errors))  # noqa: B023 - called at once
            assert ours == outcome(lambda: urllib.parse.unquote(text, encoding, errors)), text  # noqa: B023
    for _ in range(20000):
        url = "".join(rng.choice("ab:/\n\u00e9X") for _ in range(rng.randint(0, 10)))
        assert patched._splittype(url) == urllib.parse._splittype(url), url  # type: ignore[attr-defined]
    ipvfuture = re.compile(r"\Av[a-fA-F0-9]+\..+\Z")
    for _ in range(20000):
        host = "v" + "".join(rng.choice("0123456789abcdefABCDEFgv.\n:x") for _ in range(rng.randint(0, 8)))
        assert patched._is_ipvfuture(host) == bool(ipvfuture.match(host)), repr(host)


def test_real_envoy_answers_as_the_host_does(build_filter: Callable[[str], Path]) -> None:
    # The patched json, base64 and urllib.parse in Envoy's V8: each filter above answers Envoy's request with the
    # bytes it gives in the local host (whose answers the tests above compare with CPython's).
    import http.client

    from proxywasm_build.envoy import Envoy, WasmPlugin, http_bootstrap
    from proxywasm_build.upstream import UpstreamServer

    def ask(port: int, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        try:
            conn.request("POST" if body else "GET", "/", body=body or None, headers=headers or {})
            return conn.getresponse().read()
        finally:
            conn.close()

    documents = [DOCUMENTS[i] for i in (0, 2, 3, 11, 13)] + [b" " * 200 + b"[1]" + b"\n" * 130, b"1" + b" " * 65 + b"2"]
    with UpstreamServer() as upstream:
        for source in (NO_RE, "import re\n" + NO_RE, BASE64, URL_FILTER, FILTER):
            wasm = build_filter(source)
            host = Host.load(wasm)
            with Envoy(http_bootstrap(upstream_port=upstream.port, plugins=[WasmPlugin(wasm)])) as envoy:
                if source is FILTER:
                    for document in documents:
                        assert ask(envoy.port(), document, {"x-as-str": "0"}).decode() == expected(document), document
                else:
                    assert ask(envoy.port()) == host.request("GET", "/").body
