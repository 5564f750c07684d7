"""proxywasm: a stand-in for ``re`` in json's modules (see stdlib_patches.py), which compile their
patterns when imported. ``import json`` then imported ``re`` (with enum, functools and collections):
0.77 MB more resident memory in every Envoy worker's VM of every filter that reads a JSON
configuration. With the C accelerator (``_json``, linked in) json uses one pattern, ``WHITESPACE``
in ``JSONDecoder.decode``, which :data:`whitespace` matches without ``re``; the others serve the
pure-Python fallbacks (``py_scanstring``, ``py_make_scanner``, ``py_encode_basestring*``) and are
compiled by ``re`` on first use. In a VM that needs ``re`` imported by the filter at build time: a
module the build did not import cannot be imported inside Envoy (ModuleNotFoundError saying so).
"""

# re's flag values (re.MULTILINE, re.DOTALL, re.VERBOSE), the same since Python 3.0
MULTILINE, DOTALL, VERBOSE = 8, 16, 64


class compile:  # lower case: json calls re.compile(...)
    """``re.compile(pattern, flags)``, compiled on first use."""

    __slots__ = ("_args", "_compiled")

    def __init__(self, pattern, flags=0):
        self._args = (pattern, flags)
        self._compiled = None

    def _pattern(self):
        if self._compiled is None:
            import re

            self._compiled = re.compile(*self._args)
        return self._compiled

    # json binds pattern.match at import (as default arguments): methods, so binding compiles nothing
    def match(self, *args):
        return self._pattern().match(*args)

    def search(self, *args):
        return self._pattern().search(*args)

    def sub(self, *args):
        return self._pattern().sub(*args)

    def __getattr__(self, name):  # .pattern, .flags, ...: a real pattern's
        if name.startswith("_"):  # copy/pickle probing, or a slot not yet set: not the pattern's
            raise AttributeError(name)
        return getattr(self._pattern(), name)


class _Match:
    """What json reads of a match: ``end()``."""

    __slots__ = ("_end",)

    def __init__(self, end):
        self._end = end

    def end(self):
        return self._end


class _Whitespace:
    """``re.compile(r'[ \\t\\n\\r]*', FLAGS)`` for json: ``match(s, pos).end()`` is where the run
    of JSON whitespace starting at ``pos`` ends (the only use json makes of it)."""

    __slots__ = ()
    pattern = r"[ \t\n\r]*"

    def match(self, s, pos=0, endpos=None):
        stop = len(s) if endpos is None else min(max(endpos, 0), len(s))
        end = min(max(pos, 0), len(s))  # re clamps pos and endpos the same way
        if end > stop:
            return None  # as re: no match when pos is past endpos
        while True:  # C-speed strips, 64 characters at a time: no copy of a long document
            chunk = s[end : min(end + 64, stop)]
            rest = chunk.lstrip(_WHITESPACE)
            end += len(chunk) - len(rest)
            if rest or end >= stop:
                return _Match(end)


_WHITESPACE = " \t\n\r"


whitespace = _Whitespace()
