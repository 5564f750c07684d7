"""rate_limit: a token bucket per client (a header, the client address, a JWT claim copied into a
header by an earlier filter, or the path), shared by every Envoy worker through shared data.

Answers 429 with ``retry-after`` and ``x-ratelimit-limit/remaining/reset`` when the bucket is
empty, and adds the ``x-ratelimit-*`` headers to allowed responses too (like Envoy's
local_ratelimit with ``enable_x_ratelimit_headers``). The configuration follows Envoy's
``token_bucket`` (``max_tokens``, ``tokens_per_fill``, ``fill_interval``); see README.md.

Buckets live in a fixed table of ``max_buckets`` shared-data slots (proxy-wasm has no way to
delete shared data, so a key per client would grow without bound): a bucket key hashes to a slot
and probes ``PROBES`` slots from there. Every update is a compare-and-swap, retried a bounded
number of times. A key without a bucket is placed under the table's lock (see
``RateLimitPlugin.place``), so two workers never give one key two buckets or create one slot twice.
"""

from __future__ import annotations

import binascii
import os
import struct

import proxywasm
from proxywasm import Action, ConfigError, Counter, HttpContext, PluginContext, log, properties, shared_data
from proxywasm.errors import CasMismatch

TYPE_CHECKING = False  # typing is not imported at run time: it would cost memory in every VM
if TYPE_CHECKING:
    from typing import Any

    from proxywasm import Headers
    from proxywasm.config import Config

# Declared at module level, so `proxywasm build` writes the stats_tags that make these labels.
requests_total = Counter("rate_limit_requests_total", labels=("descriptor", "decision"))
evictions_total = Counter("rate_limit_evictions_total", labels=("reason",))
contention_total = Counter("rate_limit_contention_total", labels=("descriptor",))

PROBES = 4  # slots a bucket key may occupy: its hash slot and the next three
CAS_ATTEMPTS = 8  # read-modify-write rounds before the contention policy decides
SWEEP_BATCH = 256  # slots each VM checks per sweep tick
MAX_KEY_BYTES = 128  # longer keys (header values) are stored as a digest
_RECORD = struct.Struct("<qqq")  # tokens, last fill (ns), full at (ns); then the bucket key
KEY_KINDS = ("client_address", "header", "path")
MISSING = ("shared", "allow", "deny")
NS_PER_S = 1_000_000_000
# The table's lock, held this long, is taken over: its holder died (a trap) or stalled. Long enough that
# a live worker is not overtaken (cgroup CPU throttling pauses threads for up to 100 ms periods),
# short enough that new clients are not failed open for long after a VM died holding it.
LOCK_STALE_NS = NS_PER_S
LOCK_SPINS = 32  # reads of a busy lock before a round counts as lost (a holder needs ~8 host calls)


