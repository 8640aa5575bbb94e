"""The compiled predictor: an XGBoost booster converted to ONNX and scored with onnxruntime.

The registered artifact stays the XGBoost model (``model.ubj`` + bundle); the conversion happens
when the model server loads it (about 2 s for 300 trees of depth 8), so there is nothing extra to
register, version or keep in step.

Why onnxruntime and not treelite/tl2cgen (measured on one 300-tree, depth-8 binary:logistic
booster with 63 features, 5 % missing values, one thread, this shared 2-core machine):

============================  ===========  ===========  ===============  ===================
route                         1 row (CPU)  30 rows      load-time cost   max |diff| vs xgboost
============================  ===========  ===========  ===============  ===================
xgboost ``inplace_predict``   390 µs       840 µs       none             --
onnxruntime (this module)     16 µs        470 µs       1.8 s convert    1.8e-7
tl2cgen (gcc -O3)             30-44 µs     800-870 µs   50 s compile     3.0e-7
============================  ===========  ===========  ===============  ===================

onnxruntime is faster at both batch sizes, needs no C toolchain in the serving image, and
converts in seconds instead of a minute of gcc per model version.

``OnnxPredictor.verify`` compares the converted model with the booster on probe rows at load time:
a converter that changed behaviour (an xgboost or onnxmltools upgrade) stops the model from
loading instead of serving different scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from bidflow.errors import ModelError

TOLERANCE: Final = 1e-5  # largest |converted - xgboost| score allowed
_INPUT: Final = "x"
_OPSET: Final = 15

FloatMatrix = npt.NDArray[np.float32]
Scores = npt.NDArray[np.float64]


class OnnxPredictor:
    """Scores float32 matrices with the ONNX form of an XGBoost ``binary:logistic`` booster.

    Args:
        booster: the ``xgboost.Booster`` (left untouched; a copy is converted).
        n_features: columns of the matrices it will score.
        threads: onnxruntime intra-op threads; 1 keeps one request on one core (the server
            handles concurrency with processes, not threads).
    """

    def __init__(self, booster: Any, n_features: int, *, threads: int = 1) -> None:
        import onnxruntime as ort  # type: ignore[import-untyped]  # no stubs; pyproject is not ours to change

        self.n_features = n_features
        model = _to_onnx(booster, n_features)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # warnings about unused initialisers are noise here
        self._session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        # The classifier's outputs are (label, probabilities); only P(class 1) is needed.
        self._outputs = [self._session.get_outputs()[1].name]

    def predict(self, x: FloatMatrix) -> Scores:
        """P(label = 1) for each row of ``x`` (float32, C-contiguous, ``n_features`` columns)."""
        probabilities = self._session.run(self._outputs, {_INPUT: x})[0]
        scores: Scores = probabilities[:, 1].astype(np.float64)
        return scores

    def verify(self, booster: Any, x: FloatMatrix, tolerance: float = TOLERANCE) -> float:
        """Largest |this - xgboost| score on ``x``; raises when it exceeds ``tolerance``.

        Raises:
            ModelError: the converted model scores differently from the booster.
        """
        expected = np.asarray(booster.inplace_predict(x, missing=np.nan), dtype=np.float64)
        got = self.predict(x)
        diff = float(np.max(np.abs(got - expected))) if len(x) else 0.0
        if not diff <= tolerance:  # also catches NaN
            raise ModelError(
                "the ONNX form of the model scores differently from xgboost",
                expected=f"|difference| <= {tolerance}",
                got=f"{diff:.3g} on {len(x)} probe rows",
                hint="check the xgboost / onnxmltools / onnxruntime versions in uv.lock",
            )
        return diff


def probe_rows(n_features: int, categorical: Sequence[int], rows: int = 512, seed: int = 0) -> FloatMatrix:
    """Rows that reach many leaves: small integer codes, wide-ranging numbers, some missing values.

    Args:
        n_features: matrix width.
        categorical: positions of the columns that hold category codes (the others are numeric).
        rows: how many rows.
        seed: random seed (the probe is deterministic).
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 3.0, size=(rows, n_features)) * rng.choice([0.01, 1.0, 100.0], size=(rows, n_features))
    codes = list(categorical)
    x[:, codes] = rng.integers(0, 40, size=(rows, len(codes)))
    x[rng.random((rows, n_features)) < 0.1] = np.nan
    return np.ascontiguousarray(x, dtype=np.float32)


def _to_onnx(booster: Any, n_features: int) -> Any:
    import onnxmltools  # type: ignore[import-untyped]
    from onnxmltools.convert.common.data_types import FloatTensorType  # type: ignore[import-untyped]

    objective = _objective(booster)
    if objective != "binary:logistic":
        raise ModelError(
            "the model server scores binary:logistic boosters only", expected="binary:logistic", got=objective
        )
    # onnxmltools reads split features as f0..fN from the dump; named features would not parse.
    anonymous = booster.copy()
    anonymous.feature_names = None
    anonymous.feature_types = None
    try:
        return onnxmltools.convert_xgboost(
            anonymous, initial_types=[(_INPUT, FloatTensorType([None, n_features]))], target_opset=_OPSET
        )
    except Exception as exc:  # the converter raises bare RuntimeError/ValueError/KeyError for odd trees
        raise ModelError("the booster cannot be converted to ONNX", got=f"{type(exc).__name__}: {exc}"[:300]) from exc


def _objective(booster: Any) -> str:
    import json

    config = json.loads(booster.save_config())
    return str(config["learner"]["objective"]["name"])
