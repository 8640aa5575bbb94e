"""The fraud model: P(a click is genuine and converts) from its ids and its streaming velocity features.

Rows are TalkingData clicks (label ``is_attributed``: the click led to an install; invalid clicks
practically never do). Features: the click's raw ids and hour, and the velocity windows of its IP,
IP x app and IP x device x os computed offline by the same state machine the stream processor runs
(``bidflow.features.velocity``), at the click's own time.

Time split: the hold-out is the last day (never looked at until the end); the rest is split in time
again, the last ``validation_share`` for choosing parameters and the number of trees (early stopping),
and every model is then refitted on all the rows before the hold-out with what was chosen. Two
baselines go through the same splits on the same rows: a plain XGBoost on the raw ids and hour, and a
logistic regression on the one-hot raw ids and hour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import product
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from bidflow.errors import ModelError
from bidflow.features.talkingdata import LABEL
from bidflow.features.velocity import FEATURES, VIEWS, offline_tables, point_in_time
from bidflow.kinds.fraud import RAW

if TYPE_CHECKING:
    import pandas as pd
    import xgboost as xgb

    from bidflow.config import FraudConfig
    from bidflow.modeling.train import TrainedModel

VELOCITY: Final = tuple(f"{view}__{feature}" for view in VIEWS for feature in FEATURES[view])
# The small grid both XGBoost models are tuned over on the validation split.
GRID: Final = {"max_depth": (3, 5, 7), "min_child_weight": (1.0, 5.0)}
LOGISTIC_C: Final = (0.01, 0.1, 1.0, 10.0)
MAX_ROUNDS: Final = 2_000
EARLY_STOP: Final = 100


def feature_frame(clicks: pd.DataFrame) -> pd.DataFrame:
    """The clicks with ``hour`` and every velocity column (point in time, over all the clicks given)."""
    out = point_in_time(clicks, offline_tables(clicks))
    out["hour"] = (out["ts"] // 3600) % 24
    return out


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    validation: pd.DataFrame
    holdout: pd.DataFrame

    @property
    def fit(self) -> pd.DataFrame:
        """Everything before the hold-out: what the final models are refitted on."""
        import pandas as pd

        return pd.concat([self.train, self.validation], ignore_index=True)


def split(frame: pd.DataFrame, holdout_day: str, validation_share: float) -> Split:
    """Hold-out = ``holdout_day``; the clicks before it split in time, the last ``validation_share`` to validate.

    Raises:
        ModelError: no hold-out rows, or a part without a single positive.
    """
    holdout = frame[frame["day"] == holdout_day]
    before = frame[frame["ts"] < (holdout["ts"].min() if len(holdout) else -1)].sort_values("ts", kind="stable")
    cut = int(len(before) * (1 - validation_share))
    parts = Split(before.iloc[:cut], before.iloc[cut:], holdout)
    for name in ("train", "validation", "holdout"):
        part = getattr(parts, name)
        if len(part) == 0 or part[LABEL].sum() == 0:
            raise ModelError(f"the {name} split has no positive click", got=f"{len(part):,} rows",
                             hint="check fraud.holdout_day and fraud.validation_share")  # fmt: skip
    return parts


@dataclass
class Scores:
    """One model's hold-out metrics."""

    auc: float
    auc_low: float
    auc_high: float
    pr_auc: float
    log_loss: float
    chosen: dict[str, Any] = field(default_factory=dict)  # what validation chose


def scores(y: np.ndarray, p: np.ndarray, resamples: int, seed: int) -> Scores:
    """AUC with a percentile bootstrap 95 % interval, PR-AUC (average precision) and log loss."""
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(resamples):
        index = rng.integers(0, len(y), len(y))
        if 0 < y[index].sum() < len(index):
            aucs.append(roc_auc_score(y[index], p[index]))
    low, high = np.percentile(aucs, [2.5, 97.5])
    clipped = np.clip(p, 1e-15, 1 - 1e-15)
    return Scores(float(roc_auc_score(y, p)), float(low), float(high), float(average_precision_score(y, p)),
                  float(log_loss(y, clipped, labels=[0, 1])))  # fmt: skip


