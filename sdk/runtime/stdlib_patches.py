"""Patches to the runtime's copy of the stdlib: same results, less work inside the VM.

Run by build.sh on the copied stdlib (``python stdlib_patches.py STDLIB_DIR``). Each patch names
the exact text it replaces: a CPython update that changes it fails the runtime build here rather
than silently keeping the old code. Measured with bench/virtual_cpu.py (Wasm fuel, json_body).
"""

from __future__ import annotations

import sys
from pathlib import Path

# (file, original text, replacement, why)
PATCHES: list[tuple[str, str, str, str]] = [
    (
        "json/__init__.py",
        "        s = s.decode(detect_encoding(s), 'surrogatepass')\n",
        "        # proxywasm: an ASCII first byte other than NUL rules out every BOM and UTF-16/32-BE, a\n"
        "        # second byte other than NUL rules out -LE: detect_encoding() would answer utf-8.\n"
        "        if len(s) >= 2 and 0 < s[0] < 0x80 and s[1]:\n"
        "            s = s.decode('utf-8', 'surrogatepass')\n"
        "        else:\n"
        "            s = s.decode(detect_encoding(s), 'surrogatepass')\n",
        "json.loads(bytes) without detect_encoding()'s calls in the common case",
    ),
    (
        "json/decoder.py",
        "        obj, end = self.raw_decode(s, idx=_w(s, 0).end())\n"
        "        end = _w(s, end).end()\n"
        "        if end != len(s):\n",
        "        if s and s[0] not in WHITESPACE_STR and s[-1] not in WHITESPACE_STR:\n"
        "            # proxywasm: no whitespace around the document, no regex match to skip it\n"
        "            obj, end = self.raw_decode(s, 0)\n"
        "            if end != len(s):\n"
        "                end = _w(s, end).end()\n"
        "        else:\n"
        "            obj, end = self.raw_decode(s, idx=_w(s, 0).end())\n"
        "            end = _w(s, end).end()\n"
        "        if end != len(s):\n",
        "JSONDecoder.decode without two regex matches when the document has no surrounding whitespace",
    ),
    (
        "json/__init__.py",
        "            parse_constant is None and object_pairs_hook is None and not kw):\n"
        "        return _default_decoder.decode(s)\n",
        "            parse_constant is None and object_pairs_hook is None and not kw):\n"
        "        # proxywasm: the default decoder's decode() and raw_decode() inline, two frames less, when\n"
        "        # the document has no surrounding whitespace and nothing after it (else decode() as before)\n"
        "        if s and s[0] not in decoder.WHITESPACE_STR and s[-1] not in decoder.WHITESPACE_STR:\n"
        "            try:\n"
        "                obj, end = _default_decoder.scan_once(s, 0)\n"
        "            except StopIteration as err:\n"
        "                raise JSONDecodeError('Expecting value', s, err.value) from None\n"
        "            if end == len(s):\n"
        "                return obj\n"
        "        return _default_decoder.decode(s)\n",
        "json.loads with the default decoder without the decode() and raw_decode() frames",
    ),
    # json without re: importing re (with enum, functools, collections) cost every Envoy worker's VM
    # 0.77 MB (stdlib_stubs/_lazy_re.py); with _json linked in, only WHITESPACE serves json itself.
    (
        "json/decoder.py",
        "import re\n",
        "import _lazy_re as re  # proxywasm: patterns compiled on first use (stdlib_stubs/_lazy_re.py)\n",
        "json.decoder without importing re",
    ),
    (
        "json/decoder.py",
        "WHITESPACE = re.compile(r'[ \\t\\n\\r]*', FLAGS)\n",
        "WHITESPACE = re.whitespace  # proxywasm: the same matches without re (stdlib_stubs/_lazy_re.py)\n",
        "json.decoder's WHITESPACE without re",
    ),
    (
        "json/scanner.py",
        "import re\n",
        "import _lazy_re as re  # proxywasm: patterns compiled on first use (stdlib_stubs/_lazy_re.py)\n",
        "json.scanner without importing re",
    ),
    (
        "json/encoder.py",
        "import re\n",
        "import _lazy_re as re  # proxywasm: patterns compiled on first use (stdlib_stubs/_lazy_re.py)\n",
        "json.encoder without importing re",
    ),
    # base64 (Basic auth, JWTs) imported re for one test in b16decode: 0.76 MB per worker VM.
    (
        "base64.py",
        "import re\n",
        "",
        "base64 without importing re",
    ),
    (
        "base64.py",
        "    if re.search(b'[^0-9A-F]', s):\n",
        "    if s.translate(None, b'0123456789ABCDEF'):  # proxywasm: the same test without re\n",
        "base64.b16decode's digit check without re",
    ),
    # urllib.parse (query strings, URLs) imported re for unquote's split of a non-ASCII string into
    # ASCII runs and for one IPvFuture check in urlsplit: 0.35 MB per worker VM. _splittype (which
    # mimetypes.guess_type calls) does without re too; the other deprecated split*() helpers
    # (urllib.request's, which imports re itself) compile their patterns on first use.
    (
        "urllib/parse.py",
        "import re\n",
        "import _lazy_re as re  # proxywasm: patterns compiled on first use (stdlib_stubs/_lazy_re.py)\n",
        "urllib.parse without importing re",
    ),
    (
        "urllib/parse.py",
        '        if not re.match(r"\\Av[a-fA-F0-9]+\\..+\\Z", hostname):\n',
        "        if not _is_ipvfuture(hostname):  # proxywasm: the same test without re\n",
        "urllib.parse's IPvFuture check without re",
    ),
    (
        "urllib/parse.py",
        "_asciire = re.compile('([\\x00-\\x7f]+)')\n",
        "_asciire = re.compile('([\\x00-\\x7f]+)')\n"
        "\n"
        "\n"
        "def _split_ascii_runs(string):\n"
        "    # proxywasm: _asciire.split(string) without re: [other, ASCII run, other, ..., other]\n"
        "    if string.isascii():\n"
        "        return ['', string, ''] if string else ['']\n"
        "    bits = []\n"
        "    start = i = 0\n"
        "    n = len(string)\n"
        "    while i < n:\n"
        "        if string[i] < '\\x80':\n"
        "            j = i + 1\n"
        "            while j < n and string[j] < '\\x80':\n"
        "                j += 1\n"
        "            bits.append(string[start:i])\n"
        "            bits.append(string[i:j])\n"
        "            start = i = j\n"
        "        else:\n"
        "            i += 1\n"
        "    bits.append(string[start:])\n"
        "    return bits\n"
        "\n"
        "\n"
        "def _is_ipvfuture(hostname):\n"
        "    # proxywasm: re.match(r'\\Av[a-fA-F0-9]+\\..+\\Z', hostname) without re\n"
        "    head, dot, tail = hostname[1:].partition('.')\n"
        "    return (hostname[:1] == 'v' and bool(head) and not head.strip('0123456789abcdefABCDEF')\n"
        "            and bool(dot) and bool(tail) and '\\n' not in tail)\n",
        "urllib.parse's helpers without re",
    ),
    (
        "urllib/parse.py",
        "    bits = _asciire.split(string)\n",
        "    bits = _split_ascii_runs(string)  # proxywasm: the same split without re\n",
        "urllib.parse.unquote without re",
    ),
    (
        "urllib/parse.py",
        "    global _typeprog\n"
        "    if _typeprog is None:\n"
        "        _typeprog = re.compile('([^/:]+):(.*)', re.DOTALL)\n"
        "\n"
        "    match = _typeprog.match(url)\n"
        "    if match:\n"
        "        scheme, data = match.groups()\n"
        "        return scheme.lower(), data\n"
        "    return None, url\n",
        "    # proxywasm: _typeprog's match without re: a first ':' after one or more characters, no '/'\n"
        "    colon = url.find(':')\n"
        "    if colon > 0 and '/' not in url[:colon]:\n"
        "        return url[:colon].lower(), url[colon + 1:]\n"
        "    return None, url\n",
        "urllib.parse._splittype (mimetypes.guess_type's) without re",
    ),
]


def apply(stdlib: Path) -> None:
    for name, original, replacement, why in PATCHES:
        path = stdlib / name
        text = path.read_text()
        if text.count(original) != 1:
            sys.exit(f"runtime: stdlib patch '{why}' no longer applies to {name}: update sdk/runtime/stdlib_patches.py")
        path.write_text(text.replace(original, replacement))


if __name__ == "__main__":
    apply(Path(sys.argv[1]))
