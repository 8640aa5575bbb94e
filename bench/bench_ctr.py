"""CTR model quality on three real samples, against a logistic regression trained on the same rows.

Every set is scored on rows neither model has learned from or been tuned on:

* iPinYou campaign 2997 (``../shared/data/ipinyou_2997_sample``, read in place): a time hold-out.
  Hours 16-18 train, hour 19 (the latest, 55 clicks) is held out. The CTR model is trained by
  ``train.fit`` -- the function ``bidflow train -m ctr`` calls -- with the ``train.ctr`` settings
  (the ``train.ctr`` section ``bidflow.yaml`` ships): hour 18 early-stops it, then it is refitted on hours
  16-18. Once on the sample's own columns, once with the Feast ``ctr`` service's historical CTR.
  Campaign 2997 is the hardest campaign of the iPinYou benchmark (Zhang et al. 2014 report AUCs
  around 0.60 for it): with 55 clicks an AUC carries a standard error of about 0.04, hence the
  bootstrap intervals.
* Avazu and Criteo samples: no usable time column, so a **hash split**: ``sha1(key) % 5 == 1`` is
  held out, ``== 2`` of the rest validates (Avazu keys on ``id``, Criteo on the label and hashes as written). It
  says nothing about performance on future traffic. The CTR model goes through ``train.train_model``
  (what ``train.fit`` calls once it has split by time) with the same settings.

Both category orders of ``train.fit`` are trained (``frequency``, ``rate``: codes by out-of-fold smoothed
click rate); the one with the lower validation log loss is scored. The shipped ``train.ctr`` settings
use ``frequency``, which iPinYou's validation hour chose.

The yardstick is a logistic regression on one-hot categoricals (values seen at least
``min_category_count`` times, like the CTR model's vocabularies) and log1p-scaled counts, its
regularisation chosen on the same validation rows among four, then refitted on all training rows
(the same rows as the CTR model). AUC intervals are percentile bootstraps
of the hold-out rows (both models on the same resamples, so the difference has an interval too);
ECE is over 10 equal-width bins.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from bench.harness import Result
from bidflow.config import Config, TrainSettings, load_config
from bidflow.modeling import ctr, inputs, train
from bidflow.modeling.dataset import FeatureSpec, latest_hours
from bidflow.modeling.metrics import auc, expected_calibration_error, log_loss

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
IPINYOU = SHARED / "ipinyou_2997_sample" / "train.csv.gz"
AVAZU = SHARED / "avazu_ctr_sample" / "avazu_sample.csv.gz"
CRITEO = SHARED / "criteo_kaggle_dac_sample" / "criteo_dac_sample.tsv.gz"
KIND: Final = "ctr"
BOOTSTRAP: Final = 1_000
LOGISTIC_C: Final = (0.03, 0.1, 0.3, 1.0)
ORDERS: Final[tuple[train.CategoryOrder, ...]] = ("frequency", "rate")

Scores = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Scored:
    """Hold-out labels and the two models' probabilities."""

    y: Scores
    candidate: Scores
    logistic: Scores


def run() -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = Config.model_validate(
            {
                "features": {
                    "repo": str(REPO / "feature_repo"),
                    "offline": str(root / "features"),
                    "state": str(root / "feast"),
                    "project": "bidflow_bench_ctr",
                    "ctr_source": str(IPINYOU),
                },
                # the train section bidflow.yaml ships, ctr's own included: the figures are what a user gets
                "train": load_config(REPO / "bidflow.yaml", environ={}).train.model_dump(),
            }
        )
        settings = config.train.for_kind(KIND)
        rows = inputs.load_rows(config, KIND)
        history, holdout = inputs.split_holdout(rows, config.evaluate.holdout_hours)
        valid_mask = latest_hours(history[inputs.TIME], settings.validation_hours)
        where = (
            f"trained on hours 16-18 ({len(history):,} rows, {int(history['click'].sum())} clicks; hour 18 "
            f"validates), hold-out hour 19: {len(holdout):,} rows, {int(holdout['click'].sum())} clicks"
        )
        for source in ("request", "feast"):
            if source == "feast":
                _build_feature_store(config, root)
            frame, spec = inputs.with_features(history, config, KIND, source)
            model = _best_order(partial(_fit, frame, spec, settings))
            scored = inputs.with_service(holdout, config, [spec.feature_service])
            if source == "request":
                logistic, c = _logistic(frame[~valid_mask], frame[valid_mask], frame, spec, settings)
                outcome = Scored(_labels(scored, spec), model.predict(scored), logistic(scored))
                results += _rows("iPinYou 2997, time hold-out", outcome, where, model, c)
            else:
                y, p = _labels(scored, spec), model.predict(scored)
                detail = f"{_summary(y, p)}; {where}; {_trees(model)}"
                results.append(
                    Result("ctr: iPinYou 2997, time hold-out: CTR + Feast historical CTR", auc(y, p), "AUC", detail)
                )
    results += _hash_split("Avazu", ctr.read_avazu(AVAZU), ctr.avazu_spec(), "id", settings)
    criteo = ctr.read_criteo(CRITEO)
    # The label and the hashes as written (the counts are parsed to floats, so they are left out).
    key = criteo[[ctr.CRITEO_LABEL, *ctr.CRITEO_CATEGORICAL]].astype(str).agg("\t".join, axis=1)
    results += _hash_split("Criteo", criteo.assign(row_key=key), ctr.criteo_spec(), "row_key", settings)
    return results


