"""The metric-name reader the rule and panel checks rely on."""

from __future__ import annotations

import pytest

from bidflow.observability.promql import metric_names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('sum by (job, model) (rate(a_total{job=~"$job", reason!="x"}[$__rate_interval]))', {"a_total"}),
        ("histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m]))) > 1e-3", {"h_bucket"}),
        ("a / on (job) group_left (version) max by (job, version) (info == 1)", {"a", "info"}),
        ('x{le="0.5"} offset 5m and y unless z == bool 1', {"x", "y", "z"}),
        ('label_replace(m, "dst", "$1", "src", "(.*)")', {"m"}),
        ("bidflow:serving_requests:rate5m > 0.05", {"bidflow:serving_requests:rate5m"}),
        ("rate(c_total[1m:10s]) * 60", {"c_total"}),
        ('{__name__="m"}', set()),
        ("sum without (instance) (g)", {"g"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_a_word_it_cannot_place_is_reported_not_dropped() -> None:
    assert metric_names("sum(rate(x[5m])) by_mistake") == {"x", "by_mistake"}