class Limit:
    """One descriptor's limit: what keys the bucket and how full it may get."""

    def __init__(self, config: Config, inherit: Limit | None = None) -> None:
        self.descriptor: str = config.string("descriptor", inherit.descriptor if inherit else "default", non_empty=True)
        self.key: str = config.string("key", inherit.key if inherit else "client_address", choices=KEY_KINDS)
        header = config.string("header", inherit.header if inherit else "")
        self.header: str = header.lower()
        if self.key == "header" and not self.header:
            raise config.error("header", 'missing: a header name is required with "key": "header"')
        self.missing_key: str = config.string("missing_key", inherit.missing_key if inherit else "shared",
                                              choices=MISSING)  # fmt: skip
        if "token_bucket" in config or inherit is None:
            bucket = config.object("token_bucket")
            self.max_tokens: int = bucket.integer("max_tokens", minimum=1)
            self.tokens_per_fill: int = bucket.integer("tokens_per_fill", 1, minimum=1)
            self.fill_interval_ns: int = bucket.duration("fill_interval", "1s", unit="ns", positive=True)
            bucket.done()
        else:
            self.max_tokens, self.tokens_per_fill = inherit.max_tokens, inherit.tokens_per_fill
            self.fill_interval_ns = inherit.fill_interval_ns

    def key_of(self, headers: Headers) -> str | None:
        """The request's bucket key (``None`` when the request lacks it)."""
        if self.key == "header":
            return headers.get(self.header)
        if self.key == "path":
            return (headers.get(":path") or "").split("?", 1)[0]
        return client_address()

    def refill(self, tokens: int, last_ns: int, now_ns: int) -> tuple[int, int]:
        """The bucket after the fills due by ``now_ns``: Envoy's discrete fills, ``tokens_per_fill``
        every ``fill_interval``, never above ``max_tokens``."""
        if now_ns < last_ns:  # the wall clock stepped back: restart the fill period
            return min(tokens, self.max_tokens), now_ns
        fills = (now_ns - last_ns) // self.fill_interval_ns
        if fills:
            tokens += fills * self.tokens_per_fill
            last_ns += fills * self.fill_interval_ns
        return min(tokens, self.max_tokens), last_ns

    def full_at(self, tokens: int, last_ns: int) -> int:
        """When the bucket is full again (from then on it is equal to a fresh one: evictable)."""
        if tokens >= self.max_tokens:
            return last_ns
        fills = -(-(self.max_tokens - tokens) // self.tokens_per_fill)
        return last_ns + fills * self.fill_interval_ns


def client_address() -> str | None:
    """``source.address`` without its port (``[::1]:5000`` -> ``::1``)."""
    address = properties.source_address()
    if not address:
        return None
    if address.startswith("["):
        return address[1 : address.find("]")]
    host, colon, port = address.rpartition(":")
    return host if colon and port.isdigit() and ":" not in host else address


def stable_hash(data: bytes) -> int:
    """A hash every VM (and the test host) agrees on: Python's hash() is seeded per snapshot."""
    return binascii.crc32(data)


def bucket_key(descriptor: str, value: str) -> bytes:
    raw = f"{descriptor}\n{value}".encode("utf-8", "surrogateescape")
    if len(raw) <= MAX_KEY_BYTES:
        return raw
    # A long value (a header can be kilobytes) costs that much in every slot: keep a digest.
    return f"{descriptor}\n#{len(raw)}:{binascii.crc32(raw):08x}:{binascii.crc32(raw[::-1]):08x}".encode()


class Decision:
    """What the bucket said: allowed or not, and the x-ratelimit-* values."""

    def __init__(self, allowed: bool, limit: int, remaining: int, reset_s: int) -> None:
        self.allowed = allowed
        self.limit = limit
        self.remaining = remaining
        self.reset_s = reset_s

    def headers(self) -> list[tuple[str, str]]:
        return [("x-ratelimit-limit", str(self.limit)), ("x-ratelimit-remaining", str(self.remaining)),
                ("x-ratelimit-reset", str(self.reset_s))]  # fmt: skip


class RateLimit(HttpContext):
    plugin: RateLimitPlugin
    decision: Decision | None = None
    limited = False

    def on_request_headers(self, headers: Headers, end_of_stream: bool) -> Action | None:
        plugin = self.plugin
        limit = plugin.limit_for_route(self.route_config)
        if limit is None:  # the route disables the filter
            return Action.CONTINUE
        value = limit.key_of(headers)
        if not value:  # absent or empty: an empty header must not be a way around missing_key
            if limit.missing_key == "allow":
                requests_total.labels(limit.descriptor, "skipped").increment()
                return Action.CONTINUE
            if limit.missing_key == "deny":
                requests_total.labels(limit.descriptor, "limited").increment()
                self.limited = True
                reply = [("content-type", "text/plain")]
                self.send_response(plugin.status, plugin.body, reply, details="rate_limit_missing_key")
                return Action.PAUSE
            value = ""  # "shared": every request without the key shares one bucket
        decision = plugin.take(limit, bucket_key(limit.descriptor, value))
        if decision.allowed:
            requests_total.labels(limit.descriptor, "allowed").increment()
            self.decision = decision
            return Action.CONTINUE
        requests_total.labels(limit.descriptor, "limited").increment()
        self.limited = True
        retry_after = max(decision.reset_s, 1)
        reply_headers = [("content-type", "text/plain"), ("retry-after", str(retry_after)), *decision.headers()]
        self.send_response(plugin.status, plugin.body, reply_headers, details="rate_limited")
        return Action.PAUSE

    def on_response_headers(self, headers: Headers, end_of_stream: bool) -> Action | None:
        # The 429 already carries them; an allowed request gets them on its upstream response.
        if self.decision is not None and self.plugin.x_ratelimit_headers and not self.limited:
            for name, value in self.decision.headers():
                headers[name] = value
        return Action.CONTINUE


@proxywasm.register
class RateLimitPlugin(PluginContext):
    http_context = RateLimit

    def __init__(self) -> None:
        self.limit: Limit | None = None
        self.route_limits: dict[int, tuple[dict[str, Any], Limit | None]] = {}
        self.sweep_cursor = 0

    def on_configure(self, configuration: bytes) -> bool:
        config = proxywasm.config.parse(configuration)
        limit = Limit(config)
        self.max_buckets: int = config.integer("max_buckets", 4096, minimum=PROBES, maximum=1 << 20)
        self.x_ratelimit_headers: bool = config.boolean("x_ratelimit_headers", True)
        self.status: int = config.integer("status", 429, minimum=400, maximum=599)
        self.body: str = config.string("body", "rate limited\n")
        self.failure_mode_deny: bool = config.boolean("failure_mode_deny", False)
        sweep_ns = config.duration("sweep_interval", "10s", unit="ns", positive=True)
        config.done()
        self.limit = limit
        self.route_limits.clear()
        self.prefix = f"rate_limit/{self.plugin_name}/"
        # Envoy configures the main thread's VM before any worker's, so the lock exists before any
        # request; a VM configured later (another worker, a reload) finds it and leaves it alone.
        self.lock = f"rate_limit/{self.plugin_name}.lock"
        if shared_data.get(self.lock) is None:
            shared_data.set(self.lock, b"")
        # Each VM starts its sweep elsewhere, so the VMs do not all check the same slots.
        self.sweep_cursor = int.from_bytes(os.urandom(4), "little") % self.max_buckets
        self.set_tick_period(max(sweep_ns // 1_000_000, 1))
        # The series dashboards show read 0 before the first request.
        self.declare(limit)
        for reason in ("idle", "overflow"):
            evictions_total.labels(reason)
        return True

    # -- per-route limits ------------------------------------------------------------------------------
    def limit_for_route(self, route: dict[str, Any]) -> Limit | None:
        """The limit of the matched route: its metadata (``filter_metadata.<plugin name>``) may set
        its own limit or ``"disabled": true``; otherwise the plugin's. Parsed once per route."""
        assert self.limit is not None
        if not route:
            return self.limit
        cached = self.route_limits.get(id(route))
        if cached is not None and cached[0] is route:
            return cached[1]
        chosen: Limit | None
        try:
            config = proxywasm.config.Config(route, f"route {properties.route_name() or '(unnamed)'} metadata")
            if config.boolean("disabled", False):
                chosen = None
            else:
                config.string("descriptor", non_empty=True)  # a route's own limit needs its own descriptor
                chosen = Limit(config, inherit=self.limit)
            config.done()
        except ConfigError as err:
            # An operator mistake in route metadata: say where, and keep limiting with the plugin's limit.
            log.error(f"rate_limit: {err}; using the plugin's limit on this route")
            chosen = self.limit
        if len(self.route_limits) >= 64:
            self.route_limits.clear()
        self.route_limits[id(route)] = (route, chosen)  # the dict is kept, so its id is not reused
        if chosen is not None:
            self.declare(chosen)
        return chosen

    @staticmethod
    def declare(limit: Limit) -> None:
        """Make the limit's series exist (reading 0) before they count anything."""
        for decision in ("allowed", "limited"):
            requests_total.labels(limit.descriptor, decision)
        contention_total.labels(limit.descriptor)

    # -- the bucket table ------------------------------------------------------------------------------
    def slot(self, index: int) -> str:
        return f"{self.prefix}{index}"

    def take(self, limit: Limit, key: bytes) -> Decision:
        """Take one token from ``key``'s bucket (made full on first use)."""
        home = stable_hash(key) % self.max_buckets
        for _ in range(CAS_ATTEMPTS):
            found: tuple[str, bytes, int] | None = None  # (slot, record, cas)
            for probe in range(PROBES):
                name = self.slot((home + probe) % self.max_buckets)
                entry = shared_data.get(name)
                if entry is not None and entry[0][_RECORD.size :] == key:  # a key is never empty
                    found = (name, *entry)
                    break
            if found is None:
                placed = self.place(limit, key, home)
                if placed is None:
                    continue  # the lock stayed busy, or a write lost a race: read again
                return placed
            name, raw, cas = found
            now = proxywasm.now_ns()
            stored_tokens, stored_ns, _ = _RECORD.unpack_from(raw)
            tokens, last_ns = limit.refill(min(stored_tokens, limit.max_tokens), stored_ns, now)
            allowed = tokens >= 1
            if allowed:
                tokens -= 1
            elif (tokens, last_ns) == (stored_tokens, stored_ns):  # empty, and nothing to write
                return Decision(False, limit.max_tokens, 0, -(-(last_ns + limit.fill_interval_ns - now) // NS_PER_S))
            try:
                shared_data.set(name, _RECORD.pack(tokens, last_ns, limit.full_at(tokens, last_ns)) + key, cas)
            except CasMismatch:
                continue  # another worker wrote this slot since we read it: read again
            reset_ns = 0 if tokens >= limit.max_tokens else last_ns + limit.fill_interval_ns - now
            return Decision(allowed, limit.max_tokens, tokens, -(-reset_ns // NS_PER_S))
        # Persistent contention: CAS_ATTEMPTS rounds all lost to other workers writing the same slots
        # (or holding the table's lock).
        contention_total.labels(limit.descriptor).increment()
        if self.failure_mode_deny:
            return Decision(False, limit.max_tokens, 0, 1)
        return Decision(True, limit.max_tokens, 0, 1)

    def place(self, limit: Limit, key: bytes, home: int) -> Decision | None:
        """Give ``key``, which has no bucket, a full one minus this request's token, under the
        table's lock; None when the lock stayed busy, the key got a bucket meanwhile, or a write
        lost a race (the caller reads again).

        Under the lock because the choice spans four slots and shared data makes no step over
        several keys atomic: two workers placing one key at once could pick different slots (one
        saw a slot idle a moment before the other) and the key would get two buckets; and the
        first write of a slot cannot be conditional (a write with CAS 0 replaces whatever is
        there), so two workers creating one slot would erase each other's token. The placer
        reads the four slots again under the lock: a key placed meanwhile is found there."""
        held = self.acquire()
        if held is None:
            return None
        try:
            now = proxywasm.now_ns()
            claim: tuple[str, int] | None = None  # (slot, cas) of the first free or idle slot
            victim: tuple[str, int, int] | None = None  # (slot, cas, full at) of the fullest-soonest bucket
            for probe in range(PROBES):
                name = self.slot((home + probe) % self.max_buckets)
                entry = shared_data.get(name)
                if entry is None or len(entry[0]) < _RECORD.size:
                    if claim is None:
                        claim = (name, entry[1] if entry else 0)  # CAS 0: a slot never written yet
                    continue
                raw, cas = entry
                if raw[_RECORD.size :] == key:
                    return None  # placed by the lock's previous holder: take from it
                full_ns = _RECORD.unpack_from(raw)[2]
                if now >= full_ns and claim is None:
                    claim = (name, cas)  # an idle bucket is as good as a fresh one
                if victim is None or full_ns < victim[2]:
                    victim = (name, cas, full_ns)
            if claim is not None:
                name, cas = claim
            else:
                # Every slot holds a bucket that is still refilling: evict the one closest to full
                # (the least lost). That key starts over with a full bucket.
                assert victim is not None
                name, cas, _ = victim
            tokens = limit.max_tokens - 1
            try:
                shared_data.set(name, _RECORD.pack(tokens, now, limit.full_at(tokens, now)) + key, cas)
            except CasMismatch:
                return None  # the sweep emptied it, or its owner took a token: read again
            if claim is None:
                evictions_total.labels("overflow").increment()
            reset_ns = 0 if tokens >= limit.max_tokens else limit.fill_interval_ns
            return Decision(True, limit.max_tokens, tokens, -(-reset_ns // NS_PER_S))
        finally:
            self.release(held)

    def acquire(self) -> bytes | None:
        """Take the table's lock (a shared-data key set by CAS to the taker's clock): the value
        written, to release it with; None when another worker held it for all LOCK_SPINS reads.
        A lock whose stamp is LOCK_STALE_NS or more from our clock (either way: a clock may step
        back) is taken over."""
        for _ in range(LOCK_SPINS):
            entry = shared_data.get(self.lock)
            if entry is None:  # on_configure makes it before any request: not expected, but never stuck on it
                shared_data.set(self.lock, b"")
                continue
            value, cas = entry
            now = proxywasm.now_ns()  # read after the lock: a live holder's stamp is not later than this
            if len(value) >= 8 and abs(now - int.from_bytes(value[:8], "little")) < LOCK_STALE_NS:
                continue  # held: its holder is placing a key (a few host calls)
            mine = now.to_bytes(8, "little")  # a takeover's stamp differs by a second or more: unique
            try:
                shared_data.set(self.lock, mine, cas)
            except CasMismatch:
                continue
            return mine
        return None

    def release(self, held: bytes) -> None:
        """Release the lock, unless it was taken over meanwhile (then its new holder releases it)."""
        entry = shared_data.get(self.lock)
        if entry is not None and entry[0] == held:
            try:
                shared_data.set(self.lock, b"", entry[1])
            except CasMismatch:
                pass  # taken over between the two calls

    def on_tick(self) -> None:
        """Sweep: empty the slots of buckets that are full again (idle), a batch per tick, so the
        table holds only buckets in use. Every VM ticks; the CAS makes repeated sweeps harmless."""
        now = proxywasm.now_ns()
        for _ in range(min(SWEEP_BATCH, self.max_buckets)):
            name = self.slot(self.sweep_cursor)
            self.sweep_cursor = (self.sweep_cursor + 1) % self.max_buckets
            entry = shared_data.get(name)
            if entry is None or len(entry[0]) < _RECORD.size:
                continue
            if now >= _RECORD.unpack_from(entry[0])[2]:
                try:
                    shared_data.set(name, b"", entry[1])
                except CasMismatch:
                    continue  # in use again
                evictions_total.labels("idle").increment()
