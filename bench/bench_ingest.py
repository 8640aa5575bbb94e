"""Ingest throughput: auctions per second from gzip JSON lines to hourly parquet.

Measured twice: with one worker process per core (the default: hourly files are ingested in
parallel) and pinned to a single core.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import Result, one_core
from bidflow.config import IngestConfig, SimulateConfig
from bidflow.data.ingest import ingest
from bidflow.data.simulate import simulate

HOURS = 6
AUCTIONS_PER_HOUR = 50_000


def run() -> list[Result]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        simulate(
            SimulateConfig(
                start=datetime(2026, 11, 2, 10, tzinfo=UTC), hours=HOURS, auctions_per_hour=AUCTIONS_PER_HOUR
            ),
            raw,
        )
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        for label, workers in ((f"{cores} cores, one process per hourly file", 0), ("1 core", 1)):
            with one_core() if workers == 1 else contextlib.nullcontext():
                summary = ingest(raw, Path(tmp) / f"parquet-{workers}", IngestConfig(workers=workers))
            detail = f"{summary.auctions:,} auctions -> {summary.rows:,} rows in {summary.seconds:.1f} s"
            name = f"ingest: auctions/s ({label}; decode, rules, features, parquet)"
            target = ">= 50,000" if workers == 0 else ""  # the target is the machine's; one core is for reference
            results.append(Result(name, summary.auctions / summary.seconds, "auctions/s", detail, target))
    return results
