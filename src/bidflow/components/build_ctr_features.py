"""``build_ctr_features``: the CTR model's aggregated features (``bidflow.features.build.build_ctr_features``)."""

from kfp.dsl import Dataset, Input, Output

from bidflow.components._base import component


@component
def build_ctr_features(impressions: Input[Dataset], config: str, features: Output[Dataset]) -> None:
    """Historical impressions, clicks and smoothed CTR per domain, slot, region and exchange.

    Written to the feature store's offline location like ``build_features``; the rows of the
    iPinYou sample are placed on ``features.ctr_day``.

    Args:
        impressions: the iPinYou campaign-2997 sample (CSV, gzip).
        config: the text of a bidflow.yaml; empty for the defaults.

    Returns:
        features: manifest of the written tables, its metadata holding ``first``/``last``/``views``.
    """
    from pathlib import Path

    from bidflow.components import _runtime
    from bidflow.features.build import build_ctr_features as build
    from bidflow.features.build import write_tables
    from bidflow.features.ipinyou import read_ipinyou
    from bidflow.features.store import offline_base

    settings = _runtime.config(config)
    tables = build(read_ipinyou(Path(impressions.path)), settings.features.ctr_day)
    _runtime.write_manifest(write_tables(tables, offline_base(settings.features)), features)
