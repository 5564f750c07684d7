"""network's test: an L4 filter on one TCP connection, driven event by event with
``host.connection()``: the test plays the client (``downstream_data``) and the upstream
(``upstream_data``).

``properties`` sets the attributes a TCP proxy in Envoy would give the filter (the upstream's
address and its cluster's metadata).
"""

from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm_host import Action, Host

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\nThis-Is-Key: this-is-value\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\nexample body\n"
LOCATION = {"region": "ap-northeast-1", "cloud_provider": "aws", "az": "ap-northeast-1a"}


@pytest.fixture
def host(proxywasm_host: Callable[..., Host], proxywasm_mode: str) -> Host:
    properties = {
        "upstream.address": "127.0.0.1:8099",
        ("xds", "cluster_metadata", "filter_metadata", "location"): LOCATION,
    }
    return proxywasm_host(Path(__file__).parent, mode=proxywasm_mode, properties=properties)


def test_logs_the_connection_both_ways(host: Host) -> None:
    connection = host.connection()
    assert connection.new_connection() == Action.CONTINUE
    assert connection.downstream_data(REQUEST) == Action.CONTINUE
    assert connection.upstream_data(RESPONSE) == Action.CONTINUE
    connection.close_downstream()
    # The data went through untouched.
    assert (bytes(connection.upstream_sent), bytes(connection.downstream_sent)) == (REQUEST, RESPONSE)
    assert host.log_messages() == [
        "new connection!",
        f">>>>>> downstream data received >>>>>>\n{REQUEST.decode()}",
        "remote address: 127.0.0.1:8099",
        *(f"upstream cluster metadata location[{key}]={value}" for key, value in LOCATION.items()),
        f"<<<<<< upstream data received <<<<<<\n{RESPONSE.decode()}",
        "downstream connection close!",
        "connection complete!",
    ]


def test_counts_completed_connections(host: Host) -> None:
    for done in range(3):
        connection = host.connection()
        connection.new_connection()
        assert host.metric("proxy_wasm_python.connection_counter") == done  # counted once it is over
        connection.close_downstream()
    assert host.metric("proxy_wasm_python.connection_counter") == 3
