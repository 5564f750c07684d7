"""metrics: counts requests per value of the ``my-custom-header`` header, one counter per value.

The counter's name carries its tags (``custom_header_value_counts_value=foo_reporter=wasmpythonsdk``);
the ``stats_tags`` of envoy.yaml turn it into ``custom_header_value_counts{value="foo",reporter="wasmpythonsdk"}``
in /stats/prometheus. Port of the proxy-wasm Go SDK's ``examples/metrics``.
"""

import proxywasm
from proxywasm import Counter, HttpContext

HEADER = "my-custom-header"
counters = {}  # header value -> Counter, per VM


@proxywasm.register
class CountHeaderValues(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        value = headers.get(HEADER)
        if value is not None:
            counter = counters.get(value)
            if counter is None:
                counter = counters[value] = Counter(f"custom_header_value_counts_value={value}_reporter=wasmpythonsdk")
            counter.increment()
