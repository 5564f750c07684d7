"""Counters, gauges and histograms that appear in Envoy's ``/stats`` and ``/stats/prometheus``.

Create them at module level (or in ``on_configure``)::

    requests = Counter("requests_total", labels=("route", "code"))
    ...
    requests.labels(route="api", code="200").increment()

A metric created at module level is defined with Envoy right before the plugin's first
``on_configure`` in each VM (Envoy allows no host calls while the module initialises), one created
later at once: either way it appears with 0 before its first use. Envoy prefixes the names of
Wasm metrics with ``wasmcustom.`` in ``/stats``; ``/stats/prometheus`` shows them without it
(dots become underscores).

Labels: Envoy has no labels on Wasm metrics, so they are encoded into the stat name,
``<name>;<label>=<value>;<label>=<value>`` (``wasmcustom.requests_total;route=api;code=200`` in
``/stats``), and Envoy's tag extraction turns them into Prometheus labels with one ``stats_tags``
entry per label name (:func:`stats_tags`; ``proxywasm build`` writes them out for the labels of
metrics created at module level)::

    requests_total{route="api",code="200"} 3

Create labelled metrics at module level: the build sees only those. One created later (in
``on_vm_start``, ``on_configure`` or a request) with a label name no module-level metric has gets
no ``stats_tags``, and ``/stats/prometheus`` shows its labels inside the name
(``requests_total_route_api{}``); the SDK logs a warning naming the metric and the line.

Label values are text: ``;`` and control characters become ``_`` (``;`` ends a value in the
encoding); Envoy escapes ``"`` and ``\\`` in its Prometheus output. Each distinct combination of
values is a stat Envoy keeps for good: use labels with few values (a route, a status code), never
user ids or paths.
"""

from __future__ import annotations

import sys

from . import hostcalls, log
from .abi import MetricType
from .errors import SDK_DIR, UsageError

_raw = hostcalls.raw

TYPE_CHECKING = False  # typing is not imported at run time: it would cost memory in every VM
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any, TypeVar

    M = TypeVar("M", bound="_Metric")

_pending: list[_Metric] = []  # created while host calls were not possible (module level)
_labelled: list[_Metric] = []  # metrics declared with labels, for the build's stats_tags
_live = False  # this VM has started: define new metrics at once
_built_labels: frozenset[str] | None = None  # the label names the build saw (see built())


def define_pending() -> None:
    """Define the metrics created before host calls were possible (the dispatcher calls this right
    before each ``on_configure``)."""
    global _live
    _live = True
    pending = list(_pending)
    _pending.clear()
    for metric in pending:
        metric.metric_id  # noqa: B018 - defines it with Envoy


def _label_value(value: object) -> str:
    text = value if isinstance(value, str) else str(value)
    if ";" not in text and text.isprintable():
        return text
    return "".join("_" if c == ";" or not c.isprintable() else c for c in text)


def stats_tags(labels: Iterable[str]) -> list[dict[str, str]]:
    """Envoy ``stats_config.stats_tags`` entries that turn the encoded ``label``\\s into Prometheus
    labels: the regex's outer group is cut from the stat name, the inner one is the value."""
    return [{"tag_name": label, "regex": f"(;{label}=([^;]*))"} for label in dict.fromkeys(labels)]


