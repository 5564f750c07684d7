"""ext_authz: ask an authorisation service about every request, as Envoy's ext_authz filter does
with an ``http_service``.

The request's method and path (with a prefix), its authority and the headers the configuration
names go to the service in an HTTP callout while the request is held. A 2xx answer lets the
request through, with chosen headers of the answer copied onto it; another answer is the client's
reply (its status, body and chosen headers); no answer or a 5xx (Envoy answers 503 for an
unreachable cluster and 504 for a timeout) is a failure: 403 (``status_on_error``) when failing
closed, the request goes on when failing open.

Configuration and behaviour: README.md beside this file.
"""

from __future__ import annotations

import proxywasm
from proxywasm import CalloutFailed, Counter, HostCallError, HttpContext, PluginContext, log

TYPE_CHECKING = False  # typing is not imported at run time: it would cost memory in every VM
if TYPE_CHECKING:
    from typing import Any

    from proxywasm.config import Config
    from proxywasm.headers import Headers

# Declared at module level, so `proxywasm build` writes the stats_tags of the label.
# outcome: allowed, denied, error_allowed (failing open), error_denied (failing closed), disabled
requests_total = Counter("ext_authz_requests_total", labels=("outcome",))

# Headers a denial always passes on (as Envoy does): the challenge and the redirect.
ALWAYS_TO_CLIENT = ("www-authenticate", "location")
# Never copied from the service's answer: they describe that answer, not the request or reply.
NOT_COPIED = frozenset((":status", "content-length", "transfer-encoding", "connection", "date", "server",
                        "x-envoy-upstream-service-time"))  # fmt: skip


class ExtAuthz(HttpContext):
    async def on_request_headers(self, headers: Headers, end_of_stream: bool) -> None:
        plugin: ExtAuthzPlugin = self.plugin  # type: ignore[assignment]
        self.to_client: list[tuple[str, str]] = []
        if plugin.route_disabled(self.route_config):
            requests_total.labels(outcome="disabled").increment()
            return
        check = [(name, value) for name in plugin.allowed_headers for value in headers.get_all(name)]
        check.extend(plugin.headers_to_add)
        try:
            answer = await self.http_call(
                plugin.cluster,
                method=headers.get(":method") or "GET",
                path=plugin.path_prefix + (headers.get(":path") or "/"),
                authority=headers.get(":authority") or plugin.cluster,
                headers=check,
                timeout_ms=plugin.timeout_ms,
            )
        except CalloutFailed as err:  # the answer broke off: Envoy delivered nothing
            self.failed(headers, f"no answer ({err})")
            return
        except HostCallError as err:  # Envoy refused the callout (a cluster it does not know)
            log.error(f"ext_authz: {err}")
            self.failed(headers, "the callout was refused")
            return
        status = answer.status
        if 200 <= status < 300:
            for name in plugin.allowed_upstream_headers:
                # Only the service decides these: a client's own copy never reaches the upstream.
                del headers[name]
                for value in answer.headers.get_all(name):
                    headers.add(name, value)
            self.to_client = [
                (name, value)
                for name in plugin.allowed_client_headers_on_success
                for value in answer.headers.get_all(name)
            ]
            requests_total.labels(outcome="allowed").increment()
        elif status >= 500 or status < 200:
            self.failed(headers, f"status {status}: {answer.text()[:120]!r}")
        else:
            reply = [
                (name, value)
                for name, value in answer.headers.pairs()
                if name in plugin.allowed_client_headers and name not in NOT_COPIED
            ]
            requests_total.labels(outcome="denied").increment()
            log.debug(f"ext_authz: {headers.get(':path')}: denied with {status}")
            self.send_response(status, answer.body, reply)

    def failed(self, headers: Headers, why: str) -> None:
        """The service gave no usable answer: fail open or closed, as configured."""
        plugin: ExtAuthzPlugin = self.plugin  # type: ignore[assignment]
        where = f"ext_authz: authorisation service (cluster {plugin.cluster!r}) failed: {why}"
        if plugin.failure_mode_allow:
            log.warn(f"{where}; failure_mode_allow: the request goes on")
            if plugin.failure_mode_allow_header_add:
                headers["x-envoy-auth-failure-mode-allowed"] = "true"
            requests_total.labels(outcome="error_allowed").increment()
            return
        log.warn(f"{where}; answering {plugin.status_on_error}")
        requests_total.labels(outcome="error_denied").increment()
        self.send_response(plugin.status_on_error, b"", [("content-type", "text/plain")])

    def on_response_headers(self, headers: Headers, end_of_stream: bool) -> None:
        for name, value in getattr(self, "to_client", ()):
            headers.add(name, value)


def _header_names(config: Config, key: str, default: list[str]) -> list[str]:
    names = config.array(key, default=default, of=str)
    for i, name in enumerate(names):
        if not name or not name.isascii() or name != name.lower() or any(c in name for c in " \t\r\n"):
            raise proxywasm.ConfigError(f"{config.where(key)}[{i}]", f"must be a lower-case header name, not {name!r}")
        if name.startswith(":"):
            raise proxywasm.ConfigError(f"{config.where(key)}[{i}]", f"pseudo-header {name!r}: the filter sets those")
    return list(names)


@proxywasm.register
class ExtAuthzPlugin(PluginContext):
    http_context = ExtAuthz

    def on_configure(self, configuration: bytes) -> bool:
        config = proxywasm.config.parse(configuration)
        self.cluster = config.string("cluster", non_empty=True)
        self.path_prefix = config.string("path_prefix", default="")
        if self.path_prefix and not self.path_prefix.startswith("/"):
            raise config.error("path_prefix", f"must start with '/', not {self.path_prefix!r}")
        self.timeout_ms = config.integer("timeout_ms", default=200, minimum=1, maximum=60_000)
        self.failure_mode_allow = config.boolean("failure_mode_allow", default=False)
        self.failure_mode_allow_header_add = config.boolean("failure_mode_allow_header_add", default=False)
        self.status_on_error = config.integer("status_on_error", default=403, minimum=200, maximum=599)
        self.allowed_headers = _header_names(config, "allowed_headers", ["authorization"])
        self.allowed_upstream_headers = _header_names(config, "allowed_upstream_headers", [])
        client = _header_names(config, "allowed_client_headers", ["content-type", "set-cookie"])
        self.allowed_client_headers = frozenset((*client, *ALWAYS_TO_CLIENT))
        self.allowed_client_headers_on_success = _header_names(config, "allowed_client_headers_on_success", [])
        extra = config.mapping("headers_to_add", default={}, of=str)
        self.headers_to_add = [(k.lower(), v) for k, v in extra.items()]
        config.done()
        self.disabled_routes: dict[int, tuple[dict[str, Any], bool]] = {}
        return True

    def route_disabled(self, route: dict[str, Any]) -> bool:
        """The route's metadata under the plugin's name: ``{"disabled": true}`` skips the check.
        Parsed once per route; metadata with mistakes fails closed (the check runs) and is logged."""
        if not route:
            return False
        cached = self.disabled_routes.get(id(route))
        if cached is not None and cached[0] is route:
            return cached[1]
        check = proxywasm.config.Config(route, f"route metadata {self.plugin_name}")
        try:
            disabled = bool(check.boolean("disabled", default=False))
            check.done()
        except proxywasm.ConfigError as err:
            log.error(f"ext_authz: {err}: the route's requests are checked")
            disabled = False
        if len(self.disabled_routes) >= 64:
            self.disabled_routes.clear()
        self.disabled_routes[id(route)] = (route, disabled)
        return disabled
