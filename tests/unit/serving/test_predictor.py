"""The compiled predictor scores like xgboost (within 1e-5) on real requests, and says when it does not."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bidflow.errors import ModelError
from bidflow.modeling.train import TrainedModel
from bidflow.openrtb import decode_request_obj
from bidflow.openrtb.features import FEATURE_NAMES, request_features
from bidflow.serving.assemble import BidFilterAssembler
from bidflow.serving.predictor import TOLERANCE, TreePredictor, probe_rows


def test_compiled_trees_score_like_xgboost_on_real_requests(
    trained: TrainedModel, bid_logs: list[dict[str, Any]]
) -> None:
    assembler = BidFilterAssembler(trained.spec, trained.encoder, FEATURE_NAMES, "partner")
    predictor = TreePredictor(trained.booster, len(trained.spec.names))
    matrices = []
    for record in bid_logs[::7][:600]:
        partners = [o["partner"] for o in record["outcomes"]] + ["new-partner"]  # an unseen one too
        features = request_features(decode_request_obj(record["request"]), record["ts_ms"])
        matrices.append(assembler.matrix(features, partners, None))
    x = np.concatenate(matrices)
    assert len(x) > 5_000
    expected = trained.predict_matrix(x)  # xgboost through a DMatrix, as training scores
    got = predictor.predict(x)
    assert np.max(np.abs(got - expected)) <= TOLERANCE
    # Per auction (what the server does) equals the batch.
    np.testing.assert_array_equal(predictor.predict(matrices[0]), got[: len(matrices[0])])


def test_verify_accepts_the_booster_it_was_converted_from(trained: TrainedModel) -> None:
    predictor = TreePredictor(trained.booster, len(trained.spec.names))
    x = probe_rows(len(trained.spec.names), range(len(trained.spec.categorical)))
    assert predictor.verify(trained.booster, x) <= TOLERANCE


def test_verify_refuses_a_model_that_scores_differently(trained: TrainedModel) -> None:
    predictor = TreePredictor(trained.booster, len(trained.spec.names))
    fewer_trees = trained.booster[: max(1, trained.best_iteration // 2)]
    x = probe_rows(len(trained.spec.names), range(len(trained.spec.categorical)))
    with pytest.raises(ModelError, match="score differently"):
        predictor.verify(fewer_trees, x)


def _booster(params: dict[str, Any], rounds: int, seed: int = 3) -> Any:
    """A small booster on random data with missing values (depths and leaves of every kind)."""
    import xgboost as xgb

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2_000, 6)).astype(np.float32)
    x[rng.random(x.shape) < 0.2] = np.nan
    y = (np.nan_to_num(x[:, 0]) + rng.normal(scale=0.5, size=len(x)) > 0).astype(np.float32)
    return xgb.train({"objective": "binary:logistic", "nthread": 1, **params}, xgb.DMatrix(x, label=y), rounds)


def test_trees_of_uneven_depth_score_like_xgboost() -> None:
    # depth 1 stumps beside depth 7 trees: shallow leaves are padded to the deepest tree's walk.
    deep = _booster({"max_depth": 7, "min_child_weight": 0.1}, 20)
    stumps = _booster({"max_depth": 1, "base_score": 0.3}, 20)
    for booster in (deep, stumps):
        predictor = TreePredictor(booster, 6)
        x = probe_rows(6, [], rows=3_000, seed=1)
        assert predictor.verify(booster, x) <= TOLERANCE
    assert TreePredictor(stumps, 6).depth == 1
    assert TreePredictor(deep, 6).depth == 7


def test_a_matrix_of_another_shape_or_type_is_refused(trained: TrainedModel) -> None:
    predictor = TreePredictor(trained.booster, len(trained.spec.names))
    x = probe_rows(len(trained.spec.names), [])
    with pytest.raises(ModelError, match="float32 rows of the model's width"):
        predictor.predict(x.astype(np.float64))
    with pytest.raises(ModelError, match="float32 rows of the model's width"):
        predictor.predict(x[:, :-1].copy())


def test_boosters_it_cannot_score_are_refused() -> None:
    import xgboost as xgb

    rng = np.random.default_rng(0)
    data = xgb.DMatrix(rng.normal(size=(200, 3)), label=rng.normal(size=200))
    regression = xgb.train({"objective": "reg:squarederror", "nthread": 1}, data, 2)
    with pytest.raises(ModelError, match="binary:logistic"):
        TreePredictor(regression, 3)
    linear = xgb.train({"objective": "binary:logistic", "booster": "gblinear", "nthread": 1},
                       xgb.DMatrix(rng.normal(size=(200, 3)), label=rng.integers(0, 2, 200)), 2)  # fmt: skip
    with pytest.raises(ModelError, match="tree boosters only"):
        TreePredictor(linear, 3)
    with pytest.raises(ModelError, match="column the model does not have"):
        TreePredictor(_booster({"max_depth": 3}, 5), 2)
    import pandas as pd

    frame = pd.DataFrame({"c": pd.Categorical(rng.choice(list("abcdefgh"), 500)), "x": rng.normal(size=500)})
    label = (frame["c"].isin(["a", "c", "e"]) ^ (frame["x"] > 0)).astype(int)
    data = xgb.DMatrix(frame, label=label, enable_categorical=True)
    categorical = xgb.train({"objective": "binary:logistic", "max_cat_to_onehot": 1, "nthread": 1}, data, 3)
    with pytest.raises(ModelError, match="categorical splits"):
        TreePredictor(categorical, 2)
