"""``build_fraud_features``: the velocity views' offline tables (``bidflow.features.velocity.offline_tables``)."""

from kfp.dsl import Dataset, Input, Output

from bidflow.components._base import component


@component
def build_fraud_features(clicks: Input[Dataset], config: str, features: Output[Dataset]) -> None:
    """Clicks per IP, IP x app and IP x device x os over 10 minutes and 24 hours, as of every click.

    Computed by the same state machine as the stream processor, and written to the feature store's
    offline location like ``build_features``: the batch sources of the velocity views' push sources,
    which training sets join point in time and materialization backfills the online store from.

    Args:
        clicks: the TalkingData click file (CSV, gzip), checked by ``validate_clicks``.
        config: the text of a bidflow.yaml; empty for the defaults.

    Returns:
        features: manifest of the written tables, its metadata holding ``first``/``last``/``views``.
    """
    from pathlib import Path

    from bidflow.components import _runtime
    from bidflow.features.build import write_tables
    from bidflow.features.store import offline_base
    from bidflow.features.talkingdata import read_clicks
    from bidflow.features.velocity import offline_tables

    settings = _runtime.config(config)
    tables = offline_tables(read_clicks(Path(clicks.path)))
    _runtime.write_manifest(write_tables(tables, offline_base(settings.features)), features)
