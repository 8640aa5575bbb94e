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
``bidflow_serving_model_ready``                    gauge      model (1 loaded and serving, 0 not: answering 503)
``bidflow_serving_server_errors_total``            counter    status (responses >= 500 the error mapping gave)
``bidflow_serving_explain_seconds``                histogram  model (the ``:explain`` route, apart from scoring)
``bidflow_serving_explained_total``                counter    model (rows explained: partner calls, instances)
=================================================  =========  ======================================

Shares over a window come from the counters (``rate(..{decision="skip"}) / rate(..)``); the
gauges are for a glance. ``partner`` takes the partners the model has thresholds for, and
``other`` for the rest: a client can send any name, and each label value is a time series.

Per-partner counts are kept in plain Python lists and turned into samples only when Prometheus
scrapes (a custom collector): one auction with 30 partners costs a few list increments instead of
30 labelled ``Counter.inc`` calls. Created on first use, once per process (``serving_metrics()``),
because prometheus_client refuses a second registration of the same names.

With several worker processes (``--workers``) every process counts its own requests, so
prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set by the parent before the
workers start, with ``BIDFLOW_SERVING_METRICS_DIR`` beside it) keeps the standard metrics in shared
files, and ``/metrics`` sums them over the workers (``exposition``). The per-partner lists cannot
live in those files; each worker adds what they counted since last time to real counters once a
second (and before answering a scrape), so a scrape may lag other workers' decisions by up to a
second; the same holds for the latency histograms, observed in batches (``BufferedHistogram``). The
two share gauges are derived from the summed counters, and ``model_info`` is the largest value over
live workers: 1 while any worker serves that version, 0 once none does.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Metric
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

