"""Each filter's envoy.yaml carries the stats_config that `proxywasm build` emits for the labels of
its metrics (without it /stats/prometheus shows the labels folded into the metric names)."""

from __future__ import annotations

import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]
from filters_support import FILTERS

from proxywasm_build.build import build


@pytest.mark.parametrize("name", sorted(p.parent.name for p in FILTERS.glob("*/envoy.yaml")))
def test_envoy_yaml_carries_the_stats_tags_the_build_emits(name: str) -> None:
    emitted = build(FILTERS / name / "filter.py").stats_tags
    configured = yaml.safe_load((FILTERS / name / "envoy.yaml").read_text())["stats_config"]["stats_tags"]
    assert configured == emitted  # in order: Envoy applies stats_tags one after the other
