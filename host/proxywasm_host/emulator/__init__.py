"""The Envoy-semantics core: Envoy's rules over plain Python values, with no Wasm in sight.

Where each rule lives:

* ``process.py``: the process (clock and timers, event loop, shared data, queues, stats).
* ``vm.py``: one VM (contexts, calls under cpp-host's rules, deferred effects, failure, ticks).
* ``host_functions.py``: every proxy-wasm host function's semantics and statuses.
* ``http_filter.py``: Envoy's Wasm HTTP filter context (what host calls see, callback statuses,
  failure policy of a failed VM).
* ``filter_manager.py``: the stream's state machine per direction, buffering and its limit,
  continuing, local replies, resets, teardown.
* ``local_reply.py``: how a local reply is built (gRPC, HEAD).
* ``http1.py``: the HTTP/1 codec and connection manager around the chain (framing, trailers,
  headers added or stripped).
* ``http.py``: the router and the client, and driving a stream (step or request level).
* ``callouts.py``: HTTP and gRPC callouts (request sent, answers, timeouts, resets).
* ``attributes.py``: ``proxy_get_property``/``proxy_set_property``.
* ``network.py``: L4 connections.
* ``headers.py``: Envoy's header map.

A guest (``proxywasm_host.wasm`` for modules) plugs into :class:`~.vm.Vm` through the ``Guest``
protocol and calls :class:`~.host_functions.HostFunctions`.
"""
