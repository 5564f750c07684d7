"""labelled_metrics: request metrics with Prometheus labels.

Counts responses by route and status class, keeps the requests in flight per route, and records
how long the upstream took per route. Envoy has no labels on Wasm metrics: the SDK encodes them
in the stat name (``wasmcustom.http_responses_total;route=api;status_class=2xx`` in /stats) and
the ``stats_config`` in envoy.yaml (what ``proxywasm build`` writes to
``filter.stats_config.yaml``) turns them into ``http_responses_total{route="api",status_class="2xx"}``
in /stats/prometheus.
"""

import proxywasm
from proxywasm import Counter, Gauge, Histogram, HttpContext, PluginContext, now_ns

# Declared at module level: proxywasm build sees their labels and writes the stats_config for them.
responses = Counter("http_responses_total", labels=("route", "status_class"))
in_flight = Gauge("http_requests_in_flight", labels=("route",))
upstream_ms = Histogram("http_upstream_milliseconds", labels=("route",))

ROUTES = ("api", "static")  # the label values this filter uses: few and fixed (never raw paths)


class Measure(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        first = headers[":path"].lstrip("/").split("/", 1)[0].split("?", 1)[0]
        self.route = first if first in ROUTES else "other"
        self.started_ns = now_ns()
        in_flight.labels(route=self.route).add(1)

    def on_response_headers(self, headers, end_of_stream):
        status = headers.get(":status", "0")
        responses.labels(route=self.route, status_class=status[0] + "xx").increment()
        upstream_ms.labels(route=self.route).record((now_ns() - self.started_ns) // 1_000_000)

    def on_done(self):
        route = getattr(self, "route", None)
        if route is not None:  # on_request_headers ran
            in_flight.labels(route=route).add(-1)
        return True


@proxywasm.register
class Plugin(PluginContext):
    http_context = Measure

    def on_configure(self, configuration):
        # Pick the series every dashboard shows now, so they read 0 before the first request.
        for route in (*ROUTES, "other"):
            in_flight.labels(route=route)
            responses.labels(route=route, status_class="2xx")
            responses.labels(route=route, status_class="5xx")
        return True
