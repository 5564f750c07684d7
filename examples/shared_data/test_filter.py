"""shared_data's test: a request counter in shared data, seen by every VM of the process.

``workers=2`` gives the plugin two worker VMs (streams alternate between them); ``host.shared_data``
and ``host.set_shared_data`` read and write the store as another worker would. Typed values are
MessagePack.
"""

from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest

from proxywasm_host import Host


@pytest.fixture
def host(proxywasm_host: Callable[..., Host], proxywasm_mode: str) -> Host:
    return proxywasm_host(Path(__file__).parent, mode=proxywasm_mode, workers=2)


def test_every_worker_counts_in_the_same_value(host: Host) -> None:
    # the key exists from VM start: no update has to create it (a create is not compare-and-swapped)
    assert msgpack.unpackb(host.shared_data[b"shared_data_key"]) == 0
    for _ in range(4):
        assert host.request("GET", "/").status == 200
    assert [m for m in host.log_messages() if m.startswith("shared value: ")] == [
        "shared value: 1",
        "shared value: 2",
        "shared value: 3",
        "shared value: 4",
    ]
    assert msgpack.unpackb(host.shared_data[b"shared_data_key"]) == 4


def test_counts_on_from_another_writer(host: Host) -> None:
    host.set_shared_data("shared_data_key", msgpack.packb(41))
    host.request("GET", "/")
    assert host.log_messages()[-1] == "shared value: 42"
