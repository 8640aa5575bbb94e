"""Serving metrics on their own: observations added in batches count exactly as one by one."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from bidflow.serving.metrics import LATENCY_BUCKETS, BufferedHistogram, fold_observations


def test_batched_observations_give_the_histogram_one_by_one_observations_give() -> None:
    registry = CollectorRegistry()
    one_by_one = Histogram("direct_seconds", "d", ["model"], buckets=LATENCY_BUCKETS, registry=registry)
    batched = Histogram("batched_seconds", "d", ["model"], buckets=LATENCY_BUCKETS, registry=registry)
    buffered = BufferedHistogram(batched.labels("m"), limit=64, max_age_s=3600)
    rng = np.random.default_rng(7)
    # Wide-ranging values, values exactly on bucket bounds, and ones past the last bound (+Inf).
    values = [*rng.lognormal(-7, 2, 1_000).tolist(), *LATENCY_BUCKETS, 5.0, 0.0]
    for value in values:
        one_by_one.labels("m").observe(value)
        buffered.observe(value, now=0.0)
    fold_observations()  # what /metrics does before it answers
    text = generate_latest(registry).decode()
    direct = [line.removeprefix("direct") for line in text.splitlines() if line.startswith("direct_seconds_")]
    folded = [line.removeprefix("batched") for line in text.splitlines() if line.startswith("batched_seconds_")]
    assert direct and [line for line in direct if "_created" not in line] == [
        line for line in folded if "_created" not in line
    ]


def test_observations_wait_at_most_their_limit_or_age() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("waiting_seconds", "w", buckets=(0.1, 1.0), registry=registry)
    buffered = BufferedHistogram(histogram, limit=3, max_age_s=1.0)

    def count() -> float:
        return registry.get_sample_value("waiting_seconds_count") or 0.0

    buffered.observe(0.05, now=10.0)
    buffered.observe(0.05, now=10.5)
    assert count() == 0  # waiting
    buffered.observe(0.5, now=10.6)  # the third: the limit
    assert count() == 3
    buffered.observe(0.05, now=20.0)
    buffered.observe(0.05, now=21.0)  # the first waiting one is a second old
    assert count() == 5
    assert registry.get_sample_value("waiting_seconds_bucket", {"le": "0.1"}) == 4
