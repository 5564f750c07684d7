"""identity_policy: allow or deny requests by the mTLS peer's identity (its SPIFFE ID, the URI SAN
of its certificate), method and path.

The identity comes from Envoy's connection attributes: ``connection.mtls`` (the client presented a
certificate the listener verified) and ``connection.uri_san_peer_certificate`` (its first URI
SAN). Rules are tried in order, the first that matches decides; without a match the default
action does. A connection that is not mTLS is refused before any rule (``require_mtls``).

Configuration and behaviour: README.md beside this file.
"""

from __future__ import annotations

import proxywasm
from proxywasm import Action, Counter, HttpContext, PluginContext, log, properties

TYPE_CHECKING = False  # typing is not imported at run time: it would cost memory in every VM
if TYPE_CHECKING:
    from typing import Any

    from proxywasm.config import Config
    from proxywasm.headers import Headers

# Declared at module level, so `proxywasm build` writes the stats_tags of its labels.
# decision: allow, deny; rule: the rule's name, "default" (no rule matched) or "no_mtls".
decisions_total = Counter("identity_policy_decisions_total", labels=("decision", "rule"))

DENY_BODY = b"access denied\n"  # names nothing: no rule, no identity


# ---- identity patterns ----
# "*" matches any characters but "/" (one path segment of a SPIFFE ID), "**" any characters.
_STAR, _ANY = "*", "**"


def compile_pattern(pattern: str) -> tuple[str, ...]:
    """The pattern as literal pieces and wildcards, e.g. ("spiffe://td/ns/", "*", "/sa/", "*")."""
    tokens: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "*":
            wildcard = _ANY if pattern.startswith("**", i) else _STAR
            if pattern.startswith("*", i + len(wildcard)):
                raise ValueError("more than two '*' in a row")
            tokens.append(wildcard)
            i += len(wildcard)
        else:
            end = pattern.find("*", i)
            end = len(pattern) if end < 0 else end
            tokens.append(pattern[i:end])
            i = end
    return tuple(tokens)


def pattern_matches(tokens: tuple[str, ...], text: str, k: int = 0, pos: int = 0) -> bool:
    """Whether ``text[pos:]`` matches ``tokens[k:]`` (backtracking only at wildcards)."""
    while k < len(tokens):
        token = tokens[k]
        if token == _STAR or token == _ANY:
            end = len(text) if token == _ANY else text.find("/", pos)
            end = len(text) if end < 0 else end
            if k + 1 == len(tokens):
                return end == len(text)
            following = tokens[k + 1]  # a literal: wildcards never follow each other
            start = text.find(following, pos, end + len(following))
            while start >= 0:
                if pattern_matches(tokens, text, k + 2, start + len(following)):
                    return True
                start = text.find(following, start + 1, end + len(following))
            return False
        if not text.startswith(token, pos):
            return False
        pos += len(token)
        k += 1
    return pos == len(text)


# ---- rules ----


