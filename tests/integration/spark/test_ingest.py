"""Ingestion on Spark writes what the pandas path writes: the same partitions, rows, quarantine and verdict."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from bidflow.config import IngestConfig
from bidflow.data.ingest import QUARANTINE_DIR, ingest
from bidflow.errors import IngestError
from tests.integration.spark.conftest import SPARK

pytestmark = [pytest.mark.integration, pytest.mark.spark]


def partitions(out: Path) -> dict[str, Any]:
    """Every parquet file under ``out`` (by its relative path) as a table sorted by auction and partner."""
    found = {}
    for path in sorted(out.rglob("*.parquet")):
        table = pq.read_table(path)
        found[path.relative_to(out).as_posix()] = table.sort_by([("auction_id", "ascending"), ("partner", "ascending")])
    return found


def test_both_engines_write_the_same_partitions_row_for_row(spark: Any, generated_logs: Path, tmp_path: Path) -> None:
    pandas_out, spark_out = tmp_path / "pandas", tmp_path / "spark"
    by_pandas = ingest(generated_logs, pandas_out, IngestConfig(workers=1))
    by_spark = ingest(generated_logs, spark_out, IngestConfig(engine="spark"), spark=SPARK)
    assert by_spark.rows == by_pandas.rows > 10_000 and by_spark.auctions == by_pandas.auctions
    assert by_spark.files == by_pandas.files == 2 and by_spark.bad_lines == by_pandas.bad_lines == 0
    mine, theirs = partitions(spark_out), partitions(pandas_out)
    assert list(mine) == list(theirs) and mine
    for name, table in mine.items():
        assert table.schema == theirs[name].schema and table.equals(theirs[name]), name


def test_bad_lines_are_quarantined_alike_and_the_limit_holds(spark: Any, generated_logs: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(generated_logs, raw)
    first = sorted(raw.rglob("*.jsonl.gz"))[0]
    with gzip.open(first, "rt", encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    lines[3] = "{not json"
    lines[7] = lines[7].replace('"id"', '"idx"', 1)
    with gzip.open(first, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    by_pandas = ingest(raw, tmp_path / "pandas", IngestConfig(workers=1))
    by_spark = ingest(raw, tmp_path / "spark", IngestConfig(engine="spark"), spark=SPARK)
    assert by_spark.bad_lines == by_pandas.bad_lines == 2 and by_spark.reasons == by_pandas.reasons
    quarantined = [sorted((out / QUARANTINE_DIR).iterdir()) for out in (tmp_path / "pandas", tmp_path / "spark")]
    assert [p.read_text() for p in quarantined[0]] == [p.read_text() for p in quarantined[1]]
    with pytest.raises(IngestError, match="malformed") as refused:
        ingest(raw, tmp_path / "strict", IngestConfig(engine="spark", max_bad_share=0.0), spark=SPARK)
    assert "nothing was published" in str(refused.value.hint)
    assert not list((tmp_path / "strict").rglob("*.parquet"))


def test_the_job_command_ingests_on_spark(spark: Any, generated_logs: Path, tmp_path: Path) -> None:
    import yaml

    from bidflow.engines import spark_jobs

    config = tmp_path / "bidflow.yaml"
    config.write_text(yaml.safe_dump({"ingest": {"engine": "pandas"}, "spark": SPARK.model_dump()}), encoding="utf-8")
    # The job runs on Spark whatever ingest.engine says: choosing the command is choosing the engine.
    assert spark_jobs.main(["ingest", "--config", str(config), "--raw", str(generated_logs), "--out",
                            str(tmp_path / "job")]) == 0  # fmt: skip
    ingest(generated_logs, tmp_path / "pandas", IngestConfig(workers=1))
    mine, theirs = partitions(tmp_path / "job"), partitions(tmp_path / "pandas")
    assert list(mine) == list(theirs) and all(table.equals(theirs[name]) for name, table in mine.items())
    assert spark_jobs.main(["ingest", "--config", str(config), "--raw", str(tmp_path / "nothing")]) == 2
