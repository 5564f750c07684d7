"""shared_queue: senders put data on named queues that a receiver VM owns and drains.

One module holds three plugins, told apart by the ``root_id`` of their Envoy config:

* ``receiver``: a singleton service (``bootstrap_extensions``, vm_id ``receiver``); each plugin
  registers the queue named by its configuration and logs what it dequeues;
* ``http_sender``: an HTTP filter that enqueues every request header on ``http_request_headers``
  and every response header on ``http_response_headers``;
* ``tcp_sender``: a network filter that enqueues an FNV-1a 128 hash of every chunk of upstream
  data on ``tcp_data_hashes``.

Port of the proxy-wasm Go SDK's ``examples/shared_queue`` (its ``receiver`` and ``sender``).
"""

import json

import proxywasm
from proxywasm import HttpContext, PluginContext, SharedQueue, StreamContext, log

RECEIVER_VM_ID = "receiver"


@proxywasm.register(root_id="receiver")
class Receiver(PluginContext):
    queue = None
    queue_name = ""

    def on_configure(self, configuration):
        self.queue_name = configuration.decode()
        self.queue = SharedQueue.register(self.queue_name)
        log.info(
            f'queue "{self.queue_name}" registered as queue_id={self.queue.queue_id} by context_id={self.context_id}'
        )
        return True

    def on_queue_ready(self, queue_id):
        while (data := self.queue.dequeue()) is not None:
            log.info(
                f"(context_id={self.context_id}) dequeued data from {self.queue_name}"
                f"(queue_id={queue_id}): {data.decode(errors='replace')}"
            )


def resolve(name):
    queue = SharedQueue.resolve(RECEIVER_VM_ID, name)
    if queue is None:
        log.critical(f"error resolving queue {name!r}: is the receiver running?")
    return queue


def enqueue_headers(queue_name, headers, context_id):
    queue = resolve(queue_name)
    if queue is None:
        return
    for name, value in headers.pairs():
        message = json.dumps({"key": name, "value": value})
        queue.enqueue(message)
        log.info(f"(context_id={context_id}) enqueued data: {message}")


class HeadersSender(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        enqueue_headers("http_request_headers", headers, self.context_id)

    def on_response_headers(self, headers, end_of_stream):
        enqueue_headers("http_response_headers", headers, self.context_id)


@proxywasm.register(root_id="http_sender")
class HttpSender(PluginContext):
    http_context = HeadersSender


def fnv1a_128(data):
    value = 0x6C62272E07BB014262B821756295C58D
    for byte in data:
        value = ((value ^ byte) * 0x0000000001000000000000000000013B) & ((1 << 128) - 1)
    return value.to_bytes(16, "big")


class HashSender(StreamContext):
    def on_upstream_data(self, data, end_of_stream):
        if not len(data):
            return None
        queue = resolve("tcp_data_hashes")
        if queue is not None:
            digest = fnv1a_128(data.read()).hex()
            queue.enqueue(digest)
            log.info(f"(context_id={self.context_id}) enqueued data: {digest}")
        return None


@proxywasm.register(root_id="tcp_sender")
class TcpSender(PluginContext):
    stream_context = HashSender