class Rule:
    __slots__ = ("allow", "exact", "methods", "name", "paths", "patterns")

    def __init__(self, config: Config, index: int) -> None:
        self.name = config.string("name", default=f"rules[{index}]", non_empty=True)
        self.allow = config.string("action", default="ALLOW", choices=("ALLOW", "DENY")) == "ALLOW"
        # Identities: exact ones in a set, patterns compiled. None: any peer, even without one.
        self.exact: set[str] | None = None
        self.patterns: list[tuple[str, ...]] = []
        principals = config.array("principals", default=None, of=str, non_empty=True)
        if principals is not None:
            self.exact = set()
            for i, principal in enumerate(principals):
                if not principal:
                    raise proxywasm.ConfigError(f"{config.where('principals')}[{i}]", "must not be empty")
                if "*" not in principal:
                    self.exact.add(principal)
                    continue
                try:
                    self.patterns.append(compile_pattern(principal))
                except ValueError as err:
                    raise proxywasm.ConfigError(f"{config.where('principals')}[{i}]", f"{principal!r}: {err}") from None
        methods = config.array("methods", default=None, of=str, non_empty=True)
        self.methods = None if methods is None else frozenset(m.upper() for m in methods)
        self.paths: tuple[str, ...] | None = None
        paths = config.array("paths", default=None, of=str, non_empty=True)
        if paths is not None:
            for i, path in enumerate(paths):
                if not path.startswith("/"):
                    raise proxywasm.ConfigError(f"{config.where('paths')}[{i}]", f"must start with '/', not {path!r}")
            self.paths = tuple(paths)
        config.done()

    def matches(self, principal: str | None, method: str, path: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        if self.paths is not None and not path.startswith(self.paths):
            return False
        if self.exact is None:
            return True
        if principal is None:
            return False
        return principal in self.exact or any(pattern_matches(p, principal) for p in self.patterns)


class Policy:
    """Rules in order and the default action (the plugin's, or a route's own)."""

    __slots__ = ("default_allow", "rules")

    def __init__(self, config: Config) -> None:
        self.rules = [Rule(rule, i) for i, rule in enumerate(config.objects("rules", default=[]))]
        self.default_allow = config.string("default_action", default="DENY", choices=("ALLOW", "DENY")) == "ALLOW"

    def decide(self, principal: str | None, method: str, path: str) -> tuple[bool, str]:
        for rule in self.rules:
            if rule.matches(principal, method, path):
                return rule.allow, rule.name
        return self.default_allow, "default"


# ---- the filter ----


class IdentityPolicy(HttpContext):
    def on_request_headers(self, headers: Headers, end_of_stream: bool) -> Action | None:
        plugin: IdentityPolicyPlugin = self.plugin  # type: ignore[assignment]
        if plugin.identity_header:
            del headers[plugin.identity_header]  # only this filter may say who the peer is
        mtls = properties.get("connection", "mtls") == b"\x01"
        principal = properties.get_str("connection", "uri_san_peer_certificate") if mtls else None
        method = headers.get(":method") or ""
        path = (headers.get(":path") or "/").partition("?")[0]
        if not mtls and plugin.require_mtls:
            allowed, rule = False, "no_mtls"
        else:
            allowed, rule = plugin.policy_for(self.route_config).decide(principal or None, method, path)
        decisions_total.labels(decision="allow" if allowed else "deny", rule=rule).increment()
        if not allowed:
            log.debug(f"identity_policy: denied {method} {path} from {principal or 'no identity'} (rule {rule})")
            self.send_response(plugin.deny_status, DENY_BODY, [("content-type", "text/plain")])
            return Action.PAUSE
        if plugin.identity_header and principal:
            headers[plugin.identity_header] = principal
        return None


@proxywasm.register
class IdentityPolicyPlugin(PluginContext):
    http_context = IdentityPolicy

    def on_configure(self, configuration: bytes) -> bool:
        config = proxywasm.config.parse(configuration)
        self.require_mtls = config.boolean("require_mtls", default=True)
        self.policy = Policy(config)
        self.identity_header = config.string("identity_header", default="")
        name = self.identity_header
        if name and (not name.isascii() or name != name.lower() or name.startswith(":") or " " in name):
            raise config.error("identity_header", f"must be a lower-case header name, not {name!r}")
        self.deny_status = config.integer("deny_status", default=403, minimum=400, maximum=599)
        config.done()
        self.route_policies: dict[int, tuple[dict[str, Any], Policy]] = {}
        return True

    def policy_for(self, route: dict[str, Any]) -> Policy:
        """The route's own policy (``rules`` and ``default_action`` in its metadata under the
        plugin's name), else the plugin's. Parsed once per route; metadata with a mistake denies
        every request of the route (fail closed) and is logged."""
        if not route:
            return self.policy
        cached = self.route_policies.get(id(route))
        if cached is not None and cached[0] is route:
            return cached[1]
        check = proxywasm.config.Config(route, f"route metadata {self.plugin_name}")
        try:
            policy = Policy(check)
            check.done()
        except proxywasm.ConfigError as err:
            log.error(f"identity_policy: {err}: the route's requests are denied")
            policy = Policy(proxywasm.config.Config({}))  # no rules, default DENY
        if len(self.route_policies) >= 64:
            self.route_policies.clear()
        self.route_policies[id(route)] = (route, policy)
        return policy
