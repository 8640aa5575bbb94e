"""Feature spec, the vocabulary encoding (unseen -> reserved code), time splits and metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from bidflow.errors import ModelError
from bidflow.modeling.dataset import (
    UNSEEN_CODE,
    CategoryEncoder,
    FeatureSpec,
    feature_matrix,
    labels,
    latest_hours,
)
from bidflow.modeling.metrics import calibration_bins, classification_metrics, expected_calibration_error, log_loss

SPEC = FeatureSpec(names=("country", "bidfloor", "device_type"), categorical=("country",), label="bid")


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "country": ["USA"] * 5 + ["GBR"] * 3 + ["FRA"] * 1 + [None],
            "bidfloor": [0.5, 1.0, np.nan, 2.0, 0.0, 1.0, 1.5, 0.2, 0.1, 0.3],
            "device_type": np.array([1, 2, 4, 4, 1, 2, 2, 4, 1, 1], dtype=np.int32),
            "bid": np.array([1, 0, 0, 1, 0, 0, 1, 0, 0, 0], dtype=np.int8),
        }
    )


def test_vocabulary_is_by_frequency_and_rare_values_share_the_unseen_code() -> None:
    encoder = CategoryEncoder.fit(frame(), ["country"], min_count=2)
    assert encoder.vocabularies["country"] == ("USA", "GBR")  # FRA seen once: below min_count
    codes = encoder.codes("country", pd.Series(["USA", "GBR", "FRA", "DEU", None]))
    assert codes.tolist() == [1.0, 2.0, UNSEEN_CODE, UNSEEN_CODE, UNSEEN_CODE]
    assert codes.dtype == np.float32


def test_serving_lookup_matches_the_batch_encoding() -> None:
    encoder = CategoryEncoder.fit(frame(), ["country"], min_count=1)
    values = ["USA", "GBR", "FRA", "unknown-country", None]
    batch = encoder.codes("country", pd.Series(values)).tolist()
    assert batch == [encoder.code("country", v) for v in values]


def test_integer_categories_code_the_same_whatever_their_dtype() -> None:
    data = pd.DataFrame({"device_type": np.array([1, 2, 2, 4], dtype=np.int32), "bid": [0, 1, 0, 1]})
    encoder = CategoryEncoder.fit(data, ["device_type"], min_count=1)
    assert encoder.vocabularies["device_type"] == ("2", "1", "4")  # by frequency, ties by name
    as_int64 = encoder.codes("device_type", pd.Series([2, 4, 7], dtype=np.int64)).tolist()
    assert as_int64 == encoder.codes("device_type", pd.Series(["2", "4", "7"])).tolist() == [1.0, 3.0, 0.0]


def test_encoder_round_trips_through_json_and_refuses_another_version() -> None:
    encoder = CategoryEncoder.fit(frame(), ["country"], min_count=1)
    assert CategoryEncoder.from_json(encoder.to_json()) == encoder
    with pytest.raises(ModelError, match="category-encoding version"):
        CategoryEncoder.from_json(encoder.to_json() | {"version": 99})


def test_feature_matrix_is_float32_in_spec_order_with_nan_for_missing_numbers() -> None:
    encoder = CategoryEncoder.fit(frame(), ["country"], min_count=2)
    x = feature_matrix(frame(), SPEC, encoder)
    assert x.dtype == np.float32 and x.shape == (10, 3)
    assert x[:2].tolist() == [[1.0, 0.5, 1.0], [1.0, 1.0, 2.0]]
    assert np.isnan(x[2, 1])
    assert labels(frame(), SPEC).tolist()[:4] == [1.0, 0.0, 0.0, 1.0]


def test_missing_feature_column_is_a_model_error_naming_it() -> None:
    encoder = CategoryEncoder.fit(frame(), ["country"], min_count=1)
    with pytest.raises(ModelError, match="lacks 1 column") as info:
        feature_matrix(frame().drop(columns=["bidfloor"]), SPEC, encoder)
    assert "bidfloor" in str(info.value)


def test_spec_validation_and_json() -> None:
    assert FeatureSpec.from_json(SPEC.to_json()) == SPEC
    assert SPEC.numeric == ("bidfloor", "device_type")
    with pytest.raises(ModelError):
        FeatureSpec(names=("a", "a"), categorical=(), label="y")
    with pytest.raises(ModelError):
        FeatureSpec(names=("a",), categorical=("b",), label="y")
    with pytest.raises(ModelError):
        FeatureSpec(names=("a", "y"), categorical=(), label="y")


def test_labels_must_be_binary() -> None:
    with pytest.raises(ModelError, match="0 or 1"):
        labels(frame().assign(bid=2), SPEC)


def test_latest_hours_splits_by_clock_hour() -> None:
    start = datetime(2026, 11, 2, 8, tzinfo=UTC)
    times = pd.Series([start + timedelta(minutes=20 * i) for i in range(9)])  # 08:00 .. 10:40
    assert latest_hours(times, 1).tolist() == [False] * 6 + [True] * 3
    assert latest_hours(times, 2).sum() == 6
    with pytest.raises(ModelError, match="covers 3 hour"):
        latest_hours(times, 3)


def test_metrics_on_a_hand_made_example() -> None:
    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([0.05, 0.15, 0.15, 0.95, 0.85, 0.95])
    counts, predicted, observed = calibration_bins(y, p, bins=10)
    assert counts[[0, 1, 8, 9]].tolist() == [1, 2, 1, 2]
    assert observed[1] == 0.5 and predicted[1] == pytest.approx(0.15)
    # |0-.05|*1 + |.5-.15|*2 + |0-.85|*1 + |1-.95|*2, over 6 rows
    assert expected_calibration_error(y, p, 10) == pytest.approx((0.05 + 0.7 + 0.85 + 0.1) / 6)
    assert log_loss([1], [1.0]) == pytest.approx(0.0, abs=1e-6)
    metrics = classification_metrics(y, p)
    assert metrics["auc"] == pytest.approx(7.5 / 9)
    assert np.isnan(classification_metrics([0, 0], [0.1, 0.2])["auc"])
