"""Prometheus metrics of the model servers (exposed on KServe's ``/metrics``).

=================================================  =========  ======================================
metric                                             type       labels
=================================================  =========  ======================================
``bidflow_serving_request_seconds``                histogram  model, protocol (v1 | v2)
``bidflow_serving_decisions_total``                counter    model, partner, decision (call | skip)
``bidflow_serving_auctions_total``                 counter    model, explored, fail_open
``bidflow_serving_filtered_share``                 gauge      model (skips / decisions since start)
``bidflow_serving_exploration_share``              gauge      model (explored / auctions since start)
``bidflow_serving_fail_open_total``                counter    model, reason
``bidflow_serving_model_info``                     gauge = 1  model, version, source, predictor
=================================================  =========  ======================================

Shares over a window come from the counters (``rate(..{decision="skip"}) / rate(..)``); the
gauges are for a glance. ``partner`` takes the partners the model has thresholds for, and
``other`` for the rest: a client can send any name, and each label value is a time series.

Per-partner counts are kept in plain Python lists and turned into samples only when Prometheus
scrapes (a custom collector): one auction with 30 partners costs a few list increments instead of
30 labelled ``Counter.inc`` calls. Created on first use, once per process (``serving_metrics()``),
because prometheus_client refuses a second registration of the same names.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

OTHER: Final = "other"
# Fine buckets below 5 ms: the latency budget of a bid filter is a few milliseconds.
LATENCY_BUCKETS: Final = (
    0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip


class ModelCounts:
    """Decision counts of one model (per partner, per auction outcome)."""

    def __init__(self, partners: Iterable[str]) -> None:
        self.partners = [*sorted(set(partners) - {OTHER}), OTHER]
        self.index = {p: i for i, p in enumerate(self.partners)}
        self.other = self.index[OTHER]
        self.calls = [0] * len(self.partners)
        self.skips = [0] * len(self.partners)
        self.auctions: dict[tuple[bool, bool], int] = {}

    def record(self, partners: Sequence[str], calls: Sequence[bool], explored: bool, fail_open: bool) -> None:
        """Count one auction's decisions."""
        index, other = self.index, self.other
        for partner, call in zip(partners, calls, strict=True):
            i = index.get(partner, other)
            if call:
                self.calls[i] += 1
            else:
                self.skips[i] += 1
        key = (explored, fail_open)
        self.auctions[key] = self.auctions.get(key, 0) + 1


class ServingMetrics(Collector):
    """All serving metrics of this process; register models with ``model()``."""

    def __init__(self, registry: Any = REGISTRY) -> None:
        self._models: dict[str, ModelCounts] = {}
        self._info: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()
        self.latency = Histogram(
            "bidflow_serving_request_seconds",
            "Time from receiving a scoring request to the start of its response.",
            ["model", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.fail_open = Counter(
            "bidflow_serving_fail_open",
            "Auctions answered without online features (every partner called).",
            ["model", "reason"],
            registry=registry,
        )
        self.model_info = Gauge(
            "bidflow_serving_model_info",
            "The model version being served (value 1).",
            ["model", "version", "source", "predictor"],
            registry=registry,
        )
        registry.register(self)

    def model(self, name: str, partners: Iterable[str], *, version: str, source: str, predictor: str) -> ModelCounts:
        """Start counting for a (re)loaded model; returns the object its requests report to."""
        counts = ModelCounts(partners)
        labels = (name, version, source, predictor)
        with self._lock:
            self._models[name] = counts
            previous = self._info.pop(name, None)
            if previous is not None:  # a reload replaces the previous version's series
                self.model_info.remove(*previous)
            self._info[name] = labels
            self.model_info.labels(*labels).set(1)
        return counts

    def describe(self) -> Iterable[Any]:
        """Nothing: describing nothing keeps registration free of a ``collect()`` call."""
        return []

    def collect(self) -> Iterator[Any]:
        """The per-partner and per-auction samples, built from the counts at scrape time."""
        decisions = CounterMetricFamily(
            "bidflow_serving_decisions", "Call/skip decisions per partner.", labels=["model", "partner", "decision"]
        )
        auctions = CounterMetricFamily(
            "bidflow_serving_auctions", "Scored auctions.", labels=["model", "explored", "fail_open"]
        )
        filtered = GaugeMetricFamily(
            "bidflow_serving_filtered_share", "Share of partner calls skipped since start.", labels=["model"]
        )
        explored_share = GaugeMetricFamily(
            "bidflow_serving_exploration_share", "Share of auctions in the exploration share since start.",
            labels=["model"],
        )  # fmt: skip
        with self._lock:
            models = list(self._models.items())
        for name, counts in models:
            calls, skips = list(counts.calls), list(counts.skips)
            for partner, c, s in zip(counts.partners, calls, skips, strict=True):
                decisions.add_metric([name, partner, "call"], c)
                decisions.add_metric([name, partner, "skip"], s)
            outcomes = dict(counts.auctions)
            for (explored, fail_open), n in sorted(outcomes.items()):
                auctions.add_metric([name, _flag(explored), _flag(fail_open)], n)
            total = sum(calls) + sum(skips)
            filtered.add_metric([name], sum(skips) / total if total else 0.0)
            n_auctions = sum(outcomes.values())
            n_explored = sum(n for (explored, _), n in outcomes.items() if explored)
            explored_share.add_metric([name], n_explored / n_auctions if n_auctions else 0.0)
        yield from (decisions, auctions, filtered, explored_share)


_METRICS: ServingMetrics | None = None
_METRICS_LOCK = threading.Lock()


def serving_metrics() -> ServingMetrics:
    """The process's metrics (created, and registered with Prometheus, on first use)."""
    global _METRICS
    with _METRICS_LOCK:
        if _METRICS is None:
            _METRICS = ServingMetrics()
        return _METRICS


def _flag(value: bool) -> str:
    return "true" if value else "false"