def _hash_split(name: str, frame: pd.DataFrame, spec: FeatureSpec, key: str, settings: TrainSettings) -> list[Result]:
    bucket = np.array([int(hashlib.sha1(str(k).encode()).hexdigest(), 16) % 5 for k in frame[key]])
    held = bucket == 1
    rest = frame[~held].reset_index(drop=True)
    valid = bucket[~held] == 2
    test = frame[held].reset_index(drop=True)
    model = _best_order(
        lambda order: train.train_model(
            rest[~valid], rest[valid], spec, settings, refit=settings.refit, category_order=order
        )
    )
    logistic, c = _logistic(rest[~valid], rest[valid], rest, spec, settings)
    outcome = Scored(_labels(test, spec), model.predict(test), logistic(test))
    where = (
        f"hash split: trained on {len(rest):,} rows ({int(rest[spec.label].sum())} clicks; "
        f"{int(valid.sum()):,} of them validate), held out {len(test):,} rows ({int(outcome.y.sum())} clicks) "
        f"by sha1({'id' if key == 'id' else 'label + hashes'}) % 5 == 1"
    )
    return _rows(f"{name} sample, hash split", outcome, where, model, c)


def _fit(
    frame: pd.DataFrame, spec: FeatureSpec, settings: TrainSettings, order: train.CategoryOrder
) -> train.TrainedModel:
    return train.fit(frame, spec, settings, refit=settings.refit, category_order=order)


def _best_order(train_with: Callable[[train.CategoryOrder], train.TrainedModel]) -> train.TrainedModel:
    """The model whose category order gives the lower validation log loss (both are refitted alike)."""
    models = [train_with(order) for order in ORDERS]
    return min(models, key=lambda m: m.metrics["valid_logloss"])


def _rows(name: str, outcome: Scored, where: str, model: train.TrainedModel, c: float) -> list[Result]:
    y = outcome.y
    diff = _bootstrap_auc(y, outcome.candidate, outcome.logistic)
    low, high = np.percentile(diff[:, 0] - diff[:, 1], [2.5, 97.5])
    gap = auc(y, outcome.candidate) - auc(y, outcome.logistic)
    return [
        Result(
            f"ctr: {name}: CTR model",
            auc(y, outcome.candidate),
            "AUC",
            f"{_summary(y, outcome.candidate, diff[:, 0])}; minus logistic: AUC {gap:+.3f} [{low:+.3f}, {high:+.3f}], "
            f"log loss {log_loss(y, outcome.candidate) - log_loss(y, outcome.logistic):+.5f}; {where}; {_trees(model)}",
        ),
        Result(
            f"ctr: {name}: logistic regression",
            auc(y, outcome.logistic),
            "AUC",
            f"{_summary(y, outcome.logistic, diff[:, 1])}; C={c:g} chosen on the validation rows, then refitted",
        ),
    ]


def _summary(y: Scores, p: Scores, boot: Scores | None = None) -> str:
    boot = _bootstrap_auc(y, p)[:, 0] if boot is None else boot
    low, high = np.percentile(boot, [2.5, 97.5])
    return f"95% CI [{low:.3f}, {high:.3f}]; log loss {log_loss(y, p):.5f}; ECE {expected_calibration_error(y, p):.4f}"


