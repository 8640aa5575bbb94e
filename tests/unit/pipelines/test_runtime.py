"""What component bodies share: the config parameter read like ``--config``, results handed to KFP artifacts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kfp import dsl

from bidflow.components import _runtime
from bidflow.config import Config
from bidflow.errors import ConfigError, FeatureStoreError
from bidflow.features.build import BuildSummary


def test_config_parameter_is_read_like_a_config_file(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _runtime.config("").train.n_estimators == 400  # empty: the defaults
    monkeypatch.setenv("BIDFLOW__REGISTRY__TRACKING_URI", "postgresql+psycopg://u@db/mlflow")  # a Secret, as env
    settings = _runtime.config("train:\n  n_estimators: 7\nregistry:\n  tracking_uri: sqlite:///x.db\n")
    assert settings.train.n_estimators == 7
    assert settings.registry.tracking_uri == "postgresql+psycopg://u@db/mlflow"  # env wins, as for the CLI


def test_a_bad_config_parameter_is_named_as_such() -> None:
    with pytest.raises(ConfigError) as error:
        _runtime.config("train:\n  n_estimatorz: 7\n")
    assert error.value.where == "pipeline parameter 'config'" and "n_estimatorz" in str(error.value)


def test_kind_and_feature_source_are_checked() -> None:
    assert _runtime.model_kind("ctr", Config()) == "ctr"
    assert _runtime.feature_source("") is None and _runtime.feature_source("request") == "request"
    with pytest.raises(ConfigError, match="unknown model kind"):
        _runtime.model_kind("bidfilter", Config())
    with pytest.raises(ConfigError, match="unknown feature source"):
        _runtime.feature_source("redis")


def test_metrics_keep_finite_numbers_only(tmp_path: Path) -> None:
    metrics = dsl.Metrics(uri=str(tmp_path / "metrics"))
    values: dict[str, Any] = {"auc": 0.8, "nan": float("nan"), "inf": float("inf"), "passed": True, "name": "x"}
    _runtime.log_metrics(metrics, values, prefix="c_")
    assert metrics.metadata == {"c_auc": 0.8, "c_passed": 1.0}


def test_roc_curve_is_thinned_for_the_ui(tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    y = rng.random(20_000) < 0.2
    roc = dsl.ClassificationMetrics(uri=str(tmp_path / "roc"))
    _runtime.log_roc(roc, y, np.clip(0.3 * y + 0.7 * rng.random(20_000), 0, 1))
    points = roc.metadata["confidenceMetrics"]
    assert 2 <= len(points) <= 101 and max(p["confidenceThreshold"] for p in points) <= 1.0


def test_feature_manifest_is_file_and_metadata(tmp_path: Path) -> None:
    artifact = dsl.Dataset(uri=str(tmp_path / "features"))
    first, last = datetime(2026, 11, 2, 15, tzinfo=UTC), datetime(2026, 11, 2, 18, tzinfo=UTC)
    _runtime.write_manifest(BuildSummary(out="s3://b/f", rows={"b": 2, "a": 1}, first=first, last=last), artifact)
    assert json.loads(Path(artifact.path).read_text())["views"] == ["a", "b"]
    assert artifact.metadata["first"] == first.isoformat() and artifact.metadata["location"] == "s3://b/f"
    with pytest.raises(FeatureStoreError, match="no rows"):
        _runtime.write_manifest(BuildSummary(out="x"), artifact)
