"""proxywasm.config: typed getters whose errors name the key's path; a ConfigError raised from
on_configure rejects the configuration with one log line, in both host modes and in real Envoy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxywasm import ConfigError
from proxywasm import config as cfg
from proxywasm_build.envoy import Envoy, EnvoyError, WasmPlugin, http_bootstrap
from proxywasm_build.upstream import UpstreamServer
from proxywasm_host import ConfigureError
from proxywasm_host.pytest_plugin import HostFactory

FILTER = """
import proxywasm
from proxywasm import HttpContext, PluginContext


class Filter(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        headers["x-header"] = self.plugin.header
        headers["x-rules"] = ",".join(f"{r.prefix}={r.limit}" for r in self.plugin.rules)


@proxywasm.register
class Plugin(PluginContext):
    http_context = Filter

    def on_configure(self, configuration):
        config = proxywasm.config.parse(configuration)
        self.header = config.string("header", default="authorization")
        self.rules = []
        for rule in config.objects("rules", default=[]):
            self.rules.append(Rule(rule))
        config.done()
        return True


class Rule:
    def __init__(self, config):
        self.prefix = config.string("prefix", non_empty=True)
        self.limit = config.integer("limit", minimum=1)
        config.done()
"""


def parsed(data: object) -> cfg.Config:
    return cfg.parse(json.dumps(data).encode())


def problem(call: object) -> str:
    assert callable(call)
    with pytest.raises(ConfigError) as info:
        call()
    return str(info.value)


# ---- the module, as Python ----


def test_getters_return_values_and_defaults() -> None:
    config = parsed({"s": "x", "i": 3, "f": 2, "b": False, "l": ["a"], "o": {"k": 1}, "m": {"a": "b"}, "n": 4.0})
    assert config.string("s") == "x"
    assert config.integer("i", minimum=3, maximum=3) == 3
    assert config.integer("n") == 4 and type(config.integer("n")) is int  # 4.0 counts as an integer
    assert config.number("f") == 2.0 and type(config.number("f")) is float
    assert config.boolean("b") is False
    assert config.array("l", of=str) == ["a"]
    assert config.object("o").integer("k") == 1
    assert config.mapping("m", of=str) == {"a": "b"}
    assert config.string("absent", default="d") == "d"
    assert config.object("absent", default={}).string("x", default="y") == "y"
    config.done()


def test_errors_name_the_path_and_the_problem() -> None:
    config = parsed({"rules": [{"prefix": "/a", "limit": 1}, {"prefix": 3}], "mode": "stict", "flag": "yes"})
    rules = config.objects("rules")
    assert problem(lambda: rules[1].string("prefix")) == "rules[1].prefix: must be a string, not the number 3"
    assert problem(lambda: rules[1].integer("limit")) == "rules[1].limit: missing: an integer is required"
    assert problem(lambda: rules[0].integer("limit", minimum=2)) == "rules[0].limit: must be at least 2, not 1"
    assert problem(lambda: config.string("mode", choices=["strict", "lax"])) == (
        "mode: must be one of 'strict', 'lax', not 'stict' (did you mean 'strict'?)"
    )
    assert problem(lambda: config.boolean("flag")) == "flag: must be true or false, not the string 'yes'"
    assert problem(lambda: parsed({"x": True}).integer("x")) == "x: must be an integer, not true"
    assert problem(lambda: parsed({"l": [1, "2"]}).array("l", of=int)) == "l[1]: must be an integer, not the string '2'"
    assert problem(lambda: parsed({"s": ""}).string("s", non_empty=True)) == "s: must not be empty"


def test_a_missing_required_key_points_at_a_misspelt_one() -> None:
    config = parsed({"limt": 3, "other": 1})
    assert (
        problem(lambda: config.integer("limit")) == "limit: missing: an integer is required (is 'limt' a misspelling?)"
    )
    assert problem(lambda: parsed({}).integer("limit")) == "limit: missing: an integer is required"


def test_durations_as_envoy_writes_them() -> None:
    config = parsed({"a": "1.5s", "b": "250ms", "c": "0s", "d": "soon", "e": "-1s"})
    assert config.duration("a") == 1500 and config.duration("b") == 250
    assert config.duration("a", unit="ns") == 1_500_000_000 and config.duration("b", unit="ns") == 250_000_000
    assert config.duration("c") == 0 and config.duration("absent", None) is None
    assert config.duration("absent", "10ms") == 10
    assert problem(lambda: config.duration("d")) == """d: must be a duration such as "1s" or "250ms", not 'soon'"""
    assert problem(lambda: config.duration("e")) == """e: must be a duration such as "1s" or "250ms", not '-1s'"""
    assert problem(lambda: config.duration("c", positive=True)) == (
        """c: must be a positive duration such as "1s" or "250ms", not '0s'"""
    )


def test_done_refuses_an_unknown_key_and_suggests_a_misspelt_one() -> None:
    config = parsed({"hedaer": "x"})
    config.string("header", default="authorization")
    assert problem(config.done) == "hedaer: unknown key (did you mean 'header'?)"
    other = parsed({"zzz": 1})
    assert problem(other.done) == "zzz: unknown key"
    # A key with its unit or qualifier left out: the one key it begins or ends.
    short = parsed({"timeout": 5, "id": 1})
    short.integer("timeout_ms", 1000)
    short.string("client_id", "")
    assert problem(short.done) == "timeout: unknown key (did you mean 'timeout_ms'?)"
    short.ignore("timeout")
    assert problem(short.done) == "id: unknown key"  # too short to guess from
    both = parsed({"limit": 5})
    both.integer("limit_rps", 1)
    both.integer("limit_burst", 1)
    assert problem(both.done) == "limit: unknown key"  # two candidates: no guess
    required = parsed({"timeout": 5})
    assert problem(lambda: required.integer("timeout_ms")).endswith("(is 'timeout' a misspelling?)")


def test_the_cpu_budget_key_is_the_runtime_s_and_not_unknown() -> None:
    parsed({"proxywasm_cpu_budget_ms": 20}).done()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"a": 1,}', "the configuration is not JSON at line 1 column 9: Expecting property name enclosed in double"),
        (b"[1]", "the configuration must be a JSON object, not a list"),
    ],
)
def test_the_configuration_must_be_a_json_object(raw: bytes, message: str) -> None:
    assert problem(lambda: cfg.parse(raw)).startswith(message)


def test_empty_configuration_takes_the_defaults() -> None:
    assert cfg.parse(b"").string("header", default="h") == "h"
    assert cfg.parse(b"  ", empty={"header": "e"}).string("header") == "e"


# ---- on_configure in the local host, both modes ----


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "filter.py"
    path.write_text(FILTER)
    return path


def test_a_valid_configuration_configures_the_filter(
    proxywasm_host: HostFactory, proxywasm_mode: str, source: Path
) -> None:
    plugin_config = json.dumps({"header": "x-token", "rules": [{"prefix": "/a", "limit": 2}]})
    host = proxywasm_host(source, mode=proxywasm_mode, plugin_config=plugin_config)
    upstream = host.request("GET", "/").upstream_request
    assert upstream is not None
    assert (upstream.header("x-header"), upstream.header("x-rules")) == ("x-token", "/a=2")


@pytest.mark.parametrize(
    ("plugin_config", "line"),
    [
        ({"rules": [{"prefix": "/a", "limit": 0}]}, "rules[0].limit: must be at least 1, not 0"),
        ({"rules": [{"prefix": "/a", "limit": 1, "burst": 2}]}, "rules[0].burst: unknown key"),
        ({"haeder": "x"}, "haeder: unknown key (did you mean 'header'?)"),
    ],
)
def test_a_config_error_rejects_the_configuration_with_one_line(
    proxywasm_host: HostFactory, proxywasm_mode: str, source: Path, plugin_config: object, line: str
) -> None:
    with pytest.raises(ConfigureError) as info:
        proxywasm_host(source, mode=proxywasm_mode, plugin_config=json.dumps(plugin_config))
    assert f"proxywasm: configuration rejected: {line}" in str(info.value)
    assert "Traceback" not in str(info.value)


# ---- real Envoy ----


def test_envoy_rejects_the_configuration_with_the_key_and_the_problem(build_filter: object, tmp_path: Path) -> None:
    assert callable(build_filter)
    wasm = build_filter(FILTER)
    with UpstreamServer() as upstream:
        good = WasmPlugin(wasm, name="config", configuration=json.dumps({"rules": [{"prefix": "/a", "limit": 2}]}))
        with Envoy(http_bootstrap(upstream_port=upstream.port, plugins=[good])) as envoy:
            import urllib.request

            with urllib.request.urlopen(envoy.url + "/") as response:
                assert response.status == 200
            assert upstream.requests[-1].header("x-rules") == "/a=2"
        bad = WasmPlugin(wasm, name="config", configuration=json.dumps({"rules": [{"prefix": "", "limit": 2}]}))
        with pytest.raises(EnvoyError) as info:
            with Envoy(http_bootstrap(upstream_port=upstream.port, plugins=[bad])):
                pass
    assert "proxywasm: configuration rejected: rules[0].prefix: must not be empty" in str(info.value)
