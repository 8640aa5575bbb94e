"""Training: a pure function from a training frame and a feature spec to a booster and its metrics.

No MLflow here (``bidflow.modeling.registry`` logs what this returns) and no knowledge of where the
columns came from (parquet, Feast): the frame holds the spec's columns, the label and a timestamp.

XGBoost runs with ``tree_method="hist"`` and early stopping on the latest hours (a time split: a
model is always validated on traffic later than anything it learned from). The returned booster
is cut to its best iteration, so every consumer -- MLflow's pyfunc, a compiled predictor in the
model server -- scores exactly the trees that were validated, without an ``iteration_range``.

With ``refit`` (small data, where the validation hours hold a large share of the positives: the CTR
model's 200 training clicks) early stopping only chooses how many trees to grow; the model is then
retrained on training and validation rows together, with as many trees per training row as early
stopping chose. Its ``valid_*`` metrics stay those of the early-stopped model: the refitted one has
seen the validation rows, so only a later hold-out measures it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from bidflow.errors import ModelError
from bidflow.modeling.dataset import (
    CategoryEncoder,
    FeatureSpec,
    feature_matrix,
    labels,
    latest_hours,
    out_of_fold_codes,
)
from bidflow.modeling.economics import FilterPolicy, Ranking, choose_policy, estimate_from, reads_prices
from bidflow.modeling.metrics import classification_metrics

if TYPE_CHECKING:
    from bidflow.config import EvaluateSettings, TrainSettings

BOOSTER_FILE: Final = "model.ubj"
BUNDLE_FILE: Final = "bidflow_model.json"
BUNDLE_FORMAT: Final = 1

CategoryOrder = Literal["frequency", "rate"]


@dataclass(frozen=True)
class TrainedModel:
    """A booster with everything needed to score raw rows the way it was trained.

    Attributes:
        booster: the ``xgboost.Booster``, cut to its best iteration.
        spec: which columns it reads, in which order; which are categorical; its label.
        encoder: the category vocabularies (see ``bidflow.modeling.dataset``).
        metrics: training and validation metrics (``train_auc``, ``valid_logloss``, ...).
        params: the XGBoost parameters it was trained with.
        best_iteration: boosting rounds kept (best validation round + 1 = number of trees).
        policy: the bid-filter thresholds and exploration share (bid filter only), chosen on the
            validation window.
        xgboost_version: the version that trained it; serving must load it with the same.
    """

    booster: Any
    spec: FeatureSpec
    encoder: CategoryEncoder
    metrics: dict[str, float]
    params: dict[str, Any]
    best_iteration: int
    policy: FilterPolicy | None = None
    xgboost_version: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def matrix(self, frame: pd.DataFrame) -> npt.NDArray[np.float32]:
        """The encoded float32 matrix of ``frame`` (what the booster and a compiled predictor read)."""
        return feature_matrix(frame, self.spec, self.encoder)

    def predict_matrix(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Probabilities for an already encoded matrix."""
        import xgboost as xgb

        dmatrix = xgb.DMatrix(x, feature_names=list(self.spec.names), missing=np.nan)
        scores: npt.NDArray[np.float64] = self.booster.predict(dmatrix).astype(np.float64)
        return scores

    def predict(self, frame: pd.DataFrame) -> npt.NDArray[np.float64]:
        """Probability of the label for each row of ``frame``."""
        return self.predict_matrix(self.matrix(frame))

    def to_json(self) -> dict[str, Any]:
        """Everything but the booster, as JSON (saved beside the booster, logged with the model)."""
        return {
            "format": BUNDLE_FORMAT,
            "spec": self.spec.to_json(),
            "encoding": self.encoder.to_json(),
            "metrics": self.metrics,
            "params": self.params,
            "best_iteration": self.best_iteration,
            "policy": self.policy.to_json() if self.policy is not None else None,
            "xgboost_version": self.xgboost_version,
            "info": self.info,
        }


