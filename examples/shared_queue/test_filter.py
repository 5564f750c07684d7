"""shared_queue's test: senders enqueue on queues that a receiver VM registered and drains.

One module, three plugins told apart by ``root_id``, as in envoy.yaml: a receiver per queue (VM
``receiver``), the HTTP sender and the TCP sender (VM ``sender``). Hosts given the same ``envoy``
share its queues, as the VMs of one Envoy process do; the event loop (``pump``, or the one
``host.request`` runs) delivers ``on_queue_ready`` to the receiver.
"""

from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm_host import Envoy, Host

HERE = Path(__file__).parent
QUEUES = ("http_request_headers", "http_response_headers", "tcp_data_hashes")


@pytest.fixture
def load(proxywasm_host: Callable[..., Host], proxywasm_mode: str) -> Callable[..., Host]:
    envoy = Envoy()

    def load(root_id: str, vm_id: str, plugin_config: str = "") -> Host:
        return proxywasm_host(HERE, mode=proxywasm_mode, envoy=envoy, root_id=root_id, vm_id=vm_id,
                              plugin_config=plugin_config)  # fmt: skip

    return load


def dequeued(receiver: Host) -> list[str]:
    return [m.split(": ", 1)[1] for m in receiver.log_messages() if "dequeued data from" in m]


def enqueued(sender: Host) -> list[str]:
    return [m.split(": ", 1)[1] for m in sender.log_messages() if "enqueued data" in m]


def fnv1a_128(data: bytes) -> str:
    value = 0x6C62272E07BB014262B821756295C58D
    for byte in data:
        value = ((value ^ byte) * 0x0000000001000000000000000000013B) & ((1 << 128) - 1)
    return f"{value:032x}"


def test_http_headers_reach_the_receivers(load: Callable[..., Host]) -> None:
    requests, responses, _ = (load("receiver", "receiver", queue) for queue in QUEUES)
    sender = load("http_sender", "sender")
    assert sender.request("GET", "/", headers=[("x-queued", "yes")]).status == 200
    assert '{"key": "x-queued", "value": "yes"}' in dequeued(requests)
    assert '{"key": ":status", "value": "200"}' in dequeued(responses)
    assert dequeued(requests) + dequeued(responses) == enqueued(sender)  # everything, in order


def test_tcp_data_hashes_reach_the_receiver(load: Callable[..., Host]) -> None:
    *_, hashes = (load("receiver", "receiver", queue) for queue in QUEUES)
    sender = load("tcp_sender", "sender")
    connection = sender.connection()
    connection.new_connection()
    chunks = [b"HTTP/1.1 200 OK\r\n\r\n", b"example body\n"]
    for chunk in chunks:
        connection.upstream_data(chunk)
    assert dequeued(hashes) == []  # enqueued, but the receiver runs on the event loop
    sender.pump()
    assert dequeued(hashes) == enqueued(sender) == [fnv1a_128(chunk) for chunk in chunks]


def test_sender_without_receiver_logs_it(load: Callable[..., Host]) -> None:
    sender = load("http_sender", "sender")
    assert sender.request("GET", "/").status == 200  # the request is not held up
    assert "error resolving queue 'http_request_headers': is the receiver running?" in sender.log_messages()