OTHER: Final = "other"
MULTIPROCESS_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own switch
# Set, to the same folder, only by ``bidflow.serving.workers``: importing feast sets
# PROMETHEUS_MULTIPROC_DIR in any process (feast.metrics, at import), so that one cannot say
# whether this process is one of several workers.
WORKERS_DIR_ENV: Final = "BIDFLOW_SERVING_METRICS_DIR"
FLUSH_S: Final = 1.0  # how often a worker publishes its per-partner counts in multiprocess mode
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
        # What ``ServingMetrics.flush`` has published already (multiprocess mode).
        self.published: tuple[list[int], list[int], dict[tuple[bool, bool], int]] = (
            [0] * len(self.partners), [0] * len(self.partners), {},
        )  # fmt: skip

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
    """All serving metrics of this process; register models with ``model()``.

    Args:
        registry: where the metrics are registered.
        multiprocess: one of several worker processes (see the module docstring): per-partner
            counts go to shared counters by ``flush`` instead of being collected at scrape time.
    """

    def __init__(self, registry: Any = REGISTRY, *, multiprocess: bool = False) -> None:
        self._models: dict[str, ModelCounts] = {}
        self._info: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()
        self.multiprocess = multiprocess
        self.latency = Histogram(
            "bidflow_serving_request_seconds",
            "Time from receiving a scoring request to the start of its response.",
            ["model", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.explain_latency = Histogram(
            "bidflow_serving_explain_seconds",
            "Time from receiving an explain request to the start of its response.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.explained = Counter(
            "bidflow_serving_explained", "Rows explained (partner calls, instances).", ["model"], registry=registry
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
            multiprocess_mode="livemax",
        )
        # 0 as soon as a server has the model but cannot serve it (still loading, or loading failed), so an
        # alert needs no traffic to notice; with several workers the smallest value: 0 while any worker is not ready.
        self.model_ready = Gauge(
            "bidflow_serving_model_ready",
            "1 while the model is loaded and serving, 0 while it answers 503 (loading, or failed to load).",
            ["model"],
            registry=registry,
            multiprocess_mode="livemin",
        )
        # Counted where the one status mapping (``bidflow.serving.errors``) builds a 5xx answer, never on the
        # success path; the request histogram's ``_count`` is the denominator of the 5xx share.
        self.server_errors = Counter(
            "bidflow_serving_server_errors",
            "Responses with a 5xx status (model not ready, a bug).",
            ["status"],
            registry=registry,
        )
        if not multiprocess:
            registry.register(self)
            return
        self._decisions = Counter(
            "bidflow_serving_decisions", "Call/skip decisions per partner.", ["model", "partner", "decision"],
            registry=registry,
        )  # fmt: skip
        self._auctions = Counter(
            "bidflow_serving_auctions", "Scored auctions.", ["model", "explored", "fail_open"], registry=registry
        )
        threading.Thread(target=self._flush_forever, name="metrics-flush", daemon=True).start()

    def model(self, name: str, partners: Iterable[str], *, version: str, source: str, predictor: str) -> ModelCounts:
        """Start counting for a (re)loaded model; returns the object its requests report to."""
        counts = ModelCounts(partners)
        labels = (name, version, source, predictor)
        self.flush()  # what the previous version counted, before its counts are replaced
        with self._lock:
            self._models[name] = counts
            previous = self._info.pop(name, None)
            if previous is not None and self.multiprocess:  # the shared files keep every series: zero it
                self.model_info.labels(*previous).set(0)
            elif previous is not None:  # a reload replaces the previous version's series
                self.model_info.remove(*previous)
            self._info[name] = labels
            self.model_info.labels(*labels).set(1)
        return counts

    def flush(self) -> None:
        """Publish the counts since the last flush to the shared counters (multiprocess mode only)."""
        if not self.multiprocess:
            return
        with self._lock:
            models = list(self._models.items())
            for name, counts in models:
                calls, skips, auctions = counts.published
                for i, partner in enumerate(counts.partners):
                    for decision, now, before in (("call", counts.calls, calls), ("skip", counts.skips, skips)):
                        value = now[i]  # one read: the serving thread may be incrementing it
                        if value != before[i]:
                            self._decisions.labels(name, partner, decision).inc(value - before[i])
                            before[i] = value
                for key, value in list(counts.auctions.items()):
                    if value != auctions.get(key, 0):
                        self._auctions.labels(name, _flag(key[0]), _flag(key[1])).inc(value - auctions.get(key, 0))
                        auctions[key] = value

    def _flush_forever(self) -> None:
        while True:
            time.sleep(FLUSH_S)
            self.flush()

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
        totals: dict[str, tuple[float, float, float, float]] = {}
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
            n_explored = sum(n for (explored, _), n in outcomes.items() if explored)
            totals[name] = (sum(skips), sum(calls) + sum(skips), n_explored, sum(outcomes.values()))
        yield from (decisions, auctions, *_share_gauges(totals))


class BufferedHistogram:
    """Observations of one histogram (a labelled child), added to it in batches.

    prometheus_client's ``observe`` finds the bucket with a Python loop and, with several worker
    processes, writes two values to a memory-mapped file: about 2 µs, four times per auction (the
    request latency and KServe's three stage histograms). Here an observation is a list append;
    every ``limit`` observations, or once the oldest waiting one is ``max_age_s`` old, and before
    ``/metrics`` answers (``exposition``), the batch is added with one ``searchsorted`` and one
    increment per bucket that received values: the same counts and sum as one ``observe`` each.
    The server also folds every second (``bidflow.serving.server``), so that with several workers
    an idle worker's observations reach the shared files. Not thread-safe: the event loop's thread
    observes, and folds.

    Args:
        child: the histogram to add to (``Histogram.labels(...)``).
        limit: observations held before they are added.
        max_age_s: the longest an observation waits (with ``observe``'s ``now``).
    """

    def __init__(self, child: Any, limit: int = 256, max_age_s: float = 1.0) -> None:
        self._child = child
        self._bounds = np.asarray(child._upper_bounds, dtype=np.float64)  # ends with +Inf
        self._limit = limit
        self._max_age_s = max_age_s
        self._values: list[float] = []
        self._oldest = 0.0
        _BUFFERS.add(self)

    def observe(self, value: float, now: float) -> None:
        """Note ``value``; ``now`` is the caller's ``time.perf_counter()`` (for the age rule)."""
        values = self._values
        if not values:
            self._oldest = now
        values.append(value)
        if len(values) >= self._limit or now - self._oldest >= self._max_age_s:
            self.fold()

    def fold(self) -> None:
        """Add the waiting observations to the histogram."""
        values, self._values = self._values, []
        if not values:
            return
        x = np.asarray(values, dtype=np.float64)
        # ``Histogram.observe``: the first bucket whose upper bound is >= the value.
        counts = np.bincount(np.searchsorted(self._bounds, x, side="left"), minlength=len(self._bounds))
        buckets = self._child._buckets
        for i in np.flatnonzero(counts[: len(self._bounds)]).tolist():
            buckets[i].inc(int(counts[i]))
        self._child._sum.inc(float(x.sum()))


_BUFFERS: weakref.WeakSet[BufferedHistogram] = weakref.WeakSet()


def fold_observations() -> None:
    """Add every buffered observation of this process to its histogram (before a scrape)."""
    for buffered in list(_BUFFERS):
        buffered.fold()


_METRICS: ServingMetrics | None = None
_METRICS_LOCK = threading.Lock()


def serving_metrics() -> ServingMetrics:
    """The process's metrics (created, and registered with Prometheus, on first use)."""
    global _METRICS
    with _METRICS_LOCK:
        if _METRICS is None:
            _METRICS = ServingMetrics(multiprocess=bool(os.environ.get(WORKERS_DIR_ENV)))
        return _METRICS


def exposition(accept: str | None) -> tuple[bytes, str]:
    """The ``/metrics`` body and its content type: this process's metrics, or all workers' summed."""
    from prometheus_client import exposition as formats

    encoder, content_type = formats.choose_encoder(accept or "")
    fold_observations()
    metrics = serving_metrics()
    if not metrics.multiprocess:
        return encoder(REGISTRY), content_type
    metrics.flush()
    return encoder(_Summed(os.environ[WORKERS_DIR_ENV])), content_type


class _Summed:
    """Every worker's metrics from the shared files, plus the share gauges derived from the sums."""

    def __init__(self, directory: str) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        self._registry = CollectorRegistry()
        MultiProcessCollector(self._registry, path=directory)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterator[Metric]:
        families = list(self._registry.collect())
        yield from families
        yield from shares(families)


def shares(families: Iterable[Metric]) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    """The filtered and exploration share gauges, per model, from the decision and auction counters."""
    totals: dict[str, list[float]] = {}  # model -> skips, decisions, explored auctions, auctions
    for family in families:
        for sample in family.samples:
            if sample.name == "bidflow_serving_decisions_total":
                per = totals.setdefault(sample.labels["model"], [0.0] * 4)
                per[0] += sample.value if sample.labels["decision"] == "skip" else 0.0
                per[1] += sample.value
            elif sample.name == "bidflow_serving_auctions_total":
                per = totals.setdefault(sample.labels["model"], [0.0] * 4)
                per[2] += sample.value if sample.labels["explored"] == "true" else 0.0
                per[3] += sample.value
    return _share_gauges({name: (s, d, e, a) for name, (s, d, e, a) in totals.items()})


def _share_gauges(totals: dict[str, tuple[float, float, float, float]]) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    """Per model (skips, decisions, explored auctions, auctions) -> the two share gauges."""
    filtered = GaugeMetricFamily(
        "bidflow_serving_filtered_share", "Share of partner calls skipped since start.", labels=["model"]
    )
    explored_share = GaugeMetricFamily(
        "bidflow_serving_exploration_share", "Share of auctions in the exploration share since start.",
        labels=["model"],
    )  # fmt: skip
    for name, (skips, decisions, explored, auctions) in sorted(totals.items()):
        filtered.add_metric([name], skips / decisions if decisions else 0.0)
        explored_share.add_metric([name], explored / auctions if auctions else 0.0)
    return filtered, explored_share


def _flag(value: bool) -> str:
    return "true" if value else "false"