def xgb_params(cfg: TrainSettings) -> dict[str, Any]:
    """XGBoost parameters from the typed training config."""
    return {
        "objective": "binary:logistic",
        # Early stopping watches the last metric: log loss, a proper scoring rule, because the filter's
        # thresholds and the calibration checks need probabilities, not just a ranking.
        "eval_metric": ["auc", "logloss"],
        "tree_method": "hist",
        "max_depth": cfg.max_depth,
        "eta": cfg.learning_rate,
        "min_child_weight": cfg.min_child_weight,
        "subsample": cfg.subsample,
        "colsample_bytree": cfg.colsample_bytree,
        "lambda": cfg.reg_lambda,
        "max_bin": cfg.max_bin,
        "nthread": cfg.nthread,
        "seed": cfg.seed,
    }


def train_model(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    spec: FeatureSpec,
    cfg: TrainSettings,
    *,
    refit: bool = False,
    category_order: CategoryOrder = "frequency",
) -> TrainedModel:
    """Fit a booster on ``train``, early-stopping on ``valid``.

    Args:
        train: training rows (spec's features and label).
        valid: later rows for early stopping and validation metrics.
        spec: the feature specification.
        cfg: the ``train`` configuration section.
        refit: retrain on ``train`` and ``valid`` together once early stopping has chosen the
            number of trees (see the module docstring).
        category_order: ``frequency`` (label-free codes), or ``rate``: codes ordered by smoothed
            label rate, training rows coded out of fold (``bidflow.modeling.dataset``).

    Returns:
        The model, its booster cut to the best iteration (or refitted), with train/valid metrics.

    Raises:
        ModelError: a split is empty or holds a single class (AUC and early stopping are undefined).
    """
    import xgboost as xgb

    for name, part in (("training", train), ("validation", valid)):
        y = labels(part, spec)
        if len(y) == 0 or y.min() == y.max():
            raise ModelError(
                f"{name} rows must hold both labels",
                got=f"{len(y)} rows, {int(y.sum())} positive",
                hint="use a longer time window",
            )
    started = time.perf_counter()
    encoder, x_train, y_train = _encode(train, spec, cfg, category_order)
    x_valid, y_valid = feature_matrix(valid, spec, encoder), labels(valid, spec)
    names = list(spec.names)
    dtrain = xgb.DMatrix(x_train, label=y_train, feature_names=names, missing=np.nan)
    dvalid = xgb.DMatrix(x_valid, label=y_valid, feature_names=names, missing=np.nan)
    params = xgb_params(cfg)
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=cfg.n_estimators,
        evals=[(dvalid, "valid")],
        early_stopping_rounds=cfg.early_stopping_rounds,
        verbose_eval=False,
    )
    best = int(booster.best_iteration) + 1
    booster = booster[:best]  # keep only the validated trees (see module docstring)
    seconds = time.perf_counter() - started
    model = trained_model(booster, spec, encoder, cfg, best)
    model = with_scores(
        model, (y_train, model.predict_matrix(x_train)), (y_valid, model.predict_matrix(x_valid)), seconds
    )
    if category_order != "frequency":
        model = replace(model, info=model.info | {"category_order": category_order})
    return _refit(model, train, valid, cfg, params, category_order) if refit else model


def trained_model(
    booster: Any, spec: FeatureSpec, encoder: CategoryEncoder, cfg: TrainSettings, best: int, **info: Any
) -> TrainedModel:
    """The bundle of a booster already cut to its ``best`` rounds, before its metrics (``with_scores``)."""
    import xgboost as xgb

    params = xgb_params(cfg)
    return TrainedModel(
        booster=booster,
        spec=spec,
        encoder=encoder,
        metrics={},
        params={k: v for k, v in params.items() if k != "eval_metric"} | {"n_estimators": cfg.n_estimators},
        best_iteration=best,
        xgboost_version=str(xgb.__version__),
        info=info,
    )


