"""Uses builtin C modules it imported at build time (datetime, math) on every request; on /late it
imports one it did not (``_pickle``), which the served module leaves out."""

import datetime
import importlib
import math

import proxywasm
from proxywasm import Action, HttpContext


@proxywasm.register
class BuiltinModules(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        if headers.get(":path") == "/late":
            importlib.import_module("_pickle")
        day = datetime.date(2026, 12, 1) + datetime.timedelta(days=int(math.sqrt(16)))
        headers["x-day"] = day.isoformat()
        return Action.CONTINUE
