"""`bidflow train` on the Feast training set: the bid_filter FeatureService's columns reach the model.

Slow rather than service-bound (Feast's file offline store runs point-in-time joins with dask), so it
runs with the integration tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bidflow.config import Config
from bidflow.data.batch import read_batch
from bidflow.kinds import registered_name
from bidflow.modeling import registry, steps

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]


def test_train_and_evaluate_on_the_feast_training_set(bid_parquet: Path, tmp_path: Path) -> None:
    from bidflow.features import store as feature_store
    from bidflow.features.build import build_bid_features, write_tables
    from bidflow.features.spec import service_spec

    config = Config.model_validate(
        {
            "paths": {"parquet": str(bid_parquet), "reports": str(tmp_path / "reports")},
            "features": {
                "repo": str(REPO / "feature_repo"),
                "offline": str(tmp_path / "features"),
                "state": str(tmp_path / "feast"),
                "project": "bidflow_modeling_test",
            },
            "train": {"feature_source": "feast", "n_estimators": 40, "max_depth": 4, "nthread": 1},
            "registry": {
                "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                "artifact_location": str(tmp_path / "artifacts"),
            },
        }
    )
    (tmp_path / "feast").mkdir()
    write_tables(build_bid_features(read_batch(bid_parquet)), config.features.offline)
    store = feature_store.open_store(config.features)
    feature_store.apply(store, config.features)
    columns = service_spec(store, "bid_filter").columns

    outcome = steps.train_step(config, "bid_filter")
    spec = outcome.model.spec
    assert spec.feature_service == "bid_filter"
    assert set(columns) <= set(spec.names) and set(columns).isdisjoint(spec.categorical)
    assert outcome.model.booster.feature_names == list(spec.names)

    gate, report = steps.evaluate_step(config, "bid_filter")
    assert gate.passed and report.candidate.metrics["auc"] > 0.7
    _, loaded = registry.load(config.registry, registered_name(config, "bid_filter"), registry.CANDIDATE)
    assert loaded.spec == spec
