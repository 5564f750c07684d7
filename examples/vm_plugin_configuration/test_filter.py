"""vm_plugin_configuration's test: the VM configuration reaches ``on_vm_start`` (once per VM) and
the plugin configuration ``on_configure``. ``workers=2`` runs Envoy's layout of VMs: the main
thread's and one per worker."""

from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm_host import Host

VM_CONFIG = '{\n  "name": "vm configuration"\n}\n'  # as envoy.yaml writes them
PLUGIN_CONFIG = '{\n  "name": "plugin configuration"\n}\n'


@pytest.fixture
def load(proxywasm_host: Callable[..., Host], proxywasm_mode: str) -> Callable[[int], Host]:
    def load(workers: int) -> Host:
        return proxywasm_host(Path(__file__).parent, mode=proxywasm_mode, vm_config=VM_CONFIG,
                              plugin_config=PLUGIN_CONFIG, workers=workers)  # fmt: skip

    return load


def test_logs_both_configurations(load: Callable[[int], Host]) -> None:
    host = load(0)
    assert host.log_messages() == [f"vm config: {VM_CONFIG}", f"plugin config: {PLUGIN_CONFIG}"]
    assert host.request("GET", "/").status == 200


def test_each_vm_starts_once(load: Callable[[int], Host]) -> None:
    host = load(2)
    assert host.vm_count == 3
    assert host.log_messages().count(f"vm config: {VM_CONFIG}") == 3
    assert host.log_messages().count(f"plugin config: {PLUGIN_CONFIG}") == 3
