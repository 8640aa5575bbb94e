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
from bidflow.serving.predictor import TOLERANCE, OnnxPredictor, probe_rows


def test_onnx_scores_equal_xgboost_on_real_requests(trained: TrainedModel, bid_logs: list[dict[str, Any]]) -> None:
    assembler = BidFilterAssembler(trained.spec, trained.encoder, FEATURE_NAMES, "partner")
    predictor = OnnxPredictor(trained.booster, len(trained.spec.names))
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
    predictor = OnnxPredictor(trained.booster, len(trained.spec.names))
    x = probe_rows(len(trained.spec.names), range(len(trained.spec.categorical)))
    assert predictor.verify(trained.booster, x) <= TOLERANCE


def test_verify_refuses_a_model_that_scores_differently(trained: TrainedModel) -> None:
    predictor = OnnxPredictor(trained.booster, len(trained.spec.names))
    fewer_trees = trained.booster[: max(1, trained.best_iteration // 2)]
    x = probe_rows(len(trained.spec.names), range(len(trained.spec.categorical)))
    with pytest.raises(ModelError, match="scores differently"):
        predictor.verify(fewer_trees, x)