def with_scores(
    model: TrainedModel,
    train: tuple[npt.ArrayLike, npt.ArrayLike],
    valid: tuple[npt.ArrayLike, npt.ArrayLike],
    seconds: float,
) -> TrainedModel:
    """``model`` with the metrics of its (labels, scores) on the training and validation rows, and their sizes."""
    train_rows, valid_rows = len(np.asarray(train[0])), len(np.asarray(valid[0]))
    metrics = {f"train_{k}": v for k, v in classification_metrics(*train).items()}
    metrics |= {f"valid_{k}": v for k, v in classification_metrics(*valid).items()}
    metrics |= {
        "best_iteration": float(model.best_iteration),
        "train_seconds": seconds,
        "train_rows_per_s": train_rows / seconds,
    }
    info = {"train_rows": train_rows, "valid_rows": valid_rows, "train_seconds": round(seconds, 3)}
    return replace(model, metrics=metrics, info=model.info | info)


def _encode(
    rows: pd.DataFrame, spec: FeatureSpec, cfg: TrainSettings, category_order: CategoryOrder
) -> tuple[CategoryEncoder, npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The encoder fitted on training ``rows``, their matrix and their labels."""
    y = labels(rows, spec)
    if category_order == "frequency":
        encoder = CategoryEncoder.fit(rows, spec.categorical, cfg.min_category_count)
        return encoder, feature_matrix(rows, spec, encoder), y
    # A value's rate is shrunk with the weight of the rows a value needs to get a code at all.
    smoothing = float(cfg.min_category_count)
    encoder = CategoryEncoder.fit(rows, spec.categorical, cfg.min_category_count, rates_of=y)
    return encoder, out_of_fold_codes(rows, spec, encoder, y, smoothing, seed=cfg.seed), y


def _refit(
    validated: TrainedModel,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    cfg: TrainSettings,
    params: dict[str, Any],
    category_order: CategoryOrder,
) -> TrainedModel:
    """``validated`` retrained on ``train`` and ``valid`` together (vocabularies included)."""
    import xgboost as xgb

    started = time.perf_counter()
    spec = validated.spec
    rows = pd.concat([train, valid], ignore_index=True)
    encoder, x, y = _encode(rows, spec, cfg, category_order)
    # More rows support more trees at the same learning rate: keep the chosen trees-per-row ratio.
    trees = max(1, round(validated.best_iteration * len(rows) / len(train)))
    booster = xgb.train(
        params, xgb.DMatrix(x, label=y, feature_names=list(spec.names), missing=np.nan), num_boost_round=trees
    )
    seconds = time.perf_counter() - started
    model = replace(
        validated,
        booster=booster,
        encoder=encoder,
        best_iteration=trees,
        info=validated.info
        | {"refit_rows": len(rows), "validated_trees": validated.best_iteration, "refit_seconds": round(seconds, 3)},
    )
    # valid_* stay the early-stopped model's: the refitted one has learned from those rows.
    train_metrics = {f"train_{k}": v for k, v in classification_metrics(y, model.predict(rows)).items()}
    return replace(model, metrics=validated.metrics | train_metrics | {"refit_trees": float(trees)})


def fit(
    frame: pd.DataFrame,
    spec: FeatureSpec,
    cfg: TrainSettings,
    *,
    time_column: str = "ts",
    policy: EvaluateSettings | None = None,
    partner_column: str = "partner",
    refit: bool = False,
    category_order: CategoryOrder = "frequency",
) -> TrainedModel:
    """Split ``frame`` by time (latest ``cfg.validation_hours`` validate) and train.

    Args:
        frame: all training rows, with ``time_column``.
        spec: the feature specification.
        cfg: the ``train`` configuration section.
        time_column: the rows' UTC timestamps.
        policy: for a bid filter, the ``evaluate`` section: per-partner thresholds reaching its
            target bid recall (or share of bid value kept) are chosen on the validation window and
            stored with the model.
        partner_column: the column the thresholds are per value of.
        refit: retrain on all of ``frame`` once early stopping on the validation hours has chosen
            the number of trees (see the module docstring).
        category_order: how category codes are ordered (see ``train_model``).
    """
    if time_column not in frame.columns:
        raise ModelError(f"training data lacks its time column '{time_column}'")
    if refit and policy is not None:
        # Thresholds chosen on rows the model has learned from would promise a recall it cannot keep.
        raise ModelError("a refitted model has no unseen validation rows to choose filter thresholds on")
    valid_mask = latest_hours(frame[time_column], cfg.validation_hours)
    train_part, valid_part = frame[~valid_mask], frame[valid_mask]
    model = train_model(train_part, valid_part, spec, cfg, refit=refit, category_order=category_order)
    window = pd.to_datetime(valid_part[time_column], utc=True)
    info = model.info | {"validation_from": window.min().floor("h").isoformat()}
    if policy is None:
        return replace(model, info=info)
    return with_policy(replace(model, info=info), valid_part, policy, partner_column)


def with_policy(
    model: TrainedModel, valid_part: pd.DataFrame, policy: EvaluateSettings, partner_column: str = "partner"
) -> TrainedModel:
    """``model`` with per-partner filter thresholds chosen on its validation rows (see ``fit``)."""
    spec = model.spec
    scores = model.predict(valid_part)
    ranking: Ranking = "p_bid"
    if policy.objective == "value" and reads_prices(spec.names):
        # Under the value objective a model that reads the partners' prices ranks by expected bid value.
        scores, ranking = np.multiply(scores, estimate_from(valid_part)), "expected_value"
    chosen = choose_policy(
        valid_part[partner_column].astype(str).to_numpy(),
        labels(valid_part, spec),
        scores,
        target_recall=policy.target_bid_recall,
        exploration_share=policy.exploration_share,
        confidence_z=policy.threshold_confidence_z,
        objective=policy.objective,
        price=valid_part["price"].to_numpy(np.float64, na_value=np.nan) if policy.objective == "value" else None,
        ranking=ranking,
    )
    return replace(model, policy=chosen)


def save_model(model: TrainedModel, directory: Path) -> Path:
    """Write ``model.ubj`` (the booster) and ``bidflow_model.json`` (spec, vocabularies, policy) to ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    model.booster.save_model(str(directory / BOOSTER_FILE))
    (directory / BUNDLE_FILE).write_text(json.dumps(model.to_json(), indent=1, default=_json_default), "utf-8")
    return directory


def load_model(directory: Path) -> TrainedModel:
    """Read a model written by ``save_model`` (or an MLflow model folder logged by the registry adapter)."""
    import xgboost as xgb

    bundle_path = _find(directory, BUNDLE_FILE)
    booster_path = _find(directory, BOOSTER_FILE)
    if bundle_path is None or booster_path is None:
        raise ModelError("not a bidflow model folder", where=directory, expected=f"{BOOSTER_FILE} and {BUNDLE_FILE}")
    data = json.loads(bundle_path.read_text("utf-8"))
    return model_from_json(data, _load_booster(xgb, booster_path))


def model_from_json(data: dict[str, Any], booster: Any) -> TrainedModel:
    """A ``TrainedModel`` from its ``to_json`` data and its booster."""
    import xgboost as xgb

    if data.get("format") != BUNDLE_FORMAT:
        raise ModelError("unknown model bundle format", expected=str(BUNDLE_FORMAT), got=str(data.get("format")))
    trained_with = str(data.get("xgboost_version", ""))
    if trained_with.split(".")[:2] != str(xgb.__version__).split(".")[:2]:
        raise ModelError(
            "model was trained with another xgboost version",
            expected=f"xgboost {trained_with}",
            got=f"xgboost {xgb.__version__}",
            hint="score with the xgboost version the model was trained with (see uv.lock)",
        )
    policy = data.get("policy")
    return TrainedModel(
        booster=booster,
        spec=FeatureSpec.from_json(data["spec"]),
        encoder=CategoryEncoder.from_json(data["encoding"]),
        metrics={k: float(v) for k, v in data["metrics"].items()},
        params=dict(data["params"]),
        best_iteration=int(data["best_iteration"]),
        policy=FilterPolicy.from_json(policy) if policy is not None else None,
        xgboost_version=trained_with,
        info=dict(data.get("info", {})),
    )


def _load_booster(xgb: Any, path: Path) -> Any:
    booster = xgb.Booster()
    booster.load_model(str(path))
    return booster


def _find(directory: Path, name: str) -> Path | None:
    if (directory / name).is_file():
        return directory / name
    found = sorted(directory.rglob(name))
    return found[0] if found else None


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
