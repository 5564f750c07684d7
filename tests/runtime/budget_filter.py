"""The filter the CPU-budget tests run, in real Envoy (test_budget_envoy.py) and in both host
modes (test_budget_host_loops.py): endless loops in every kind of callback (and in a coroutine
resumed after an await), one that catches BudgetExceeded, a catastrophic regex, work within the
budget, and plugins with their own budgets."""

import itertools
import json
import re
import time

import proxywasm
from proxywasm import Action, BudgetExceeded, FailurePolicy, HttpContext, PluginContext, StreamContext


def spin(ms):
    end = time.monotonic_ns() + ms * 1_000_000
    while time.monotonic_ns() < end:
        pass


class Filter(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        path = headers[":path"]
        if path.startswith("/in/"):  # /in/<root id>/<what>: only that plugin does it
            _, _, root, path = path.split("/", 3)
            if root != self.plugin.root_id:
                return Action.CONTINUE
            path = "/" + path
        if path == "/loop":
            while True:
                pass
        if path == "/catch":
            while True:
                try:
                    while True:
                        pass
                except BudgetExceeded:
                    pass
        if path == "/bare":
            while True:
                try:
                    continue
                except:  # noqa: E722
                    continue
        if path == "/regex":
            re.match(r"(a+)+$", "a" * 40 + "!")
        if path.startswith("/spin/"):
            spin(int(path[6:]))
        if path.startswith("/count/"):  # work within the budget, with a result to check
            headers["x-total"] = str(sum(range(int(path[7:]))))
        if path == "/callout":
            self.http_call("upstream", self.on_answer, path="/answer")
            return Action.PAUSE
        if path == "/endless-headers":  # the SDK's own loop over them never ends
            self.send_response(200, "never", itertools.repeat(("x-a", "b")))
        headers["x-filtered"] = "yes"
        return Action.CONTINUE

    def on_answer(self, response):
        while True:
            pass


class Plugin(PluginContext):
    http_context = Filter

    def on_configure(self, configuration):
        config = json.loads(configuration or b"{}")
        if config.get("policy") == "open":
            self.failure_policy = FailurePolicy.FAIL_OPEN
        if config.get("loop_in_configure"):
            while True:
                pass
        if config.get("tick_ms"):
            self.set_tick_period(config["tick_ms"])
        return True

    def on_tick(self):
        while True:
            pass


proxywasm.register(Plugin)


@proxywasm.register(root_id="attr")
class ThirtyMilliseconds(Plugin):
    cpu_budget_ms = 30


@proxywasm.register(root_id="off")
class NoBudget(Plugin):
    cpu_budget_ms = 0


class AwaitingFilter(HttpContext):
    async def on_request_headers(self, headers, end_of_stream):
        await self.http_call("upstream", path="/answer")
        while True:  # runs in Envoy's on_http_call_response, the callout's answer
            pass


@proxywasm.register(root_id="await")
class Awaiting(Plugin):
    http_context = AwaitingFilter


class Connection(StreamContext):
    def on_downstream_data(self, data, end_of_stream):
        if data.read().startswith(b"LOOP"):
            while True:
                pass
        return Action.CONTINUE


@proxywasm.register(root_id="l4")
class L4(PluginContext):
    stream_context = Connection
