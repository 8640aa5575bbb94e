"""Ingestion on Spark: each auction-log file is one Spark task running the pandas path's own per-file code.

An hourly log file is the natural unit of ingestion (``bidflow.data.ingest``: decode, the OpenRTB rules,
the shared request-feature transform, the oracle beside it, hourly parquet), and files are independent,
so Spark distributes the files and each task calls ``bidflow.data.ingest.ingest_file`` on one: the rows
are the pandas path's by construction (a test holds the two outputs equal row for row), and the
quarantine, the bad-line limit and the staged publish stay in one place. What Spark adds is the
scheduling: as many files at once as the cluster has task slots, a failed task retried.

The input and the output folders must be visible to every executor under the same path: in local mode
they are; on a cluster, a volume mounted into the driver and the executors (the SparkApplication's).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bidflow.errors import EngineError

if TYPE_CHECKING:
    from bidflow.config import SparkConfig
    from bidflow.data.ingest import IngestJob, IngestSummary


def ingest_files(jobs: Sequence[IngestJob], cfg: SparkConfig) -> list[IngestSummary]:
    """Ingest each file of ``jobs`` in a Spark task of its own; the files' summaries, in the jobs' order.

    Raises:
        EngineError: the Spark job failed (a task that raised, a lost executor past its retries).
    """
    from bidflow.engines.spark import spark_session

    if not jobs:
        return []
    spark = spark_session(cfg)
    plain = [(str(path), source, str(staging)) for path, source, staging in jobs]
    try:
        return spark.sparkContext.parallelize(plain, numSlices=len(plain)).map(_ingest_one).collect()
    except Exception as exc:  # py4j wraps the task's own error; the user must see it, not a JVM trace
        raise EngineError("the Spark ingest job failed", got=f"{type(exc).__name__}: {exc}"[-600:],
                          hint="the task's error is at the end; run with ingest.engine: pandas to see it "
                          "without Spark") from exc  # fmt: skip


def _ingest_one(job: tuple[str, str, str]) -> IngestSummary:
    """One file, in a Spark Python worker."""
    from bidflow.data.ingest import ingest_file

    path, source, staging = job
    return ingest_file(Path(path), source, Path(staging))
