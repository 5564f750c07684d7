"""Counters, gauges and histograms that appear in Envoy's ``/stats`` under their names.

Create them at module level; each is defined with Envoy on first use (Envoy allows no host
calls while the module is being initialised)."""

from __future__ import annotations

from . import hostcalls
from .abi import MetricType


class _Metric:
    metric_type: MetricType

    def __init__(self, name: str) -> None:
        self.name = name
        self._id: int | None = None

    @property
    def metric_id(self) -> int:
        if self._id is None:
            self._id = hostcalls.define_metric(self.metric_type, self.name)
        return self._id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Counter(_Metric):
    metric_type = MetricType.COUNTER

    def increment(self, by: int = 1) -> None:
        hostcalls.increment_metric(self.metric_id, by)

    @property
    def value(self) -> int:
        return hostcalls.get_metric(self.metric_id)


class Gauge(_Metric):
    metric_type = MetricType.GAUGE

    def set(self, value: int) -> None:
        hostcalls.record_metric(self.metric_id, value)

    def add(self, delta: int) -> None:
        hostcalls.increment_metric(self.metric_id, delta)

    @property
    def value(self) -> int:
        return hostcalls.get_metric(self.metric_id)


class Histogram(_Metric):
    metric_type = MetricType.HISTOGRAM

    def record(self, value: int) -> None:
        hostcalls.record_metric(self.metric_id, value)