def _bootstrap_auc(y: Scores, *scores: Scores) -> npt.NDArray[np.float64]:
    """AUC of each score on the same ``BOOTSTRAP`` resamples of the rows (one column per score)."""
    rng = np.random.default_rng(0)
    out = np.empty((BOOTSTRAP, len(scores)))
    for i in range(BOOTSTRAP):
        pick = rng.integers(0, len(y), len(y))
        for j, p in enumerate(scores):
            out[i, j] = auc(y[pick], p[pick])
    return out


def _trees(model: train.TrainedModel) -> str:
    validated = model.info.get("validated_trees", model.best_iteration)
    order = model.info.get("category_order", "frequency")
    return (
        f"codes by {order} (chosen on validation log loss {model.metrics['valid_logloss']:.5f}); "
        f"{validated} trees by early stopping, {model.best_iteration} after the refit"
    )


def _labels(frame: pd.DataFrame, spec: FeatureSpec) -> Scores:
    return frame[spec.label].to_numpy(np.float64)


def _logistic(
    fit_rows: pd.DataFrame, valid_rows: pd.DataFrame, all_rows: pd.DataFrame, spec: FeatureSpec, settings: TrainSettings
) -> tuple[Callable[[pd.DataFrame], Scores], float]:
    """The yardstick: C chosen by validation log loss, then refitted on ``all_rows``; its scorer and C."""
    from sklearn.linear_model import LogisticRegression

    def fitted(rows: pd.DataFrame, c: float) -> Callable[[pd.DataFrame], Scores]:
        features = _LogisticFeatures.fit(rows, spec, settings.min_category_count)
        model = LogisticRegression(C=c, max_iter=5_000).fit(features.transform(rows), rows[spec.label])
        return lambda frame: np.asarray(model.predict_proba(features.transform(frame))[:, 1], dtype=np.float64)

    losses = {c: log_loss(_labels(valid_rows, spec), fitted(fit_rows, c)(valid_rows)) for c in LOGISTIC_C}
    best = min(losses, key=lambda c: losses[c])
    return fitted(all_rows, best), best


@dataclass(frozen=True)
class _LogisticFeatures:
    """One-hot categoricals and log1p-scaled counts with a missing flag, fitted on training rows."""

    spec: FeatureSpec
    encoder: Any
    mean: Scores
    std: Scores

    @classmethod
    def fit(cls, rows: pd.DataFrame, spec: FeatureSpec, min_count: int) -> _LogisticFeatures:
        from sklearn.preprocessing import OneHotEncoder

        encoder = OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=min_count)
        encoder.fit(rows[list(spec.categorical)].astype(str))
        counts = cls._counts(rows, spec)
        std = counts.std(axis=0)
        return cls(spec, encoder, counts.mean(axis=0), np.where(std > 0, std, 1.0))

    def transform(self, rows: pd.DataFrame) -> Any:
        from scipy import sparse  # type: ignore[import-untyped]

        onehot = self.encoder.transform(rows[list(self.spec.categorical)].astype(str))
        counts = (self._counts(rows, self.spec) - self.mean) / self.std
        return sparse.hstack([onehot, sparse.csr_matrix(counts)]).tocsr()

    @staticmethod
    def _counts(rows: pd.DataFrame, spec: FeatureSpec) -> Scores:
        if not spec.numeric:
            return np.zeros((len(rows), 0))
        values = rows[list(spec.numeric)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
        missing = np.isnan(values)
        scaled = np.log1p(np.clip(np.nan_to_num(values, nan=0.0), 0.0, None))
        return np.hstack([scaled, missing.astype(np.float64)])


def _build_feature_store(config: Config, root: Path) -> None:
    from bidflow.features import store as feature_store
    from bidflow.features.build import build_ctr_features, write_tables
    from bidflow.features.ipinyou import read_ipinyou

    (root / "feast").mkdir()
    impressions = read_ipinyou(config.features.ctr_source)
    write_tables(build_ctr_features(impressions, config.features.ctr_day), config.features.offline)
    feature_store.apply(feature_store.open_store(config.features), config.features)
