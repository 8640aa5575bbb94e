"""Ingest throughput: auctions per second from gzip JSON lines to hourly parquet, one core."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import Result, pin_to_one_core
from bidflow.config import IngestConfig, SimulateConfig
from bidflow.data.ingest import ingest
from bidflow.data.simulate import simulate


def run() -> list[Result]:
    pin_to_one_core()
    with tempfile.TemporaryDirectory() as tmp:
        raw, parquet = Path(tmp) / "raw", Path(tmp) / "parquet"
        simulate(SimulateConfig(start=datetime(2026, 11, 2, 10, tzinfo=UTC), hours=3, auctions_per_hour=50_000), raw)
        summary = ingest(raw, parquet, IngestConfig())
    rate = summary.auctions / summary.seconds
    detail = f"{summary.auctions:,} auctions -> {summary.rows:,} rows, {summary.seconds:.1f} s"
    return [
        Result(
            "ingest: auctions/s (1 core, decode + validate + features + parquet)",
            rate,
            "auctions/s",
            detail,
            ">= 50,000",
        )
    ]
