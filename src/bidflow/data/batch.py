"""Reading ingested parquet batches, optionally a time window of them."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from bidflow.data.ingest import parquet_schema
from bidflow.errors import InputError


def read_batch(path: Path, since: datetime | None = None, until: datetime | None = None) -> pa.Table:
    """Rows of the ingested batch at ``path`` with ``since <= ts < until`` (UTC)."""
    if not path.exists():
        raise InputError("parquet batch not found", where=path, hint="run `bidflow ingest` first")
    # Files starting with '_' or '.' (quarantine, summary, staging) are not data.
    dataset = ds.dataset(path, format="parquet", schema=parquet_schema(), partitioning=None)
    condition = None
    if since is not None:
        condition = ds.field("ts") >= pa.scalar(since, pa.timestamp("ms", tz="UTC"))
    if until is not None:
        upper = ds.field("ts") < pa.scalar(until, pa.timestamp("ms", tz="UTC"))
        condition = upper if condition is None else condition & upper
    table = dataset.to_table(filter=condition)
    if table.num_rows == 0:
        window = f" between {since} and {until}" if since or until else ""
        raise InputError(f"parquet batch has no rows{window}", where=path)
    return table.sort_by("ts")


def read_frame(path: Path, since: datetime | None = None, until: datetime | None = None) -> pd.DataFrame:
    frame: pd.DataFrame = read_batch(path, since, until).to_pandas()
    return frame
