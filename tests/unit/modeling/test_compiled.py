"""The categorical encoding was chosen so that compiled predictors reproduce XGBoost: check it does.

The model server (a later issue) scores with treelite/tl2cgen or onnxruntime; both are locked, one
route will be kept, so each check skips only if its library is no longer installed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bidflow.modeling.train import TrainedModel

Rows = tuple[pd.DataFrame, pd.DataFrame]
TOLERANCE = 1e-5


def _matrix(trained: TrainedModel, rows: pd.DataFrame) -> np.ndarray:
    # Unseen categories and missing numbers must survive conversion too.
    rows = rows.head(3000).copy()
    rows.loc[rows.index[:100], "country"] = "never-seen"
    x = trained.matrix(rows)
    x[100:200, trained.spec.names.index("bidfloor")] = np.nan
    return x


def test_treelite_reproduces_xgboost(trained: TrainedModel, split_rows: Rows) -> None:
    treelite = pytest.importorskip("treelite")
    x = _matrix(trained, split_rows[1])
    compiled = treelite.gtil.predict(treelite.frontend.from_xgboost(trained.booster), x).reshape(-1)
    assert np.abs(compiled - trained.predict_matrix(x)).max() < TOLERANCE


def test_onnxruntime_reproduces_xgboost(trained: TrainedModel, split_rows: Rows) -> None:
    pytest.importorskip("onnxmltools")
    ort = pytest.importorskip("onnxruntime")
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    x = _matrix(trained, split_rows[1])
    booster = trained.booster.copy()
    booster.feature_names = None  # the converter wants XGBoost's positional names f0, f1, ...
    onx = convert_xgboost(booster, initial_types=[("x", FloatTensorType([None, x.shape[1]]))])
    session = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    probabilities = session.run(None, {"x": x})[1]
    compiled = np.asarray(probabilities)[:, 1] if np.ndim(probabilities) == 2 else [p[1] for p in probabilities]
    assert np.abs(np.asarray(compiled) - trained.predict_matrix(x)).max() < TOLERANCE
