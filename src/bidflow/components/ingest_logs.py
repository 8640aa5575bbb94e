"""``ingest_logs``: auction logs to hourly parquet (``bidflow.data.ingest.ingest``)."""

from kfp.dsl import Dataset, Input, Metrics, Output

from bidflow.components._base import component


@component
def ingest_logs(raw_logs: Input[Dataset], config: str, batch: Output[Dataset], metrics: Output[Metrics]) -> None:
    """Turn OpenRTB auction logs into hourly parquet partitions, one row per auction x partner called.

    Malformed lines are quarantined next to the output; above ``ingest.max_bad_share`` the task
    fails and publishes nothing.

    Args:
        raw_logs: a folder of gzip JSON-lines auction logs (or one file).
        config: the text of a bidflow.yaml; empty for the defaults.

    Returns:
        batch: the ingested parquet folder (``hour=YYYY-MM-DDTHH/`` partitions).
        metrics: lines, auctions, rows, bids and the malformed share.
    """
    from pathlib import Path

    from bidflow.components import _runtime
    from bidflow.data.ingest import ingest

    settings = _runtime.config(config)
    summary = ingest(Path(raw_logs.path), Path(batch.path), settings.ingest, spark=settings.spark)
    _runtime.log_metrics(metrics, summary.to_json())
    batch.metadata.update({"auctions": summary.auctions, "rows": summary.rows, "partitions": len(summary.partitions)})