class _Metric:
    metric_type: MetricType

    def __init__(self, name: str, labels: Sequence[str] = ()) -> None:
        if not name or ";" in name or not name.isprintable():
            raise ValueError(f"metric name {name!r}: give a printable name without ';' (it separates labels)")
        label_names = tuple(labels)
        for label in label_names:
            if not (label.isidentifier() and label.isascii()) or label.startswith("__"):
                raise ValueError(
                    f"metric {name!r}: label name {label!r} must be a Prometheus label name "
                    "([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"
                )
        if len(set(label_names)) != len(label_names):
            raise ValueError(f"metric {name!r}: label names repeat: {label_names}")
        self._setup(name, label_names)

    def _setup(self, name: str, label_names: tuple[str, ...]) -> None:
        self.name = name
        self.label_names = label_names
        self._id: int | None = None
        self._children: dict[tuple[str, ...], Any] = {}
        if label_names:
            _labelled.append(self)
            if _built_labels is not None and not _built_labels.issuperset(label_names):
                self._warn_unseen(sorted(set(label_names) - _built_labels))
        elif _live:
            self.metric_id  # noqa: B018 - defined now, so it shows 0 before its first use
        else:
            _pending.append(self)

    def _warn_unseen(self, unseen: list[str]) -> None:
        frame = sys._getframe(2)
        while frame.f_back is not None and frame.f_code.co_filename.startswith(SDK_DIR):
            frame = frame.f_back  # the filter's line that created the metric
        label, where = unseen[0], f"{frame.f_code.co_filename}:{frame.f_lineno}"
        log.warn(
            f"proxywasm: metric {self.name!r} (created at {where}) has labels that no "
            f"metric created at module level has ({', '.join(unseen)}): proxywasm build saw none of them, so its "
            f"stats_config has no stats_tags for them and /stats/prometheus shows them inside the metric name "
            f"({self.name}_{label}_VALUE{{}}). Create labelled metrics at module level, or add stats_tags for "
            f"these labels to the bootstrap yourself"
        )

    @property
    def metric_id(self) -> int:
        if self._id is None:
            if self.label_names:
                labels = ", ".join(self.label_names)
                raise UsageError(f"metric {self.name!r} has labels ({labels}): use .labels(...) to pick one series")
            self._id = hostcalls.define_metric(self.metric_type, self.name)
        return self._id

    def labels(self: M, *values: object, **named: object) -> M:
        """The series for these label values (positional in declaration order, or by name); made
        (and defined with Envoy) on first use, then reused."""
        if not named:
            # Text values already clean (the usual case) are their own key: found without
            # sanitising each value. A value that is not text, or needs sanitising, never equals a
            # key (keys are text without ';' and control characters) and takes the long way.
            try:
                found = self._children.get(values)  # type: ignore[arg-type]
            except TypeError:  # an unhashable value: the long way gives the error
                found = None
            if found is not None:
                return found  # type: ignore[no-any-return]
        if named:
            if values:
                raise TypeError("labels(): give the values either by position or by name")
            unknown = [name for name in named if name not in self.label_names]
            if unknown:  # named first: a misspelt label is also a missing one
                raise TypeError(
                    f"labels(): metric {self.name!r} has no label {', '.join(map(repr, unknown))} (its labels: "
                    f"{', '.join(map(repr, self.label_names))})"
                )
            try:
                values = tuple(named.pop(label) for label in self.label_names)
            except KeyError as missing:
                raise TypeError(f"labels(): metric {self.name!r} needs a value for {missing}") from None
        if len(values) != len(self.label_names):
            raise TypeError(f"labels(): metric {self.name!r} has labels {self.label_names}, got {len(values)} values")
        key = tuple(_label_value(v) for v in values)
        child = self._children.get(key)
        if child is None:
            encoded = "".join(f";{label}={value}" for label, value in zip(self.label_names, key, strict=True))
            child = object.__new__(type(self))
            child._setup(self.name + encoded, ())
            self._children[key] = child
        return child

    def __repr__(self) -> str:
        labels = f", labels={self.label_names!r}" if self.label_names else ""
        return f"{type(self).__name__}({self.name!r}{labels})"


class Counter(_Metric):
    """A count that only goes up. ``increment(0)`` is allowed (it only makes sure the counter
    exists); a negative step raises ``ValueError`` (Envoy would answer BAD_ARGUMENT)."""

    metric_type = MetricType.COUNTER

    def __init__(self, name: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, labels)

    def increment(self, by: int = 1) -> None:
        if by > 0:
            metric_id = self._id  # defined: the host is called directly (see hostcalls.raw)
            _raw.increment_metric(self.metric_id if metric_id is None else metric_id, by)
        elif by == 0:
            self.metric_id  # noqa: B018 - Envoy refuses a 0 step; defining is all it would do
        else:
            raise ValueError(f"counter {self.name!r} only goes up: increment({by})")

    @property
    def value(self) -> int:
        return hostcalls.get_metric(self.metric_id)


class Gauge(_Metric):
    """A value that goes up and down: ``set(value)`` (>= 0) or ``add(delta)`` (any sign). Envoy's
    gauges are unsigned 64-bit: ``set`` of a negative value raises ``ValueError``; an ``add`` that
    takes the gauge below 0 wraps around to a huge number in Envoy (keep the gauge >= 0)."""

    metric_type = MetricType.GAUGE

    def __init__(self, name: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, labels)

    def set(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"gauge {self.name!r} holds an unsigned number in Envoy: set({value}) would read as "
                             f"{value % (1 << 64)}")  # fmt: skip
        metric_id = self._id
        _raw.record_metric(self.metric_id if metric_id is None else metric_id, value)

    def add(self, delta: int) -> None:
        metric_id = self._id
        _raw.increment_metric(self.metric_id if metric_id is None else metric_id, delta)

    @property
    def value(self) -> int:
        return hostcalls.get_metric(self.metric_id)


class Histogram(_Metric):
    """Recorded values (>= 0, e.g. milliseconds; a negative one raises ``ValueError``: Envoy would
    record it as a huge unsigned number): Envoy keeps quantiles in ``/stats`` and buckets
    (``_bucket``, ``_sum``, ``_count``) in ``/stats/prometheus``."""

    metric_type = MetricType.HISTOGRAM

    def __init__(self, name: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, labels)

    def record(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"histogram {self.name!r} records unsigned numbers in Envoy: record({value})")
        metric_id = self._id
        _raw.record_metric(self.metric_id if metric_id is None else metric_id, value)


def labelled() -> list[tuple[str, tuple[str, ...]]]:
    """(name, label names) of every metric declared with labels so far (the build reads this)."""
    return [(m.name, m.label_names) for m in _labelled]


def built() -> None:
    """The build has read :func:`labelled` (the bootstrap, and the local host's native mode, call
    this after importing the filter): a labelled metric created from now on with a label name
    none of those has is logged as a warning, since the stats_config has no tag for it."""
    global _built_labels
    _built_labels = frozenset(label for metric in _labelled for label in metric.label_names)
