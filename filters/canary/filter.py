"""canary: progressive delivery. Picks a variant for each request (by a header, a cookie, a sticky
percentage of users, or the region/zone of the Envoy it runs in), writes it to the request header
the routes match on, and makes Envoy pick the route again (clear_route_cache).

Rules are tried in order; the first that decides wins, else ``default``. A sticky percentage
hashes a key of the request (a header, a cookie or the client address) with CRC-32 and a murmur3
finaliser: ``bucket = fmix32(crc32(salt + "\\n" + key)) % 10000``, and the request is in the
percentage when ``bucket < percentage * 100``. Python's ``hash()`` would not do: it is seeded
(and the seed is frozen per build), so two builds would split users differently. See README.md.
"""

from __future__ import annotations

import binascii
import os

import proxywasm
from proxywasm import Action, ConfigError, Counter, HostCallError, HttpContext, PluginContext, log, properties

TYPE_CHECKING = False  # typing is not imported at run time: it would cost memory in every VM
if TYPE_CHECKING:
    from typing import Any

    from proxywasm import Headers
    from proxywasm.config import Config

# Declared at module level, so `proxywasm build` writes the stats_tags that make these labels.
requests_total = Counter("canary_requests_total", labels=("variant", "reason"))

RULE_KINDS = ("header", "cookie", "percentage", "node")
NODE_FIELDS = ("region", "zone", "sub_zone")
_TOKEN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def fmix32(h: int) -> int:
    """murmur3's finaliser: spreads CRC-32's (linear) bits over the whole word."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def bucket_of(salt: str, key: str) -> int:
    """The key's place in 0..9999, the same in every VM, build and Envoy."""
    return fmix32(binascii.crc32(f"{salt}\n{key}".encode("utf-8", "surrogateescape"))) % 10000


def cookie(headers: Headers, name: str) -> str | None:
    """A cookie's value from the ``cookie`` header(s) (HTTP/2 may send several)."""
    for line in headers.get_all("cookie"):
        for part in line.split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value
    return None


def client_address() -> str | None:
    """``source.address`` without its port."""
    address = properties.source_address()
    if not address:
        return None
    if address.startswith("["):
        return address[1 : address.find("]")]
    host, colon, port = address.rpartition(":")
    return host if colon and port.isdigit() and ":" not in host else address