def _matrix(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    return frame[list(columns)].to_numpy(dtype=np.float32)


def fit_xgboost(parts: Split, columns: Sequence[str], seed: int) -> tuple[xgb.Booster, dict[str, Any]]:
    """Tune depth and leaf weight on validation (log loss, early stopping), refit before the hold-out."""
    import xgboost as xgb

    y_train, y_valid = parts.train[LABEL].to_numpy(), parts.validation[LABEL].to_numpy()
    train = xgb.DMatrix(_matrix(parts.train, columns), label=y_train, feature_names=list(columns))
    valid = xgb.DMatrix(_matrix(parts.validation, columns), label=y_valid, feature_names=list(columns))
    base = {"objective": "binary:logistic", "eval_metric": "logloss", "eta": 0.05, "subsample": 0.8,
            "colsample_bytree": 0.8, "tree_method": "hist", "seed": seed, "nthread": 1}  # fmt: skip
    best: tuple[float, dict[str, Any], int] | None = None
    for depth, weight in product(GRID["max_depth"], GRID["min_child_weight"]):
        params = base | {"max_depth": depth, "min_child_weight": weight}
        booster = xgb.train(params, train, MAX_ROUNDS, evals=[(valid, "valid")], early_stopping_rounds=EARLY_STOP,
                            verbose_eval=False)  # fmt: skip
        loss = float(booster.best_score)
        if best is None or loss < best[0]:
            best = (loss, params, booster.best_iteration + 1)
    assert best is not None
    _, params, rounds = best
    fit = parts.fit
    full = xgb.DMatrix(_matrix(fit, columns), label=fit[LABEL].to_numpy(), feature_names=list(columns))
    chosen = {"max_depth": params["max_depth"], "min_child_weight": params["min_child_weight"], "trees": rounds}
    return xgb.train(params, full, rounds), chosen


def predict_xgboost(booster: xgb.Booster, frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    import xgboost as xgb

    return np.asarray(booster.predict(xgb.DMatrix(_matrix(frame, columns), feature_names=list(columns))))


def fit_logistic(parts: Split, columns: Sequence[str], seed: int) -> tuple[Any, dict[str, Any]]:
    """One-hot ids (ids seen fewer than 5 times pooled), C tuned on validation log loss, refit before the hold-out."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    def model(c: float) -> Any:
        encoder = OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=5)
        return make_pipeline(encoder, LogisticRegression(C=c, max_iter=5_000, random_state=seed))

    x_train, y_train = parts.train[list(columns)], parts.train[LABEL]
    losses = {c: log_loss(parts.validation[LABEL], model(c).fit(x_train, y_train).predict_proba(
        parts.validation[list(columns)])[:, 1], labels=[0, 1]) for c in LOGISTIC_C}  # fmt: skip
    c = min(losses, key=lambda k: losses[k])
    fit = parts.fit
    return model(c).fit(fit[list(columns)], fit[LABEL]), {"C": c}


@dataclass
class Economics:
    """The fraud model's threshold, chosen on validation to keep ``keep`` of the converting clicks."""

    keep: float
    threshold: float
    flagged_share: float  # hold-out clicks scored invalid
    conversions_lost: float  # hold-out converting clicks among them


def economics(y_valid: np.ndarray, p_valid: np.ndarray, y_hold: np.ndarray, p_hold: np.ndarray,
              keep: float = 0.95) -> Economics:  # fmt: skip
    """Invalid share against conversions lost: the threshold keeps ``keep`` of validation's conversions."""
    threshold = float(np.quantile(p_valid[y_valid == 1], 1 - keep, method="lower"))
    flagged = p_hold < threshold
    return Economics(keep, threshold, float(flagged.mean()), float(flagged[y_hold == 1].mean()))


@dataclass
class FraudReport:
    """The fraud model against its two baselines on the same hold-out rows."""

    rows: dict[str, int]
    positives: dict[str, int]
    models: dict[str, Scores]
    economics: Economics

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def trained_model(booster: xgb.Booster, chosen: dict[str, Any]) -> TrainedModel:
    """The fraud model as the model servers load it (``bidflow.modeling.train.save_model`` writes it)."""
    import xgboost as xgb

    from bidflow.kinds.fraud import KIND
    from bidflow.modeling.dataset import CategoryEncoder, FeatureSpec
    from bidflow.modeling.train import TrainedModel

    spec = FeatureSpec(names=(*RAW, *VELOCITY), categorical=(), label=LABEL, feature_service=KIND.feature_service)
    return TrainedModel(booster=booster, spec=spec, encoder=CategoryEncoder({}), metrics={}, params=chosen,
                        best_iteration=int(chosen["trees"]), xgboost_version=xgb.__version__)  # fmt: skip


def compare(clicks: pd.DataFrame, settings: FraudConfig) -> tuple[FraudReport, TrainedModel]:
    """Train the fraud model and both baselines on the same splits; score all three on the hold-out."""
    frame = feature_frame(clicks)
    parts = split(frame, settings.holdout_day, settings.validation_share)
    y_hold = parts.holdout[LABEL].to_numpy()
    columns = (*RAW, *VELOCITY)
    model, chosen = fit_xgboost(parts, columns, settings.seed)
    raw, raw_chosen = fit_xgboost(parts, RAW, settings.seed)
    logistic, logistic_chosen = fit_logistic(parts, RAW, settings.seed)
    predictions = {
        "velocity_xgboost": (predict_xgboost(model, parts.holdout, columns), chosen),
        "raw_ids_xgboost": (predict_xgboost(raw, parts.holdout, RAW), raw_chosen),
        "raw_ids_logistic": (logistic.predict_proba(parts.holdout[list(RAW)])[:, 1], logistic_chosen),
    }
    models = {}
    for name, (p, picked) in predictions.items():
        models[name] = scores(y_hold, p, settings.bootstrap, settings.seed)
        models[name].chosen = picked
    # The threshold is chosen on validation scores of a model fitted without them (the tuning fit).
    tuned, _ = fit_xgboost(Split(parts.train, parts.validation, parts.validation), columns, settings.seed)
    p_valid = predict_xgboost(tuned, parts.validation, columns)
    money = economics(parts.validation[LABEL].to_numpy(), p_valid, y_hold, predictions["velocity_xgboost"][0])
    report = FraudReport(
        rows={name: len(getattr(parts, name)) for name in ("train", "validation", "holdout")},
        positives={name: int(getattr(parts, name)[LABEL].sum()) for name in ("train", "validation", "holdout")},
        models=models,
        economics=money,
    )
    return report, trained_model(model, chosen)
