"""``build_features``: the bid filter's aggregated features (``bidflow.features.build.build_bid_features``)."""

from kfp.dsl import Dataset, Input, Output

from bidflow.components._base import component


@component
def build_features(batch: Input[Dataset], config: str, features: Output[Dataset]) -> None:
    """Trailing 1 h / 24 h partner, slice and publisher statistics, written as the Feast offline sources.

    The tables go to the feature store's offline location (``features.offline_uri`` or
    ``features.offline``): Feast's sources point there, for training sets and for serving alike. This
    task's own artifact is the manifest of what it wrote (tables, rows, event-time span), which
    ``materialize_features`` reads.

    Args:
        batch: the ingested (and validated) parquet folder.
        config: the text of a bidflow.yaml; empty for the defaults.

    Returns:
        features: manifest of the written tables, its metadata holding ``first``/``last``/``views``.
    """
    from pathlib import Path

    from bidflow.components import _runtime
    from bidflow.data.batch import read_batch
    from bidflow.features.build import build_bid_features, write_tables
    from bidflow.features.store import offline_base

    settings = _runtime.config(config)
    if settings.features.engine == "spark":
        from bidflow.engines import spark_jobs

        summary = spark_jobs.build_features(settings, Path(batch.path))
    else:
        summary = write_tables(build_bid_features(read_batch(Path(batch.path))), offline_base(settings.features))
    _runtime.write_manifest(summary, features)
