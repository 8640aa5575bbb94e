"""Train/serve consistency on generated traffic, with the SQLite online store."""

from __future__ import annotations

from pathlib import Path

from bidflow.features import store as feature_store
from tests.unit.features.support import check_train_serve_consistency, features_config


def test_served_vectors_equal_training_rows_sqlite(ingested: Path, tmp_path: Path) -> None:
    cfg = features_config(tmp_path, project="bidflow_consistency")
    counts = check_train_serve_consistency(feature_store.open_store(cfg), cfg, ingested)
    assert counts["rows"] > 100
    assert counts["live"] > 0 and counts["defaults"] > 0  # both regimes were compared
