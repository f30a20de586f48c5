"""``observe_many`` records what as many ``observe`` calls would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from streams.metrics import observe_many


def _samples(h: Histogram) -> dict[tuple[str, str], float]:
    return {(s.name, s.labels.get("le", "")): s.value for m in h.collect() for s in m.samples if not s.name.endswith("_created")}


@pytest.mark.parametrize("value", [0.0, 0.1, 0.3, 1.0, 7.5, 86400.0, 1e9])
def test_observe_many_equals_observing_one_by_one(value: float) -> None:
    buckets = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 86400.0)
    one = Histogram("one", "", buckets=buckets, registry=CollectorRegistry())
    many = Histogram("many", "", buckets=buckets, registry=CollectorRegistry())
    for _ in range(37):
        one.observe(value)
    observe_many(many, value, 37)
    observe_many(many, value, 0)
    expected = {(name.replace("one", "many", 1), le): v for (name, le), v in _samples(one).items()}
    got = _samples(many)
    # The sum of 37 additions and one multiplication differ in the last bits.
    assert got.pop(("many_sum", "")) == pytest.approx(expected.pop(("many_sum", "")))
    assert got == expected
    assert expected[("many_count", "")] == 37
