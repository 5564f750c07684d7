"""The pytest plugin: the factory fixture, and failure reports that carry the filter's logs."""

from __future__ import annotations

import pytest
from guest import Act, probe_wasm

from proxywasm_host import Host
from proxywasm_host.pytest_plugin import assert_logged, assert_response


def test_assert_response_failure_includes_logs() -> None:
    host = Host.load(probe_wasm())
    resp = host.request("GET", "/")
    assert_response(resp, status=200, headers={"x-upstream": "echo", "x-missing": None}, upstream_called=True)
    with pytest.raises(AssertionError) as info:
        assert_response(resp, status=404, body=b"nope")
    text = str(info.value)
    assert "status 200 != expected 404" in text
    assert "filter logs:" in text and "on_request_headers" in text


def test_assert_logged() -> None:
    host = Host.load(probe_wasm())
    assert_logged(host.logs, "on_configure")
    with pytest.raises(AssertionError, match="no log message containing"):
        assert_logged(host.logs, "never said")


def test_fixture_and_report_section(pytester: pytest.Pytester) -> None:
    wasm = pytester.path / "probe.wasm"
    wasm.write_bytes(probe_wasm())
    pytester.makepyfile(
        f"""
        def test_loads(proxywasm_host):
            host = proxywasm_host({str(wasm)!r}, plugin_config=b"x")
            assert host.request().status == 200

        def test_fails(proxywasm_host):
            host = proxywasm_host({str(wasm)!r})
            host.raw.memory.write_u32({1024 + 4 * 11}, {Act.LOCAL_REPLY})
            assert host.request().status == 200
        """
    )
    # In a subprocess: an in-process run re-installs faulthandler over wasmtime's trap signal handlers.
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*proxywasm filter logs*", "*on_request_headers*"])


def test_a_filters_error_shows_without_the_hosts_frames(pytester: pytest.Pytester) -> None:
    # An author mistake (a ProxyWasmHostError: its message says what and where) ends at the test's
    # line; the host's own frames are left out (hide_host_frames), and --full-trace shows them.
    (pytester.path / "filter.py").write_text(
        "import proxywasm\n\n\n@proxywasm.register\nclass Check(proxywasm.HttpContext):\n"
        "    def on_request_headers(self, headers, end_of_stream):\n        return 'continue'\n"
    )
    pytester.makepyfile(
        """
        from pathlib import Path

        def test_it(proxywasm_host, proxywasm_mode):
            proxywasm_host(Path(__file__).parent / "filter.py", mode=proxywasm_mode).request("GET", "/")
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*AuthorMistake: Check.on_request_headers returned 'continue'*"])
    assert "proxywasm_host/" not in result.stdout.str()
    full = pytester.runpytest_subprocess("--full-trace")
    assert "proxywasm_host/emulator/vm.py" in full.stdout.str()