def variant_name(config: Config, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value or not _TOKEN.issuperset(value):
        raise config.error(key, f"a variant must be a name of letters, digits, '-', '_' or '.', not {value!r}")
    return value


class Rule:
    """One rule of ``rules``: exactly one of ``header``, ``cookie``, ``percentage``, ``node``."""

    def __init__(self, config: Config) -> None:
        kinds = [kind for kind in RULE_KINDS if kind in config]
        if len(kinds) != 1:
            given = ", ".join(kinds) or "none"
            raise ConfigError(config.path, f"give exactly one of {', '.join(RULE_KINDS)} (given: {given})")
        self.kind = kinds[0]
        self.name = ""
        self.values: dict[str, str] | None = None
        self.sticky: tuple[str, str] | None = None  # ("header" | "cookie" | "client_address", name)
        self.percentage, self.variant = 0.0, ""
        if self.kind in ("header", "cookie", "node"):
            self.name = config.string(self.kind, non_empty=True)
            if self.kind == "header":
                self.name = self.name.lower()
            if self.kind == "node" and self.name not in NODE_FIELDS and not self.name.startswith("metadata."):
                raise config.error("node", f"must be {', '.join(NODE_FIELDS)} or metadata.<key>, not {self.name!r}")
            # Without values, a header or cookie names the variant itself; a node field always needs them.
            values = config.mapping("values", of=str) if self.kind == "node" else config.mapping("values", None, of=str)
            if values is not None:
                self.values = {k: variant_name(config, f"values.{k}", v) for k, v in values.items()}
        else:
            self.percentage = config.number("percentage", minimum=0, maximum=100)
            self.variant = variant_name(config, "variant", config.string("variant"))
            sticky = config.object("sticky", None)
            if sticky is not None:
                kinds = [kind for kind in ("header", "cookie", "client_address") if kind in sticky]
                if len(kinds) != 1:
                    raise ConfigError(sticky.path, "give exactly one of header, cookie, client_address")
                if kinds[0] == "client_address":
                    if not sticky.boolean("client_address"):
                        raise sticky.error("client_address", "must be true (or leave sticky out)")
                    self.sticky = ("client_address", "")
                else:
                    name = sticky.string(kinds[0], non_empty=True)
                    self.sticky = (kinds[0], name.lower() if kinds[0] == "header" else name)
                sticky.done()
        config.done()

    def variants(self) -> list[str]:
        return list(self.values.values()) if self.values else [self.variant] if self.kind == "percentage" else []

    def decide(self, headers: Headers, plugin: CanaryPlugin, salt: str) -> str | None:
        """The variant this rule picks for the request, or ``None`` (the next rule decides)."""
        if self.kind == "percentage":
            if self.sticky is None:  # not sticky: a fresh draw per request
                draw = int.from_bytes(os.urandom(4), "little") % 10000
            else:
                kind, name = self.sticky
                key = headers.get(name) if kind == "header" else cookie(headers, name) if kind == "cookie" else (
                    client_address())  # fmt: skip
                if not key:
                    return None  # no key, no sticky place: leave it to the next rule
                draw = bucket_of(salt, key)
            return self.variant if draw < self.percentage * 100 else None
        if self.kind == "header":
            value = headers.get(self.name)
        elif self.kind == "cookie":
            value = cookie(headers, self.name)
        else:
            value = plugin.node_value(self.name)
        if value is None:
            return None
        if self.values is None:  # the value names the variant itself
            return value if value in plugin.known else None
        return self.values.get(value)


class Selection:
    """``default`` and ``rules``: of the plugin, or of a route (which inherits what it leaves out)."""

    def __init__(self, config: Config, inherit: Selection | None = None) -> None:
        default = config.string("default", inherit.default if inherit else "stable")
        self.default: str = variant_name(config, "default", default)
        self.rules: list[Rule]
        if "rules" in config or inherit is None:
            self.rules = [Rule(rule) for rule in config.objects("rules", default=[])]
        else:
            self.rules = inherit.rules
        self.salt: str = config.string("salt", inherit.salt if inherit else "")

    def series(self) -> list[tuple[str, str]]:
        """(variant, reason) of every decision this selection can make."""
        return [(self.default, "default"), *((v, rule.kind) for rule in self.rules for v in rule.variants())]


class Canary(HttpContext):
    plugin: CanaryPlugin
    variant: str | None = None
    set_cookie = False

    def on_request_headers(self, headers: Headers, end_of_stream: bool) -> Action | None:
        plugin = self.plugin
        selection = plugin.selection_for_route(self.route_config)
        if selection is None:  # the route turns the filter off: the client must not pick a route either
            if plugin.header in headers:
                del headers[plugin.header]
                plugin.clear_route_cache()
            return Action.CONTINUE
        variant, reason = None, "default"
        for rule in selection.rules:
            variant = rule.decide(headers, plugin, selection.salt)
            if variant is not None:
                reason = rule.kind
                break
        if variant is None:
            variant = selection.default
        self.variant = variant
        requests_total.labels(variant, reason).increment()
        if headers.get(plugin.header) != variant:
            headers[plugin.header] = variant  # replaces whatever the client sent
            plugin.clear_route_cache()
        if plugin.cookie_name and cookie(headers, plugin.cookie_name) != variant:
            self.set_cookie = True
        return Action.CONTINUE

    def on_response_headers(self, headers: Headers, end_of_stream: bool) -> Action | None:
        plugin = self.plugin
        if self.variant is not None:
            if plugin.response_header:
                headers[plugin.response_header] = self.variant
            if self.set_cookie:
                headers.add(
                    "set-cookie", f"{plugin.cookie_name}={self.variant}; Path=/; Max-Age={plugin.cookie_max_age}"
                )
        return Action.CONTINUE


@proxywasm.register
class CanaryPlugin(PluginContext):
    http_context = Canary

    def __init__(self) -> None:
        self.selection: Selection | None = None
        self.route_selections: dict[int, tuple[dict[str, Any], Selection | None]] = {}
        self.node: dict[str, str | None] = {}
        self.warned_clear = False

    def on_configure(self, configuration: bytes) -> bool:
        config = proxywasm.config.parse(configuration)
        self.header: str = config.string("header", "x-variant", non_empty=True).lower()
        selection = Selection(config)
        self.response_header: str = config.string("response_header", "").lower()
        cookie_config = config.object("set_cookie", None)
        self.cookie_name, self.cookie_max_age = "", 0
        if cookie_config is not None:
            self.cookie_name = cookie_config.string("name", non_empty=True)
            self.cookie_max_age = cookie_config.integer("max_age_s", 86400, minimum=0)
            cookie_config.done()
        config.done()
        self.selection = selection
        self.known: set[str] = set()
        self.route_selections.clear()
        self.declare(selection)
        return True

    def declare(self, selection: Selection) -> None:
        """Know the selection's variants; make its series exist, reading 0 before they count."""
        for variant, reason in selection.series():
            self.known.add(variant)
            requests_total.labels(variant, reason)

    def selection_for_route(self, route: dict[str, Any]) -> Selection | None:
        """The route's own ``rules``/``default`` (its metadata under the plugin's name), ``None`` when
        it sets ``"disabled": true``, else the plugin's. Parsed once per route."""
        assert self.selection is not None
        if not route:
            return self.selection
        cached = self.route_selections.get(id(route))
        if cached is not None and cached[0] is route:
            return cached[1]
        chosen: Selection | None
        try:
            config = proxywasm.config.Config(route, f"route {properties.route_name() or '(unnamed)'} metadata")
            chosen = None if config.boolean("disabled", False) else Selection(config, inherit=self.selection)
            config.done()
            if chosen is not None:
                self.declare(chosen)
        except ConfigError as err:
            log.error(f"canary: {err}; using the plugin's rules on this route")
            chosen = self.selection
        if len(self.route_selections) >= 64:
            self.route_selections.clear()
        self.route_selections[id(route)] = (route, chosen)  # the dict is kept, so its id is not reused
        return chosen

    def node_value(self, field: str) -> str | None:
        """The node's locality field or metadata string (``xds.node...``), read once per VM."""
        if field not in self.node:
            path = ("locality", field) if field in NODE_FIELDS else ("metadata", field.removeprefix("metadata."))
            try:
                self.node[field] = properties.get_str("xds", "node", *path)
            except HostCallError:  # e.g. a metadata value that is not a string
                self.node[field] = None
        return self.node[field]

    def clear_route_cache(self) -> None:
        """Ask Envoy to match the route again with the changed header. (Envoy 1.40 also does it by
        itself when a Wasm filter changes request headers; other hosts may not.)"""
        try:
            proxywasm.call_foreign_function("clear_route_cache", b"")
        except HostCallError as err:
            if not self.warned_clear:
                self.warned_clear = True
                log.warn(f"canary: the host has no clear_route_cache ({err}): routes may not see the variant header")
