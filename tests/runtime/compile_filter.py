"""A filter that compiles Python source at import time (fine: the snapshot runs it) and, on
request, at run time (the served module has no compiler: RuntimeError, failure policy).
The host tests and the Envoy tests run this same file."""

import collections
import dataclasses

import proxywasm
from proxywasm import HttpContext

Point = collections.namedtuple("Point", "x y")  # namedtuple and dataclass exec() source here
ANSWER = compile("40 + 2", "<answer>", "eval")


@dataclasses.dataclass
class Settings:
    limit: int = 3


@proxywasm.register
class Compiling(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        path = headers[":path"]
        if path == "/bytecode":  # code compiled at import time runs
            headers["x-answer"] = f"{eval(ANSWER)} {Point(1, 2)} {Settings()}"
        elif path == "/eval":
            headers["x-answer"] = str(eval("1 + 1"))
        elif path == "/exec":
            exec("y = 2", {})
        elif path == "/compile":
            compile("pass", "<run time>", "exec")
        elif path == "/namedtuple":
            collections.namedtuple("Late", "a b")
        elif path == "/ast":
            import ast

            ast.parse("x")
