"""proxy_log lines in Envoy's log: format, level mapping and filtering."""

from __future__ import annotations

from pathlib import Path

from envoy_support import as_envoy, fetch

PREFIX = "wasm log p_logging logging vm_logging: "
LEVELS = [("trace", "trace"), ("debug", "debug"), ("info", "info"), ("warn", "warning"), ("error", "error")]
LEVELS.append(("critical", "critical"))


def test_all_levels_with_wasm_trace(as_modules: dict[str, Path]) -> None:
    with as_envoy(
        as_modules["logging"],
        name="p_logging",
        root_id="logging",
        vm_id="vm_logging",
        component_log_levels={"wasm": "trace"},
    ) as (envoy, _):
        assert fetch(envoy.port(), "/l?q=1").status == 200
        envoy.wait_for_log(r"log-test level=critical")
        lines = [ln for ln in envoy.log_lines() if "log-test" in ln.message]
        assert [(ln.logger, ln.level, ln.message) for ln in lines] == [
            ("wasm", envoy_level, f"{PREFIX}log-test level={sdk_level} path=/l?q=1")
            for sdk_level, envoy_level in LEVELS
        ]
        # Root-context lines (on_configure) carry "<root_id> <vm_id>" only, no plugin name.
        assert any(ln.message == "wasm log logging vm_logging: on_configure: config=" for ln in envoy.log_lines())
        # With wasm:trace Envoy also traces every host call.
        assert "[host->vm] proxy_on_request_headers(" in envoy.logs()
        # HTTP stream contexts end with on_log, then on_done, then on_delete.
        envoy.wait_for_log(r"proxy_on_delete\(2\)")
        calls = [
            ln.message.split("(")[0].removeprefix("[host->vm] ")
            for ln in envoy.log_lines()
            if ln.message.startswith("[host->vm] proxy_on_") and "(2" in ln.message
        ]
        assert calls[-3:] == ["proxy_on_log", "proxy_on_done", "proxy_on_delete"]


def test_level_filter(as_modules: dict[str, Path]) -> None:
    with as_envoy(
        as_modules["logging"], name="p_logging", root_id="logging", vm_id="vm_logging", log_level="warning"
    ) as (envoy, _):
        assert fetch(envoy.port(), "/x").status == 200
        envoy.wait_for_log(r"log-test level=critical")
        levels = [ln.level for ln in envoy.log_lines() if "log-test" in ln.message]
        assert levels == ["warning", "error", "critical"]
