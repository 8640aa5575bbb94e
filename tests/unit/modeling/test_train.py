"""Training is a pure function: a booster cut to its best iteration, metrics, and a bundle that reloads exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bidflow.errors import ModelError
from bidflow.kinds import bid_filter
from bidflow.modeling import train
from bidflow.modeling.train import TrainedModel
from tests.unit.modeling.conftest import QUICK


def test_model_has_validated_trees_only_and_sane_metrics(trained: TrainedModel) -> None:
    assert trained.booster.num_boosted_rounds() == trained.best_iteration
    assert trained.metrics["valid_auc"] > 0.7
    assert trained.metrics["train_rows_per_s"] > 0
    assert trained.booster.feature_names == list(trained.spec.names)
    assert trained.params["tree_method"] == "hist"


def test_policy_has_a_threshold_per_partner(trained: TrainedModel, split_rows: tuple[pd.DataFrame, ...]) -> None:
    assert trained.policy is not None
    assert set(trained.policy.thresholds) == set(split_rows[0]["partner"].unique())
    assert trained.policy.target_recall == 0.95 and trained.policy.exploration_share == 0.05


def test_saved_model_reloads_and_predicts_identically(
    trained: TrainedModel, split_rows: tuple[pd.DataFrame, ...], tmp_path: Path
) -> None:
    holdout = split_rows[1]
    loaded = train.load_model(train.save_model(trained, tmp_path / "model"))
    assert np.array_equal(loaded.predict(holdout), trained.predict(holdout))
    assert loaded.spec == trained.spec and loaded.encoder == trained.encoder and loaded.policy == trained.policy


def test_a_bundle_from_another_xgboost_minor_is_refused(trained: TrainedModel) -> None:
    data = trained.to_json() | {"xgboost_version": "1.7.6"}
    with pytest.raises(ModelError, match="another xgboost version"):
        train.model_from_json(data, trained.booster)


def test_unseen_categories_score_without_error(trained: TrainedModel, split_rows: tuple[pd.DataFrame, ...]) -> None:
    rows = split_rows[1].head(50).assign(publisher_id="pub-never-seen", country="ATA", partner="brand-new")
    scores = trained.predict(rows)
    assert np.isfinite(scores).all()
    assert (trained.matrix(rows)[:, trained.spec.names.index("country")] == 0).all()


def test_single_class_training_data_is_a_model_error(split_rows: tuple[pd.DataFrame, ...]) -> None:
    rows = split_rows[0].assign(bid=0)
    with pytest.raises(ModelError, match="both labels"):
        train.fit(rows, bid_filter.spec(), QUICK)


def test_training_is_deterministic(split_rows: tuple[pd.DataFrame, ...]) -> None:
    rows = split_rows[0].iloc[::3]
    a = train.fit(rows, bid_filter.spec(), QUICK)
    b = train.fit(rows, bid_filter.spec(), QUICK)
    assert np.array_equal(a.predict(split_rows[1]), b.predict(split_rows[1]))
