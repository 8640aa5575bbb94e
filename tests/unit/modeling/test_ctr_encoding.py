"""The CTR model's encodings come from its training rows only: the hold-out cannot shape them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bidflow.config import Config, TrainSettings, load_config
from bidflow.modeling import ctr, inputs, train
from bidflow.modeling.dataset import feature_matrix, latest_hours

# The shipped settings, cut short and single-threaded (the test machine is shared).
REPO = Path(__file__).resolve().parents[3]


def _shipped() -> TrainSettings:
    shipped = load_config(REPO / "bidflow.yaml", environ={}).train.for_kind("ctr")
    return shipped.model_copy(
        update={"n_estimators": 60, "early_stopping_rounds": 10, "learning_rate": 0.3, "nthread": 1}
    )


@pytest.fixture(scope="module")
def rows(shared_data: Path) -> pd.DataFrame:
    frame = ctr.read_ipinyou_impressions(
        shared_data / "ipinyou_2997_sample" / "train.csv.gz", Config().features.ctr_day
    )
    return frame.sort_values(ctr.TIME, kind="stable").reset_index(drop=True)


def _train(rows: pd.DataFrame) -> tuple[train.TrainedModel, pd.DataFrame]:
    """What ``bidflow train -m ctr`` does with the rows: hold out the latest hour, fit on the rest."""
    history, _ = inputs.split_holdout(rows, 1)
    settings = _shipped()
    return train.fit(history, ctr.ipinyou_spec(), settings, refit=settings.refit), history


def _tamper_holdout(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with the latest hour's labels flipped and its domains and IPs replaced by new ones."""
    held = latest_hours(rows[ctr.TIME], 1)
    out = rows.copy()
    out.loc[held, "click"] = (1 - out.loc[held, "click"]).astype(np.int8)
    for column in ("domain", "IP"):
        out.loc[held, column] = [f"new-{column}-{i % 7}" for i in range(int(held.sum()))]
    return out


def test_holdout_labels_and_values_cannot_change_the_training_features(rows: pd.DataFrame) -> None:
    model, history = _train(rows)
    tampered, tampered_history = _train(_tamper_holdout(rows))

    assert tampered.encoder.vocabularies == model.encoder.vocabularies
    spec = ctr.ipinyou_spec()
    np.testing.assert_array_equal(
        feature_matrix(tampered_history, spec, tampered.encoder), feature_matrix(history, spec, model.encoder)
    )
    np.testing.assert_array_equal(tampered.predict(history), model.predict(history))
    assert not any(v.startswith("new-") for column in ("domain", "IP") for v in tampered.encoder.vocabularies[column])


def test_vocabularies_use_no_labels_but_do_follow_the_training_rows(rows: pd.DataFrame) -> None:
    model, _ = _train(rows)
    relabelled = rows.copy()
    relabelled["click"] = np.random.default_rng(0).permutation(relabelled["click"].to_numpy())
    shuffled, _ = _train(relabelled)
    assert shuffled.encoder.vocabularies == model.encoder.vocabularies  # codes carry no label information

    # The check above is not vacuous: a value that becomes frequent in the training rows gets a code.
    moved = rows.copy()
    moved.loc[~latest_hours(moved[ctr.TIME], 1), "domain"] = "one-domain"
    renamed, _ = _train(moved)
    assert renamed.encoder.vocabularies["domain"] == ("one-domain",)
    assert renamed.encoder.vocabularies != model.encoder.vocabularies


def test_refit_learns_from_the_validation_hour_and_keeps_honest_validation_metrics(rows: pd.DataFrame) -> None:
    model, history = _train(rows)
    validation = latest_hours(history[ctr.TIME], _shipped().validation_hours)
    early = train.train_model(history[~validation], history[validation], ctr.ipinyou_spec(), _shipped())

    assert model.info["validated_trees"] == early.best_iteration
    expected_trees = round(early.best_iteration * len(history) / int((~validation).sum()))
    assert model.best_iteration == model.booster.num_boosted_rounds() == expected_trees
    assert model.metrics["valid_logloss"] == early.metrics["valid_logloss"]  # measured before the refit
    # Values too rare before the validation hour, frequent enough with it, get codes only from the refit.
    promoted = 0
    for column in ctr.IPINYOU_CATEGORICAL:
        before = history.loc[~validation, column].value_counts()
        counts = history[column].value_counts()
        risen = {v for v, n in counts.items() if n >= _shipped().min_category_count > before.get(v, 0)}
        assert risen <= set(model.encoder.vocabularies[column])
        assert not risen & set(early.encoder.vocabularies[column])
        promoted += len(risen)
    assert promoted > 0


def test_refit_refuses_a_bid_filter_policy(rows: pd.DataFrame) -> None:
    from bidflow.config import EvaluateConfig
    from bidflow.errors import ModelError

    history, _ = inputs.split_holdout(rows, 1)
    with pytest.raises(ModelError, match="refitted"):
        train.fit(history, ctr.ipinyou_spec(), _shipped(), policy=EvaluateConfig(), refit=True)


def test_criteo_reader_keeps_counts_numeric_and_hashes_as_text(shared_data: Path) -> None:
    frame = ctr.read_criteo(shared_data / "criteo_kaggle_dac_sample" / "criteo_dac_sample.tsv.gz")
    assert len(frame) == 6_567 and int(frame[ctr.CRITEO_LABEL].sum()) == 1_427
    assert all(frame[c].dtype.kind == "f" for c in ctr.CRITEO_NUMERIC)
    assert frame[list(ctr.CRITEO_NUMERIC)].isna().any().any()  # empty counts are missing, not zero
    assert set(ctr.criteo_spec().categorical) == set(ctr.CRITEO_CATEGORICAL)
