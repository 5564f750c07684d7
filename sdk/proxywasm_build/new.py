"""``proxywasm new NAME``: a directory with a working filter, its tests, an Envoy config and a README.

The filter is ``NAME/filter.py`` (modules beside it that it imports are bundled with it; tests are
not). ``test_filter.py`` runs each test natively and against the built module (the
``proxywasm_mode`` fixture), so ``pytest NAME`` passes as generated.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["FILES", "new"]

FILTER = '''\
"""{name}: an HTTP filter for Envoy, written in Python.

It answers 403 to requests without the header named in the plugin configuration, adds an
``x-{dashed}`` response header, and counts the requests it refused.

Build: ``proxywasm build filter.py -o {name}.wasm``; try it: ``proxywasm run filter.py --watch``.
"""

import proxywasm
from proxywasm import Action, Counter, HttpContext, PluginContext

# Metrics are created at module level (the build sees their labels); Envoy defines them in each VM
# and shows this one as wasmcustom.{name}_refused in /stats.
REFUSED = Counter("{name}_refused")


class RequestCheck(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        required = self.plugin.required_header
        if required and required not in headers:
            REFUSED.increment()
            self.send_response(403, f"missing header {{required}}\\n")
            return Action.PAUSE  # the local reply answers the request; the upstream never sees it
        return Action.CONTINUE

    def on_response_headers(self, headers, end_of_stream):
        headers["x-{dashed}"] = self.plugin.greeting
        return Action.CONTINUE


@proxywasm.register
class {cls}Plugin(PluginContext):
    http_context = RequestCheck
    required_header = ""
    greeting = "hello"

    def on_configure(self, configuration):
        """The plugin configuration is JSON: {{"required_header": "...", "greeting": "..."}}.
        A bad one (not JSON, a wrong type, a misspelt key) is rejected with one log line naming
        the key, and Envoy keeps the previous configuration."""
        config = proxywasm.config.parse(configuration)
        self.required_header = config.string("required_header", default="").lower()
        self.greeting = config.string("greeting", default="hello")
        config.done()  # unknown keys are mistakes
        return True
'''

TEST = """\
\"\"\"Tests for {name} in proxywasm's local host. Each test runs twice: natively (the filter's
Python in this process: breakpoints and coverage work) and against the built module (what Envoy
loads; built on first use and cached).\"\"\"

from pathlib import Path

import pytest

from proxywasm_host import ConfigureError, Host

FILTER = Path(__file__).parent / "filter.py"


@pytest.fixture
def load(proxywasm_host, proxywasm_mode):
    \"\"\"load(plugin_config) -> Host, in the mode of this run of the test.\"\"\"
    return lambda plugin_config=None: proxywasm_host(FILTER, mode=proxywasm_mode, plugin_config=plugin_config)


def test_adds_the_greeting(load) -> None:
    response = load({{"greeting": "hi"}}).request("GET", "/")
    assert response.status == 200
    assert response.header("x-{dashed}") == "hi"


def test_refuses_requests_without_the_required_header(load) -> None:
    host: Host = load({{"required_header": "x-api-key"}})
    refused = host.request("GET", "/private")
    assert (refused.status, refused.body) == (403, b"missing header x-api-key\\n")
    assert refused.upstream_request is None  # a local reply: the upstream was never called
    allowed = host.request("GET", "/private", headers=[("x-api-key", "secret")])
    assert allowed.status == 200
    assert host.metric("{name}_refused") == 1


@pytest.mark.parametrize(
    ("plugin_config", "line"),
    [
        (b"not json", "the configuration is not JSON at line 1 column 1"),
        ({{"greting": "hi"}}, "greting: unknown key (did you mean 'greeting'?)"),
    ],
)
def test_rejects_a_bad_configuration_naming_the_problem(load, plugin_config, line) -> None:
    with pytest.raises(ConfigureError) as rejected:  # Envoy would reject this plugin configuration
        load(plugin_config)
    assert f"proxywasm: configuration rejected: {{line}}" in str(rejected.value)
"""

ENVOY = """\
# Envoy in front of an upstream on 127.0.0.1:8080, with {name} as its HTTP filter.
#   proxywasm build filter.py -o {name}.wasm
#   envoy -c envoy.yaml       (from this directory; admin on http://127.0.0.1:9901)
static_resources:
  listeners:
  - name: main
    address:
      socket_address: {{address: 127.0.0.1, port_value: 10000}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: /}}
                route: {{cluster: upstream}}
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: {name}
                root_id: ""
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: '{{"required_header": "x-api-key", "greeting": "hello from {name}"}}'
                vm_config:
                  runtime: envoy.wasm.runtime.v8
                  code:
                    local: {{filename: {name}.wasm}}
                failure_policy: FAIL_CLOSED
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{address: 127.0.0.1, port_value: 8080}}
admin:
  address:
    socket_address: {{address: 127.0.0.1, port_value: 9901}}
"""

REQUIREMENTS = """\
# Pure-Python packages the filter imports, one a line, pinned (bundled into the module by
# `proxywasm build`). C extensions cannot run inside Envoy.
"""

README = """\
# {name}

An Envoy HTTP filter in Python (proxy-wasm). `filter.py` refuses requests without the header the
plugin configuration names (403, counted in `{name}_refused`) and adds `x-{dashed}` to responses.

```sh
pytest                                            # tests in the local host (test_filter.py)
proxywasm run filter.py --watch --config '{{"required_header": "x-api-key"}}'
curl -i localhost:10000/ -H 'x-api-key: 1'        # in another shell
proxywasm build filter.py -o {name}.wasm          # the module; envoy.yaml loads it
proxywasm package {name}.wasm --push REGISTRY/{dashed}:0.1.0   # OCI image + Istio manifests
```

- `filter.py`: the filter. Contexts, actions and what `PAUSE` means: see the proxywasm-python docs.
- `test_filter.py`: drives `filter.py` with `proxywasm_host.Host`, natively and as the built module.
- `envoy.yaml`: a static Envoy config in front of 127.0.0.1:8080 (`envoy -c envoy.yaml`).
- `requirements.txt`: pure-Python dependencies, bundled into the module.
"""

FILES = {
    "filter.py": FILTER,
    "test_filter.py": TEST,
    "envoy.yaml": ENVOY,
    "requirements.txt": REQUIREMENTS,
    "README.md": README,
}


def new(directory: Path) -> list[Path]:
    """Create ``directory`` with the files of a new filter named after it; returns the files written.

    Raises ValueError when the name is not a Python identifier (it names the module, the metric and
    the plugin) or the directory exists and is not empty.
    """
    name = directory.name
    if not name.isidentifier():
        raise ValueError(f"{name!r}: a filter name is a Python identifier (letters, digits, _), e.g. auth_check")
    if directory.exists() and any(directory.iterdir()):
        raise ValueError(f"{directory} exists and is not empty")
    directory.mkdir(parents=True, exist_ok=True)
    values = {
        "name": name,
        "dashed": name.replace("_", "-"),
        "cls": "".join(part.capitalize() for part in name.split("_")) or "Filter",
    }
    written = []
    for filename, template in FILES.items():
        path = directory / filename
        path.write_text(template.format(**values))
        written.append(path)
    return written
